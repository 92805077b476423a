"""Deployments of the three flows on cron schedules, served by this process.

Schedules fire only against a real Prefect server (`prefect server start`);
the temporary server Prefect starts for a plain flow call has no scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import serve

from flows.forecast import forecast_flow
from flows.ingest import ingest_flow
from flows.train import train_flow


@dataclass(frozen=True)
class Schedules:
    """Cron expressions (server time zone UTC unless the server says otherwise)."""

    ingest: str = "0 1 * * *"  # daily 01:00
    train: str = "0 2 * * 0"  # weekly, Sunday 02:00
    forecast: str = "0 3 * * *"  # daily 03:00


@dataclass(frozen=True)
class ServeConfig:
    """What the scheduled runs do: which file to ingest as which dataset, and what to forecast."""

    source: str
    dataset: str
    horizon: int
    home: str = "."
    format: str = "auto"
    trials: int = 20
    max_epochs: int = 20
    forecast_models: tuple[str, ...] = ("gru",)


def build_deployments(cfg: ServeConfig, schedules: Schedules = Schedules()) -> list:
    """The ingest, train and forecast deployments with their schedules."""
    home = str(Path(cfg.home).resolve())
    processed = str(Path(home) / "data" / "processed" / f"{cfg.dataset}.parquet")
    out = [
        ingest_flow.to_deployment(
            name=f"{cfg.dataset}-ingest", cron=schedules.ingest,
            parameters={"source": str(Path(cfg.source).resolve()), "name": cfg.dataset, "home": home,
                        "format": cfg.format}),
        train_flow.to_deployment(
            name=f"{cfg.dataset}-train", cron=schedules.train,
            parameters={"name": cfg.dataset, "horizon": cfg.horizon, "home": home, "trials": cfg.trials,
                        "max_epochs": cfg.max_epochs}),
    ]
    for family in cfg.forecast_models:
        out.append(forecast_flow.to_deployment(
            name=f"{cfg.dataset}-{family}-forecast", cron=schedules.forecast,
            parameters={"model_name": f"{cfg.dataset}-{family}", "input": processed, "home": home,
                        "output": str(Path(home) / "data" / "forecasts" / f"{cfg.dataset}-{family}.parquet")}))
    return out


def serve_all(cfg: ServeConfig, schedules: Schedules = Schedules()) -> None:
    """Register the deployments with the server at PREFECT_API_URL and run them when due (blocks)."""
    serve(*build_deployments(cfg, schedules))
