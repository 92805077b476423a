"""What a model family is, and the registry that finds one by name.

A family is a registration: a name plus
  - `config`: its architecture dataclass (frozen; fields `lookback`, `horizon`, `n_features` at least),
  - `space`: its own hyperparameters beyond the shared ones (lookback, learning rate, batch size,
    weight decay, loss), as a frozen dataclass with a `params()` method giving `Param` ranges,
  - `build`: the constructor, config -> `nn.Module` mapping x [B, L, F] -> y_hat [B, H],
  - `configure`: the config a drawn parameter set stands for,
  - `first`: a sensible first trial inside its space,
  - optionally `start`: where training starts (the recurrent highway starts as a ridge fit).
A config with `multiplicative` set gets one more input column, last: the series' mean over its
standard deviation c = mu / sigma, constant along the window, so that x + c = y / sigma recovers the
original values' sign and ratios from standardized ones (`Forecaster` adds it; see `with_features`).

Everything else (the `Forecaster`, tuning, the pipeline, backtests, ensembles, the pyfunc model,
the benchmarks and `--models`) looks families up here and never branches on their names. Families
outside this package are found through the `FORECASTING_FAMILIES` environment variable (a comma
list of modules to import) or the `forecasting.families` entry-point group; each such module calls
`register` for its families.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported by the family modules, not by the registry (the CLI's parser reads it)
    from torch import nn

PLUGINS_ENV = "FORECASTING_FAMILIES"
REQUIRED_FIELDS = ("lookback", "horizon", "n_features")


@dataclass(frozen=True)
class IntRange:
    """An integer drawn from [low, high] (on a log scale when `log`)."""

    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class FloatRange:
    """A float drawn from [low, high] (on a log scale when `log`)."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """One of `values`."""

    values: tuple


Param = IntRange | FloatRange | Choice
# start(module, config, train windows, validation windows, seasonal periods) -> the config as started
# (it may record what the start chose), or None when the module keeps its random initialization.
Start = Callable[["nn.Module", Any, Any, Any, tuple[int, ...]], Any]


@dataclass(frozen=True)
class Family:
    """A model family: see the module docstring for each part."""

    name: str
    config: type
    space: Callable[[tuple[int, ...]], Any]  # seasonal periods -> the default space dataclass
    build: Callable[[Any], nn.Module]
    configure: Callable[[Any, dict], Any]
    first: Callable[[Any, tuple[int, ...]], dict]  # (space, lookbacks) -> first trial's own params
    start: Start | None = None
    defaults: dict = field(default_factory=dict)  # fixed config fields, e.g. {"cell": "gru"}
    module: str = ""  # where it is defined (a saved model imports it to rebuild itself)

    def new_config(self, **kwargs) -> Any:
        """The family's config with its fixed fields, plus `kwargs`."""
        return self.config(**{**self.defaults, **kwargs})


_REGISTRY: dict[str, Family] = {}
_BUILTIN = ("forecasting.families.recurrent", "forecasting.families.hybrid")
_loaded = False


def register(family: Family) -> Family:
    """Make `family` available by name (a later registration of the same name replaces it)."""
    names = {f.name for f in fields(family.config)}
    missing = [n for n in REQUIRED_FIELDS if n not in names]
    if missing:
        raise TypeError(f"family {family.name!r}: its config {family.config.__name__} lacks {missing}")
    _REGISTRY[family.name] = family
    return family


def _load() -> None:
    """Import the built-in family modules and the plug-ins, once (each registers its families)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    plugins = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    for module in (*_BUILTIN, *plugins):
        importlib.import_module(module)
    for ep in entry_points(group="forecasting.families"):
        ep.load()


def import_family(name: str, module: str = "") -> Family:
    """The family `name`, importing `module` first when it is not registered yet (a saved model
    of a plug-in family names the module that defines it)."""
    _load()
    if name not in _REGISTRY and module:
        importlib.import_module(module)
    return get(name)


def get(name: str) -> Family:
    """The registered family `name`; an unknown name is one `ValueError` listing the known ones."""
    _load()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model family {name!r}; registered: {', '.join(names())}")
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    """Every registered family, in registration order."""
    _load()
    return tuple(_REGISTRY)


def family_of(config: Any) -> str:
    """The name of the family a model config belongs to: of its class, with its fixed fields (GRU
    and LSTM share a class and differ in `cell`)."""
    _load()
    for fam in _REGISTRY.values():
        if isinstance(config, fam.config) and all(getattr(config, k) == v for k, v in fam.defaults.items()):
            return fam.name
    raise ValueError(f"no registered family has a config like {type(config).__name__}")
