"""Bad names, interrupted writes, unreadable stores and empty parts are refused or cleaned up with
one clear error, before any work."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.core import datasets, files
from forecasting.core.data import check_name
from forecasting.core.errors import DataError, ForecastingError
from forecasting.pipeline import plan
from forecasting.pipeline import steps as pipeline
from forecasting.tuning.study import TuneConfig, open_study


@pytest.mark.parametrize("name", ["../../escape", "/abs/path/x", "a/b", "a b", "", ".hidden", "x" * 101, "a..b"])
def test_bad_names_are_refused_everywhere(name, tmp_path):
    with pytest.raises(DataError, match="letters, digits"):
        check_name(name)
    with pytest.raises(DataError):
        datasets.processed_path(tmp_path, name)
    with pytest.raises(DataError):
        plan.TrainJob(name, 24)


@pytest.mark.parametrize("name", ["etth1", "sales-2024", "m4.hourly", "A_b-1"])
def test_good_names_pass(name):
    assert check_name(name) == name


def test_cli_refuses_a_traversing_name_before_writing_anything(tmp_path):
    home, src = tmp_path / "home", tmp_path / "in.csv"
    pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2024-01-01", periods=50, freq="h"),
                  "y": np.arange(50.0)}).to_csv(src, index=False)
    before = set(tmp_path.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "ingest", str(src), "--name", "../../escape",
                           "--home", str(home)], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: dataset name")
    assert set(tmp_path.rglob("*")) == before and not home.exists()


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    out = tmp_path / "f.csv"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".f.csv.{dead}.abc123.tmp"
    live = tmp_path / f".f.csv.{os.getpid()}.def456.tmp"  # a write in progress in a living process
    other = tmp_path / ".g.csv.1.x.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"")
    files.write_table(pd.DataFrame({"a": [1]}), out)
    assert not stale.exists() and live.exists() and other.exists()
    assert pd.read_csv(out)["a"].tolist() == [1]


def test_unreadable_optuna_store_gives_one_error_naming_the_file(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    open_study("s", TuneConfig(storage=url))
    data = (tmp_path / "optuna.db").read_bytes()
    (tmp_path / "optuna.db").write_bytes(data[:5000])  # truncated
    with pytest.raises(ForecastingError, match=r"optuna.db cannot be opened .*move it away"):
        open_study("s", TuneConfig(storage=url))
    (tmp_path / "optuna.db").write_bytes(b"")  # empty: recreated, and said so
    assert open_study("s", TuneConfig(storage=url)).trials == []
    assert "is an empty file" in capsys.readouterr().err


def test_a_job_without_validation_cutoffs_or_test_windows_is_refused_before_any_run(make_sine_frame):
    df = make_sine_frame(n_series=2, length=20, seed=0)
    job = plan.TrainJob("tiny", 4, max_lookback=4)
    split = plan.make_split(df, job)
    with pytest.raises(DataError, match="validation part holds no backtest cutoff"):
        plan.check_job(df, "h", job, split)


def test_an_interval_level_the_validation_part_cannot_calibrate_is_refused_before_any_run(make_sine_frame):
    """95 % needs 19 validation windows per horizon step: 2 series x (20 rows - 12 + 1) = 18 is one short,
    80 % needs 4. The error names the level and what to change."""
    df = make_sine_frame(n_series=2, length=200, seed=0)
    job = plan.TrainJob("tiny", 12, max_lookback=24, levels=(80, 95))
    split = plan.make_split(df, job)
    assert (split.val_end - split.train_end).tolist() == [20, 20]
    with pytest.raises(DataError, match=r"--level 95: the validation part holds 18 forecast window\(s\) per horizon "
                                        r"step, 19 are needed"):
        plan.check_job(df, "h", job, split)
    plan.check_job(df, "h", plan.TrainJob("tiny", 12, max_lookback=24, levels=(80,)), split)


def test_nothing_is_registered_from_a_comparison_with_a_missing_score():
    job = plan.TrainJob("toy", 4)
    rows = [{"model": "gru", "mase": 0.9, "val_backtest_mase": 0.8},
            {"model": "seasonal_naive_24", "mase": float("nan"), "val_backtest_mase": 1.0}]
    with pytest.raises(ForecastingError, match="seasonal_naive_24: mase is not finite"):
        pipeline.check_comparison(rows, job)
    pipeline.check_comparison(rows[:1], job)


def test_an_ingest_killed_between_its_two_renames_is_refused_on_load(tmp_path):
    """New data beside the old record (what a SIGKILL between the Parquet's and the JSON's rename leaves):
    load_processed refuses it in one line instead of trusting the old record's frequency."""
    import pandas as pd

    from forecasting.core import datasets
    from forecasting.core.errors import DataError

    def frame(n: int, freq: str) -> Path:
        p = tmp_path / f"src-{freq}.csv"
        pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2024-01-01", periods=n, freq=freq),
                      "y": range(n)}).to_csv(p, index=False)
        return p

    path, _ = datasets.ingest(frame(48, "h"), "d", tmp_path)
    assert datasets.load_processed(tmp_path, "d")[1] == "h"
    record = path.with_suffix(".json").read_text()
    datasets.ingest(frame(200, "min"), "d", tmp_path)
    path.with_suffix(".json").write_text(record)  # the new Parquet, the old record
    with pytest.raises(DataError, match=r"dataset 'd': d.parquet and d.json disagree .* ingest it again"):
        datasets.load_processed(tmp_path, "d")


def test_more_workers_than_the_machine_can_run_are_refused_before_any_run(make_sine_frame, monkeypatch):
    """--workers 999 started 998 processes, each importing torch, until memory ran out (exit 137)."""
    from forecasting.core.errors import ForecastingError

    monkeypatch.setattr(plan, "usable_cpus", lambda: 2)
    df = make_sine_frame(n_series=2, length=400, seed=0)
    job = plan.TrainJob("tiny", 12, max_lookback=48, workers=999, device="cpu")
    split = plan.make_split(df, job)
    with pytest.raises(ForecastingError, match=r"--workers 999: this machine can run at most 4 \(2 per usable CPU\)"):
        plan.check_job(df, "h", job, split)
    plan.check_job(df, "h", plan.TrainJob("tiny", 12, max_lookback=48, workers=4, device="cpu"), split)  # fits


# --------------------------------------------------------------------------- stores created whole and once


def test_a_store_creation_that_fails_half_way_leaves_nothing_and_an_old_half_store_is_rebuilt(tmp_path, monkeypatch):
    """Disk full during MLflow's schema creation used to leave a half store that broke every later
    command ('table spans already exists'): the store is now built in a temporary file and renamed,
    and a half store found from before (older revision, no runs) is moved aside and rebuilt; one that
    holds runs is refused in one line."""
    import errno
    import sqlite3

    from forecasting.core.errors import DataError
    from forecasting.tracking import runs

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "mlruns" / "mlflow.db"
    real = runs._init_store

    def disk_full(path):
        path.write_bytes(b"SQLite format 3\0" + b"\0" * 100)  # part of a file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runs, "_init_store", disk_full)
    with pytest.raises(OSError, match="No space left"):
        runs.configure(tmp_path)
    assert not db.exists() and [p.name for p in db.parent.iterdir()] == [".mlflow.db.lock"]
    monkeypatch.setattr(runs, "_init_store", real)
    runs.configure(tmp_path)  # space again: created whole
    assert runs._whole_store(db)
    with sqlite3.connect(db) as con:  # as an interrupted upgrade leaves it: an older revision
        con.execute("UPDATE alembic_version SET version_num = '0584bdc529eb'")
    runs.configure(tmp_path)
    assert runs._whole_store(db) and (db.parent / "mlflow.db.incomplete").is_file()
    exp = runs.ensure_experiment("kept", tmp_path)
    runs.end_run(runs.start_run(exp, "a run"))
    with sqlite3.connect(db) as con:
        con.execute("UPDATE alembic_version SET version_num = '0584bdc529eb'")
    with pytest.raises(DataError, match=r"MLflow store .*mlflow.db is incomplete .* but holds data; move it away"):
        runs.configure(tmp_path)


def test_two_commands_starting_together_on_a_fresh_home_both_get_whole_stores(tmp_path):
    """Two processes creating the MLflow store and the Optuna storage of one fresh home at the same
    moment (before: 'UNIQUE constraint failed: alembic_version' for one of them)."""
    go = tmp_path / "go"
    code = textwrap.dedent(f"""
        import os, sys, time
        from forecasting.api.jobs import TuneConfig
        from forecasting.tracking import runs
        from forecasting.tuning.study import open_study
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        runs.configure({str(tmp_path)!r})
        runs.ensure_experiment("e", {str(tmp_path)!r})
        open_study("s", TuneConfig(storage="sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"))
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    time.sleep(4)  # all three are past their imports, waiting
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-800:] for _, err in outs]
    assert all(out.strip() == "ok" for out, _ in outs)
