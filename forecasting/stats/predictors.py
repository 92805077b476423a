"""statsforecast's models as predictors: fitted once per series on its training rows, then applied
to every window with the fitted parameters (statsforecast's `forward`, as its own
`cross_validation(refit=False)` does).

What a forecasting engineer would otherwise run by hand: MSTL over every kept seasonal period
with an AutoETS trend (`model="ZZN"`), AutoETS and AutoTheta at the shortest period. They see
exactly what the ridge baseline sees at a forecast origin (the same lookback window, on the
original scale) and are scored on the same windows as every model; their parameters (smoothing
coefficients, the ETS form, the theta) come from the training rows only.
"""

from __future__ import annotations

import time

import numpy as np
from statsforecast.models import MSTL, AutoETS, AutoTheta

from forecasting.core.data import Split
from forecasting.core.evaluation import Predictor
from forecasting.core.windows import Panel

MODELS = ("mstl", "autoets", "autotheta")


def make_model(name: str, periods: tuple[int, ...]):
    """An unfitted statsforecast model; `periods` are the seasonal periods that fit its data."""
    m = periods[0] if periods else 1
    if name == "mstl":
        return MSTL(season_length=list(periods) or [1], trend_forecaster=AutoETS(model="ZZN"))
    if name == "autoets":
        return AutoETS(season_length=m)
    if name == "autotheta":
        return AutoTheta(season_length=m)
    raise ValueError(f"unknown statistical model {name!r}; use any of {', '.join(MODELS)}")


def fitting_periods(periods: tuple[int, ...], n: int) -> tuple[int, ...]:
    """The periods a series of `n` points (or a window of n) holds at least twice, shortest first
    (STL's requirement: two full cycles)."""
    return tuple(p for p in sorted(periods) if 1 < p and 2 * p <= n)


def fit_series(name: str, y: np.ndarray, periods: tuple[int, ...]):
    """One model fitted on one series' training values y [n] (original scale)."""
    return make_model(name, periods).fit(np.asarray(y, dtype=np.float64))


def stats_predictor(name: str, panel: Panel, split: Split, mean: np.ndarray, std: np.ndarray, horizon: int,
                    lookback: int, periods: tuple[int, ...]) -> Predictor:
    """`name` fitted on each series' training rows, as a predictor on standardized windows.

    `panel` is the raw panel (original scale); `mean`/`std` [S] are the series' standardization, undone
    on a window's lookback before the model sees it and redone on its forecast. The seasonal periods
    are those the lookback window holds twice (MSTL decomposes the window itself)."""
    used = fitting_periods(periods, lookback)
    t0 = time.perf_counter()
    fitted = [fit_series(name, panel.series(i)[: int(e), 0], used) for i, e in enumerate(split.train_end)]
    fit_seconds = time.perf_counter() - t0

    def fn(x: np.ndarray, series: np.ndarray) -> np.ndarray:
        y = x[..., 0].astype(np.float64) * std[series, None] + mean[series, None]  # [N, L] original scale
        out = np.empty((len(x), horizon))
        for i, (window, s) in enumerate(zip(y, series, strict=True)):
            out[i] = fitted[s].forward(y=window, h=horizon)["mean"]
        return (out - mean[series, None]) / std[series, None]  # [N, H] standardized

    return Predictor(name, lookback, fn, by_series=True,
                     params={"model": repr(make_model(name, used)), "periods": list(used), "lookback": lookback,
                             "fit_seconds": round(fit_seconds, 3)})


def stats_predictors(panel: Panel, split: Split, mean: np.ndarray, std: np.ndarray, horizon: int, lookback: int,
                     periods: tuple[int, ...], names: tuple[str, ...] = MODELS) -> list[Predictor]:
    """Every model of `names` as a predictor (see `stats_predictor`)."""
    return [stats_predictor(n, panel, split, mean, std, horizon, lookback, periods) for n in names]


