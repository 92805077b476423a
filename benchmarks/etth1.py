"""ETTh1 univariate (target OT) accuracy benchmark against published results (DESIGN §8).

Standard protocol: train rows [0, 8640), validation [8640, 11520), test [11520, 14400);
validation and test inputs reach back `lookback` rows; the series is standardized with the
training mean and standard deviation; MSE and MAE on that scale over every test window
(stride 1). For each horizon a GRU and an LSTM are tuned with Optuna under the same budget and
search space, selected on validation loss only, refit with the best configuration and
evaluated once on the test part; seasonal naive (period 24) runs on the same test windows.

    python benchmarks/etth1.py [--quick] [--out DIR] [--data-dir DIR] [--trials N] [--max-epochs N]
"""

from __future__ import annotations

import csv
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from forecasting.forecaster import Forecaster, ForecasterConfig  # noqa: E402
from forecasting.models import ModelConfig  # noqa: E402
from forecasting.training import TrainConfig  # noqa: E402
from forecasting.tuning import SearchSpace  # noqa: E402

NAME = "etth1"
HORIZONS = (24, 48, 96, 168, 336, 720)
FAMILIES = ("gru", "lstm")
PERIOD = 24
PUBLISHED = ("Informer", "LSTMa", "DeepAR", "ARIMA", "Prophet", "DLinear", "NLinear")
LSTM_TYPE = ("LSTMa", "DeepAR")

# The same space for both families. Lookbacks up to 720 (30 days); SegRNN-style segments of one
# or two days keep a 720-step lookback to 15-30 recurrent steps, which is what makes this search
# affordable on a CPU (segment 1 costs 10-40x more per epoch at these lookbacks). Per-window
# normalization is searched between "last" and "standard"; "none" is left out because the
# test period's level lies outside the training range on ETTh1-OT, where it is known to fail.
SPACE = SearchSpace(
    lookbacks=(96, 168, 336, 720), hidden=(32, 128), layers=(1, 2), dropout=(0.0, 0.3),
    lr=(3e-4, 3e-3), batch_sizes=(128, 256), weight_decay=(1e-7, 1e-3),
    norms=("last", "standard"), segments=(24, 48),
)
# One configuration tried first in every study (GRU and LSTM alike): a SegRNN-like default.
PRIOR = {"lookback": 336, "hidden": 64, "layers": 1, "dropout": 0.0, "lr": 1e-3, "batch_size": 256,
         "weight_decay": 1e-6, "norm": "last", "segment": 24}

QUICK_SPACE = SearchSpace(
    lookbacks=(48, 96), hidden=(8, 16), layers=(1, 1), dropout=(0.0, 0.1), lr=(1e-3, 3e-3),
    batch_sizes=(256,), weight_decay=(1e-7, 1e-5), norms=("last", "standard"), segments=(24,),
)
QUICK_PRIOR = {"lookback": 96, "hidden": 16, "layers": 1, "dropout": 0.0, "lr": 1e-3, "batch_size": 256,
               "weight_decay": 1e-6, "norm": "last", "segment": 24}


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


def run_horizon(df, split, horizon: int, family: str, args, space: SearchSpace, prior: dict, tmp: Path) -> tuple[dict, Forecaster]:
    base = ForecasterConfig(
        model=ModelConfig(cell=family, lookback=prior["lookback"], horizon=horizon),
        train=TrainConfig(seed=args.seed, device="cpu", patience=args.patience),
        freq="h", calendar=False, season=PERIOD,
    )
    result, study_seconds, states = C.tuned_study(
        df, split, base, family, f"etth1-h{horizon}-{family}", prior, space, args, tmp)
    best = result.study.best_trial
    # Refit the selected configuration as it was trained in its trial (same epochs, same seed).
    cfg = replace(result.config, train=replace(result.config.train, max_epochs=args.max_epochs))
    f = Forecaster(cfg)
    fit = f.fit(df, split)
    ev = f.evaluate(df, split, "test")
    return {
        "horizon": horizon, "family": family,
        "best_params": result.best_params, "best_trial": best.number,
        "best_val_mse_std": best.value, "refit_val_mse_std": fit.best_val_loss,
        "refit_best_epoch": fit.best_epoch, "refit_epochs_run": len(fit.history),
        "refit_seconds": fit.seconds, "refit_peak_memory_mb": fit.peak_memory_mb,
        "n_parameters": f.n_parameters,
        "trials": {s: states.count(s) for s in ("complete", "pruned", "fail", "running", "waiting")
                   if states.count(s)},
        "study_seconds": study_seconds,
        "test_windows": len(ev.y),
        "test_mse_std": ev.metrics["mse_std"], "test_mae_std": ev.metrics["mae_std"],
        "test_mse": ev.metrics["mse"], "test_mae": ev.metrics["mae"],
        "config": cfg.to_dict(),
    }, f


def goals(ours: list[dict], published: list[dict]) -> dict:
    pub = {(r["model"], r["horizon"]): r for r in published if r["model"] in (*LSTM_TYPE, "NLinear")}
    beat = {}
    for fam in FAMILIES:
        checks = []
        for r in (r for r in ours if r["family"] == fam):
            for m in LSTM_TYPE:
                p = pub.get((m, r["horizon"]))
                if p is not None:
                    checks.append({"horizon": r["horizon"], "published": m, "published_mse": p["mse"],
                                   "ours_mse": r["test_mse_std"], "beaten": r["test_mse_std"] < p["mse"]})
        beat[fam] = {"met": bool(checks) and all(c["beaten"] for c in checks), "checks": checks}
    nl = pub.get(("NLinear", 96))
    at96 = {}
    for fam in FAMILIES:
        r = next((r for r in ours if r["family"] == fam and r["horizon"] == 96), None)
        # "met" is strict; the published figure has three decimals, so also say whether ours ties it there.
        at96[fam] = None if (r is None or nl is None) else {
            "ours_mse": r["test_mse_std"], "nlinear_mse": nl["mse"], "met": r["test_mse_std"] <= nl["mse"],
            "met_at_published_precision": round(r["test_mse_std"], 3) <= nl["mse"]}
    return {"beat_lstm_type_every_horizon": beat, "reach_nlinear_mse_at_96": at96}


def render(res: dict) -> str:
    ours, naive, pub = res["results"], res["seasonal_naive"], res["published"]
    horizons = sorted({r["horizon"] for r in ours} | {r["horizon"] for r in pub})
    b = res["budget"]
    cap = f", at most {b['study_timeout']:.0f} s per study" if b.get("study_timeout") else ""
    lines = ["## ETTh1 (univariate, target OT)\n", C.conditions(res)]
    lines.append(
        f"Protocol: train rows [0, {res['borders'][0]}), validation [{res['borders'][0]}, {res['borders'][1]}), "
        f"test [{res['borders'][1]}, {res['borders'][2]}); inputs may reach back `lookback` rows; standardized "
        "with the training mean and standard deviation; MSE and MAE on that scale over every test window "
        f"(stride 1). Tuning budget per model and horizon: {b['n_trials']} Optuna trials "
        f"(first one the fixed prior below, then TPE), at most {b['max_epochs']} epochs each with early stopping "
        f"(patience {b['patience']}) and the median pruner"
        f"{cap}; selection "
        "on validation MSE only, then the best configuration is refit and evaluated once on the test part.\n")

    def grid(metric: str) -> str:
        rows = []
        for fam, label in (("gru", "GRU (ours, tuned)"), ("lstm", "LSTM (ours, tuned)")):
            by_h = {r["horizon"]: r for r in ours if r["family"] == fam}
            rows.append([f"**{label}**"] + [f"**{by_h[h][f'test_{metric}_std']:.3f}**" if h in by_h else "–"
                                            for h in horizons])
        by_h = {r["horizon"]: r for r in naive}
        rows.append(["Seasonal naive, period 24 (ours)"] + [f"{by_h[h][f'{metric}_std']:.3f}" if h in by_h else "–"
                                                             for h in horizons])
        for label, by_h in published_series(pub):
            rows.append([f"{label} (published)"] + [f"{by_h[h][metric]:.3f}" if h in by_h else "–" for h in horizons])
        return C.table(["model"] + [str(h) for h in horizons], rows)

    lines.append("**Test MSE** (standardized) by horizon:\n")
    lines.append(grid("mse"))
    lines.append("**Test MAE** (standardized) by horizon:\n")
    lines.append(grid("mae"))
    g = goals(ours, pub)  # recomputed from the stored results, so the wording can evolve
    lines.append("**Goals**\n")
    for fam in FAMILIES:
        bt = g["beat_lstm_type_every_horizon"][fam]
        missed = [f"H={c['horizon']} vs {c['published']} ({c['ours_mse']:.3f} ≥ {c['published_mse']:.3f})"
                  for c in bt["checks"] if not c["beaten"]]
        worst = max((c["ours_mse"] / c["published_mse"] for c in bt["checks"]), default=float("nan"))
        lines.append(f"- {fam.upper()} beats every published LSTM-type row (LSTMa, DeepAR) at every horizon "
                     f"they report: {C.verdict(bt['met'] if bt['checks'] else None)}"
                     + (f" (our MSE is at most {worst:.0%} of theirs)" if bt["checks"] and bt["met"] else "")
                     + (f"; missed at {', '.join(missed)}" if missed else "") + ".")
    for fam in FAMILIES:
        n = g["reach_nlinear_mse_at_96"][fam]
        tie = (n is not None and not n["met"] and n.get("met_at_published_precision"))
        lines.append(f"- {fam.upper()} reaches NLinear's published MSE at H=96 (0.053): "
                     + ("n/a (horizon 96 not run)" if n is None else
                        f"{C.verdict(n['met'])} ({n['ours_mse']:.4f} vs {n['nlinear_mse']:.3f}"
                        + ("; equal at the published three-decimal precision, not below it" if tie else "")
                        + ")") + ".")
    lines.append("")
    lines.append("**Selected configurations** (validation MSE of the best trial, refit check, cost):\n")
    rows = []
    for r in sorted(ours, key=lambda r: (r["horizon"], r["family"])):
        p = r["best_params"]
        tr = r["trials"]
        rows.append([str(r["horizon"]), r["family"].upper(), str(p["lookback"]), str(min(p["segment"], p["lookback"])),
                     str(p["hidden"]), str(p["layers"]), p["norm"], f"{p['dropout']:.2f}", f"{p['lr']:.1e}",
                     str(p["batch_size"]), f"{r['best_val_mse_std']:.4f}", f"{r['refit_val_mse_std']:.4f}",
                     f"{tr.get('complete', 0)}/{tr.get('pruned', 0)}/{tr.get('fail', 0)}",
                     f"{r['study_seconds']:.0f}", f"{r['refit_seconds']:.1f}", f"{r['n_parameters']:,}"])
    lines.append(C.table(["H", "model", "lookback", "segment", "hidden", "layers", "norm", "dropout", "lr", "batch",
                          "val MSE (trial)", "val MSE (refit)", "trials done/pruned/failed", "tuning s",
                          "refit s", "parameters"], rows))
    lines.append(f"Search space (both models): {res['search_space']}. Prior trial: {res['prior']}.\n")
    sources = sorted({r["source"] for r in pub})
    lines.append("Published rows (setting univariate_OT) from `published/etth1_published_results.csv`, "
                 "labelled by source repository: " + "; ".join(sources) + ".\n")
    return "\n".join(lines)


def summary(res: dict) -> str:
    ours = res["results"]
    horizons = sorted({r["horizon"] for r in ours})
    rows = []
    for fam in FAMILIES:
        by_h = {r["horizon"]: r["test_mse_std"] for r in ours if r["family"] == fam}
        rows.append([f"{fam.upper()} (ours)"] + [f"{by_h[h]:.3f}" if h in by_h else "–" for h in horizons])
    by_h = {r["horizon"]: r["mse_std"] for r in res["seasonal_naive"]}
    rows.append(["Seasonal naive"] + [f"{by_h[h]:.3f}" if h in by_h else "–" for h in horizons])
    for label, by_h in published_series(res["published"]):
        if label.split(" ")[0] in ("LSTMa", "DeepAR", "Informer", "NLinear") and any(h in by_h for h in horizons):
            rows.append([f"{label} (published)"] + [f"{by_h[h]['mse']:.3f}" if h in by_h else "–" for h in horizons])
    g = goals(res["results"], res["published"])
    beat = ", ".join(f"{f.upper()} {C.verdict(g['beat_lstm_type_every_horizon'][f]['met'])}" for f in FAMILIES)

    def at96(f: str) -> str:
        n = g["reach_nlinear_mse_at_96"][f]
        return "n/a" if n is None else f"{C.verdict(n['met'])} ({n['ours_mse']:.4f})"

    nl = ", ".join(f"{f.upper()} {at96(f)}" for f in FAMILIES)
    return (C.table(["ETTh1-OT test MSE (std.)"] + [f"H={h}" for h in horizons], rows)
            + f"\nBeat LSTMa and DeepAR at every horizon: {beat}. Reach NLinear's 0.053 at H=96: {nl}.\n")


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=None, help="Optuna trials per model and horizon (default 14)")
    p.add_argument("--max-epochs", type=int, default=None, help="epochs per trial (default 10)")
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--study-timeout", type=float, default=None,
                   help="seconds per study, a safety cap on a loaded machine (default 120; 0 for none)")
    p.add_argument("--horizons", type=int, nargs="+", default=None)
    args = p.parse_args(argv)
    C.require(args.data_dir, "ett/ETTh1.csv", "published/etth1_published_results.csv")
    C.set_threads(args.threads)
    quick = args.quick
    args.trials = args.trials or (2 if quick else 14)
    if args.study_timeout is None:
        args.study_timeout = None if quick else 120.0
    args.study_timeout = args.study_timeout or None
    args.max_epochs = args.max_epochs or (1 if quick else 10)
    horizons = tuple(args.horizons or ((24, 48) if quick else HORIZONS))
    space, prior = (QUICK_SPACE, QUICK_PRIOR) if quick else (SPACE, PRIOR)
    borders = C.ETTH1_QUICK_BORDERS if quick else C.ETTH1_BORDERS
    budget = {"n_trials": args.trials, "max_epochs": args.max_epochs, "patience": args.patience,
              "study_timeout": args.study_timeout, "pruner": "median", "sampler": "TPE (multivariate, seed)",
              "horizons": list(horizons)}
    run = C.Run(NAME, args, budget, extra_versions=("optuna",))
    df = C.etth1_frame(args.data_dir, borders[2])
    split = C.etth1_split(borders)
    results, naive = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for h in horizons:
            for fam in FAMILIES:
                print(f"[etth1] H={h} {fam}: tuning", file=sys.stderr, flush=True)
                r, f = run_horizon(df, split, h, fam, args, space, prior, Path(tmp))
                results.append(r)
                print(f"[etth1] H={h} {fam}: test MSE {r['test_mse_std']:.4f} MAE {r['test_mae_std']:.4f} "
                      f"(val {r['best_val_mse_std']:.4f}, study {r['study_seconds']:.0f} s)", file=sys.stderr, flush=True)
            sn = f.evaluate_seasonal_naive(df, split, "test")
            naive.append({"horizon": h, "mse_std": sn.metrics["mse_std"], "mae_std": sn.metrics["mae_std"],
                          "test_windows": len(sn.y)})
    published = published_rows(args.data_dir)
    out = run.finish({
        "borders": list(borders), "horizons": list(horizons), "search_space": asdict(space), "prior": prior,
        "results": results, "seasonal_naive": naive, "published": published,
        "goals": goals(results, published),
    })
    js, md = C.write(args.out, NAME, out, render(out))
    print(f"[etth1] wrote {js} and {md}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
