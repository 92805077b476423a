"""The layout of a home: every path and default store URL under it, in one place.

    <home>/data/processed/<name>.parquet (+ .json)   ingested datasets
    <home>/data/forecasts/                           batch forecasts the commands write by default
    <home>/mlruns/mlflow.db, mlruns/artifacts/       the MLflow store (SQLite) and its artifacts
    <home>/mlruns/optuna.db                          the Optuna studies (SQLite)
    <home>/mlruns/fits/<digest>/                     finished trials' forecasters, reused by the refit
    <home>/mlruns/baselines/<digest>.json            the baselines' scores, reused for unchanged data
    <home>/mlruns/.registry-<digest>.lock            the champion rule's lock, beside the store
    <home>/.prefect/                                 Prefect's local state, unless PREFECT_HOME is set

Nothing is created here: the modules that write a path create its folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SQLITE = "sqlite:///"


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"{SQLITE}{path}"


def sqlite_path(url: str | None) -> Path | None:
    """The file of a `sqlite:///` URL; None for any other URL (PostgreSQL, a server) or none."""
    return Path(url.removeprefix(SQLITE)) if url and url.startswith(SQLITE) else None


@dataclass(frozen=True)
class Home:
    """A home directory and what lives under it (`root` is absolute)."""

    root: Path

    @classmethod
    def of(cls, home: str | Path) -> Home:
        return cls(Path(home).resolve())

    @property
    def processed(self) -> Path:
        return self.root / "data" / "processed"

    @property
    def forecasts(self) -> Path:
        return self.root / "data" / "forecasts"

    @property
    def mlruns(self) -> Path:
        return self.root / "mlruns"

    @property
    def artifacts(self) -> Path:
        return self.mlruns / "artifacts"

    @property
    def mlflow_db(self) -> Path:
        return self.mlruns / "mlflow.db"

    @property
    def fits(self) -> Path:
        """Fitted forecasters kept by configuration, dataset and split (`api.fitcache`)."""
        return self.mlruns / "fits"

    @property
    def baselines(self) -> Path:
        """The baselines' scores by data, code and settings (`pipeline.steps.baseline_rows`)."""
        return self.mlruns / "baselines"

    @property
    def protected(self) -> tuple[Path, Path]:
        """Folders no command writes a user-named output into: the datasets and the stores."""
        return self.processed, self.mlruns

    @property
    def prefect(self) -> Path:
        """Prefect's local state (`PREFECT_HOME`) unless the user set one."""
        return self.root / ".prefect"

    @property
    def scratch(self) -> Path:
        """Our local Dask workers' scratch space (`--cluster local`), removed as each worker stops."""
        return self.root / ".dask"

    @property
    def optuna_db(self) -> Path:
        return self.mlruns / "optuna.db"

    @property
    def tracking_uri(self) -> str:
        """The default MLflow store (`MLFLOW_TRACKING_URI` overrides it: see `tracking.runs`)."""
        return sqlite_url(self.mlflow_db)

    @property
    def optuna_url(self) -> str:
        """The default Optuna storage (`--storage` overrides it)."""
        return sqlite_url(self.optuna_db)

    def dataset(self, name: str) -> Path:
        """The processed Parquet file of dataset `name` (the caller checks the name)."""
        return self.processed / f"{name}.parquet"

    def forecast_file(self, model: str, suffix: str = ".csv") -> Path:
        return self.forecasts / f"{model}{suffix}"
