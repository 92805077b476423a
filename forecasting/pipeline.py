"""The training pipeline's steps as plain functions: the Prefect flows sequence these.

Each step takes and returns plain values (frames, configs, run ids, dicts), so a
flow task is one call of one of them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting import tracking
from forecasting.data import (
    ID,
    IngestConfig,
    IngestReport,
    Split,
    infer_freq,
    load,
    split_fractions,
    write_parquet_atomic,
)
from forecasting.errors import DataError
from forecasting.forecaster import Evaluation, Forecaster, ForecasterConfig
from forecasting.models import ModelConfig
from forecasting.provenance import code_version, dataset_fingerprint
from forecasting.training import TrainConfig, predict
from forecasting.tuning import (
    SearchSpace,
    TuneConfig,
    TuneResult,
    default_space,
    default_storage,
    study_name,
    trials_frame,
    tune,
)


@dataclass(frozen=True)
class TrainJob:
    """One training pipeline run: which data, horizon, model families and budget."""

    dataset: str
    horizon: int
    families: tuple[str, ...] = ("gru", "lstm")
    tune: TuneConfig = field(default_factory=TuneConfig)
    val: float = 0.1
    test: float = 0.2
    device: str = "auto"
    seed: int = 0
    calendar: bool = True
    max_train_windows: int | None = None
    max_val_windows: int | None = None
    metric: str = "mase"  # decides champion vs challenger (lower is better)
    max_lookback: int | None = None  # default: 7 seasons
    workers: int = 1  # tuning processes sharing each study


# --------------------------------------------------------------------------- data


def processed_path(home: str | Path, name: str) -> Path:
    return Path(home).resolve() / "data" / "processed" / f"{name}.parquet"


def ingest(source: str | Path, name: str, home: str | Path, cfg: IngestConfig = IngestConfig()) -> tuple[Path, IngestReport]:
    """Validate a file and write it once as Parquet under `<home>/data/processed/` (atomically)."""
    df, report = load(source, cfg)
    path = write_parquet_atomic(df, processed_path(home, name))
    meta = {**asdict(report), "source": str(source), "fingerprint": dataset_fingerprint(df)}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    tmp.replace(path.with_suffix(".json"))
    return path, report


def load_processed(home: str | Path, name: str) -> tuple[pd.DataFrame, str]:
    """The processed frame of dataset `name` and its frequency."""
    path = processed_path(home, name)
    if not path.exists():
        raise DataError(f"no processed dataset {name!r} at {path}; run `forecasting ingest SOURCE --name {name}` first")
    df = pd.read_parquet(path)
    return df, dataset_freq(home, name, df)


def dataset_freq(home: str | Path, name: str, df: pd.DataFrame) -> str:
    """The frequency ingest recorded beside the dataset (inferred again if that file is gone)."""
    meta = processed_path(home, name).with_suffix(".json")
    return json.loads(meta.read_text())["freq"] if meta.exists() else infer_freq(df)


def make_split(df: pd.DataFrame, job: TrainJob) -> Split:
    return split_fractions(df.groupby(ID, sort=False).size(), job.val, job.test)


def base_config(df: pd.DataFrame, freq: str, job: TrainJob) -> ForecasterConfig:
    """Defaults the search starts from (the searched fields are overwritten per trial)."""
    covs = tuple(c for c in df.columns if c not in (ID, "ds", "y"))
    train = TrainConfig(max_epochs=job.tune.max_epochs, seed=job.seed, device=job.device,
                        max_train_windows=job.max_train_windows, max_val_windows=job.max_val_windows)
    return ForecasterConfig(model=ModelConfig(horizon=job.horizon), train=train, freq=freq,
                            calendar=job.calendar, covariates=covs)


def search_space(df: pd.DataFrame, split: Split, base: ForecasterConfig, job: TrainJob) -> SearchSpace:
    """The default space, with lookbacks every series' training part can hold."""
    room = int(np.min(split.train_end)) - job.horizon - 8
    cap = min(job.max_lookback or 7 * base.period, room)
    if cap < 2:
        shortest = split.ids[int(np.argmin(split.train_end))]
        raise DataError(f"series {shortest!r}: training part too short for horizon {job.horizon}")
    return default_space(base.period, cap)


# --------------------------------------------------------------------------- runs


def start_pipeline(home: str | Path, job: TrainJob, df: pd.DataFrame) -> tuple[str, str]:
    """Experiment `<dataset>-h<H>` and a parent run for this pipeline run."""
    tracking.configure(home)
    exp = tracking.ensure_experiment(tracking.experiment_name(job.dataset, job.horizon), home)
    run_id = tracking.start_run(exp, f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}",
                                tags={"kind": "pipeline", "dataset": job.dataset})
    tracking.log_values(run_id, params=tracking.flatten(asdict(job)), tags={
        "dataset_fingerprint": dataset_fingerprint(df), "code_version": code_version(),
        "n_series": df[ID].nunique()})
    return exp, run_id


def tune_family(df: pd.DataFrame, split: Split, job: TrainJob, family: str, home: str | Path,
                experiment_id: str, parent_run_id: str, progress: bool = True, plots: bool = True) -> TuneResult:
    """Optuna search for one family, each trial a nested MLflow run (optimization plots on the parent)."""
    base = base_config(df, dataset_freq(home, job.dataset, df), job)
    cfg = job.tune if job.tune.storage else replace(job.tune, storage=default_storage(home))
    space = search_space(df, split, base, job)
    hook = tracking.TrialLogger(experiment_id, parent_run_id, family)
    result = tune(df, split, base, family, study_name(job.dataset, job.horizon, family), cfg, space, hook,
                  progress, on_stale=tracking.close_stale_trial_run)
    if plots:
        log_search(parent_run_id, result.study, family)
    return result


def log_search(parent_run_id: str, study, family: str) -> None:
    """The study's optimization-history and importance plots and its trials table, on the parent run."""
    tracking.log_study_plots(parent_run_id, study, family)
    tracking.log_table(parent_run_id, trials_frame(study), f"{family}_trials")


def inference_ms_per_1000(forecaster: Forecaster, x: np.ndarray, repeats: int = 3) -> float:
    """Milliseconds to forecast 1,000 series (windows) on the CPU, best of `repeats`."""
    x = np.resize(x, (1000, *x.shape[1:])).astype(np.float32)  # cycle the windows up to 1,000
    predict(forecaster.model_, x[:10], "cpu")  # warm-up
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict(forecaster.model_, x, "cpu", batch_size=1000)
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def final_model(df: pd.DataFrame, split: Split, cfg: ForecasterConfig, job: TrainJob, family: str,
                home: str | Path, experiment_id: str, parent_run_id: str) -> dict:
    """Refit the best configuration, evaluate once on test, log run, artifacts and pyfunc model."""
    tracking.configure(home)
    forecaster = Forecaster(cfg)
    run_id = tracking.start_run(experiment_id, f"{family}-final", parent_run_id,
                                tags={"kind": "final", "family": family})
    try:
        fit = forecaster.fit(df, split)
        ev = forecaster.evaluate(df, split, "test")
        x, _ = forecaster.windows(df, split, "test").arrays()
        row = {"model": family, **ev.metrics, "params": forecaster.n_parameters,
               "train_seconds": fit.seconds, "peak_memory_mb": fit.peak_memory_mb,
               "infer_ms_per_1000": inference_ms_per_1000(forecaster, x), "device": fit.device}
        tracking.log_values(run_id, params=tracking.params_of(forecaster),
                            metrics={f"test_{k}": v for k, v in ev.metrics.items()} | {
                                "train_seconds": fit.seconds, "peak_memory_mb": fit.peak_memory_mb,
                                "n_parameters": forecaster.n_parameters, "best_epoch": fit.best_epoch,
                                "infer_ms_per_1000": row["infer_ms_per_1000"]})
        tracking.log_history(run_id, fit.history)
        tracking.log_evaluation_artifacts(run_id, forecaster, ev, split.ids, f"{job.dataset} {family} H={job.horizon}")
        example = tracking.input_example(df, cfg.model.lookback)
        row["model_uri"] = tracking.log_model(run_id, forecaster, example)
        row["run_id"] = run_id
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    tracking.end_run(run_id)
    return row


def seasonal_naive_row(df: pd.DataFrame, split: Split, job: TrainJob, home: str | Path,
                       experiment_id: str, parent_run_id: str) -> dict:
    """Seasonal naive on the same test targets, logged as its own nested run."""
    base = base_config(df, dataset_freq(home, job.dataset, df), job)
    f = Forecaster(replace(base, model=replace(base.model, lookback=max(base.period, 1))))
    f.fit_scaler(df, split)
    ev: Evaluation = f.evaluate_seasonal_naive(df, split, "test")
    run_id = tracking.start_run(experiment_id, "seasonal-naive", parent_run_id,
                                tags={"kind": "baseline", "family": "seasonal_naive"})
    tracking.log_values(run_id, params={"period": base.period},
                        metrics={f"test_{k}": v for k, v in ev.metrics.items()})
    tracking.end_run(run_id)
    return {"model": "seasonal_naive", **ev.metrics, "params": 0, "train_seconds": 0.0,
            "peak_memory_mb": 0.0, "infer_ms_per_1000": float("nan"), "device": "-"}


COMPARISON_COLUMNS = ["model", "mae", "rmse", "smape", "mase", "mse_std", "mae_std", "params",
                      "train_seconds", "peak_memory_mb", "infer_ms_per_1000"]


def comparison(rows: list[dict], parent_run_id: str | None = None) -> pd.DataFrame:
    """The GRU/LSTM/seasonal-naive table; logged as CSV and Markdown on the parent run."""
    table = pd.DataFrame(rows)[COMPARISON_COLUMNS]
    if parent_run_id:
        tracking.log_table(parent_run_id, table, "comparison")
    return table


def register_family(row: dict, job: TrainJob, df: pd.DataFrame, freq: str) -> dict:
    """Register the family's final model as `<dataset>-<family>`; champion only if it beats the current."""
    tags = {"dataset_fingerprint": dataset_fingerprint(df), "horizon": job.horizon, "frequency": freq,
            "code_version": code_version(), "family": row["model"]}
    return tracking.register(row["model_uri"], f"{job.dataset}-{row['model']}", job.metric,
                             float(row[job.metric]), tags)


def finish(parent_run_id: str, registrations: list[dict]) -> None:
    for r in registrations:
        tracking.log_values(parent_run_id, tags={f"registered.{r['name']}": f"v{r['version']}@{r['alias']}"})
    tracking.end_run(parent_run_id)
