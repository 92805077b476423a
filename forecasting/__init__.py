"""Forecasting pipeline: model families (GRU, LSTM, ...) with tuning, tracking and flows.

The front door, importable from here:

    from forecasting import Forecaster, ForecasterConfig
    f = Forecaster(ForecasterConfig(model=...))       # a config of any registered family
    f.fit(df, split)                                  # a long frame: unique_id, ds, y (+ covariates)
    f.predict(df); f.cross_validation(df, end, lo); f.calibrate(df, (80, 95), end, lo); f.save(path)

Layers, bottom to top (imports point down only; docs/architecture.md draws them):
    core/      data, windows, scaling, metrics, baselines, backtests, intervals, the fit loop
    families/  the model families, one module each, found by name in a registry
    api/       Forecaster and Ensemble (fit, predict, cross_validation, calibrate, save, load), jobs
    tuning/    the search space (plain) and the Optuna study and objective
    tracking/  MLflow runs, the pyfunc model, the model registry
    pipeline/  the recipes that combine them (the train pipeline, the search, the backtest command)
core, families and api need only torch, numpy, pandas and scikit-learn.
"""

__version__ = "0.1.0"

_FRONT_DOOR = {"Forecaster": "forecasting.api.forecaster", "ForecasterConfig": "forecasting.api.forecaster",
               "Ensemble": "forecasting.api.ensemble", "load_forecaster": "forecasting.api.ensemble"}
__all__ = ["__version__", *_FRONT_DOOR]


def __getattr__(name: str):
    """The front door's names, imported when first used (importing the package stays cheap)."""
    if name in _FRONT_DOOR:
        import importlib

        return getattr(importlib.import_module(_FRONT_DOOR[name]), name)
    raise AttributeError(f"module 'forecasting' has no attribute {name!r}")
