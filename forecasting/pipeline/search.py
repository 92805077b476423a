"""The hyperparameter search of one model family inside a pipeline run: one Optuna study per
dataset, horizon and family, shared by every worker through its RDB storage.

`tune_family` runs the search in this process; `tune_parallel` adds `workers - 1` processes
(`python -m forecasting.pipeline.worker`, the entry point only) that call `join_study` on the same study;
`forecasting tune-worker` calls `join_study` from any machine that reaches the storage and the
MLflow store. Optuna's storage hands out trials (heartbeats fail and re-queue the trials of a
dead worker); MLflow records each trial once, nested under the pipeline's parent run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
from optuna.trial import TrialState

from forecasting.api import ensemble_check
from forecasting.api.ensemble_check import EnsembleCheck, kept
from forecasting.api.fitcache import FitCache
from forecasting.api.forecaster import Forecaster, ForecasterConfig
from forecasting.api.jobs import TrainJob
from forecasting.core.cpus import default_threads
from forecasting.core.data import Split
from forecasting.core.datasets import load_processed
from forecasting.core.errors import ForecastingError
from forecasting.core.options import from_dict, to_dict
from forecasting.core.secrets import child_env
from forecasting.core.training import torch_threads
from forecasting.pipeline import search_log
from forecasting.pipeline.plan import RunContext, base_config, fit_cache, gpu_count, make_split, search_space
from forecasting.pipeline.steps import run_context
from forecasting.tracking import runs
from forecasting.tuning.objective import TuneResult, tune
from forecasting.tuning.space import apply_params
from forecasting.tuning.study import check_storage, default_storage, open_study, study_name

JOB_ENV = "FORECASTING_WORKER_JOB"  # the job of worker processes (keeps a storage password off `ps`)


def with_storage(job: TrainJob, home: str | Path, index: int = 0) -> TrainJob:
    """Workers must share a persistent storage (default: the SQLite file under `<home>/mlruns`); each
    draws from its own sampler seed, the job's seed plus its index."""
    tune = replace(job.tune, storage=job.tune.storage or default_storage(home), seed=job.seed + index)
    return replace(job, tune=tune)


def tune_family(ctx: RunContext, job: TrainJob, df: pd.DataFrame, split: Split, family: str, index: int = 0,
                progress: bool = True, plots: bool = True) -> TuneResult:
    """Optuna search for one family, each trial a nested MLflow run (optimization plots on the parent)."""
    job = with_storage(job, ctx.home, index)
    base = base_config(df, ctx.freq, job, split, family)
    hook = search_log.TrialLogger(ctx.experiment_id, ctx.parent_run_id, family)
    result = tune(df, split, base, family, study_name(job.dataset, job.horizon, family), job.tune,
                  search_space(df, split, base, job), hook, progress, on_stale=search_log.close_stale_trial_run,
                  cache=fit_cache(ctx))
    # Which study trials this run continued (a resumed search) is said on the parent run.
    runs.log_values(ctx.parent_run_id, tags={f"{family}.resumed_trials": result.resumed})
    if plots:
        search_log.log_search(ctx.parent_run_id, result.study, family)
    return result


def threads_per_worker(workers: int) -> int:
    """Split the CPUs this process may use between workers so they do not oversubscribe them."""
    return default_threads(workers)


def worker_gpu(index: int, gpus: int) -> dict[str, str]:
    """Environment that gives worker `index` its own GPU, round robin over `gpus` visible ones (this
    process, worker 0, keeps the first); with one GPU or none the workers share what there is."""
    if gpus <= 1:
        return {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(gpus)]
    return {"CUDA_VISIBLE_DEVICES": ids[index % len(ids)]}


def worker_command(home: str | Path, job: TrainJob | None, family: str, parent_run_id: str | None,
                   index: int, threads: int) -> list[str]:
    """The command line of one worker process; with `job=None` it reads the job from $FORECASTING_WORKER_JOB."""
    cmd = [sys.executable, "-m", "forecasting.pipeline.worker", "--home", str(Path(home).resolve()),
           "--family", family, "--job", json.dumps(to_dict(job)) if job else "-", "--index", str(index),
           "--threads", str(threads)]
    return cmd + (["--parent-run-id", parent_run_id] if parent_run_id else [])


def tune_parallel(ctx: RunContext, job: TrainJob, df: pd.DataFrame, split: Split, family: str,
                  progress: bool = True) -> TuneResult:
    """Tune one family with `job.workers` processes on one study; returns the whole study's best."""
    if job.workers <= 1:
        return tune_family(ctx, job, df, split, family, progress=progress)
    job, threads = with_storage(job, ctx.home), threads_per_worker(job.workers)
    env = {**os.environ, JOB_ENV: json.dumps(to_dict(job)), **child_env()}  # the storage's password stays off the job
    gpus = gpu_count(job.device)
    procs = [subprocess.Popen(worker_command(ctx.home, None, family, ctx.parent_run_id, i, threads),
                              stdout=subprocess.DEVNULL, env=env | worker_gpu(i, gpus)) for i in range(1, job.workers)]
    try:
        with torch_threads(threads):
            result = tune_family(ctx, job, df, split, family, progress=progress, plots=False)
    finally:
        codes = [p.wait() for p in procs]
    failed = [c for c in codes if c != 0]
    if failed:
        raise ForecastingError(f"{len(failed)} of {job.workers - 1} worker process(es) failed (exit {failed})")
    # This worker stops when the study is full, while the others may still finish a trial they
    # had started: take the best (and draw the plots) of the whole study once they are done.
    return whole_study(ctx, result.study, result.config, family)


def whole_study(ctx: RunContext, study, config: ForecasterConfig, family: str) -> TuneResult:
    """The best of a study every worker has finished, applied to `config`; its plots on the parent run."""
    best = study.best_trial
    search_log.log_search(ctx.parent_run_id, study, family)
    return TuneResult(study, dict(best.params), apply_params(config, best.params, family))


def finished_on_cluster(ctx: RunContext, job: TrainJob, df: pd.DataFrame, split: Split, family: str) -> TuneResult:
    """The result of a search whose workers all ran elsewhere (tasks on a cluster), read from its storage."""
    job = with_storage(job, ctx.home)
    study = open_study(study_name(job.dataset, job.horizon, family), job.tune)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise ForecastingError(f"the {family} study {study.study_name} holds no completed trial after its workers ended")
    return whole_study(ctx, study, base_config(df, ctx.freq, job, split, family), family)


def join_study(home: str | Path, job: TrainJob, family: str, parent_run_id: str | None = None,
               index: int = 0, threads: int | None = None, progress: bool = True) -> TuneResult:
    """Join the study `<dataset>-h<H>-<family>` and tune until it holds `job.tune.n_trials` finished
    trials. Trials are logged under `parent_run_id`, or under a run of this worker's own."""
    check_storage(job.tune.storage)  # before any MLflow run exists
    df, freq = load_processed(home, job.dataset)
    split = make_split(df, job)
    own = parent_run_id is None
    ctx = run_context(home, job, df, freq, parent_run_id or "", kind="worker")
    if own:
        ctx = replace(ctx, parent_run_id=runs.start_run(
            ctx.experiment_id, f"worker-{socket.gethostname()}-{os.getpid()}",
            tags={"kind": "worker", "family": family}))
    try:
        with torch_threads(threads):
            return tune_family(ctx, job, df, split, family, index, progress, plots=own)
    finally:
        if own:
            runs.end_run(ctx.parent_run_id)


def ensemble_trials(trials: list, k: int) -> list:
    """The `k` best of `trials` (completed, each with a `value`: a validation loss, lower is better),
    less those whose loss exceeds MAX_MEMBER_LOSS_RATIO times the best one's (`ensemble_check.kept`)."""
    return [trials[i] for i in kept([t.value for t in trials], k)]


def completed(result: TuneResult) -> list:
    """The study's completed trials with a value, best first."""
    done = [t for t in result.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return sorted(done, key=lambda t: t.value)


def top_configs(result: TuneResult, family: str, k: int, seeds: int = 1) -> list[ForecasterConfig]:
    """The configurations of the `k` best completed trials of a search (fewer if it has fewer, or if
    some scored far worse than the best: `ensemble_trials`), each `seeds` times: with its own seed
    (the trial's fit, which the refit may load), then seed + 1, ..."""
    best = ensemble_trials(completed(result), k)
    cfgs = [apply_params(result.config, t.params, family) for t in best] or [result.config]
    return [replace(c, train=replace(c.train, seed=c.train.seed + j)) for c in cfgs for j in range(max(seeds, 1))]


MAX_CANDIDATES = 30  # trials the ensemble check ranks (the best by validation loss; a long study keeps it cheap)


def checked_ensemble(ctx: RunContext, job: TrainJob, df: pd.DataFrame, split: Split, result: TuneResult,
                     family: str) -> EnsembleCheck | None:
    """The cross-fitted check of combining the `job.ensemble` best trials (`ensemble_check`), on the
    fits the trials kept; None when it does not apply (asked for one member, turned off, or fewer than
    two trials' fits at hand, e.g. trials of a worker on another machine)."""
    if job.ensemble < 2 or not job.ensemble_check:
        return None
    fits = trial_fits(result, family, fit_cache(ctx), split)
    return ensemble_check.check(fits, df, split, job.ensemble, job.metric, job.ensemble_combine)


def trial_fits(result: TuneResult, family: str, cache: FitCache, split: Split, limit: int = MAX_CANDIDATES
               ) -> list[Forecaster]:
    """The fits that a search's completed trials kept in `cache` (best first, at most `limit`), found by
    the configuration each trial trained (its `config` attribute)."""
    cfgs = [ForecasterConfig.from_dict(t.user_attrs["config"]) if "config" in t.user_attrs
            else apply_params(result.config, t.params, family) for t in completed(result)[:limit]]
    return [f for f in (cache.load(cache.key(c, split)) for c in cfgs) if f is not None]


def chosen_configs(ctx: RunContext, job: TrainJob, df: pd.DataFrame, split: Split, result: TuneResult,
                   family: str) -> tuple[list[ForecasterConfig], EnsembleCheck | None]:
    """The configurations the final model refits, with the ensemble check that chose them: the
    `job.ensemble` best trials, or the best alone where the check says combining them does not beat
    it (each with `job.ensemble_seeds` seeds)."""
    found = checked_ensemble(ctx, job, df, split, result, family)
    k = found.k if found is not None else job.ensemble
    return top_configs(result, family, k, job.ensemble_seeds), found


def job_from_json(text: str) -> TrainJob:
    """A worker's job, as `worker_command` or $FORECASTING_WORKER_JOB carries it."""
    return from_dict(TrainJob, json.loads(text))
