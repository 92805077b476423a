"""Backtest flow: rolling-origin cutoffs over the end of a processed dataset, for a registered
model (`NAME@ALIAS`) or a family fitted before the first cutoff; logged to MLflow."""

from __future__ import annotations

from prefect import flow, task

from flows.common import COMPUTE, IO
from forecasting import backtest_run, batch, pipeline, tracking
from forecasting.backtest import BacktestConfig


@task(**IO)
def load_dataset(home: str, name: str):
    return pipeline.load_processed(home, name)


@task(**IO)
def load_registered(home: str, ref: str):
    tracking.configure(home)
    return tracking.load_registered_forecaster(ref)


@task(**COMPUTE)
def run_registered(df, loaded, cfg: BacktestConfig) -> backtest_run.BacktestResult:
    forecaster, what, trained_until = loaded
    return backtest_run.backtest_registered(df, forecaster, cfg, what, trained_until)


@task(**COMPUTE)
def run_family(df, freq: str, home: str, name: str, family: str, horizon: int, cfg: BacktestConfig,
               max_epochs: int, seed: int) -> backtest_run.BacktestResult:
    fcfg = pipeline.family_config(df, freq, home, name, family, horizon, max_epochs, seed)
    return backtest_run.backtest_family(df, fcfg, cfg)


@task(**IO)
def write(result: backtest_run.BacktestResult, output: str) -> str:
    return str(batch.write_table_atomic(result.backtest.forecasts, output))


@task(**IO)
def log(home: str, name: str, result: backtest_run.BacktestResult, cfg: BacktestConfig) -> str:
    return pipeline.log_backtest_run(home, name, result, cfg)


@flow(name="backtest")
def backtest_flow(name: str, home: str = ".", model: str | None = None, family: str | None = None,
                  windows: int = 5, step: int | None = None, horizon: int | None = None,
                  output: str | None = None, max_epochs: int = 20, seed: int = 0) -> dict:
    """Backtest `model` (NAME@ALIAS) or `family` on dataset `name` at `windows` cutoffs."""
    if output:
        batch.check_output(output)  # refuse a bad output path before any work
    pipeline.check_backtest_request(model, family, horizon)
    cfg = BacktestConfig(windows, step)
    df, freq = load_dataset(home, name)
    if model:
        result = run_registered(df, load_registered(home, model), cfg)
    else:
        result = run_family(df, freq, home, name, family, horizon, cfg, max_epochs, seed)
    path = write(result, output) if output else None
    run_id = log(home, name, result, cfg)
    return {"what": result.what, "cutoffs": result.n_cutoffs, "metrics": result.backtest.metrics,
            "by_cutoff": result.backtest.by_cutoff, "output": path, "run_id": run_id,
            "in_sample": result.in_sample, "forecasts": result.backtest.forecasts}
