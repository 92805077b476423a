"""The model registry: log a forecaster as a pyfunc model, register versions, move the
`champion` alias only when a version beats the current one, and load registered models."""

from __future__ import annotations

import hashlib
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from forecasting.api.ensemble import members
from forecasting.api.forecaster import Fitted, Forecaster
from forecasting.core.columns import ID, TARGET, TIME
from forecasting.core.errors import ModelNotFoundError
from forecasting.core.home import sqlite_path
from forecasting.tracking import serving

CHAMPION, CHALLENGER = "champion", "challenger"


def input_example(df: pd.DataFrame, lookback: int, n_series: int = 2) -> pd.DataFrame:
    """The last `lookback` rows of a few series, in the pyfunc's input format."""
    ids = df[ID].drop_duplicates().head(n_series)
    ex = df[df[ID].isin(ids)].groupby(ID, sort=False).tail(lookback)
    return ex[[ID, TIME, TARGET, *[c for c in df.columns if c not in (ID, TIME, TARGET)]]].reset_index(drop=True)


def log_model(run_id: str, forecaster: Forecaster, example: pd.DataFrame) -> str:
    """Log the forecaster as a pyfunc model in `run_id`; returns its `models:/m-...` URI."""
    with tempfile.TemporaryDirectory() as tmp:
        path = forecaster.save(Path(tmp) / "forecaster")
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=serving.ForecastModel(), artifacts={"forecaster": str(path)},
                signature=serving.signature(forecaster.cfg.model.horizon), input_example=example,
                pip_requirements=serving.pip_requirements(), code_paths=_code_paths(forecaster),
            )
    return info.model_uri


def _code_paths(forecaster: Fitted) -> list[str]:
    """What the logged model bundles: the package, and every plug-in family module its members need
    (a combination of families may hold several)."""
    modules = sorted({m.family.module for m in members(forecaster)})
    return list(dict.fromkeys(p for module in modules for p in serving.code_paths(module)))


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
        previous = champion_version(name)
        alias = CHAMPION if current is None or value < current else CHALLENGER
        client.set_registered_model_alias(name, alias, mv.version)
    return {"name": name, "version": int(mv.version), "alias": alias, "metric": metric,
            "value": value, "previous_champion": current, "previous_version": previous}


def champion_version(name: str) -> int | None:
    """The version `champion` points at, if any."""
    try:
        return int(MlflowClient().get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def same_version(name: str, tag: str, value: str) -> dict | None:
    """The newest version of `name` whose `tag` equals `value` (what an unchanged rerun would register
    again), with its aliases and recorded tags; None when no version has it."""
    client = MlflowClient()
    try:
        found = client.search_model_versions(f"name = '{name}' and tags.{tag} = '{value}'")
    except MlflowException:
        return None
    if not found:
        return None
    mv = max(found, key=lambda v: int(v.version))
    aliases = list(client.get_registered_model(name).aliases.items())
    return {"version": int(mv.version), "aliases": [a for a, v in aliases if str(v) == str(mv.version)],
            "tags": dict(mv.tags)}


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
    store = sqlite_path(uri)
    folder = store.parent if store is not None else Path.home() / ".cache" / "forecasting" / "locks"
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
            model = load_pyfunc(f"models:/{name}/{mv.version}").unwrap_python_model()
            return float(rescore(model.forecaster))
        except (KeyError, ValueError, RuntimeError, MlflowException, OSError):
            pass  # another horizon, unknown series or an unreadable model: fall back to the tag
    v = mv.tags.get(metric)
    return float(v) if v is not None else None


def load_pyfunc(uri: str) -> mlflow.pyfunc.PyFuncModel:
    """A registered pyfunc model, loaded inside the project: its bundled code (`code/`, for loading where
    the project is not installed) leaves `sys.path` as it found it. Left there, it would shadow the
    installed package in every process started later (a Dask worker imports the model's old copy).
    No pip-requirements check: it scans every installed distribution (about 1.5 s per load) to log
    warnings the command hides; `mlflow.pyfunc.load_model` outside the project still does it."""
    path = list(sys.path)
    try:
        return mlflow.pyfunc.load_model(uri, suppress_warnings=True)
    finally:
        sys.path[:] = path


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
    return load_pyfunc(f"models:/{name}@{alias}"), str(mv.version)


def load_forecaster(name: str, alias: str = CHAMPION) -> tuple[Forecaster, str]:
    """The fitted forecaster (or ensemble) inside `models:/<name>@<alias>` and its version."""
    model, version = load_model(name, alias)
    return model.unwrap_python_model().forecaster, version


def load_version(name: str, version: str) -> Forecaster:
    """The fitted forecaster of version `version` of `name` (what an alias pointed at when a job began:
    every worker of a job forecasts with the same version, even if the alias moves meanwhile)."""
    uri = f"models:/{name}/{version}"
    return load_pyfunc(uri).unwrap_python_model().forecaster


def load_registered_forecaster(ref: str) -> tuple[Forecaster, str, pd.Timestamp | None]:
    """The `Forecaster` inside registered model `NAME@ALIAS`, a label naming its version, and the
    last timestamp of its training part (version tag `train_end`) when recorded."""
    name, alias = ref.split("@", 1)
    forecaster, version = load_forecaster(name, alias)
    end = MlflowClient().get_model_version(name, version).tags.get("train_end")
    return forecaster, f"{ref} (v{version})", pd.Timestamp(end) if end else None


def listing(dataset: str | None = None) -> list[dict]:
    """Every registered model (of `dataset` when given, by its `dataset` tag), newest version first:
    name, its tags and, per version, the aliases, the gate and test scores and when it was created."""
    client = MlflowClient()
    out = []
    for model in sorted(client.search_registered_models(), key=lambda m: m.name):
        if dataset is not None and model.tags.get("dataset") != dataset:
            continue
        gate = model.tags.get("gate_metric", "")
        aliases: dict[str, list[str]] = {}
        for alias, version in model.aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        versions = [{"version": int(v.version), "aliases": ",".join(sorted(aliases.get(str(v.version), []))),
                     gate: _float(v.tags.get(gate)),
                     **{k: _float(t) for k, t in v.tags.items() if k.startswith("test_")},
                     "lookback": _lookback(client, v.run_id),
                     "created": pd.Timestamp(v.creation_timestamp, unit="ms").strftime("%Y-%m-%d %H:%M"),
                     "run": (v.run_id or "")[:8]}
                    for v in client.search_model_versions(f"name = '{model.name}'")]
        out.append({"name": model.name, "tags": dict(model.tags),
                    "versions": sorted(versions, key=lambda v: -v["version"])})
    return out


def _lookback(client: MlflowClient, run_id: str | None) -> int | None:
    """The history length (rows per series) the version's model reads: its run's `model.lookback`."""
    try:
        value = client.get_run(run_id).data.params.get("model.lookback") if run_id else None
    except MlflowException:
        return None
    return int(value) if value and value.isdigit() else None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
