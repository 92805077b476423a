"""Scale-out benchmark: tuning trials per hour with 1 worker and with 2 workers, as processes and as
Dask tasks, in one run.

Each run tunes a fresh study in a fresh PostgreSQL database (created and dropped here) with the
same fixed budget: the study is pre-filled with `trials` copies of one fixed configuration
(pruner none, `max_epochs` below the early-stopping patience), so every trial does the same work
whichever worker runs it and whatever the sampler would have drawn. Workers are the real
`python -m forecasting.pipeline.worker` processes (`forecasting.pipeline.search.worker_command`), each with
`forecasting.pipeline.search.threads_per_worker(workers)` torch threads: the 1-worker run uses every core,
the 2-worker run half of them each. Trials are logged to MLflow (a PostgreSQL database used as
the tracking store, also created and dropped here) as they are in `forecasting train`.

The clock runs from the moment every worker of a run has started and is waiting on the study
(the script holds a lock on Optuna's tables until then: process start and imports are left out)
to the moment the last one exits; trials per hour = finished trials / those seconds. The span
from the first trial's start to the last trial's end (Optuna's own timestamps) is recorded too.

    python benchmarks/scaleout.py [--quick] [--out DIR] [--trials N] [--postgres URL]

It needs PostgreSQL (default postgresql://postgres@127.0.0.1:5432, a role that may create
databases). Without --out a --quick run writes into a temporary folder, never over the
committed results.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "scaleout"
GOAL_RATIO = 1.8
DATASET, HORIZON, FAMILY = "scaleout", 24, "gru"

# One fixed configuration per trial, sized like a real tuning trial (~10 s on one core here) so that
# per-trial bookkeeping (MLflow runs, study queries, process start) does not dominate.
BUDGETS = {
    "full": {"trials": 10, "n_series": 16, "length": 4000, "max_epochs": 3, "max_train_windows": 32768,
             "lookback": 96, "hidden": 64, "layers": 2, "batch_size": 128},
    "quick": {"trials": 4, "n_series": 3, "length": 600, "max_epochs": 1, "max_train_windows": 128,
              "lookback": 48, "hidden": 16, "layers": 1, "batch_size": 64},
}


def parse(argv: list[str] | None):
    p = C.parser(__doc__.splitlines()[0])
    p.set_defaults(out=None)
    for action in p._actions:  # shared options this benchmark does not use: workers get their own threads
        if action.dest in ("threads", "data_dir"):
            action.help = argparse.SUPPRESS
    p.add_argument("--trials", type=int, help="finished trials per run (default 10, quick 4)")
    p.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated (default 1,2)")
    p.add_argument("--postgres", default=os.environ.get("FORECASTING_BENCH_POSTGRES",
                                                        "postgresql://postgres@127.0.0.1:5432"),
                   help="PostgreSQL server URL without a database name")
    p.add_argument("--runners", default="processes,dask", type=_runners,
                   help="how the workers run, comma-separated: processes (`train --workers N`), dask "
                        "(`train --cluster local:N`); default both")
    p.add_argument("--timeout", type=float, default=3600, help="seconds a run may take before it is abandoned")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="scaleout-quick-")) if args.quick else C.RESULTS
    return args


def _runners(text: str) -> str:
    if not text or not set(text.split(",")) <= {"processes", "dask"}:
        raise argparse.ArgumentTypeError(f"expected processes, dask or both, got {text!r}")
    return text


# --------------------------------------------------------------------------- PostgreSQL


def _connect(url: str):
    import psycopg2

    try:
        return psycopg2.connect(url, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        sys.exit(f"error: PostgreSQL not reachable at {url}: {str(exc).strip()}\n"
                 "The scale-out benchmark needs a PostgreSQL server whose role may create databases "
                 "(pass --postgres postgresql://USER@HOST:PORT).")


class Databases:
    """Fresh databases on one server, all dropped by `drop_all()`."""

    def __init__(self, server: str):
        self.server, self.names = server.rstrip("/"), []
        conn = _connect(f"{self.server}/postgres")
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            self.version = cur.fetchone()[0]
        conn.close()

    def _admin(self, sql: str) -> None:
        conn = _connect(f"{self.server}/postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create(self, prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self._admin(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return f"{self.server}/{name}"

    def drop_all(self) -> None:
        while self.names:
            self._admin(f'DROP DATABASE IF EXISTS "{self.names.pop()}" WITH (FORCE)')


# --------------------------------------------------------------------------- setup


def sine_csv(path: Path, n_series: int, length: int, seed: int) -> Path:
    """Noisy daily-seasonal hourly series with random level, amplitude and phase."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    parts = []
    for i in range(n_series):
        amp, phase, level = rng.uniform(1, 3), rng.uniform(0, 2 * np.pi), rng.uniform(5, 15)
        y = level + amp * np.sin(2 * np.pi * t / 24 + phase) + 0.3 * np.sin(2 * np.pi * t / 168) \
            + rng.normal(0, 0.3, length)
        parts.append(pd.DataFrame({"unique_id": f"s{i}", "ds": pd.date_range("2022-01-01", periods=length,
                                                                              freq="h"), "y": y}))
    pd.concat(parts).to_csv(path, index=False)
    return path


def fixed_params(home: Path, job, b: dict) -> dict:
    """The budget's configuration, checked against (and clipped into) the job's search space."""
    from forecasting.core import datasets
    from forecasting.pipeline import plan

    df, freq = datasets.load_processed(home, job.dataset)
    split = plan.make_split(df, job)
    space = plan.search_space(df, split, plan.base_config(df, freq, job, split), job)
    own = space.own("gru")  # the recurrent family's own ranges
    lookback = b["lookback"] if b["lookback"] in space.lookbacks else max(space.lookbacks)
    return {"lookback": lookback, "hidden": int(np.clip(b["hidden"], *own.hidden)),
            "layers": int(np.clip(b["layers"], *own.layers)), "dropout": float(own.dropout[0]),
            "lr": float(np.clip(1e-3, *space.lr)),
            "batch_size": min(space.batch_sizes, key=lambda s: abs(s - b["batch_size"])),
            "weight_decay": float(space.weight_decay[0]),
            "norm": "standard" if "standard" in own.norms else own.norms[0],
            "segment": min(s for s in own.segments if s <= lookback),
            "highway": True, "init": own.inits[0], "loss": space.losses[0],
            "multiplicative": False if False in own.multiplicative else own.multiplicative[0],
            "lags": False if False in own.lags else own.lags[0]}


# --------------------------------------------------------------------------- one run


def prefilled_study(job, params: dict, workers: int, db: Databases):
    """A fresh study in a new database holding enough copies of `params` for every trial, so that no
    trial samples; returns the job pointed at that database and the study's name."""
    from dataclasses import replace

    import optuna

    from forecasting.tuning.study import study_name

    url = db.create("fc_bench_optuna")
    job = replace(job, tune=replace(job.tune, storage=url))
    name = study_name(job.dataset, job.horizon, FAMILY)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name=name, direction="minimize")
    for _ in range(job.tune.n_trials + workers - 1):  # a worker may start one more as the study fills
        study.enqueue_trial(params)
    storage.engine.dispose()
    return job, name


def worker_env(tracking_uri: str, threads: int) -> dict[str, str]:
    """The workers' environment: this MLflow store only (no inherited MLFLOW_* settings), `threads`
    OpenMP threads, and this checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"MLFLOW_TRACKING_URI": tracking_uri, "OMP_NUM_THREADS": str(threads),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(C.REPO), os.environ.get("PYTHONPATH")]))})
    return env


def _worker_log(logs: Path, workers: int, i: int) -> Path:
    return logs / f"workers{workers}-{i}.log"


def _wait_at_gate(cur, workers: int, check_alive) -> None:
    """Return once `workers` workers are blocked on the locked study tables (all started, imports done);
    `check_alive()` raises when one of them died."""
    deadline = time.monotonic() + 600
    while True:
        cur.execute("SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted "
                    "AND relation IN ('version_info'::regclass, 'studies'::regclass)")
        if cur.fetchone()[0] >= workers:
            return
        check_alive()
        if time.monotonic() > deadline:
            raise SystemExit("error: the workers did not reach the study within 600 s")
        time.sleep(0.1)


def timed_workers(commands: list[list[str]], env: dict, url: str, logs: Path, timeout: float) -> float:
    """Start one worker per command behind a lock on Optuna's tables, release them all at once, and
    return the seconds until the last one exits (process start and imports stay off the clock)."""
    workers = len(commands)
    gate = _connect(url)  # holds the workers at the study until all of them are up
    procs, outs = [], []
    try:
        with gate.cursor() as cur:
            cur.execute("LOCK TABLE version_info, studies IN ACCESS EXCLUSIVE MODE")
            for i, cmd in enumerate(commands):
                outs.append(open(_worker_log(logs, workers, i), "wb"))  # noqa: SIM115
                procs.append(subprocess.Popen(cmd, env=env, stdout=outs[-1], stderr=subprocess.STDOUT))
            _wait_at_gate(cur, workers, lambda: _check_alive(procs, logs, workers))
        t0 = time.perf_counter()
        gate.rollback()  # release: every worker starts tuning now
        for p in procs:
            p.wait(timeout=timeout)
        seconds = time.perf_counter() - t0
    finally:
        gate.close()
        _stop(procs, outs)
    _check_alive(procs, logs, workers, finished=True)
    return seconds


def _warm() -> None:
    """Imports a tuning worker needs, done in each Dask worker before the clock (as a process's are)."""
    import mlflow  # noqa: F401

    import forecasting.pipeline.search  # noqa: F401


def timed_dask(calls: list[tuple], url: str, tracking_uri: str, timeout: float) -> float:
    """The same gate and clock with the workers as tasks on a Dask LocalCluster of one single-threaded
    process per call, started with the arguments `train --cluster local:N` gives it (`search.join_study`
    in each), one task pinned
    to each worker; the cluster's start and the workers' imports stay off the clock."""
    from distributed import Client

    from flows.cluster import task_runner
    from forecasting.pipeline.search import join_study

    workers, before = len(calls), os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # inherited by the worker processes
    try:
        runner = task_runner(f"local:{workers}")
        with runner.cluster_class(**runner.cluster_kwargs) as lc, Client(lc) as client:
            client.run(_warm)
            addresses = sorted(client.scheduler_info()["workers"])
            gate = _connect(url)
            try:
                with gate.cursor() as cur:
                    cur.execute("LOCK TABLE version_info, studies IN ACCESS EXCLUSIVE MODE")
                    futures = [client.submit(join_study, *args, pure=False, workers=[a])
                               for args, a in zip(calls, addresses, strict=True)]
                    _wait_at_gate(cur, workers, lambda: [f.result() for f in futures if f.status == "error"])
                t0 = time.perf_counter()
                gate.rollback()
                client.gather(futures)
                return time.perf_counter() - t0
            finally:
                gate.close()
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if before is None else os.environ.update(MLFLOW_TRACKING_URI=before)


def _stop(procs: list[subprocess.Popen], outs: list) -> None:
    """Kill the workers still running (a timeout or an error) and close their logs."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    for f in outs:
        f.close()


def run_timings(job, params: dict, url: str, name: str, workers: int, threads: int, seconds: float) -> dict:
    """The run's record from its finished trials; exits when they are fewer than the budget or not
    all of the fixed configuration (then the run did not do the work it is timed for)."""
    from forecasting.tuning.study import FINISHED

    finished = [t for t in _load_trials(url, name) if t.state in FINISHED]
    if len(finished) < job.tune.n_trials or any(t.params != params for t in finished):
        raise SystemExit(f"error: run with {workers} worker(s) finished {len(finished)} trial(s), "
                         f"expected {job.tune.n_trials} of the fixed configuration")
    span = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds()
    per_worker = Counter(t.user_attrs.get("worker", "?") for t in finished)
    train = [t.user_attrs["train_seconds"] for t in finished if "train_seconds" in t.user_attrs]
    return {"workers": workers, "threads_per_worker": threads, "trials": len(finished),
            "trials_per_worker": sorted(per_worker.values(), reverse=True),
            "seconds": round(seconds, 2), "trial_span_seconds": round(span, 2),
            "trials_per_hour": round(len(finished) / seconds * 3600, 1),
            "trials_per_hour_span": round(len(finished) / span * 3600, 1) if span > 0 else None,
            "mean_train_seconds": round(float(np.mean(train)), 3) if train else None}


def run(runner: str, workers: int, home: Path, job, params: dict, db: Databases, tracking_uri: str,
        experiment_id: str, logs: Path, timeout: float) -> dict:
    """Tune `job.tune.n_trials` fixed trials with `workers` workers (`processes`: worker processes with
    `threads_per_worker(workers)` threads; `dask`: Dask tasks, one thread each); return the timings."""
    from mlflow import MlflowClient

    from forecasting.pipeline.search import threads_per_worker, with_storage, worker_command

    job, name = prefilled_study(job, params, workers, db)
    client = MlflowClient(tracking_uri=tracking_uri)
    parent = client.create_run(experiment_id, run_name=f"{runner}-{workers}", tags={"kind": "benchmark"}).info.run_id
    if runner == "dask":
        threads = 1
        calls = [(home, with_storage(job, home, i), FAMILY, parent, i, 1, False) for i in range(workers)]
        seconds = timed_dask(calls, job.tune.storage, tracking_uri, timeout)
    else:
        threads = threads_per_worker(workers)
        commands = [worker_command(home, job, FAMILY, parent, i, threads) for i in range(workers)]
        seconds = timed_workers(commands, worker_env(tracking_uri, threads), job.tune.storage, logs, timeout)
    client.set_terminated(parent)
    return {"runner": runner, **run_timings(job, params, job.tune.storage, name, workers, threads, seconds)}


def _check_alive(procs, logs: Path, workers: int, finished: bool = False) -> None:
    for i, p in enumerate(procs):
        rc = p.poll()
        if (rc is not None and not finished) or (finished and rc != 0):
            tail = _worker_log(logs, workers, i).read_text(errors="replace")[-3000:]
            raise SystemExit(f"error: worker {i} of the {workers}-worker run exited {rc}:\n{tail}")


def _load_trials(url: str, name: str):
    import optuna

    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=True)
    finally:
        storage.engine.dispose()


# --------------------------------------------------------------------------- report


def summary(res: dict) -> str:
    runs = res["runs"]
    base = {r["runner"]: r["trials_per_hour"] for r in runs if r["workers"] == runs[0]["workers"]}
    rows = [[r["runner"], str(r["workers"]), str(r["threads_per_worker"]), str(r["trials"]),
             " / ".join(map(str, r["trials_per_worker"])), C.fmt(r["seconds"], 1), C.fmt(r["trials_per_hour"], 0),
             C.fmt(r["trials_per_hour"] / base[r["runner"]], 2) + "x"]
            for r in runs]
    text = C.table(["runner", "workers", "torch threads each", "trials", "trials per worker", "seconds",
                    "trials / hour", "vs 1 worker"], rows)
    for runner, (ratio, span) in res["ratios"].items():
        if ratio is not None:
            text += (f"\n{runner}: {res['runs'][-1]['workers']} workers against 1: **{ratio:.2f}x** trials per hour "
                     f"(goal ≥ {GOAL_RATIO}x: {C.verdict(ratio >= GOAL_RATIO)}); from Optuna's first-trial-"
                     f"start to last-trial-end span: {span:.2f}x.\n")
    return text


def render(res: dict) -> str:
    b, p = res["budget"], res["params"]
    return "\n".join([
        "# Scale-out: tuning trials per hour with 1 and 2 workers", "",
        summary(res),
        f"Each run: a fresh PostgreSQL study pre-filled with {b['trials']} trials of one fixed GRU "
        f"configuration ({', '.join(f'{k} {v}' for k, v in p.items())}), {b['max_epochs']} epoch(s) of "
        f"{b['max_train_windows']} windows each, pruner none, on {b['n_series']} synthetic hourly series of "
        f"{b['length']} points (horizon {HORIZON}); trials logged to MLflow on PostgreSQL. Runner `processes`: "
        "workers are `python -m forecasting.pipeline.worker` processes (what `train --workers N` starts) with "
        "`threads_per_worker(workers)` torch threads each. Runner `dask`: workers are `search.join_study` tasks, "
        "one pinned to each single-threaded process of a Dask LocalCluster (what `train --cluster local:N` runs, "
        "without Prefect's task wrapper), one torch thread each. Seconds run from the moment all workers wait on "
        "the study (process or cluster start and imports excluded) to the last one's end.",
        "",
        f"PostgreSQL {res['postgres']}.", "",
        C.conditions(res),
    ])


def budget(args: argparse.Namespace) -> dict:
    """The quick or full budget, `--trials` overriding its trial count."""
    b = dict(BUDGETS["quick" if args.quick else "full"])
    if args.trials:
        b["trials"] = args.trials
    return b


def quiet() -> None:
    """Silence MLflow's progress bars, warnings and library logging for the whole run (a benchmark
    script: its output is the result, not the libraries' chatter); before those libraries load."""
    import logging
    import warnings

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore")
    for name in ("mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.ERROR)


def prepare(tmp: Path, b: dict, seed: int):
    """Ingest the synthetic series into a home under `tmp`; the training job and the fixed trial
    configuration every run tunes."""
    from forecasting.api.jobs import TrainJob
    from forecasting.core import datasets
    from forecasting.tuning.study import TuneConfig

    home = tmp / "home"
    datasets.ingest(sine_csv(tmp / "series.csv", b["n_series"], b["length"], seed), DATASET, home)
    tune = TuneConfig(n_trials=b["trials"], max_epochs=b["max_epochs"], pruner="none", seed=seed)
    job = TrainJob(DATASET, HORIZON, (FAMILY,), tune, device="cpu", seed=seed, calendar=False,
                   max_train_windows=b["max_train_windows"], max_lookback=b["lookback"])
    return home, job, fixed_params(home, job, b)


def measure(db: Databases, counts: list[int], b: dict, args: argparse.Namespace) -> tuple[dict, list[dict]]:
    """One run per worker count, all in one scratch home and one MLflow store; the fixed trial
    configuration and the runs' records."""
    from mlflow import MlflowClient

    runs = []
    with tempfile.TemporaryDirectory(prefix="scaleout-") as tmp:
        tmp = Path(tmp)
        logs = tmp / "logs"
        logs.mkdir()
        home, job, params = prepare(tmp, b, args.seed)
        tracking_uri = db.create("fc_bench_mlflow")
        client = MlflowClient(tracking_uri=tracking_uri)  # creates MLflow's tables before the clock
        exp = client.create_experiment(f"{DATASET}-h{HORIZON}", artifact_location=(tmp / "artifacts").as_uri())
        for runner, w in [(r, w) for r in args.runners.split(",") for w in counts]:
            print(f"{runner}, {w} worker(s): {b['trials']} trials ...", file=sys.stderr, flush=True)
            r = run(runner, w, home, job, params, db, tracking_uri, exp, logs, args.timeout)
            print(f"    {r['seconds']:.1f} s, {r['trials_per_hour']:.0f} trials/hour, trials per worker "
                  f"{r['trials_per_worker']}", file=sys.stderr, flush=True)
            runs.append(r)
    return params, runs


def ratios(runs: list[dict]) -> dict[str, tuple[float | None, float | None]]:
    """Per runner, trials per hour of its last run over its first: by the clock, and by Optuna's trial span."""
    return {r: _ratio([x for x in runs if x["runner"] == r]) for r in dict.fromkeys(x["runner"] for x in runs)}


def _ratio(runs: list[dict]) -> tuple[float | None, float | None]:
    base, last = runs[0], runs[-1]
    if len(runs) < 2:
        return None, None
    ratio = round(last["trials_per_hour"] / base["trials_per_hour"], 3)
    ratio_span = (round(last["trials_per_hour_span"] / base["trials_per_hour_span"], 3)
                  if base["trials_per_hour_span"] and last["trials_per_hour_span"] else None)
    return ratio, ratio_span


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    b = budget(args)
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    quiet()
    import psycopg2

    db = Databases(args.postgres)  # exits with a clear message when PostgreSQL is not there
    meta = C.Run(NAME, args, b, extra_versions=("optuna", "mlflow", "sqlalchemy", "psycopg2-binary"))
    meta.meta["versions"]["psycopg2"] = psycopg2.__version__.split()[0]
    try:
        params, runs = measure(db, counts, b, args)
    finally:
        db.drop_all()
    by_runner = ratios(runs)
    ratio, ratio_span = next(iter(by_runner.values()))  # the first runner's (processes by default)
    res = meta.finish({"postgres": db.version, "params": params, "runs": runs, "ratios": by_runner,
                       "ratio": ratio, "ratio_span": ratio_span, "goal_ratio": GOAL_RATIO,
                       "goal_met": {r: None if v[0] is None else v[0] >= GOAL_RATIO for r, v in by_runner.items()}})
    js, md = C.write(args.out, NAME, res, render(res))
    print(summary(res))
    print(f"wrote {js} and {md}")
    return res


if __name__ == "__main__":
    main()
