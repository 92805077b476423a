"""Settings a user gives, declared once and cheap to import (standard library only).

The command line builds its parser from these dataclasses, so `forecasting --help` must not pay
for pandas, torch or scikit-learn: the modules that do the work (`data`, `backtest`, `training`)
import their settings from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from forecasting.core.columns import ID, TARGET, TIME
from forecasting.core.errors import DataError
from forecasting.core.options import name_list, option, positive_int

# Dataset names become file names, MLflow experiment and registered-model names and Optuna study
# names: letters, digits, '.', '_' and '-', starting with a letter or digit (no path separators).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
FILL_POLICIES = ("error", "interpolate", "ffill", "zero")
TIME_UNITS = ("s", "ms", "us", "ns")
SHORT_POLICIES = ("drop", "error")
FORMATS = ("auto", "long", "wide")


@dataclass(frozen=True)
class IngestConfig:
    """How to read a file into the long format.

    `time_col` for a wide file defaults to its first column when the named one
    is absent; `series_cols` picks the series columns of a wide file (all other
    columns by default).
    """

    format: str = option("auto", "long (one row per series and time) or wide (one column per series); "
                         "auto: long when the id column exists", choices=FORMATS)
    id_col: str = option(ID, "series id column of a long file")
    time_col: str = option(TIME, "timestamp column")
    target_col: str = option(TARGET, "target column of a long file")
    series_cols: tuple[str, ...] | None = option(None, "series columns of a wide file, comma-separated "
                                                 "(default: every column but the time column)",
                                                 parse=name_list)
    freq: str | None = option(None, "pandas frequency (inferred if omitted)")
    fill: str = option("interpolate", "how gaps in the grid are filled", choices=FILL_POLICIES)
    min_length: int = option(0, "series shorter than this are dropped or refused")
    short: str = option("drop", "what happens to a series shorter than --min-length", choices=SHORT_POLICIES)
    time_unit: str | None = option(None, "unit of numeric timestamps counted from 1970-01-01 (s, ms, us or ns); "
                                   "numeric timestamps are refused without it")

    def __post_init__(self) -> None:
        if self.time_unit not in (None, *TIME_UNITS):
            raise DataError(f"--time-unit must be one of {', '.join(TIME_UNITS)}, got {self.time_unit!r}")
        if self.format not in FORMATS:
            raise DataError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.fill not in FILL_POLICIES:
            raise DataError(f"fill policy must be one of {FILL_POLICIES}, got {self.fill!r}")
        if self.short not in SHORT_POLICIES:
            raise DataError(f"short-series policy must be one of {SHORT_POLICIES}, got {self.short!r}")


def check_name(name: str, what: str = "dataset name") -> str:
    """`name` if every store downstream accepts it, else one `DataError` saying why."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise DataError(f"{what} {name!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or "
                        "digit (no '/', '..' or spaces: it becomes a file, experiment, model and study name)")
    return name


@dataclass(frozen=True)
class BacktestConfig:
    """K cutoffs `step` rows apart (default: the horizon, so forecasts do not overlap);
    `n_windows` 0 takes as many as fit between the lower bound and `end`."""

    n_windows: int = option(0, "cutoffs K of the validation backtest (default: as many as fit, one horizon "
                               "apart)", flag="--backtest-windows", parse=positive_int)
    step: int | None = option(None, "rows between backtest cutoffs (default: the horizon)", flag="--backtest-step")


# Arithmetic of the forward pass on CUDA (the CPU always runs fp32): bf16 autocast (no scaler needed,
# fp32's exponent range), fp16 autocast with a gradient scaler, or plain fp32. "auto" is bf16 where the
# GPU supports it, else fp32; benchmarks/gpu.py measures the three when a device is available.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
