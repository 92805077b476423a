"""Shared plumbing of the benchmark scripts: options, data location, run metadata, output files.

Each benchmark writes `<out>/<name>.json` (numbers plus the conditions they were measured
under) and `<out>/<name>.md`, a Markdown rendering of that JSON made by the script's own
`render()` so that `report.py` can regenerate every table from the JSON files alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_DATA = REPO.parent / "shared" / "data"


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="tiny slice and budget, for smoke tests (numbers are meaningless)")
    p.add_argument("--out", type=Path, default=RESULTS,
                   help=f"folder for <name>.json and <name>.md (default {RESULTS.relative_to(REPO)})")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                   help="folder holding ett/ and m4/ (default ../shared/data relative to the repository)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: on a shared 2-core machine more threads "
                        "spin against other processes and slow recurrent training down many times)")
    return p


def require(data_dir: Path, *relpaths: str) -> list[Path]:
    """Paths of the data files a benchmark reads; exits with a clear message when one is missing."""
    paths = [Path(data_dir) / r for r in relpaths]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        sys.exit(
            "error: benchmark data not found: " + ", ".join(str(p) for p in missing) + "\n"
            f"The benchmarks read the shared data folder (default {DEFAULT_DATA}); "
            "pass --data-dir DIR pointing at a folder with ett/ETTh1.csv and m4/Hourly-*.csv "
            "(ETTh1: zhouhaoyi/ETDataset; M4 Hourly and its scores: the M4 competition repository Mcompetitions/M4-methods)."
        )
    return paths


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(int(n), 1))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git(*args: str) -> str | None:
    """Read-only git queries (commit, dirty state); None outside a checkout."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def sha256_file(path: Path) -> str | None:
    """Hex SHA-256 of a file's bytes; None when it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def running_script() -> Path | None:
    """The file of the script being run (`__main__`, else `sys.argv[0]`); None in an interactive session."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    for cand in (main, sys.argv[0] if sys.argv else None):
        if cand and Path(cand).is_file() and Path(cand).suffix == ".py":
            return Path(cand).resolve()
    return None


RESULTS_DIR = "benchmarks/results/"


def code_state(script: Path | None = None) -> dict:
    """The code a result was measured with: commit, whether the work tree differs from it
    (modified tracked files and untracked, not ignored, files both count; not the files under
    benchmarks/results/, the benchmarks' own outputs, which earlier seeds of a run write into the
    same tree), and the SHA-256 of the benchmark script itself, which identifies it even when the
    tree was dirty."""
    script = Path(script).resolve() if script else running_script()
    status = _git("status", "--porcelain", "--untracked-files=all")
    # "XY path" lines; `_git` strips the output, so the first line may have lost a leading blank of XY
    lines = [line for line in (status.splitlines() if status else [])
             if not line[2:].lstrip().startswith(RESULTS_DIR)]
    untracked = sum(1 for line in lines if line.startswith("??"))
    try:
        rel = str(script.relative_to(REPO)) if script else None
    except ValueError:
        rel = str(script)
    return {"commit": _git("rev-parse", "--short", "HEAD"), "dirty": bool(lines),
            "modified": len(lines) - untracked, "untracked": untracked,
            "script": rel, "script_sha256": sha256_file(script) if script else None}


def versions(*extra: str) -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("forecasting", "torch", "numpy", "pandas", *extra):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": _memory_gb(),
    }


def device() -> dict:
    import torch

    if torch.cuda.is_available():
        name, kind = torch.cuda.get_device_name(0), "cuda"
    else:
        name, kind = _cpu_model(), "cpu"
    return {"type": kind, "name": name, "torch_threads": torch.get_num_threads()}


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


class Run:
    """Metadata of one benchmark run; `finish()` adds the wall time and end load."""

    def __init__(self, name: str, args: argparse.Namespace, budget: dict, extra_versions: tuple[str, ...] = (),
                 script: Path | None = None):
        self.name, self.args, self.t0 = name, args, time.perf_counter()
        self.meta = {
            "benchmark": name,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": bool(args.quick),
            "seed": args.seed,
            "budget": budget,
            "machine": machine(),
            "device": device(),
            "versions": versions(*extra_versions),
            "code": code_state(script),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "loadavg_start": loadavg(),
        }

    def finish(self, results: dict) -> dict:
        return {**self.meta, "loadavg_end": loadavg(),
                "wall_seconds": round(time.perf_counter() - self.t0, 1), **results}


def write(out: Path, name: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    """Write `<name>.json` and `<name>.md` into `out` (created if needed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / f"{name}.json", out / f"{name}.md"
    js.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    md.write_text(markdown)
    return js, md


def _jsonable(v):
    import numpy as np

    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


# --------------------------------------------------------------------------- Markdown


def fmt(v, digits: int = 3) -> str:
    """Numbers for tables: fixed decimals below 1000, thousands separators above; None as a dash."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:  # NaN
            return "–"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}f}"
    return str(v)


def table(headers: list[str], rows: list[list]) -> str:
    head = "| " + " | ".join(headers) + " |"
    sep = "|" + "|".join("---" for _ in headers) + "|"
    body = ["| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |" for row in rows]
    return "\n".join([head, sep, *body]) + "\n"


def conditions(res: dict) -> str:
    """One paragraph naming when, where and with what a result was measured."""
    m, d, v = res["machine"], res["device"], res["versions"]
    libs = ", ".join(f"{k} {val}" for k, val in v.items())
    commit = code_summary(res.get("code") or {})
    return (
        f"Measured {res['date']} on {m['platform']} ({m['cpu_model']}, {m['cpu_count']} CPUs, "
        f"{m.get('memory_gb')} GB), device {d['type']} ({d['name']}), torch threads {d['torch_threads']}; "
        f"{libs}; code {commit}; seed {res['seed']}; wall time {fmt(res['wall_seconds'], 0)} s; "
        f"load average (1/5/15 min) {res.get('loadavg_start')} at start, {res.get('loadavg_end')} at end"
        f"{'; QUICK MODE (smoke test, numbers meaningless)' if res.get('quick') else ''}.\n"
    )


def script_hash(code: dict, n: int = 12) -> str:
    """The first `n` hex digits of the script's SHA-256, or "not recorded" (results older than the field)."""
    h = code.get("script_sha256")
    return h[:n] if h else "not recorded"


def code_summary(code: dict) -> str:
    """Commit, dirty state and script hash in words; older results lack some fields and say so."""
    commit = code.get("commit") or "–"
    if code.get("dirty"):
        if "untracked" in code:
            commit += f" (uncommitted changes: {code.get('modified', 0)} modified, {code['untracked']} untracked files)"
        else:  # recorded before untracked files were counted
            commit += " (uncommitted changes to tracked files)"
    elif "untracked" not in code and code:
        commit += " (untracked files not checked)"
    name = Path(code["script"]).name if code.get("script") else "script"
    return f"{commit}; {name} sha256 {script_hash(code)}"


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("**met**" if met else "**missed**")


# --------------------------------------------------------------------------- ETTh1

# The standard borders (Informer / LTSF-Linear loaders): train [0, 8640), val [8640, 11520),
# test [11520, 14400); rows from 14400 on are not used.
ETTH1_BORDERS = (8640, 11520, 14400)
ETTH1_QUICK_BORDERS = (1200, 1600, 2000)


def etth1_frame(data_dir: Path, rows: int, column: str = "OT", dataset: str = "ETTh1"):
    """ETTh1 (or `dataset`, e.g. ETTh2) column `column` (rows [0, rows)) as a long frame with
    unique_id = the column name."""
    import pandas as pd

    (path,) = require(data_dir, f"ett/{dataset}.csv")
    raw = pd.read_csv(path, nrows=rows)
    return pd.DataFrame({"unique_id": column, "ds": pd.to_datetime(raw["date"]),
                         "y": raw[column].astype("float64")})


def etth1_split(borders: tuple[int, int, int], column: str = "OT"):
    """The benchmark split of one ETTh1 series as a `forecasting.core.data.Split`."""
    import numpy as np

    from forecasting.core.data import Split

    train_end, val_end, length = borders
    return Split((column,), np.array([length]), train_end=np.array([train_end]), val_end=np.array([val_end]))


def tuned_study(df, split, base, family: str, name: str, prior: dict, space, args, storage_dir: Path, cache=None):
    """One Optuna study in SQLite under `storage_dir`, its first trial the fixed `prior`, then TPE
    with the median pruner (with `cache`, a `FitCache`, each finished trial keeps its fit there, as in
    `train`); returns (TuneResult, seconds, trial states)."""
    from forecasting.tuning.objective import tune
    from forecasting.tuning.study import TuneConfig, open_study

    tcfg = TuneConfig(n_trials=args.trials, max_epochs=args.max_epochs, timeout=args.study_timeout,
                      storage=f"sqlite:///{Path(storage_dir) / 'optuna.db'}", seed=args.seed, pruner="median")
    open_study(name, tcfg).enqueue_trial(prior)
    t0 = time.perf_counter()
    result = tune(df, split, base, family, name, tcfg, space=space, cache=cache)
    seconds = time.perf_counter() - t0
    return result, seconds, [t.state.name.lower() for t in result.study.get_trials(deepcopy=False)]



# --------------------------------------------------------------------------- statistical rows (statsforecast)

# forecasting.stats.predictors' model names and the names the tables show.
STAT_LABELS = {"mstl": "MSTL", "autoets": "AutoETS", "autotheta": "AutoTheta"}
AHEAD = {"better": "yes", "worse": "no", "tie": "tie"}  # S.compare of ours against a statistical row


@contextmanager
def timed() -> Iterator[dict]:
    """Fills the yielded dict with the CPU (`process_time`, every thread of this process) and wall seconds
    of the block when it ends."""
    out: dict = {}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        yield out
    finally:
        out.update(cpu_seconds=round(time.process_time() - cpu0, 2), wall_seconds=round(time.perf_counter() - wall0, 2))


def read_cache(path: Path) -> dict:
    """A JSON cache file's content ({} when there is none yet)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def write_cache(path: Path, cache: dict) -> None:
    """Write a JSON cache file whole (through a temporary file, so an interrupted run leaves the old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(cache, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)


def stat_meta() -> dict:
    """Where and with what a computation of statistical rows ran (a cache entry records one per run)."""
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
            "versions": versions("statsforecast"), "code": code_state(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "loadavg": loadavg()}


def stat_warmup(y, periods: tuple[int, ...], lookback: int, horizon: int) -> dict[str, float]:
    """Wall seconds of one small fit and forecast per statistical model on the first `lookback` points of
    y (numba compiles statsforecast's kernels on first use): run before the timed rows, recorded apart."""
    import numpy as np

    from forecasting.stats.predictors import fitting_periods, make_model

    window = np.asarray(y[:lookback], dtype=np.float64)
    out = {}
    for name, label in STAT_LABELS.items():
        t0 = time.perf_counter()
        make_model(name, fitting_periods(periods, lookback)).fit(window).forward(y=window, h=horizon)
        out[label] = round(time.perf_counter() - t0, 2)
    return out


def stat_runs_text(runs: list[dict]) -> str:
    """When, on what and with which code each computation of a cache entry ran, in words."""
    return "; ".join(f"{r['date']} ({r['machine']['cpu_model']}, {r['machine']['cpu_count']} CPUs, load "
                     f"{r.get('loadavg')}; statsforecast {r['versions'].get('statsforecast')}; code "
                     f"{code_summary(r.get('code') or {})}; `{r.get('command')}`)" for r in runs)
