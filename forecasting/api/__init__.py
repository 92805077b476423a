"""The front door over a long frame: `Forecaster`, `Ensemble`, the jobs, backtests and batch forecasts."""
