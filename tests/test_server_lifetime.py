"""The temporary Prefect server a command starts dies with the command, even under `kill -9`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        out += [int(c) for c in text.split()]
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(")")[-1].split()[0] != "Z"  # a zombie has exited


def _ingest_command(tmp_path: Path, make_sine_frame) -> tuple[list[str], dict[str, str]]:
    """`forecasting ingest` of a small file into a fresh home, with no Prefect API configured."""
    src = tmp_path / "in.csv"
    make_sine_frame(n_series=2, length=200).to_csv(src, index=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    cmd = [sys.executable, "-m", "flows.cli", "ingest", str(src), "--name", "x", "--home", str(tmp_path / "home")]
    return cmd, env


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_temporary_prefect_server_dies_with_a_killed_command(tmp_path, make_sine_frame):
    cmd, env = _ingest_command(tmp_path, make_sine_frame)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    try:
        deadline = time.monotonic() + 120
        while server is None and time.monotonic() < deadline:
            for child in _children(proc.pid):
                if "uvicorn" in Path(f"/proc/{child}/cmdline").read_text(errors="replace"):
                    server = child
            time.sleep(0.1)
        assert server is not None, "the command started no server"
        time.sleep(1.0)  # let it come up
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(server), "the temporary server outlived its killed command"
    finally:
        if proc.poll() is None:
            proc.kill()
        if server is not None and _alive(server):
            os.kill(server, signal.SIGKILL)


@pytest.mark.slow
def test_a_command_without_a_configured_api_runs_on_its_own_server(tmp_path, make_sine_frame):
    cmd, env = _ingest_command(tmp_path, make_sine_frame)
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ingested 2 series" in r.stdout
    assert "Starting temporary server" not in r.stderr  # not Prefect's own, unkillable one
    assert (tmp_path / "home" / "data" / "processed" / "x.parquet").exists()
