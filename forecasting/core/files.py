"""The one way this project writes a file: to a temporary name in the target folder, then an
atomic rename, so a reader never sees half a file and an interrupted write leaves nothing behind.

Used for processed datasets (Parquet + JSON metadata), forecasts and backtest frames (CSV or
Parquet). Output files follow the process umask, like any file the user's shell would create.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from forecasting.core import locations
from forecasting.core.errors import DataError

if TYPE_CHECKING:  # pandas is the caller's: the command line reaches this module before importing it
    import pandas as pd

TABLE_SUFFIXES = (".csv", *locations.PARQUET)


def is_dataset(path: str | Path) -> bool:
    """An output path without an extension names a Parquet dataset: a folder of part files."""
    return locations.suffix(locations.resolve(path)) == ""


def check_output(path: str | Path) -> locations.Location:
    """The output path (a URL fsspec opens stays a string), refused early when its extension names no
    supported table format (no extension: a Parquet dataset folder, refused where a file of that name
    is in the way, and for a remote URL: its workers write part files by local renames)."""
    path = locations.resolve(path)
    if isinstance(path, str) and is_dataset(path):
        raise DataError(f"output {path}: a Parquet dataset folder must be a local (or shared file system) path; "
                        "name a .csv or .parquet object for a remote URL")
    if is_dataset(path):
        if path.exists() and not path.is_dir():
            raise DataError(f"output {path}: a file is in the way of the dataset folder (or add .csv or .parquet)")
        return path
    if locations.suffix(path) not in TABLE_SUFFIXES:
        raise DataError(f"output {path}: unsupported extension {locations.suffix(path)!r} (use .csv, .parquet, or no "
                        "extension for a Parquet dataset folder)")
    return path


def check_apart(output: str | Path, inputs: Iterable[str | Path] = (), protected: Iterable[str | Path] = (),
                what: str = "output") -> None:
    """Refuse an output that is one of the inputs (the same file by any path: symlinks and hard links
    included), or that lies in a protected folder (a home's processed data and stores): writing it
    would destroy what the command reads or what later commands need. A remote output is compared
    with the inputs by URL (a home's folders are local)."""
    output = locations.resolve(output)
    if isinstance(output, str):
        if any(str(locations.resolve(given)) == output for given in inputs):
            raise DataError(f"{what} {output}: it is the input file; write to another file")
        return
    out = output.expanduser().resolve()
    for given in inputs:
        src = locations.resolve(given)
        if isinstance(src, str):
            continue  # a remote input is not a local output
        src = src.expanduser()
        same = src.resolve() == out or (src.exists() and out.exists() and os.path.samefile(src, out))
        if same:
            raise DataError(f"{what} {output}: it is the input file {given}; write to another file")
    for folder in protected:
        root = Path(folder).expanduser().resolve()
        if out == root or root in out.parents:
            raise DataError(f"{what} {output}: inside {root}, which holds the home's datasets and stores; "
                            "write elsewhere")


# What a command's stores may need on top of what is there: a new Prefect database is about 6 MB, a new
# MLflow store 1 MB, and every run adds records, logs and WAL pages; below this, refuse before any work.
MIN_FREE_BYTES = 32 * 2**20


def check_writable(folder: str | Path, what: str = "the home", need: int = MIN_FREE_BYTES) -> None:
    """Refuse, before any work, a folder this command cannot write into: one on a read-only file system,
    one this user may not write, or one whose disk has less than `need` bytes free. Raises the OSError
    the first write would raise (the command line's one line and exit 4), naming the folder; a folder
    not created yet is judged by the nearest one that exists."""
    folder = Path(folder)
    probe = next(p for p in (folder, *folder.parents) if p.exists())
    st = os.statvfs(probe)
    if st.f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, f"{what} is on a read-only file system", str(folder))
    if not os.access(probe, os.W_OK):
        raise OSError(errno.EACCES, f"{what} is not writable by this user", str(folder))
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise OSError(errno.ENOSPC, f"only {free / 2**20:.1f} MB free on the disk of {what} (a command needs "
                      f"about {need >> 20} MB for its stores and run records)", str(folder))


def check_destination(path: str | Path, what: str = "the output's folder") -> locations.Location:
    """`check_output`, and the folder it goes in must be writable (a read-only folder is refused before
    any work, not after the forecasts are made)."""
    path = check_output(path)
    if isinstance(path, Path):
        check_writable(path.parent, what, need=0)
    return path


def write_atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp)` on a fresh temporary file beside `path`, then rename it over `path`.

    The temporary name carries our pid (`.<name>.<pid>.<random>.tmp`), so the next write
    can remove what a killed writer left."""
    path = Path(path)
    tmp = temp_beside(path)
    try:
        write(tmp)
        put_in_place(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def temp_beside(path: Path) -> str:
    """A fresh empty temporary file beside `path`, named `.<name>.<pid>.<random>.tmp` (what
    `remove_stale_temps` finds after a killed writer; those are removed first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return tmp


def put_in_place(tmp: str, path: Path) -> None:
    """Rename a finished temporary file over `path`, with the umask's permissions."""
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would survive the rename
    os.replace(tmp, path)


def write_whole(path: locations.Location, write: Callable[[str], None]) -> locations.Location:
    """`write(tmp)` put in place whole: a local path by `write_atomic`, a remote URL by
    `locations.upload_atomic`."""
    return locations.upload_atomic(path, write) if isinstance(path, str) else write_atomic(path, write)


def write_table(df: pd.DataFrame, path: str | Path) -> locations.Location:
    """A frame as CSV or Parquet (by extension), or as a one-part Parquet dataset (no extension), atomically;
    a remote URL is uploaded whole (`locations.upload_atomic`)."""
    path = check_output(path)
    if is_dataset(path):  # local only: check_output refuses a remote dataset
        staging = dataset_staging(path)
        write_table(df, part_path(staging, 0))
        return commit_dataset(staging, path)
    return write_whole(path, _table_writer(df, locations.suffix(path)))


def _table_writer(df: pd.DataFrame, suffix: str) -> Callable[[str], None]:
    if suffix == ".csv":
        return lambda tmp: df.to_csv(tmp, index=False)
    return lambda tmp: df.to_parquet(tmp, index=False)


def dataset_staging(path: str | Path) -> Path:
    """A fresh folder beside the dataset `path` where its parts are written (by any process) before
    `commit_dataset` puts it in place; staging folders of killed commands are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(f".{glob.escape(path.name)}.*.staging"):
        pid = old.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".staging", dir=path.parent))


def part_path(staging: str | Path, k: int) -> Path:
    """Where part `k` of a dataset goes (each written atomically, so a rerun part replaces itself)."""
    return Path(staging) / f"part-{k:05d}.parquet"


def joins_parts(path: str | Path) -> bool:
    """Whether workers may write the parts of the output `path` for `join_parts` to put together: a local
    Parquet file (its staging folder goes beside it, where the workers can reach it)."""
    where = locations.resolve(path)
    return isinstance(where, Path) and locations.suffix(where) in locations.PARQUET


def join_parts(staging: str | Path, path: str | Path) -> Path:
    """The part files of `staging`, in order, as the one Parquet file `path`, atomically."""
    with PartJoin(path) as join:
        for part in sorted(Path(staging).glob("part-*.parquet")):
            join.add(part)
        return join.commit()


class PartJoin:
    """Parquet part files appended in order to one temporary file beside `path` (so the driver can join
    the parts already written while workers still write later ones), renamed over `path` by `commit`;
    leaving the block without a commit removes it. Rows pass from file to file as Arrow data (no pandas
    frame); parts without rows are left out."""

    def __init__(self, path: str | Path):
        self.path, self.tmp, self.writer = Path(path), "", None

    def __enter__(self) -> PartJoin:
        self.tmp = temp_beside(self.path)
        return self

    def add(self, part: str | Path) -> None:
        """Append one whole part file (the first part with rows sets the schema the others are read with)."""
        import pyarrow.parquet as pq

        if not pq.ParquetFile(part).metadata.num_rows:
            return
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, pq.read_schema(part))
        self.writer.write_table(pq.read_table(part, schema=self.writer.schema))

    def commit(self) -> Path:
        """Close the file and put it in place of `path`."""
        if self.writer is None:
            raise ValueError(f"{self.path}: no part with rows to join")
        self.writer.close()
        put_in_place(self.tmp, self.path)
        return self.path

    def __exit__(self, *exc) -> None:
        if self.writer is not None and self.writer.is_open:
            self.writer.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def commit_dataset(staging: str | Path, path: str | Path) -> Path:
    """Put a staging folder whose every part is written in place of the dataset `path`: one rename when
    there is none yet; else the old one is renamed aside first and removed after."""
    staging, path = Path(staging), Path(path)
    for tmp in staging.glob(".*.tmp"):  # a part's write that a killed worker left (its rerun wrote it whole)
        tmp.unlink(missing_ok=True)
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's 0700 would survive the rename
    if not path.exists():
        os.replace(staging, path)
        return path
    aside = staging.with_suffix(".old")
    os.replace(path, aside)
    os.replace(staging, path)
    shutil.rmtree(aside, ignore_errors=True)
    return path


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


def _read_sqlite(path: Path, read: Callable, empty):
    """`read(connection)` on a SQLite file opened read-only; `empty` when it is not a readable one."""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return read(con)
        finally:
            con.close()
    except sqlite3.Error:
        return empty


def sqlite_tables(path: Path) -> dict[str, int]:
    """Row counts of the tables of a SQLite file ({} when it is not one); read-only."""
    def counts(con) -> dict[str, int]:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}

    return _read_sqlite(path, counts, {})


def sqlite_revision(path: Path) -> str | None:
    """The alembic schema revision a SQLite store records (None without one)."""
    def revision(con) -> str | None:
        row = con.execute("SELECT version_num FROM alembic_version").fetchone()
        return row[0] if row else None

    return _read_sqlite(path, revision, None)


def create_store_once(path: str | Path, init: Callable[[Path], None], whole: Callable[[Path], bool],
                      data_tables: tuple[str, ...], what: str) -> None:
    """Make sure a SQLite store exists at `path`, created whole and once.

    Under an exclusive lock beside it (two commands starting on a fresh home wait for each other), a
    missing store is built by `init` in a temporary file and renamed into place, so a disk that fills
    up mid-creation leaves no half store. A readable store that is not `whole` (an older interrupted
    creation) is moved aside (`<name>.incomplete`) and rebuilt when its `data_tables` are empty, and
    refused in one line naming the file otherwise; an unreadable file is left to the store's opener."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        remove_stale_temps(path)  # what a creator killed mid-way left
        if path.is_file() and path.stat().st_size > 0:
            if whole(path):
                return
            tables = sqlite_tables(path)
            if not tables:  # unreadable (truncated, not SQLite): the store's own opener says so
                return
            if any(tables.get(t, 0) for t in data_tables):
                raise DataError(f"{what} {path} is incomplete (an interrupted creation or upgrade) but holds data; "
                                "move it away to start a new one, or repair it")
            os.replace(path, path.with_name(f"{path.name}.incomplete"))
        # A name never used before: a library may cache a connection by URL, which would follow the
        # renamed file instead of creating a new one.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        check_writable(path.parent, f"the {what}")  # a full disk: one clear line, not a store error half-way
        try:
            init(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
