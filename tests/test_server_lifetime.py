"""The Prefect server a command starts: kept for the next command of the same Prefect home and
ended by itself once idle (never under a running command); with FORECASTING_SERVER_IDLE=0, a
temporary server that dies with its command, even under `kill -9`."""

from __future__ import annotations

import json
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


def _ingest_command(tmp_path: Path, make_sine_frame, idle: str) -> tuple[list[str], dict[str, str]]:
    """`forecasting ingest` of a small file into a fresh home, with no Prefect API configured and
    a server kept for `idle` seconds."""
    src = tmp_path / "in.csv"
    make_sine_frame(n_series=2, length=200).to_csv(src, index=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               FORECASTING_SERVER_IDLE=idle)
    cmd = [sys.executable, "-m", "flows.cli", "ingest", str(src), "--name", "x", "--home", str(tmp_path / "home")]
    return cmd, env


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_temporary_prefect_server_dies_with_a_killed_command(tmp_path, make_sine_frame):
    cmd, env = _ingest_command(tmp_path, make_sine_frame, idle="0")
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
def test_a_kept_server_serves_the_next_command_and_ends_itself_once_idle(tmp_path, make_sine_frame):
    # Kept 3 s after the last command: the second command arrives sooner and reuses it, although
    # it then runs for longer than that (imports and the flow take seconds): the server never ends
    # under a running command. Once no command holds its lease for 3 s, it stops and says so.
    cmd, env = _ingest_command(tmp_path, make_sine_frame, idle="3")
    info = tmp_path / "prefect" / "server.json"
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "ingested 2 series" in first.stdout and "Starting temporary server" not in first.stderr
    pid = json.loads(info.read_text())["pid"]
    try:
        second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        assert json.loads(info.read_text())["pid"] == pid, "the second command started a server of its own"
        assert _alive(pid)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(pid), "the kept server did not end after its idle time"
        assert not info.exists()
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert (tmp_path / "home" / "data" / "processed" / "x.parquet").exists()


def test_a_bad_idle_setting_is_one_line(tmp_path, make_sine_frame):
    cmd, env = _ingest_command(tmp_path, make_sine_frame, idle="soon")
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: FORECASTING_SERVER_IDLE='soon': expected seconds >= 0 (0: a server per command)"
    assert not (tmp_path / "home" / "data" / "processed").exists()


@pytest.mark.slow
def test_a_kept_server_whose_prefect_home_was_removed_ends(tmp_path):
    # A temporary Prefect home (a test's, a CI job's) removed with its server still kept: nothing can
    # reach that server any more, so it ends at its next look at its lease instead of after its idle time.
    import shutil

    from flows.server import free_port

    home = tmp_path / "prefect"
    home.mkdir()
    (home / "server.lease").touch()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "flows.keeper", "--port", str(free_port()), "--idle", "600",
                             "--lease", str(home / "server.lease"), "--info", str(home / "server.json")],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        assert proc.poll() is None, "the keeper ended before its home was removed"
        shutil.rmtree(home)
        proc.wait(timeout=60)  # raises if it is still running a minute later
    finally:
        if proc.poll() is None:
            proc.kill()
