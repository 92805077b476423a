"""Core: data in, windows, scaling, metrics, baselines, backtests, intervals and the fit loop.

Needs only torch, numpy, pandas and scikit-learn (matplotlib for `plots` only)."""
