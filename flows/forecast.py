"""Batch forecast flow: registered model + history file -> forecasts file, logged in MLflow."""

from __future__ import annotations

import functools
import shutil

import pandas as pd
from prefect import flow, task

from flows.common import COMPUTE, IO, log
from forecasting.api import batch
from forecasting.core import files
from forecasting.core.columns import ID
from forecasting.core.data import IngestConfig, check_name
from forecasting.core.errors import RecordError
from forecasting.core.home import Home
from forecasting.core.options import from_dict
from forecasting.tracking import registry, runs


@task(**IO)
def load_model(home: str, model_name: str, alias: str):
    runs.configure_existing(home, model_name)
    forecaster, version = registry.load_forecaster(model_name, alias)
    log(f"loaded models:/{model_name}@{alias} (version {version}; lookback {forecaster.cfg.model.lookback}, "
        f"horizon {forecaster.cfg.model.horizon})")
    return forecaster, version


@task(**IO)
def read_history(path: str, cfg: IngestConfig):
    history = batch.read_history(path, cfg)
    log(f"{path}: {len(history)} rows of history")
    return history


@task(**COMPUTE)
def forecast(forecaster, history, levels: tuple[int, ...]) -> batch.BatchResult:
    result = batch.forecast_with(forecaster, history, levels)
    log(f"forecast {result.n_forecast} series (levels {list(levels) or 'none'}); {len(result.skipped)} skipped")
    return result


@functools.lru_cache(maxsize=4)
def _model_in_this_process(home: str, model_name: str, version: str):
    """A registered version loaded once per process: a Dask worker forecasts all its parts with it."""
    runs.configure_existing(home, model_name)
    return registry.load_version(model_name, version)


@task(**COMPUTE)
def forecast_part(home: str, model_name: str, version: str, part, levels: tuple[int, ...],
                  path: str | None = None) -> batch.BatchResult:
    """One part of the series, on whichever worker runs it (one torch thread: one worker per CPU); with
    `path` the worker writes its forecasts there (a dataset's part file) and returns only the counts."""
    from forecasting.core.training import torch_threads

    with torch_threads(1):
        result = batch.forecast_with(_model_in_this_process(home, model_name, version), part, levels)
    log(f"part of {part[ID].nunique()} series: {result.n_forecast} forecast, {len(result.skipped)} skipped")
    return batch.write_part(result, path) if path else result


def forecast_parts(home: str, model_name: str, version: str, history, levels: tuple[int, ...],
                   parts: int, staging: str | None = None) -> batch.BatchResult:
    """Every part submitted to the flow's task runner (Dask workers under --cluster), merged in order;
    with `staging` (a dataset output) each worker writes its part file there."""
    futures = [forecast_part.submit(home, model_name, version, p, levels,
                                    str(files.part_path(staging, k)) if staging else None)
               for k, p in enumerate(batch.partitions(history, parts))]
    return batch.merged([f.result() for f in futures])


def forecast_to_dataset(home: str, model_name: str, version: str, history, levels: tuple[int, ...], parts: int,
                        output: str) -> tuple[batch.BatchResult, str]:
    """The workers write the parts of the dataset `output` (a folder) themselves; it is put in place
    once every part is written and something was forecast, else nothing is left behind."""
    staging = files.dataset_staging(output)
    try:
        result = batch.require_forecasts(forecast_parts(home, model_name, version, history, levels, parts,
                                                        str(staging)))
        path = str(files.commit_dataset(staging, output))
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after the commit; a failure's parts go too
    log(f"workers wrote {result.rows} rows -> {path}")
    return result, path


@task(**IO)
def plot(history, result: batch.BatchResult, levels: tuple[int, ...], path: str, title: str,
         series: tuple[str, ...]) -> str:
    return str(batch.write_fan_chart(history, result, levels, path, title, series))


@task(**IO)
def write(result: batch.BatchResult, output: str) -> str:
    path = str(files.write_table(result.forecasts, output))
    log(f"wrote {len(result.forecasts)} rows -> {path}")
    return path


@task(**IO)
def log_run(home: str, model_name: str, alias: str, version: str, result: batch.BatchResult, output: str) -> str:
    return runs.log_forecast_run(home, model_name, alias, version, result.n_forecast, result.skipped,
                                 result.seconds, output)


# `cfg` (how to read the history file) may come from a deployment as a JSON object: rebuilt by the one
# deserializer, not by Prefect.
@flow(name="forecast", validate_parameters=False)
def forecast_flow(model_name: str, input: str, output: str, alias: str = "champion", home: str = ".",
                  cfg: IngestConfig | dict | None = None, levels: tuple[int, ...] = (),
                  plot_path: str | None = None, plot_series: tuple[str, ...] = (), partitions: int = 1) -> dict:
    """Forecast the next H steps of every series in `input` with `models:/<model_name>@<alias>`, with
    intervals at `levels`; `plot_path` also writes a fan chart (PNG). With `partitions` > 1 the series
    are cut into that many parts, each a task of the flow's task runner (a Dask cluster under
    `--cluster`); the output is the same one file, or, for an output without an extension, a Parquet
    dataset folder whose part files the workers write themselves."""
    files.check_destination(output)  # refuse a bad output path, plot path or model name before any work
    files.check_apart(output, [input], Home.of(home).protected)
    if plot_path:
        batch.check_plot(plot_path)
        files.check_apart(plot_path, [input, output], Home.of(home).protected, "--plot")
    check_name(model_name, "model name")
    forecaster, version = load_model(home, model_name, alias)
    cfg = cfg if isinstance(cfg, IngestConfig) else from_dict(IngestConfig, cfg or {})
    history = read_history(input, cfg)
    if partitions > 1 and files.is_dataset(output):  # written by the workers, part by part
        result, path = forecast_to_dataset(home, model_name, version, history, tuple(levels), partitions, output)
    else:
        result = batch.require_forecasts(forecast_parts(home, model_name, version, history, tuple(levels), partitions)
                                         if partitions > 1 else forecast(forecaster, history, tuple(levels)))
        path = write(result, output)
    if plot_path and result.written:  # the chart needs the rows the workers wrote
        result = batch.BatchResult(pd.read_parquet(path), result.skipped, result.seconds)
    chart = (plot(history, result, tuple(levels), plot_path, f"{model_name} v{version}", tuple(plot_series))
             if plot_path else None)
    try:
        run_id = log_run(home, model_name, alias, version, result, path)
    except Exception as exc:  # noqa: BLE001 (the file exists: say so rather than fail as if nothing was done)
        raise RecordError(f"forecasts of {result.n_forecast} series were written to {path}, but the run could not "
                          f"be recorded in the MLflow store ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                          ) from exc
    return {"output": path, "version": version, "n_forecast": result.n_forecast, "plot": chart,
            "skipped": result.skipped, "seconds": result.seconds, "run_id": run_id}
