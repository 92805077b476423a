"""Batch forecast flow: registered model + history file -> forecasts file, logged in MLflow."""

from __future__ import annotations

import contextlib
import functools
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from prefect import flow, task

from flows.common import COMPUTE, IO, log
from forecasting.api import batch, row_parts
from forecasting.core import files, locations
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


@task(**IO)
def plan_parts(path: str, cfg: IngestConfig, parts: int) -> list[row_parts.RowRange] | None:
    plan = row_parts.plan(path, cfg, parts)
    if plan:
        log(f"{path}: {sum(p.stop - p.start for p in plan)} rows in {len(plan)} parts, each read by its worker")
    return plan


@task(**COMPUTE)
def forecast_part(home: str, model_name: str, version: str, part, cfg: IngestConfig, levels: tuple[int, ...],
                  path: str | None = None) -> batch.BatchResult:
    """One part of the series (a frame, or rows of the input file that this worker reads and checks
    itself), on whichever worker runs it (one torch thread: one worker per CPU); with `path` the worker
    writes its forecasts there (a dataset's part file) and returns only the counts."""
    from forecasting.core.training import torch_threads

    history = row_parts.read_part(part, cfg) if isinstance(part, row_parts.RowRange) else part
    with torch_threads(1):
        result = batch.forecast_with(_model_in_this_process(home, model_name, version), history, levels)
    log(f"part of {row_parts.n_series(part)} series: {result.n_forecast} forecast, {len(result.skipped)} skipped")
    return batch.write_part(result, path) if path else result


def forecast_parts(home: str, model_name: str, version: str, parts: list, cfg: IngestConfig,
                   levels: tuple[int, ...], staging: str | None = None,
                   written: Callable[[Path], None] | None = None) -> batch.BatchResult:
    """Every part submitted to the flow's task runner (Dask workers under --cluster), merged in order;
    with `staging` (a dataset, or a Parquet file joined from parts) each worker writes its part file
    there, and `written` is called with each part's file in order, as soon as it and those before it
    are written (while the workers write the later ones)."""
    futures = [forecast_part.submit(home, model_name, version, p, cfg, levels,
                                    str(files.part_path(staging, k)) if staging else None)
               for k, p in enumerate(parts)]
    results = []
    for k, f in enumerate(futures):
        results.append(f.result())
        if written:
            written(files.part_path(staging, k))
    return batch.merged(results)


def written_by_workers(home: str, model_name: str, version: str, parts: list, cfg: IngestConfig,
                        levels: tuple[int, ...], output: str) -> tuple[batch.BatchResult, str]:
    """The workers write the parts of `output` themselves, into a staging folder beside it: a dataset
    (a folder) is put in place whole; a Parquet file is joined from the parts in order, each as soon as
    it is written (no frame comes back to this process). Either is put in place once every part is
    written and something was forecast; else nothing is left behind."""
    target = locations.resolve(output)  # local here: a remote output is written by this process
    staging = files.dataset_staging(target)
    try:
        with contextlib.nullcontext() if files.is_dataset(target) else files.PartJoin(target) as join:
            result = batch.require_forecasts(forecast_parts(home, model_name, version, parts, cfg, levels,
                                                            str(staging), join.add if join else None))
            path = str(join.commit() if join else files.commit_dataset(staging, target))
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after the commit; a failure's parts go too
    log(f"workers wrote {result.rows} rows -> {path}")
    return result, path


def on_workers(home: str, model_name: str, version: str, input: str, cfg: IngestConfig, levels: tuple[int, ...],
               partitions: int, output: str, history) -> tuple[batch.BatchResult, str]:
    """The forecast cut into `partitions` parts for the task runner's workers: rows of the input they
    read themselves where `row_parts` can plan them (no `history` read here), else parts of `history`."""
    parts = plan_parts(input, cfg, partitions) if history is None else None
    if not parts:
        parts = batch.partitions(read_history(input, cfg) if history is None else history, partitions)
    if files.is_dataset(output) or files.joins_parts(output):
        return written_by_workers(home, model_name, version, parts, cfg, levels, output)
    result = batch.require_forecasts(forecast_parts(home, model_name, version, parts, cfg, levels))
    return result, write(result, output)


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
    # The fan chart draws the history: then the driver reads it, whoever forecasts.
    history = read_history(input, cfg) if partitions == 1 or plot_path else None
    if partitions > 1:
        result, path = on_workers(home, model_name, version, input, cfg, tuple(levels), partitions, output, history)
    else:
        result = batch.require_forecasts(forecast(forecaster, history, tuple(levels)))
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
