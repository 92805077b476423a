"""Deployments of the three flows on cron schedules, served by this process.

Schedules fire only against a real Prefect server (`prefect server start`);
the temporary server Prefect starts for a plain flow call has no scheduler.
"""

from __future__ import annotations

from pathlib import Path

from prefect import serve

from flows.forecast import forecast_flow
from flows.ingest import ingest_flow
from flows.schedules import Schedules, ServeConfig
from flows.train import train_flow
from forecasting.api.jobs import TrainJob
from forecasting.core.home import Home
from forecasting.core.options import from_flags, to_dict


def _absolute(source: str) -> str:
    """A local source as an absolute path (the deployment runs from another folder); a URL as given."""
    from forecasting.core.locations import is_remote

    return source if is_remote(source) else str(Path(source).resolve())


def build_deployments(cfg: ServeConfig, schedules: Schedules = Schedules()) -> list:
    """The ingest, train and forecast deployments with their schedules."""
    layout = Home.of(cfg.home)
    home, processed = str(layout.root), str(layout.dataset(cfg.dataset))
    out = [
        ingest_flow.to_deployment(
            name=f"{cfg.dataset}-ingest", cron=schedules.ingest,
            parameters={"source": _absolute(cfg.source), "name": cfg.dataset, "home": home,
                        "cfg": {"format": cfg.format}}),
        train_flow.to_deployment(
            name=f"{cfg.dataset}-train", cron=schedules.train,
            parameters={"job": to_dict(from_flags(TrainJob, dataset=cfg.dataset, horizon=cfg.horizon,
                                                  trials=cfg.trials, max_epochs=cfg.max_epochs,
                                                  levels=cfg.levels)),
                        "home": home}),
    ]
    for family in cfg.forecast_models:
        out.append(forecast_flow.to_deployment(
            name=f"{cfg.dataset}-{family}-forecast", cron=schedules.forecast,
            parameters={"model_name": f"{cfg.dataset}-{family}", "input": processed, "home": home,
                        "output": str(layout.forecast_file(f"{cfg.dataset}-{family}", ".parquet")),
                        "levels": list(cfg.levels)}))
    return out


def serve_all(cfg: ServeConfig, schedules: Schedules = Schedules()) -> None:
    """Register the deployments with the server at PREFECT_API_URL and run them when due (blocks)."""
    serve(*build_deployments(cfg, schedules))
