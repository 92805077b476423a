"""Processed datasets under a home directory: `<home>/data/processed/<name>.parquet` plus the
ingest report and frequency beside it (`<name>.json`), both written atomically."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from forecasting.core.data import IngestConfig, IngestReport, check_name, infer_freq, load
from forecasting.core.errors import DataError
from forecasting.core.files import write_json, write_table
from forecasting.core.home import Home
from forecasting.core.provenance import dataset_fingerprint


def processed_path(home: str | Path, name: str) -> Path:
    """`<home>/data/processed/<name>.parquet`; a name that could leave that folder is refused."""
    return Home.of(home).dataset(check_name(name))


def ingest(source: str | Path, name: str, home: str | Path, cfg: IngestConfig = IngestConfig()
           ) -> tuple[Path, IngestReport]:
    """Validate a file and write it once as Parquet under `<home>/data/processed/`, with its report.

    The two files are one unit: the Parquet first, then the report (with the data's fingerprint) as
    the record that commits it. An ingest killed between the two renames leaves new data beside the
    old record, which `load_processed` refuses instead of trusting the old frequency."""
    target = processed_path(home, name)  # a bad name is refused before the file is read
    df, report = load(source, cfg)
    path = write_table(df, target)
    meta = {**asdict(report), "source": str(source), "fingerprint": dataset_fingerprint(df)}
    write_json(meta, path.with_suffix(".json"))
    return path, report


def load_processed(home: str | Path, name: str) -> tuple[pd.DataFrame, str]:
    """The processed frame of dataset `name` and its frequency (as ingest recorded it; inferred
    again if that file is gone)."""
    path = processed_path(home, name)
    if not path.exists():
        raise DataError(f"no processed dataset {name!r} at {path}; run `forecasting ingest SOURCE --name {name}` first")
    df = pd.read_parquet(path)
    meta = path.with_suffix(".json")
    if not meta.exists():
        return df, infer_freq(df)
    record = json.loads(meta.read_text())
    if record.get("fingerprint") not in (None, dataset_fingerprint(df)):
        raise DataError(f"dataset {name!r}: {path.name} and {meta.name} disagree (the data is not the one its "
                        "record describes, as an interrupted ingest leaves them); ingest it again")
    return df, record["freq"]
