"""Combine the K best trials, or keep the best one alone: decided on held-out validation windows.

Picking the best of many trials on the validation windows flatters it there (the winner's curse):
its validation score is the least of many noisy ones, so comparing it with the combination of the K
best on those same windows favours it unfairly. The check cross-fits instead. The validation windows
of every series are cut in time into an earlier and a later half; the trials are ranked on one half,
and the best trial and the combination of the K best (as `Ensemble` combines them) are scored on the
other; then the halves swap. The combination is kept when its cross-fitted score is no worse than the
best trial's (combining costs no training: the members are the trials' own fits). Where a series has
a single validation window, the halves are of the series instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.api.ensemble import COMBINES, Ensemble
from forecasting.api.forecaster import Forecaster
from forecasting.core.data import Split
from forecasting.core.evaluation import point_metrics

# An ensemble member's validation loss may be at most this many times the best trial's: a trial that
# diverged, or started from a broken point, must not drag the combination (seen: a member at 68 beside
# one at 0.89 made a two-member mean 76 times worse than the best trial alone).
MAX_MEMBER_LOSS_RATIO = 2.0
MAX_WINDOWS = 8192  # validation windows scored (evenly spaced); the check stays cheap at long horizons


@dataclass(frozen=True)
class EnsembleCheck:
    """What the check found: members to keep (`k` asked for, or 1) and the two cross-fitted scores."""

    k: int
    single: float  # the best trial alone, on the half it was not chosen on
    combined: float  # the combination of the K best, likewise
    candidates: int  # trials ranked
    metric: str

    def params(self) -> dict:
        """What a run records of the check."""
        return {"ensemble_check_metric": self.metric, "ensemble_check_single": self.single,
                "ensemble_check_combined": self.combined, "ensemble_check_candidates": self.candidates,
                "ensemble_check_kept": self.k}

    def describe(self, family: str, asked: int) -> str:
        """One line for the user."""
        verdict = f"kept {asked} members" if self.k > 1 else "kept the best trial alone"
        return (f"{family}: ensemble check on held-out validation halves ({self.candidates} trials): the {asked} best "
                f"combined {self.metric} {self.combined:.4f}, the best alone {self.single:.4f}: {verdict}")


def kept(losses: np.ndarray | list[float], k: int) -> list[int]:
    """Indices of the `k` lowest `losses`, less those above MAX_MEMBER_LOSS_RATIO times the lowest."""
    order = [int(i) for i in np.argsort(np.asarray(losses, dtype=float), kind="stable")[:max(k, 1)]]
    if order and losses[order[0]] >= 0:
        order = [i for i in order if losses[i] <= MAX_MEMBER_LOSS_RATIO * losses[order[0]]]
    return order


def halves(series: np.ndarray) -> np.ndarray:
    """For windows sorted by series, then time (`series` [N]): 0 for the earlier half of each series'
    windows, 1 for the later half [N]; a series with one validation window (validation as long as the
    horizon, as in M4) goes whole to one half, alternately by its number."""
    first = np.searchsorted(series, series, side="left")  # each window's series' first window
    count = np.searchsorted(series, series, side="right") - first
    half = (np.arange(len(series)) - first) >= count // 2
    return np.where(count == 1, series % 2, half).astype(np.int8)


def score(y: np.ndarray, y_hat: np.ndarray, scale: np.ndarray, metric: str) -> float:
    """`metric` of forecasts y_hat [N, H] of actuals y [N, H] (MASE scales `scale` [N])."""
    return point_metrics(y, y_hat, scale)[metric]


def cross_fitted(preds: np.ndarray, y: np.ndarray, scale: np.ndarray, half: np.ndarray, k: int,
                 metric: str = "mase", combine: str = "mean") -> tuple[float, float]:
    """Cross-fitted scores (best trial alone, combination of the `k` best) of the trials' forecasts
    preds [T, N, H] of windows with actuals y [N, H], MASE scales `scale` [N] and `half` [N]: ranked
    on one half, scored on the other, both ways; each the window-weighted mean of its two scores."""
    single = combined = 0.0
    for h in (0, 1):
        pick, held = half != h, half == h
        losses = [score(y[pick], p[pick], scale[pick], metric) for p in preds]
        top = kept(losses, k)
        share = held.mean()
        single += share * score(y[held], preds[top[0]][held], scale[held], metric)
        combined += share * score(y[held], COMBINES[combine](preds[top][:, held], axis=0), scale[held], metric)
    return float(single), float(combined)


def validation_forecasts(ens: Ensemble, df: pd.DataFrame, split: Split, max_windows: int = MAX_WINDOWS
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Every member's forecasts [M, N, H] of (at most `max_windows` evenly spaced) validation windows,
    their actuals [N, H] (original scale), MASE scales [N] and halves [N] (`halves`); None when a
    half has no window."""
    w = ens.windows(df, split, "val")
    idx = np.unique(np.linspace(0, len(w) - 1, min(len(w), max_windows)).round().astype(int))
    series = w.series_index[idx]  # [N]
    half = halves(series)
    if len(idx) == 0 or half.all() or not half.any():
        return None
    x, y = w.arrays(idx)  # [N, L, F], [N, H] standardized
    mean, std = ens.scaler_.mean[series, 0], ens.scaler_.std[series, 0]  # [N]
    preds = ens.member_forecasts(x) * std[None, :, None] + mean[None, :, None]  # [M, N, H] original scale
    return preds, y * std[:, None] + mean[:, None], ens.mase_scale_[series], half


def check(fits: list[Forecaster], df: pd.DataFrame, split: Split, k: int, metric: str = "mase",
          combine: str = "mean", max_windows: int = MAX_WINDOWS) -> EnsembleCheck | None:
    """Whether to combine the `k` best of the trials' `fits` (one dataset, split and horizon) or keep
    the best alone, cross-fitted on the validation windows; None when there is nothing to decide
    (fewer than two fits, or a half without windows)."""
    if len(fits) < 2 or k < 2:
        return None
    found = validation_forecasts(Ensemble(fits, combine), df, split, max_windows)
    if found is None:
        return None
    single, combined = cross_fitted(*found, k, metric, combine)
    return EnsembleCheck(k if combined <= single else 1, single, combined, len(fits), metric)
