"""Train flow: tune each family, refit, backtest on validation, combine the families where validation says
so, baselines, compare, register, promote."""

from __future__ import annotations

import pandas as pd
from prefect import flow, task

from flows.common import COMPUTE, IO, say, step
from forecasting.api.ensemble_check import EnsembleCheck
from forecasting.api.family_mix import COMBINED, FamilyMix
from forecasting.api.forecaster import Fitted, Forecaster, ForecasterConfig
from forecasting.api.jobs import TrainJob
from forecasting.core import datasets
from forecasting.core.data import Split
from forecasting.core.options import from_dict
from forecasting.pipeline import plan, search
from forecasting.pipeline import steps as pipeline
from forecasting.pipeline.steps import RunContext
from forecasting.tracking import runs
from forecasting.tuning.objective import TuneResult


def reused(text: str) -> None:
    """A line on what a step did not need to redo (stderr, beside the step lines)."""
    say(f"[{text}]")


@task(**IO)
def load_dataset(home: str, name: str) -> tuple[pd.DataFrame, str]:
    return datasets.load_processed(home, name)


@task(**COMPUTE)
def start(home: str, job: TrainJob, df: pd.DataFrame, freq: str) -> RunContext:
    return pipeline.start_pipeline(home, job, df, freq)


@task(**COMPUTE)
def tune_family(ctx: RunContext, job: TrainJob, df, split: Split, family: str) -> TuneResult:
    return search.tune_parallel(ctx, job, df, split, family)


@task(**COMPUTE)
def choose_members(ctx: RunContext, job: TrainJob, df, split: Split, result: TuneResult, family: str
                   ) -> tuple[list[ForecasterConfig], EnsembleCheck | None]:
    return search.chosen_configs(ctx, job, df, split, result, family)


@task(**COMPUTE)
def tune_worker(home: str, job: TrainJob, family: str, parent_run_id: str, index: int) -> int:
    """One tuning worker, on whichever cluster worker runs it: it fills the family's study (one torch
    thread; trials nested under the pipeline's run) until the study is full."""
    search.join_study(home, job, family, parent_run_id, index, threads=1, progress=False)
    return index


def tune_on_cluster(ctx: RunContext, job: TrainJob, df, split: Split, family: str, workers: int) -> TuneResult:
    """`workers` tuning workers as tasks of the flow's task runner (Dask), all on one study; then the
    whole study's result. Runs in the flow: its tasks are the workers."""
    futures = [tune_worker.submit(ctx.home, search.with_storage(job, ctx.home, i), family, ctx.parent_run_id, i)
               for i in range(workers)]
    for f in futures:
        f.result()
    return search.finished_on_cluster(ctx, job, df, split, family)


@task(**COMPUTE)
def final_model(ctx: RunContext, job: TrainJob, df, split: Split, cfgs: list[ForecasterConfig], family: str,
                check: EnsembleCheck | None = None) -> tuple[dict, Forecaster]:
    return pipeline.final_model(ctx, job, df, split, cfgs, family, check.params() if check else {})


@task(**COMPUTE)
def backtest(forecaster: Forecaster, row: dict, df, split: Split, job: TrainJob) -> dict:
    return pipeline.backtest_step(forecaster, row, df, split, job)


@task(**COMPUTE)
def intervals(ctx: RunContext, job: TrainJob, forecaster: Forecaster, row: dict, df, split: Split) -> dict:
    return pipeline.intervals_step(ctx, job, forecaster, row, df, split)


@task(**COMPUTE)
def baseline_scores(ctx: RunContext, job: TrainJob, df, split: Split) -> tuple[list[dict], bool]:
    return pipeline.baseline_scores(ctx, job, df, split)


@task(**IO)
def log_baselines(ctx: RunContext, scores: list[dict], reused: bool) -> list[dict]:
    return pipeline.log_baselines(ctx, scores, reused)


@task(**COMPUTE)
def compare(rows: list[dict], job: TrainJob, ctx: RunContext) -> tuple[pd.DataFrame, dict]:
    return pipeline.comparison(rows, job, ctx.parent_run_id)


@task(**COMPUTE)
def register(ctx: RunContext, job: TrainJob, row: dict, df: pd.DataFrame, split: Split) -> dict:
    return pipeline.register_family(ctx, job, row, df, split)


@task(**COMPUTE)
def finish_family(ctx: RunContext, job: TrainJob, df, split: Split, result: TuneResult, family: str
                  ) -> tuple[dict, Fitted]:
    """One tuned family's comparison row and final model: its members (the ensemble check), refit (or
    load the trials' fits) and score the test part once, then `backtest_and_log`."""
    cfgs, check = choose_members(ctx, job, df, split, result, family)
    if check is not None:
        say(f"[{job.dataset}: {check.describe(family, job.ensemble)}]")
    members = f" ({len(cfgs)} members)" if len(cfgs) > 1 else ""
    with step(f"{job.dataset}: refit {family}{members}, score the test part once"):
        row, forecaster = final_model(ctx, job, df, split, cfgs, family, check)
    if row.get("loaded_fits"):
        reused(f"{job.dataset}: {family}: {row['loaded_fits']} of {len(cfgs)} fit(s) loaded from the trials that "
               "trained the same configuration on the same data (not retrained)")
    return backtest_and_log(ctx, job, df, split, row, forecaster), forecaster


def backtest_and_log(ctx: RunContext, job: TrainJob, df, split: Split, row: dict, forecaster: Fitted) -> dict:
    """A final model's validation backtest, its calibrated intervals and its logged model: the row
    with their scores and the model's URI."""
    name = row["model"]
    with step(f"{job.dataset}: backtest {name} over the validation part"):
        row = backtest(forecaster, row, df, split, job)
    levels = "/".join(map(str, job.levels))
    with step(f"{job.dataset}: {name} {levels}% intervals: calibrate on validation, score on test; log the model"
              if job.levels else f"{job.dataset}: log the {name} model"):
        return intervals(ctx, job, forecaster, row, df, split)


@task(**COMPUTE)
def check_combination(ctx: RunContext, job: TrainJob, df, split: Split, finals: dict[str, Fitted]
                      ) -> FamilyMix | None:
    return pipeline.combination_check(ctx, job, df, split, finals)


@task(**COMPUTE)
def combined_model(ctx: RunContext, job: TrainJob, df, split: Split, finals: dict[str, Fitted], mix: FamilyMix
                   ) -> tuple[dict, Fitted]:
    return pipeline.combined_model(ctx, job, df, split, finals, mix)


def combine_families(ctx: RunContext, job: TrainJob, df, split: Split, finals: dict[str, Fitted]) -> list[dict]:
    """The families' combination's comparison row, where the check keeps it (else none)."""
    if not job.combine_families or len(finals) < 2:
        return []
    with step(f"{job.dataset}: combine the families' final models? (checked on held-out validation halves)"):
        mix = check_combination(ctx, job, df, split, finals)
    if mix is None:
        return []
    say(f"[{job.dataset}: {mix.describe()}]")
    if not mix.combines:
        return []
    with step(f"{job.dataset}: {COMBINED} ({'+'.join(mix.kept)}, their fits), score the test part once"):
        row, forecaster = combined_model(ctx, job, df, split, finals, mix)
    return [backtest_and_log(ctx, job, df, split, row, forecaster)]


def _families(ctx: RunContext, job: TrainJob, df, split: Split, cluster_workers: int = 0
              ) -> tuple[list[dict], dict[str, Fitted]]:
    """Tune every family in turn (on the cluster's workers when `cluster_workers`), then finish it: one
    comparison row and one final model each. A family is finished (ensemble check included) beside
    the next one's tuning (a thread of this process: the tuning trains on one core, the finishing
    predicts on another); on a cluster, after it."""
    finishing = []
    for family in job.families:
        if cluster_workers:
            with step(f"{job.dataset}: tune {family}: {cluster_workers} workers on the cluster, one study"):
                result = tune_on_cluster(ctx, job, df, split, family, cluster_workers)
        else:
            result = tune_family(ctx, job, df, split, family)
        args = (ctx, job, df, split, result, family)
        finishing.append(finish_family(*args) if cluster_workers else finish_family.submit(*args))
    done = [f if cluster_workers else f.result() for f in finishing]
    return [row for row, _ in done], {row["model"]: model for row, model in done}


# Deployments pass the job as a JSON object: it is rebuilt by the one deserializer, not by Prefect.
@flow(name="train", validate_parameters=False)
def train_flow(job: TrainJob | dict, home: str = ".", cluster_workers: int = 0) -> dict:
    """Tune and register every family of `job`; returns the comparison table and the registrations.
    With `cluster_workers` the tuning runs as that many tasks of the flow's task runner (a Dask cluster
    under `--cluster`), all on the family's one study."""
    job = job if isinstance(job, TrainJob) else from_dict(TrainJob, job)
    df, freq = load_dataset(home, job.dataset)
    split = plan.make_split(df, job)
    plan.check_job(df, freq, job, split)  # seasons, lookbacks, backtest cutoffs: refused before any run
    ctx = start(home, job, df, freq)
    # The baselines are scored beside the tuning (a thread of this process: the tuning trains on one
    # core, they use another); on a cluster, whose workers tune, after it.
    beside = None if cluster_workers else baseline_scores.submit(ctx, job, df, split)
    try:
        rows, finals = _families(ctx, job, df, split, cluster_workers)
        rows += combine_families(ctx, job, df, split, finals)
        with step(f"{job.dataset}: baselines (naive, seasonal naive, ridge) on the same windows"
                  + (", scored beside the tuning" if beside else "")):
            scores, kept = beside.result() if beside else baseline_scores(ctx, job, df, split)
            base_rows = log_baselines(ctx, scores, kept)
        if base_rows and all(r.get("reused") for r in base_rows):
            reused(f"{job.dataset}: baselines: scores reused (same data, code and settings as an earlier run)")
        rows += base_rows
        table, summary = compare(rows, job, ctx)
        pipeline.check_comparison(rows, job)
        with step(f"{job.dataset}: register and gate the champion on the validation backtest"):
            registrations = [register(ctx, job, r, df, split) for r in rows if r["model"] in plan.model_names(job)]
    except BaseException:
        runs.end_run(ctx.parent_run_id, "FAILED")
        raise
    pipeline.finish(ctx, registrations)
    return {"table": table, "summary": summary, "registrations": registrations,
            "parent_run_id": ctx.parent_run_id, "experiment_id": ctx.experiment_id}
