"""The training pipeline's steps as plain functions: the Prefect flows sequence these.

Each step takes and returns plain values (frames, configs, run ids, dicts), so a
flow task is one call of one of them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from forecasting import tracking
from forecasting.backtest import Backtest, BacktestConfig, cross_validation, cutoffs
from forecasting.data import (
    ID,
    IngestConfig,
    IngestReport,
    Split,
    check_name,
    infer_freq,
    load,
    split_fractions,
    write_parquet_atomic,
)
from forecasting.ensemble import Ensemble
from forecasting.errors import DataError, ForecastingError
from forecasting.evaluation import Predictor, best_baseline
from forecasting.forecaster import Forecaster, ForecasterConfig, build_panel
from forecasting.models import ModelConfig
from forecasting.provenance import code_version, dataset_fingerprint
from forecasting.seasons import kept_periods
from forecasting.training import TrainConfig
from forecasting.tuning import (
    SearchSpace,
    TuneConfig,
    TuneResult,
    apply_params,
    default_space,
    default_storage,
    starting_point,
    study_name,
    trials_frame,
    tune,
)


@dataclass(frozen=True)
class TrainJob:
    """One training pipeline run: which data, horizon, model families and budget."""

    dataset: str
    horizon: int
    families: tuple[str, ...] = ("gru", "lstm")
    tune: TuneConfig = field(default_factory=TuneConfig)
    val: float = 0.1
    test: float = 0.2
    device: str = "auto"
    seed: int = 0
    calendar: bool = True
    max_train_windows: int | None = None
    max_val_windows: int | None = None
    metric: str = "mase"  # decides champion vs challenger on the validation backtest (lower is better)
    max_lookback: int | None = None  # default: two longest seasons
    workers: int = 1  # tuning processes sharing each study
    ensemble: int = 1  # refit the K best trials and average them (one registered model)
    seasons: tuple[int, ...] = ()  # seasonal periods; default: every period the frequency implies
    backtest: BacktestConfig = field(default_factory=BacktestConfig)  # cutoffs over the validation part
    objective: str = "val"  # Optuna objective: every validation window, or "backtest" (its cutoffs)

    def __post_init__(self) -> None:
        check_name(self.dataset)
        if self.objective not in ("val", "backtest"):
            raise ValueError(f"objective must be val or backtest, got {self.objective!r}")
        if self.objective == "backtest" and not self.backtest.n_windows:
            raise ValueError("objective backtest needs a number of backtest windows (--backtest-windows K)")


ABSOLUTE_METRICS = ("mase", "mae", "smape")  # scored on absolute errors: select on MAE, not MSE


# --------------------------------------------------------------------------- data


def processed_path(home: str | Path, name: str) -> Path:
    """`<home>/data/processed/<name>.parquet`; a name that could leave that folder is refused."""
    return Path(home).resolve() / "data" / "processed" / f"{check_name(name)}.parquet"


def ingest(source: str | Path, name: str, home: str | Path, cfg: IngestConfig = IngestConfig()) -> tuple[Path, IngestReport]:
    """Validate a file and write it once as Parquet under `<home>/data/processed/` (atomically)."""
    target = processed_path(home, name)  # a bad name is refused before the file is read
    df, report = load(source, cfg)
    path = write_parquet_atomic(df, target)
    meta = {**asdict(report), "source": str(source), "fingerprint": dataset_fingerprint(df)}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    tmp.replace(path.with_suffix(".json"))
    return path, report


def load_processed(home: str | Path, name: str) -> tuple[pd.DataFrame, str]:
    """The processed frame of dataset `name` and its frequency."""
    path = processed_path(home, name)
    if not path.exists():
        raise DataError(f"no processed dataset {name!r} at {path}; run `forecasting ingest SOURCE --name {name}` first")
    df = pd.read_parquet(path)
    return df, dataset_freq(home, name, df)


def dataset_freq(home: str | Path, name: str, df: pd.DataFrame) -> str:
    """The frequency ingest recorded beside the dataset (inferred again if that file is gone)."""
    meta = processed_path(home, name).with_suffix(".json")
    return json.loads(meta.read_text())["freq"] if meta.exists() else infer_freq(df)


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
    short = [u for u, n in zip(split.ids, split.lengths - split.val_end, strict=True) if n < job.horizon]
    if len(short) == len(split.ids):
        raise DataError(f"the test part holds no window of horizon {job.horizon} (series {short[0]!r} has "
                        f"{int((split.lengths - split.val_end)[0])} test rows); give it more rows (--test)")


# --------------------------------------------------------------------------- runs


def start_pipeline(home: str | Path, job: TrainJob, df: pd.DataFrame) -> tuple[str, str]:
    """Experiment `<dataset>-h<H>` and a parent run for this pipeline run."""
    tracking.configure(home)
    exp = tracking.ensure_experiment(tracking.experiment_name(job.dataset, job.horizon), home)
    closed = tracking.close_dead_runs(exp)  # a killed earlier run of this host: end what it left RUNNING
    run_id = tracking.start_run(exp, f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}",
                                tags={"kind": "pipeline", "dataset": job.dataset, **tracking.owner_tags(),
                                      **({"closed_dead_runs": ",".join(closed)} if closed else {})})
    tracking.log_values(run_id, params=tracking.flatten(asdict(job)), tags={
        "dataset_fingerprint": dataset_fingerprint(df), "code_version": code_version(),
        "n_series": df[ID].nunique()})
    return exp, run_id


def tune_family(df: pd.DataFrame, split: Split, job: TrainJob, family: str, home: str | Path,
                experiment_id: str, parent_run_id: str, progress: bool = True, plots: bool = True) -> TuneResult:
    """Optuna search for one family, each trial a nested MLflow run (optimization plots on the parent)."""
    base = base_config(df, dataset_freq(home, job.dataset, df), job, split)
    cfg = job.tune if job.tune.storage else replace(job.tune, storage=default_storage(home))
    space = search_space(df, split, base, job)
    hook = tracking.TrialLogger(experiment_id, parent_run_id, family)
    result = tune(df, split, base, family, study_name(job.dataset, job.horizon, family), cfg, space, hook,
                  progress, on_stale=tracking.close_stale_trial_run)
    # Which study trials this run continued (a resumed search) is said on the parent run.
    tracking.log_values(parent_run_id, tags={f"{family}.resumed_trials": result.resumed})
    if plots:
        log_search(parent_run_id, result.study, family)
    return result


def top_configs(result: TuneResult, family: str, k: int) -> list[ForecasterConfig]:
    """The configurations of the `k` best completed trials of a search (fewer if it has fewer)."""
    done = [t for t in result.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    best = sorted(done, key=lambda t: t.value)[:max(k, 1)]
    return [apply_params(result.config, t.params, family) for t in best] or [result.config]


def log_search(parent_run_id: str, study, family: str) -> None:
    """The study's optimization-history and importance plots and its trials table, on the parent run."""
    tracking.log_study_plots(parent_run_id, study, family)
    tracking.log_table(parent_run_id, trials_frame(study), f"{family}_trials")


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


def final_model(df: pd.DataFrame, split: Split, cfgs: list[ForecasterConfig], job: TrainJob, family: str,
                home: str | Path, experiment_id: str, parent_run_id: str) -> tuple[dict, Forecaster | Ensemble]:
    """Refit the best configuration (or the K best as an ensemble), evaluate once on test, log run,
    artifacts and pyfunc model. Returns the comparison row and the fitted model (for the backtest)."""
    tracking.configure(home)
    run_id = tracking.start_run(experiment_id, f"{family}-final", parent_run_id,
                                tags={"kind": "final", "family": family})
    try:
        forecaster, cost = fit_final(df, split, cfgs)
        ev = forecaster.evaluate(df, split, "test")
        x, _ = forecaster.windows(df, split, "test").arrays()
        row = {"model": family, **ev.metrics, "params": forecaster.n_parameters, **cost,
               "infer_ms_per_1000": inference_ms_per_1000(forecaster, x)}
        tracking.log_values(run_id, params=tracking.params_of(forecaster) | {"ensemble_size": len(cfgs)},
                            metrics={f"test_{k}": v for k, v in ev.metrics.items()} | {
                                k: row[k] for k in ("train_seconds", "peak_memory_mb", "best_epoch",
                                                    "infer_ms_per_1000")} | {"n_parameters": row["params"]})
        tracking.log_history(run_id, forecaster.fit_result_.history)
        tracking.log_evaluation_artifacts(run_id, forecaster, ev, split.ids, f"{job.dataset} {family} H={job.horizon}")
        example = tracking.input_example(df, forecaster.cfg.model.lookback)
        row["model_uri"] = tracking.log_model(run_id, forecaster, example)
        row["run_id"] = run_id
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    tracking.end_run(run_id)
    return row, forecaster


def validation_backtest(forecaster: Forecaster, df: pd.DataFrame, split: Split, job: TrainJob,
                        predictors: list[Predictor] | None = None) -> Backtest:
    """Rolling-origin backtest over the validation part (cutoffs `job.backtest`): targets lie in
    validation only, inputs come from before each cutoff. Model selection and champion gating use
    it; the test part is never touched."""
    panel = forecaster.scaler_.transform(build_panel(df, forecaster.cfg))
    preds = predictors or [forecaster.predictor()]
    return cross_validation(panel, preds, job.horizon, split.val_end, forecaster.scaler_.mean[:, 0],
                            forecaster.scaler_.std[:, 0], forecaster.mase_scale_, job.backtest, split.train_end)


def backtest_step(forecaster: Forecaster, row: dict, df: pd.DataFrame, split: Split, job: TrainJob) -> dict:
    """The validation backtest of a final model, logged to its run (metrics, per-cutoff table, plot);
    returns the row with `val_backtest_<metric>` columns added."""
    bt = validation_backtest(forecaster, df, split, job)
    overall = bt.metrics.iloc[0].drop("predictor").to_dict()
    if row.get("run_id"):
        tracking.log_backtest(row["run_id"], bt, f"{job.dataset} {row['model']} H={job.horizon}")
    return {**row, **{f"val_backtest_{k}": v for k, v in overall.items()},
            "backtest_cutoffs": int(bt.by_cutoff["cutoff"].nunique())}


def baseline_rows(df: pd.DataFrame, split: Split, job: TrainJob, home: str | Path,
                  experiment_id: str, parent_run_id: str) -> list[dict]:
    """Naive, seasonal naive at every kept period and the ridge baseline, scored on the same test
    windows and the same validation backtest as the models; each logged as a nested run."""
    base = base_config(df, dataset_freq(home, job.dataset, df), job, split)
    space = search_space(df, split, base, job)
    f = Forecaster(replace(base, model=replace(base.model, lookback=max(space.lookbacks))))
    f.fit_scaler(df, split)
    predictors, linear = f.baselines(df, split, space.lookbacks)
    bt = validation_backtest(f, df, split, job, predictors)
    rows = []
    for p in predictors:
        ev = f.evaluate(df, split, "test", predictor=p)
        val = bt.metrics.set_index("predictor").loc[p.name].to_dict()
        run_id = tracking.start_run(experiment_id, p.name, parent_run_id, tags={"kind": "baseline", "family": p.name})
        params = {"lookback": p.lookback} | ({"alpha": linear["alpha"]} if p.name == "linear" else {})
        tracking.log_values(run_id, params=params, metrics={f"test_{k}": v for k, v in ev.metrics.items()}
                            | {f"val_backtest_{k}": v for k, v in val.items()})
        tracking.end_run(run_id)
        rows.append({"model": p.name, **ev.metrics, **{f"val_backtest_{k}": v for k, v in val.items()},
                     "params": p.lookback * job.horizon + job.horizon if p.name == "linear" else 0,
                     "train_seconds": 0.0, "peak_memory_mb": 0.0, "infer_ms_per_1000": float("nan"), "device": "-"})
    return rows


COMPARISON_COLUMNS = ["model", "mae", "rmse", "smape", "mase", "mse_std", "mae_std", "val_backtest_mase",
                      "val_backtest_mse_std", "vs_best_baseline", "params", "train_seconds", "peak_memory_mb",
                      "infer_ms_per_1000"]


def comparison(rows: list[dict], job: TrainJob, parent_run_id: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Models and baselines side by side on the test part, with each row's margin to the best
    baseline (`vs_best_baseline`: relative difference of `job.metric`, negative is better).

    Returns the table (logged as CSV and Markdown on the parent run) and a summary naming the best
    baseline and each model's margin (tags and metrics of the parent run)."""
    best = best_baseline(rows, job.metric, job.families)
    table = pd.DataFrame(rows)
    table["vs_best_baseline"] = table[job.metric] / best[1] - 1.0 if best else np.nan
    table = table.reindex(columns=COMPARISON_COLUMNS)
    summary = {"best_baseline": best[0] if best else None, "metric": job.metric,
               "best_baseline_value": best[1] if best else None,
               "margins": {r["model"]: float(r[job.metric]) / best[1] - 1.0
                           for r in rows if best and r["model"] in job.families}}
    if parent_run_id:
        tracking.log_table(parent_run_id, table, "comparison")
        tracking.log_values(parent_run_id, tags={"best_baseline": summary["best_baseline"]},
                            metrics={f"test_{job.metric}_vs_best_baseline_{k}": v
                                     for k, v in summary["margins"].items()})
    return table, summary


def train_end(df: pd.DataFrame, split: Split) -> pd.Timestamp:
    """The latest timestamp of any series' training part (what a model fitted on it has seen)."""
    ds = df.groupby(ID, sort=False)["ds"]
    return max(pd.Timestamp(g.iloc[int(e) - 1]) for (_, g), e in zip(ds, split.train_end, strict=True) if e > 0)


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


def register_family(row: dict, job: TrainJob, df: pd.DataFrame, split: Split, freq: str) -> dict:
    """Register the family's final model as `<dataset>-<family>`; it becomes champion only if its
    validation-backtest metric beats the current champion's on the same cutoffs of the same data
    (the champion is re-scored, not trusted from its tag). Test scores never move the alias."""
    tags = {"dataset_fingerprint": dataset_fingerprint(df), "horizon": job.horizon, "frequency": freq,
            "code_version": code_version(), "family": row["model"], f"test_{job.metric}": row[job.metric],
            "train_end": str(train_end(df, split))}

    def rescore(forecaster: Forecaster) -> float:
        bt = validation_backtest(forecaster, df, split, job)
        return float(bt.metrics[job.metric].iloc[0])

    model_tags = {"dataset": job.dataset, "horizon": job.horizon, "frequency": freq, "family": row["model"],
                  "gate_metric": gate_metric(job)}
    shown = {k: row[k] for k in COMPARISON_COLUMNS if k in row and k != "vs_best_baseline"}
    description = "Comparison row of this version:\n\n" + tracking.to_markdown(pd.DataFrame([shown]))
    return tracking.register(row["model_uri"], f"{job.dataset}-{row['model']}", gate_metric(job),
                             float(row[gate_metric(job)]), tags, rescore, model_tags, description)


def check_backtest_request(model: str | None, family: str | None, horizon: int | None) -> None:
    """One clear error for a backtest request that cannot run, before any work."""
    if bool(model) == bool(family):
        raise ForecastingError("backtest: give exactly one of --model NAME@ALIAS and --family gru|lstm")
    if model and "@" not in model:
        raise ForecastingError(f"--model {model!r}: expected NAME@ALIAS, e.g. etth1-gru@champion")
    if model:
        check_name(model.split("@", 1)[0], "model name")
    if family and not horizon:
        raise ForecastingError("--family needs --horizon H (a registered model carries its own)")
    if horizon is not None and horizon < 1:
        raise ForecastingError(f"--horizon must be positive, got {horizon}")


def family_config(df: pd.DataFrame, freq: str, home: str | Path, dataset: str, family: str, horizon: int,
                  max_epochs: int, seed: int) -> ForecasterConfig:
    """The best configuration of the family's study for this dataset and horizon when one exists in
    the default storage, else the search space's starting point."""
    job = TrainJob(dataset, horizon, (family,), seed=seed)
    split = make_split(df, job)
    base = base_config(df, freq, job, split)
    base = replace(base, train=replace(base.train, max_epochs=max_epochs))
    params = starting_point(search_space(df, split, base, job))
    try:
        study = optuna.load_study(study_name=study_name(dataset, horizon, family), storage=default_storage(home))
        params = study.best_trial.params
    except (KeyError, ValueError):  # no such study, or no completed trial in it
        pass
    return apply_params(base, params, family)


def log_backtest_run(home: str | Path, dataset: str, result, cfg: BacktestConfig) -> str:
    """A run `backtest-<time>` in experiment `<dataset>-h<H>` holding the backtest's tables and plot."""
    tracking.configure(home)
    horizon = int(result.backtest.forecasts.groupby(["unique_id", "cutoff"]).size().iloc[0])
    exp = tracking.ensure_experiment(tracking.experiment_name(dataset, horizon), home)
    run_id = tracking.start_run(exp, f"backtest-{time.strftime('%Y%m%d-%H%M%S')}",
                                tags={"kind": "backtest", "what": result.what, "in_sample": result.in_sample})
    tracking.log_values(run_id, params={"windows": cfg.n_windows, "step": cfg.step or horizon})
    tracking.log_backtest(run_id, result.backtest, f"{dataset}: {result.what}")
    tracking.end_run(run_id)
    return run_id


def finish(parent_run_id: str, registrations: list[dict]) -> None:
    for r in registrations:
        tracking.log_values(parent_run_id, tags={f"registered.{r['name']}": f"v{r['version']}@{r['alias']}"})
    tracking.end_run(parent_run_id)
