"""Forecasting pipeline: GRU/LSTM forecasters with tuning, tracking and flows.

The core modules (data, windows, scaling, models, baselines, training, metrics,
forecaster) need only torch, numpy and pandas; MLflow, Optuna and Prefect are
imported only by `tracking`, `tuning` and the flows.
"""

__version__ = "0.1.0"
