"""One recurrent forecaster: GRU or LSTM encoder, direct multi-horizon linear head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from forecasting.scaling import WINDOW_NORMS, window_norm

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a `RecurrentForecaster`.

    `n_features` counts the target plus covariates (calendar features included).
    `segment` > 1 reads the lookback in chunks of that many steps, each chunk
    embedded into one input vector (as in SegRNN): L/segment recurrent steps
    instead of L, the main lever for speed on a CPU. The oldest L mod segment
    steps are dropped.
    """

    cell: str = "gru"
    lookback: int = 96
    horizon: int = 24
    n_features: int = 1
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.0
    norm: str = "last"
    segment: int = 1

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        if self.norm not in WINDOW_NORMS:
            raise ValueError(f"norm must be one of {WINDOW_NORMS}, got {self.norm!r}")
        if not 1 <= self.segment <= self.lookback:
            raise ValueError(f"segment must be in [1, lookback={self.lookback}], got {self.segment}")
        if min(self.lookback, self.horizon, self.hidden, self.layers, self.n_features) < 1:
            raise ValueError("lookback, horizon, hidden, layers and n_features must be positive")


class RecurrentForecaster(nn.Module):
    """x [B, L, F] -> y_hat [B, H]: normalize the window, encode, project the last state."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        step_in = cfg.n_features * cfg.segment
        # A segment needs an embedding to mix its steps; a single step feeds the cell directly.
        self.embed = nn.Sequential(nn.Linear(step_in, cfg.hidden), nn.ReLU()) if cfg.segment > 1 else None
        self.rnn = CELLS[cfg.cell](
            input_size=cfg.hidden if self.embed is not None else step_in,
            hidden_size=cfg.hidden,
            num_layers=cfg.layers,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, cfg.horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x, loc, scale = window_norm(x, cfg.norm)  # [B, L, F], [B, 1], [B, 1]
        if cfg.segment > 1:
            n_seg = x.shape[1] // cfg.segment
            x = x[:, x.shape[1] - n_seg * cfg.segment:]  # drop the oldest remainder
            x = x.reshape(x.shape[0], n_seg, cfg.segment * x.shape[2])  # [B, L/seg, seg*F]
            x = self.embed(x)  # [B, L/seg, hidden]
        out, _ = self.rnn(x)  # [B, steps, hidden]
        y = self.head(self.drop(out[:, -1]))  # [B, H]
        return y.float() * scale + loc


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
