"""A Prefect API server kept for the commands of one Prefect home; it ends itself when idle.

Started by `flows/server.py` as `python -m flows.keeper --port P --idle S --lease FILE --info FILE`,
in a session of its own. Commands hold a shared lock on the lease file while they run. Every few
seconds the keeper tries the lock exclusively: while it cannot (a command runs) it is busy; once
it has been free for `--idle` seconds, the keeper keeps the lock (a command arriving now waits,
then starts a fresh server), removes its address file and stops.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import threading
import time
from pathlib import Path


def _idle_watch(server, lease: Path, info: Path, idle: float) -> None:
    """Stop `server` once no command has held the lease for `idle` seconds."""
    free_since = time.monotonic()
    while not server.should_exit:
        time.sleep(max(0.2, min(2.0, idle / 4)))  # a lock attempt: cheap
        try:
            fd = os.open(lease, os.O_RDWR)
        except OSError:  # the Prefect home was removed (a temporary one): nobody can find this server
            server.should_exit = True
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a command holds it
            os.close(fd)
            free_since = time.monotonic()
            continue
        if time.monotonic() - free_since < idle:
            os.close(fd)  # releases the lock
            continue
        info.unlink(missing_ok=True)  # still holding the lock: no command can find this server now
        server.should_exit = True  # the lock goes when the process exits


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m flows.keeper", description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--idle", type=float, required=True, help="seconds without a command before stopping")
    p.add_argument("--lease", type=Path, required=True)
    p.add_argument("--info", type=Path, required=True)
    args = p.parse_args(argv)
    import uvicorn

    config = uvicorn.Config("prefect.server.api.server:create_app", factory=True, host="127.0.0.1",
                            port=args.port, log_level="error", lifespan="on")
    server = uvicorn.Server(config)
    threading.Thread(target=_idle_watch, args=(server, args.lease, args.info, args.idle), daemon=True).start()
    server.run()


if __name__ == "__main__":
    main()
