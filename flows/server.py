"""The Prefect API a command runs its flows against, started early and kept for the next command.

Without `PREFECT_API_URL`, a command needs a server of its own. Importing Prefect's server takes
about 5 s on a small machine, so a command does not wait for it twice:
  - it starts the server before importing its own libraries (the two start side by side), and
  - the server stays up for the next command of the same Prefect home (`<home>/.prefect` unless
    PREFECT_HOME says otherwise), ending itself after `FORECASTING_SERVER_IDLE` seconds (default
    600) in which no command used it (`flows/keeper.py`).

Each command holds a shared lock on `<prefect home>/server.lease` while it runs; the kept server
counts idle time only while it can take that lock exclusively, so it never ends under a running
command, and a killed command's lock goes with it. `FORECASTING_SERVER_IDLE=0` gives the old
behaviour: a temporary server with the kernel's parent-death signal set, ending with the command
however the command ends.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1
IDLE_ENV = "FORECASTING_SERVER_IDLE"
DEFAULT_IDLE = 600.0  # seconds a kept server waits for the next command
BOOT_TIMEOUT = 120.0  # a loaded machine can take a minute to import Prefect's server
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
              "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


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
    """The Prefect API this process already talks to (environment or active settings), if any.
    Prefect's settings are imported (1-2 s) only where a file could configure one."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if not _may_configure_api():
        return None
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def _may_configure_api() -> bool:
    """Whether a settings file Prefect reads (its profiles, a .env, prefect.toml or pyproject.toml in
    the working directory) mentions an API URL; without one, Prefect's answer is known to be none."""
    prefect_home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    for path in (prefect_home / "profiles.toml", Path(".env"), Path("prefect.toml"), Path("pyproject.toml")):
        with suppress(OSError, UnicodeDecodeError):
            text = path.read_text()
            if "PREFECT_API_URL" in text or ("[tool.prefect" in text and "api" in text):
                return True
    return "prefect" in sys.modules  # already imported: its settings may have been changed in-process


def idle_seconds() -> float:
    """How long a kept server waits for the next command ($FORECASTING_SERVER_IDLE; 0: not kept)."""
    text = os.environ.get(IDLE_ENV, "").strip()
    try:
        value = float(text) if text else DEFAULT_IDLE
    except ValueError:
        value = -1.0
    if not value >= 0:
        from forecasting.core.errors import ForecastingError

        raise ForecastingError(f"{IDLE_ENV}={text!r}: expected seconds >= 0 (0: a server per command)")
    return value


@dataclass
class Pending:
    """A server on its way up (or already answering): where it answers, and what this command owns."""

    url: str
    proc: subprocess.Popen | None = None  # a temporary server this command must stop
    lease: int | None = None  # the shared lock held on a kept server while the command runs
    ready: bool = False
    pid: int | None = None

    def wait(self, timeout: float = BOOT_TIMEOUT) -> str:
        """Block until the server answers; its API URL."""
        if not self.ready:
            alive = (lambda: self.proc.poll() is None) if self.proc else (lambda: _pid_alive(self.pid))
            if not _answers(alive, f"{self.url}/health", timeout):
                self.close()
                raise RuntimeError(f"the Prefect server ({self.url}) did not answer within {timeout:.0f} s")
            self.ready = True
        return self.url

    def close(self) -> None:
        """Stop a temporary server; release a kept one (it stays for the next command)."""
        if self.proc is not None:
            stop(self.proc)
        if self.lease is not None:
            os.close(self.lease)  # releases the shared lock
            self.lease = None


def start_server(debug: bool = False) -> Pending:
    """A temporary server on a free local port that dies with this process (not waited for)."""
    port = free_port()
    out = None if debug else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
                            env={**os.environ, **SERVER_ENV}, stdout=out, stderr=out, preexec_fn=_die_with_parent)
    return Pending(f"http://127.0.0.1:{port}/api", proc=proc)


def _answers(alive, health: str, timeout: float) -> bool:
    """Poll `health` every 0.1 s until it answers 200 (True) or `timeout` passes (False). One plain-HTTP
    client for every poll: a new client per poll builds an SSL context each time (seconds in all)."""
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2, verify=False, trust_env=False) as client:
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError("the Prefect server exited while starting (rerun with --debug; its log is "
                                   "server.log in the Prefect home)")
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


def _pid_alive(pid: int | None) -> bool:
    """A process with this id exists and has not exited (a zombie not yet reaped does not count)."""
    from forecasting.core.files import pid_alive

    if not pid or not pid_alive(pid):
        return False
    with suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return True


# --------------------------------------------------------------------------- the kept server


def _files(prefect_home: Path) -> tuple[Path, Path, Path]:
    """Its address file, the lease commands hold while they run, and the lock starters take."""
    return prefect_home / "server.json", prefect_home / "server.lease", prefect_home / "server.start.lock"


def _read_info(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text())
        return info if isinstance(info, dict) and {"pid", "url", "started"} <= set(info) else None
    except (OSError, ValueError):
        return None


def _usable(info: dict | None) -> bool:
    """A recorded server that is alive, and either answers or is young enough to be still starting."""
    if not info or not _pid_alive(info["pid"]):
        return False
    return time.time() - info["started"] < BOOT_TIMEOUT or _answers_once(info["url"])


def _answers_once(url: str) -> bool:
    import httpx

    try:
        with httpx.Client(timeout=1, verify=False, trust_env=False) as client:
            return client.get(f"{url}/health").status_code == 200
    except httpx.HTTPError:
        return False


def kept_server(prefect_home: Path, idle: float) -> Pending:
    """The home's kept server, found or started (not waited for); the command holds its lease."""
    import fcntl

    prefect_home.mkdir(parents=True, exist_ok=True)
    info_file, lease_file, start_lock = _files(prefect_home)
    lease = os.open(lease_file, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lease, fcntl.LOCK_SH)  # waits while an idle server shuts down (it holds the lock then)
    info = _read_info(info_file)
    if not _usable(info):
        lock = os.open(start_lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time; the others find its server
            info = _read_info(info_file)
            if not _usable(info):
                info = _spawn_keeper(prefect_home, idle)
        finally:
            os.close(lock)
    return Pending(info["url"], lease=lease, pid=info["pid"])


def _spawn_keeper(prefect_home: Path, idle: float) -> dict:
    """Start `flows.keeper` in a session of its own (it outlives the command) and record it."""
    from forecasting.core.files import write_json

    info_file, lease_file, _ = _files(prefect_home)
    port = free_port()
    with open(prefect_home / "server.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flows.keeper", "--port", str(port), "--idle", str(idle),
                                 "--lease", str(lease_file), "--info", str(info_file)],
                                env={**os.environ, **SERVER_ENV}, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True, cwd=prefect_home)
    info = {"pid": proc.pid, "url": f"http://127.0.0.1:{port}/api", "started": time.time()}
    write_json(info, info_file)
    return info


def begin(debug: bool = False) -> Pending:
    """Find or start the server this command will use, without waiting for it: the caller imports
    its libraries meanwhile and calls `Pending.wait` just before the first flow."""
    existing = configured_api()
    if existing:
        return Pending(existing, ready=True)
    idle = idle_seconds()
    if idle == 0 or not hasattr(os, "fork"):
        return start_server(debug)
    return kept_server(Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect"), idle)


# Set by a user, Prefect's heartbeat setting is theirs to keep; else a short command runs without.
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"


@contextmanager
def prefect_api(debug: bool = False, pending: Pending | None = None, heartbeats: bool = True) -> Iterator[str]:
    """Prefect's API setting pointed at the server (`pending`, else one found or started now)
    inside the block; a temporary server stops after it, a kept one stays for the next command.

    `heartbeats=False` turns Prefect's flow-run heartbeats off in the block (unless the user set
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY): the heartbeat thread sleeps in 1 s steps and every flow joins
    it on exit, which costs a command of a few seconds up to 1 s. Heartbeats only feed an automation
    that marks silent runs crashed, which matters for a long training run, not for an ingest."""
    pending = pending or begin(debug)
    try:
        url = pending.wait()
        from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        updates = {PREFECT_API_URL: url}
        if not heartbeats and HEARTBEAT_ENV not in os.environ:
            updates[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
        with temporary_settings(updates=updates):
            try:
                yield url
            finally:
                _flush_logs()  # run logs and events still queued go to the server before it stops
    finally:
        pending.close()


def _flush_logs() -> None:
    """Send what Prefect's background workers still hold (run logs, events) while the server is up."""
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        for worker in (APILogWorker, EventsWorker):
            worker.drain_all(timeout=10, at_exit=False)
    except Exception:  # noqa: BLE001 - best effort: losing a log line must not fail the command
        pass
