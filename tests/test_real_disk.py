"""A disk that is really full and a home that is really read-only: small tmpfs mounts, not mocked
errors. Skipped where this process may not mount (not root, or a container without the right)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.core import files

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "ETTh1.csv"


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Callable[[str, str], Path]]:
    """`mount(name, size)`: a fresh tmpfs of `size` (e.g. '600k') at tmp_path/name, unmounted after."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()[:200]}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))},
           "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "flows.cli", *argv], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


def _fill(folder: Path, leave: int) -> Path:
    """A file that takes all the free space of `folder`'s disk but `leave` bytes."""
    st = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(b"\0" * max(st.f_bavail * st.f_frsize - leave, 0))
    return filler


def test_ingest_into_a_home_on_a_full_disk_is_refused_in_one_line_before_anything_is_written(tmpfs):
    disk = tmpfs("full", "600k")  # before: Prefect's database filled it, then "the Prefect server exited"
    home = disk / "home"
    proc = _cli("--home", str(home), "ingest", str(DATA), "--name", "e", "--format", "wide")
    assert proc.returncode == 4
    line = _one_error_line(proc)
    assert "MB free on the disk of the home" in line and str(home) in line and line.endswith("(free some space)")
    assert not home.exists() and [p.name for p in disk.iterdir()] == []


def test_every_writing_command_refuses_a_read_only_home_in_one_line_and_writes_nothing(tmpfs, tmp_path):
    disk = tmpfs("ro", "8m")  # before: "the Prefect API ... failed: 500 Internal Server Error"
    home = disk / "home"
    (home / "data").mkdir(parents=True)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    out = tmp_path / "f.csv"
    for argv in (("ingest", str(DATA), "--name", "e", "--format", "wide"),
                 ("train", "e", "--horizon", "24", "--trials", "1", "--max-epochs", "1"),
                 ("forecast", "e-gru", "--input", str(DATA), "--format", "wide", "--output", str(out)),
                 ("backtest", "e", "--model", "e-gru@champion", "--output", str(out))):
        proc = _cli("--home", str(home), *argv)
        assert proc.returncode == 4, argv
        assert _one_error_line(proc) == f"error: the home is on a read-only file system: {home} (the folder is read-only)"
    assert not out.exists() and [p.name for p in home.iterdir()] == ["data"]
    proc = _cli("--home", str(home), "models")  # reading the registry needs no write
    assert proc.returncode == 0 and "no models registered" in proc.stdout


def test_a_forecast_into_a_read_only_folder_is_refused_before_the_model_is_loaded(tmpfs, tmp_path):
    disk = tmpfs("out", "1m")
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    proc = _cli("--home", str(tmp_path / "home"), "forecast", "nosuchmodel", "--input", str(DATA),
                "--format", "wide", "--output", str(disk / "f.csv"))
    assert proc.returncode == 4  # before: the model was loaded and the forecasts made, then the write failed
    assert _one_error_line(proc) == (f"error: the output's folder is on a read-only file system: {disk} "
                                     "(the folder is read-only)")


def test_a_prefect_home_on_a_full_disk_is_named(tmpfs, tmp_path):
    disk = tmpfs("prefect", "600k")
    proc = _cli("--home", str(tmp_path / "home"), "ingest", str(DATA), "--name", "e", "--format", "wide",
                env={"PREFECT_HOME": str(disk / "p")})
    assert proc.returncode == 4
    assert "MB free on the disk of PREFECT_HOME" in _one_error_line(proc) and not (tmp_path / "home").exists()


def test_a_table_write_that_fills_the_disk_leaves_the_old_file_and_no_temp(tmpfs):
    disk = tmpfs("write", "2m")
    path = disk / "f.csv"
    old = pd.DataFrame({"y": [1.0, 2.0]})
    files.write_table(old, path)
    big = pd.DataFrame({"y": np.random.default_rng(0).random(400_000)})  # about 8 MB of CSV
    with pytest.raises(OSError) as err:
        files.write_table(big, path)
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in disk.iterdir()) == ["f.csv"]
    pd.testing.assert_frame_equal(pd.read_csv(path), old)


def test_a_store_creation_that_really_fills_the_disk_leaves_nothing_and_succeeds_once_space_is_freed(
        tmpfs, monkeypatch):
    """The reported case: MLflow's schema creation hit 'database or disk is full', and every later
    command then died on 'table spans already exists'. Here SQLite really runs out of space (the
    free-space check is switched off, so the creation starts), then space is freed."""
    from forecasting.tracking import runs

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    disk = tmpfs("store", "4m")
    filler = _fill(disk, leave=96 * 1024)  # a new MLflow store needs about 1 MB
    monkeypatch.setattr(files, "check_writable", lambda *a, **k: None)
    with pytest.raises(Exception, match="disk is full|No space left"):
        runs.configure(disk)
    db = disk / "mlruns" / "mlflow.db"
    assert not db.exists() and [p.name for p in db.parent.iterdir()] == [".mlflow.db.lock"]
    filler.unlink()
    runs.configure(disk)
    assert runs._whole_store(db)
    runs.end_run(runs.start_run(runs.ensure_experiment("after", disk), "a run"))
