"""One recurrent forecaster: GRU or LSTM encoder, direct multi-horizon head, linear highway.

    x [B, L, F] --window_norm--> x_n [B, L, F]
        recurrent path:  (segments) -> GRU/LSTM -> last state [B, D] -> Linear(D, H)
        highway:         target channel x_n[..., 0] [B, L] -> Linear(L, H)
    y_hat = (recurrent + highway) * scale + loc                                  [B, H]

The highway is LSTNet's autoregressive component (NLinear when the window norm is "last"):
a linear map of the normalized lookback straight to the horizon. It makes seasonal naive
(at any period <= L) and every linear autoregression special cases of the model, so the
recurrence only has to learn what a linear model cannot. With `init="seasonal"` the highway
starts as seasonal naive at `season` and the recurrent head at zero: the untrained model *is*
seasonal naive, and training moves away from it only where that lowers the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from forecasting.core.scaling import WINDOW_NORMS, window_norm

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
FAMILIES = tuple(CELLS)  # the model families a job can tune: one per recurrent cell
HIGHWAY_INITS = ("default", "seasonal", "linear")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a `RecurrentForecaster`.

    `n_features` counts the target plus covariates (calendar features included).
    `segment` > 1 reads the lookback in chunks of that many steps, each chunk
    embedded into one input vector (as in SegRNN): L/segment recurrent steps
    instead of L, the main lever for speed on a CPU. The oldest L mod segment
    steps are dropped by the recurrent path (the highway sees all L).
    `highway` adds the linear lookback -> horizon path; `season` (0: none) is the
    period the highway starts from when `init` is "seasonal"; with "linear" the forecaster
    starts it from a ridge fit of the normalized training windows (`start_as_linear`).
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
    highway: bool = False
    season: int = 0
    init: str = "linear"

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        if self.norm not in WINDOW_NORMS:
            raise ValueError(f"norm must be one of {WINDOW_NORMS}, got {self.norm!r}")
        if self.init not in HIGHWAY_INITS:
            raise ValueError(f"init must be one of {HIGHWAY_INITS}, got {self.init!r}")
        if not 1 <= self.segment <= self.lookback:
            raise ValueError(f"segment must be in [1, lookback={self.lookback}], got {self.segment}")
        if min(self.lookback, self.horizon, self.hidden, self.layers, self.n_features) < 1:
            raise ValueError("lookback, horizon, hidden, layers and n_features must be positive")
        if not 0 <= self.season <= self.lookback:
            raise ValueError(f"season must be in [0, lookback={self.lookback}], got {self.season}")


def seasonal_naive_weights(lookback: int, horizon: int, period: int) -> torch.Tensor:
    """The [H, L] selection matrix of seasonal naive: output t copies input L - m + (t mod m)."""
    w = torch.zeros(horizon, lookback)
    t = torch.arange(horizon)
    w[t, lookback - period + t % period] = 1.0
    return w


class RecurrentForecaster(nn.Module):
    """x [B, L, F] -> y_hat [B, H]: normalize the window, encode, project, add the highway."""

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
        self.highway = nn.Linear(cfg.lookback, cfg.horizon) if cfg.highway else None
        if self.highway is not None and cfg.init == "seasonal" and cfg.season:
            self.start_as_seasonal_naive(cfg.season)

    def start_as_seasonal_naive(self, period: int) -> None:
        """Highway = seasonal naive at `period`, recurrent head = 0: the model forecasts exactly
        seasonal naive until it is trained."""
        self.start_as_linear(seasonal_naive_weights(self.cfg.lookback, self.cfg.horizon, period),
                             torch.zeros(self.cfg.horizon))

    @torch.no_grad()
    def start_as_linear(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Highway = the linear map `weight` [H, L], `bias` [H] on the normalized window, recurrent
        head = 0 (the recurrence starts as a no-op residual and learns what the map misses)."""
        self.highway.weight.copy_(weight)
        self.highway.bias.copy_(bias)
        self.head.weight.zero_()
        self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x, loc, scale = window_norm(x, cfg.norm)  # [B, L, F], [B, 1], [B, 1]
        linear = self.highway(x[..., 0]) if self.highway is not None else 0.0  # [B, H]
        if cfg.segment > 1:
            n_seg = x.shape[1] // cfg.segment
            x = x[:, x.shape[1] - n_seg * cfg.segment:]  # drop the oldest remainder
            x = x.reshape(x.shape[0], n_seg, cfg.segment * x.shape[2])  # [B, L/seg, seg*F]
            x = self.embed(x)  # [B, L/seg, hidden]
        out, _ = self.rnn(x)  # [B, steps, hidden]
        y = self.head(self.drop(out[:, -1])) + linear  # [B, H]
        return y.float() * scale + loc


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
