"""Start-up: wall time of `forecasting --help`, `ingest` of the bundled file and `forecast` with a
registered model, each a fresh process, on an idle machine and on a loaded one.

Each command runs `--repeats` times in one home. Server modes:
  - "kept": the default. The first ingest starts the home's Prefect server (and creates its
    database); the later commands find it running.
  - "per command": FORECASTING_SERVER_IDLE=0. Every command starts and stops a temporary server.
  - `--compare REV`: the same commands with the code of REV (for example the commit before the
    change), which started a temporary server per command.
A tiny model (1 trial, 1 epoch) is trained first in each home, untimed, so that `forecast` has a
champion. "Loaded": one busy process per usable CPU, and a minute for the load average to show it.
Every command runs with one torch thread (`OMP_NUM_THREADS=1`).

    python benchmarks/startup.py [--quick] [--out DIR] [--repeats N] [--compare REV]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from pipeline import worktree  # noqa: E402
from threads import spin  # noqa: E402

NAME = "startup"
TARGETS = {"help": 1.0, "ingest": 5.0, "forecast": 5.0}  # seconds, idle machine (issue 22)


def _env(src: Path, home: Path, idle: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "FORECASTING_"))}
    env.update(PYTHONPATH=str(src), OMP_NUM_THREADS="1", PREFECT_HOME=str(home / ".prefect"))
    if idle is not None:
        env["FORECASTING_SERVER_IDLE"] = idle
    return env


def _cli(src: Path, home: Path, idle: str | None, *argv: str) -> float:
    """Wall seconds of one `forecasting` command in a fresh interpreter (it must succeed)."""
    cmd = [sys.executable, "-m", "flows.cli", "--home", str(home), *argv]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=src, env=_env(src, home, idle), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} failed: {r.stderr[-2000:]}")
    return wall


def _stop_kept(home: Path) -> None:
    """End the home's kept server (the next mode starts from nothing)."""
    import json

    info = home / ".prefect" / "server.json"
    if info.exists():
        try:
            os.kill(json.loads(info.read_text())["pid"], 15)
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(1)


def measure(src: Path, idle: str | None, repeats: int) -> dict:
    """Every command `repeats` times in a fresh home with the code at `src`."""
    data = str(src / "data" / "ETTh1.csv")
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        home = Path(tmp)
        ingest = ("ingest", data, "--name", "e", "--format", "wide")
        times = {"help": [_cli(src, home, idle, "--help") for _ in range(repeats)],
                 "ingest": [_cli(src, home, idle, *ingest) for _ in range(repeats)]}
        _cli(src, home, idle, "train", "e", "--horizon", "24", "--models", "gru", "--trials", "1",
             "--max-epochs", "1", "--max-train-windows", "256", "--max-val-windows", "256", "--level")
        out = str(home / "f.csv")
        times["forecast"] = [_cli(src, home, idle, "forecast", "e-gru", "--input", data, "--format", "wide",
                                  "--output", out) for _ in range(repeats)]
        _stop_kept(home)
    return {cmd: {"seconds": [round(t, 2) for t in ts], "first": round(ts[0], 2),
                  "median_after_first": round(statistics.median(ts[1:] or ts), 2)} for cmd, ts in times.items()}


def scenario(name: str, busy: int, args) -> dict:
    """Every server mode with `busy` spinning processes running (0: as the machine is)."""
    procs = [mp.Process(target=spin, daemon=True) for _ in range(busy)]
    for p in procs:
        p.start()
    try:
        if busy and not args.quick:
            time.sleep(65)  # the 1-minute load average needs about a minute to show them
        load = C.loadavg()
        modes = {"kept": measure(C.REPO, None, args.repeats)}
        if not args.quick:
            modes["per command"] = measure(C.REPO, "0", args.repeats)
        if args.compare:
            with worktree(args.compare) as src:
                modes[f"code {args.compare}"] = measure(src, None, args.repeats)
    finally:
        for p in procs:
            p.terminate()
    return {"scenario": name, "spinning_processes": busy, "loadavg": load, "modes": modes}


def render(res: dict) -> str:
    rows = [[s["scenario"], str(s["loadavg"]), mode, cmd, f"{m[cmd]['first']:.1f}",
             f"{m[cmd]['median_after_first']:.1f}", f"{TARGETS[cmd]:.0f}"]
            for s in res["scenarios"] for mode, m in s["modes"].items() for cmd in TARGETS]
    return ("## Start-up\n\n" + C.conditions(res) + f"\nWall seconds of each command in a fresh process, "
            f"{res['repeats']} runs per command in one home: the first (a new Prefect database and server in "
            "\"kept\" mode) and the median of the others. One torch thread. Targets are for an idle "
            "machine.\n\n" + C.table(["machine", "load (1/5/15 min)", "server", "command", "first s",
                                      "median after first s", "target s"], rows))


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="runs per command (default 3; 2 under --quick)")
    p.add_argument("--compare", help="also measure the code of this git revision (a temporary worktree)")
    p.add_argument("--scenarios", nargs="+", choices=("idle", "loaded"), default=["idle", "loaded"])
    args = p.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 3)
    if args.quick:  # a smoke run: the default mode on the machine as it is
        args.scenarios = ["idle"]
    from forecasting.core.cpus import usable_cpus

    run = C.Run(NAME, args, {"repeats": args.repeats, "compare": args.compare})
    res = run.finish({"repeats": args.repeats, "targets": TARGETS, "scenarios": [
        scenario(s, 0 if s == "idle" else usable_cpus(), args) for s in args.scenarios]})
    C.write(args.out, NAME, res, render(res))
    print(render(res))
    return res


if __name__ == "__main__":
    main()
