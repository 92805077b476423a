"""Ingest flow: file -> validated Parquet under `<home>/data/processed/<name>.parquet`."""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, task

from flows.common import IO
from forecasting import pipeline
from forecasting.data import IngestConfig


@task(**IO)
def ingest_file(source: str, name: str, home: str, cfg: IngestConfig) -> dict:
    path, report = pipeline.ingest(source, name, home, cfg)
    return {"path": str(path), **asdict(report)}


@flow(name="ingest")
def ingest_flow(source: str, name: str, home: str = ".", format: str = "auto", id_col: str = "unique_id",
                time_col: str = "ds", target_col: str = "y", freq: str | None = None,
                fill: str = "interpolate", min_length: int = 0, short: str = "drop") -> dict:
    """Validate `source` and write it as the processed dataset `name`."""
    cfg = IngestConfig(format=format, id_col=id_col, time_col=time_col, target_col=target_col,
                       freq=freq, fill=fill, min_length=min_length, short=short)
    return ingest_file(source, name, home, cfg)
