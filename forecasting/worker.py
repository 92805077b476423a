"""Tuning workers that share one Optuna study through its RDB storage.

`tune_parallel` runs one worker in this process and starts `workers - 1` more as
processes (`python -m forecasting.worker`); `forecasting tune-worker` joins the
same study from any machine that reaches the storage and the MLflow store. The
engines coordinate: Optuna's storage hands out trials (heartbeats fail and
re-queue the trials of a dead worker), MLflow records each trial once.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import torch

from forecasting import pipeline, tracking
from forecasting.backtest import BacktestConfig
from forecasting.data import Split
from forecasting.errors import ForecastingError
from forecasting.pipeline import TrainJob
from forecasting.tuning import TuneConfig, TuneResult, apply_params, default_storage


def job_to_json(job: TrainJob) -> str:
    return json.dumps(asdict(job))


def job_from_json(text: str) -> TrainJob:
    d = json.loads(text)
    d["tune"] = TuneConfig(**d["tune"])
    d["families"] = tuple(d["families"])
    d["seasons"] = tuple(d.get("seasons", ()))
    d["backtest"] = BacktestConfig(**d.get("backtest", {}))
    return TrainJob(**d)


def with_storage(job: TrainJob, home: str | Path) -> TrainJob:
    """Workers must share a persistent storage: default to the SQLite file under `<home>/mlruns`."""
    return job if job.tune.storage else replace(job, tune=replace(job.tune, storage=default_storage(home)))


def threads_per_worker(workers: int) -> int:
    """Split the cores between workers so they do not oversubscribe the CPU."""
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


JOB_ENV = "FORECASTING_WORKER_JOB"


def worker_command(home: str | Path, job: TrainJob | None, family: str, parent_run_id: str | None,
                   index: int, threads: int) -> list[str]:
    """The command line of one worker; with `job=None` the job is read from $FORECASTING_WORKER_JOB
    (keeps a storage password out of the process list)."""
    cmd = [sys.executable, "-m", "forecasting.worker", "--home", str(Path(home).resolve()),
           "--family", family, "--job", job_to_json(job) if job else "-", "--index", str(index),
           "--threads", str(threads)]
    return cmd + (["--parent-run-id", parent_run_id] if parent_run_id else [])


def tune_parallel(df: pd.DataFrame, split: Split, job: TrainJob, family: str, home: str | Path,
                  experiment_id: str, parent_run_id: str, workers: int = 1, progress: bool = True) -> TuneResult:
    """Tune one family with `workers` processes on one study; returns the study's best."""
    if workers <= 1:
        return pipeline.tune_family(df, split, job, family, home, experiment_id, parent_run_id, progress)
    job = with_storage(job, home)
    threads = threads_per_worker(workers)
    env = {**os.environ, JOB_ENV: job_to_json(job)}
    procs = [subprocess.Popen(worker_command(home, None, family, parent_run_id, i, threads),
                              stdout=subprocess.DEVNULL, env=env)
             for i in range(1, workers)]
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = pipeline.tune_family(df, split, job, family, home, experiment_id, parent_run_id, progress,
                                      plots=False)
    finally:
        torch.set_num_threads(old_threads)
        codes = [p.wait() for p in procs]
    failed = [c for c in codes if c != 0]
    if failed:
        raise ForecastingError(f"{len(failed)} of {workers - 1} worker process(es) failed (exit {failed})")
    # This worker stops when the study is full, while the others may still finish a trial they
    # had started: take the best (and draw the plots) of the whole study once they are done.
    best = result.study.best_trial
    result = TuneResult(result.study, dict(best.params), apply_params(result.config, best.params, family))
    pipeline.log_search(parent_run_id, result.study, family)
    return result


def run_worker(home: str | Path, job: TrainJob, family: str, parent_run_id: str | None = None,
               index: int = 0, threads: int | None = None, progress: bool = True) -> TuneResult:
    """Join the study `<dataset>-h<H>-<family>` and tune until it holds `job.tune.n_trials` finished trials.

    Trials are logged under `parent_run_id`, or under a run of this worker's own.
    Each worker draws from its own sampler seed (`seed + index`).
    """
    if threads:
        torch.set_num_threads(threads)
    job = with_storage(job, home)
    job = replace(job, tune=replace(job.tune, seed=job.tune.seed + index))
    df, _ = pipeline.load_processed(home, job.dataset)
    split = pipeline.make_split(df, job)
    tracking.configure(home)
    exp = tracking.ensure_experiment(tracking.experiment_name(job.dataset, job.horizon), home)
    own = parent_run_id is None
    parent = parent_run_id or tracking.start_run(
        exp, f"worker-{socket.gethostname()}-{os.getpid()}", tags={"kind": "worker", "family": family})
    try:
        return pipeline.tune_family(df, split, job, family, home, exp, parent, progress, plots=own)
    finally:
        if own:
            tracking.end_run(parent)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m forecasting.worker", description="one tuning worker")
    p.add_argument("--home", required=True)
    p.add_argument("--family", required=True)
    p.add_argument("--job", required=True, help=f"TrainJob as JSON, or - to read it from ${JOB_ENV}")
    p.add_argument("--parent-run-id")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    try:
        job = job_from_json(os.environ[JOB_ENV] if args.job == "-" else args.job)
        run_worker(args.home, job, args.family, args.parent_run_id, args.index,
                   args.threads, progress=False)
    except ForecastingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
