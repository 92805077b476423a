"""An interrupted forecast leaves no partial output: `forecasting.core.files.write_table` writes to a
temporary file in the output folder and renames it, so the output path holds either nothing or a
complete file (the older one when there was one)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import flows_fixtures  # noqa: F401  (first: sets PREFECT_HOME before prefect is imported)
import pandas as pd
import pytest
from flows_fixtures import DATASET, REPO, subprocess_env

from forecasting.core.errors import DataError
from forecasting.core.files import write_table

pytest_plugins = ["flows_fixtures"]

OLD = "unique_id,ds,y_hat\nold,2020-01-01 00:00:00,1.0\n"


def forecasts(n: int = 1000) -> pd.DataFrame:
    return pd.DataFrame({"unique_id": [f"s{i % 7}" for i in range(n)],
                         "ds": pd.date_range("2024-01-01", periods=n, freq="h"), "y_hat": range(n)})


class InterruptedFrame(pd.DataFrame):
    """A frame whose writers put part of the file on disk, then get interrupted (Ctrl-C)."""

    @property
    def _constructor(self):
        return InterruptedFrame

    def to_csv(self, path, *args, **kwargs):
        Path(path).write_text("unique_id,ds,y_hat\ns0,2024-01-01")  # half a row
        raise KeyboardInterrupt

    def to_parquet(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1\x00\x01")  # the start of a Parquet file
        raise KeyboardInterrupt


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_interrupted_write_leaves_no_output(tmp_path, ext):
    out = tmp_path / f"forecast.{ext}"
    with pytest.raises(KeyboardInterrupt):
        write_table(InterruptedFrame(forecasts()), out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind either


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_interrupted_write_keeps_the_older_output(tmp_path, ext):
    out = tmp_path / f"forecast.{ext}"
    old = forecasts(5)
    write_table(old, out)
    before = out.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        write_table(InterruptedFrame(forecasts()), out)
    assert out.read_bytes() == before
    assert list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("error", [OSError("disk full"), ValueError("boom")])
def test_failed_write_keeps_the_older_output(tmp_path, monkeypatch, error):
    out = tmp_path / "forecast.csv"
    out.write_text(OLD)

    def fail(self, path, *args, **kwargs):
        Path(path).write_text("partial")
        raise error

    monkeypatch.setattr(pd.DataFrame, "to_csv", fail)
    with pytest.raises(type(error)):
        write_table(forecasts(), out)
    assert out.read_text() == OLD
    assert list(tmp_path.iterdir()) == [out]


def test_complete_write_replaces_the_older_output(tmp_path):
    out = tmp_path / "sub" / "forecast.parquet"
    write_table(forecasts(5), out)
    new = forecasts(50)
    assert write_table(new, out) == out
    pd.testing.assert_frame_equal(pd.read_parquet(out), new, check_dtype=False)
    assert list(out.parent.iterdir()) == [out]


def test_an_output_without_extension_is_a_parquet_dataset_replaced_whole(tmp_path):
    """No extension: a folder of part files, committed by a rename (an older one replaced, a killed
    writer's staging folder removed, a file in the way refused before anything is written)."""
    from forecasting.core import files

    out = tmp_path / "forecasts"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs: its staging folder is a killed command's
    stale = tmp_path / f".forecasts.{dead.pid}.abc.staging"
    stale.mkdir()
    assert write_table(forecasts(5), out) == out
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet"]
    staging = files.dataset_staging(out)  # the cluster path: parts written one by one, then committed
    for k, n in enumerate((3, 4)):
        write_table(forecasts(n), files.part_path(staging, k))
    (staging / ".part-00002.parquet.1.x.tmp").write_text("half")  # a killed worker's write, rerun since
    assert files.commit_dataset(staging, out) == out
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.concat([forecasts(3), forecasts(4)], ignore_index=True),
                                  check_dtype=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forecasts"]  # no staging, no old copy, no stale
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(DataError, match="a file is in the way"):
        write_table(forecasts(), tmp_path / "taken")


def test_unsupported_extension_writes_nothing(tmp_path):
    with pytest.raises(DataError, match="unsupported extension '.json'"):
        write_table(forecasts(), tmp_path / "forecast.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_ctrl_c_during_the_forecast_command_keeps_the_older_output(trained_home, tmp_path, monkeypatch,
                                                                   restore_environ, capsys):
    """Ctrl-C while `forecasting forecast` writes: exit 130, the old forecast intact, no temp file."""
    from flows.cli import main

    out = tmp_path / "forecast.csv"
    out.write_text(OLD)

    def interrupted(self, path, *args, **kwargs):
        Path(path).write_text("unique_id,ds,y_hat\ns0,2024")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", interrupted)
    rc = main(["forecast", f"{DATASET}-gru", "--input", str(trained_home.processed), "--output", str(out),
               "--home", str(trained_home.home)])
    assert rc == 130
    assert "interrupted" in capsys.readouterr().err
    assert out.read_text() == OLD
    assert list(tmp_path.iterdir()) == [out]


KILLED_WRITER = textwrap.dedent("""
    import sys
    import numpy as np, pandas as pd
    from forecasting.core.files import write_table
    n = 3_000_000
    df = pd.DataFrame({"unique_id": np.repeat(np.array([f"series-{i}" for i in range(1000)]), n // 1000),
                       "ds": pd.date_range("2020-01-01", periods=n, freq="min"), "y_hat": np.random.rand(n)})
    print("writing", flush=True)
    write_table(df, sys.argv[1])
    print("done", flush=True)
""")


@pytest.mark.slow
@pytest.mark.parametrize("old", [False, True], ids=["no-old-output", "old-output"])
def test_sigkill_while_writing_leaves_no_file_or_the_old_one(tmp_path, old):
    """SIGKILL cannot be caught: the rename never happens, so the output path is untouched. (The
    hidden temporary file `.<name>.*.tmp` is left behind; the next write does not use it.)"""
    out = tmp_path / "forecast.csv"
    if old:
        out.write_text(OLD)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out)], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        deadline = time.monotonic() + 60
        tmp = []
        while time.monotonic() < deadline:  # wait until the temporary file has data in it
            tmp = [p for p in tmp_path.iterdir() if p.name.startswith(".forecast.csv.") and p.stat().st_size > 0]
            if tmp or proc.poll() is not None:
                break
            time.sleep(0.01)
        assert tmp and proc.poll() is None, "the writer finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    if old:
        assert out.read_text() == OLD
    else:
        assert not out.exists()
    assert all(p.name.startswith(".forecast.csv.") and p.suffix == ".tmp" for p in tmp_path.iterdir() if p != out)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    import stat

    from forecasting.core.files import write_table

    old = os.umask(umask)
    try:
        path = write_table(pd.DataFrame({"a": [1]}), tmp_path / "f.csv")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_a_skipped_series_is_told_why_at_another_resolution_a_gap_or_a_missing_value():
    """Each skipped series gets its own reason: an input at another frequency than the model's says so
    (before: 'gaps, missing or non-finite values' for all three)."""
    from forecasting.api.forecaster import Forecaster, ForecasterConfig
    from forecasting.core.data import split_fractions
    from forecasting.core.training import TrainConfig
    from forecasting.families.recurrent import ModelConfig
    from tests.conftest import sine_frame

    df = sine_frame(n_series=4, length=300)
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.15, 0.15)
    f = Forecaster(ForecasterConfig(model=ModelConfig(lookback=24, horizon=6, hidden=8, layers=1), calendar=False,
                                    freq="h", train=TrainConfig(max_epochs=1, device="cpu")))
    f.fit(df, split)
    ids = sorted(df["unique_id"].unique())
    h = df.copy()
    half = h["unique_id"] == ids[0]
    h.loc[half, "ds"] = h.loc[half, "ds"].min() + (h.loc[half, "ds"] - h.loc[half, "ds"].min()) / 2  # 30 min apart
    h = h.drop(index=h.index[(h["unique_id"] == ids[1])][-5])  # a gap
    h.loc[h.index[(h["unique_id"] == ids[2])][-3], "y"] = float("nan")
    fc, skipped = f.predict(h)
    why = dict(skipped)
    assert why[ids[0]] == "its points are 30min apart but the model forecasts at h: resample it to h"
    assert why[ids[1]] == "gaps in the last 24 points (the model needs one every h)"
    assert why[ids[2]] == "missing or non-finite values in the last 24 points"
    assert fc["unique_id"].unique().tolist() == [ids[3]]


@pytest.mark.slow
def test_forecast_and_ingest_read_and_write_fsspec_urls_like_local_paths(trained_home, tmp_path, restore_environ):
    """The same commands with the history, the forecasts and the fan chart at URLs (fsspec's in-memory
    file system, in this process) give the local files' results (issue 21: data the workers can reach)."""
    import fsspec

    from flows.cli import main

    mem = fsspec.filesystem("memory")
    mem.put_file(str(trained_home.processed), "/in/syn.parquet")
    home = str(trained_home.home)
    local = tmp_path / "f.csv"
    assert main(["forecast", f"{DATASET}-gru", "--input", str(trained_home.processed), "--output", str(local),
                 "--level", "80", "--home", home]) == 0
    assert main(["forecast", f"{DATASET}-gru", "--input", "memory://in/syn.parquet", "--output", "memory://out/f.csv",
                 "--plot", "memory://out/f.png", "--level", "80", "--home", home]) == 0
    pd.testing.assert_frame_equal(pd.read_csv("memory://out/f.csv"), pd.read_csv(local))
    assert mem.cat_file("/out/f.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(mem.ls("/out", detail=False)) == ["/out/f.csv", "/out/f.png"]  # no temporary object left
    assert main(["ingest", f"file://{trained_home.csv}", "--name", "fromurl", "--home", home]) == 0
    assert main(["ingest", "memory://in/syn.parquet", "--name", "frommem", "--home", home]) == 0
    data = Path(home) / "data" / "processed"
    pd.testing.assert_frame_equal(pd.read_parquet(data / "fromurl.parquet"), pd.read_parquet(trained_home.processed))
    pd.testing.assert_frame_equal(pd.read_parquet(data / "frommem.parquet"), pd.read_parquet(trained_home.processed))
    mem.store.clear()


def test_parts_joined_into_one_parquet_file_equal_their_concatenation(tmp_path, make_sine_frame):
    """What the workers of a cluster forecast write (one part file each) joined into the one output
    file: the rows of every non-empty part, in part order, as writing the concatenated frame gives;
    an older output is replaced, and no temporary file is left."""
    from forecasting.core.files import join_parts, joins_parts, part_path

    frame = make_sine_frame(n_series=5, length=30).assign(y=lambda d: d["y"].astype("float32"))
    cuts = [frame.iloc[:40], frame.iloc[40:40], frame.iloc[40:101], frame.iloc[101:]]  # one part empty
    staging = tmp_path / "staging"
    staging.mkdir()
    for k, part in enumerate(cuts):
        part.to_parquet(part_path(staging, k), index=False)
    out = tmp_path / "f.parquet"
    write_table(frame.iloc[:3], out)  # an older output
    assert join_parts(staging, out) == out
    pd.testing.assert_frame_equal(pd.read_parquet(out), frame.reset_index(drop=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.parquet", "staging"]  # no temp file left
    assert joins_parts(out) and joins_parts(f"file://{out}")
    assert not joins_parts(tmp_path / "f.csv") and not joins_parts(tmp_path / "f")
    assert not joins_parts("memory://bucket/f.parquet")  # a remote output is written by the driver


def test_parts_are_joined_as_they_come_and_nothing_shows_before_the_commit(tmp_path, make_sine_frame):
    """The driver appends each part as soon as it is written: until the commit the output keeps its
    old content; a failure between parts leaves the old output and no temporary file."""
    from forecasting.core.files import PartJoin, part_path

    frame = make_sine_frame(n_series=4, length=25)
    cuts = [frame.iloc[:30], frame.iloc[30:70], frame.iloc[70:]]
    staging = tmp_path / "staging"
    staging.mkdir()
    out = tmp_path / "f.parquet"
    old = frame.iloc[:2].reset_index(drop=True)
    write_table(old, out)
    with PartJoin(out) as join:
        for k, part in enumerate(cuts):
            part.to_parquet(part_path(staging, k), index=False)  # a worker writes part k ...
            join.add(part_path(staging, k))  # ... and the driver appends it
            pd.testing.assert_frame_equal(pd.read_parquet(out), old)  # not yet in place
        join.commit()
    pd.testing.assert_frame_equal(pd.read_parquet(out), frame.reset_index(drop=True))
    with pytest.raises(RuntimeError), PartJoin(out) as join:
        join.add(part_path(staging, 0))
        raise RuntimeError("a later part failed")
    pd.testing.assert_frame_equal(pd.read_parquet(out), frame.reset_index(drop=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.parquet", "staging"]
    with pytest.raises(ValueError, match="no part with rows"), PartJoin(tmp_path / "g.parquet") as join:
        join.commit()
    assert not (tmp_path / "g.parquet").exists()
