"""Train flow: tune each family, refit, backtest on validation, baselines, compare, register, promote."""

from __future__ import annotations

import pandas as pd
from prefect import flow, task

from flows.common import COMPUTE, IO, step
from forecasting import pipeline, tracking, worker
from forecasting.backtest import BacktestConfig
from forecasting.data import Split
from forecasting.forecaster import Forecaster, ForecasterConfig
from forecasting.pipeline import TrainJob
from forecasting.tuning import TuneConfig


@task(**IO)
def load_dataset(home: str, name: str) -> tuple[pd.DataFrame, str]:
    return pipeline.load_processed(home, name)


@task(**COMPUTE)
def start(home: str, job: TrainJob, df: pd.DataFrame) -> tuple[str, str]:
    return pipeline.start_pipeline(home, job, df)


@task(**COMPUTE)
def tune_family(df, split: Split, job: TrainJob, family: str, home: str, exp: str, parent: str
                ) -> list[ForecasterConfig]:
    result = worker.tune_parallel(df, split, job, family, home, exp, parent, job.workers)
    return pipeline.top_configs(result, family, job.ensemble)


@task(**COMPUTE)
def final_model(df, split: Split, cfgs: list[ForecasterConfig], job: TrainJob, family: str, home: str,
                exp: str, parent: str) -> tuple[dict, Forecaster]:
    return pipeline.final_model(df, split, cfgs, job, family, home, exp, parent)


@task(**COMPUTE)
def backtest(forecaster: Forecaster, row: dict, df, split: Split, job: TrainJob) -> dict:
    return pipeline.backtest_step(forecaster, row, df, split, job)


@task(**COMPUTE)
def baselines(df, split: Split, job: TrainJob, home: str, exp: str, parent: str) -> list[dict]:
    return pipeline.baseline_rows(df, split, job, home, exp, parent)


@task(**COMPUTE)
def compare(rows: list[dict], job: TrainJob, parent: str) -> tuple[pd.DataFrame, dict]:
    return pipeline.comparison(rows, job, parent)


@task(**COMPUTE)
def register(row: dict, job: TrainJob, df: pd.DataFrame, split: Split, freq: str) -> dict:
    return pipeline.register_family(row, job, df, split, freq)


@flow(name="train")
def train_flow(name: str, horizon: int, home: str = ".", models: tuple[str, ...] = ("gru", "lstm"),
               trials: int = 10, max_epochs: int = 20, timeout: float | None = None, device: str = "auto",
               seed: int = 0, storage: str | None = None, max_train_windows: int | None = None,
               pruner: str = "median", workers: int = 1, max_val_windows: int | None = None,
               seasons: tuple[int, ...] = (), backtest_windows: int = 0, backtest_step: int | None = None,
               objective: str = "val", ensemble: int = 1) -> dict:
    """Tune and register every family in `models` on dataset `name`; returns table and registrations."""
    job = TrainJob(name, horizon, tuple(models), TuneConfig(n_trials=trials, timeout=timeout, max_epochs=max_epochs,
                                                          storage=storage, pruner=pruner, seed=seed),
                   device=device, seed=seed, max_train_windows=max_train_windows, workers=workers,
                   max_val_windows=max_val_windows, seasons=tuple(seasons),
                   backtest=BacktestConfig(backtest_windows, backtest_step), objective=objective,
                   ensemble=ensemble)
    df, freq = load_dataset(home, name)
    split = pipeline.make_split(df, job)
    pipeline.check_job(df, freq, job, split)  # seasons, lookbacks, backtest cutoffs: refused before any run
    exp, parent = start(home, job, df)
    try:
        rows = []
        for family in job.families:
            cfgs = tune_family(df, split, job, family, home, exp, parent)
            with step(f"{name}: refit {family}" + (f" ({len(cfgs)} members)" if len(cfgs) > 1 else "")
                      + ", score the test part once, log the model"):
                row, forecaster = final_model(df, split, cfgs, job, family, home, exp, parent)
            with step(f"{name}: backtest {family} over the validation part"):
                rows.append(backtest(forecaster, row, df, split, job))
        with step(f"{name}: baselines (naive, seasonal naive, ridge) on the same windows"):
            rows += baselines(df, split, job, home, exp, parent)
        table, summary = compare(rows, job, parent)
        pipeline.check_comparison(rows, job)
        with step(f"{name}: register and gate the champion on the validation backtest"):
            registrations = [register(r, job, df, split, freq) for r in rows if r["model"] in job.families]
    except BaseException:
        tracking.end_run(parent, "FAILED")
        raise
    pipeline.finish(parent, registrations)
    return {"table": table, "summary": summary, "registrations": registrations, "parent_run_id": parent,
            "experiment_id": exp}
