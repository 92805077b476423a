"""The one way this project writes a file: to a temporary name in the target folder, then an
atomic rename, so a reader never sees half a file and an interrupted write leaves nothing behind.

Used for processed datasets (Parquet + JSON metadata), forecasts and backtest frames (CSV or
Parquet). Output files follow the process umask, like any file the user's shell would create.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from forecasting.core.errors import DataError

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def check_output(path: str | Path) -> Path:
    """The output path, refused early when its extension names no supported table format."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"output {path}: unsupported extension {path.suffix.lower()!r} (use .csv or .parquet)")
    return path


def check_apart(output: str | Path, inputs: Iterable[str | Path] = (), protected: Iterable[str | Path] = (),
                what: str = "output") -> None:
    """Refuse an output that is one of the inputs (the same file by any path: symlinks and hard links
    included), or that lies in a protected folder (a home's processed data and stores): writing it
    would destroy what the command reads or what later commands need."""
    out = Path(output).expanduser().resolve()
    for given in inputs:
        src = Path(given).expanduser()
        same = src.resolve() == out or (src.exists() and out.exists() and os.path.samefile(src, out))
        if same:
            raise DataError(f"{what} {output}: it is the input file {given}; write to another file")
    for folder in protected:
        root = Path(folder).expanduser().resolve()
        if out == root or root in out.parents:
            raise DataError(f"{what} {output}: inside {root}, which holds the home's datasets and stores; "
                            "write elsewhere")


def write_atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp)` on a fresh temporary file beside `path`, then rename it over `path`.

    The temporary name carries our pid (`.<name>.<pid>.<random>.tmp`), so the next write
    can remove what a killed writer left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would survive the rename
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """A frame as CSV or Parquet (by extension), atomically."""
    path = check_output(path)
    if path.suffix.lower() == ".csv":
        return write_atomic(path, lambda tmp: df.to_csv(tmp, index=False))
    return write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_json(obj: object, path: str | Path) -> Path:
    """A JSON document (indented; non-JSON values as strings), atomically."""
    text = json.dumps(obj, indent=2, default=str)
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text))


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
    """Delete temporary files of our naming beside `path` whose writing process is gone (killed
    mid-write); returns what was removed."""
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
