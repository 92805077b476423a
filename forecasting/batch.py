"""Batch forecasting I/O: read a history file, forecast every series, write atomically."""

from __future__ import annotations

import glob
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from forecasting.data import ID, TARGET, TIME, IngestConfig, read_table, to_long
from forecasting.errors import DataError, NothingToForecastError

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def read_history(path: str | Path, cfg: IngestConfig = IngestConfig()) -> pd.DataFrame:
    """A long history frame from a long or wide CSV/Parquet file (same options as ingest).

    Only shape and types are fixed here; series whose last lookback points have
    gaps or bad values are skipped by the forecaster, with the reason.
    """
    df = to_long(read_table(path), cfg).drop(columns="_row", errors="ignore")
    df[ID] = df[ID].astype(str)
    ds = pd.to_datetime(df[TIME], errors="coerce", format="mixed")
    if ds.isna().any():
        row = int(ds.isna().to_numpy().argmax())
        raise DataError(f"{path}: column {TIME!r}: unparseable timestamp {df[TIME].iloc[row]!r} at row {row + 2}")
    df[TIME] = ds
    y = pd.to_numeric(df[TARGET], errors="coerce")
    bad = y.isna() & df[TARGET].notna()
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise DataError(f"{path}: column {TARGET!r}: non-numeric value {df[TARGET].iloc[row]!r} at row {row + 2} "
                        f"(series {df[ID].iloc[row]!r})")
    df[TARGET] = y.astype("float64")
    return df


def check_output(path: str | Path) -> Path:
    """The output path, refused early when its extension names no supported format."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"output {path}: unsupported extension {path.suffix.lower()!r} (use .csv or .parquet)")
    return path


def write_table_atomic(df: pd.DataFrame, path: str | Path) -> Path:
    """Write CSV or Parquet (by extension) to a temporary file in the same folder, then rename:
    an interrupted write leaves no partial output."""
    path = check_output(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would survive the rename
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (else set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete temporary files of our naming (`.<name>.<pid>.<random>.tmp`) beside `path` whose writing
    process is gone (killed mid-write); returns what was removed."""
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass
class BatchResult:
    forecasts: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_forecast(self) -> int:
        return int(self.forecasts[ID].nunique()) if len(self.forecasts) else 0


def require_forecasts(result: BatchResult) -> BatchResult:
    """Refuse a forecast in which every series was skipped (nothing is written), naming why each was."""
    if result.n_forecast == 0:
        reasons = "; ".join(f"{u!r}: {why}" for u, why in result.skipped[:5])
        more = f" (and {len(result.skipped) - 5} more)" if len(result.skipped) > 5 else ""
        raise NothingToForecastError(f"no series could be forecast, all {len(result.skipped)} were skipped: "
                                     f"{reasons}{more}")
    return result


def forecast_with(model, history: pd.DataFrame) -> BatchResult:
    """Forecast with a loaded pyfunc model (`ForecastModel`) and collect what it skipped."""
    t0 = time.perf_counter()
    out = model.predict(history)
    inner = model.unwrap_python_model() if hasattr(model, "unwrap_python_model") else model
    return BatchResult(out, list(getattr(inner, "skipped", [])), time.perf_counter() - t0)
