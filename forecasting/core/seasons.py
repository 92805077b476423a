"""Seasonal periods implied by a frequency, and the ones a dataset's history can support.

Sub-hourly and hourly data have a daily and a weekly cycle, daily data a weekly and a
yearly one, weekly and monthly data a yearly one. A period is kept when the training
history covers it at least twice (one season to copy, one to check it against).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

_DAY, _WEEK, _YEAR = pd.Timedelta(days=1), pd.Timedelta(days=7), pd.Timedelta(days=365)
# Calendar offsets without a fixed length: (periods per year, name).
_CALENDAR = {"W": 52, "M": 12, "MS": 12, "ME": 12, "SM": 24, "SMS": 24, "Q": 4, "QS": 4, "QE": 4,
             "BM": 12, "BMS": 12, "BME": 12, "BQ": 4, "BQS": 4, "BQE": 4}


def seasonal_periods(freq: str) -> tuple[int, ...]:
    """Every seasonal period (in steps) that `freq` implies, shortest first; () for none.

    hourly -> (24, 168), 30 min -> (48, 336), daily -> (7, 365), business daily -> (5, 260),
    weekly -> (52,), monthly -> (12,), quarterly -> (4,), yearly -> ().
    """
    off = pd.tseries.frequencies.to_offset(freq)
    name = off.rule_code.split("-")[0].upper()  # "W-SUN" -> "W", "QE-DEC" -> "QE"
    if name == "B":
        return tuple(p for p in (5, 260) if p % off.n == 0 and p // off.n > 1)
    if name in _CALENDAR:
        per_year = _CALENDAR[name] / off.n
        return (int(per_year),) if per_year >= 2 and per_year == int(per_year) else ()
    try:
        step = pd.Timedelta(off)
    except ValueError:  # years and other long calendar offsets: no cycle to repeat
        return ()
    if step < _DAY:
        cycles = (_DAY, _WEEK)
    elif step < _WEEK:
        cycles = (_WEEK, _YEAR)
    else:
        cycles = (_YEAR,)
    out = []
    for c in cycles:
        n = c / step
        if n >= 2 and abs(n - round(n)) < 1e-9:
            out.append(int(round(n)))
    return tuple(out)


def kept_periods(freq: str, train_lengths: Sequence[int] | np.ndarray,
                 override: Sequence[int] | None = None) -> tuple[int, ...]:
    """The periods of `freq` (or `override`) that the median training length covers twice.

    An explicit `override` is kept as given, sorted, except periods the history cannot
    cover twice, which raise: the user asked for them by name.
    """
    covered = float(np.median(np.asarray(train_lengths))) if len(train_lengths) else 0.0
    if override:
        periods = tuple(sorted({int(p) for p in override}))
        if periods[0] < 2:
            raise ValueError(f"--seasons: periods must be at least 2, got {periods[0]}")
        short = [p for p in periods if 2 * p > covered]
        if short:
            raise ValueError(f"--seasons: period(s) {short} need {2 * short[0]} training points per series "
                             f"(the median series has {covered:.0f})")
        return periods
    return tuple(p for p in seasonal_periods(freq) if 2 * p <= covered)


def fitting_periods(periods: Sequence[int], lookback: int, most: int) -> tuple[int, ...]:
    """The (at most `most`) shortest distinct periods in [2, lookback]: those a window of `lookback`
    steps holds a whole cycle of (the hybrid's seasons, the recurrent family's seasonal lags)."""
    return tuple(sorted({int(p) for p in periods if 2 <= p <= lookback}))[:most]
