"""Scoring forecasts of windows, and the baselines every model is shown next to.

A *predictor* maps standardized inputs x [N, L, F] to standardized forecasts [N, H] and
declares the lookback L it reads; models and baselines are scored through the same code on
the same target windows, so every row of a comparison is like for like.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from forecasting.core.baselines import (
    LINEAR_ALPHAS,
    MAX_LINEAR_WINDOWS,
    LinearBaseline,
    best_ridge,
    naive,
    seasonal_naive,
)
from forecasting.core.data import Split
from forecasting.core.metrics import mae, mase, mse, rmse, smape
from forecasting.core.windows import Panel, make_windows


@dataclass(frozen=True)
class Predictor:
    """A named forecast function on standardized windows: fn(x [N, L, F]) -> [N, H], or with
    `by_series` fn(x, series [N]) -> [N, H] for predictors fitted per series (statistical models)."""

    name: str
    lookback: int
    fn: Callable[..., np.ndarray]
    by_series: bool = False
    params: dict = field(default_factory=dict)  # what a run records of it (lookback, penalty, model spec)

    def __call__(self, x: np.ndarray, series: np.ndarray) -> np.ndarray:
        """Forecasts [N, H] of windows x [N, L, F] of series `series` [N] (panel positions)."""
        return self.fn(x, series) if self.by_series else self.fn(x)


# How a backtest runs its predictors: (predictors, x [N, L, F], series [N]) -> one [N, H] per predictor,
# each reading the last `lookback` steps of x. The default runs them here; a runner may cut the windows
# into parts and forecast each part elsewhere (Dask workers), shipping its windows once for all predictors.
PredictFn = Callable[[list[Predictor], np.ndarray, np.ndarray], list[np.ndarray]]


def in_process(predictors: list[Predictor], x: np.ndarray, series: np.ndarray) -> list[np.ndarray]:
    """Forecasts [N, H] of every window by every predictor, in this process."""
    return [p(x[:, x.shape[1] - p.lookback:], series) for p in predictors]


def window_parts(n: int, parts: int) -> list[slice]:
    """Rows [0, n) cut into at most `parts` contiguous, non-empty slices of about equal size, in order."""
    bounds = np.linspace(0, n, max(1, min(parts, n)) + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


@dataclass
class Evaluation:
    """Forecasts of a set of windows on the original scale, with their metrics."""

    y: np.ndarray  # [N, H]
    y_hat: np.ndarray  # [N, H]
    series: np.ndarray  # [N]
    metrics: dict[str, float]


def point_metrics(y: np.ndarray, y_hat: np.ndarray, scale: np.ndarray) -> dict[str, float]:
    """MAE, MSE, RMSE, sMAPE and MASE of forecasts [N, H]; `scale` [N] is each row's MASE scale."""
    return {"mae": mae(y, y_hat), "mse": mse(y, y_hat), "rmse": rmse(y, y_hat),
            "smape": smape(y, y_hat), "mase": mase(y, y_hat, scale)}


def score(y_std: np.ndarray, y_hat_std: np.ndarray, series: np.ndarray, mean: np.ndarray, std: np.ndarray,
          mase_scale: np.ndarray) -> Evaluation:
    """Metrics on the original scale (series' `mean`/`std` [S]) plus `mse_std`, `mae_std`."""
    y = y_std * std[series, None] + mean[series, None]  # [N, H]
    y_hat = y_hat_std * std[series, None] + mean[series, None]
    metrics = point_metrics(y, y_hat, mase_scale[series])
    metrics.update(mse_std=mse(y_std, y_hat_std), mae_std=mae(y_std, y_hat_std))
    return Evaluation(y, y_hat, series, metrics)


def simple_predictors(horizon: int, periods: tuple[int, ...]) -> list[Predictor]:
    """Naive and seasonal naive at every period (target channel of the standardized windows)."""
    out = [Predictor("naive", 1, lambda x: naive(x[..., 0], horizon), params={"lookback": 1})]
    for m in periods:
        out.append(Predictor(f"seasonal_naive_{m}", m, lambda x, m=m: seasonal_naive(x[..., 0], horizon, m),
                             params={"lookback": m}))
    return out


def _sample(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False)) if n > k else np.arange(n)


def fit_linear(panel: Panel, split: Split, horizon: int, lookbacks: tuple[int, ...], seed: int = 0
               ) -> tuple[Predictor, dict]:
    """The ridge baseline, its lookback and penalty chosen on validation MSE (never on test).

    Returns the predictor and the selection record (lookback, alpha, validation MSE per candidate).
    """
    best, tried = None, []
    for L in lookbacks:
        tr = make_windows(panel, L, horizon, split, "train")
        va = make_windows(panel, L, horizon, split, "val")
        if len(tr) == 0 or len(va) == 0:
            continue
        x, y = tr.arrays(_sample(len(tr), MAX_LINEAR_WINDOWS, seed))  # [N, L, F], [N, H]
        xv, yv = va.arrays(_sample(len(va), MAX_LINEAR_WINDOWS, seed))
        ridge, errs = best_ridge(*LinearBaseline.normalized(x[..., 0].astype(np.float64), y.astype(np.float64)),
                                 *LinearBaseline.normalized(xv[..., 0].astype(np.float64), yv.astype(np.float64)))
        tried += [{"lookback": L, "alpha": ridge_alpha, "val_mse_std": e}
                  for ridge_alpha, e in zip(LINEAR_ALPHAS, errs, strict=True)]
        if best is None or min(errs) < best[1]:
            best = (LinearBaseline(L, horizon, ridge.alpha, ridge), min(errs))
    if best is None:
        raise ValueError("no lookback leaves training and validation windows for the linear baseline")
    lin = best[0]
    record = {"lookback": lin.lookback, "alpha": lin.alpha, "val_mse_std": best[1], "tried": tried}
    params = {"lookback": lin.lookback, "alpha": lin.alpha, "n_parameters": lin.lookback * horizon + horizon}
    return Predictor("linear", lin.lookback, lambda x: lin.predict(x[..., 0]), params=params), record


def best_baseline(rows: list[dict], metric: str, models: tuple[str, ...]) -> tuple[str, float] | None:
    """Name and value of the baseline row with the lowest `metric` (rows whose model is not in
    `models`); None when no baseline has a finite value."""
    scored = [(r["model"], float(r[metric])) for r in rows
              if r["model"] not in models and np.isfinite(float(r.get(metric, np.nan)))]
    return min(scored, key=lambda t: t[1]) if scored else None
