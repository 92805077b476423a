"""Model inputs at the end of a long history: what `Forecaster.predict` feeds the network.

Vectorized over series (one factorize and one sort, no per-series Python loop): a batch
forecast of 10,000 series spends its time in the model, not here. The history is parsed by
the same reader as ingest (`data.parse_long`); series that cannot be forecast are returned
with their reason instead of failing the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.core.columns import ID, TARGET, TIME
from forecasting.core.data import parse_long
from forecasting.core.errors import DataError
from forecasting.core.features import calendar_features
from forecasting.core.scaling import SeriesScaler, series_stats


@dataclass
class Inputs:
    """Standardized windows of the usable series and what is needed to undo the scaling."""

    x: np.ndarray  # [S, L, F] float32
    ids: list[str]  # [S]
    last: np.ndarray  # [S] the last timestamp seen per series
    mean: np.ndarray  # [S] target mean
    std: np.ndarray  # [S] target std
    skipped: list[tuple[str, str]]  # (series, reason)


def is_fixed(freq: str) -> bool:
    """Whether a frequency is a fixed time step (hours, days), not a calendar one (months)."""
    try:
        pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
        return True
    except ValueError:
        return False


def window_problems(x: np.ndarray, times: np.ndarray, freq: str) -> list[str | None]:
    """Why each window x [S, L, F] with timestamps [S, L] cannot be read (None where it can): missing
    values, a regular step other than the model's frequency (another resolution), or gaps."""
    S, L = times.shape
    out: list[str | None] = [None] * S
    if is_fixed(freq) and L > 1:
        step = np.timedelta64(pd.Timedelta(pd.tseries.frequencies.to_offset(freq)))
        diffs = np.diff(times, axis=1)  # [S, L-1]
        regular = (diffs == diffs[:, :1]).all(axis=1)
        for i in np.flatnonzero((diffs != step).any(axis=1)):
            if regular[i]:
                seen = pd.tseries.frequencies.to_offset(pd.Timedelta(diffs[i, 0])).freqstr
                out[i] = f"its points are {seen} apart but the model forecasts at {freq}: resample it to {freq}"
            else:
                out[i] = f"gaps in the last {L} points (the model needs one every {freq})"
    for i in np.flatnonzero(~np.isfinite(x).all(axis=(1, 2))):
        out[i] = out[i] or f"missing or non-finite values in the last {L} points"
    return out


def _by_series_in_time(codes: np.ndarray, ds: np.ndarray) -> np.ndarray:
    """Row order grouping rows [N] by series code, each in time order (a stable sort). A history
    already so ordered, as files usually are, is checked in one pass instead of sorted."""
    step = np.diff(codes)  # [N-1]
    if np.all(step >= 0) and np.all((step > 0) | (np.diff(ds) >= np.timedelta64(0))):
        return np.arange(len(codes))
    return np.lexsort((ds, codes))


def last_windows(history: pd.DataFrame, lookback: int, freq: str, covariates: tuple[str, ...]
                 ) -> tuple:
    """The last `lookback` rows of each usable series: values [S, L, 1+C], timestamps [S, L],
    the ids [S], every row's series code (for statistics of unseen series) and the skipped ones."""
    need = [ID, TIME, TARGET, *covariates]
    missing = [c for c in need if c not in history.columns]
    if missing:
        raise DataError(f"history is missing column(s) {missing}; columns present: {list(history.columns)}")
    h = parse_long(history[need], numeric=need[2:])
    codes, uniques = pd.factorize(h[ID])
    ds, vals = h[TIME].to_numpy(), h[need[2:]].to_numpy(np.float64)  # [N], [N, 1+C]
    order = _by_series_in_time(codes, ds)  # [N]
    counts = np.bincount(codes, minlength=len(uniques))  # [G]
    ok = counts >= lookback
    skipped = [(str(u), f"{n} points, needs lookback {lookback}") for u, n in zip(uniques[~ok], counts[~ok], strict=True)]
    rows = order[(np.cumsum(counts)[ok] - lookback)[:, None] + np.arange(lookback)]  # [S, L] rows of the last L points
    ids, x, times = np.asarray(uniques[ok], dtype=object), vals[rows], ds[rows]
    reasons = window_problems(x, times, freq)
    bad = np.array([r is not None for r in reasons], dtype=bool)
    skipped += [(str(u), r) for u, r in zip(ids, reasons, strict=True) if r is not None]
    groups = np.flatnonzero(ok)[~bad]  # factorize code of each usable series
    return x[~bad], times[~bad], ids[~bad], (codes, vals, groups), skipped


def series_scaling(scaler: SeriesScaler, ids: np.ndarray, codes: np.ndarray, vals: np.ndarray,
                   groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std [S, 1+C]: the training statistics for series the scaler knows, the series' own
    history for unseen ones."""
    nvar = vals.shape[1]
    mean, std = np.zeros((len(ids), nvar)), np.ones((len(ids), nvar))
    pos = {u: i for i, u in enumerate(scaler.ids)}
    known = np.array([u in pos for u in ids], dtype=bool)
    if known.any():
        idx = np.array([pos[u] for u in ids[known]])
        mean[known], std[known] = scaler.mean[idx, :nvar], scaler.std[idx, :nvar]
    if (~known).any():
        m, s = series_stats(vals, codes, int(codes.max()) + 1)
        mean[~known], std[~known] = m[groups[~known]], s[groups[~known]]
    return mean, std


def model_inputs(history: pd.DataFrame, scaler: SeriesScaler, lookback: int, freq: str,
                 covariates: tuple[str, ...], calendar: bool) -> Inputs:
    """Standardized model inputs [S, L, F] at the end of every usable series of `history`."""
    x, times, ids, (codes, vals, groups), skipped = last_windows(history, lookback, freq, covariates)
    mean, std = series_scaling(scaler, ids, codes, vals, groups)
    x = (x - mean[:, None, :]) / std[:, None, :]  # [S, L, 1+C]
    if calendar:
        # Series share timestamps: compute the features once per distinct timestamp.
        inv, uniq = pd.factorize(times.reshape(-1))  # a hash, not a sort of S*L stamps
        cal = calendar_features(pd.DatetimeIndex(uniq), freq)[inv]  # [S*L, C]
        x = np.concatenate([x, cal.reshape(len(ids), lookback, cal.shape[1])], axis=2)
    last = times[:, -1] if len(ids) else np.zeros(0, dtype="datetime64[ns]")
    return Inputs(x.astype(np.float32), list(ids), last, mean[:, 0], std[:, 0], skipped)


def future_times(last: np.ndarray, horizon: int, freq: str) -> pd.DatetimeIndex:
    """The `horizon` timestamps after each of `last` [S], flattened series by series [S * H]."""
    step = pd.tseries.frequencies.to_offset(freq)
    if is_fixed(freq):
        return (pd.DatetimeIndex(np.repeat(last, horizon))
                + np.tile(np.arange(1, horizon + 1), len(last)) * pd.Timedelta(step))
    return pd.DatetimeIndex(np.concatenate([pd.date_range(t, periods=horizon + 1, freq=step)[1:] for t in last]))
