"""Batch forecast flow: registered model + history file -> forecasts file, logged in MLflow."""

from __future__ import annotations

from prefect import flow, task

from flows.common import COMPUTE, IO
from forecasting import batch, tracking
from forecasting.data import IngestConfig, check_name


@task(**IO)
def load_model(home: str, model_name: str, alias: str):
    tracking.configure(home)
    return tracking.load_model(model_name, alias)


@task(**IO)
def read_history(path: str, cfg: IngestConfig):
    return batch.read_history(path, cfg)


@task(**COMPUTE)
def forecast(model, history) -> batch.BatchResult:
    return batch.forecast_with(model, history)


@task(**IO)
def write(result: batch.BatchResult, output: str) -> str:
    return str(batch.write_table_atomic(result.forecasts, output))


@task(**IO)
def log_run(home: str, model_name: str, alias: str, version: str, result: batch.BatchResult, output: str) -> str:
    return tracking.log_forecast_run(home, model_name, alias, version, result.n_forecast, result.skipped,
                                     result.seconds, output)


@flow(name="forecast")
def forecast_flow(model_name: str, input: str, output: str, alias: str = "champion", home: str = ".",
                  format: str = "auto", id_col: str = "unique_id", time_col: str = "ds",
                  target_col: str = "y") -> dict:
    """Forecast the next H steps of every series in `input` with `models:/<model_name>@<alias>`."""
    batch.check_output(output)  # refuse a bad output path or model name before any work
    check_name(model_name, "model name")
    model, version = load_model(home, model_name, alias)
    cfg = IngestConfig(format=format, id_col=id_col, time_col=time_col, target_col=target_col)
    result = batch.require_forecasts(forecast(model, read_history(input, cfg)))
    path = write(result, output)
    run_id = log_run(home, model_name, alias, version, result, path)
    return {"output": path, "version": version, "n_forecast": result.n_forecast,
            "skipped": result.skipped, "seconds": result.seconds, "run_id": run_id}
