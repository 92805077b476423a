"""What a train run will do, decided from the job and the data alone (no MLflow, no Optuna):
the split, each family's base configuration and search space, the checks that refuse a job
before any run exists, which rows each step scores, and the comparison's columns.

`steps.py` runs these plans and records them in MLflow; `search.py` tunes within them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from forecasting import families
from forecasting.api.ensemble import Ensemble
from forecasting.api.family_mix import COMBINED
from forecasting.api.fitcache import FitCache, fit_or_load
from forecasting.api.forecaster import Fitted, Forecaster, ForecasterConfig
from forecasting.api.jobs import ABSOLUTE_METRICS, TrainJob
from forecasting.core.backtest import Backtest, BacktestConfig, cutoffs
from forecasting.core.columns import CUTOFF, ID, TARGET, TIME
from forecasting.core.cpus import usable_cpus
from forecasting.core.data import Split, split_fractions
from forecasting.core.errors import DataError, ForecastingError
from forecasting.core.evaluation import Predictor
from forecasting.core.home import Home
from forecasting.core.seasons import kept_periods
from forecasting.core.training import TrainConfig
from forecasting.tuning.space import SearchSpace, default_space
from forecasting.tuning.study import check_storage


@dataclass(frozen=True)
class RunContext:
    """Where a pipeline run records and what it runs on, fixed once when it starts."""

    home: str
    experiment_id: str
    parent_run_id: str
    freq: str
    fingerprint: str  # of the dataset the run trains on
    code_version: str


def make_split(df: pd.DataFrame, job: TrainJob) -> Split:
    """Test part by fraction; validation by fraction, or with `objective="backtest"` exactly the
    rows its K cutoffs need (H + (K - 1) * step before the test part)."""
    split = split_fractions(df.groupby(ID, sort=False).size(), job.val, job.test)
    if job.objective != "backtest":
        return split
    need = job.horizon + (job.backtest.n_windows - 1) * (job.backtest.step or job.horizon)
    return replace(split, train_end=split.val_end - need)


def base_config(df: pd.DataFrame, freq: str, job: TrainJob, split: Split, family: str | None = None
                ) -> ForecasterConfig:
    """Defaults the search of `family` (default: the job's first) starts from (the searched fields are
    overwritten per trial), with the seasonal periods this dataset's training history supports."""
    covs = tuple(c for c in df.columns if c not in (ID, TIME, TARGET))
    try:
        seasons = kept_periods(freq, split.train_end, job.seasons or None)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    cutoffs = job.backtest.n_windows if job.objective == "backtest" else 0
    train = TrainConfig(max_epochs=job.tune.max_epochs, seed=job.seed, device=job.device, precision=job.precision,
                        max_train_windows=job.max_train_windows, max_val_windows=job.max_val_windows,
                        val_cutoffs=cutoffs, val_step=job.backtest.step or 0,
                        val_metric="mae" if job.metric in ABSOLUTE_METRICS else "mse")
    fam = families.get(family or job.families[0])
    return ForecasterConfig(model=fam.new_config(horizon=job.horizon), train=train, freq=freq, calendar=job.calendar,
                            covariates=covs, seasons=seasons, family=fam.name)


def search_space(df: pd.DataFrame, split: Split, base: ForecasterConfig, job: TrainJob) -> SearchSpace:
    """The default space, with lookbacks every series' training part can hold (up to two of the
    longest seasons, so the longest kept period is always reachable)."""
    room = int(np.min(split.train_end)) - job.horizon - 8
    periods = base.seasons or (base.period,)
    cap = min(job.max_lookback or max(2 * max(periods), 4 * job.horizon), room)
    if cap < 2:
        shortest = split.ids[int(np.argmin(split.train_end))]
        raise DataError(f"series {shortest!r}: training part too short for horizon {job.horizon}")
    return default_space(periods, cap, job.horizon)


def check_job(df: pd.DataFrame, freq: str, job: TrainJob, split: Split) -> None:
    """Everything about a job that can be refused from the data alone, before any run is created:
    seasons the history cannot hold, a training part too short, no validation backtest cutoff, a
    storage URL that cannot be opened."""
    check_storage(job.tune.storage)
    check_workers(job)
    base = base_config(df, freq, job, split)
    space = search_space(df, split, base, job)
    rows = cutoffs(split.val_end, job.horizon, max(space.lookbacks), job.backtest, split.train_end)
    empty = [u for u, r in zip(split.ids, rows, strict=True) if len(r) == 0]
    if empty:
        raise DataError(f"series {empty[0]!r} ({len(empty)} in all): the validation part holds no backtest cutoff "
                        f"for horizon {job.horizon}; give it more rows (--val) or a shorter horizon")
    check_levels_fit(split, job)
    short = [u for u, n in zip(split.ids, split.lengths - split.val_end, strict=True) if n < job.horizon]
    if len(short) == len(split.ids):
        raise DataError(f"the test part holds no window of horizon {job.horizon} (series {short[0]!r} has "
                        f"{int((split.lengths - split.val_end)[0])} test rows); give it more rows (--test)")


WORKERS_PER_CPU = 2  # beyond this, tuning processes only contend for cores and memory


def gpu_count(device: str) -> int:
    """GPUs the tuning workers may spread over (0 when they train on the CPU)."""
    import torch

    return torch.cuda.device_count() if device in ("auto", "cuda") and torch.cuda.is_available() else 0


def check_workers(job: TrainJob) -> None:
    """Refuse more tuning workers than the machine can run: WORKERS_PER_CPU per usable CPU (or GPU)."""
    gpus, cpus = gpu_count(job.device), usable_cpus()
    most = WORKERS_PER_CPU * max(cpus, gpus)
    if job.workers > most:
        raise ForecastingError(f"--workers {job.workers}: this machine can run at most {most} ({WORKERS_PER_CPU} per "
                               f"usable {'GPU' if gpus > cpus else 'CPU'}); each worker is a process with "
                               "its own torch; more run out of memory. Spread them over machines with tune-worker")


def check_levels_fit(split: Split, job: TrainJob) -> None:
    """Conformal intervals at level L need at least L / (100 - L) validation residuals per horizon
    step (19 at 95 %): refuse levels the validation part cannot calibrate, before any run."""
    n = int(np.maximum(split.val_end - split.train_end - job.horizon + 1, 0).sum())  # windows, step 1
    for lv in sorted(job.levels, reverse=True):
        need = -(-lv // (100 - lv))
        if n < need:
            raise DataError(f"--level {lv}: the validation part holds {n} forecast window(s) per horizon step, "
                            f"{need} are needed to calibrate it; give it more rows (--val) or lower the level")


def inference_ms_per_1000(forecaster: Forecaster | Ensemble, x: np.ndarray, repeats: int = 3) -> float:
    """Milliseconds to forecast 1,000 series (windows) on the CPU, best of `repeats`."""
    x = np.resize(x, (1000, *x.shape[1:])).astype(np.float32)  # cycle the windows up to 1,000
    fn = forecaster.predictor("cpu").fn
    fn(x[:10])  # warm-up
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def fit_cache(ctx: RunContext) -> FitCache:
    """Where a run's trials keep their fitted forecasters, for the refit to load."""
    return FitCache(Home.of(ctx.home).fits, ctx.fingerprint)


def fit_final(df: pd.DataFrame, split: Split, cfgs: list[ForecasterConfig], cache: FitCache | None = None,
              combine: str = "mean") -> tuple[Forecaster | Ensemble, dict]:
    """Refit one configuration, or each of several as an ensemble (`combine`: mean or median),
    loading the fits a trial already made of the same configuration on the same data (`cache`);
    returns the model and its cost (`fit_cost`)."""
    fitted = [fit_or_load(c, df, split, cache) for c in cfgs]
    members = [f for f, _ in fitted]
    cost = fit_cost(members, loaded=sum(kept for _, kept in fitted))
    return (members[0] if len(members) == 1 else Ensemble(members, combine)), cost


def fit_cost(members: list[Forecaster], loaded: int) -> dict:
    """What fitting `members` cost (seconds, peak memory and best epoch of their fits; how many of them
    were `loaded` rather than trained)."""
    fits = [f.fit_result_ for f in members]
    return {"train_seconds": sum(r.seconds for r in fits), "peak_memory_mb": max(r.peak_memory_mb for r in fits),
            "best_epoch": fits[0].best_epoch, "device": fits[0].device, "ensemble_size": len(members),
            "loaded_fits": loaded}


def validation_backtest(forecaster: Fitted, df: pd.DataFrame, split: Split, job: TrainJob,
                        predictors: list[Predictor] | None = None) -> Backtest:
    """Rolling-origin backtest over the validation part (cutoffs `job.backtest`): targets lie in
    validation only, inputs come from before each cutoff. Model selection and champion gating use
    it; the test part is never touched."""
    return forecaster.cross_validation(df, split.val_end, split.train_end, job.backtest, predictors)


def calibration_backtest(forecaster: Fitted, df: pd.DataFrame, split: Split,
                         predictors: list[Predictor] | None = None, step: int = 1) -> Backtest:
    """Every validation window (cutoffs `step` rows apart, default one): the residuals the intervals
    are calibrated on."""
    return forecaster.cross_validation(df, split.val_end, split.train_end, BacktestConfig(0, step), predictors)


def test_backtest(forecaster: Fitted, df: pd.DataFrame, split: Split, predictors: list[Predictor] | None = None
                  ) -> Backtest:
    """Non-overlapping windows over the test part (cutoffs one horizon apart): where intervals are scored."""
    H = forecaster.cfg.model.horizon
    return forecaster.cross_validation(df, split.lengths, split.val_end, BacktestConfig(0, H), predictors)


def interval_names(levels: tuple[int, ...]) -> list[str]:
    """The interval score columns of a row: coverage, MSIS and pinball per level."""
    return [f"{k}_{lv}" for lv in sorted(levels) for k in ("coverage", "msis", "pinball")]


def last_windows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of each series' last cutoff in a cross-validation frame (what a fan chart shows)."""
    last = frame.groupby(ID, sort=False)[CUTOFF].transform("max")
    return frame[frame[CUTOFF] == last]


COMPARISON_COLUMNS = ["model", "mae", "rmse", "smape", "mase", "mse_std", "mae_std", "val_backtest_mase",
                      "val_backtest_mse_std", "vs_best_baseline", "params", "train_seconds", "peak_memory_mb",
                      "infer_ms_per_1000"]


def comparison_columns(job: TrainJob) -> list[str]:
    """The table's columns: point metrics, the validation backtest, then coverage and MSIS per level."""
    shown = [f"{k}_{lv}" for lv in sorted(job.levels) for k in ("coverage", "msis")]
    i = COMPARISON_COLUMNS.index("vs_best_baseline") + 1
    return COMPARISON_COLUMNS[:i] + shown + COMPARISON_COLUMNS[i:]


def model_names(job: TrainJob) -> tuple[str, ...]:
    """The comparison rows that are models (the rest are baselines): every family of the job, and the
    combination of their final models (`family_mix`) where the pipeline keeps it."""
    return (*job.families, COMBINED)


def gate_metric(job: TrainJob) -> str:
    """The row column that decides champion versus challenger: the validation backtest's metric."""
    return f"val_backtest_{job.metric}"


def train_end(df: pd.DataFrame, split: Split) -> pd.Timestamp:
    """The latest timestamp of any series' training part (what a model fitted on it has seen)."""
    ds = df.groupby(ID, sort=False)[TIME]
    return max(pd.Timestamp(g.iloc[int(e) - 1]) for (_, g), e in zip(ds, split.train_end, strict=True) if e > 0)


