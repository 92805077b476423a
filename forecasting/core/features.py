"""Calendar covariates: known in advance, so usable for any timestamp."""

from __future__ import annotations

import numpy as np
import pandas as pd


def calendar_features(ds: pd.DatetimeIndex, freq: str) -> np.ndarray:
    """Sine/cosine of the cycles finer than a week that `freq` can show [T, C] (C may be 0).

    Hour of day is used for sub-daily data and day of week for sub-weekly data.
    """
    step = pd.tseries.frequencies.to_offset(freq)
    try:
        delta = pd.Timedelta(step)
    except ValueError:  # calendar offsets (months, years) have no fixed length
        delta = pd.Timedelta(days=28)
    cols = []
    if delta < pd.Timedelta(days=1):
        hour = ds.hour.to_numpy() + ds.minute.to_numpy() / 60.0
        cols += [np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)]
    if delta < pd.Timedelta(days=7):
        dow = ds.dayofweek.to_numpy()
        cols += [np.sin(2 * np.pi * dow / 7), np.cos(2 * np.pi * dow / 7)]
    if not cols:
        return np.zeros((len(ds), 0), dtype=np.float32)
    return np.stack(cols, axis=1).astype(np.float32)


def n_calendar_features(freq: str) -> int:
    """How many columns `calendar_features` returns for this frequency."""
    return calendar_features(pd.date_range("2000-01-03", periods=1, freq=freq), freq).shape[1]
