"""MLflow runs: the store, experiments, runs and what they record (values, tables, plots).

Runs are written through `MlflowClient` with explicit run ids rather than the fluent
active-run stack, so logging works the same from Prefect task threads and from worker
processes that join one search. The registry is in `registry.py`, the Optuna trial hook in
`search_log.py`.
"""

from __future__ import annotations

import functools
import math
import os
import queue
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from forecasting.api.forecaster import Forecaster
from forecasting.core.columns import ID, TARGET, TIME
from forecasting.core.errors import ModelNotFoundError, StoreError
from forecasting.core.files import create_store_once, sqlite_revision
from forecasting.core.home import Home, sqlite_path, sqlite_url
from forecasting.core.tables import to_markdown

# --------------------------------------------------------------------------- store


_SET_BY_US: set[str] = set()  # URIs `configure` set: mlflow copies them into MLFLOW_TRACKING_URI


def tracking_uri(home: str | Path = ".") -> str:
    """`MLFLOW_TRACKING_URI` when the user set it, else the SQLite store `<home>/mlruns/mlflow.db`."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env not in _SET_BY_US:
        return env
    return Home.of(home).tracking_uri


def _init_store(path: Path) -> None:
    """MLflow's schema in a new SQLite file (what its first client call would do in place)."""
    MlflowClient(tracking_uri=sqlite_url(path)).search_experiments(max_results=1)


def _whole_store(path: Path) -> bool:
    """Whether a SQLite MLflow store holds the schema this MLflow expects (a creation that stopped
    half-way records an older revision, or none)."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    return sqlite_revision(path) == _get_latest_schema_revision()


@functools.cache
def check_server(uri: str, timeout: float = 5.0) -> None:
    """Refuse, in one line, a tracking server that does not answer its health check: MLflow's client
    would otherwise retry for minutes before failing with a traceback."""
    import httpx

    try:
        ok = httpx.get(f"{uri.rstrip('/')}/health", timeout=timeout, trust_env=False).status_code == 200
    except httpx.HTTPError as exc:
        raise StoreError(f"the MLflow server at {uri} (MLFLOW_TRACKING_URI) does not answer "
                         f"({type(exc).__name__}); start it, or unset MLFLOW_TRACKING_URI for the home's store") from None
    if not ok:
        raise StoreError(f"the MLflow server at {uri} (MLFLOW_TRACKING_URI) answers its health check with an error")


def configure(home: str | Path = ".") -> str:
    """Point MLflow (tracking and registry) at the project's store; returns the URI.

    mlflow.set_tracking_uri also exports it as MLFLOW_TRACKING_URI (worker
    processes inherit it); it is remembered so a later home is not overridden.
    """
    uri = tracking_uri(home)
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    if sqlite_path(uri) is not None:
        create_store_once(sqlite_path(uri), _init_store, _whole_store, ("runs", "registered_models"), "MLflow store")
    user_set = os.environ.get("MLFLOW_TRACKING_URI") == uri and uri not in _SET_BY_US
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if not user_set:
        _SET_BY_US.add(uri)
    return uri


def configure_existing(home: str | Path, model: str) -> str:
    """`configure` for a command that only reads models: a home whose SQLite store does not exist yet
    holds no model, so it is refused (`ModelNotFoundError`) instead of being created empty."""
    path = sqlite_path(tracking_uri(home))
    if path is not None and not path.is_file():
        raise ModelNotFoundError(f"no registered model named {model!r}: {path} does not exist yet "
                                 "(train a model in this home first, or pass --home)")
    return configure(home)


def experiment_name(dataset: str, horizon: int) -> str:
    return f"{dataset}-h{horizon}"


# The MLflow UI opens an experiment by its kind: without this tag, MLflow 3 guesses "GenAI" and opens
# an empty traces overview; with it, the runs table and model-training views.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


# MLflow 3.17's UI does not open by that tag alone: a global GenAI / Model training switch, kept in the
# browser and GenAI on a first visit, decides the view (checked in headless Chromium: the experiment
# opened on an empty traces overview). This query parameter sets the switch to model training.
UI_VIEW = "workflowType=machine_learning"


def ui_address(port: int = 5000, experiment_id: str | None = None) -> str:
    """The local MLflow UI's address (an experiment's runs page when given) in the model-training view."""
    page = f"experiments/{experiment_id}" if experiment_id else ""
    return f"http://127.0.0.1:{port}/#/{page}?{UI_VIEW}"


def ensure_experiment(name: str, home: str | Path = ".") -> str:
    """Experiment id, creating it (model-development kind, a description) with artifacts under
    `<home>/mlruns/artifacts` for a local store; an older experiment gets the kind it lacks."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get("mlflow.experimentKind") is None:
            client.set_experiment_tag(exp.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
        return exp.experiment_id
    location = None
    if tracking_uri(home).startswith("sqlite:"):
        location = (Home.of(home).artifacts / name).as_uri()
    note = (f"Forecasting experiment {name} (dataset-h<horizon>): each `forecasting train` is a pipeline run, with "
            "its Optuna trials, final models, baselines and backtests nested under it; `forecast` runs record "
            "batch forecasts.")
    try:
        return client.create_experiment(name, artifact_location=location,
                                        tags=EXPERIMENT_KIND | {"mlflow.note.content": note})
    except MlflowException:  # another worker created it first
        return client.get_experiment_by_name(name).experiment_id


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested config dicts as `a.b` keys with string values (MLflow params)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


# What each kind of run is, shown as its Description in the MLflow UI ({family}: the run's family tag).
DESCRIPTIONS = {
    "pipeline": "One `forecasting train`: every family tuned by Optuna (trials nested below), refitted, backtested "
                "and compared with the baselines on the same windows. The comparison is the `comparison` artifact; "
                "the tags `registered.*` say what the registry received.",
    "worker": "A tuning worker of the {family} search: its trials are nested below.",
    "trial": "One Optuna trial of the {family} search: its parameters, and train/validation loss per epoch.",
    "final": "The {family} model refitted with the best trial's configuration (or the K best as an ensemble), "
             "scored once on the test part, backtested on validation and logged as a pyfunc model.",
    "baseline": "Baseline {family}, scored on the same test windows and validation cutoffs as the models.",
    "backtest": "A rolling-origin backtest (`forecasting backtest`): forecasts and metrics per cutoff.",
    "forecast": "A batch forecast (`forecasting forecast`) with a registered model.",
}


def source_tags() -> dict[str, str]:
    """Where a run comes from, as the MLflow UI shows it (Source): the command, and the code's version."""
    from forecasting.core.provenance import code_version

    return {"mlflow.source.type": "LOCAL", "mlflow.source.name": "forecasting (" + " ".join(sys.argv[1:2]) + ")",
            "code_version": code_version()}


def start_run(experiment_id: str, name: str, parent_run_id: str | None = None, tags: dict | None = None) -> str:
    """Create a run (nested under `parent_run_id` if given) with its source and its kind's description;
    returns its id."""
    tags = {k: str(v) for k, v in (tags or {}).items()}  # a tracking server refuses non-string tags
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    note = DESCRIPTIONS.get(tags.get("kind", ""))
    if note:
        tags.setdefault("mlflow.note.content", note.format(family=tags.get("family", "")))
    return MlflowClient().create_run(experiment_id, run_name=name, tags=source_tags() | tags).info.run_id


def log_values(run_id: str, params: dict | None = None, metrics: dict | None = None,
               tags: dict | None = None, step: int = 0) -> None:
    """Params, metrics and tags of one run in one request."""
    now = int(time.time() * 1000)
    MlflowClient().log_batch(
        run_id,
        metrics=[Metric(k, v, now, step) for k, v in _finite(metrics or {}).items()],
        params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )


class MetricQueue:
    """Stepped metrics of one run, written by a background thread: the training loop only enqueues.
    A write to the SQLite store costs tens of milliseconds, a few percent of a small model's epoch;
    whatever is queued when the writer gets to it goes in one request. `close` writes the rest and
    returns the writer's error, if it had one (a lost loss curve should not fail a trial)."""

    def __init__(self, run_id: str):
        self.run_id, self.error = run_id, None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._drain, name=f"metrics-{run_id[:8]}", daemon=True)
        self._thread.start()

    def put(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._queue.put([Metric(k, v, now, step) for k, v in _finite(metrics).items()])

    def _drain(self) -> None:
        while (batch := self._queue.get()) is not None:
            done = False
            while not done:  # take everything already queued with it
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                done = more is None
                batch += more or []
            self._write(batch)
            if done:
                return

    def _write(self, metrics: list[Metric]) -> None:
        try:
            for i in range(0, len(metrics), 900):  # log_batch takes at most 1000 metrics
                MlflowClient().log_batch(self.run_id, metrics=metrics[i:i + 900])
        except Exception as exc:  # noqa: BLE001 (kept and returned by close(), on the caller's thread)
            self.error = self.error or exc

    def close(self) -> Exception | None:
        self._queue.put(None)
        self._thread.join()
        return self.error


def log_history(run_id: str, history: list[dict]) -> None:
    """Per-epoch train/validation loss as stepped metrics."""
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(h[k]), now, int(h["epoch"])) for h in history
               for k in ("train_loss", "val_loss") if math.isfinite(float(h[k]))]
    for i in range(0, len(metrics), 900):  # log_batch takes at most 1000 metrics
        MlflowClient().log_batch(run_id, metrics=metrics[i:i + 900])


def end_run(run_id: str, status: str = "FINISHED") -> None:
    MlflowClient().set_terminated(run_id, status=status)


def owner_tags() -> dict[str, str]:
    """Host and process id of this process, recorded on runs it owns (to notice it dying)."""
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


def close_dead_runs(experiment_id: str, kind: str = "pipeline") -> list[str]:
    """End as KILLED the RUNNING runs of `kind` that a process on this host started and that is gone
    (a killed `train`), and their RUNNING child runs (trials: state failed). Returns their ids."""
    from forecasting.core.files import pid_alive

    client, host, closed = MlflowClient(), socket.gethostname(), []
    runs = client.search_runs([experiment_id], f"tags.kind = '{kind}' and attributes.status = 'RUNNING'")
    for run in runs:
        tags = run.data.tags
        if tags.get("host") != host or not tags.get("pid", "").isdigit() or pid_alive(int(tags["pid"])):
            continue
        children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}' "
                                                        "and attributes.status = 'RUNNING'")
        for child in children:
            log_values(child.info.run_id, tags={"state": "failed", "error": "its pipeline process was killed"})
            end_run(child.info.run_id, "KILLED")
        log_values(run.info.run_id, tags={"error": "process killed; closed by the next run"})
        end_run(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    return closed


@contextmanager
def run(experiment_id: str, name: str, parent_run_id: str | None = None, tags: dict | None = None
        ) -> Iterator[str]:
    """A run that ends FINISHED, or FAILED when the block raises (then the error propagates)."""
    run_id = start_run(experiment_id, name, parent_run_id, tags)
    try:
        yield run_id
    except BaseException:
        end_run(run_id, "FAILED")
        raise
    end_run(run_id)


# --------------------------------------------------------------------------- artifacts


def log_loss_curves(run_id: str, forecaster: Forecaster, title: str) -> None:
    """The training and validation loss per epoch, as `plots/loss_curves.png`."""
    from forecasting.core.plots import loss_curves

    if forecaster.fit_result_ is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        png = loss_curves(Path(tmp) / "loss_curves.png", forecaster.fit_result_.history, title)
        MlflowClient().log_artifact(run_id, str(png), "plots")


def log_table(run_id: str, table: pd.DataFrame, stem: str) -> None:
    """A table as CSV and Markdown artifacts."""
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / f"{stem}.csv", index=False)
        (Path(tmp) / f"{stem}.md").write_text(to_markdown(table))
        MlflowClient().log_artifacts(run_id, tmp)


def log_backtest(run_id: str, bt, title: str) -> None:
    """A backtest's overall and per-cutoff metrics (tables), its forecasts (CSV) and a plot of the
    error per cutoff, under `backtest/` of the run; overall metrics as `val_backtest_*`."""
    from forecasting.core.plots import backtest_plot

    model = bt.metrics.iloc[0]
    log_values(run_id, metrics={f"val_backtest_{k}": v for k, v in model.drop("predictor").items()})
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        bt.metrics.to_csv(Path(tmp) / "metrics.csv", index=False)
        bt.by_cutoff.to_csv(Path(tmp) / "metrics_by_cutoff.csv", index=False)
        (Path(tmp) / "metrics_by_cutoff.md").write_text(to_markdown(bt.by_cutoff))
        bt.forecasts.to_csv(Path(tmp) / "forecasts.csv", index=False)
        backtest_plot(Path(tmp) / "backtest.png", bt, title)
        client.log_artifacts(run_id, tmp, "backtest")


def log_fan_chart(run_id: str, history: pd.DataFrame, forecast: pd.DataFrame, levels: tuple[int, ...],
                  series: tuple[str, ...], title: str, folder: str = "plots") -> None:
    """`<folder>/fan_chart.png`: history, forecast, interval bands and actuals of `series` and a sample
    of the others (`forecast` holds `y` where the actuals are known)."""
    from forecasting.core.plots import fan_chart

    actuals = forecast[[ID, TIME, TARGET]] if TARGET in forecast else None
    first = forecast.groupby(ID)[TIME].min()  # per series, the first forecast step
    past = history[history[TIME] < history[ID].map(first)]  # what was known at the cutoff
    with tempfile.TemporaryDirectory() as tmp:
        png = fan_chart(Path(tmp) / "fan_chart.png", past, forecast, levels, actuals, list(series), title=title)
        MlflowClient().log_artifact(run_id, str(png), folder)


def log_forecast_run(home: str | Path, model_name: str, alias: str, version: str, n_forecast: int,
                     skipped: list[tuple[str, str]], seconds: float, output: str) -> str:
    """A run in experiment `forecast-<model>` recording one batch forecast."""
    exp = ensure_experiment(f"forecast-{model_name}", home)
    run_id = start_run(exp, f"forecast-{time.strftime('%Y%m%d-%H%M%S')}", tags={"kind": "forecast"})
    log_values(run_id, params={"model_name": model_name, "alias": alias, "model_version": version,
                               "output": output},
               metrics={"series_forecast": n_forecast, "series_skipped": len(skipped), "seconds": seconds})
    if skipped:
        log_table(run_id, pd.DataFrame(skipped, columns=[ID, "reason"]), "skipped")
    end_run(run_id)
    return run_id


def params_of(forecaster: Forecaster) -> dict[str, str]:
    return flatten(asdict(forecaster.cfg))
