"""Per-series standardization fitted on the training part, and per-window normalization."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from forecasting.windows import Panel

WINDOW_NORMS = ("none", "last", "mean", "standard")


@dataclass(frozen=True)
class SeriesScaler:
    """Mean and standard deviation per series and column, fitted on training rows only."""

    ids: tuple[str, ...]
    mean: np.ndarray  # [S, F]
    std: np.ndarray  # [S, F]

    @classmethod
    def fit(cls, panel: Panel, train_end: np.ndarray | None = None, eps: float = 1e-8) -> SeriesScaler:
        """Fit on rows [0, train_end) of each series (the whole series if None)."""
        ends = panel.lengths if train_end is None else np.asarray(train_end)
        means, stds = [], []
        for i in range(len(panel.ids)):
            part = panel.series(i)[: max(int(ends[i]), 1)].astype(np.float64)  # [n, F]
            means.append(part.mean(axis=0))
            sd = part.std(axis=0)
            # A constant series would divide by zero; keep its scale at 1.
            stds.append(np.where(sd > eps, sd, 1.0))
        return cls(panel.ids, np.array(means), np.array(stds))

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

    def inverse_target(self, y: np.ndarray, series: np.ndarray) -> np.ndarray:
        """Undo scaling of target values y [N, H] belonging to series positions [N]."""
        return y * self.std[series, :1] + self.mean[series, :1]

    def to_dict(self) -> dict:
        return {"ids": list(self.ids), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> SeriesScaler:
        return cls(tuple(d["ids"]), np.array(d["mean"], dtype=np.float64), np.array(d["std"], dtype=np.float64))


def window_norm(x: torch.Tensor, mode: str, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalize each window's target channel; returns (x_norm, loc [B,1], scale [B,1]).

    "last" subtracts the last observed value, "mean" the window mean, "standard"
    also divides by the window's standard deviation. The model adds loc and
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
