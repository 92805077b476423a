"""Load, validate, regularize and split time series into the long format.

The data contract: a long DataFrame with `unique_id` (str), `ds`
(datetime64), `y` (float64) and optional numeric covariate columns, sorted by
(`unique_id`, `ds`), on a regular grid of one frequency. Every violation raises
`DataError` with a message that names the column, series or row at fault.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting.core import locations
from forecasting.core.columns import ID, TARGET, TIME  # noqa: F401  (the contract's names, re-exported)
from forecasting.core.config import (  # noqa: F401  (re-exported: declared in the light config module)
    FILL_POLICIES,
    FORMATS,
    NAME_PATTERN,
    SHORT_POLICIES,
    TIME_UNITS,
    IngestConfig,
    check_name,
)
from forecasting.core.errors import DataError


@dataclass(frozen=True)
class IngestReport:
    """What validation found and did."""

    n_series: int
    n_rows: int
    freq: str
    n_filled: int
    was_sorted: bool
    dropped: tuple[tuple[str, str], ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------- reading


def check_readable(path: str | Path) -> locations.Location:
    """The input, resolved (a `file://` URL becomes a Path), refused in one line unless it is a file."""
    path = locations.resolve(path)
    if isinstance(path, str):
        locations.check_readable_file(path)
    elif not path.exists():
        raise DataError(f"file not found: {path}")
    elif not path.is_file():
        raise DataError(f"not a file: {path}")
    return path


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file (chosen by extension) into a DataFrame: a local path, a `file://` URL
    or any URL fsspec opens (see `locations`)."""
    path = check_readable(path)
    suffix = locations.suffix(path)
    try:
        if suffix in locations.PARQUET:
            df = pd.read_parquet(path)
        elif suffix in (".csv", ".txt", ".gz"):
            df = pd.read_csv(path)
        else:
            raise DataError(f"unsupported file type {suffix!r} for {path} (use .csv or .parquet)")
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"file is empty: {path}") from None
    except Exception as exc:  # parser errors come in many types; name the file
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if df.empty:
        raise DataError(f"file has no data rows: {path}")
    return df


# --------------------------------------------------------------------------- shape


def _is_long(df: pd.DataFrame, cfg: IngestConfig) -> bool:
    if cfg.format != "auto":
        return cfg.format == "long"
    return cfg.id_col in df.columns


def _require(df: pd.DataFrame, cols: list[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(
            f"missing {what} column(s) {missing}; columns present: {list(df.columns)}"
        )


def _looks_like_times(col: pd.Series) -> bool:
    """Whether any of a column's first 20 values reads as a timestamp (a cheap check of a guess)."""
    head = col.dropna().head(20).astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas' "could not infer format" on non-dates
        return bool(pd.to_datetime(head, errors="coerce", format="mixed").notna().any()) if len(head) else False


def to_long(df: pd.DataFrame, cfg: IngestConfig = IngestConfig()) -> pd.DataFrame:
    """Rename (long) or melt (wide) a raw table into `unique_id`, `ds`, `y`, covariates; numeric
    timestamps become times in `cfg.time_unit` since the epoch (refused later without one)."""
    return _epoch_times(_reshaped(df, cfg), cfg.time_unit)


def _epoch_times(df: pd.DataFrame, unit: str | None) -> pd.DataFrame:
    if unit is None:
        return df
    seconds = pd.to_numeric(df[TIME], errors="coerce")  # a non-number becomes NaT: named by _parse_times
    return df.assign(**{TIME: pd.to_datetime(seconds, unit=unit, errors="coerce")})


def _reshaped(df: pd.DataFrame, cfg: IngestConfig) -> pd.DataFrame:
    if _is_long(df, cfg):
        _require(df, [cfg.id_col, cfg.time_col, cfg.target_col], "id/time/target")
        out = df.rename(columns={cfg.id_col: ID, cfg.time_col: TIME, cfg.target_col: TARGET})
        covs = [c for c in out.columns if c not in (ID, TIME, TARGET)]
        return out[[ID, TIME, TARGET, *covs]].copy()
    time_col = cfg.time_col if cfg.time_col in df.columns else df.columns[0]
    if time_col != cfg.time_col and cfg.time_unit is None and not _looks_like_times(df[time_col]):
        raise DataError(f"no time column: {cfg.time_col!r} is absent and the first column {time_col!r} holds no "
                        f"timestamps (columns found: {list(df.columns)}); for a long file name its columns with "
                        "--id-col, --time-col and --target-col, for a wide one its time column with --time-col")
    series = list(cfg.series_cols) if cfg.series_cols else [c for c in df.columns if c != time_col]
    _require(df, series, "series")
    if not series:
        raise DataError(f"wide file has no series columns besides the time column {time_col!r}")
    out = df.melt(id_vars=[time_col], value_vars=series, var_name=ID, value_name=TARGET)
    out = out.rename(columns={time_col: TIME})
    # Keep the file's row number so errors can point at it (header is line 1).
    out["_row"] = np.tile(np.arange(len(df)) + 2, len(series))
    return out[[ID, TIME, TARGET, "_row"]]


# --------------------------------------------------------------------------- checks


def _file_rows(df: pd.DataFrame, mask: np.ndarray) -> np.ndarray:
    rows = df["_row"].to_numpy() if "_row" in df.columns else df.index.to_numpy() + 2
    return rows[mask]


def parse_long(df: pd.DataFrame, source: str = "", numeric: list[str] | None = None) -> pd.DataFrame:
    """The long contract's types, for every reader (ingest, batch forecasting, the model's
    `predict`): ids as strings, `ds` as naive timestamps, every other column float64.

    One `DataError` names the column, the file row (and series) of the first missing id,
    unparseable timestamp, non-numeric or infinite value (prefixed by `source`, e.g. the file).
    Missing values pass: ingest fills them by its policy, forecasting skips such series.
    `numeric` names the value columns (default: every column but id, time and `_row`).
    """
    try:
        if df[ID].isna().any():
            bad = df[ID].isna().to_numpy()
            raise DataError(f"column {ID!r}: missing series id at row {_file_rows(df, bad)[0]}")
        df = _parse_times(df.assign(**{ID: df[ID].astype(str)}))
        for col in numeric if numeric is not None else [c for c in df.columns if c not in (ID, TIME, "_row")]:
            df = _parse_numeric(df, col)
    except DataError as exc:
        raise DataError(f"{source}: {exc}" if source else str(exc)) from None
    return df


def _parse_times(df: pd.DataFrame) -> pd.DataFrame:
    raw = df[TIME]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        i = int(np.flatnonzero(raw.notna().to_numpy())[0]) if raw.notna().any() else 0
        raise DataError(f"column {TIME!r} holds numbers, not timestamps (row {_file_rows(df, np.arange(len(df)) == i)[0]}: "
                        f"{raw.iloc[i]}); if they are epoch times, name their unit with --time-unit s|ms|us|ns")
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas' "could not infer format" chatter
            parsed = pd.to_datetime(raw, errors="coerce", format="mixed")
            if parsed.dtype == object:  # several UTC offsets (or offsets beside times without one)
                parsed = _offsets_to_utc(df, raw)
    bad = (parsed.isna() & raw.notna()).to_numpy() | raw.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        rows = _file_rows(df, bad)
        raise DataError(
            f"column {TIME!r}: {int(bad.sum())} value(s) are not timestamps, first at row {rows[0]}: "
            f"{raw.iloc[i]!r}"
        )
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return df.assign(**{TIME: parsed})


def _offsets_to_utc(df: pd.DataFrame, raw: pd.Series) -> pd.Series:
    """Timestamps with several UTC offsets, as UTC; refused in one line naming a row with an offset
    and one without when the column mixes both (their instant would be a guess)."""
    aware = raw.astype(str).str.strip().str.contains(r"(?:[+-]\d{2}:?\d{2}|Z)$").to_numpy()
    if not aware.all() and aware.any():
        a, n = int(np.flatnonzero(aware)[0]), int(np.flatnonzero(~aware)[0])
        rows = _file_rows(df, np.ones(len(df), dtype=bool))
        raise DataError(f"column {TIME!r} mixes timestamps with a UTC offset (row {rows[a]}: {raw.iloc[a]!r}) and "
                        f"without one (row {rows[n]}: {raw.iloc[n]!r}); give every timestamp an offset, or none")
    return pd.to_datetime(raw, errors="coerce", format="mixed", utc=True)


def _parse_numeric(df: pd.DataFrame, col: str) -> pd.DataFrame:
    raw = df[col]
    values = pd.to_numeric(raw, errors="coerce").astype("float64")
    bad = (values.isna() & raw.notna()).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"column {col!r}: {int(bad.sum())} non-numeric value(s), first at row "
            f"{_file_rows(df, bad)[0]} (series {df[ID].iloc[i]!r}): {raw.iloc[i]!r}"
        )
    inf = np.isinf(values.to_numpy())
    if inf.any():
        i = int(np.flatnonzero(inf)[0])
        raise DataError(
            f"column {col!r}: {int(inf.sum())} infinite value(s), first at row "
            f"{_file_rows(df, inf)[0]} (series {df[ID].iloc[i]!r}, ds {df[TIME].iloc[i]})"
        )
    return df.assign(**{col: values})


def _check_duplicates(df: pd.DataFrame) -> None:
    dup = df.duplicated([ID, TIME], keep=False).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        rows = _file_rows(df, dup)
        raise DataError(
            f"{int(dup.sum())} rows share a ({ID}, {TIME}) pair, first series {df[ID].iloc[i]!r} "
            f"at {df[TIME].iloc[i]} (rows {', '.join(map(str, rows[:4]))})"
        )


VOTERS = 500  # series whose own inferred frequency votes (evenly spread; every one is checked afterwards)


def infer_freq(df: pd.DataFrame) -> str:
    """The frequency of a sorted long frame: pandas' inference on a sample of series, else the
    commonest step."""
    votes: dict[str, int] = {}
    ids = df[ID].unique()
    sample = set(ids[np.linspace(0, len(ids) - 1, min(len(ids), VOTERS)).astype(np.int64)])
    for _, ds in df[df[ID].isin(sample)].groupby(ID, sort=False)[TIME]:
        if len(ds) >= 3:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pandas 3: "infer_freq will return an offset"
                f = pd.infer_freq(pd.DatetimeIndex(ds))
            if f is not None:
                f = getattr(f, "freqstr", f)
                votes[f] = votes.get(f, 0) + 1
    if votes:
        return max(votes, key=votes.get)
    steps = df.groupby(ID, sort=False)[TIME].diff().dropna()
    steps = steps[steps > pd.Timedelta(0)]
    if steps.empty:
        raise DataError("cannot infer a frequency: every series has fewer than two timestamps; pass freq")
    return pd.tseries.frequencies.to_offset(steps.mode().iloc[0]).freqstr


def _regularize_series(
    uid: str, g: pd.DataFrame, freq: str, fill: str
) -> tuple[pd.DataFrame, int]:
    grid = pd.date_range(g[TIME].iloc[0], g[TIME].iloc[-1], freq=freq)
    off = ~g[TIME].isin(grid).to_numpy()
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise DataError(
            f"series {uid!r}: timestamp {g[TIME].iloc[i]} (row {_file_rows(g, off)[0]}) is off the "
            f"{freq!r} grid that starts at {grid[0]}: irregular spacing"
        )
    out = g.drop(columns="_row", errors="ignore").set_index(TIME).reindex(grid)
    out.index.name = TIME
    value_cols = [c for c in out.columns if c != ID]
    missing = int(out[TARGET].isna().sum())
    if missing and fill == "error":
        first = out.index[out[TARGET].isna()][0]
        raise DataError(f"series {uid!r}: {missing} missing point(s), first at {first}, and fill='error'")
    if missing or out[value_cols].isna().any().any():
        if fill == "interpolate":
            out[value_cols] = out[value_cols].interpolate(method="time", limit_direction="both")
        elif fill == "ffill":
            out[value_cols] = out[value_cols].ffill().bfill()
        elif fill == "zero":
            out[value_cols] = out[value_cols].fillna(0.0)
    out[ID] = uid
    return out.reset_index(), missing


def _complete(df: pd.DataFrame, offset, min_length: int) -> np.ndarray:
    """Per row [N] of a frame sorted by series and time: whether its series already lies on a complete
    grid of a fixed step, every value present and at least `min_length` long, so that regularizing it
    would change nothing. Checked for all series at once (most files are like this); the others, and
    every series of a calendar frequency, go through `_regularize_series` one by one."""
    try:
        step = pd.Timedelta(offset).value
    except ValueError:  # months, business days...: no fixed step
        return np.zeros(len(df), dtype=bool)
    codes = pd.factorize(df[ID])[0]  # [N], non-decreasing
    t = df[TIME].to_numpy("datetime64[ns]").view(np.int64)
    first = np.r_[True, codes[1:] != codes[:-1]]
    gap = np.diff(t, prepend=t[:1]) != step
    gap[first] = False
    values = df[[c for c in df.columns if c not in (ID, TIME, "_row")]].to_numpy(np.float64)
    bad = gap | ~np.isfinite(values).all(axis=1)  # [N]
    ok = (np.bincount(codes, weights=bad) == 0) & (np.bincount(codes) >= min_length)  # [S]
    return ok[codes]


def _under_a_second(offset) -> bool:
    """Whether a fixed-length frequency is shorter than a second (calendar ones never are)."""
    try:
        return offset.nanos < 1_000_000_000
    except ValueError:  # months, business days...: not a fixed length
        return False


def _unusable(part: pd.DataFrame, missing: int, min_length: int) -> str | None:
    """Why a regularized series (`missing` of its y values were empty before filling) cannot be used:
    none of its y values was a number, so nothing could fill it but an invention; or it is shorter
    than `min_length`. None when it can."""
    if missing >= len(part) or not np.isfinite(part[TARGET].to_numpy(dtype=np.float64)).any():
        return f"none of its {len(part)} {TARGET} values is a number"
    if len(part) < min_length:
        return f"too short: {len(part)} points, needs at least {min_length}"
    return None


def validate(df: pd.DataFrame, cfg: IngestConfig = IngestConfig()) -> tuple[pd.DataFrame, IngestReport]:
    """Check and regularize a long frame (output of `to_long`); see the module docstring."""
    if df.empty:
        raise DataError("no rows to validate")
    if "_row" not in df.columns:  # long input: keep file row numbers for messages after sorting
        df = df.assign(_row=_file_rows(df, np.ones(len(df), dtype=bool)))
    df = parse_long(df)
    _check_duplicates(df)
    order = np.lexsort((df[TIME].to_numpy(), df[ID].to_numpy()))
    was_sorted = bool((order == np.arange(len(df))).all())
    if not was_sorted:
        df = df.iloc[order].reset_index(drop=True)
    freq = cfg.freq or infer_freq(df)
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except ValueError:
        raise DataError(f"unknown frequency {freq!r}") from None
    if cfg.freq is None and _under_a_second(offset):
        raise DataError(f"the inferred frequency {freq!r} is under a second: are the timestamps numbers read "
                        "in the wrong unit (--time-unit)? Pass --freq to use it anyway")
    out, filled, dropped = _regularize(df, freq, offset, cfg)
    covs = [c for c in out.columns if c not in (ID, TIME, TARGET)]
    out = out[[ID, TIME, TARGET, *covs]]
    report = IngestReport(
        n_series=int(out[ID].nunique()), n_rows=len(out), freq=freq, n_filled=filled,
        was_sorted=was_sorted, dropped=tuple(dropped),
    )
    return out, report


def _regularize(df: pd.DataFrame, freq: str, offset, cfg: IngestConfig) -> tuple[pd.DataFrame, int, list]:
    """Every usable series on its grid, gaps filled by the policy: the frame (series in id order), the
    number of filled points and the dropped series with their reasons."""
    done = _complete(df, offset, cfg.min_length)  # [rows] of series with nothing to regularize
    parts, filled, dropped = [df[done].drop(columns="_row", errors="ignore")], 0, []
    for uid, g in df[~done].groupby(ID, sort=False):
        part, n = _regularize_series(str(uid), g, freq, cfg.fill)
        reason = _unusable(part, n, cfg.min_length)
        if reason:
            if cfg.short == "error":
                raise DataError(f"series {uid!r} cannot be used: {reason}")
            warnings.warn(f"dropping series {uid!r}: {reason}", stacklevel=2)
            dropped.append((str(uid), reason))
            continue
        parts.append(part)
        filled += n
    if not sum(map(len, parts)):
        raise DataError(f"no usable series: {dropped[0][1]} (series {dropped[0][0]!r}"
                        + (f" and {len(dropped) - 1} more)" if len(dropped) > 1 else ")"))
    out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
    if len(parts) > 1:  # the series back in id order (each part is in time order)
        out = out.iloc[np.argsort(pd.Categorical(out[ID], categories=df[ID].unique()).codes, kind="stable")]
        out = out.reset_index(drop=True)
    return out, filled, dropped


def load(path: str | Path, cfg: IngestConfig = IngestConfig()) -> tuple[pd.DataFrame, IngestReport]:
    """Read, reshape and validate a file into the long format."""
    return validate(to_long(read_table(path), cfg), cfg)


# --------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Split:
    """Per-series split points in rows: train `[0, train_end)`, val `[train_end, val_end)`,
    test `[val_end, length)`. Validation and test inputs may reach back `lookback` rows."""

    ids: tuple[str, ...]
    lengths: np.ndarray  # [S]
    train_end: np.ndarray  # [S]
    val_end: np.ndarray  # [S]


def split_fractions(
    lengths: dict[str, int] | pd.Series, val: float = 0.1, test: float = 0.2
) -> Split:
    """Split every series by fractions of its own length (the last `test` part is the test set)."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DataError(f"val and test fractions must be in [0, 1) and sum below 1, got {val}, {test}")
    lengths = pd.Series(lengths)
    n = lengths.to_numpy().astype(np.int64)
    n_test = np.round(n * test).astype(np.int64)
    n_val = np.round(n * val).astype(np.int64)
    return Split(tuple(map(str, lengths.index)), n, n - n_test - n_val, n - n_test)
