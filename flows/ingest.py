"""Ingest flow: file -> validated Parquet under `<home>/data/processed/<name>.parquet`."""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, task

from flows.common import IO, log
from forecasting.core import datasets
from forecasting.core.data import IngestConfig
from forecasting.core.options import from_dict


@task(**IO)
def ingest_file(source: str, name: str, home: str, cfg: IngestConfig) -> dict:
    path, report = datasets.ingest(source, name, home, cfg)
    log(f"{source}: {report.n_series} series, {report.n_rows} rows, frequency {report.freq}, {report.n_filled} gap "
        f"point(s) filled, {len(report.dropped)} series dropped -> {path}")
    return {"path": str(path), **asdict(report)}


# Deployments pass the options as a JSON object: rebuilt by the one deserializer, not by Prefect.
@flow(name="ingest", validate_parameters=False)
def ingest_flow(source: str, name: str, home: str = ".", cfg: IngestConfig | dict | None = None) -> dict:
    """Validate `source` and write it as the processed dataset `name`."""
    cfg = cfg if isinstance(cfg, IngestConfig) else from_dict(IngestConfig, cfg or {})
    return ingest_file(source, name, home, cfg)
