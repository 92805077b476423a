"""MLflow integration: store, experiments, trial and model runs, pyfunc model, registry.

Runs are written through `MlflowClient` with explicit run ids rather than the
fluent active-run stack, so logging works the same from Prefect task threads and
from worker processes that join one search.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from forecasting import serving
from forecasting.errors import ModelNotFoundError
from forecasting.forecaster import Evaluation, Forecaster

CHAMPION, CHALLENGER = "champion", "challenger"


# --------------------------------------------------------------------------- store


_SET_BY_US: set[str] = set()  # URIs `configure` set: mlflow copies them into MLFLOW_TRACKING_URI


def tracking_uri(home: str | Path = ".") -> str:
    """`MLFLOW_TRACKING_URI` when the user set it, else the SQLite store `<home>/mlruns/mlflow.db`."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env not in _SET_BY_US:
        return env
    root = Path(home).resolve() / "mlruns"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def configure(home: str | Path = ".") -> str:
    """Point MLflow (tracking and registry) at the project's store; returns the URI.

    mlflow.set_tracking_uri also exports it as MLFLOW_TRACKING_URI (worker
    processes inherit it); it is remembered so a later home is not overridden.
    """
    uri = tracking_uri(home)
    user_set = os.environ.get("MLFLOW_TRACKING_URI") == uri and uri not in _SET_BY_US
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if not user_set:
        _SET_BY_US.add(uri)
    return uri


def experiment_name(dataset: str, horizon: int) -> str:
    return f"{dataset}-h{horizon}"


def ensure_experiment(name: str, home: str | Path = ".") -> str:
    """Experiment id, creating it with artifacts under `<home>/mlruns/artifacts` for a local store."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if tracking_uri(home).startswith("sqlite:"):
        location = (Path(home).resolve() / "mlruns" / "artifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
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


def start_run(experiment_id: str, name: str, parent_run_id: str | None = None, tags: dict | None = None) -> str:
    """Create a run (nested under `parent_run_id` if given) and return its id."""
    tags = {k: str(v) for k, v in (tags or {}).items()}  # a tracking server refuses non-string tags
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    return MlflowClient().create_run(experiment_id, run_name=name, tags=tags).info.run_id


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
    from forecasting.batch import pid_alive

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


# --------------------------------------------------------------------------- trials


class TrialLogger:
    """Optuna trial hook: one nested MLflow run per trial with params, per-epoch losses and state."""

    def __init__(self, experiment_id: str, parent_run_id: str, family: str):
        self.experiment_id, self.parent_run_id, self.family = experiment_id, parent_run_id, family

    @contextmanager
    def __call__(self, trial: optuna.Trial, params: dict) -> Iterator:
        run_id = start_run(
            self.experiment_id, f"{self.family}-trial-{trial.number}", self.parent_run_id,
            tags={"kind": "trial", "family": self.family, "optuna.study": trial.study.study_name,
                  "optuna.trial": trial.number},
        )
        trial.set_user_attr("mlflow_run_id", run_id)
        log_values(run_id, params=params)

        def log_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
            log_values(run_id, metrics={"train_loss": train_loss, "val_loss": val_loss}, step=epoch)

        state, status = "complete", "FINISHED"
        try:
            yield log_epoch
        except optuna.TrialPruned:
            state = "pruned"
            raise
        except BaseException as exc:
            state, status = "failed", "FAILED"
            log_values(run_id, tags={"error": f"{type(exc).__name__}: {exc}"[:500]})
            raise
        finally:
            log_values(run_id, tags={"state": state})
            end_run(run_id, status)


def close_stale_trial_run(study: optuna.Study, trial) -> None:
    """Stale-trial hook: the trial's worker died, so end its MLflow run as KILLED (the retry gets a
    run of its own under its new trial number)."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        log_values(run_id, tags={"state": "failed", "error": "worker stopped sending heartbeats"})
        end_run(run_id, "KILLED")


# --------------------------------------------------------------------------- models


def input_example(df: pd.DataFrame, lookback: int, n_series: int = 2) -> pd.DataFrame:
    """The last `lookback` rows of a few series, in the pyfunc's input format."""
    ids = df["unique_id"].drop_duplicates().head(n_series)
    ex = df[df["unique_id"].isin(ids)].groupby("unique_id", sort=False).tail(lookback)
    return ex[["unique_id", "ds", "y", *[c for c in df.columns if c not in ("unique_id", "ds", "y")]]].reset_index(drop=True)


def log_model(run_id: str, forecaster: Forecaster, example: pd.DataFrame) -> str:
    """Log the forecaster as a pyfunc model in `run_id`; returns its `models:/m-...` URI."""
    with tempfile.TemporaryDirectory() as tmp:
        path = forecaster.save(Path(tmp) / "forecaster")
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=serving.ForecastModel(), artifacts={"forecaster": str(path)},
                signature=serving.signature(forecaster.cfg.model.horizon), input_example=example,
                pip_requirements=serving.pip_requirements(), code_paths=[serving.code_path()],
            )
    return info.model_uri


def log_evaluation_artifacts(run_id: str, forecaster: Forecaster, evaluation: Evaluation, ids: tuple[str, ...],
                             title: str) -> None:
    """Forecast-versus-actual and loss-curve PNGs."""
    from forecasting.plots import forecast_vs_actual, loss_curves

    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        png = forecast_vs_actual(Path(tmp) / "forecast_vs_actual.png", evaluation.y, evaluation.y_hat,
                                 evaluation.series, ids, title=title)
        client.log_artifact(run_id, str(png), "plots")
        if forecaster.fit_result_ is not None:
            png = loss_curves(Path(tmp) / "loss_curves.png", forecaster.fit_result_.history, title)
            client.log_artifact(run_id, str(png), "plots")


def log_table(run_id: str, table: pd.DataFrame, stem: str) -> None:
    """A table as CSV and Markdown artifacts."""
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / f"{stem}.csv", index=False)
        (Path(tmp) / f"{stem}.md").write_text(to_markdown(table))
        MlflowClient().log_artifacts(run_id, tmp)


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A Markdown table without the optional `tabulate` dependency."""
    def fmt(v) -> str:
        if isinstance(v, float | np.floating):
            return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:,.0f}"
        return str(v)

    head = "| " + " | ".join(map(str, table.columns)) + " |"
    sep = "|" + "|".join("---" for _ in table.columns) + "|"
    rows = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, sep, *rows]) + "\n"


def log_study_plots(run_id: str, study: optuna.Study, stem: str) -> list[str]:
    """Optuna optimization history and parameter importances as PNG artifacts (skipped when the
    study is too small for them); returns the names logged."""
    import matplotlib

    matplotlib.use("Agg")  # at call time, not import time: no display on servers
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    logged = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, plot in (("history", ovm.plot_optimization_history), ("importance", ovm.plot_param_importances)):
            try:
                ax = plot(study)
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                path = Path(tmp) / f"{stem}_optuna_{kind}.png"
                fig.set_size_inches(8, 4.5)
                fig.tight_layout()
                fig.savefig(path, dpi=90)
                plt.close(fig)
                MlflowClient().log_artifact(run_id, str(path), "optuna")
                logged.append(path.name)
            except (ValueError, RuntimeError, ZeroDivisionError):  # too few completed trials
                plt.close("all")
    return logged


# --------------------------------------------------------------------------- registry


def register(model_uri: str, name: str, metric: str, value: float, tags: dict | None = None,
             rescore: Callable[[Forecaster], float] | None = None, model_tags: dict | None = None,
             description: str | None = None) -> dict:
    """Register a version; it becomes `champion` only if its `metric` (lower is better) beats the
    current champion's, else it gets `challenger`. `rescore` recomputes the champion's metric from
    its model on the caller's data (its recorded tag is the fallback when that is impossible, e.g.
    another horizon or unknown series). The champion is read and the alias set under
    `registry_lock`, so two processes cannot both win. Returns version, alias and both values."""
    client = MlflowClient()
    mv = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in (tags or {}).items()})
    client.set_model_version_tag(name, mv.version, metric, str(value))
    describe(name, mv.version, model_tags, description)
    with registry_lock(name):
        current = champion_value(name, metric, rescore)
        alias = CHAMPION if current is None or value < current else CHALLENGER
        client.set_registered_model_alias(name, alias, mv.version)
    return {"name": name, "version": int(mv.version), "alias": alias, "metric": metric,
            "value": value, "previous_champion": current}


def describe(name: str, version: str, model_tags: dict | None, description: str | None) -> None:
    """Tags and description on the registered model itself (what it forecasts, how it is gated)
    and the version's description (its comparison row)."""
    client = MlflowClient()
    for k, v in (model_tags or {}).items():
        client.set_registered_model_tag(name, k, str(v))
    if model_tags:
        client.update_registered_model(name, description=(
            f"Forecasts dataset {model_tags.get('dataset')} {model_tags.get('horizon')} steps ahead "
            f"(frequency {model_tags.get('frequency')}). Input: a long history (unique_id, ds, y); output: "
            f"unique_id, ds, y_hat. The alias champion moves only on {model_tags.get('gate_metric')} "
            "(lower is better); test scores are reported, never used to choose."))
    if description:
        client.update_model_version(name, version, description=description)


def lock_path(name: str) -> Path:
    """The lock file of registered model `name`: beside a SQLite store, else in the user's cache
    (processes on one machine; a PostgreSQL store uses a database lock instead)."""
    uri = mlflow.get_tracking_uri()
    folder = (Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///")
              else Path.home() / ".cache" / "forecasting" / "locks")
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(f"{uri}|{name}".encode()).hexdigest()[:16]
    return folder / f".registry-{digest}.lock"


@contextmanager
def registry_lock(name: str) -> Iterator[None]:
    """Exclusive access to `name`'s aliases across processes: a PostgreSQL advisory lock when the
    store is PostgreSQL, else an flock on `lock_path(name)`."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("postgresql", "postgres")):
        import sqlalchemy

        key = int(hashlib.sha1(name.encode()).hexdigest()[:15], 16)
        engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    import fcntl

    with open(lock_path(name), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def champion_value(name: str, metric: str, rescore: Callable[[Forecaster], float] | None = None) -> float | None:
    """The champion's `metric`: recomputed by `rescore` from its model when given and possible,
    else its recorded tag; None if there is no champion (or it has no such score)."""
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    if rescore is not None:
        try:
            model = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}").unwrap_python_model()
            return float(rescore(model.forecaster))
        except (KeyError, ValueError, RuntimeError, MlflowException, OSError):
            pass  # another horizon, unknown series or an unreadable model: fall back to the tag
    v = mv.tags.get(metric)
    return float(v) if v is not None else None


def log_backtest(run_id: str, bt, title: str) -> None:
    """A backtest's overall and per-cutoff metrics (tables), its forecasts (CSV) and a plot of the
    error per cutoff, under `backtest/` of the run; overall metrics as `val_backtest_*`."""
    from forecasting.plots import backtest_plot

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


def load_model(name: str, alias: str = CHAMPION) -> tuple[mlflow.pyfunc.PyFuncModel, str]:
    """Load `models:/<name>@<alias>`; an unknown name or alias raises `ModelNotFoundError`."""
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        try:
            client.get_registered_model(name)
        except MlflowException:
            known = [m.name for m in client.search_registered_models()]
            raise ModelNotFoundError(f"no registered model named {name!r} (known: {known})") from None
        raise ModelNotFoundError(f"model {name!r} has no alias {alias!r}") from None
    return mlflow.pyfunc.load_model(f"models:/{name}@{alias}"), str(mv.version)


def load_registered_forecaster(ref: str) -> tuple[Forecaster, str, pd.Timestamp | None]:
    """The `Forecaster` inside registered model `NAME@ALIAS`, a label naming its version, and the
    last timestamp of its training part (version tag `train_end`) when recorded."""
    name, alias = ref.split("@", 1)
    model, version = load_model(name, alias)
    mv = MlflowClient().get_model_version(name, version)
    end = mv.tags.get("train_end")
    return model.unwrap_python_model().forecaster, f"{ref} (v{version})", pd.Timestamp(end) if end else None


def log_forecast_run(home: str | Path, model_name: str, alias: str, version: str, n_forecast: int,
                     skipped: list[tuple[str, str]], seconds: float, output: str) -> str:
    """A run in experiment `forecast-<model>` recording one batch forecast."""
    exp = ensure_experiment(f"forecast-{model_name}", home)
    run_id = start_run(exp, f"forecast-{time.strftime('%Y%m%d-%H%M%S')}", tags={"kind": "forecast"})
    log_values(run_id, params={"model_name": model_name, "alias": alias, "model_version": version,
                               "output": output},
               metrics={"series_forecast": n_forecast, "series_skipped": len(skipped), "seconds": seconds})
    if skipped:
        log_table(run_id, pd.DataFrame(skipped, columns=["unique_id", "reason"]), "skipped")
    end_run(run_id)
    return run_id


def params_of(forecaster: Forecaster) -> dict[str, str]:
    return flatten(asdict(forecaster.cfg))
