"""Hyperparameter search: the space (plain dataclasses) and the Optuna study and objective."""
