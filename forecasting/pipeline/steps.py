"""The train pipeline's steps as plain functions; `flows/train.py` sequences them, one task each.

A pipeline run is: split and check the job, open a run context (experiment, parent run,
frequency, fingerprint, code version: computed once), tune each family (`search.py`), refit the
best configuration and score it once on test, backtest it over the validation part, score the
baselines on the same windows, compare, and register with the champion rule. See
docs/architecture.md for the data flow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting.api.ensemble import Ensemble
from forecasting.api.forecaster import Forecaster, ForecasterConfig
from forecasting.api.jobs import ABSOLUTE_METRICS, TrainJob
from forecasting.core.backtest import Backtest, BacktestConfig, cross_validation, cutoffs
from forecasting.core.data import ID, Split, split_fractions
from forecasting.core.errors import DataError, ForecastingError
from forecasting.core.evaluation import Predictor, best_baseline
from forecasting.core.intervals import backtest_intervals, choose_calibration, interval_scores
from forecasting.core.options import to_dict
from forecasting.core.provenance import code_version, dataset_fingerprint
from forecasting.core.seasons import kept_periods
from forecasting.core.tables import to_markdown
from forecasting.core.training import TrainConfig
from forecasting.families.recurrent import ModelConfig
from forecasting.tracking import registry, runs
from forecasting.tuning.study import SearchSpace, default_space

__all__ = ["RunContext", "TrainJob"]


@dataclass(frozen=True)
class RunContext:
    """Where a pipeline run records and what it runs on, fixed once when it starts."""

    home: str
    experiment_id: str
    parent_run_id: str
    freq: str
    fingerprint: str  # of the dataset the run trains on
    code_version: str


# --------------------------------------------------------------------------- the job and the data


def make_split(df: pd.DataFrame, job: TrainJob) -> Split:
    """Test part by fraction; validation by fraction, or with `objective="backtest"` exactly the
    rows its K cutoffs need (H + (K - 1) * step before the test part)."""
    split = split_fractions(df.groupby(ID, sort=False).size(), job.val, job.test)
    if job.objective != "backtest":
        return split
    need = job.horizon + (job.backtest.n_windows - 1) * (job.backtest.step or job.horizon)
    return replace(split, train_end=split.val_end - need)


def base_config(df: pd.DataFrame, freq: str, job: TrainJob, split: Split) -> ForecasterConfig:
    """Defaults the search starts from (the searched fields are overwritten per trial), with the
    seasonal periods this dataset's training history supports."""
    covs = tuple(c for c in df.columns if c not in (ID, "ds", "y"))
    try:
        seasons = kept_periods(freq, split.train_end, job.seasons or None)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    cutoffs = job.backtest.n_windows if job.objective == "backtest" else 0
    train = TrainConfig(max_epochs=job.tune.max_epochs, seed=job.seed, device=job.device,
                        max_train_windows=job.max_train_windows, max_val_windows=job.max_val_windows,
                        val_cutoffs=cutoffs, val_step=job.backtest.step or 0,
                        val_metric="mae" if job.metric in ABSOLUTE_METRICS else "mse")
    return ForecasterConfig(model=ModelConfig(horizon=job.horizon), train=train, freq=freq,
                            calendar=job.calendar, covariates=covs, seasons=seasons)


def search_space(df: pd.DataFrame, split: Split, base: ForecasterConfig, job: TrainJob) -> SearchSpace:
    """The default space, with lookbacks every series' training part can hold (up to two of the
    longest seasons, so the longest kept period is always reachable)."""
    room = int(np.min(split.train_end)) - job.horizon - 8
    periods = base.seasons or (base.period,)
    cap = min(job.max_lookback or max(2 * max(periods), 4 * job.horizon), room)
    if cap < 2:
        shortest = split.ids[int(np.argmin(split.train_end))]
        raise DataError(f"series {shortest!r}: training part too short for horizon {job.horizon}")
    return default_space(periods, cap, job.horizon)


def check_job(df: pd.DataFrame, freq: str, job: TrainJob, split: Split) -> None:
    """Everything about a job that can be refused from the data alone, before any run is created:
    seasons the history cannot hold, a training part too short, no validation backtest cutoff."""
    base = base_config(df, freq, job, split)
    space = search_space(df, split, base, job)
    rows = cutoffs(split.val_end, job.horizon, max(space.lookbacks), job.backtest, split.train_end)
    empty = [u for u, r in zip(split.ids, rows, strict=True) if len(r) == 0]
    if empty:
        raise DataError(f"series {empty[0]!r} ({len(empty)} in all): the validation part holds no backtest cutoff "
                        f"for horizon {job.horizon}; give it more rows (--val) or a shorter horizon")
    check_levels_fit(split, job)
    short = [u for u, n in zip(split.ids, split.lengths - split.val_end, strict=True) if n < job.horizon]
    if len(short) == len(split.ids):
        raise DataError(f"the test part holds no window of horizon {job.horizon} (series {short[0]!r} has "
                        f"{int((split.lengths - split.val_end)[0])} test rows); give it more rows (--test)")


def check_levels_fit(split: Split, job: TrainJob) -> None:
    """Conformal intervals at level L need at least L / (100 - L) validation residuals per horizon
    step (19 at 95 %): refuse levels the validation part cannot calibrate, before any run."""
    n = int(np.maximum(split.val_end - split.train_end - job.horizon + 1, 0).sum())  # windows, step 1
    for lv in sorted(job.levels, reverse=True):
        need = -(-lv // (100 - lv))
        if n < need:
            raise DataError(f"--level {lv}: the validation part holds {n} forecast window(s) per horizon step, "
                            f"{need} are needed to calibrate it; give it more rows (--val) or lower the level")


# --------------------------------------------------------------------------- runs


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


# --------------------------------------------------------------------------- final models


def inference_ms_per_1000(forecaster: Forecaster | Ensemble, x: np.ndarray, repeats: int = 3) -> float:
    """Milliseconds to forecast 1,000 series (windows) on the CPU, best of `repeats`."""
    x = np.resize(x, (1000, *x.shape[1:])).astype(np.float32)  # cycle the windows up to 1,000
    fn = forecaster.predictor("cpu").fn
    fn(x[:10])  # warm-up
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def fit_final(df: pd.DataFrame, split: Split, cfgs: list[ForecasterConfig]) -> tuple[Forecaster | Ensemble, dict]:
    """Refit one configuration, or each of several as an equal-weight ensemble; returns the model
    and its cost (seconds, peak memory, best epoch of the first member)."""
    members, fits = [], []
    for cfg in cfgs:
        f = Forecaster(cfg)
        fits.append(f.fit(df, split))
        members.append(f)
    model = members[0] if len(members) == 1 else Ensemble(members)
    cost = {"train_seconds": sum(r.seconds for r in fits), "peak_memory_mb": max(r.peak_memory_mb for r in fits),
            "best_epoch": fits[0].best_epoch, "device": fits[0].device, "ensemble_size": len(members)}
    return model, cost


def final_model(ctx: RunContext, job: TrainJob, df: pd.DataFrame, split: Split, cfgs: list[ForecasterConfig],
                family: str) -> tuple[dict, Forecaster | Ensemble]:
    """Refit the best configuration (or the K best as an ensemble), evaluate once on test, log run and
    artifacts. Returns the comparison row and the fitted model (backtested, calibrated and logged as
    a pyfunc model by the next steps)."""
    with runs.run(ctx.experiment_id, f"{family}-final", ctx.parent_run_id,
                  tags={"kind": "final", "family": family}) as run_id:
        forecaster, cost = fit_final(df, split, cfgs)
        ev = forecaster.evaluate(df, split, "test")
        x, _ = forecaster.windows(df, split, "test").arrays()
        row = {"model": family, **ev.metrics, "params": forecaster.n_parameters, **cost,
               "infer_ms_per_1000": inference_ms_per_1000(forecaster, x), "run_id": run_id}
        runs.log_values(run_id, params=runs.params_of(forecaster) | {"ensemble_size": len(cfgs)},
                        metrics={f"test_{k}": v for k, v in ev.metrics.items()} | {
                            k: row[k] for k in ("train_seconds", "peak_memory_mb", "best_epoch",
                                                "infer_ms_per_1000")} | {"n_parameters": row["params"]})
        runs.log_history(run_id, forecaster.fit_result_.history)
        runs.log_loss_curves(run_id, forecaster, f"{job.dataset} {family} H={job.horizon}")
    return row, forecaster


def part_backtest(forecaster: Forecaster, df: pd.DataFrame, end: np.ndarray, lo: np.ndarray, cfg: BacktestConfig,
                  predictors: list[Predictor] | None = None) -> Backtest:
    """Rolling-origin backtest whose targets lie in rows [lo, end) of each series (inputs may come
    from before `lo`): the validation part or the test part."""
    preds = predictors or [forecaster.predictor()]
    return cross_validation(forecaster.panel(df), preds, forecaster.cfg.model.horizon, end,
                            forecaster.scaler_.mean[:, 0], forecaster.scaler_.std[:, 0], forecaster.mase_scale_,
                            cfg, lo)


def validation_backtest(forecaster: Forecaster, df: pd.DataFrame, split: Split, job: TrainJob,
                        predictors: list[Predictor] | None = None) -> Backtest:
    """Rolling-origin backtest over the validation part (cutoffs `job.backtest`): targets lie in
    validation only, inputs come from before each cutoff. Model selection and champion gating use
    it; the test part is never touched."""
    return part_backtest(forecaster, df, split.val_end, split.train_end, job.backtest, predictors)


def calibration_backtest(forecaster: Forecaster, df: pd.DataFrame, split: Split,
                         predictors: list[Predictor] | None = None) -> Backtest:
    """Every validation window (cutoffs one row apart): the residuals the intervals are calibrated on."""
    return part_backtest(forecaster, df, split.val_end, split.train_end, BacktestConfig(0, 1), predictors)


def test_backtest(forecaster: Forecaster, df: pd.DataFrame, split: Split, predictors: list[Predictor] | None = None
                  ) -> Backtest:
    """Non-overlapping windows over the test part (cutoffs one horizon apart): where intervals are scored."""
    H = forecaster.cfg.model.horizon
    return part_backtest(forecaster, df, split.lengths, split.val_end, BacktestConfig(0, H), predictors)


def backtest_step(forecaster: Forecaster, row: dict, df: pd.DataFrame, split: Split, job: TrainJob) -> dict:
    """The validation backtest of a final model, logged to its run (metrics, per-cutoff table, plot);
    returns the row with `val_backtest_<metric>` columns added."""
    bt = validation_backtest(forecaster, df, split, job)
    overall = bt.metrics.iloc[0].drop("predictor").to_dict()
    if row.get("run_id"):
        runs.log_backtest(row["run_id"], bt, f"{job.dataset} {row['model']} H={job.horizon}")
    return {**row, **{f"val_backtest_{k}": v for k, v in overall.items()},
            "backtest_cutoffs": int(bt.by_cutoff["cutoff"].nunique())}


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
        forecaster.conformal_ = choose_calibration(calibration_backtest(forecaster, df, split).forecasts, df,
                                                   job.levels, forecaster.cfg.period)
        frame = backtest_intervals(frame, df, forecaster.conformal_, job.levels)
        row = {**row, **interval_scores(frame, job.levels, mase_scales(forecaster))}
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


def mase_scales(forecaster: Forecaster) -> pd.Series:
    """Each series' in-sample seasonal-naive MAE (MASE and MSIS denominator), by unique_id."""
    return pd.Series(forecaster.mase_scale_, index=list(forecaster.scaler_.ids))


def interval_names(levels: tuple[int, ...]) -> list[str]:
    """The interval score columns of a row: coverage, MSIS and pinball per level."""
    return [f"{k}_{lv}" for lv in sorted(levels) for k in ("coverage", "msis", "pinball")]


def last_windows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of each series' last cutoff in a cross-validation frame (what a fan chart shows)."""
    last = frame.groupby(ID, sort=False)["cutoff"].transform("max")
    return frame[frame["cutoff"] == last]


# --------------------------------------------------------------------------- baselines and comparison


def baseline_rows(ctx: RunContext, job: TrainJob, df: pd.DataFrame, split: Split) -> list[dict]:
    """Naive, seasonal naive at every kept period and the ridge baseline, scored on the same test
    windows and the same validation backtest as the models, with conformal intervals calibrated
    and scored the same way; each logged as a nested run."""
    base = base_config(df, ctx.freq, job, split)
    space = search_space(df, split, base, job)
    f = Forecaster(replace(base, model=replace(base.model, lookback=max(space.lookbacks))))
    f.fit_scaler(df, split)
    predictors, linear = f.baselines(df, split, space.lookbacks)
    bt = validation_backtest(f, df, split, job, predictors)
    widths = predictor_intervals(f, df, split, predictors, job.levels)
    rows = []
    for p in predictors:
        ev = f.evaluate(df, split, "test", predictor=p)
        val = {f"val_backtest_{k}": v for k, v in bt.metrics.set_index("predictor").loc[p.name].items()}
        with runs.run(ctx.experiment_id, p.name, ctx.parent_run_id, tags={"kind": "baseline", "family": p.name}
                      ) as run_id:
            params = {"lookback": p.lookback} | ({"alpha": linear["alpha"]} if p.name == "linear" else {})
            runs.log_values(run_id, params=params, metrics={f"test_{k}": v for k, v in ev.metrics.items()} | val
                            | {f"test_{k}": v for k, v in widths.get(p.name, {}).items()})
        rows.append({"model": p.name, **ev.metrics, **val, **widths.get(p.name, {}),
                     "params": p.lookback * job.horizon + job.horizon if p.name == "linear" else 0,
                     "train_seconds": 0.0, "peak_memory_mb": 0.0, "infer_ms_per_1000": float("nan"), "device": "-"})
    return rows


def predictor_intervals(f: Forecaster, df: pd.DataFrame, split: Split, predictors: list[Predictor],
                        levels: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """Each baseline's interval scores on the test part, calibrated like the models' (conformal on
    its own validation residuals): the reference every model's coverage and MSIS are shown next to."""
    if not levels:
        return {}
    cal = calibration_backtest(f, df, split, predictors).forecasts
    test = test_backtest(f, df, split, predictors).forecasts
    out = {}
    for p in predictors:
        conf = choose_calibration(cal, df, levels, f.cfg.period, model_col=p.name)
        frame = backtest_intervals(test, df, conf, levels, model_col=p.name)
        out[p.name] = interval_scores(frame, levels, mase_scales(f), model_col=p.name)
    return out


COMPARISON_COLUMNS = ["model", "mae", "rmse", "smape", "mase", "mse_std", "mae_std", "val_backtest_mase",
                      "val_backtest_mse_std", "vs_best_baseline", "params", "train_seconds", "peak_memory_mb",
                      "infer_ms_per_1000"]


def comparison_columns(job: TrainJob) -> list[str]:
    """The table's columns: point metrics, the validation backtest, then coverage and MSIS per level."""
    shown = [f"{k}_{lv}" for lv in sorted(job.levels) for k in ("coverage", "msis")]
    i = COMPARISON_COLUMNS.index("vs_best_baseline") + 1
    return COMPARISON_COLUMNS[:i] + shown + COMPARISON_COLUMNS[i:]


def comparison(rows: list[dict], job: TrainJob, parent_run_id: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Models and baselines side by side on the test part, with each row's margin to the best
    baseline (`vs_best_baseline`: relative difference of `job.metric`, negative is better).

    Returns the table (logged as CSV and Markdown on the parent run) and a summary naming the best
    baseline and each model's margin (tags and metrics of the parent run)."""
    best = best_baseline(rows, job.metric, job.families)
    table = pd.DataFrame(rows)
    table["vs_best_baseline"] = table[job.metric] / best[1] - 1.0 if best else np.nan
    table = table.reindex(columns=comparison_columns(job))
    summary = {"best_baseline": best[0] if best else None, "metric": job.metric,
               "best_baseline_value": best[1] if best else None,
               "margins": {r["model"]: float(r[job.metric]) / best[1] - 1.0
                           for r in rows if best and r["model"] in job.families}}
    if parent_run_id:
        runs.log_table(parent_run_id, table, "comparison")
        runs.log_values(parent_run_id, tags={"best_baseline": summary["best_baseline"]},
                            metrics={f"test_{job.metric}_vs_best_baseline_{k}": v
                                     for k, v in summary["margins"].items()})
    return table, summary


def check_comparison(rows: list[dict], job: TrainJob) -> None:
    """Nothing is registered from a comparison with a missing score: every model and baseline must
    have a finite test and validation-backtest metric."""
    for r in rows:
        for key in (job.metric, gate_metric(job)):
            if not np.isfinite(float(r.get(key, np.nan))):
                raise ForecastingError(f"{r['model']}: {key} is not finite ({r.get(key)}); nothing was registered")


def gate_metric(job: TrainJob) -> str:
    """The row column that decides champion versus challenger: the validation backtest's metric."""
    return f"val_backtest_{job.metric}"


def train_end(df: pd.DataFrame, split: Split) -> pd.Timestamp:
    """The latest timestamp of any series' training part (what a model fitted on it has seen)."""
    ds = df.groupby(ID, sort=False)["ds"]
    return max(pd.Timestamp(g.iloc[int(e) - 1]) for (_, g), e in zip(ds, split.train_end, strict=True) if e > 0)


# --------------------------------------------------------------------------- registry


def register_family(ctx: RunContext, job: TrainJob, row: dict, df: pd.DataFrame, split: Split) -> dict:
    """Register the family's final model as `<dataset>-<family>`; it becomes champion only if its
    validation-backtest metric beats the current champion's on the same cutoffs of the same data
    (the champion is re-scored, not trusted from its tag). Test scores never move the alias."""
    tags = {"dataset_fingerprint": ctx.fingerprint, "horizon": job.horizon, "frequency": ctx.freq,
            "code_version": ctx.code_version, "family": row["model"], f"test_{job.metric}": row[job.metric],
            "train_end": str(train_end(df, split))}

    def rescore(forecaster: Forecaster) -> float:
        return float(validation_backtest(forecaster, df, split, job).metrics[job.metric].iloc[0])

    model_tags = {"dataset": job.dataset, "horizon": job.horizon, "frequency": ctx.freq, "family": row["model"],
                  "gate_metric": gate_metric(job)}
    shown = {k: row[k] for k in comparison_columns(job) if k in row and k != "vs_best_baseline"}
    description = "Comparison row of this version:\n\n" + to_markdown(pd.DataFrame([shown]))
    return registry.register(row["model_uri"], f"{job.dataset}-{row['model']}", gate_metric(job),
                             float(row[gate_metric(job)]), tags, rescore, model_tags, description)


def finish(ctx: RunContext, registrations: list[dict]) -> None:
    """Record what was registered on the parent run and end it."""
    for r in registrations:
        runs.log_values(ctx.parent_run_id, tags={f"registered.{r['name']}": f"v{r['version']}@{r['alias']}"})
    runs.end_run(ctx.parent_run_id)
