"""Smoke tests of the scale benchmarks (`cluster.py`, `scaleout.py`), each on a tiny budget (`--quick`)
into a temporary folder; apart from test_benchmarks_smoke.py so that `make test`'s two processes can
run the two files side by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_benchmarks_smoke import _bench_quick, slow_bench


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FORECASTING_SLOW_BENCH") != "1",
                    reason="the cluster benchmark's smoke run (~95 s) runs with FORECASTING_SLOW_BENCH=1, outside "
                           "CI's 15-minute budget; tests/test_cluster.py runs the cluster paths on a real LocalCluster")
def test_benchmark_cluster_quick(tmp_path):
    """benchmarks/cluster.py --quick: one batch forecast on local:1 and one on local:2, into a file."""
    res = _bench_quick("cluster.py", "cluster", tmp_path)
    assert list(res["modes"]) == ["local:1", "local:2"]  # quick: the ratio's two modes once
    assert res["budget"]["series"] == 2000 and res["ratio_dataset"] is None
    for mode in res["modes"].values():
        (run,) = mode["runs"]
        assert run["wall_seconds"] > 0 and run["model_seconds"] > 0
    walls = {k: v["median_wall_seconds"] for k, v in res["modes"].items()}
    assert res["ratio"] == pytest.approx(walls["local:1"] / walls["local:2"], rel=1e-2)
    assert "| local:2 |" in (tmp_path / "cluster.md").read_text()


@pytest.mark.slow
@pytest.mark.postgres
@slow_bench
def test_benchmark_scaleout_quick(tmp_path):
    """benchmarks/scaleout.py --quick: 1 and 2 tuning workers on fresh PostgreSQL databases."""
    psycopg2 = pytest.importorskip("psycopg2")
    server = "postgresql://postgres@127.0.0.1:5432"
    try:
        psycopg2.connect(f"{server}/postgres", connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable on 127.0.0.1:5432: {str(exc).strip()[:200]}")
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(repo / "benchmarks" / "scaleout.py"), "--quick", "--out", str(tmp_path),
                        "--postgres", server], capture_output=True, text=True, timeout=900, cwd=repo)
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads((tmp_path / "scaleout.json").read_text())
    md = (tmp_path / "scaleout.md").read_text()
    assert res["quick"] is True and "QUICK MODE" in md and "| workers |" in md
    for key in ("date", "machine", "device", "versions", "seed", "budget", "params", "runs", "ratio"):
        assert key in res, key
    assert res["machine"]["cpu_count"] >= 1 and res["device"]["type"] in ("cpu", "cuda")
    for lib in ("torch", "optuna", "mlflow", "sqlalchemy", "psycopg2"):
        assert res["versions"][lib] not in (None, "", "not installed"), lib
    assert [(run["runner"], run["workers"]) for run in res["runs"]] == [("processes", 1), ("processes", 2),
                                                                        ("dask", 1), ("dask", 2)]
    for run in res["runs"]:
        assert run["trials"] >= res["budget"]["trials"] and run["trials_per_hour"] > 0
        assert sum(run["trials_per_worker"]) == run["trials"]
    for i, runner in ((0, "processes"), (2, "dask")):
        tph = [r["trials_per_hour"] for r in res["runs"][i:i + 2]]
        assert res["ratios"][runner][0] == pytest.approx(tph[1] / tph[0], rel=1e-2)
    assert res["ratio"] == res["ratios"]["processes"][0] and "| dask | 2 |" in md
