"""The search space: the ranges every family shares plus the family's own (no Optuna here).

A trial's parameters are a flat dict (`lookback`, `lr`, ... and the family's names); `apply_params`
turns one into a `ForecasterConfig`, through the family's `configure`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from forecasting import families
from forecasting.api.forecaster import ForecasterConfig
from forecasting.families import Choice, FloatRange, IntRange, Param

# Optuna's random start-up draws follow the order of the suggest calls, so a seed draws the same
# configurations only if that order stays put: the order these names were first drawn in. A
# family's other names follow, in its own order.
DRAW_ORDER = ("lookback", "hidden", "layers", "dropout", "lr", "batch_size", "weight_decay", "norm", "segment",
              "highway", "init", "loss")


@dataclass(frozen=True)
class SearchSpace:
    """Shared ranges (the same for every family: a fair comparison) and the family's own space
    (`family`: its space dataclass; None takes the family's default for the data's periods)."""

    lookbacks: tuple[int, ...] = (48, 96, 168, 336)
    lr: tuple[float, float] = (1e-4, 1e-2)
    batch_sizes: tuple[int, ...] = (64, 128, 256, 512)
    weight_decay: tuple[float, float] = (1e-7, 1e-2)
    losses: tuple[str, ...] = ("mse", "mae", "mase")  # training loss (selection is on the job's fixed metric)
    periods: tuple[int, ...] = ()  # the data's seasonal periods (a family's default space may use them)
    family: Any = None

    def own(self, family: str) -> Any:
        """The family's own space: the one given, else its default for `periods`."""
        return self.family if self.family is not None else families.get(family).space(self.periods)

    def params(self, family: str) -> dict[str, Param]:
        """Every range a trial of `family` draws, in draw order."""
        shared = {"lookback": Choice(self.lookbacks), "lr": FloatRange(*self.lr, log=True),
                  "batch_size": Choice(self.batch_sizes), "weight_decay": FloatRange(*self.weight_decay, log=True),
                  "loss": Choice(self.losses)}
        both = {**shared, **self.own(family).params()}
        rank = {n: i for i, n in enumerate(DRAW_ORDER)}
        return {n: both[n] for n in sorted(both, key=lambda n: (rank.get(n, len(rank)), list(both).index(n)))}


def default_lookbacks(periods: tuple[int, ...], max_lookback: int, horizon: int) -> tuple[int, ...]:
    """Two and four shortest seasons, one and two longest seasons (the longest kept period is
    always reachable when it fits); without a season, two and four horizons."""
    if periods and max(periods) > 1:
        short, long = min(periods), max(periods)
        wanted = {2 * short, 4 * short, long, 2 * long}
    else:
        wanted = {2 * horizon, 4 * horizon}
    return tuple(sorted(lb for lb in wanted if lb <= max_lookback)) or (max_lookback,)


def default_space(periods: tuple[int, ...], max_lookback: int, horizon: int = 24) -> SearchSpace:
    """Lookbacks from `default_lookbacks`; each family's own ranges from its default for `periods`."""
    return SearchSpace(lookbacks=default_lookbacks(periods, max_lookback, horizon), periods=tuple(periods))


def starting_point(space: SearchSpace, family: str) -> dict:
    """A sensible first trial inside the space (enqueued into a new study so that even a tiny
    budget has one reasonable configuration): mid-range optimisation settings, the longest
    lookback, and the family's own first choice (which may prefer a shorter lookback)."""
    shared = {"lookback": max(space.lookbacks), "lr": min(max(3e-3, space.lr[0]), space.lr[1]),
              "batch_size": min(space.batch_sizes, key=lambda b: abs(b - 256)),
              "weight_decay": space.weight_decay[0], "loss": space.losses[0]}
    return shared | families.get(family).first(space.own(family), space.lookbacks)


def family_config(base: ForecasterConfig, family: str) -> ForecasterConfig:
    """`base` for `family`: its model config keeps the shared fields (horizon, lookback, inputs) and
    takes the family's fixed ones; a config of another family's class is rebuilt."""
    fam = families.get(family)
    m = base.model
    model = (replace(m, **fam.defaults) if isinstance(m, fam.config) else
             fam.new_config(horizon=m.horizon, lookback=m.lookback, n_features=m.n_features))
    return replace(base, family=family, model=model, level_input=False)  # with_features sets it again


def apply_params(base: ForecasterConfig, params: dict, family: str) -> ForecasterConfig:
    """The forecaster configuration a parameter set stands for."""
    cfg = family_config(base, family)
    model = families.get(family).configure(replace(cfg.model, lookback=params["lookback"]), params)
    train = replace(cfg.train, lr=params["lr"], batch_size=params["batch_size"],
                    weight_decay=params["weight_decay"], loss=params.get("loss", cfg.train.loss))
    return replace(cfg, model=model, train=train)


__all__ = ["Choice", "FloatRange", "IntRange", "SearchSpace", "apply_params", "default_space", "starting_point"]
