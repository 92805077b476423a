"""The demo's accuracy over seeds: `forecasting demo`'s training job (bundled ETTh1, 7 series, H=24,
10 trials x 10 epochs of 16,384 windows per family) run once per seed through the real train flow,
and each model's test MASE against the best baseline of the same run.

Statistical rows beside them: statsforecast's MSTL, AutoETS and AutoTheta exactly as the train flow's
`--statistical` baselines make them (`forecasting.pipeline.steps.statistical_predictors`: fitted once per
series on its training rows, parameters then fixed, applied at every test origin to the lookback window
before it), on the same split and test windows. They do not depend on the seed: computed once and cached
in `<out>/demo_statistical.json` (keyed by the data's hash and the lookback), with their CPU seconds;
each model's margin is then taken to the best baseline including them. A seed run computes them when the
cache lacks them; `--statistical-only` computes only them and re-renders demo.json/demo.md from the seed
files already in `--out`.

NeuralForecast's N-HiTS beside them (see `_nhits.py`): library defaults with input size 5 x horizon and
`scaler_type="robust"`, one global model fitted on every series' training rows, scored on the same test
windows; one row per seed, cached in `<out>/demo_nhits.json`; `--nhits-only` computes only that.

    python benchmarks/demo.py --seed S [--quick] [--out DIR]      # one seed; merges all seed files
    python benchmarks/demo.py --statistical-only [--quick] [--out DIR]
    python benchmarks/demo.py --merge-only
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _nhits as N  # noqa: E402
import _seeds as S  # noqa: E402

from forecasting.api.family_mix import COMBINED  # noqa: E402
from forecasting.families import DEFAULT as FAMILIES  # noqa: E402  (the families `train` tunes by default)

NAME = "demo"
CHAMPION = "champion"  # the row of the model the demo forecasts with: its validation winner
REPORTED = (*FAMILIES, CHAMPION)  # rows with a margin and a verdict: each family, and the demo's champion
MODELS = (*FAMILIES, COMBINED, CHAMPION)  # rows that are not baselines
TARGET_MARGIN = -0.05  # issue 18: at least 5% under the best baseline's MASE, statistical models included
BUDGET = {"horizon": 24, "trials": 10, "max_epochs": 10, "max_train_windows": 16384, "max_val_windows": 4096}
QUICK = {"horizon": 24, "trials": 2, "max_epochs": 1, "max_train_windows": 256, "max_val_windows": 256}
QUICK_ROWS = 2400  # the quick slice of the bundled file
STAT_CACHE = f"{NAME}_statistical.json"
STAT_FORMAT = 1  # of a cached row: a change recomputes them
STAT_SETUP = ("statsforecast's MSTL (every kept season the lookback window holds twice, trend AutoETS ZZN), AutoETS "
              "and AutoTheta (m = the shortest kept season), as the train flow's `--statistical` baselines "
              "(forecasting.pipeline.steps.statistical_predictors). What differs from the models: each is fitted "
              "once per series on its training rows and its parameters (ETS form and smoothing, theta, MSTL's "
              "trend model) are then fixed, not tuned and not refit; at every test origin it is applied "
              "(statsforecast's `forward`) to the lookback window before the origin, the longest lookback of the "
              "flow's search space (MSTL decomposes that window anew). Same split, test windows and MASE scale as "
              f"the models; no seed: computed once and cached in {STAT_CACHE}")


@contextmanager
def demo_home(quick: bool) -> Iterator[str]:
    """A fresh home holding the bundled file ingested as dataset "etth1", as the demo does (under `quick`
    its first QUICK_ROWS rows: numbers meaningless, the path the same)."""
    from forecasting.core import datasets
    from forecasting.core.data import IngestConfig

    with tempfile.TemporaryDirectory() as home:
        src = C.REPO / "data" / "ETTh1.csv"
        if quick:
            import pandas as pd

            src = Path(home) / "etth1.csv"
            pd.read_csv(C.REPO / "data" / "ETTh1.csv", nrows=QUICK_ROWS).to_csv(src, index=False)
        datasets.ingest(src, "etth1", home, IngestConfig(format="wide"))
        yield home


def make_job(seed: int, budget: dict):
    """The demo's training job."""
    from forecasting.api.jobs import TrainJob
    from forecasting.core.options import from_flags

    return from_flags(TrainJob, dataset="etth1", models=FAMILIES, seed=seed, device="cpu", **budget)


def run_seed(seed: int, budget: dict, quick: bool) -> dict:
    """Ingest the bundled file into a fresh home and run the train flow as the demo does; the rows add
    CHAMPION, the model the demo forecasts with (`flows.cli.validation_winner`: the family, or the
    families' combination, best on the validation backtest)."""
    from flows.cli import validation_winner
    from flows.server import prefect_api
    from flows.train import train_flow

    job = make_job(seed, budget)
    with demo_home(quick) as home, prefect_api():
        r = train_flow(job, home)
    table = r["table"]
    rows = table[["model", "mase", "val_backtest_mase"]].to_dict("records")
    winner = validation_winner(r, job)
    rows.append({**next(row for row in rows if row["model"] == winner), "model": CHAMPION, "winner": winner})
    margins = r["summary"]["margins"] | {CHAMPION: r["summary"]["margins"][winner]}
    return {"rows": rows, "best_baseline": r["summary"]["best_baseline"],
            "best_baseline_mase": r["summary"]["best_baseline_value"], "margins": margins, "champion": winner}


# --------------------------------------------------------------------------- statistical rows


def stat_plan(home: str, quick: bool) -> tuple:
    """What the train flow's baseline step scores on (`steps.baseline_rows`): the frame, the split, a
    Forecaster with its scaler fitted on the training rows and the search space's longest lookback."""
    from forecasting.api.forecaster import Forecaster
    from forecasting.core import datasets
    from forecasting.pipeline import plan

    df, freq = datasets.load_processed(home, "etth1")
    job = make_job(0, QUICK if quick else BUDGET)
    split = plan.make_split(df, job)
    base = plan.base_config(df, freq, job, split)
    lookback = max(plan.search_space(df, split, base, job).lookbacks)
    if quick:  # a smoke test: a window MSTL decomposes at one season (~10x cheaper than at 24 and 168)
        lookback = min(lookback, 2 * min(base.seasons or (24,)) + 1)
    f = Forecaster(replace(base, model=replace(base.model, lookback=lookback)))
    f.fit_scaler(df, split)
    return df, split, f, lookback


def stat_key(df, split, f, lookback: int, quick: bool) -> tuple[str, dict]:
    """The cache key (rows, lookback, hash of the data) and what a cached entry must also match."""
    import statsforecast

    from forecasting.core.provenance import dataset_fingerprint

    key = f"rows{len(df)}-lookback{lookback}-{dataset_fingerprint(df)}"
    return key, {"quick": quick, "horizon": f.cfg.model.horizon, "lookback": lookback,
                 "periods": list(f.cfg.seasons or (f.cfg.period,)), "series": list(split.ids),
                 "train_end": split.train_end.tolist(), "val_end": split.val_end.tolist(),
                 "models": C.STAT_LABELS, "statsforecast": statsforecast.__version__, "format": STAT_FORMAT}


def stat_done(entry: dict) -> bool:
    """Whether a cache entry holds every statistical row, in the current format."""
    return all(entry["rows"].get(label, {}).get("format") == STAT_FORMAT for label in C.STAT_LABELS.values())


def stat_score(entry: dict, save, df, split, f, lookback: int) -> None:
    """Fit the three models per series (`steps.statistical_predictors`, timed together), then score each
    row the entry lacks on every test window (timed apart, saved after each); also the naive and seasonal
    naive rows on the same windows, a check against the seed runs' rows."""
    from forecasting.core.evaluation import simple_predictors
    from forecasting.pipeline.steps import statistical_predictors

    entry["simple_check"] = {p.name: f.evaluate(df, split, "test", predictor=p).metrics["mase"]
                             for p in simple_predictors(f.cfg.model.horizon, f.cfg.seasons or (f.cfg.period,))}
    with C.timed() as fit_t:
        predictors = statistical_predictors(f, df, split, lookback)
    entry["fit_cpu_seconds"], entry["fit_wall_seconds"] = fit_t["cpu_seconds"], fit_t["wall_seconds"]
    for p in predictors:
        label = C.STAT_LABELS[p.name]
        if entry["rows"].get(label, {}).get("format") == STAT_FORMAT:
            continue  # scored by an earlier (interrupted) run
        with C.timed() as t:
            ev = f.evaluate(df, split, "test", predictor=p)
        n = len(ev.y)
        entry["rows"][label] = r = {
            "model": label, **ev.metrics, "test_windows": n, "lookback": lookback, "periods": p.params["periods"],
            "spec": p.params["model"], "fit_wall_seconds": p.params["fit_seconds"],
            "score_cpu_seconds": t["cpu_seconds"], "score_wall_seconds": t["wall_seconds"],
            "score_ms_per_window": round(1000 * t["cpu_seconds"] / n, 2), "format": STAT_FORMAT}
        save()
        print(f"[demo] {label}: test MASE {r['mase']:.4f}, scoring {r['score_cpu_seconds']:.1f} CPU s "
              f"({r['score_ms_per_window']:.1f} ms per window, {n} windows)", file=sys.stderr, flush=True)


def statistical_rows(out: Path, quick: bool) -> str:
    """Make sure `<out>/demo_statistical.json` holds the statistical rows of the demo's data (computing
    only the missing ones); returns the cache key."""
    path = Path(out) / STAT_CACHE
    cache = C.read_cache(path)
    with demo_home(quick) as home:
        df, split, f, lookback = stat_plan(home, quick)
        key, check = stat_key(df, split, f, lookback, quick)
        if cache.get(key, {}).get("check") != check:
            cache[key] = {"check": check, "rows": {}, "runs": []}
        entry = cache[key]
        if stat_done(entry):
            print(f"[demo] statistical rows reused from {path} ({key})", file=sys.stderr, flush=True)
            return key
        entry["runs"].append(C.stat_meta())
        y = df.loc[df["unique_id"] == split.ids[0], "y"].to_numpy()
        entry["warmup_wall_seconds"] = C.stat_warmup(y, tuple(check["periods"]), lookback, check["horizon"])
        stat_score(entry, lambda: C.write_cache(path, cache), df, split, f, lookback)
    entry["runs"][-1]["loadavg_end"] = C.loadavg()
    C.write_cache(path, cache)
    return key


def stat_entry(out: Path, last: dict, key: str | None = None) -> tuple[str, dict] | None:
    """The cache entry of a merge: `key` when given, else the latest of the seed runs' mode and horizon."""
    cache = C.read_cache(Path(out) / STAT_CACHE)
    if key is not None:
        return (key, cache[key]) if key in cache else None
    match = [(k, e) for k, e in cache.items() if e["check"]["quick"] == bool(last["quick"])
             and e["check"]["horizon"] == last["budget"]["horizon"] and e["runs"]]
    return max(match, key=lambda ke: ke[1]["runs"][-1]["date"], default=None)


def merge_statistical(out: Path, last: dict, key: str | None = None) -> dict:
    """The cached statistical rows for the seed runs' data (none without an entry), with their setup and
    cost, and how far the naive and seasonal naive MASE recomputed beside them are from the seed runs'."""
    found = stat_entry(out, last, key)
    if found is None:
        return {}
    key, entry = found
    seed = {r["model"]: r["mase"] for r in last["result"]["rows"]}
    diffs = [abs(v - seed[m]) for m, v in entry.get("simple_check", {}).items() if m in seed]
    keep = ("runs", "warmup_wall_seconds", "fit_cpu_seconds", "fit_wall_seconds", "simple_check")
    return {"statistical": {"key": key, "setup": STAT_SETUP, "complete": stat_done(entry),
                            "lookback": entry["check"]["lookback"], "periods": entry["check"]["periods"],
                            "rows": entry["rows"], **{k: entry.get(k) for k in keep},
                            "simple_check_max_abs_diff": max(diffs, default=None)}}


# --------------------------------------------------------------------------- N-HiTS rows

NHITS_INPUT = 5  # x horizon: NeuralForecast's long-horizon recipe for N-HiTS
NHITS_SETUP = ("NeuralForecast N-HiTS, library defaults ({steps:,} steps, no early stopping) except input size "
               f"{NHITS_INPUT} x horizon and scaler_type=\"robust\"; one global model fitted on every series' "
               "training rows (what the flow's models learn from), scored on the same test windows; one run per "
               f"seed, cached in {NAME}_nhits.json")


def nhits_key(data_key: str, horizon: int, quick: bool) -> str:
    return N.key_of(data_key, horizon, NHITS_INPUT * horizon, N.QUICK_STEPS if quick else N.STEPS)


def nhits_row(args) -> None:
    """This seed's N-HiTS row, unless it is cached, skipped or neuralforecast is missing."""
    from forecasting.api.forecaster import Forecaster, build_panel
    from forecasting.core.provenance import dataset_fingerprint

    python = N.interpreter()
    if args.nhits == "skip" or python is None:
        print(f"[demo] N-HiTS skipped: {'--nhits skip' if python else N.missing_reason()}", file=sys.stderr)
        return
    with demo_home(args.quick) as home:
        df, split, f, _ = stat_plan(home, args.quick)
        h = f.cfg.model.horizon
        key = nhits_key(f"rows{len(df)}-{dataset_fingerprint(df)}", h, args.quick)
        if N.cached(args.out, NAME, key, args.seed) is not None:
            return
        g = Forecaster(replace(f.cfg, model=replace(f.cfg.model, lookback=NHITS_INPUT * h)))
        g.fit_scaler(df, split)
        panel, rec = build_panel(df, g.cfg), {}
        train = [panel.series(i)[: int(e), 0] for i, e in enumerate(split.train_end)]
        p = N.predictor(train, g.scaler_.mean[:, 0], g.scaler_.std[:, 0], h, NHITS_INPUT * h, args.seed,
                        N.QUICK_STEPS if args.quick else N.STEPS, python, rec)
        ev = g.evaluate(df, split, "test", predictor=p)
    N.store(args.out, NAME, key, args.seed, {**ev.metrics, "test_windows": len(ev.y), **rec})
    print(f"[demo] seed {args.seed} N-HiTS: test MASE {ev.metrics['mase']:.4f}", file=sys.stderr, flush=True)


def merge_nhits(out: Path, last: dict, stat_key: str | None) -> dict:
    """N-HiTS's test MASE over the seeds cached for the seed runs' data (mean ± sd), or why there is none."""
    rows = {}
    if stat_key:
        n_rows, _, fp = stat_key.split("-", 2)
        rows = N.seeds_of(out, NAME, nhits_key(f"{n_rows}-{fp}", last["budget"]["horizon"], last["quick"]))
    if not rows:
        return {"nhits": {"missing": N.no_rows()}}
    steps = next(iter(rows.values()))["max_steps"]
    return {"nhits": {"setup": NHITS_SETUP.format(steps=steps), "seeds": sorted(int(k) for k in rows),
                      "mase": S.mean_sd([r["mase"] for r in rows.values()]), "cost": N.cost_text(rows)}}


# --------------------------------------------------------------------------- seeds and report


def margins_with(runs: list[dict], stat: dict) -> tuple[dict, list[str]]:
    """Each family's margin to the best baseline of its seed's rows and the statistical rows (mean ± sd
    over seeds), and that best baseline per seed."""
    from forecasting.core.evaluation import best_baseline

    extra = [{"model": k, "mase": v["mase"]} for k, v in stat.items()]
    margins, best = {f: [] for f in REPORTED}, []
    for run in runs:
        rows = run["result"]["rows"]
        name, value = best_baseline([*rows, *extra], "mase", MODELS)
        best.append(name)
        for f in REPORTED:
            margins[f] += [r["mase"] / value - 1.0 for r in rows if r["model"] == f]
    return {f: S.mean_sd(v) for f, v in margins.items()}, best


def merge(out: Path, key: str | None = None) -> dict:
    """Fold every seed file in `out` into demo.json and demo.md, with the statistical rows of
    `<out>/demo_statistical.json` (entry `key`, else the latest of the seed runs' mode)."""
    runs = S.load_seeds(out, NAME)
    if not runs:
        raise SystemExit(f"no {NAME}_seed*.json in {out}")
    models = list(dict.fromkeys(row["model"] for run in runs for row in run["result"]["rows"]))
    mase = {m: S.mean_sd([row["mase"] for run in runs for row in run["result"]["rows"] if row["model"] == m])
            for m in models}
    margins = {f: S.mean_sd([run["result"]["margins"][f] for run in runs]) for f in REPORTED}
    st = merge_statistical(out, runs[-1], key)
    nh = merge_nhits(out, runs[-1], st.get("statistical", {}).get("key"))
    stat = st.get("statistical", {}).get("rows", {})
    with_stat, best_with = margins_with(runs, stat) if stat else (margins, [r["result"]["best_baseline"] for r in runs])
    res = {**{k: v for k, v in runs[-1].items() if k != "result"}, "seeds": [r["seed"] for r in runs],
           "seed": ", ".join(str(r["seed"]) for r in runs), "runs": S.runs_meta(runs), "mase": mase,
           "margins": margins, "best_baselines": [r["result"]["best_baseline"] for r in runs],
           "margins_with_statistical": with_stat, "best_baselines_with_statistical": best_with, **st, **nh,
           "ahead_of_nhits": {f: S.compare(mase[f], nh["nhits"]["mase"]) for f in REPORTED if "mase" in nh["nhits"]},
           "goals": {f: S.compare(with_stat[f], TARGET_MARGIN) for f in REPORTED},
           "ahead_of_statistical": {f: {k: S.compare(mase[f], v["mase"]) for k, v in stat.items()} for f in REPORTED},
           "champions": [r["result"]["champion"] for r in runs], "champion_before": champion_before(runs), "present": {
               m: sum(any(row["model"] == m for row in r["result"]["rows"]) for r in runs) for m in models},
           "per_seed": [{"seed": r["seed"], **r["result"]} for r in runs]}
    C.write(out, NAME, res, render(res))
    return res


def champion_before(runs: list[dict]) -> dict:
    """The margin (to each seed's flow best baseline, mean ± sd) of the champion the rule before the
    families' combination picked: the family best on the validation backtest."""
    margins = []
    for run in runs:
        rows = {r["model"]: r for r in run["result"]["rows"]}
        best = min(FAMILIES, key=lambda f: rows[f]["val_backtest_mase"])
        margins.append(rows[best]["mase"] / run["result"]["best_baseline_mase"] - 1.0)
    return S.mean_sd(margins)


def _verdict(v: str, mean: float) -> str:
    if v == "tie":
        return f"**tie** (within 2 sd; the mean {'misses' if mean > TARGET_MARGIN else 'meets'} it)"
    return "**met**" if v == "better" else "**missed**"


def _margin(m: dict) -> str:
    return f"{m['mean']:+.1%} ± {m['sd']:.1%}"


def _goal_line(res: dict, f: str) -> str:
    """One family's margin to the best baseline (the statistical rows included when there are any), its
    verdict, the margin to the flow's own baselines, and whether it is ahead of each statistical row."""
    m, stat = res.get("margins_with_statistical", res["margins"]), (res.get("statistical") or {}).get("rows", {})
    best = ", ".join(sorted(set(res.get("best_baselines_with_statistical", res["best_baselines"]))))
    line = (f"- {f.upper()} margin to the best baseline{', statsforecast rows included,' if stat else ''} ({best}): "
            f"{_margin(m[f])}; target ≤ {TARGET_MARGIN:+.0%}: {_verdict(res['goals'][f], m[f]['mean'])}")
    if stat:
        flow_best = ", ".join(sorted(set(res["best_baselines"])))
        ahead = ", ".join(f"{k} ({v['mase']:.4f}): {C.AHEAD[res['ahead_of_statistical'][f][k]]}"
                          for k, v in stat.items())
        line += f" (to the flow's own baselines, {flow_best}: {_margin(res['margins'][f])}); ahead of {ahead}"
    if f in res.get("ahead_of_nhits", {}):
        line += f"; ahead of N-HiTS ({S.fmt(res['nhits']['mase'], 4)}): {C.AHEAD[res['ahead_of_nhits'][f]]}"
    return line + "."


def statistical_text(res: dict) -> str:
    """How the statistical rows were made, what differs, their cost, when and where they were computed."""
    st = res.get("statistical")
    if not st:
        return ("Statistical rows (MSTL, AutoETS, AutoTheta): not computed for these data yet "
                "(`python benchmarks/demo.py --statistical-only`).\n")
    check = st.get("simple_check_max_abs_diff")
    same = ("" if check is None else " The naive and seasonal naive rows recomputed beside them match the seed "
            f"runs' test MASE (largest difference {check:.1e}): the same test windows and scale.")
    cost = "; ".join(f"{k} {v['score_cpu_seconds']:.1f} CPU s over {v['test_windows']:,} windows "
                     f"({v['score_ms_per_window']:.1f} ms each; fit {v['fit_wall_seconds']:.1f} s wall)"
                     for k, v in st["rows"].items())
    used = ", ".join(f"{k} {v['periods']}" for k, v in st["rows"].items())
    return (f"Statistical rows: {st['setup']}. Lookback {st['lookback']}; kept seasons {st['periods']}, periods each "
            f"model used: {used}.{same} "
            f"Cost: the three fitted together on the training rows of every series, {st.get('fit_cpu_seconds')} "
            f"CPU s; scoring every test window: {cost}. "
            f"{'' if st['complete'] else 'Not all rows computed yet. '}Computed by: {C.stat_runs_text(st['runs'])}; "
            f"cache key {st['key']}.\n")


def _label(res: dict, m: str) -> str:
    """A row's name in the table: the champion says which model won in each seed; a row that not every
    seed has (the families' combination, where its check kept the best family alone) says in how many."""
    if m == CHAMPION:
        return f"champion (the demo's validation winner: {', '.join(res['champions'])})"
    n, total = res["present"].get(m, len(res["seeds"])), len(res["seeds"])
    return m if n == total else f"{m} ({n} of {total} seeds: registered where its check kept it)"


def summary(res: dict) -> str:
    rows = [[_label(res, m), S.fmt(v, 4)] for m, v in res["mase"].items()]
    rows += [[f"{k} (statsforecast, fitted on train, fixed)", f"{v['mase']:.4f}"]
             for k, v in ((res.get("statistical") or {}).get("rows") or {}).items()]
    nh = res.get("nhits") or {}
    if "mase" in nh:
        rows.append([f"N-HiTS (neuralforecast, seeds {nh['seeds']})", S.fmt(nh["mase"], 4)])
    lines = [f"Test MASE, mean ± sd over seeds {res['seeds']}; the demo's budget "
             f"({res['budget']['trials']} trials x {res['budget']['max_epochs']} epochs per family); the "
             "statistical rows do not depend on the seed.\n",
             C.table(["demo (ETTh1, 7 series, H=24)", "test MASE"], rows)]
    lines += [_goal_line(res, f) for f in REPORTED]
    if "champion_before" in res:
        lines.append(f"- The champion by the rule before the families' combination (the family best on the validation "
                     f"backtest) in the same runs: {_margin(res['champion_before'])} to the flow's best baseline.")
    nh_text = (f"N-HiTS row: {nh['setup']}. Fit + predict: {nh['cost']}.\n" if "mase" in nh
               else f"N-HiTS: no row ({nh['missing']}).\n" if nh else "")
    return "\n".join(lines) + "\n\n" + statistical_text(res) + nh_text


def render(res: dict) -> str:
    return "## Demo accuracy\n\n" + C.conditions(res) + "\n" + summary(res)


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--merge-only", action="store_true", help="only fold the seed files into demo.json")
    p.add_argument("--statistical-only", action="store_true",
                   help=f"only compute the missing statsforecast rows into {STAT_CACHE} (no training) and "
                        "re-render demo.json/demo.md from the seed files in --out")
    p.add_argument("--nhits", choices=("run", "skip"), default="run",
                   help="the seed's N-HiTS row: computed when neuralforecast is installed (default), or skipped")
    p.add_argument("--nhits-only", action="store_true", help="only compute the seed's N-HiTS row and re-merge")
    p.add_argument("--ensemble", type=int, default=None,
                   help="the train job's --ensemble K (the K best trials of each family combined; recorded in the "
                        "budget); default: the job's own default")
    args = p.parse_args(argv)
    if args.merge_only:
        return merge(args.out)
    C.set_threads(args.threads)
    if args.nhits_only:
        nhits_row(args)
        return merge(args.out)
    if args.statistical_only:
        key = statistical_rows(args.out, args.quick)
        if not S.seed_files(args.out, NAME):
            print(f"[demo] statistical rows in {Path(args.out) / STAT_CACHE}; no seed files to merge",
                  file=sys.stderr)
            return {"statistical_key": key}
        return merge(args.out, key)
    budget = {**(QUICK if args.quick else BUDGET), **({"ensemble": args.ensemble} if args.ensemble else {})}
    run = C.Run(NAME, args, budget, extra_versions=("optuna", "mlflow", "prefect", "scikit-learn", "statsforecast"))
    key = statistical_rows(args.out, args.quick)
    nhits_row(args)
    out = run.finish({"result": run_seed(args.seed, budget, args.quick), "statistical_key": key})
    return S.write_and_merge(args.out, NAME, args.seed, out, lambda o: merge(o, key))


if __name__ == "__main__":
    main()
