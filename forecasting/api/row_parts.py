"""Parts of a long Parquet file that workers read themselves: contiguous row ranges of whole series.

A batch forecast on a cluster used to read, check and cut the whole history in the driver and ship
every part to the workers: with a million series that serial work (read, parse, cut, pickle about
1 GB) took longer than the forecasts. Here the driver reads only the id column, finds where each
series' rows begin, and hands each worker a `RowRange`; the worker reads just the row groups that
hold its rows and checks them with the same parser (`batch.parse_history`), so a file row named in
an error is the same either way.

This needs a long Parquet file whose series each occupy one run of consecutive rows (what a sorted
or grouped writer produces). Anything else (CSV, a wide file, a series whose rows are interleaved
with another's, a missing id) gets `None` from `plan`, and the driver reads the file as before.
pyarrow (pandas' Parquet engine) is imported only here, when a plan is made or a part read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.api.batch import parse_history
from forecasting.core import locations
from forecasting.core.columns import ID
from forecasting.core.config import IngestConfig
from forecasting.core.data import check_readable
from forecasting.core.errors import DataError


@dataclass(frozen=True)
class RowRange:
    """Rows [start, stop) of the Parquet file at `path` (0-based data rows): whole series only."""

    path: str
    start: int
    stop: int
    n_series: int


@contextmanager
def _parquet_file(path: locations.Location, dictionary: tuple[str, ...] = ()) -> Iterator:
    """pyarrow's reader of the file (closed after the block); string columns in `dictionary` are read
    as codes plus the distinct values (as stored), far cheaper than a million strings each."""
    import pyarrow.parquet as pq

    with ExitStack() as stack:
        if isinstance(path, str):  # a remote URL: pyarrow reads through fsspec's file object
            fs, inner = locations.filesystem(path)
            path = stack.enter_context(fs.open(inner, "rb"))
        yield stack.enter_context(pq.ParquetFile(path, read_dictionary=list(dictionary) or None))


def _codes(column) -> np.ndarray | None:
    """Integer codes [N] of a (chunked) id column, equal where the ids are equal; None with a missing id."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count:
        return None  # the driver's read names the row of the missing id
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    column = column.unify_dictionaries()  # one dictionary: codes comparable across row groups
    return np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in column.chunks]).astype(np.int64)


def _id_codes(path: locations.Location, cfg: IngestConfig) -> np.ndarray | None:
    """The id column's codes [N]; None where the driver must read the file itself (not a long file).
    One open: the id column is named for dictionary reading (ignored for integer ids), which fails
    only where the file lacks it; then the schema is read to say why."""
    try:
        with _parquet_file(path, (cfg.id_col,)) as pf:
            names = pf.schema_arrow.names
            if cfg.time_col in names and cfg.target_col in names:
                return _codes(pf.read(columns=[cfg.id_col], use_pandas_metadata=False).column(0))
    except KeyError:  # pyarrow's reader has no column of that name
        with _parquet_file(path) as pf:
            names = pf.schema_arrow.names
    if cfg.id_col not in names:
        return None  # a wide file (auto format): its parts would be columns, not rows
    missing = [c for c in (cfg.time_col, cfg.target_col) if c not in names]
    raise DataError(f"missing id/time/target column(s) {missing}; columns present: {names}")


def plan(path: str, cfg: IngestConfig, n: int) -> list[RowRange] | None:
    """At most `n` row ranges of about as many whole series each, in file order, read from the id column
    alone; None when workers cannot read their own parts (see the module docstring)."""
    where = check_readable(path)
    if n < 2 or cfg.format == "wide" or locations.suffix(where) not in locations.PARQUET:
        return None
    try:
        codes = _id_codes(where, cfg)
    except DataError:
        raise
    except Exception:  # noqa: BLE001 (not a Parquet file pyarrow reads: the driver's read says why)
        return None
    if codes is None or len(codes) == 0:
        return None
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])  # [S] first row of each run
    if len(starts) != np.count_nonzero(np.bincount(codes)):
        return None  # some series' rows are not consecutive: the driver reads and groups them
    n = min(n, len(starts))
    first = (np.arange(n) * len(starts) + n - 1) // n  # series i goes to part i*n//S, as in `batch.partitions`
    bounds, counts = np.r_[starts[first], len(codes)], np.diff(np.r_[first, len(starts)])
    return [RowRange(str(path), int(a), int(b), int(c))
            for a, b, c in zip(bounds[:-1], bounds[1:], counts, strict=True)]


def read_part(part: RowRange, cfg: IngestConfig) -> pd.DataFrame:
    """The long history of one part: only the row groups that hold its rows are read, then checked by
    the parser every reader uses (an error names the row of the whole file, as a full read would)."""
    try:
        with _parquet_file(locations.resolve(part.path)) as pf:
            sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
            ends = np.cumsum(sizes)  # [G] first row after each group
            groups = [g for g in range(len(sizes)) if ends[g] > part.start and ends[g] - sizes[g] < part.stop]
            offset = int(ends[groups[0]] - sizes[groups[0]])
            table = pf.read_row_groups(groups).slice(part.start - offset, part.stop - part.start)
    except Exception as exc:  # the file changed or broke since the plan: name it, as read_table does
        raise DataError(f"cannot read rows {part.start}-{part.stop} of {part.path}: {type(exc).__name__}: {exc}") from None
    df = table.to_pandas().set_axis(pd.RangeIndex(part.start, part.stop))  # file rows, as errors count them
    return parse_history(df, cfg, part.path).reset_index(drop=True)


def n_series(part: RowRange | pd.DataFrame) -> int:
    """How many series a part holds (a planned range or a frame the driver cut)."""
    return part.n_series if isinstance(part, RowRange) else int(part[ID].nunique())
