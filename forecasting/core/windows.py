"""Sliding windows per series as zero-copy views over one contiguous array.

All series are concatenated into one array `values` [T, F]; `offsets` [S+1]
mark where each series starts. A window is identified by its global start
index; its inputs are rows [s, s+L) and its targets rows [s+L, s+L+H) of the
same series, so a window never crosses a series boundary. `view()` exposes all
windows as a strided view [T-W+1, W, F] without copying (W = L+H); batches are
gathered from it by index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from forecasting.core.columns import ID, TARGET, TIME
from forecasting.core.data import Split
from forecasting.core.errors import DataError


@dataclass(frozen=True)
class Panel:
    """Many series in one contiguous array.

    `values` [T, F] float32, column 0 is the target, the rest covariates;
    `offsets` [S+1]; `starts` holds each series' first timestamp.
    """

    ids: tuple[str, ...]
    values: np.ndarray  # [T, F]
    offsets: np.ndarray  # [S+1]
    starts: tuple[pd.Timestamp, ...]
    freq: str
    columns: tuple[str, ...] = (TARGET,)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def series(self, i: int) -> np.ndarray:
        """Rows of series i, a view [n_i, F]."""
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    def timestamps(self, i: int) -> pd.DatetimeIndex:
        return pd.date_range(self.starts[i], periods=int(self.lengths[i]), freq=self.freq)


def panel_from_long(df: pd.DataFrame, freq: str, covariates: tuple[str, ...] = ()) -> Panel:
    """Pack a validated, sorted long frame into a `Panel`."""
    missing = [c for c in (ID, TIME, TARGET, *covariates) if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}")
    uid = df[ID].to_numpy()
    change = np.flatnonzero(uid[1:] != uid[:-1]) + 1
    offsets = np.concatenate([[0], change, [len(df)]]).astype(np.int64)
    ids = tuple(str(uid[o]) for o in offsets[:-1])
    if len(set(ids)) != len(ids):
        raise DataError("rows are not grouped by series; sort by (unique_id, ds) first")
    cols = (TARGET, *covariates)
    values = np.ascontiguousarray(df[list(cols)].to_numpy(np.float32))
    starts = tuple(pd.Timestamp(t) for t in df[TIME].to_numpy()[offsets[:-1]])
    return Panel(ids, values, offsets, starts, freq, cols)


def window_starts(
    offsets: np.ndarray,
    lookback: int,
    horizon: int,
    stride: int = 1,
    target_lo: np.ndarray | None = None,
    target_hi: np.ndarray | None = None,
) -> np.ndarray:
    """Global start indices of every window whose targets lie in [lo, hi) of its series.

    `target_lo`/`target_hi` are per-series row positions (default: the whole
    series); inputs may reach back before `target_lo`. Windows step by `stride`
    counted from the first admissible window of each series; output is sorted.
    """
    lengths = np.diff(offsets)
    lo = np.zeros_like(lengths) if target_lo is None else np.asarray(target_lo)
    hi = lengths if target_hi is None else np.minimum(np.asarray(target_hi), lengths)
    first = np.maximum(lo - lookback, 0)  # local start of the first window
    last = hi - lookback - horizon  # local start of the last window (inclusive)
    counts = np.where(last >= first, (last - first) // stride + 1, 0)
    if counts.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    series = np.repeat(np.arange(len(lengths)), counts)
    rank = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return (offsets[:-1][series] + first[series] + rank * stride).astype(np.int64)


def sliding_view(values: np.ndarray, width: int) -> np.ndarray:
    """Every window of `width` rows of `values` [T, F] as a read-only view [T-W+1, W, F]."""
    return sliding_window_view(values, width, axis=0).transpose(0, 2, 1)


def inputs_targets(w, lookback: int):
    """Inputs [B, L, F] and targets [B, H] (the target column) of gathered windows w [B, W, F]: the one
    place the window layout is read, for NumPy arrays and torch tensors (on any device) alike."""
    return w[:, :lookback], w[:, lookback:, 0]


@dataclass(frozen=True)
class Windows:
    """A set of windows of one panel: global starts plus the series each belongs to."""

    panel: Panel
    lookback: int
    horizon: int
    starts: np.ndarray  # [N]

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def series_index(self) -> np.ndarray:
        """Series number of each window [N]."""
        return np.searchsorted(self.panel.offsets, self.starts, side="right") - 1

    def view(self) -> np.ndarray:
        """All windows of the panel (zero-copy) [T-W+1, W, F]; index it with `starts`."""
        return sliding_view(self.panel.values, self.lookback + self.horizon)

    def arrays(self, idx: np.ndarray | slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Gather inputs x [B, L, F] and targets y [B, H] (target column) for windows `idx`."""
        return inputs_targets(self.view()[self.starts[idx]], self.lookback)


def make_windows(
    panel: Panel,
    lookback: int,
    horizon: int,
    split: Split | None = None,
    part: str = "all",
    stride: int = 1,
) -> Windows:
    """Windows of one split part ("train", "val", "test" or "all") of a panel."""
    lo = hi = None
    if part != "all":
        if split is None:
            raise ValueError("a split is needed to select a part")
        if tuple(split.ids) != tuple(panel.ids):
            raise DataError("split and panel list different series")
        bounds = {
            "train": (np.zeros_like(split.train_end), split.train_end),
            "val": (split.train_end, split.val_end),
            "test": (split.val_end, split.lengths),
        }
        if part not in bounds:
            raise ValueError(f"part must be train, val, test or all, got {part!r}")
        lo, hi = bounds[part]
    starts = window_starts(panel.offsets, lookback, horizon, stride, lo, hi)
    return Windows(panel, lookback, horizon, starts)
