"""A temporary Prefect API server for one command, which dies with the command.

Prefect starts its own temporary server when no API is configured, as a child process that
outlives a `kill -9` of its parent and keeps listening. This starts the same server (uvicorn
on Prefect's app factory, UI off) with the kernel's parent-death signal set, so it ends with
the command however the command ends.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: no parent-death signal; `stop` still ends the server
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configured_api() -> str | None:
    """The Prefect API this process already talks to (environment or active settings), if any."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def start_server(debug: bool = False, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Start the server on a free local port and wait until it answers; returns it and its API URL."""
    port = free_port()
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
           "PREFECT__SERVER_FINAL": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    out = None if debug else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
                            env=env, stdout=out, stderr=out, preexec_fn=_die_with_parent)
    url = f"http://127.0.0.1:{port}/api"
    if not _answers(proc, f"{url}/health", timeout):
        stop(proc)
        raise RuntimeError(f"the temporary Prefect server did not answer within {timeout:.0f} s")
    return proc, url


def _answers(proc: subprocess.Popen, health: str, timeout: float) -> bool:
    """Poll `health` every 0.1 s until it answers 200 (True) or `timeout` passes (False). One plain-HTTP
    client for every poll: a new client per poll builds an SSL context each time (seconds in all)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2, verify=False, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the temporary Prefect server exited with code {proc.returncode}")
            try:
                if client.get(health).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    return False


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def prefect_api(debug: bool = False) -> Iterator[str]:
    """The configured Prefect API, or a temporary server tied to this process for the duration
    (Prefect's API setting points at it inside the block only)."""
    existing = configured_api()
    if existing:
        yield existing
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    proc, url = start_server(debug)
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _flush_logs()  # run logs and events still queued go to the server before it stops
    finally:
        stop(proc)


def _flush_logs() -> None:
    """Send what Prefect's background workers still hold (run logs, events) while the server is up."""
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        for worker in (APILogWorker, EventsWorker):
            worker.drain_all(timeout=10, at_exit=False)
    except Exception:  # noqa: BLE001 - best effort: losing a log line must not fail the command
        pass
