"""What a training run is asked to do, declared once: the CLI options, the flow parameters, the
worker processes' job and the MLflow params of the parent run all come from these dataclasses.

Core module: no MLflow, Optuna or Prefect imports (the CLI builds its parser from it).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from forecasting import families
from forecasting.core.config import PRECISIONS, BacktestConfig, check_name
from forecasting.core.errors import ForecastingError
from forecasting.core.options import name_list, option

ABSOLUTE_METRICS = ("mase", "mae", "smape")  # scored on absolute errors: select on MAE, not MSE
METRICS = (*ABSOLUTE_METRICS, "mse")
PRUNERS = ("median", "hyperband", "none")
OBJECTIVES = ("val", "backtest")
COMBINES = ("mean", "median")  # as forecasting.api.ensemble.COMBINES (this module stays free of numpy)


def int_list(text: str) -> tuple[int, ...]:
    """`48,336` -> (48, 336) (an option's parser: a bad value is the option's error)."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def check_levels(levels: tuple[int, ...]) -> tuple[int, ...]:
    """`--level` values: none (no intervals), or what `intervals.check_levels` accepts."""
    from forecasting.core import intervals  # pandas: only when levels are checked, not for --help

    try:
        if levels:
            intervals.check_levels(levels)
    except ValueError as exc:
        raise ValueError(f"--level: {exc}") from None
    return levels


@dataclass(frozen=True)
class TuneConfig:
    """Budget and storage of a search. `storage` is any SQLAlchemy URL; `seed` is the sampler's
    (a pipeline sets it from the job's seed plus the worker's index)."""

    n_trials: int = option(10, "finished trials each study should reach", flag="--trials")
    timeout: float | None = option(None, "seconds per family search")
    max_epochs: int = option(20, "epochs per trial and for the refit (early stopping may end sooner)")
    storage: str | None = option(None, "Optuna storage URL (default: sqlite under <home>/mlruns/)")
    pruner: str = option("median", "stop unpromising trials early", choices=PRUNERS)
    seed: int = 0
    heartbeat_interval: int = 5
    grace_period: int = 20
    max_retry: int = 2
    max_failures: int = 10

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise ValueError(f"--trials must be at least 1, got {self.n_trials}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"--timeout must be a positive number of seconds, got {self.timeout}")
        if self.max_epochs < 1:
            raise ValueError(f"--max-epochs must be at least 1, got {self.max_epochs}")


@dataclass(frozen=True)
class TrainJob:
    """One training pipeline run: which data, horizon, model families, budget and selection rule."""

    dataset: str
    horizon: int = option(help="steps ahead to forecast")
    families: tuple[str, ...] = option(families.DEFAULT, "model families, comma-separated (any registered "
                                       "family: gru, lstm, ...)", flag="--models", parse=name_list)
    tune: TuneConfig = TuneConfig()
    val: float = option(0.1, "fraction of each series for validation (before the test part)")
    test: float = option(0.2, "fraction of each series for the test part (its end)")
    device: str = option("auto", "where to train", choices=("auto", "cpu", "cuda"))
    precision: str = option("auto", "arithmetic on a GPU: bf16 or fp16 autocast (fp16 with loss scaling) or fp32; "
                            "auto is bf16 where supported (the CPU always runs fp32)", choices=PRECISIONS)
    seed: int = option(0, "seed of weights, sampling and the Optuna sampler")
    calendar: bool = option(True, "calendar features (hour, weekday, ...) as inputs")
    max_train_windows: int | None = option(None, "windows sampled per training epoch (all if omitted)")
    max_val_windows: int | None = option(None, "evenly spaced validation windows scored per epoch")
    metric: str = option("mase", "decides champion vs challenger on the validation backtest (lower is better)",
                         choices=METRICS)
    max_lookback: int | None = option(None, "longest lookback searched (default: two longest seasons)")
    workers: int = option(1, "tuning processes sharing each study")
    ensemble: int = option(3, "register the combination of each family's K best trials as one model (their own "
                                 "fits: no training), where the ensemble check finds it no worse than the best trial "
                                 "alone; a trial with over twice the best one's validation loss is left out; 1: the "
                                 "best trial only")
    ensemble_check: bool = option(True, "decide between the K best combined and the best alone on held-out "
                                  "validation: trials ranked on the earlier half of each series' validation windows "
                                  "scored on the later half, and the other way round (--no-ensemble-check: combine "
                                  "always)")
    ensemble_seeds: int = option(1, "refit each of those configurations with N seeds (seed, seed+1, ...): N members "
                                 "each, so an ensemble across seeds as well as lookbacks")
    ensemble_combine: str = option("mean", "how an ensemble's members are combined, per point", choices=COMBINES)
    combine_families: bool = option(True, "with two or more families, also register the combination of their final "
                                    "models as <dataset>-combined (their fits: no training), where a check on held-out "
                                    "validation halves finds it no worse than the best family alone (families ranked "
                                    "on one half, scored on the other)")
    seasons: tuple[int, ...] = option((), "seasonal periods in steps, e.g. 48,336 (default: every period the "
                                      "frequency implies that the training history covers twice)", parse=int_list)
    backtest: BacktestConfig = BacktestConfig()  # cutoffs over the validation part
    objective: str = option("val", "Optuna objective: every validation window, or the mean over the K backtest "
                            "cutoffs (the validation part is then sized to hold exactly those)", choices=OBJECTIVES)
    levels: tuple[int, ...] = option((80, 95), "prediction-interval levels in percent, e.g. --level 80 95: "
                                     "conformal, calibrated on the validation backtest and stored with the model "
                                     "(--level with no value: none)", flag="--level", parse=int, many=True)
    statistical: bool = option(False, "also score statsforecast's MSTL (every kept season, AutoETS trend), AutoETS "
                               "and AutoTheta as baselines (fitted per series on the training part; slower)")
    plot_series: tuple[str, ...] = option((), "series shown first in the fan charts, e.g. OT (then a sample of "
                                          "the others)", parse=name_list)
    force: bool = option(False, "register new versions even when the registry already holds a model from the "
                         "same data, settings and code (by default such a rerun registers nothing and says so)")

    def __post_init__(self) -> None:
        check_name(self.dataset)
        check_levels(self.levels)
        known = families.names()
        bad = [f for f in self.families if f not in known]
        if bad or not self.families:
            raise ValueError(f"--models: unknown model family {bad}; use any of {', '.join(known)}")
        if self.horizon < 1:
            raise ValueError(f"--horizon must be positive, got {self.horizon}")
        for flag, value in (("--ensemble", self.ensemble), ("--ensemble-seeds", self.ensemble_seeds)):
            if value < 1:
                raise ValueError(f"{flag} must be at least 1, got {value}")
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        for flag, value, least in (("--max-lookback", self.max_lookback, 2),
                                   ("--max-train-windows", self.max_train_windows, 1),
                                   ("--max-val-windows", self.max_val_windows, 1),
                                   ("--backtest-step", self.backtest.step, 1)):
            if value is not None and value < least:
                raise ValueError(f"{flag} must be at least {least}, got {value}")
        if self.backtest.n_windows < 0:
            raise ValueError(f"--backtest-windows must be 0 (as many as fit) or more, got {self.backtest.n_windows}")
        if self.objective == "backtest" and not self.backtest.n_windows:
            raise ValueError("objective backtest needs a number of backtest windows (--backtest-windows K)")


@dataclass(frozen=True)
class BacktestJob:
    """A rolling-origin backtest over the end of a dataset: of a registered model, or of a family
    fitted before the first cutoff (every `backtest` option)."""

    dataset: str
    model: str | None = option(None, "registered model as NAME@ALIAS (e.g. etth1-gru@champion)")
    family: str | None = option(None, "fit this family (its study's best configuration, else the default) "
                                "before the first cutoff (any registered family)")
    windows: int = option(5, "number of cutoffs K")
    step: int | None = option(None, "rows between cutoffs (default: the horizon)")
    horizon: int | None = option(None, "horizon for --family (a registered model has its own)")
    output: str | None = option(None, "forecasts file (CSV or Parquet): unique_id, ds, cutoff, y, y_hat, baselines")
    max_epochs: int = option(20, "epochs of the --family fit")
    seed: int = option(0, "seed of the --family fit")
    levels: tuple[int, ...] = option((), "prediction-interval levels in percent, e.g. --level 80 95 (the model's "
                                     "stored calibration; a --family fit is calibrated before the first cutoff)",
                                     flag="--level", parse=int, many=True)

    def __post_init__(self) -> None:
        """One clear error for a backtest that cannot run, before any work."""
        check_name(self.dataset)
        if bool(self.model) == bool(self.family):
            raise ForecastingError("backtest: give exactly one of --model NAME@ALIAS and --family NAME")
        if self.family and self.family not in families.names():
            raise ForecastingError(f"--family {self.family!r}: unknown; use any of {', '.join(families.names())}")
        if self.model and "@" not in self.model:
            raise ForecastingError(f"--model {self.model!r}: expected NAME@ALIAS, e.g. etth1-gru@champion")
        if self.model:
            check_name(self.model.split("@", 1)[0], "model name")
        if self.family and not self.horizon:
            raise ForecastingError("--family needs --horizon H (a registered model carries its own)")
        if self.horizon is not None and self.horizon < 1:
            raise ForecastingError(f"--horizon must be positive, got {self.horizon}")
        if self.windows < 1:
            raise ForecastingError(f"--windows must be at least 1, got {self.windows}")
        if self.step is not None and self.step < 1:
            raise ForecastingError(f"--step must be at least 1, got {self.step}")
        check_levels(self.levels)
