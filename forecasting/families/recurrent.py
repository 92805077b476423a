"""One recurrent forecaster: GRU or LSTM encoder, direct multi-horizon head, linear highway.

    x [B, L, F] --(multiplicative: target -> log(x[..., 0] + c), c = x[..., -1])--window_norm--> x_n [B, L, F]
        recurrent path:  (segments) -> GRU/LSTM -> last state h [B, D] -> Linear(D, H)
        highway:         target channel x_n[..., 0] [B, L] -> Linear(L, H)
        seasonal lags:   z = relu(W_h h + e_t + W_l lags_t)  [B, H, D] -> Linear(D, 1)  [B, H]
                         lags_t [B, H, K]: x_n at t - m_k (latest cycle) for each output step t
    y_hat = (recurrent + highway + lags) * scale + loc                           [B, H]
        multiplicative: y_hat = exp(that) - c

`multiplicative` models the log of the original values: x + c = y / sigma, c = mu / sigma the level
column the `Forecaster` appends for such a model. Seasonal swings that grow with the level are then
additive, and a ridge highway on log windows fits them (on positive data only: see `start`).

The highway is LSTNet's autoregressive component (NLinear when the window norm is "last"):
a linear map of the normalized lookback straight to the horizon. It makes seasonal naive
(at any period <= L) and every linear autoregression special cases of the model, so the
recurrence only has to learn what a linear model cannot. With `init="seasonal"` the highway
starts as seasonal naive at `season` and the recurrent head at zero: the untrained model *is*
seasonal naive, and training moves away from it only where that lowers the loss.

`lags` gives every output step its own inputs: the values one (latest) seasonal cycle before it, for
each of `lag_periods` (DeepAR's and MQ-RNN's seasonal lags, aligned with the step they forecast).
The highway already weighs those values linearly; the lag path mixes them with the recurrent state
through a nonlinearity, so that how much a step trusts last day's or last week's value can depend
on what the recurrence read (a holiday, a level shift). It starts at zero beside the highway.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from forecasting.core.baselines import linear_start, seasonal_naive
from forecasting.core.metrics import mse
from forecasting.core.scaling import LOG_FLOOR, WINDOW_NORMS, window_norm
from forecasting.core.seasons import fitting_periods
from forecasting.core.training import count_parameters  # noqa: F401  (re-exported)
from forecasting.core.windows import Windows
from forecasting.families.base import Choice, Family, FloatRange, IntRange, Param, register

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
HIGHWAY_INITS = ("default", "seasonal", "linear")
MAX_LAGS = 2  # seasonal-lag slots per output step (shortest periods first; a single one is repeated)
LOG_CEILING = 30.0  # exp of a forecast in logs is capped: a diverging step gives a large loss, not inf


def log_target(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, L, F] with the target replaced by log(x[..., 0] + c) = log(y / sigma), and c [B], the
    level column (last, constant along the window)."""
    c = x[:, -1, -1]  # [B]
    y = torch.log(torch.clamp(x[..., :1] + c[:, None, None], min=LOG_FLOOR))  # [B, L, 1]
    return torch.cat([y, x[..., 1:]], dim=-1), c


def exp_back(out: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """A forecast [B, H] of log(y / sigma) back to standardized values."""
    return torch.exp(torch.clamp(out, max=LOG_CEILING)) - c[:, None]


def positive(train: Windows) -> bool:
    """Whether every original value on the rows the windows cover is positive: target + c > 0, c the
    level column (x + c = y / sigma)."""
    values, width = train.panel.values, train.lookback + train.horizon
    edges = np.zeros(len(values) + 1, dtype=np.int64)  # +1 where a window starts, -1 where it ends
    np.add.at(edges, train.starts, 1)
    np.add.at(edges, train.starts + width, -1)
    rows = np.cumsum(edges[:-1]) > 0  # [T] rows some window covers
    return bool(np.all(values[rows, 0] + values[rows, -1] > 0))


@dataclass(frozen=True)
class RecurrentConfig:
    """Architecture of a `RecurrentForecaster`.

    `n_features` counts the target plus covariates (calendar features included).
    `segment` > 1 reads the lookback in chunks of that many steps, each chunk
    embedded into one input vector (as in SegRNN): L/segment recurrent steps
    instead of L, the main lever for speed on a CPU. The oldest L mod segment
    steps are dropped by the recurrent path (the highway sees all L).
    `highway` adds the linear lookback -> horizon path; `season` (0: none) is the
    period the highway starts from when `init` is "seasonal"; with "linear" the forecaster
    starts it from a ridge fit of the normalized training windows (`start_as_linear`).
    `multiplicative` reads and forecasts the log of the original values (see the module docstring;
    it needs the level column last, `n_features` >= 2).
    `lags` adds the seasonal-lag path: each output step reads the values one cycle of each of
    `lag_periods` (at most `MAX_LAGS`, each in [1, lookback]) before it. Empty: `start` picks the
    kept periods that fit the lookback (none: the last value, period 1).
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
    multiplicative: bool = False
    lags: bool = False
    lag_periods: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        if len(self.lag_periods) > MAX_LAGS or any(not 1 <= m <= self.lookback for m in self.lag_periods):
            raise ValueError(f"lag_periods must be at most {MAX_LAGS} periods in [1, lookback={self.lookback}], "
                             f"got {tuple(self.lag_periods)}")
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


def lag_index(lookback: int, horizon: int, periods: tuple[int, ...]) -> torch.Tensor:
    """[H, K] positions in the window of each output step's seasonal lags: step t (0-based, L + t in
    window time) reads L - m + (t mod m), its latest value one or more whole cycles m back (seasonal
    naive's choice). K = `MAX_LAGS` slots filled with `periods` in order (repeated; none: period 1)."""
    periods = tuple(periods) or (1,)
    slots = [periods[k % len(periods)] for k in range(MAX_LAGS)]
    t = torch.arange(horizon)[:, None]  # [H, 1]
    m = torch.tensor(slots)[None, :]  # [1, K]
    return lookback - m + t % m  # [H, K]


def lag_periods(periods: tuple[int, ...], lookback: int) -> tuple[int, ...]:
    """The (at most `MAX_LAGS`) shortest periods in [2, lookback]: the seasonal lags a window holds."""
    return fitting_periods(periods, lookback, MAX_LAGS)


class SeasonalLags(nn.Module):
    """State h [B, D] and normalized window x_n [B, L] -> [B, H]: each output step mixes its own
    seasonal lags with the state through one hidden layer (its config needs `lookback`, `horizon`,
    `hidden`, `lag_periods`). The index is a buffer rebuilt from the config, so it is not saved."""

    def __init__(self, cfg):
        super().__init__()
        self.register_buffer("index", lag_index(cfg.lookback, cfg.horizon, cfg.lag_periods), persistent=False)
        self.state = nn.Linear(cfg.hidden, cfg.hidden)
        self.step = nn.Parameter(0.02 * torch.randn(cfg.horizon, cfg.hidden))  # e_t, one per output step
        self.values = nn.Linear(MAX_LAGS, cfg.hidden, bias=False)
        self.out = nn.Linear(cfg.hidden, 1)

    def set_periods(self, lookback: int, horizon: int, periods: tuple[int, ...]) -> None:
        self.index = lag_index(lookback, horizon, periods).to(self.index.device)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        lags = x[:, self.index]  # [B, H, K]
        z = torch.relu(self.state(h)[:, None, :] + self.step + self.values(lags))  # [B, H, D]
        return self.out(z)[..., 0]  # [B, H]


def seasonal_naive_weights(lookback: int, horizon: int, period: int) -> torch.Tensor:
    """The [H, L] selection matrix of seasonal naive: output t copies input L - m + (t mod m)."""
    w = torch.zeros(horizon, lookback)
    t = torch.arange(horizon)
    w[t, lookback - period + t % period] = 1.0
    return w


class RecurrentReader(nn.Module):
    """The recurrent path every recurrent family shares: x [B, L, F] -> (segments) -> GRU/LSTM ->
    last state [B, D] -> Linear(D, H). Its config needs `n_features`, `segment`, `hidden`, `layers`,
    `dropout`, `cell` and `horizon`."""

    def build_reader(self, cfg) -> None:
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

    def read(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, F] -> [B, H] (in segments when `segment` > 1: the oldest L mod segment steps dropped)."""
        return self.head(self.encode(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, F] -> the last state [B, D], after dropout."""
        seg = self.cfg.segment
        if seg > 1:
            n_seg = x.shape[1] // seg
            x = x[:, x.shape[1] - n_seg * seg:]  # drop the oldest remainder
            x = x.reshape(x.shape[0], n_seg, seg * x.shape[2])  # [B, L/seg, seg*F]
            x = self.embed(x)  # [B, L/seg, hidden]
        out, _ = self.rnn(x)  # [B, steps, hidden]
        return self.drop(out[:, -1])  # [B, D]


class RecurrentForecaster(RecurrentReader):
    """x [B, L, F] -> y_hat [B, H]: normalize the window, encode, project, add the highway."""

    def __init__(self, cfg: RecurrentConfig):
        super().__init__()
        if cfg.multiplicative and cfg.n_features < 2:  # checked here: a config gets its width from the Forecaster
            raise ValueError("a multiplicative model reads the level column last: n_features must be at least 2")
        self.cfg = cfg
        self.build_reader(cfg)
        self.highway = nn.Linear(cfg.lookback, cfg.horizon) if cfg.highway else None
        self.lags = SeasonalLags(cfg) if cfg.lags else None
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
        head and lag path = 0 (the recurrence starts as a no-op residual and learns what the map misses)."""
        self.highway.weight.copy_(weight)
        self.highway.bias.copy_(bias)
        for last in [self.head] + ([self.lags.out] if self.lags is not None else []):
            last.weight.zero_()
            last.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if cfg.multiplicative:
            x, c = log_target(x)  # [B, L, F] the target in logs, c [B]
        x, loc, scale = window_norm(x, cfg.norm)  # [B, L, F], [B, 1], [B, 1]
        linear = self.highway(x[..., 0]) if self.highway is not None else 0.0  # [B, H]
        h = self.encode(x)  # [B, D]
        lags = self.lags(h, x[..., 0]) if self.lags is not None else 0.0  # [B, H]
        y = (self.head(h) + linear + lags).float() * scale + loc  # [B, H]
        return exp_back(y, c) if cfg.multiplicative else y


ModelConfig = RecurrentConfig  # the name saved code and older callers use


# --------------------------------------------------------------------------- the family's search and start


@dataclass(frozen=True)
class RecurrentSpace:
    """The recurrent family's own ranges (GRU and LSTM are searched in the same space: a fair
    comparison). The shared ones (lookback, learning rate, ...) are in `tuning.space.SearchSpace`."""

    hidden: tuple[int, int] = (16, 128)
    layers: tuple[int, int] = (1, 3)
    dropout: tuple[float, float] = (0.0, 0.3)
    norms: tuple[str, ...] = ("none", "last", "standard")
    segments: tuple[int, ...] = (1, 24)
    highway: tuple[bool, ...] = (True, False)
    inits: tuple[str, ...] = ("linear", "seasonal")  # where the highway starts (when on)
    multiplicative: tuple[bool, ...] = (False, True)  # True is tried only on positive data (`start`)
    lags: tuple[bool, ...] = (False, True)  # the seasonal-lag path

    def params(self) -> dict[str, Param]:
        return {"hidden": IntRange(*self.hidden, log=True), "layers": IntRange(*self.layers),
                "dropout": FloatRange(*self.dropout), "norm": Choice(self.norms), "segment": Choice(self.segments),
                "highway": Choice(self.highway), "init": Choice(self.inits),
                "multiplicative": Choice(self.multiplicative), "lags": Choice(self.lags)}


def default_space(periods: tuple[int, ...]) -> RecurrentSpace:
    """Segments of half or one shortest season; the linear highway on or off.

    Step-by-step reading (segment 1) is left out for seasonal data: on ETTh1 it trained many times
    slower and ended less accurate at the same budget than season-long segments
    (benchmarks/results/speed.md); pass a space to search it.
    """
    period = min(periods) if periods else 1
    return RecurrentSpace(segments=tuple(sorted({max(period // 2, 1), period})) if period >= 8 else (1,))


def first(space: RecurrentSpace, lookbacks: tuple[int, ...]) -> dict:
    """A mid-size one-layer model, window standardization, the longest segment, the highway on (it
    starts as the ridge fit), seasonal lags on and the longest lookback up to 7 segments (one week of
    hourly data). Seasonal lags are on because, added to this trial, they won on M4 Hourly's
    validation part and tied on ETTh1's and ETTh2's (benchmarks/results/forms.md)."""
    lookback = [lb for lb in lookbacks if lb <= 7 * max(space.segments)] or list(lookbacks)
    fits = [s for s in space.segments if s <= max(lookback)]
    return {"lookback": max(lookback), "hidden": min(max(64, space.hidden[0]), space.hidden[1]),
            "layers": space.layers[0], "dropout": space.dropout[0],
            "norm": "standard" if "standard" in space.norms else space.norms[0],
            "segment": max(fits) if fits else min(space.segments),
            "highway": True in space.highway, "init": space.inits[0],
            "multiplicative": False if False in space.multiplicative else space.multiplicative[0],
            "lags": True in space.lags}


def configure(cfg: RecurrentConfig, p: dict) -> RecurrentConfig:
    """The architecture a drawn parameter set stands for (`cfg.lookback` is already the drawn one)."""
    return replace(cfg, hidden=p["hidden"], layers=p["layers"], dropout=p["dropout"], norm=p["norm"],
                   segment=min(p["segment"], cfg.lookback), highway=bool(p.get("highway", False)),
                   init=p.get("init", cfg.init), multiplicative=bool(p.get("multiplicative", cfg.multiplicative)),
                   lags=bool(p.get("lags", cfg.lags)), lag_periods=())


def best_season(train: Windows, cfg: RecurrentConfig, periods: tuple[int, ...], max_windows: int = 20_000) -> int:
    """The kept period whose seasonal naive fits the training windows best (0: none fits the
    lookback). Chosen on training data only."""
    periods = [p for p in periods if 1 < p <= cfg.lookback]
    if not periods or len(train) == 0:
        return 0
    idx = np.linspace(0, len(train) - 1, min(len(train), max_windows)).astype(np.int64)
    x, y = train.arrays(idx)
    return min(periods, key=lambda p: mse(y, seasonal_naive(x[..., 0], cfg.horizon, p)))


def start(model: RecurrentForecaster, cfg: RecurrentConfig, train: Windows, val: Windows,
          periods: tuple[int, ...]) -> RecurrentConfig | None:
    """With the highway on, start it as the best seasonal naive (`init="seasonal"`, the season it
    chose recorded in the config) or as the ridge fit of the normalized windows (in logs when
    multiplicative), the recurrent head at zero; that start then competes with every epoch on
    validation. A multiplicative config on data with a non-positive value among the training
    windows' rows becomes additive; the lag path reads the kept periods that fit the lookback (both
    recorded in the returned config)."""
    changed = replace(cfg, multiplicative=cfg.multiplicative and positive(train),
                      lag_periods=(cfg.lag_periods or lag_periods(periods, cfg.lookback)) if cfg.lags else ())
    recorded = changed != cfg
    if recorded:
        cfg = model.cfg = changed
        if cfg.lags:
            model.lags.set_periods(cfg.lookback, cfg.horizon, cfg.lag_periods)
    if not cfg.highway:
        return cfg if recorded else None
    if cfg.init == "linear":
        model.start_as_linear(*linear_start(train, val, cfg.norm, cfg.multiplicative))
        return cfg
    season = best_season(train, cfg, periods) if cfg.init == "seasonal" else 0
    if season:
        model.start_as_seasonal_naive(season)
    return replace(cfg, season=season)


for _cell in CELLS:
    register(Family(_cell, RecurrentConfig, default_space, RecurrentForecaster, configure, first, start,
                    defaults={"cell": _cell}, module=__name__))
