"""Prefect flows over the `forecasting` library, and the `forecasting` command.

Flows only sequence library calls; each task is one call plus its I/O.
Imports point one way: flows -> forecasting.
"""
