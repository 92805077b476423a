"""`--cluster`: a real Dask LocalCluster behind Prefect's Dask task runner (prefect-dask) gives the
same batch forecast as the single-process path: the same series, timestamps, skipped series and
reasons, and the same values up to float32 rounding (the parts are batched differently)."""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time

import flows_fixtures  # noqa: F401  (first: sets PREFECT_HOME before prefect is imported)
import numpy as np
import pandas as pd
import pytest
from flows_fixtures import DATASET

pytest_plugins = ["flows_fixtures"]
pytest.importorskip("prefect_dask")


@pytest.fixture(autouse=True)
def _environ(restore_environ):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [pytest.param(".csv", marks=pytest.mark.variant), ".parquet"])
def test_a_batch_forecast_on_a_local_cluster_equals_the_single_process_one(trained_home, tmp_path, capsys, suffix):
    """A CSV is read by the driver and shipped in parts; a long Parquet file's parts are read by the
    workers themselves (rows of whole series, across row groups): the same forecasts either way."""
    from flows.cli import main
    from forecasting.api import row_parts
    from forecasting.core.config import IngestConfig

    hist = pd.read_csv(trained_home.csv)
    short = hist[hist["unique_id"] == hist["unique_id"].iloc[0]].tail(3).assign(unique_id="short")
    src = tmp_path / f"history{suffix}"
    both = pd.concat([hist, short])
    both.to_csv(src, index=False) if suffix == ".csv" else both.to_parquet(src, index=False, row_group_size=97)
    assert (row_parts.plan(str(src), IngestConfig(), 4) is None) == (suffix == ".csv")
    outs = {}
    for name, extra in (("single", []), ("cluster", ["--cluster", "local:2"])):
        outs[name] = tmp_path / f"{name}.parquet"
        assert main(["forecast", f"{DATASET}-gru", "--input", str(src), "--output", str(outs[name]), "--level", "80",
                     "--home", str(trained_home.home), *extra]) == 0
    printed = capsys.readouterr().out
    assert printed.count("skipped series 'short'") == 2  # both paths name it, with the same reason
    single, cluster = (pd.read_parquet(p) for p in outs.values())
    assert list(cluster.columns) == list(single.columns) and len(cluster) == len(single) > 0
    pd.testing.assert_frame_equal(cluster[["unique_id", "ds"]], single[["unique_id", "ds"]])
    for col in ("y_hat", "y_hat-lo-80", "y_hat-hi-80"):
        np.testing.assert_allclose(cluster[col], single[col], rtol=1e-5, atol=1e-5)
    assert "short" not in set(cluster["unique_id"])


@pytest.mark.slow
def test_a_backtest_on_a_local_cluster_equals_the_single_process_one(trained_home, tmp_path, capsys):
    """The cutoffs' windows are forecast in parts on the workers; the frame (every series, cutoff and
    target, the model's and the baselines' columns, the interval columns) and the metrics are those
    of the single-process backtest."""
    from flows.cli import main

    outs = {}
    for name, extra in (("single", []), ("cluster", ["--cluster", "local:2"])):
        outs[name] = tmp_path / f"{name}.parquet"
        assert main(["backtest", DATASET, "--model", f"{DATASET}-gru@champion", "--windows", "3", "--level", "80",
                     "--output", str(outs[name]), "--home", str(trained_home.home), *extra]) == 0
    single, cluster = (pd.read_parquet(p) for p in outs.values())
    assert list(cluster.columns) == list(single.columns) and len(cluster) == len(single) > 0
    assert {"y_hat", "linear", "naive", "y_hat-lo-80"} <= set(single.columns)
    keys = ["unique_id", "ds", "cutoff", "y"]
    pd.testing.assert_frame_equal(cluster[keys], single[keys])
    assert single["cutoff"].nunique() == 3 and single["unique_id"].nunique() == trained_home.ingest["n_series"]
    for col in single.columns.drop(keys):
        np.testing.assert_allclose(cluster[col], single[col], rtol=1e-5, atol=1e-5, err_msg=col)
    assert capsys.readouterr().out.count(f"at 3 cutoff(s) over the end of {DATASET}") == 2


@pytest.mark.slow
def test_a_bad_value_a_worker_reads_is_one_line_and_nothing_is_written(trained_home, tmp_path, capsys):
    """The workers check their own rows: a non-number in the last part fails the command with the
    reader's one line (the file's row), and neither the dataset nor its staging folder is left."""
    from flows.cli import main

    hist = pd.read_csv(trained_home.csv).astype({"y": str})
    hist.loc[len(hist) - 5, "y"] = "n/a?"
    src = tmp_path / "bad.parquet"
    hist.to_parquet(src, index=False)
    code = main(["forecast", f"{DATASET}-gru", "--input", str(src), "--output", str(tmp_path / "out"),
                 "--home", str(trained_home.home), "--cluster", "local:2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    assert f"row {len(hist) - 5 + 2}" in err[0] and "'y'" in err[0], err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]


def _kill_a_busy_worker(client, pids: dict, killed: list, timeout: float = 180) -> None:
    """SIGKILL the first worker seen running a task (its nanny starts a new one; Dask reruns the task)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [a for a, tasks in client.processing().items() if tasks]
        if busy:
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed.append(busy[0])
            return
        time.sleep(0.02)


@pytest.mark.slow
def test_a_worker_killed_mid_part_loses_nothing(trained_home, tmp_path):
    """A worker killed while it forecasts a part: Dask runs the part again on a live worker, and the
    output (a Parquet dataset whose parts the workers write) equals the single-process forecast:
    every series once, in order, the same values."""
    from distributed import Client, LocalCluster

    from flows.cli import main

    hist = pd.read_csv(trained_home.csv)
    src = tmp_path / "many.parquet"  # enough series that a part is still running when the worker dies
    pd.concat([hist.assign(unique_id=hist["unique_id"] + f"-{k}") for k in range(300)]).to_parquet(src)
    base = ["forecast", f"{DATASET}-gru", "--input", str(src), "--home", str(trained_home.home)]
    assert main([*base, "--output", str(tmp_path / "single.parquet")]) == 0
    killed: list[str] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            Client(lc) as client:
        pids = client.run(os.getpid)  # {worker address: pid}
        killer = threading.Thread(target=_kill_a_busy_worker, args=(client, pids, killed), daemon=True)
        killer.start()
        code = main([*base, "--output", str(tmp_path / "cluster"), "--cluster", lc.scheduler_address])
        killer.join(timeout=5)
    assert killed and code == 0
    # the workers wrote the dataset's parts themselves: one file per part, nothing else, no staging left
    parts = sorted(p.name for p in (tmp_path / "cluster").iterdir())
    assert parts == [f"part-{k:05d}.parquet" for k in range(4)], parts
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    single, cluster = pd.read_parquet(tmp_path / "single.parquet"), pd.read_parquet(tmp_path / "cluster")
    pd.testing.assert_frame_equal(cluster[["unique_id", "ds"]], single[["unique_id", "ds"]])
    np.testing.assert_allclose(cluster["y_hat"], single["y_hat"], rtol=1e-5, atol=1e-5)


def test_window_parts_cover_every_row_once_in_order():
    from forecasting.core.evaluation import window_parts

    for n, parts in ((10, 3), (3, 8), (1, 1), (7, 1), (100, 4)):
        cut = window_parts(n, parts)
        rows = np.concatenate([np.arange(n)[s] for s in cut])
        np.testing.assert_array_equal(rows, np.arange(n))
        assert len(cut) == min(n, parts) and all(s.stop > s.start for s in cut)
        assert max(s.stop - s.start for s in cut) - min(s.stop - s.start for s in cut) <= 1


def test_parts_hold_whole_series_in_order_and_every_row_once():
    from forecasting.api.batch import partitions

    df = pd.DataFrame({"unique_id": np.repeat(["c", "a", "b", "d", "e"], 3), "ds": np.tile([1, 2, 3], 5),
                       "y": np.arange(15.0)})
    parts = partitions(df, 2)
    assert [p["unique_id"].unique().tolist() for p in parts] == [["c", "a", "b"], ["d", "e"]]
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), df)
    assert len(partitions(df, 99)) == 5 and len(partitions(df, 1)) == 1


def test_a_bad_cluster_option_is_the_options_error():
    from flows.cluster import cluster_spec

    for good in ("local", "local:4", "tcp://10.0.0.5:8786", "tcp://sched.example.org:8786"):
        assert cluster_spec(good) == good
    for bad in ("local:0", "remote", "tcp://host", "local:x", "http://h:1"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected local, local:N or tcp://host:port"):
            cluster_spec(bad)


def test_our_local_workers_run_without_dasks_statistical_profiler():
    """The cluster `--cluster local:N` starts (the task runner's own arguments): its workers have
    Dask's every-10-ms stack sampler off, and the rest of their configuration intact."""
    import dask
    from distributed import Client, LocalCluster

    from flows.cluster import task_runner

    runner = task_runner("local:1")
    with runner.cluster_class(**runner.cluster_kwargs) as lc, Client(lc) as client:
        assert isinstance(lc, LocalCluster)
        (callbacks,) = client.run(lambda dask_worker: sorted(dask_worker.periodic_callbacks)).values()
        (enabled,) = client.run(lambda: dask.config.get("distributed.worker.profile.enabled")).values()
        (admin,) = client.run(lambda: dask.config.get("distributed.admin.tick.interval")).values()
        (env,) = client.run(lambda: {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_",
                                                                    "OMP_NUM_THREADS")}).values()
    assert "profile" not in callbacks and "heartbeat" in callbacks and enabled is False
    assert admin == dask.config.get("distributed.admin.tick.interval")
    # The allocator settings of our own entry points (not Dask's 64 KiB trim threshold), one BLAS thread.
    assert env == {"MALLOC_TRIM_THRESHOLD_": str(2**31 - 1), "MALLOC_MMAP_MAX_": "0", "OMP_NUM_THREADS": "1"}
    assert dask.config.get("distributed.nanny.pre-spawn-environ")["MALLOC_TRIM_THRESHOLD_"] == 65536  # scoped


def test_a_local_cluster_starts_with_the_command_with_the_flows_imports_and_is_closed_after(tmp_path):
    """`started_early` starts the LocalCluster in a thread while the command goes on; the task runner
    hands prefect-dask that cluster (and stays picklable: Prefect ships it in every task's context);
    its workers imported the flow's module and MLflow's loaders before any task, keep their scratch
    space where they are told, and are gone after the block."""
    import multiprocessing
    import sys

    import cloudpickle
    from distributed import Client

    from flows.cluster import WORKER_IMPORTS, started_early, task_runner

    with started_early("local:1", ("flows.forecast",), str(tmp_path / "scratch")) as started:
        runner = cloudpickle.loads(cloudpickle.dumps(task_runner("local:1", started)))
        lc = runner.cluster_class(**runner.cluster_kwargs)  # what prefect-dask calls at the first task
        assert lc is started.result()
        with Client(lc) as client:
            (imported,) = client.run(lambda: [m for m in ("flows.forecast", *WORKER_IMPORTS)
                                              if m in sys.modules]).values()
            (scratch,) = client.run(lambda dask_worker: dask_worker.local_directory).values()
        assert imported == ["flows.forecast", *WORKER_IMPORTS]
        assert scratch.startswith(str(tmp_path / "scratch"))
    assert lc.status.name == "closed" and not multiprocessing.active_children()
    for no_cluster in (None, "tcp://127.0.0.1:8786"):
        with started_early(no_cluster) as started:
            assert started is None


def test_a_refused_forecast_on_a_local_cluster_is_one_line_and_leaves_no_worker(trained_home, tmp_path, capsys):
    """The cluster starts with the command, before the model is looked up: a missing model is still
    one line and a non-zero exit, and the workers started for nothing are stopped."""
    import multiprocessing

    from flows.cli import main

    code = main(["forecast", "no-such-model", "--input", str(trained_home.csv), "--output",
                 str(tmp_path / "out.csv"), "--home", str(trained_home.home), "--cluster", "local:1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "no-such-model" in err[0], err
    assert not multiprocessing.active_children() and not (tmp_path / "out.csv").exists()
