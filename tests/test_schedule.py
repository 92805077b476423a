"""Deployments on schedules: the cron deployments the `serve` command builds, and a
scheduled run fired by a real `prefect server start` (the temporary server a plain flow call
starts has no scheduler, so this is the only way to see a schedule fire)."""

from __future__ import annotations

import json
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
from flows_fixtures import PREFECT_EXE, free_port, subprocess_env, synthetic_frame, write_csv

pytest_plugins = ["flows_fixtures"]


def cron_of(deployment) -> list[str]:
    return [s.schedule.cron for s in deployment.schedules]


def test_build_deployments_gives_ingest_train_forecast_on_their_crons(tmp_path):
    from flows.deployments import ServeConfig, build_deployments

    home = tmp_path / "home"
    cfg = ServeConfig(source=str(tmp_path / "etth1.csv"), dataset="etth1", horizon=24, home=str(home),
                      format="wide", trials=3)
    deps = build_deployments(cfg)
    assert [(d.name, d.flow_name) for d in deps] == [
        ("etth1-ingest", "ingest"), ("etth1-train", "train"), ("etth1-gru-forecast", "forecast")]
    assert [cron_of(d) for d in deps] == [["0 1 * * *"], ["0 2 * * 0"], ["0 3 * * *"]]  # daily, weekly, daily
    ingest, train, forecast = (d.parameters for d in deps)
    assert ingest == {"source": str(tmp_path / "etth1.csv"), "name": "etth1", "home": str(home),
                      "cfg": {"format": "wide"}}
    assert set(train) == {"job", "home"} and train["home"] == str(home)
    job = train["job"]  # the whole TrainJob as JSON, rebuilt by the flow
    assert (job["dataset"], job["horizon"], job["tune"]["n_trials"], job["tune"]["max_epochs"]) == ("etth1", 24, 3, 20)
    json.dumps(job)  # a deployment parameter must be JSON
    assert forecast == {"model_name": "etth1-gru", "home": str(home),
                        "input": str(home / "data" / "processed" / "etth1.parquet"),
                        "output": str(home / "data" / "forecasts" / "etth1-gru.parquet"), "levels": [80, 95]}
    assert list(job["levels"]) == [80, 95]  # the scheduled train calibrates the intervals the forecast writes


def test_build_deployments_takes_the_given_crons_and_families(tmp_path):
    from flows.deployments import Schedules, ServeConfig, build_deployments

    cfg = ServeConfig(source="x.csv", dataset="d", horizon=6, home=str(tmp_path), forecast_models=("gru", "lstm"))
    deps = build_deployments(cfg, Schedules("*/5 * * * *", "0 0 1 * *", "30 6 * * 1-5"))
    assert [d.name for d in deps] == ["d-ingest", "d-train", "d-gru-forecast", "d-lstm-forecast"]
    assert [cron_of(d) for d in deps] == [["*/5 * * * *"], ["0 0 1 * *"], ["30 6 * * 1-5"], ["30 6 * * 1-5"]]
    assert deps[3].parameters["model_name"] == "d-lstm"


# --------------------------------------------------------------------------- a real server

SERVE = textwrap.dedent("""
    # The `forecasting serve` deployments, with the ingest one on a 5 s interval instead of its
    # daily cron (same flow and parameters), served by this process against PREFECT_API_URL.
    import json, sys
    from prefect import serve
    from flows.deployments import ServeConfig, build_deployments
    from flows.ingest import ingest_flow

    cfg = ServeConfig(**json.loads(sys.argv[1]))
    deps = build_deployments(cfg)
    deps[0] = ingest_flow.to_deployment(name=deps[0].name, interval=5, parameters=deps[0].parameters)
    serve(*deps, limit=1)
""")

TERMINAL_BAD = {"FAILED", "CRASHED", "CANCELLED"}


def stop(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the process group this test started (the process and its children), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftover children (flow-run processes, uvicorn)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


@pytest.fixture
def prefect_server(tmp_path):
    """`prefect server start` on a free port with its own PREFECT_HOME; yields the API URL."""
    import httpx

    port = free_port()
    log = tmp_path / "server.log"
    env = subprocess_env(
        PREFECT_HOME=str(tmp_path / "server-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2", PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS="2", PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS="5",
        PREFECT_LOGGING_LEVEL="INFO")
    for k in ("PREFECT_API_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL"):
        env.pop(k, None)
    with open(log, "w") as f:
        proc = subprocess.Popen([str(PREFECT_EXE), "server", "start", "--host", "127.0.0.1", "--port", str(port),
                                 "--no-ui"], env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 150
        while True:
            assert proc.poll() is None, f"prefect server exited:\n{tail(log)}"
            assert time.monotonic() < deadline, f"prefect server not healthy in time:\n{tail(log)}"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield url
    finally:
        stop(proc)


@pytest.mark.slow
def test_a_scheduled_ingest_run_completes_on_a_real_server(prefect_server, tmp_path):
    import httpx

    home = tmp_path / "home"
    csv = write_csv(tmp_path / "raw.csv", synthetic_frame(n_series=2, length=100))
    cfg = {"source": str(csv), "dataset": "sched", "horizon": 12, "home": str(home), "trials": 1}
    log = tmp_path / "serve.log"
    env = subprocess_env(PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path / "serve-home"),
                         PREFECT_RUNNER_POLL_FREQUENCY="2", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    with open(log, "w") as f:
        # Run from a folder outside the checkout, as a user would: the deployments' entrypoints are
        # relative to the working directory.
        serve = subprocess.Popen([sys.executable, "-c", SERVE, json.dumps(cfg)], cwd=tmp_path, env=env,
                                 stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        api = httpx.Client(base_url=prefect_server, timeout=30)
        deadline = time.monotonic() + 150
        ingest_dep, runs = None, []
        while time.monotonic() < deadline:
            assert serve.poll() is None, f"serve exited:\n{tail(log)}"
            try:
                deps = api.post("/deployments/filter", json={}).json()
                by_name = {d["name"]: d for d in deps}
                ingest_dep = by_name.get("sched-ingest")
                runs = api.post("/flow_runs/filter", json={
                    "deployments": {"id": {"any_": [ingest_dep["id"]]}}}).json() if ingest_dep else []
            except httpx.TransportError:  # a busy server (its SQLite, a loaded machine) answers the next poll
                time.sleep(1)
                continue
            if ingest_dep:
                states = {r["state_type"] for r in runs}
                bad = [r for r in runs if r["state_type"] in TERMINAL_BAD]
                assert not bad, f"{bad[0]['state']}\n{tail(log)}"
                if "COMPLETED" in states:
                    break
            time.sleep(1)
        else:
            pytest.fail(f"no scheduled ingest run completed in time; runs: "
                        f"{[(r['name'], r['state_type']) for r in runs]}\n{tail(log)}")

        done = [r for r in runs if r["state_type"] == "COMPLETED"]
        assert done[0]["auto_scheduled"] is True  # created by the server's scheduler, not by hand
        assert done[0]["parameters"]["source"] == str(csv)
        assert {"sched-ingest", "sched-train", "sched-gru-forecast"} <= set(by_name)
        schedules = {n: [s["schedule"] for s in by_name[n]["schedules"]] for n in by_name}
        assert schedules["sched-ingest"][0]["interval"] == 5
        assert schedules["sched-train"][0]["cron"] == "0 2 * * 0"
        assert schedules["sched-gru-forecast"][0]["cron"] == "0 3 * * *"

        processed = home / "data" / "processed" / "sched.parquet"
        assert processed.exists()
        df = pd.read_parquet(processed)
        assert len(df) == 200 and sorted(df["unique_id"].unique()) == ["s0", "s1"]
    finally:
        stop(serve)
