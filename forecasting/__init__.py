"""Forecasting pipeline: GRU/LSTM forecasters with tuning, tracking and flows.

The core modules (data, windows, scaling, models, training, baselines, evaluation,
backtest, intervals, forecaster, ...) need only torch, numpy, pandas and scikit-learn;
MLflow and Optuna are imported only by the integrations (`runs`, `registry`, `serving`,
`tuning`, `search_log`, `search`, `pipeline`, `backtest_pipeline`, `worker`), Prefect only
by `flows/`. docs/architecture.md draws the layers.
"""

__version__ = "0.1.0"
