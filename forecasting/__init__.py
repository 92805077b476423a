"""Forecasting pipeline: GRU/LSTM forecasters with tuning, tracking and flows.

The core modules (data, seasons, windows, scaling, models, baselines, training,
metrics, evaluation, backtest, forecaster, ensemble) need only torch, numpy, pandas
and scikit-learn; MLflow, Optuna and Prefect are imported only by `tracking`,
`serving`, `tuning`, `pipeline` and the flows.
"""

__version__ = "0.1.0"
