"""The train pipeline's MLflow steps; `flows/train.py` sequences them, one task each.

A pipeline run is: split and check the job (`plan.py`), open a run context (experiment, parent
run, frequency, fingerprint, code version: computed once), tune each family (`search.py`), refit
the best configuration and score it once on test, backtest it over the validation part, calibrate
its intervals, score the baselines on the same windows, compare, and register with the champion
rule. See docs/architecture.md for the data flow.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting.api import family_mix
from forecasting.api.ensemble import Ensemble
from forecasting.api.family_mix import COMBINED, FamilyMix
from forecasting.api.forecaster import Fitted, Forecaster, ForecasterConfig, build_panel
from forecasting.api.jobs import TrainJob
from forecasting.core.columns import CUTOFF, ID
from forecasting.core.data import Split
from forecasting.core.errors import ForecastingError
from forecasting.core.evaluation import Predictor, best_baseline
from forecasting.core.files import write_json
from forecasting.core.home import Home
from forecasting.core.intervals import backtest_intervals, choose_calibration, interval_scores
from forecasting.core.options import to_dict
from forecasting.core.provenance import code_version, dataset_fingerprint
from forecasting.pipeline.plan import (
    RunContext,
    base_config,
    calibration_backtest,
    comparison_columns,
    fit_cache,
    fit_cost,
    fit_final,
    gate_metric,
    inference_ms_per_1000,
    interval_names,
    last_windows,
    model_names,
    search_space,
    test_backtest,
    train_end,
    validation_backtest,
)
from forecasting.tracking import registry, runs

__all__ = ["RunContext", "TrainJob"]


def run_context(home: str | Path, job: TrainJob, df: pd.DataFrame, freq: str, parent_run_id: str,
                kind: str = "pipeline") -> RunContext:
    """The context of a run on `df` under `parent_run_id` in experiment `<dataset>-h<H>`."""
    runs.configure(home)
    exp = runs.ensure_experiment(runs.experiment_name(job.dataset, job.horizon), home)
    return RunContext(str(Path(home).resolve()), exp, parent_run_id, freq, dataset_fingerprint(df),
                      code_version())


def start_pipeline(home: str | Path, job: TrainJob, df: pd.DataFrame, freq: str) -> RunContext:
    """A parent run for this pipeline run (closing what a killed earlier run left RUNNING)."""
    ctx = run_context(home, job, df, freq, "")
    closed = runs.close_dead_runs(ctx.experiment_id)
    run_id = runs.start_run(ctx.experiment_id, f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}",
                            tags={"kind": "pipeline", "dataset": job.dataset, **runs.owner_tags(),
                                  **({"closed_dead_runs": ",".join(closed)} if closed else {})})
    runs.log_values(run_id, params=runs.flatten(to_dict(job)), tags={
        "dataset_fingerprint": ctx.fingerprint, "code_version": ctx.code_version, "n_series": df[ID].nunique()})
    return replace(ctx, parent_run_id=run_id)


def final_model(ctx: RunContext, job: TrainJob, df: pd.DataFrame, split: Split, cfgs: list[ForecasterConfig],
                family: str, check: dict | None = None) -> tuple[dict, Forecaster | Ensemble]:
    """Refit the best configuration (or the K best as an ensemble), evaluate once on test, log run and
    artifacts (with `check`, the ensemble check's record). Returns the comparison row and the fitted
    model (backtested, calibrated and logged as a pyfunc model by the next steps)."""
    def make() -> tuple[Forecaster | Ensemble, dict, dict]:
        forecaster, cost = fit_final(df, split, cfgs, fit_cache(ctx), job.ensemble_combine)
        return forecaster, cost, {"ensemble_size": len(cfgs), "ensemble_combine": job.ensemble_combine, **(check or {})}

    return _final_run(ctx, job, df, split, family, make)


def combined_model(ctx: RunContext, job: TrainJob, df: pd.DataFrame, split: Split, finals: dict[str, Fitted],
                   mix: FamilyMix) -> tuple[dict, Ensemble]:
    """The combination of the kept families' final models (`family_mix`; their fits, no training),
    evaluated once on test and logged as its own final run, like a family's."""
    def make() -> tuple[Ensemble, dict, dict]:
        forecaster = family_mix.pooled([finals[f] for f in mix.kept], job.ensemble_combine)
        cost = fit_cost(forecaster.members, loaded=len(forecaster.members))
        return forecaster, cost, {"ensemble_size": len(forecaster.members), "ensemble_combine": job.ensemble_combine,
                                  **mix.params()}

    # No loss curves: it trained nothing; each family's final run holds its own.
    return _final_run(ctx, job, df, split, COMBINED, make, curves=False)


def combination_check(ctx: RunContext, job: TrainJob, df: pd.DataFrame, split: Split, finals: dict[str, Fitted]
                      ) -> FamilyMix | None:
    """Whether to combine the families' final models (`family_mix.check`), recorded on the pipeline run."""
    mix = family_mix.check(finals, df, split, job.metric, job.ensemble_combine)
    if mix is not None:
        runs.log_values(ctx.parent_run_id, params=mix.params())
    return mix


def _final_run(ctx: RunContext, job: TrainJob, df: pd.DataFrame, split: Split, name: str, make,
               curves: bool = True) -> tuple[dict, Forecaster | Ensemble]:
    """A final model's run: `make()` -> (model, cost, extra params) inside it, the test part scored
    once, parameters and metrics logged, and with `curves` the fit's history and loss curves. Returns
    the comparison row and the model."""
    with runs.run(ctx.experiment_id, f"{name}-final", ctx.parent_run_id,
                  tags={"kind": "final", "family": name}) as run_id:
        forecaster, cost, extra = make()
        ev = forecaster.evaluate(df, split, "test")
        x, _ = forecaster.windows(df, split, "test").arrays()
        row = {"model": name, **ev.metrics, "params": forecaster.n_parameters, **cost,
               "infer_ms_per_1000": inference_ms_per_1000(forecaster, x), "run_id": run_id}
        runs.log_values(run_id, params=runs.params_of(forecaster) | extra,
                        metrics={f"test_{k}": v for k, v in ev.metrics.items()} | {
                            k: row[k] for k in ("train_seconds", "peak_memory_mb", "best_epoch",
                                                "infer_ms_per_1000", "loaded_fits")} | {"n_parameters": row["params"]})
        if curves:
            runs.log_history(run_id, forecaster.fit_result_.history)
            runs.log_loss_curves(run_id, forecaster, f"{job.dataset} {name} H={job.horizon}")
    return row, forecaster


def backtest_step(forecaster: Forecaster, row: dict, df: pd.DataFrame, split: Split, job: TrainJob) -> dict:
    """The validation backtest of a final model, logged to its run (metrics, per-cutoff table, plot);
    returns the row with `val_backtest_<metric>` columns added."""
    bt = validation_backtest(forecaster, df, split, job)
    overall = bt.metrics.iloc[0].drop("predictor").to_dict()
    if row.get("run_id"):
        runs.log_backtest(row["run_id"], bt, f"{job.dataset} {row['model']} H={job.horizon}")
    return {**row, **{f"val_backtest_{k}": v for k, v in overall.items()},
            "backtest_cutoffs": int(bt.by_cutoff[CUTOFF].nunique())}


def intervals_step(ctx: RunContext, job: TrainJob, forecaster: Forecaster, row: dict, df: pd.DataFrame,
                   split: Split) -> dict:
    """Calibrate the final model's conformal intervals on every validation window, score them once on
    the test part (coverage, MSIS, scaled pinball), log them with a fan chart (the forecast and
    actuals alone when no level is asked for), and log the model with its calibration as the
    pyfunc model. Returns the row with the interval scores and the model URI."""
    title = f"{job.dataset} {row['model']} H={job.horizon}: the last test window of each series"
    frame = test_backtest(forecaster, df, split).forecasts
    if job.levels:
        # The scale (seasonal or the series' own residuals) is chosen on the validation windows only.
        forecaster.calibrate(df, job.levels, split.val_end, split.train_end)
        frame = backtest_intervals(frame, df, forecaster.conformal_, job.levels)
        row = {**row, **interval_scores(frame, job.levels, forecaster.mase_scales())}
        runs.log_values(row["run_id"], params=calibration_params(forecaster.conformal_),
                        metrics={f"test_{k}": row[k] for k in interval_names(job.levels)})
        title += f", {'/'.join(map(str, job.levels))}% intervals"
    runs.log_fan_chart(row["run_id"], df, last_windows(frame), job.levels, job.plot_series, title)
    example = registry.input_example(df, forecaster.cfg.model.lookback)
    return {**row, "model_uri": registry.log_model(row["run_id"], forecaster, example)}


def calibration_params(conf) -> dict:
    """What the run records of a calibration: windows per step, the scale mode and why it was chosen."""
    choice = conf.choice or {}
    out = {"interval_calibration_windows": conf.n_calibration, "interval_scale": conf.mode}
    out |= {f"interval_validation_msis_{k}": v for k, v in (choice.get("validation_msis") or {}).items()}
    return out | ({"interval_scale_fallback": choice["fallback"]} if choice.get("fallback") else {})


# What decides the baselines' scores besides the data, its frequency and the code: a job differing only
# in its search budget, families or workers reuses them.
BASELINE_FIELDS = ("horizon", "val", "test", "seed", "calendar", "metric", "max_lookback", "seasons", "backtest",
                   "objective", "levels", "statistical")


def baseline_key(ctx: RunContext, job: TrainJob) -> str:
    """A digest of the data (fingerprint, frequency), the code version and the job's BASELINE_FIELDS."""
    job_dict = to_dict(job)
    return _digest({k: job_dict[k] for k in BASELINE_FIELDS} | {"data": ctx.fingerprint, "freq": ctx.freq,
                                                               "code": ctx.code_version})


def _digest(what: dict) -> str:
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def baseline_rows(ctx: RunContext, job: TrainJob, df: pd.DataFrame, split: Split) -> list[dict]:
    """Naive, seasonal naive at every kept period, the ridge baseline and (with `job.statistical`)
    statsforecast's models, scored on the same test windows and the same validation backtest as
    the models, with conformal intervals calibrated and scored the same way; each logged as a
    nested run. Scores already computed in this home for the same data, code and settings
    (`baseline_key`) are read back, not recomputed; each row's `reused` says which."""
    return log_baselines(ctx, *baseline_scores(ctx, job, df, split))


def baseline_scores(ctx: RunContext, job: TrainJob, df: pd.DataFrame, split: Split) -> tuple[list[dict], bool]:
    """The baselines' scores (`score_baselines`), or those this home kept for the same data, code and
    settings; and whether they were kept. Writes no run: it may run beside the tuning."""
    path = Home.of(ctx.home).baselines / f"{baseline_key(ctx, job)}.json"
    if path.is_file():
        return json.loads(path.read_text()), True
    scores = score_baselines(ctx, job, df, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(scores, path)
    return scores, False


def log_baselines(ctx: RunContext, scores: list[dict], reused: bool) -> list[dict]:
    """Each baseline's scores logged as a nested run: the comparison rows (`reused` on each)."""
    return [log_baseline(ctx, s) | {"reused": reused} for s in scores]


def score_baselines(ctx: RunContext, job: TrainJob, df: pd.DataFrame, split: Split) -> list[dict]:
    """Every baseline's scores (test metrics, validation backtest, interval scores, CPU seconds)."""
    base = base_config(df, ctx.freq, job, split)
    space = search_space(df, split, base, job)
    f = Forecaster(replace(base, model=replace(base.model, lookback=max(space.lookbacks))))
    f.fit_scaler(df, split)
    simple, _ = f.baselines(df, split, space.lookbacks)
    statistical = statistical_predictors(f, df, split, max(space.lookbacks)) if job.statistical else []
    predictors = simple + statistical
    bt = validation_backtest(f, df, split, job, predictors)
    # Statistical models cost a decomposition or a filter per window: their intervals are calibrated
    # on the validation windows one horizon apart (every window for the others).
    widths = predictor_intervals(f, df, split, simple, job.levels) | predictor_intervals(
        f, df, split, statistical, job.levels, step=job.horizon)
    return [score_baseline(f, df, split, p, bt, widths.get(p.name, {})) for p in predictors]


def statistical_predictors(f: Forecaster, df: pd.DataFrame, split: Split, lookback: int) -> list[Predictor]:
    """statsforecast's MSTL, AutoETS and AutoTheta, fitted per series on the training rows; they read
    the same lookback window as the ridge baseline."""
    from forecasting.stats.predictors import stats_predictors  # statsforecast: imported only when asked

    return stats_predictors(build_panel(df, f.cfg), split, f.scaler_.mean[:, 0], f.scaler_.std[:, 0],
                            f.cfg.model.horizon, lookback, f.cfg.seasons or (f.cfg.period,))


def score_baseline(f: Forecaster, df: pd.DataFrame, split: Split, p: Predictor, bt, widths: dict) -> dict:
    """One baseline's scores: what it is (`p.params`), its test metrics, validation backtest and
    interval scores, and the CPU seconds of scoring the test part (this thread's: the baselines may be
    scored beside the tuning)."""
    t0 = time.thread_time()
    ev = f.evaluate(df, split, "test", predictor=p)
    cpu = time.thread_time() - t0
    val = {f"val_backtest_{k}": v for k, v in bt.metrics.set_index("predictor").loc[p.name].items()}
    return {"name": p.name, "params": {k: _plain(v) for k, v in p.params.items()},
            "metrics": {k: float(v) for k, v in ev.metrics.items()}, "val": {k: float(v) for k, v in val.items()},
            "widths": {k: float(v) for k, v in widths.items()}, "cpu_seconds": cpu}


def _plain(v):
    """A JSON value for a predictor parameter (numpy scalars and tuples become Python ones)."""
    if isinstance(v, np.generic):
        return v.item()
    return list(v) if isinstance(v, tuple) else v


def log_baseline(ctx: RunContext, s: dict) -> dict:
    """One baseline's comparison row from its scores, logged as a nested run of this pipeline run."""
    p, name = s["params"], s["name"]
    with runs.run(ctx.experiment_id, name, ctx.parent_run_id, tags={"kind": "baseline", "family": name}) as run_id:
        runs.log_values(run_id, params=p, metrics={f"test_{k}": v for k, v in s["metrics"].items()} | s["val"]
                        | {f"test_{k}": v for k, v in s["widths"].items()} | {"test_cpu_seconds": s["cpu_seconds"]})
    return {"model": name, **s["metrics"], **s["val"], **s["widths"], "params": p.get("n_parameters", 0),
            "train_seconds": float(p.get("fit_seconds", 0.0)), "peak_memory_mb": 0.0,
            "infer_ms_per_1000": float("nan"), "device": "-"}


def predictor_intervals(f: Forecaster, df: pd.DataFrame, split: Split, predictors: list[Predictor],
                        levels: tuple[int, ...], step: int = 1) -> dict[str, dict[str, float]]:
    """Each baseline's interval scores on the test part, calibrated like the models' (conformal on
    its own validation residuals): the reference every model's coverage and MSIS are shown next to."""
    if not levels or not predictors:
        return {}
    cal = calibration_backtest(f, df, split, predictors, step).forecasts
    test = test_backtest(f, df, split, predictors).forecasts
    out = {}
    for p in predictors:
        conf = choose_calibration(cal, df, levels, f.cfg.period, model_col=p.name)
        frame = backtest_intervals(test, df, conf, levels, model_col=p.name)
        out[p.name] = interval_scores(frame, levels, f.mase_scales(), model_col=p.name)
    return out


def comparison(rows: list[dict], job: TrainJob, parent_run_id: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Models and baselines side by side on the test part, with each row's margin to the best
    baseline (`vs_best_baseline`: relative difference of `job.metric`, negative is better).

    Returns the table (logged as CSV and Markdown on the parent run) and a summary naming the best
    baseline and each model's margin (tags and metrics of the parent run)."""
    best = best_baseline(rows, job.metric, model_names(job))
    table = pd.DataFrame(rows)
    table["vs_best_baseline"] = table[job.metric] / best[1] - 1.0 if best else np.nan
    table = table.reindex(columns=comparison_columns(job))
    summary = {"best_baseline": best[0] if best else None, "metric": job.metric,
               "best_baseline_value": best[1] if best else None,
               "margins": {r["model"]: float(r[job.metric]) / best[1] - 1.0
                           for r in rows if best and r["model"] in model_names(job)}}
    if parent_run_id:
        runs.log_table(parent_run_id, table, "comparison")
        runs.log_values(parent_run_id, tags={"best_baseline": summary["best_baseline"]},
                        metrics=key_scores(rows, job, summary))
    return table, summary


def key_scores(rows: list[dict], job: TrainJob, summary: dict) -> dict[str, float]:
    """The parent run's metrics, so the UI's run list shows them: each family's test and gate scores,
    its margin to the best baseline, and the best baseline's test score."""
    gate = gate_metric(job)
    scores = {f"test_{job.metric}_vs_best_baseline_{k}": v for k, v in summary["margins"].items()}
    for r in rows:
        if r["model"] in model_names(job):
            scores |= {f"{r['model']}.test_{job.metric}": float(r[job.metric]),
                       f"{r['model']}.{gate}": float(r.get(gate, "nan"))}
    if summary["best_baseline"] is not None:
        scores[f"best_baseline.test_{job.metric}"] = float(summary["best_baseline_value"])
    return scores


def check_comparison(rows: list[dict], job: TrainJob) -> None:
    """Nothing is registered from a comparison with a missing score: every model and baseline must
    have a finite test and validation-backtest metric."""
    for r in rows:
        for key in (job.metric, gate_metric(job)):
            if not np.isfinite(float(r.get(key, np.nan))):
                raise ForecastingError(f"{r['model']}: {key} is not finite ({r.get(key)}); nothing was registered")


def register_family(ctx: RunContext, job: TrainJob, row: dict, df: pd.DataFrame, split: Split) -> dict:
    """Register the family's final model as `<dataset>-<family>`; it becomes champion only if its
    validation-backtest metric beats the current champion's on the same cutoffs of the same data
    (the champion is re-scored, not trusted from its tag). Test scores never move the alias."""
    tags = {"dataset_fingerprint": ctx.fingerprint, "horizon": job.horizon, "frequency": ctx.freq,
            "code_version": ctx.code_version, "family": row["model"], f"test_{job.metric}": row[job.metric],
            "train_end": str(train_end(df, split))}

    def rescore(forecaster: Forecaster) -> float:
        return float(validation_backtest(forecaster, df, split, job).metrics[job.metric].iloc[0])

    name, key = f"{job.dataset}-{row['model']}", registration_key(ctx, job)
    held = None if job.force else registry.same_version(name, "registration_key", key)
    if held is not None:  # the registry already holds this model: a new version would be a copy
        return unchanged(name, held, gate_metric(job), float(row[gate_metric(job)]))
    tags["registration_key"] = key
    model_tags = {"dataset": job.dataset, "horizon": job.horizon, "frequency": ctx.freq, "family": row["model"],
                  "gate_metric": gate_metric(job)}
    description = version_description(row, comparison_columns(job))
    return registry.register(row["model_uri"], name, gate_metric(job), float(row[gate_metric(job)]), tags, rescore,
                             model_tags, description) | {"unchanged": False}


def version_description(row: dict, columns: list[str]) -> str:
    """The registered version's scores as a Markdown list, one per line: MLflow's model pages draw a
    one-row table without cell padding, so its columns ran together and overflowed the panel."""
    def shown(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = [f"- {k}: {shown(row[k])}" for k in columns if k in row and k not in ("model", "vs_best_baseline")]
    if isinstance(row.get("vs_best_baseline"), float) and np.isfinite(row["vs_best_baseline"]):
        lines.insert(0, f"- against the best baseline: {row['vs_best_baseline']:+.1%}")
    return f"Scores of this version ({row['model']}, the comparison table's row):\n\n" + "\n".join(lines)


def unchanged(name: str, held: dict, metric: str, value: float) -> dict:
    """A registration result for a model the registry already holds as version `held`."""
    return {"name": name, "version": held["version"], "alias": "@".join(held["aliases"]) or None, "metric": metric,
            "value": value, "unchanged": True, "previous_champion": None,
            "previous_version": registry.champion_version(name)}


# Job fields that do not change the model a family registers: which other families ran, what the
# fan charts show first, and whether an unchanged model is registered anyway.
UNREGISTERED_FIELDS = ("families", "plot_series", "force")


def registration_key(ctx: RunContext, job: TrainJob) -> str:
    """A digest of the data (fingerprint, frequency), the code version and every job field that
    shapes a family's model: equal keys mean a rerun would register the same model again."""
    what = {k: v for k, v in to_dict(job).items() if k not in UNREGISTERED_FIELDS}
    return _digest(what | {"data": ctx.fingerprint, "freq": ctx.freq, "code": ctx.code_version})


def finish(ctx: RunContext, registrations: list[dict]) -> None:
    """Record what was registered on the parent run and end it."""
    for r in registrations:
        what = f"unchanged: v{r['version']} already held" if r.get("unchanged") else f"v{r['version']}@{r['alias']}"
        runs.log_values(ctx.parent_run_id, tags={f"registered.{r['name']}": what})
    runs.end_run(ctx.parent_run_id)
