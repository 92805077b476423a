"""The whole pipeline's time: `forecasting demo` run twice in a fresh home, and once with older code.

For each run: wall seconds, CPU seconds (the demo process and its children), the seconds inside
training steps (every trial's `train_seconds` from the Optuna studies, pruned trials' epochs included
where the code records them (from 2026-12-01; older code, such as a `--compare` reference, counted
completed trials only, so its ratio reads higher than it was), plus the final refits'
`train_seconds` when they trained rather than loaded a trial's fit), and so the ratio of the whole
run to its training steps; trials finished per CPU-hour, and the best validation loss per family
(the accuracy they bought). The second run repeats the first on unchanged data in the same home:
the ratio of its wall time to the first's is what repeated work costs. `--compare REV` runs the same
demo with the code of git revision REV (a temporary worktree, the same virtualenv), the reference
for trials per CPU-hour at equal accuracy.

The budget is smaller than the demo's default (`--trials`, `--max-epochs`; recorded) so that three
runs fit in minutes on two cores; every run uses one torch thread.

    python benchmarks/pipeline.py [--quick] [--out DIR] [--trials N] [--max-epochs N] [--compare REV]
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "pipeline"
GOALS = {"total_to_training": 1.2, "second_to_first": 0.25, "trials_per_cpu_hour_gain": 1.5}


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


@functools.cache
def takes_threads(src: Path) -> bool:
    """Whether the demo of source tree `src` has `--threads` (older code does not)."""
    help_text = subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--help"], cwd=src, capture_output=True,
                               text=True, env={**os.environ, "PYTHONPATH": str(src)}).stdout
    return "--threads" in help_text


def run_demo(src: Path, home: Path, args, threads: int = 1) -> dict:
    """`forecasting demo` from source tree `src` in `home`: wall and CPU seconds and its output's tail.
    `threads` torch threads: `--threads N` where the demo takes it, else OMP_NUM_THREADS=N (older code)."""
    cmd = [sys.executable, "-m", "flows.cli", "demo", "--home", str(home), "--trials", str(args.trials),
           "--max-epochs", str(args.max_epochs), *(["--threads", str(threads)] if takes_threads(src) else [])]
    if args.quick:
        cmd += ["--max-train-windows", "256", "--max-val-windows", "256"]
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cpu0, t0 = children_cpu(), time.perf_counter()
    r = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if r.returncode != 0:
        raise SystemExit(f"demo failed ({src}): {(r.stderr or r.stdout)[-2000:]}")
    return {"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "home": str(home)}


def study_record(home: Path) -> dict:
    """Per study: finished trials, their training seconds and the best validation loss."""
    import optuna

    url = f"sqlite:///{home / 'mlruns' / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = {}
    for s in optuna.get_all_study_summaries(url):
        study = optuna.load_study(study_name=s.study_name, storage=url)
        done = [t for t in study.trials if t.state.name == "COMPLETE"]
        out[s.study_name] = {"trials": len(done), "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
                             "train_seconds": sum(t.user_attrs.get("train_seconds", 0.0) for t in study.trials),
                             "best_val_loss": min((t.value for t in done), default=None)}
    return out


def final_seconds(home: Path, since_ms: int) -> float:
    """Training seconds of the final refits logged since `since_ms` (0 where a trial's fit was loaded)."""
    con = sqlite3.connect(home / "mlruns" / "mlflow.db")
    rows = con.execute("SELECT m.run_uuid, m.key, m.value FROM metrics m JOIN runs r ON r.run_uuid = m.run_uuid "
                       "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'kind' AND t.value = 'final' "
                       "WHERE m.key IN ('train_seconds', 'loaded_fits') AND r.start_time >= ?", (since_ms,)).fetchall()
    con.close()
    by: dict[str, dict] = {}
    for run, key, value in rows:
        by.setdefault(run, {})[key] = value
    return sum(v.get("train_seconds", 0.0) for v in by.values() if not v.get("loaded_fits"))


def measured(src: Path, home: Path, args, before: dict | None = None) -> dict:
    """One demo run and what it spent in training steps (trials new since `before`, and refits)."""
    since = int(time.time() * 1000)
    run = run_demo(src, home, args)
    studies = study_record(home)
    prior = (before or {}).get("studies", {})
    trials = sum(s["trials"] - prior.get(k, {}).get("trials", 0) for k, s in studies.items())
    trial_s = sum(s["train_seconds"] - prior.get(k, {}).get("train_seconds", 0.0) for k, s in studies.items())
    training = trial_s + final_seconds(home, since)
    return {**run, "studies": studies, "new_trials": trials, "training_seconds": round(training, 1),
            "total_to_training": run["wall_seconds"] / training if training else None,
            "trials_per_cpu_hour": 3600 * trials / run["cpu_seconds"] if trials else 0.0}


@contextmanager
def worktree(rev: str):
    """A temporary checkout of `rev` (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="pipeline-rev-"))
    subprocess.run(["git", "-C", str(C.REPO), "worktree", "add", "--detach", "-f", str(path), rev], check=True,
                   capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(C.REPO), "worktree", "remove", "--force", str(path)], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def compare_run(args) -> dict | None:
    """The first run of the same demo with the code of `--compare`."""
    if not args.compare:
        return None
    with worktree(args.compare) as src, tempfile.TemporaryDirectory() as home:
        return {"rev": args.compare, **measured(src, Path(home), args)}


def render(res: dict) -> str:
    first, second, ref, g = res["first"], res["second"], res.get("compare"), res["goals"]
    named = [("first run", first), ("second run, unchanged data", second)] + ([(f"first run, code {ref['rev']}", ref)]
                                                                             if ref else [])
    rows = [[name, f"{r['wall_seconds']:.0f}", f"{r['cpu_seconds']:.0f}", f"{r['training_seconds']:.0f}",
             C.fmt(r["total_to_training"], 2), str(r["new_trials"]), f"{r['trials_per_cpu_hour']:.0f}",
             ", ".join(f"{k.rsplit('-', 1)[-1]} {v['best_val_loss']:.4f}" for k, v in r["studies"].items())]
            for name, r in named]
    goals = (f"Total / training steps {C.fmt(first['total_to_training'], 2)} (target ≤ {GOALS['total_to_training']}: "
             f"{C.verdict(g['total_to_training'])}); second run / first {res['second_to_first']:.2f} (target ≤ "
             f"{GOALS['second_to_first']}: {C.verdict(g['second_to_first'])})")
    if ref:
        goals += (f"; trials per CPU-hour {C.fmt(res['trials_gain'], 2)}x those of {ref['rev']} (target ≥ "
                  f"{GOALS['trials_per_cpu_hour_gain']}: {C.verdict(g['trials_per_cpu_hour_gain'])})")
    return ("## Pipeline time\n\n" + C.conditions(res)
            + f"\n`forecasting demo` at {res['budget']['trials']} trials x {res['budget']['max_epochs']} epochs per "
            "family, one torch thread, in a fresh home; then again in the same home.\n\n"
            + C.table(["run", "wall s", "CPU s", "in training steps s", "total / training", "new trials",
                       "trials per CPU-hour", "best validation loss"], rows) + "\n" + goals + ".\n")


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=None, help="trials per family (default 4; 2 under --quick)")
    p.add_argument("--max-epochs", type=int, default=None, help="epochs per trial (default 4; 1 under --quick)")
    p.add_argument("--compare", help="git revision whose demo is the reference (e.g. the last release)")
    args = p.parse_args(argv)
    args.trials, args.max_epochs = args.trials or (2 if args.quick else 4), args.max_epochs or (1 if args.quick else 4)
    C.set_threads(args.threads)
    run = C.Run(NAME, args, {"trials": args.trials, "max_epochs": args.max_epochs, "threads": 1})
    with tempfile.TemporaryDirectory() as home:
        first = measured(C.REPO, Path(home), args)
        second = measured(C.REPO, Path(home), args, first)
    ref = compare_run(args)
    gain = (first["trials_per_cpu_hour"] / ref["trials_per_cpu_hour"]) if ref and ref["trials_per_cpu_hour"] else None
    goals = {"total_to_training": first["total_to_training"] <= GOALS["total_to_training"],
             "second_to_first": second["wall_seconds"] / first["wall_seconds"] <= GOALS["second_to_first"],
             "trials_per_cpu_hour_gain": None if gain is None else gain >= GOALS["trials_per_cpu_hour_gain"]}
    res = run.finish({"first": first, "second": second, "compare": ref, "trials_gain": gain, "goals": goals,
                      "second_to_first": second["wall_seconds"] / first["wall_seconds"]})
    C.write(args.out, NAME, res, render(res))
    print(render(res))
    return res


if __name__ == "__main__":
    main()
