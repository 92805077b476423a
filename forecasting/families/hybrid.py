"""An ES-RNN-style hybrid (Smyl's M4 winner): Holt-Winters plus a recurrent remainder, additive or
multiplicative.

    y = x[..., 0]                                                                [B, L]
        multiplicative: y = log(x[..., 0] + c), c = x[..., -1] = mu / sigma      [B, L]
            (the family reads the level column: x + c = y_original / sigma, so additive smoothing of
            its log is multiplicative Holt-Winters, Smyl's form: level-normalized, deseasonalized logs)
        Holt-Winters (level, optional trend, up to two seasons) over the window:
            last level l_L, trend b_L, seasonal states; the seasonal index s_t used at each t
        z_t = y_t - s_t - l_L  (deseasonalized, relative to the last level), covariates as they are
        recurrent path:  [z, x[..., 1:]] -> (segments) -> GRU/LSTM -> last state -> Linear(D, H) = r
    y_hat_h = l_L + h * b_L + sum_k s_k(L + h) + r_h                               [B, H]
        multiplicative: y_hat_h = exp(that) - c (back to standardized values)

The exponential smoothing is Taylor's (2003) additive double-seasonal Holt-Winters, with the
smoothing coefficients learnt as global parameters (one set for all series, like every other weight
here: the model reads windows, not series identities). The recurrence forecasts only what the
smoothing misses. `start` zeroes the recurrent head and picks the coefficients that forecast the
training windows best: the untrained model *is* that Holt-Winters, and it competes with every epoch on
validation, so training keeps it unless an epoch does better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from forecasting.core.seasons import fitting_periods
from forecasting.core.windows import Windows
from forecasting.families import recurrent
from forecasting.families.base import Choice, Family, FloatRange, IntRange, Param, register

CELLS = recurrent.CELLS
GRU = next(iter(CELLS))  # the default cell, the GRU (only families.__init__ and recurrent.py spell family names)
MAX_SEASONS = 2
# Where the smoothing starts without training windows: a slowly moving level and trend, seasons
# updated gently. With them, `start` picks alpha and gamma from this grid on the training windows.
ALPHA0, BETA0, GAMMA0 = 0.1, 0.01, 0.2
ALPHAS, GAMMAS = (0.003, 0.01, 0.03, 0.1, 0.3), (0.05, 0.1, 0.2, 0.4, 0.7)


@dataclass(frozen=True)
class HybridConfig:
    """Architecture of a `HybridForecaster`.

    `seasons`: up to two seasonal periods of the smoothing, shortest first, each in [2, lookback]
    (a longer one is refused: the window could not initialize it). Empty: `start` picks the (at most
    two shortest) kept periods of the data that fit the lookback, dropping longer ones; with none
    the smoothing is Holt's (or simple) exponential smoothing. `trend` adds Holt's additive trend.
    `multiplicative` smooths the log of the original values (seasons and trend become factors); it
    needs the level column as the last input (`n_features` >= 2) and positive training values.
    `segment` > 1 reads the lookback in chunks, as in `RecurrentConfig` (the oldest L mod segment
    steps are left to the smoothing alone).
    """

    cell: str = GRU
    lookback: int = 96
    horizon: int = 24
    n_features: int = 1
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.0
    segment: int = 1
    seasons: tuple[int, ...] = ()
    trend: bool = False
    multiplicative: bool = False

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        if min(self.lookback, self.horizon, self.hidden, self.layers, self.n_features) < 1:
            raise ValueError("lookback, horizon, hidden, layers and n_features must be positive")
        if not 1 <= self.segment <= self.lookback:
            raise ValueError(f"segment must be in [1, lookback={self.lookback}], got {self.segment}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        seasons = tuple(self.seasons)
        if len(seasons) > MAX_SEASONS:
            raise ValueError(f"at most {MAX_SEASONS} seasons, got {seasons}")
        if any(not 2 <= m <= self.lookback for m in seasons):
            raise ValueError(f"each season must be in [2, lookback={self.lookback}], got {seasons} "
                             "(the window initializes each seasonal state from its first cycle)")
        if list(seasons) != sorted(set(seasons)):
            raise ValueError(f"seasons must be distinct and shortest first, got {seasons}")


class Smoothed(NamedTuple):
    """Holt-Winters states at the window's end, and the seasonal index it used at each step."""

    level: torch.Tensor  # [B]    l_L
    trend: torch.Tensor  # [B]    b_L (zeros without trend)
    states: list[list[torch.Tensor]]  # per season m_k: m_k states [B], state j for the phase t mod m_k == j
    seasonal: torch.Tensor  # [B, L] s_t = sum_k s_k(t - m_k), the seasonal index applied to y_t


def fitting_seasons(periods: tuple[int, ...], lookback: int) -> tuple[int, ...]:
    """The (at most two) shortest periods in [2, lookback]: the seasons a window can initialize."""
    return fitting_periods(periods, lookback, MAX_SEASONS)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class HybridForecaster(recurrent.RecurrentReader):
    """x [B, L, F] -> y_hat [B, H]: Holt-Winters forecast plus a recurrent remainder."""

    def __init__(self, cfg: HybridConfig):
        super().__init__()
        if cfg.multiplicative and cfg.n_features < 2:  # checked here: a config gets its width from the Forecaster
            raise ValueError("a multiplicative hybrid reads the level column last: n_features must be at least 2")
        self.cfg = cfg
        # Smoothing coefficients, each sigmoid(raw): alpha (level), beta (trend), gamma_k (season k).
        # Always two gammas, whatever `seasons` holds: `start` may choose the seasons after building,
        # and a saved model's weights must fit the module its config rebuilds.
        self.raw_alpha = nn.Parameter(torch.tensor(_logit(ALPHA0)))
        self.raw_beta = nn.Parameter(torch.tensor(_logit(BETA0)))
        self.raw_gamma = nn.Parameter(torch.full((MAX_SEASONS,), _logit(GAMMA0)))
        self.build_reader(cfg)  # the recurrent path of recurrent.py: (segments) -> GRU/LSTM -> head

    # ------------------------------------------------------------------ the smoothing
    def smoothing(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The coefficients alpha, beta (scalars) and gamma [2], each in (0, 1)."""
        return torch.sigmoid(self.raw_alpha), torch.sigmoid(self.raw_beta), torch.sigmoid(self.raw_gamma)

    @torch.no_grad()
    def set_smoothing(self, alpha: float = ALPHA0, beta: float = BETA0,
                      gammas: float | tuple[float, float] = GAMMA0) -> None:
        """Set the coefficients, each in (0, 1) (one gamma: the same for both seasons)."""
        self.raw_alpha.fill_(_logit(alpha))
        self.raw_beta.fill_(_logit(beta))
        self.raw_gamma.copy_(torch.logit(torch.as_tensor(gammas, dtype=torch.float64)).expand(MAX_SEASONS))

    def smooth(self, y: torch.Tensor) -> Smoothed:
        """Run additive Holt-Winters with the config's seasons over the window y [B, L].

        Initial states (time -1), from the window itself, m_1 the shortest season (1 without any):
            l = mean(y_0 .. y_{m_1 - 1})
            s_1(j) = y_j - l                       j < m_1
            s_2(j) = y_j - l - s_1(j mod m_1)      j < m_2  (zero on the first cycle of m_1: together
                                                             the seasons reproduce the first m_2 values)
            b = (mean of the 2nd cycle of m_last - mean of the 1st) / m_last  with `trend` and L >= 2 m_last,
                else 0
        Then for t = 0 .. L-1, with s_k = s_k(t - m_k) the state of phase t mod m_k and S = sum_k s_k:
            l_t = alpha (y_t - S) + (1 - alpha)(l_{t-1} + b_{t-1})
            b_t = beta (l_t - l_{t-1}) + (1 - beta) b_{t-1}                        (with `trend`)
            s_k(t) = gamma_k (y_t - l_t - (S - s_k)) + (1 - gamma_k) s_k           (Taylor's double-seasonal)
        computed in error-correction form (the same equations, fewer operations):
            l_t = p_t + alpha (y_t - S - p_t), p_t = l_{t-1} + b_{t-1};  b_t = b_{t-1} + beta (l_t - l_{t-1} - b_{t-1});
            s_k(t) = s_k + gamma_k e_t, e_t = y_t - l_t - S.

        Cost: a Python loop of L steps of about a dozen elementwise ops on [B] tensors, vectorized over
        the batch only: forward and backward are O(L) sequential small kernels, so this loop, not the
        (segmented) recurrence, dominates an epoch (measured ~0.08 s forward + backward per batch of
        256 at L = 336 with two seasons on one busy CPU thread; launch-bound on a GPU).
        """
        seasons = self.cfg.seasons
        alpha, beta, gamma = self.smoothing()
        gamma = gamma.unbind()  # 2 scalars (indexed once, not at every step)
        level, trend, states = self.initial_states(y)
        zero, applied = torch.zeros_like(level), []
        for t, y_t in enumerate(y.unbind(dim=1)):  # y_t [B]
            prior = [s[t % m] for s, m in zip(states, seasons, strict=True)]  # s_k(t - m_k), each [B]
            total = sum(prior[1:], start=prior[0]) if prior else zero  # S [B]
            expected = level + trend if self.cfg.trend else level  # p_t [B]
            new_level = expected + alpha * (y_t - total - expected)
            if self.cfg.trend:
                trend = trend + beta * (new_level - level - trend)
            level = new_level
            error = y_t - level - total  # e_t [B]
            for k, (s, m) in enumerate(zip(states, seasons, strict=True)):
                s[t % m] = prior[k] + gamma[k] * error
            applied.append(total)
        return Smoothed(level, trend, states, torch.stack(applied, dim=1))

    def initial_states(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[list[torch.Tensor]]]:
        """Level [B], trend [B] and each season's m_k states (tensors [B]) at time -1, from y [B, L]
        (the rules in `smooth`)."""
        seasons, L = self.cfg.seasons, y.shape[1]
        level = y[:, :seasons[0] if seasons else 1].mean(dim=1)  # [B]
        states: list[list[torch.Tensor]] = []
        for k, m in enumerate(seasons):
            init = y[:, :m] - level[:, None]  # [B, m]
            if k > 0:  # what the shorter season does not explain on the longer one's first cycle
                init = init - torch.stack([states[0][j % seasons[0]] for j in range(m)], dim=1)
            states.append(list(init.unbind(dim=1)))  # m tensors [B]
        trend = torch.zeros_like(level)  # [B]
        if self.cfg.trend and seasons and L >= 2 * seasons[-1]:
            m = seasons[-1]
            trend = (y[:, m:2 * m].mean(dim=1) - y[:, :m].mean(dim=1)) / m
        return level, trend, states

    def extrapolate(self, sm: Smoothed, L: int) -> torch.Tensor:
        """The Holt-Winters forecast [B, H]: l_L + h b_L + sum_k s_k of the phase of L - 1 + h."""
        H = self.cfg.horizon
        steps = torch.arange(1, H + 1, dtype=sm.level.dtype, device=sm.level.device)  # [H]
        out = sm.level[:, None] + sm.trend[:, None] * steps  # [B, H] (the trend is 0 without `trend`)
        for s, m in zip(sm.states, self.cfg.seasons, strict=True):
            out = out + torch.stack([s[(L - 1 + h) % m] for h in range(1, H + 1)], dim=1)  # the latest of its phase
        return out

    def smoothed_target(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The series the smoothing runs on, [B, L]: the target, or with `multiplicative` the log of
        the original values over sigma; and c [B] (None when additive)."""
        if not self.cfg.multiplicative:
            return x[..., 0], None
        logs, c = recurrent.log_target(x)  # [B, L, F], [B]
        return logs[..., 0], c

    def back(self, out: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """A forecast [B, H] on the smoothed series' scale back to standardized values."""
        return out if c is None else recurrent.exp_back(out, c)

    def holt_winters(self, x: torch.Tensor) -> torch.Tensor:
        """The pure Holt-Winters forecast [B, H] of the windows x [B, L, F] (no recurrence)."""
        y, c = self.smoothed_target(x)  # [B, L]
        return self.back(self.extrapolate(self.smooth(y), y.shape[1]), c)

    # ------------------------------------------------------------------ the whole model
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, c = self.smoothed_target(x)  # [B, L]
        sm = self.smooth(y)
        forecast = self.extrapolate(sm, y.shape[1])  # [B, H]
        z = y - sm.seasonal - sm.level[:, None]  # [B, L] deseasonalized, relative to the last level
        x = torch.cat([z.unsqueeze(-1), x[..., 1:]], dim=-1)  # [B, L, F]
        return self.back(forecast + self.read(x).float(), c)  # + the recurrent remainder [B, H]

    @torch.no_grad()
    def start_as_holt_winters(self, seasons: tuple[int, ...], multiplicative: bool | None = None) -> None:
        """Smooth with `seasons` (and `multiplicative`, if given), the coefficients at their starting
        values, the recurrent head at zero: until it is trained the model forecasts exactly `holt_winters`."""
        form = self.cfg.multiplicative if multiplicative is None else multiplicative
        self.cfg = replace(self.cfg, seasons=tuple(seasons), multiplicative=form)
        self.set_smoothing()
        self.head.weight.zero_()
        self.head.bias.zero_()


# --------------------------------------------------------------------------- the family's search and start


@dataclass(frozen=True)
class HybridSpace:
    """The hybrid's own ranges; `periods` (the data's seasonal periods, not drawn) guide `first`."""

    hidden: tuple[int, int] = (16, 128)
    layers: tuple[int, int] = (1, 2)
    dropout: tuple[float, float] = (0.0, 0.3)
    segments: tuple[int, ...] = (1, 24)
    trend: tuple[bool, ...] = (True, False)
    multiplicative: tuple[bool, ...] = (False, True)  # True is tried only on positive data (`start`)
    periods: tuple[int, ...] = ()

    def params(self) -> dict[str, Param]:
        return {"hidden": IntRange(*self.hidden, log=True), "layers": IntRange(*self.layers),
                "dropout": FloatRange(*self.dropout), "segment": Choice(self.segments),
                "trend": Choice(self.trend), "multiplicative": Choice(self.multiplicative)}


def default_space(periods: tuple[int, ...]) -> HybridSpace:
    """Segments of half or one shortest season, as the recurrent family's; trend on or off."""
    return HybridSpace(segments=recurrent.default_space(periods).segments, periods=tuple(periods))


def first(space: HybridSpace, lookbacks: tuple[int, ...]) -> dict:
    """A mid-size one-layer model without trend, the longest segment, and a lookback that holds two
    cycles of the longest period that allows it (the longer season needs a cycle to start from and
    one to be smoothed on), else the recurrent family's: the longest up to 7 segments."""
    capped = [lb for lb in lookbacks if lb <= 7 * max(space.segments)] or list(lookbacks)
    want = max([2 * p for p in space.periods if 2 * p <= max(lookbacks)], default=0)
    lookback = min([lb for lb in lookbacks if lb >= max(want, max(capped))], default=max(lookbacks))
    fits = [s for s in space.segments if s <= lookback]
    return {"lookback": lookback, "hidden": min(max(64, space.hidden[0]), space.hidden[1]),
            "layers": space.layers[0], "dropout": space.dropout[0],
            "segment": max(fits) if fits else min(space.segments),
            "trend": False if False in space.trend else space.trend[0],
            "multiplicative": False if False in space.multiplicative else space.multiplicative[0]}


def configure(cfg: HybridConfig, p: dict) -> HybridConfig:
    """The architecture a drawn parameter set stands for (`cfg.lookback` is already the drawn one; the
    seasons stay the config's, usually none: `start` picks those that fit the drawn lookback)."""
    return replace(cfg, hidden=p["hidden"], layers=p["layers"], dropout=p["dropout"],
                   segment=min(p["segment"], cfg.lookback), trend=bool(p.get("trend", cfg.trend)),
                   multiplicative=bool(p.get("multiplicative", cfg.multiplicative)))


@torch.no_grad()
def best_smoothing(model: HybridForecaster, train: Windows, max_windows: int = 1024) -> tuple[float, float, float]:
    """(alpha, beta, gamma) of the Holt-Winters forecast with the lowest MSE on (at most `max_windows`
    evenly spaced) training windows: alpha and gamma (one for every season) from a coarse grid, beta
    at its start. Training data only; 25 batched smoothing passes (well under a second at L = 336)."""
    idx = np.linspace(0, len(train) - 1, min(len(train), max_windows)).astype(np.int64)
    x, y = train.arrays(idx)  # [N, L, F], [N, H]
    x, y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
    gammas = GAMMAS if model.cfg.seasons else (GAMMA0,)
    scores = {}
    for alpha in ALPHAS:
        for gamma in gammas:
            model.set_smoothing(alpha, BETA0, gamma)
            scores[alpha, BETA0, gamma] = torch.mean(torch.square(model.holt_winters(x) - y)).item()
    return min(scores, key=scores.get)


def start(model: HybridForecaster, cfg: HybridConfig, train: Windows | None, val: Windows | None,
          periods: tuple[int, ...]) -> HybridConfig:
    """Start as Holt-Winters: the config's seasons, or else the (two shortest) kept periods that fit
    the lookback, recorded in the returned config; the smoothing coefficients that forecast the
    training windows best (`best_smoothing`; the defaults without windows) and the recurrent head at
    zero. That start then competes with every epoch on validation. A multiplicative config on data
    with a non-positive value among the training windows' rows starts (and stays) additive."""
    cfg = replace(cfg, seasons=cfg.seasons or fitting_seasons(periods, cfg.lookback),
                  multiplicative=cfg.multiplicative and (train is None or recurrent.positive(train)))
    model.start_as_holt_winters(cfg.seasons, cfg.multiplicative)
    if train is not None and len(train) > 0:
        model.set_smoothing(*best_smoothing(model, train))
    return cfg


register(Family("esrnn", HybridConfig, default_space, HybridForecaster, configure, first, start, module=__name__))
