"""Backtest flow: rolling-origin cutoffs over the end of a processed dataset, for a registered
model (`NAME@ALIAS`) or a family fitted before the first cutoff; logged to MLflow."""

from __future__ import annotations

from prefect import flow, task

from flows.common import COMPUTE, IO
from forecasting.api import backtest_run
from forecasting.api.jobs import BacktestJob
from forecasting.core import datasets, files
from forecasting.core.backtest import BacktestConfig
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


@task(**COMPUTE)
def run_registered(df, loaded, cfg: BacktestConfig, levels: tuple[int, ...]) -> backtest_run.BacktestResult:
    forecaster, what, trained_until = loaded
    return backtest_run.backtest_registered(df, forecaster, cfg, what, trained_until, levels)


@task(**COMPUTE)
def run_family(df, freq: str, home: str, job: BacktestJob, cfg: BacktestConfig) -> backtest_run.BacktestResult:
    fcfg = backtest_pipeline.family_config(df, freq, home, job.dataset, job.family, job.horizon, job.max_epochs,
                                           job.seed)
    return backtest_run.backtest_family(df, fcfg, cfg, job.levels)


@task(**IO)
def write(result: backtest_run.BacktestResult, output: str) -> str:
    return str(files.write_table(result.backtest.forecasts, output))


@task(**IO)
def log(home: str, name: str, result: backtest_run.BacktestResult, cfg: BacktestConfig, df, levels) -> str:
    return backtest_pipeline.log_backtest_run(home, name, result, cfg, df, levels)


# Deployments would pass the job as a JSON object: rebuilt by the one deserializer, not by Prefect.
@flow(name="backtest", validate_parameters=False)
def backtest_flow(job: BacktestJob | dict, home: str = ".") -> dict:
    """Backtest `job.model` (NAME@ALIAS) or `job.family` on `job.dataset` at `job.windows` cutoffs."""
    job = job if isinstance(job, BacktestJob) else from_dict(BacktestJob, job)
    if job.output:
        files.check_output(job.output)  # refuse a bad output path before any work
        files.check_apart(job.output, [Home.of(home).dataset(job.dataset)], Home.of(home).protected)
    cfg = BacktestConfig(job.windows, job.step)
    df, freq = load_dataset(home, job.dataset)
    if job.model:
        result = run_registered(df, load_registered(home, job.model), cfg, job.levels)
    else:
        result = run_family(df, freq, home, job, cfg)
    path = write(result, job.output) if job.output else None
    run_id = log(home, job.dataset, result, cfg, df, job.levels)
    return {"what": result.what, "cutoffs": result.n_cutoffs, "metrics": result.backtest.metrics,
            "by_cutoff": result.backtest.by_cutoff, "output": path, "run_id": run_id,
            "in_sample": result.in_sample, "forecasts": result.backtest.forecasts}
