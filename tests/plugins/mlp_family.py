"""A model family from outside the package, for the tests: a two-layer perceptron on the
normalized lookback. It is what a user's plug-in looks like: one module and one `register` call,
found through $FORECASTING_FAMILIES (`mlp_family`, with this folder on the path)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from forecasting.core.scaling import window_norm
from forecasting.families import Family, IntRange, register


@dataclass(frozen=True)
class MLPConfig:
    lookback: int = 48
    horizon: int = 24
    n_features: int = 1
    hidden: int = 32
    norm: str = "standard"


@dataclass(frozen=True)
class MLPSpace:
    hidden: tuple[int, int] = (8, 32)

    def params(self) -> dict:
        return {"hidden": IntRange(*self.hidden, log=True)}


class MLP(nn.Module):
    """x [B, L, F] -> y_hat [B, H] from the target channel only."""

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        self.net = nn.Sequential(nn.Linear(cfg.lookback, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.horizon))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, loc, scale = window_norm(x, self.cfg.norm)  # [B, L, F], [B, 1], [B, 1]
        return self.net(x[..., 0]) * scale + loc  # [B, H]


register(Family("mlp", MLPConfig, space=lambda periods: MLPSpace(), build=MLP,
                configure=lambda cfg, p: replace(cfg, hidden=p["hidden"]),
                first=lambda space, lookbacks: {"hidden": space.hidden[0]}, module=__name__))
