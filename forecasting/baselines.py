"""Naive and seasonal-naive forecasts, for one history or a batch of windows."""

from __future__ import annotations

import numpy as np


def naive(history: np.ndarray, horizon: int) -> np.ndarray:
    """Repeat the last value: history [..., L] -> [..., H]."""
    history = np.asarray(history)
    return np.repeat(history[..., -1:], horizon, axis=-1)


def seasonal_naive(history: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """Repeat the last full season: ŷ[t] = y[L − m + (t mod m)]; history [..., L] -> [..., H]."""
    history = np.asarray(history)
    if period < 1:
        raise ValueError(f"period must be positive, got {period}")
    if history.shape[-1] < period:
        raise ValueError(f"history of {history.shape[-1]} points is shorter than the period {period}")
    last = history[..., history.shape[-1] - period:]  # [..., m]
    return last[..., np.arange(horizon) % period]


def season_length(freq: str) -> int:
    """The usual seasonal period of a pandas frequency (24 for hourly, 7 for daily, ...)."""
    import pandas as pd

    off = pd.tseries.frequencies.to_offset(freq)
    name = off.rule_code.split("-")[0].upper()  # "W-SUN" -> "W", "QE-DEC" -> "QE"
    table = {"H": 24, "T": 60, "MIN": 60, "S": 60, "D": 7, "B": 5, "W": 52, "M": 12, "MS": 12,
             "ME": 12, "Q": 4, "QS": 4, "QE": 4}
    base = table.get(name, 1)
    if name in ("H", "T", "MIN") and off.n > 1:  # every 15 min -> 96 a day, every 2 h -> 12
        per_day = 24 * 60 // (off.n * (60 if name == "H" else 1))
        return max(per_day, 1)
    return base
