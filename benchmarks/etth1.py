"""ETTh1 univariate (target OT) accuracy benchmark against published results.

Standard protocol: train rows [0, 8640), validation [8640, 11520), test [11520, 14400);
validation and test inputs reach back `lookback` rows; the series is standardized with the
training mean and standard deviation; MSE and MAE on that scale over every test window
(stride 1). For each horizon a GRU and an LSTM are tuned with Optuna under the same budget and
search space, selected on validation loss only, refit with the best configuration and
evaluated once on the test part; seasonal naive (period 24) runs on the same test windows.

Statistical rows on the same test windows: statsforecast's MSTL (periods 24 and 168; AutoETS "ZZN"
trend), AutoETS and AutoTheta (m = 24), fitted once on the training rows with their parameters then
fixed, applied at every test origin to the lookback window before it (the longest lookback of the
search space: 720). They do not depend on the seed: computed once per horizon and cached in
`<out>/etth1_statistical.json` (keyed by the data's hash, the borders and the lookback), with CPU
seconds per row; a seed run computes the missing ones, `--statistical-only` computes only them and
re-renders etth1.json/etth1.md from the seed files already in `--out`.

NeuralForecast's N-HiTS in the same run (see `_nhits.py`): the library's defaults with input size
5 x horizon (its long-horizon recipe) and `scaler_type="robust"`, fitted on the training rows, scored on
the same test windows; one row per seed and horizon, cached in `<out>/etth1_nhits.json`; `--nhits-only`
computes only the seed's rows and re-merges.

    python benchmarks/etth1.py [--quick] [--out DIR] [--data-dir DIR] [--trials N] [--max-epochs N]
    python benchmarks/etth1.py --statistical-only [--quick] [--out DIR] [--horizons H ...]
"""

from __future__ import annotations

import csv
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _nhits as N  # noqa: E402
import _seeds as S  # noqa: E402

from forecasting.api import ensemble_check  # noqa: E402
from forecasting.api.ensemble import Ensemble  # noqa: E402
from forecasting.api.fitcache import FitCache  # noqa: E402
from forecasting.api.forecaster import Forecaster, ForecasterConfig, build_panel  # noqa: E402
from forecasting.core.evaluation import simple_predictors  # noqa: E402
from forecasting.core.intervals import calibrate  # noqa: E402
from forecasting.core.metrics import interval_metrics  # noqa: E402
from forecasting.core.training import TrainConfig  # noqa: E402
from forecasting.families.recurrent import ModelConfig, RecurrentSpace  # noqa: E402
from forecasting.pipeline import search  # noqa: E402
from forecasting.tuning.space import SearchSpace, apply_params  # noqa: E402

NAME = "etth1"
HORIZONS = (24, 48, 96, 168, 336, 720)
from forecasting.families import DEFAULT as FAMILIES  # noqa: E402  (the families `train` tunes by default)

SEASONS = (24, 168)  # hourly: the daily and the weekly cycle
PUBLISHED = ("Informer", "LSTMa", "DeepAR", "ARIMA", "Prophet", "DLinear", "NLinear")
LSTM_TYPE = ("LSTMa", "DeepAR")
ENSEMBLE = 3  # the ensemble rows average the refits of the 3 best trials
# The published value each horizon is measured against (best published univariate-OT MSE). The
# NLinear rows are in the published table; the SCINet values (H=24, 168) are quoted from the SCINet
# paper's ETTh1 univariate table and are not in that file.
TARGETS = {24: ("SCINet", 0.029), 96: ("NLinear", 0.053), 168: ("SCINet", 0.071), 336: ("NLinear", 0.081),
           720: ("NLinear", 0.080)}

# The same space for both families. Lookbacks up to 720 (30 days) reach the weekly period;
# SegRNN-style segments of one or two days keep a 720-step lookback to 15-30 recurrent steps.
# The linear highway (on/off), where it starts (ridge fit or best seasonal naive) and the
# training loss are searched like everything else.
SPACE = SearchSpace(
    lookbacks=(96, 168, 336, 720), lr=(3e-4, 3e-3), batch_sizes=(128, 256), weight_decay=(1e-7, 1e-3),
    losses=("mse", "mae"),
    family=RecurrentSpace(hidden=(32, 128), layers=(1, 2), dropout=(0.0, 0.3), norms=("last", "standard"),
                          segments=(24, 48), highway=(True, False), inits=("linear", "seasonal")),
)
# One configuration tried first in every study (GRU and LSTM alike): SegRNN-like, highway from ridge.
PRIOR = {"lookback": 336, "hidden": 64, "layers": 1, "dropout": 0.0, "lr": 1e-3, "batch_size": 256,
         "weight_decay": 1e-6, "norm": "last", "segment": 24, "highway": True, "init": "linear", "loss": "mse",
         "multiplicative": False, "lags": False}

QUICK_SPACE = SearchSpace(
    lookbacks=(48, 96), lr=(1e-3, 3e-3), batch_sizes=(256,), weight_decay=(1e-7, 1e-5), losses=("mse",),
    family=RecurrentSpace(hidden=(8, 16), layers=(1, 1), dropout=(0.0, 0.1), norms=("last", "standard"),
                          segments=(24,), highway=(True, False), inits=("linear",)),
)
QUICK_PRIOR = {"lookback": 96, "hidden": 16, "layers": 1, "dropout": 0.0, "lr": 1e-3, "batch_size": 256,
               "weight_decay": 1e-6, "norm": "last", "segment": 24, "highway": True, "init": "linear", "loss": "mse",
         "multiplicative": False, "lags": False}


def published_rows(data_dir: Path) -> list[dict]:
    (path,) = C.require(data_dir, "published/etth1_published_results.csv")
    with path.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh)
                if r["dataset"] == "ETTh1" and r["setting"] == "univariate_OT" and r["model"] in PUBLISHED]
    # The same model can appear in two tables (Informer: its own paper and LTSF-Linear's rerun);
    # `ref` (the source repository) keeps them apart.
    return [{"model": r["model"], "ref": _ref(r), "horizon": int(r["horizon"]),
             "mse": float(r["mse"]), "mae": float(r["mae"]), "source": r["source"]} for r in rows]


def _ref(row: dict) -> str:
    """Short source name: the repository in `owner/repo@commit path`."""
    return row["source"].split("@")[0].split("/")[-1]


def published_series(pub: list[dict]) -> list[tuple[str, dict[int, dict]]]:
    """(label, {horizon: row}) per published model and source, in the order of PUBLISHED."""
    out = []
    for m in PUBLISHED:
        for ref in dict.fromkeys(_ref(r) for r in pub if r["model"] == m):
            out.append((f"{m} [{ref}]", {r["horizon"]: r for r in pub if r["model"] == m and _ref(r) == ref}))
    return out


def base_config(horizon: int, family: str, lookback: int, args) -> ForecasterConfig:
    return ForecasterConfig(
        model=ModelConfig(cell=family, lookback=lookback, horizon=horizon),
        train=TrainConfig(seed=args.seed, device="cpu", patience=args.patience, val_metric="mse"),
        freq="h", calendar=False, season=24, seasons=SEASONS,
    )


def _scores(ev) -> dict:
    return {"test_mse_std": ev.metrics["mse_std"], "test_mae_std": ev.metrics["mae_std"]}


LEVELS = (80, 95)


def conformal_scores(model, df, split, ev_test, scale: float) -> dict:
    """Split-conformal 80/95 % bands from the residuals of every validation window (stride 1, original
    units; one series, so no per-series scaling) around the test forecasts: coverage, MSIS and pinball
    (scaled by the training part's seasonal naive MAE, m = 24) and the mean 95 % width. The validation
    part also stopped the training early and chose the trial, so these residuals lean optimistic."""
    ev_val = model.evaluate(df, split, "val")
    conf = calibrate(ev_val.y - ev_val.y_hat, LEVELS, season=24, scaled=False)  # q [2, H]
    bounds = {lv: (ev_test.y_hat - conf.q[i], ev_test.y_hat + conf.q[i]) for i, lv in enumerate(conf.levels)}
    return {**interval_metrics(ev_test.y, bounds, scale), "width_95": float(2 * conf.q[-1].mean()),
            "n_calibration": conf.n_calibration}


def run_horizon(df, split, horizon: int, family: str, args, space: SearchSpace, prior: dict, tmp: Path) -> dict:
    """Tune one family at one horizon, refit the best trial (and the 3 best, averaged), score test once."""
    base = base_config(horizon, family, prior["lookback"], args)
    cache = FitCache(Path(tmp) / f"fits-h{horizon}-{family}", "etth1")  # each trial keeps its fit, as in `train`
    result, study_seconds, states = C.tuned_study(
        df, split, base, family, f"etth1-h{horizon}-{family}", prior, space, args, tmp, cache=cache)
    # train's ensemble check on the trials' own fits, on the benchmark's metric (MSE)
    check = ensemble_check.check(search.trial_fits(result, family, cache, split), df, split, ENSEMBLE, "mse")
    best = result.study.best_trial
    done = sorted((t for t in result.study.trials if t.value is not None and t.state.name == "COMPLETE"),
                  key=lambda t: t.value)[:ENSEMBLE]
    members = []
    for t in done:  # refit each configuration as it was trained in its trial (same epochs, same seed)
        cfg = apply_params(result.config, t.params, family)
        f = Forecaster(replace(cfg, train=replace(cfg.train, max_epochs=args.max_epochs)))
        members.append((f, f.fit(df, split)))
    f, fit = members[0]
    ens = Ensemble([m for m, _ in members])
    ev, ev_ens = f.evaluate(df, split, "test"), ens.evaluate(df, split, "test")
    single = {**_scores(ev), "intervals": conformal_scores(f, df, split, ev, float(f.mase_scale_[0]))}
    combined = {"size": len(members), **_scores(ev_ens), "refit_seconds": sum(r.seconds for _, r in members),
                "intervals": conformal_scores(ens, df, split, ev_ens, float(f.mase_scale_[0]))}
    return {
        "horizon": horizon, "family": family,
        "best_params": result.best_params, "best_trial": best.number,
        "best_val_mse_std": best.value, "refit_val_mse_std": fit.best_val_loss,
        "refit_best_epoch": fit.best_epoch, "refit_epochs_run": len(fit.history),
        "refit_seconds": fit.seconds, "refit_peak_memory_mb": fit.peak_memory_mb,
        "n_parameters": f.n_parameters,
        "trials": {s: states.count(s) for s in ("complete", "pruned", "fail", "running", "waiting")
                   if states.count(s)},
        "study_seconds": study_seconds, "test_windows": len(ev.y),
        **_scores(ev), "test_mse": ev.metrics["mse"], "test_mae": ev.metrics["mae"],
        "ensemble": combined, "intervals": single["intervals"],
        "ensemble_check": check.params() if check else None,
        "checked": single if check is not None and check.k == 1 else combined,  # no check possible: combined
        "config": f.cfg.to_dict(),
    }


def run_baselines(df, split, horizon: int, args) -> list[dict]:
    """Naive, seasonal naive at 24 and 168, and the ridge baseline (lookback and penalty chosen on
    validation among the search space's lookbacks) on the same test windows."""
    lookbacks = (QUICK_SPACE if args.quick else SPACE).lookbacks
    f = Forecaster(base_config(horizon, "gru", max(lookbacks), args))
    f.fit_scaler(df, split)
    predictors, linear = f.baselines(df, split, lookbacks)
    rows = []
    for p in predictors:
        ev = f.evaluate(df, split, "test", predictor=p)
        rows.append({"horizon": horizon, "model": p.name, "lookback": p.lookback, **_scores(ev),
                     "test_windows": len(ev.y)} | ({"alpha": linear["alpha"]} if p.name == "linear" else {}))
    return rows


# --------------------------------------------------------------------------- statistical rows

STAT_CACHE = f"{NAME}_statistical.json"
STAT_FORMAT = 1  # of a cached row: a change recomputes them
STAT_SETUP = ("statsforecast's MSTL (periods {periods}: those of 24 and 168 that the lookback window holds twice; "
              "trend AutoETS ZZN), AutoETS (m = 24) and AutoTheta (m = 24), via forecasting.stats.predictors. "
              "What differs from the models: each is fitted once on the training rows [0, {train}) and its "
              "parameters (ETS form and smoothing, theta, MSTL's trend model) are then fixed, not tuned and not "
              "refit; at every test origin it is applied (statsforecast's `forward`) to the {lookback} rows before "
              "the origin (MSTL decomposes that window anew). Scored on the same test windows and scale as the "
              f"models; no seed: computed once per horizon and cached in {STAT_CACHE}")


def stat_setup(train_end: int, lookback: int) -> str:
    """STAT_SETUP for this training part and lookback."""
    from forecasting.stats.predictors import fitting_periods

    return STAT_SETUP.format(train=train_end, lookback=lookback, periods=list(fitting_periods(SEASONS, lookback)))


def stat_lookback(lookbacks: tuple[int, ...] | list[int], train_end: int) -> int:
    """The statistical models' lookback: the longest of the search space's lookbacks the training part holds."""
    return max(lb for lb in lookbacks if lb <= train_end)


def stat_key(df, borders: tuple[int, int, int], lookback: int) -> tuple[str, dict]:
    """The cache key (rows, lookback, hash of the data) and what a cached entry must also match."""
    import statsforecast

    from forecasting.core.provenance import dataset_fingerprint

    key = f"rows{borders[2]}-lookback{lookback}-{dataset_fingerprint(df)}"
    return key, {"borders": list(borders), "lookback": lookback, "seasons": list(SEASONS),
                 "models": C.STAT_LABELS, "statsforecast": statsforecast.__version__, "format": STAT_FORMAT}


def stat_row(f: Forecaster, df, split, name: str, lookback: int) -> dict:
    """One statistical row at f's horizon: fitted per series on the training rows, scored on every test
    window like the models, with the CPU and wall seconds of the fit and of the scoring."""
    from forecasting.stats.predictors import stats_predictor

    horizon = f.cfg.model.horizon
    with C.timed() as fit_t:
        p = stats_predictor(name, build_panel(df, f.cfg), split, f.scaler_.mean[:, 0], f.scaler_.std[:, 0],
                            horizon, lookback, SEASONS)
    with C.timed() as score_t:
        ev = f.evaluate(df, split, "test", predictor=p)
    cpu = round(fit_t["cpu_seconds"] + score_t["cpu_seconds"], 2)
    return {"horizon": horizon, "model": C.STAT_LABELS[name], **_scores(ev), "test_windows": len(ev.y),
            "lookback": lookback, "periods": p.params["periods"], "spec": p.params["model"],
            "fit_cpu_seconds": fit_t["cpu_seconds"], "score_cpu_seconds": score_t["cpu_seconds"],
            "cpu_seconds": cpu, "wall_seconds": round(fit_t["wall_seconds"] + score_t["wall_seconds"], 2),
            "score_ms_per_window": round(1000 * score_t["cpu_seconds"] / len(ev.y), 2), "format": STAT_FORMAT}


def stat_done(entry: dict, horizon: int) -> bool:
    """Whether a cache entry holds every statistical row of `horizon`, in the current format."""
    rows = entry["rows"].get(str(horizon), {})
    return all(rows.get(label, {}).get("format") == STAT_FORMAT for label in C.STAT_LABELS.values())


def stat_horizon(entry: dict, save: Callable[[], None], df, split, horizon: int, lookback: int, args) -> None:
    """Fill `entry`'s rows of one horizon that are not there yet (saving after each), and the naive
    row's test MSE on the same windows (a check that they match the seed runs' windows)."""
    rows = entry["rows"].setdefault(str(horizon), {})
    f = Forecaster(base_config(horizon, "gru", lookback, args))
    f.fit_scaler(df, split)
    naive = simple_predictors(horizon, SEASONS)[0]
    entry["naive_check"][str(horizon)] = f.evaluate(df, split, "test", predictor=naive).metrics["mse_std"]
    for name, label in C.STAT_LABELS.items():
        if rows.get(label, {}).get("format") == STAT_FORMAT:
            continue  # computed by an earlier (interrupted) run
        rows[label] = r = stat_row(f, df, split, name, lookback)
        save()
        print(f"[etth1] H={horizon} {label}: test MSE {r['test_mse_std']:.4f}, {r['cpu_seconds']:.1f} CPU s "
              f"(fit {r['fit_cpu_seconds']:.1f}, {r['score_ms_per_window']:.1f} ms per window)",
              file=sys.stderr, flush=True)


def statistical_rows(out: Path, df, split, borders: tuple[int, int, int], horizons: tuple[int, ...],
                     lookback: int, args) -> str:
    """Make sure `<out>/etth1_statistical.json` holds every statistical row of `horizons` for this data
    (computing only the missing ones); returns the cache key."""
    path = Path(out) / STAT_CACHE
    cache = C.read_cache(path)
    key, check = stat_key(df, borders, lookback)
    if cache.get(key, {}).get("check") != check:
        cache[key] = {"check": check, "rows": {}, "naive_check": {}, "warmup_wall_seconds": {}, "runs": []}
    entry = cache[key]
    todo = [h for h in horizons if not stat_done(entry, h)]
    if not todo:
        print(f"[etth1] statistical rows reused from {path} ({key})", file=sys.stderr, flush=True)
        return key
    entry["runs"].append(C.stat_meta())
    entry["warmup_wall_seconds"] = C.stat_warmup(df["y"].to_numpy(), SEASONS, lookback, max(todo))
    for h in todo:
        stat_horizon(entry, lambda: C.write_cache(path, cache), df, split, h, lookback, args)
    entry["runs"][-1]["loadavg_end"] = C.loadavg()
    C.write_cache(path, cache)
    return key


def stat_entry(out: Path, borders: list[int], lookback: int, key: str | None = None) -> tuple[str, dict] | None:
    """The cache entry of a merge: `key` when given, else the latest for these borders and lookback."""
    cache = C.read_cache(Path(out) / STAT_CACHE)
    if key is not None:
        return (key, cache[key]) if key in cache else None
    match = [(k, e) for k, e in cache.items()
             if e["check"]["borders"] == list(borders) and e["check"]["lookback"] == lookback and e["runs"]]
    return max(match, key=lambda ke: ke[1]["runs"][-1]["date"], default=None)


def merge_statistical(out: Path, last: dict, key: str | None = None) -> dict:
    """The statistical rows of the seed runs' horizons from the cache (none when it has no entry), with
    their setup, cost and whether the naive row's test MSE matches the seed runs' (same windows)."""
    train_end = last["borders"][0]
    lookback = stat_lookback(last["search_space"]["lookbacks"], train_end)
    found = stat_entry(out, last["borders"], lookback, key)
    if found is None:
        return {}
    key, entry = found
    rows = [r for h in last["horizons"] for r in entry["rows"].get(str(h), {}).values()]
    seed_naive = {b["horizon"]: b["test_mse_std"] for b in last["baselines"] if b["model"] == "naive"}
    diffs = [abs(v - seed_naive[int(h)]) for h, v in entry["naive_check"].items() if int(h) in seed_naive]
    return {"statistical": {"key": key, "setup": stat_setup(train_end, lookback),
                            "lookback": lookback, "rows": rows, "runs": entry["runs"],
                            "warmup_wall_seconds": entry.get("warmup_wall_seconds"),
                            "missing_horizons": [h for h in last["horizons"] if not stat_done(entry, h)],
                            "naive_check_max_abs_diff": max(diffs, default=None)}}


# --------------------------------------------------------------------------- N-HiTS rows

NHITS_INPUT = 5  # x horizon: NeuralForecast's long-horizon recipe for N-HiTS
NHITS_SETUP = ("NeuralForecast N-HiTS, library defaults ({steps:,} steps, no early stopping) except input size "
               f"{NHITS_INPUT} x horizon and scaler_type=\"robust\"; fitted on the training rows (the rows our "
               "models learn from), scored on the same test windows; one run per seed and horizon, cached in "
               f"{NAME}_nhits.json")


def nhits_key(fingerprint: str, borders, horizon: int, quick: bool) -> str:
    steps = N.QUICK_STEPS if quick else N.STEPS
    return N.key_of(f"rows{borders[2]}-{fingerprint}", horizon, NHITS_INPUT * horizon, steps)


def nhits_row(df, split, horizon: int, args, python: Path) -> dict:
    """N-HiTS fitted on the training rows and scored on every test window of one horizon."""
    size = NHITS_INPUT * horizon
    f = Forecaster(base_config(horizon, "gru", size, args))
    f.fit_scaler(df, split)
    train = [build_panel(df, f.cfg).series(0)[: int(split.train_end[0]), 0]]
    rec: dict = {}
    p = N.predictor(train, f.scaler_.mean[:, 0], f.scaler_.std[:, 0], horizon, size, args.seed,
                    N.QUICK_STEPS if args.quick else N.STEPS, python, rec)
    ev = f.evaluate(df, split, "test", predictor=p)
    return {"horizon": horizon, **_scores(ev), "test_windows": len(ev.y), **rec}


def nhits_rows(args, df, split, borders) -> None:
    """This seed's N-HiTS row of every horizon not cached yet (none when skipped or not installed)."""
    from forecasting.core.provenance import dataset_fingerprint

    python = N.interpreter()
    if args.nhits == "skip" or python is None:
        print(f"[etth1] N-HiTS skipped: {'--nhits skip' if python else N.missing_reason()}", file=sys.stderr)
        return
    fp = dataset_fingerprint(df)
    for h in args.horizons:
        key = nhits_key(fp, borders, h, args.quick)
        if N.cached(args.out, NAME, key, args.seed) is None:
            row = nhits_row(df, split, h, args, python)
            N.store(args.out, NAME, key, args.seed, row)
            print(f"[etth1] seed {args.seed} H={h} N-HiTS: test MSE {row['test_mse_std']:.4f}, "
                  f"{row['fit_cpu_seconds'] + row['predict_cpu_seconds']:.0f} CPU s", file=sys.stderr, flush=True)


def merge_nhits(out: Path, last: dict, stat_key: str | None) -> dict:
    """Per horizon: N-HiTS's test MSE and MAE (mean ± sd over the seeds cached for this data)."""
    if not stat_key:
        return {}
    fp, rows = stat_key.rsplit("-", 1)[1], {}
    for h in last["horizons"]:
        seeds = N.seeds_of(out, NAME, nhits_key(fp, last["borders"], h, last["quick"]))
        if seeds:
            rows[h] = {"seeds": sorted(int(k) for k in seeds), "cost": N.cost_text(seeds),
                       "mse": S.mean_sd([r["test_mse_std"] for r in seeds.values()]),
                       "mae": S.mean_sd([r["test_mae_std"] for r in seeds.values()]),
                       "max_steps": next(iter(seeds.values()))["max_steps"]}
    if not rows:
        return {"nhits": {"missing": N.no_rows()}}
    steps = next(iter(rows.values()))["max_steps"]
    return {"nhits": {"setup": NHITS_SETUP.format(steps=steps), "by_horizon": rows}}


VARIANTS = (("single", "best trial"), ("ensemble", f"mean of the {ENSEMBLE} best trials"),
            ("checked", f"train's default: the mean of the {ENSEMBLE} best or the best, by the ensemble check"))


def headline(agg: list[dict]) -> str:
    """The variant the goals judge: train's default where the runs recorded it, else the best trial."""
    return "checked" if any(a["variant"] == "checked" for a in agg) else "single"


def aggregate(runs: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds of each (horizon, family, variant)'s test MSE and MAE."""
    keys = sorted({(r["horizon"], r["family"]) for run in runs for r in run["results"]})
    out = []
    for h, fam in keys:
        rows = [r for run in runs for r in run["results"] if (r["horizon"], r["family"]) == (h, fam)]
        for variant, _ in VARIANTS:
            src = rows if variant == "single" else [r[variant] for r in rows if variant in r]
            if not src:  # older runs: no check recorded
                continue
            out.append({"horizon": h, "family": fam, "variant": variant,
                        "mse": S.mean_sd([r["test_mse_std"] for r in src]),
                        "mae": S.mean_sd([r["test_mae_std"] for r in src])}
                       | _interval_aggregate([r.get("intervals") for r in src]))
    return out


def _interval_aggregate(rows: list[dict | None]) -> dict:
    """Mean ± sd of the conformal interval scores over the seeds that have them (older runs do not)."""
    rows = [r for r in rows if r]
    keys = ("coverage_80", "coverage_95", "msis_95", "width_95")
    return {"intervals": {k: S.mean_sd([r[k] for r in rows]) for k in keys}} if rows else {}


def interval_lines(res: dict) -> list[str]:
    """The conformal interval table (test coverage at 80 and 95 %), when the runs recorded intervals."""
    rows = [[f"H={a['horizon']}", f"{a['family'].upper()} ({a['variant']})",
             *(S.fmt(a["intervals"][k]) for k in ("coverage_80", "coverage_95", "msis_95", "width_95"))]
            for a in res["aggregate"] if a.get("intervals")]
    if not rows:
        return []
    return ["**Prediction intervals** (split conformal on the validation windows' residuals, per horizon step; "
            "test coverage, MSIS scaled by the training seasonal naive MAE, mean 95 % width in original units):\n",
            C.table(["horizon", "model", "coverage 80", "coverage 95", "MSIS (95 %)", "width 95"], rows)]


def goals(agg: list[dict], baselines: list[dict], published: list[dict], statistical: list[dict] = (),
          nhits: dict | None = None) -> dict:
    """Per horizon and family (train's default, `headline`): against the best published value, the LSTM-type
    published rows, the best baseline of this run (the statistical rows included) and each statistical
    row, with the two-standard-deviation tie rule."""
    pub = {(r["model"], r["horizon"]): r["mse"] for r in published}
    out = []
    for a in (a for a in agg if a["variant"] == headline(agg)):
        h = a["horizon"]
        base = min((b for b in [*baselines, *statistical] if b["horizon"] == h), key=lambda b: b["test_mse_std"],
                   default=None)
        target = TARGETS.get(h)
        lstm_type = {m: pub[(m, h)] for m in LSTM_TYPE if (m, h) in pub}
        out.append({
            "horizon": h, "family": a["family"], "variant": a["variant"], "mse": a["mse"],
            "target": None if target is None else {"model": target[0], "mse": target[1],
                                                   "verdict": S.compare(a["mse"], target[1], 0.001)},
            "best_baseline": None if base is None else {"model": base["model"], "mse": base["test_mse_std"],
                                                        "verdict": S.compare(a["mse"], base["test_mse_std"], 0.0001)},
            "lstm_type": {m: S.compare(a["mse"], v) for m, v in lstm_type.items()},
            "vs_statistical": {r["model"]: {"mse": r["test_mse_std"], "verdict": S.compare(a["mse"], r["test_mse_std"])}
                               for r in statistical if r["horizon"] == h},
            "vs_nhits": None if h not in (nhits or {}) else {"mse": nhits[h]["mse"],
                                                             "verdict": S.compare(a["mse"], nhits[h]["mse"])},
        })
    return {"by_horizon": out}


def _verdict(v: str | None, mean: float | None = None, ref: float | None = None) -> str:
    if v == "tie":
        side = "" if mean is None or ref is None else ("; the mean is higher" if mean > ref else "; the mean is lower")
        return f"**tie** (within 2 sd or the published precision{side})"
    return {"better": "**met** (better)", "worse": "**missed**"}.get(v, "n/a")


def _grid(res: dict, metric: str, published_too: bool = True) -> str:
    horizons = res["horizons"]
    rows = []
    for fam in FAMILIES:
        for variant, label in VARIANTS:
            by_h = {a["horizon"]: a[metric] for a in res["aggregate"] if a["family"] == fam and a["variant"] == variant}
            if by_h:  # older runs recorded no check: no train's-default row
                rows.append([f"{fam.upper()} (ours, {label})"] + [S.fmt(by_h.get(h)) for h in horizons])
    for name in dict.fromkeys(b["model"] for b in res["baselines"]):
        by_h = {b["horizon"]: b[f"test_{metric}_std"] for b in res["baselines"] if b["model"] == name}
        rows.append([f"{name} (ours, baseline)"] + [f"{by_h[h]:.3f}" if h in by_h else "–" for h in horizons])
    stat = (res.get("statistical") or {}).get("rows", [])
    for name in dict.fromkeys(r["model"] for r in stat):
        by_h = {r["horizon"]: r[f"test_{metric}_std"] for r in stat if r["model"] == name}
        rows.append([f"{name} (statsforecast, fitted on train, fixed)"]
                    + [f"{by_h[h]:.3f}" if h in by_h else "–" for h in horizons])
    nh = (res.get("nhits") or {}).get("by_horizon", {})
    if nh:
        by_h = {int(h): v[metric] for h, v in nh.items()}
        rows.append(["N-HiTS (neuralforecast, input 5H)"] + [S.fmt(by_h.get(h)) for h in horizons])
    if published_too:
        for label, by_h in published_series(res["published"]):
            rows.append([f"{label} (published)"] + [f"{by_h[h][metric]:.3f}" if h in by_h else "–" for h in horizons])
    return C.table(["model"] + [f"H={h}" for h in horizons], rows)


def _check_text(res: dict) -> str:
    """What `train`'s ensemble check chose for the train's-default rows (older runs: nothing)."""
    kept = [(r["ensemble_check"] or {}).get("ensemble_check_kept") for run in res.get("per_seed", [])
            for r in run.get("results", []) if "ensemble_check" in r]
    if not kept:
        return ""
    return (f" The train's-default rows take the mean of the {ENSEMBLE} best or the best alone, as `train`'s ensemble "
            "check chose on the trials' own fits (trials ranked on one half of the validation windows, scored on "
            f"the other, both ways; MSE): the mean in {sum(k == ENSEMBLE for k in kept)} and the best alone in "
            f"{sum(k == 1 for k in kept)} of {len(kept)} (horizon, family, seed) searches"
            + (f", no check in {sum(k is None for k in kept)}" if any(k is None for k in kept) else "") + ".")


def _goal_lines(res: dict) -> list[str]:
    lines = []
    for g in res["goals"]["by_horizon"]:
        t, b = g["target"], g["best_baseline"]
        short = {"single": "best trial", "checked": "train's default"}.get(g.get("variant", "single"), "")
        parts = [f"H={g['horizon']} {g['family'].upper()} ({short}) {S.fmt(g['mse'], 4)}"]
        if t:
            parts.append(f"vs best published {t['model']} {t['mse']:.3f}: "
                         f"{_verdict(t['verdict'], g['mse']['mean'], t['mse'])}")
        if b:
            parts.append(f"vs best baseline {b['model']} {b['mse']:.4f}: "
                         f"{_verdict(b['verdict'], g['mse']['mean'], b['mse'])}")
        if g.get("vs_statistical"):
            parts.append("ahead of " + ", ".join(f"{n} ({v['mse']:.4f}): {C.AHEAD[v['verdict']]}"
                                                 for n, v in g["vs_statistical"].items()))
        if g.get("vs_nhits"):
            v = g["vs_nhits"]
            parts.append(f"ahead of N-HiTS ({S.fmt(v['mse'], 4)}): {C.AHEAD[v['verdict']]}")
        lines.append("- " + "; ".join(parts) + ".")
    return lines


def stat_cost_table(st: dict, horizons: list[int]) -> str:
    """CPU seconds per statistical row and horizon (fit + scoring; per-window scoring cost in ms), and the
    total of the three per horizon."""
    by = {(r["model"], r["horizon"]): r for r in st["rows"]}
    rows = []
    for name in dict.fromkeys(r["model"] for r in st["rows"]):
        rows.append([name] + [f"{by[(name, h)]['cpu_seconds']:.1f} (fit {by[(name, h)]['fit_cpu_seconds']:.1f}, "
                              f"{by[(name, h)]['score_ms_per_window']:.1f} ms/window)" if (name, h) in by else "–"
                              for h in horizons])
    totals = [sum(r["cpu_seconds"] for r in st["rows"] if r["horizon"] == h) for h in horizons]
    rows.append(["all three"] + [f"{t:.1f}" for t in totals])
    rows.append(["test windows"] + [str(next((r["test_windows"] for r in st["rows"] if r["horizon"] == h), "–"))
                                    for h in horizons])
    return C.table(["CPU seconds"] + [f"H={h}" for h in horizons], rows)


def statistical_text(res: dict, table: bool = True) -> list[str]:
    """How the statistical rows were made and what differs from the models, when and where they were
    computed, whether they sit on the seed runs' test windows, and (`table`) their CPU seconds."""
    st = res.get("statistical")
    if not st:
        return ["Statistical rows (MSTL, AutoETS, AutoTheta): not computed for these data yet "
                "(`python benchmarks/etth1.py --statistical-only`).\n"]
    check = st.get("naive_check_max_abs_diff")
    same = ("" if check is None else f" The naive row recomputed beside them matches the seed runs' test MSE "
            f"(largest difference {check:.1e}): the same test windows and scale.")
    missing = f" Not computed yet for H = {st['missing_horizons']}." if st.get("missing_horizons") else ""
    lines = [f"**Statistical rows**: {st['setup']}.{same}{missing} Computed by: {C.stat_runs_text(st['runs'])}; "
             f"cache key {st['key']}.\n"]
    if table and st["rows"]:
        lines += ["CPU seconds per statistical row (fit on the training rows + scoring every test window, one "
                  "process; a first small fit before the timing, numba compilation: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in (st.get("warmup_wall_seconds") or {}).items())
                  + " s wall, not counted):\n", stat_cost_table(st, res["horizons"])]
    return lines


GOALS_HEADER = ("**Goals** (train's default where the runs recorded the ensemble check, else the single best-trial "
                "model, as each line says; best published value at each horizon, this run's best baseline, "
                "the statistical rows included, and whether the model is ahead of each statistical row: yes (lower "
                "by more than 2 sd), tie (within 2 sd) or no; SCINet's H=24 and H=168 values are quoted from its "
                "paper, not from the published-results file):\n")


def nhits_text(res: dict) -> list[str]:
    """How the N-HiTS rows were made and their CPU seconds per horizon, or why there are none."""
    nh = res.get("nhits")
    if not nh:
        return []
    if "by_horizon" not in nh:
        return [f"N-HiTS: no rows ({nh['missing']}).\n"]
    cost = "; ".join(f"H={h}: {v['cost']}" for h, v in nh["by_horizon"].items())
    return [f"**N-HiTS rows**: {nh['setup']}. Fit + predict CPU seconds: {cost}.\n"]


def render(res: dict) -> str:
    b = res["budget"]
    cap = f", at most {b['study_timeout']:.0f} s per study" if b.get("study_timeout") else ""
    lines = ["## ETTh1 (univariate, target OT)\n", C.conditions(res),
             f"Seeds {res['seeds']} (each a separate run; table cells are mean ± standard deviation over seeds; "
             "a difference within two standard deviations is a tie). Per-seed runs: "
             + "; ".join(f"seed {r['seed']}: {r['date']}, {r['wall_seconds']:.0f} s, commit {r['code'].get('commit')}"
                         f"{' (dirty)' if r['code'].get('dirty') else ''}" for r in res["runs"]) + ".\n",
             f"Protocol: train rows [0, {res['borders'][0]}), validation [{res['borders'][0]}, {res['borders'][1]}), "
             f"test [{res['borders'][1]}, {res['borders'][2]}); inputs may reach back `lookback` rows; standardized "
             "with the training mean and standard deviation; MSE and MAE on that scale over every test window "
             f"(stride 1). Tuning budget per model, horizon and seed: {b['n_trials']} Optuna trials (first one the "
             f"fixed prior below, then TPE), at most {b['max_epochs']} epochs each with early stopping (patience "
             f"{b['patience']}) and the median pruner{cap}; selection on validation MSE only; the best configuration "
             f"(and the {ENSEMBLE} best, averaged) is refit and evaluated once on the test part. Baselines (naive, "
             "seasonal naive at 24 and 168, ridge on last-value-normalized windows with lookback and penalty chosen "
             "on validation) are scored on the same test windows." + _check_text(res) + "\n",
             "**Test MSE** (standardized) by horizon:\n", _grid(res, "mse"),
             "**Test MAE** (standardized) by horizon:\n", _grid(res, "mae"),
             *statistical_text(res), *nhits_text(res), GOALS_HEADER, *_goal_lines(res), "", *interval_lines(res)]
    rows = []
    for run in res["per_seed"]:
        for r in sorted(run["results"], key=lambda r: (r["horizon"], r["family"])):
            p, tr = r["best_params"], r["trials"]
            rows.append([str(run["seed"]), str(r["horizon"]), r["family"].upper(), str(p["lookback"]),
                         str(p.get("highway", False)), p.get("init", "-"), p.get("loss", "mse"), str(p["hidden"]),
                         p["norm"], f"{r['best_val_mse_std']:.4f}", f"{r['refit_best_epoch']}",
                         f"{tr.get('complete', 0)}/{tr.get('pruned', 0)}/{tr.get('fail', 0)}",
                         f"{r['study_seconds']:.0f}", f"{r['n_parameters']:,}"])
    lines.append("**Selected configurations** per seed (best epoch -1: the highway's linear start was not improved "
                 "on validation):\n")
    lines.append(C.table(["seed", "H", "model", "lookback", "highway", "init", "loss", "hidden", "norm",
                          "val MSE", "best epoch", "trials done/pruned/failed", "tuning s", "parameters"], rows))
    lines.append(f"Search space (both models): {res['search_space']}. Prior trial: {res['prior']}.\n")
    sources = sorted({r["source"] for r in res["published"]})
    lines.append("Published rows (setting univariate_OT) from `published/etth1_published_results.csv`, "
                 "labelled by source repository: " + "; ".join(sources) + ".\n")
    return "\n".join(lines)


def summary(res: dict) -> str:
    rows_res = {**res, "baselines": [b for b in res["baselines"]
                                     if b["model"] in ("seasonal_naive_24", "seasonal_naive_168", "linear")]}
    return (f"Test MSE, mean ± sd over seeds {res['seeds']}; budget {res['budget']['n_trials']} trials x "
            f"{res['budget']['max_epochs']} epochs per model, horizon and seed.\n\n"
            + _grid(rows_res, "mse") + "\n" + "\n".join(_goal_lines(res)) + "\n\n"
            + "\n".join([*statistical_text(res, table=False), *nhits_text(res)]))


def interval_summary(res: dict) -> str:
    """The README's short interval table: test coverage at 80/95 % and MSIS, with how it was run."""
    b, cmd = res["budget"], res["runs"][0]["command"].split(" --out ")[0]
    fams = sorted({a["family"].upper() for a in res["aggregate"]})
    return (f"Mean ± sd over seeds {res['seeds']}, horizon(s) {b['horizons']}, {' and '.join(fams)}, "
            f"{b['n_trials']} trials x {b['max_epochs']} epochs per model and seed (study cap "
            f"{b.get('study_timeout')} s), one run per seed (`{cmd}`, seed varied), apart from the six-horizon "
            "runs above. Bands: split conformal on the residuals of every validation window, per horizon step "
            "(one series, original units), scored once on the test part.\n\n" + interval_lines(res)[1])


def merge(out: Path, key: str | None = None) -> dict:
    """Fold every seed file in `out` into etth1.json and etth1.md, with the statistical rows of
    `<out>/etth1_statistical.json` (entry `key`, else the latest for the seed runs' borders)."""
    runs = S.load_seeds(out, NAME)
    if not runs:
        raise SystemExit(f"no {NAME}_seed*.json in {out}")
    last = runs[-1]
    agg = aggregate(runs)
    stat = merge_statistical(out, last, key)
    nhits = merge_nhits(out, last, stat.get("statistical", {}).get("key"))
    res = {**{k: v for k, v in last.items() if k not in ("results", "seasonal_naive")},
           "seeds": [r["seed"] for r in runs], "seed": ", ".join(str(r["seed"]) for r in runs), "runs": S.runs_meta(runs), "aggregate": agg,
           "per_seed": [{"seed": r["seed"], "results": r["results"]} for r in runs], **stat, **nhits,
           "goals": goals(agg, last["baselines"], last["published"], stat.get("statistical", {}).get("rows", []),
                          nhits.get("nhits", {}).get("by_horizon"))}
    C.write(out, NAME, res, render(res))
    return res


def parse(argv: list[str] | None):
    """The options, with the budget's defaults filled in (smaller under --quick)."""
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=None, help="Optuna trials per model and horizon (default 10)")
    p.add_argument("--max-epochs", type=int, default=None, help="epochs per trial (default 10)")
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--study-timeout", type=float, default=None,
                   help="seconds per study, a safety cap on a loaded machine (default 150; 0 for none)")
    p.add_argument("--horizons", type=int, nargs="+", default=None)
    p.add_argument("--merge-only", action="store_true", help="only fold the seed files into etth1.json")
    p.add_argument("--statistical-only", action="store_true",
                   help=f"only compute the missing statsforecast rows into {STAT_CACHE} (no training) and "
                        "re-render etth1.json/etth1.md from the seed files in --out")
    p.add_argument("--nhits", choices=("run", "skip"), default="run",
                   help="the seed's N-HiTS rows: computed when neuralforecast is installed (default), or skipped")
    p.add_argument("--nhits-only", action="store_true", help="only compute the seed's N-HiTS rows and re-merge")
    args = p.parse_args(argv)
    quick = args.quick
    args.trials = args.trials or (2 if quick else 10)
    if args.study_timeout is None:
        args.study_timeout = None if quick else 150.0
    args.study_timeout = args.study_timeout or None
    args.max_epochs = args.max_epochs or (1 if quick else 10)
    args.horizons = tuple(args.horizons or ((24, 48) if quick else HORIZONS))
    return args


def load(args) -> tuple:
    """The data of a run: frame, split, borders, search space, prior and the statistical rows' lookback."""
    space, prior = (QUICK_SPACE, QUICK_PRIOR) if args.quick else (SPACE, PRIOR)
    borders = C.ETTH1_QUICK_BORDERS if args.quick else C.ETTH1_BORDERS
    df = C.etth1_frame(args.data_dir, borders[2])
    return df, C.etth1_split(borders), borders, space, prior, stat_lookback(space.lookbacks, borders[0])


def statistical_only(args) -> dict:
    """Compute the missing statistical rows, then re-render the merged result from the seed files in
    `--out` (none there: the cache is written and nothing is merged)."""
    C.require(args.data_dir, "ett/ETTh1.csv")
    C.set_threads(args.threads)
    df, split, borders, _, _, lookback = load(args)
    key = statistical_rows(args.out, df, split, borders, args.horizons, lookback, args)
    if not S.seed_files(args.out, NAME):
        print(f"[etth1] statistical rows in {Path(args.out) / STAT_CACHE}; no seed files to merge",
              file=sys.stderr)
        return {"statistical_key": key}
    return merge(args.out, key)


def main(argv: list[str] | None = None) -> dict:
    """One seed (tuned GRU and LSTM per horizon, baselines, the statistical rows), written and merged."""
    args = parse(argv)
    if args.merge_only:
        return merge(args.out)
    if args.statistical_only:
        return statistical_only(args)
    if args.nhits_only:
        C.set_threads(args.threads)
        df, split, borders, *_ = load(args)
        nhits_rows(args, df, split, borders)
        return merge(args.out)
    C.require(args.data_dir, "ett/ETTh1.csv", "published/etth1_published_results.csv")
    C.set_threads(args.threads)
    horizons = args.horizons
    df, split, borders, space, prior, lookback = load(args)
    budget = {"n_trials": args.trials, "max_epochs": args.max_epochs, "patience": args.patience,
              "study_timeout": args.study_timeout, "pruner": "median", "sampler": "TPE (multivariate, seed)",
              "horizons": list(horizons), "ensemble": ENSEMBLE,
              "statistical": stat_setup(borders[0], lookback)}
    run = C.Run(NAME, args, budget, extra_versions=("optuna", "scikit-learn", "statsforecast"))
    key = statistical_rows(args.out, df, split, borders, horizons, lookback, args)
    nhits_rows(args, df, split, borders)
    results, baselines = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for h in horizons:
            baselines += run_baselines(df, split, h, args)
            for fam in FAMILIES:
                print(f"[etth1] seed {args.seed} H={h} {fam}: tuning", file=sys.stderr, flush=True)
                r = run_horizon(df, split, h, fam, args, space, prior, Path(tmp))
                results.append(r)
                print(f"[etth1] H={h} {fam}: test MSE {r['test_mse_std']:.4f} (ensemble "
                      f"{r['ensemble']['test_mse_std']:.4f}), val {r['best_val_mse_std']:.4f}, study "
                      f"{r['study_seconds']:.0f} s", file=sys.stderr, flush=True)
    out = run.finish({"borders": list(borders), "horizons": list(horizons), "search_space": asdict(space),
                      "prior": prior, "results": results, "baselines": baselines, "statistical_key": key,
                      "published": published_rows(args.data_dir)})
    return S.write_and_merge(args.out, NAME, args.seed, out, lambda o: merge(o, key))


if __name__ == "__main__":
    main()
