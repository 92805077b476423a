"""Inputs and outputs at fsspec URLs: `file://` is a local path, anything else (here fsspec's
in-memory file system, `memory://`) is read by pandas through fsspec and written whole."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest

from forecasting.core import files, locations
from forecasting.core.data import read_table
from forecasting.core.errors import DataError


@pytest.fixture
def memfs():
    fs = fsspec.filesystem("memory")
    yield fs
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"unique_id": ["a"] * 5, "ds": pd.date_range("2024-01-01", periods=5, freq="h").astype(str),
                         "y": np.arange(5.0)})


@pytest.mark.parametrize(("given", "expected"), [
    ("data/x.csv", Path("data/x.csv")), ("file:///tmp/a%20b.csv", Path("/tmp/a b.csv")),
    ("FILE:///tmp/x.csv", Path("/tmp/x.csv")), ("s3://bucket/x.csv", "s3://bucket/x.csv"),
    ("memory://x/y.parquet", "memory://x/y.parquet"), (Path("/tmp/x.csv"), Path("/tmp/x.csv")),
])
def test_a_location_is_a_local_path_or_a_remote_url(given, expected):
    assert locations.resolve(given) == expected
    assert locations.is_remote(given) == isinstance(expected, str)


def test_a_remote_table_reads_as_the_same_local_file(memfs, tmp_path):
    df = _frame()
    for suffix in (".csv", ".parquet"):
        local = files.write_table(df, tmp_path / f"t{suffix}")
        memfs.put_file(str(local), f"/in/t{suffix}")
        pd.testing.assert_frame_equal(read_table(f"memory://in/t{suffix}"), read_table(local))
        pd.testing.assert_frame_equal(read_table(f"file://{local}"), read_table(local))


def test_a_missing_or_unreadable_remote_input_is_refused_naming_it(memfs):
    with pytest.raises(DataError, match=r"^file not found: memory://in/nothing.csv$"):
        read_table("memory://in/nothing.csv")
    memfs.mkdir("/in/folder.csv")
    memfs.pipe("/in/folder.csv/x", b"1")
    with pytest.raises(DataError, match=r"^not a file: memory://in/folder.csv$"):
        read_table("memory://in/folder.csv")
    with pytest.raises(DataError, match="nosuchproto://x/y.csv"):
        read_table("nosuchproto://x/y.csv")


def test_a_remote_output_is_written_whole_and_a_failed_write_keeps_the_old_one(memfs, monkeypatch):
    df = _frame()
    assert files.write_table(df, "memory://out/f.parquet") == "memory://out/f.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet("memory://out/f.parquet"), df)
    files.write_table(df, "memory://out/f.csv")
    pd.testing.assert_frame_equal(pd.read_csv("memory://out/f.csv"), df)

    def broken_move(*args, **kwargs):
        raise OSError("connection reset during the move")

    monkeypatch.setattr(type(memfs), "mv", broken_move)
    with pytest.raises(OSError, match="connection reset"):
        files.write_table(df.head(2), "memory://out/f.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet("memory://out/f.parquet"), df)  # the old object, whole
    assert sorted(memfs.ls("/out", detail=False)) == ["/out/f.csv", "/out/f.parquet"]  # no temporary left


def test_remote_outputs_are_checked_like_local_ones(tmp_path):
    with pytest.raises(DataError, match="unsupported extension '.txt'"):
        files.check_destination("memory://out/f.txt")
    with pytest.raises(DataError, match="dataset folder must be a local"):
        files.check_destination("memory://out/forecasts")
    with pytest.raises(DataError, match="it is the input file"):
        files.check_apart("memory://d/in.csv", ["memory://d/in.csv"])
    files.check_apart("memory://d/out.csv", ["memory://d/in.csv", tmp_path / "in.csv"], [tmp_path])
    with pytest.raises(DataError, match="it is the input file"):  # a file:// URL is the local file
        files.check_apart(f"file://{tmp_path}/in.csv", [tmp_path / "in.csv"])
