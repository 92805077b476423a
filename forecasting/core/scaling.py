"""Per-series standardization fitted on the training part, and per-window normalization."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from forecasting.core.windows import Panel

WINDOW_NORMS = ("none", "last", "mean", "standard")
LOG_FLOOR = 1e-6  # log(max(v, floor)): a multiplicative model's non-positive input (never in training) is floored


@dataclass(frozen=True)
class SeriesScaler:
    """Mean and standard deviation per series and column, fitted on training rows only."""

    ids: tuple[str, ...]
    mean: np.ndarray  # [S, F]
    std: np.ndarray  # [S, F]

    @classmethod
    def fit(cls, panel: Panel, train_end: np.ndarray | None = None) -> SeriesScaler:
        """Fit on rows [0, train_end) of each series (the whole series if None)."""
        ends = np.maximum(panel.lengths if train_end is None else np.asarray(train_end), 1)
        local = np.arange(len(panel.values)) - np.repeat(panel.offsets[:-1], panel.lengths)
        codes = np.repeat(np.arange(len(panel.ids)), panel.lengths)  # [T] series of each row
        rows = local < ends[codes]
        mean, std = series_stats(panel.values[rows], codes[rows], len(panel.ids))
        return cls(panel.ids, mean, std)

    def _rows(self, panel: Panel) -> tuple[np.ndarray, np.ndarray]:
        idx = self.index(panel.ids)
        reps = panel.lengths
        return np.repeat(self.mean[idx], reps, axis=0), np.repeat(self.std[idx], reps, axis=0)

    def index(self, ids: tuple[str, ...] | list[str]) -> np.ndarray:
        """Positions of `ids` in the fitted series; unknown ids raise KeyError naming them."""
        pos = {u: i for i, u in enumerate(self.ids)}
        unknown = [u for u in ids if u not in pos]
        if unknown:
            raise KeyError(f"series not seen in training: {unknown[:5]}")
        return np.array([pos[u] for u in ids], dtype=np.int64)

    def transform(self, panel: Panel) -> Panel:
        """A standardized copy of the panel."""
        mean, std = self._rows(panel)
        values = ((panel.values - mean) / std).astype(np.float32)
        return replace(panel, values=np.ascontiguousarray(values))

    def to_dict(self) -> dict:
        return {"ids": list(self.ids), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> SeriesScaler:
        return cls(tuple(d["ids"]), np.array(d["mean"], dtype=np.float64), np.array(d["std"], dtype=np.float64))


def series_stats(values: np.ndarray, codes: np.ndarray, n_series: int, eps: float = 1e-8
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-series mean and population std [S, F] of rows `values` [N, F] belonging to series
    `codes` [N], ignoring non-finite values. The one place per-series statistics are computed:
    at fit time over training rows, at predict time over the history of an unseen series.
    A constant (or empty) series would divide by zero: its scale stays 1."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    v = np.where(finite, values, 0.0)
    cols = range(values.shape[1])
    n = np.stack([np.bincount(codes, finite[:, j], minlength=n_series) for j in cols], 1)  # [S, F]
    s1 = np.stack([np.bincount(codes, v[:, j], minlength=n_series) for j in cols], 1)
    mean = s1 / np.maximum(n, 1)
    dev = np.where(finite, v - mean[codes], 0.0)  # two passes: exact for large levels, small spreads
    s2 = np.stack([np.bincount(codes, dev[:, j] ** 2, minlength=n_series) for j in cols], 1)
    std = np.sqrt(s2 / np.maximum(n, 1))
    return mean, np.where(std > eps, std, 1.0)


# The smallest window scale "standard" divides by. The windows it sees are per-series standardized
# (or logs, for a multiplicative model), so this is a twentieth of the series' own spread (or 5 %).
# A flat stretch (a sensor stuck at zero, a closed shop) has a standard deviation of 0: divided by a
# tiny epsilon, whatever follows it became values of 1e5 that dominated the ridge start and the loss
# (seen on ETTh2's LULL: the first trial's start scored validation MAE 68 instead of 0.53).
WINDOW_SCALE_FLOOR = 0.05


def window_norm(x: torch.Tensor, mode: str, eps: float = WINDOW_SCALE_FLOOR
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalize each window's target channel; returns (x_norm, loc [B,1], scale [B,1]).

    "last" subtracts the last observed value, "mean" the window mean, "standard"
    also divides by the window's standard deviation (at least `eps`). The model adds loc and
    multiplies scale back onto its output, so non-stationary levels do not have
    to be learnt.
    """
    y = x[..., 0]  # [B, L]
    ones = torch.ones_like(y[:, :1])
    if mode == "none":
        return x, torch.zeros_like(ones), ones
    if mode == "last":
        loc, scale = y[:, -1:], ones
    elif mode == "mean":
        loc, scale = y.mean(dim=1, keepdim=True), ones
    elif mode == "standard":
        loc = y.mean(dim=1, keepdim=True)
        scale = y.std(dim=1, keepdim=True, unbiased=False).clamp_min(eps)
    else:
        raise ValueError(f"window norm must be one of {WINDOW_NORMS}, got {mode!r}")
    yn = ((y - loc) / scale).unsqueeze(-1)  # [B, L, 1]
    return torch.cat([yn, x[..., 1:]], dim=-1), loc, scale
