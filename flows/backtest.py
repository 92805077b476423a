"""Backtest flow: rolling-origin cutoffs over the end of a processed dataset, for a registered
model (`NAME@ALIAS`) or a family fitted before the first cutoff; logged to MLflow.

With `partitions` > 1 (`--cluster`), the forecasts of every cutoff's windows are cut into that many
parts, each a task of the flow's task runner (Dask workers); fitting, scoring and intervals stay in
the flow, on all the windows at once, so the output frame and metrics are those of one process.
"""

from __future__ import annotations

import numpy as np
from prefect import flow, task

from flows.common import COMPUTE, IO
from forecasting.api import backtest_run
from forecasting.api.jobs import BacktestJob
from forecasting.core import datasets, files
from forecasting.core.backtest import BacktestConfig
from forecasting.core.evaluation import PredictFn, Predictor, in_process, window_parts
from forecasting.core.home import Home
from forecasting.core.options import from_dict
from forecasting.pipeline import backtest_runs as backtest_pipeline
from forecasting.tracking import registry, runs


@task(**IO)
def load_dataset(home: str, name: str):
    return datasets.load_processed(home, name)


@task(**IO)
def load_registered(home: str, ref: str):
    runs.configure_existing(home, ref.split("@", 1)[0])
    return registry.load_registered_forecaster(ref)


def registered(df, loaded, cfg: BacktestConfig, levels: tuple[int, ...], predict: PredictFn = in_process
               ) -> backtest_run.BacktestResult:
    forecaster, what, trained_until = loaded
    return backtest_run.backtest_registered(df, forecaster, cfg, what, trained_until, levels, predict)


def family(df, freq: str, home: str, job: BacktestJob, cfg: BacktestConfig, predict: PredictFn = in_process
           ) -> backtest_run.BacktestResult:
    fcfg = backtest_pipeline.family_config(df, freq, home, job.dataset, job.family, job.horizon, job.max_epochs,
                                           job.seed)
    return backtest_run.backtest_family(df, fcfg, cfg, job.levels, predict)


run_registered = task(**COMPUTE)(registered)
run_family = task(**COMPUTE)(family)


@task(**COMPUTE)
def predict_part(predictors: list[Predictor], x: np.ndarray, series: np.ndarray) -> list[np.ndarray]:
    """Forecasts [n, H] of one part of the windows x [n, L, F] by every predictor, on whichever worker
    runs it (one torch thread: one worker per CPU)."""
    from forecasting.core.training import torch_threads

    with torch_threads(1):
        return in_process(predictors, x, series)


def predict_in_parts(parts: int) -> PredictFn:
    """A backtest's `predict` that cuts the windows into `parts` slices, each a task of the flow's task
    runner (its windows shipped once for all predictors), and puts the forecasts back in order."""
    def predict(predictors: list[Predictor], x: np.ndarray, series: np.ndarray) -> list[np.ndarray]:
        futures = [predict_part.submit(predictors, x[s], series[s]) for s in window_parts(len(x), parts)]
        done = [f.result() for f in futures]  # [part][predictor] -> [n, H]
        return [np.concatenate([part[i] for part in done]) for i in range(len(predictors))]

    return predict


@task(**IO)
def write(result: backtest_run.BacktestResult, output: str) -> str:
    return str(files.write_table(result.backtest.forecasts, output))


@task(**IO)
def log(home: str, name: str, result: backtest_run.BacktestResult, cfg: BacktestConfig, df, levels) -> str:
    return backtest_pipeline.log_backtest_run(home, name, result, cfg, df, levels)


# Deployments would pass the job as a JSON object: rebuilt by the one deserializer, not by Prefect.
@flow(name="backtest", validate_parameters=False)
def backtest_flow(job: BacktestJob | dict, home: str = ".", partitions: int = 1) -> dict:
    """Backtest `job.model` (NAME@ALIAS) or `job.family` on `job.dataset` at `job.windows` cutoffs; with
    `partitions` > 1 the windows' forecasts run in that many tasks of the flow's task runner."""
    job = job if isinstance(job, BacktestJob) else from_dict(BacktestJob, job)
    if job.output:
        files.check_destination(job.output)  # refuse a bad output path before any work
        files.check_apart(job.output, [Home.of(home).dataset(job.dataset)], Home.of(home).protected)
    cfg = BacktestConfig(job.windows, job.step)
    df, freq = load_dataset(home, job.dataset)
    if partitions > 1:  # in the flow itself: its parts are the tasks (a task cannot submit tasks to Dask)
        predict = predict_in_parts(partitions)
        result = (registered(df, load_registered(home, job.model), cfg, job.levels, predict) if job.model else
                  family(df, freq, home, job, cfg, predict))
    elif job.model:
        result = run_registered(df, load_registered(home, job.model), cfg, job.levels)
    else:
        result = run_family(df, freq, home, job, cfg)
    path = write(result, job.output) if job.output else None
    run_id = log(home, job.dataset, result, cfg, df, job.levels)
    return {"what": result.what, "cutoffs": result.n_cutoffs, "metrics": result.backtest.metrics,
            "by_cutoff": result.backtest.by_cutoff, "output": path, "run_id": run_id,
            "in_sample": result.in_sample, "forecasts": result.backtest.forecasts}
