"""The demo's accuracy over seeds: `forecasting demo`'s training job (bundled ETTh1, 7 series, H=24,
10 trials x 10 epochs of 16,384 windows per family) run once per seed through the real train flow,
and each model's test MASE against the best baseline of the same run.

    python benchmarks/demo.py --seed S [--quick] [--out DIR]      # one seed; merges all seed files
    python benchmarks/demo.py --merge-only
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _seeds as S  # noqa: E402

from forecasting.families import DEFAULT as FAMILIES  # noqa: E402  (the families `train` tunes by default)

NAME = "demo"
TARGET_MARGIN = -0.10  # at least 10% under the best baseline's MASE
BUDGET = {"horizon": 24, "trials": 10, "max_epochs": 10, "max_train_windows": 16384, "max_val_windows": 4096}
QUICK = {"horizon": 24, "trials": 2, "max_epochs": 1, "max_train_windows": 256, "max_val_windows": 256}


def run_seed(seed: int, budget: dict, quick: bool) -> dict:
    """Ingest the bundled file into a fresh home and run the train flow as the demo does."""
    from flows.server import prefect_api
    from flows.train import train_flow
    from forecasting.api.jobs import TrainJob
    from forecasting.core import datasets
    from forecasting.core.data import IngestConfig
    from forecasting.core.options import from_flags

    with tempfile.TemporaryDirectory() as home, prefect_api():
        src = C.REPO / "data" / "ETTh1.csv"
        if quick:  # a short slice: numbers meaningless, the path the same
            import pandas as pd

            src = Path(home) / "etth1.csv"
            pd.read_csv(C.REPO / "data" / "ETTh1.csv", nrows=2400).to_csv(src, index=False)
        datasets.ingest(src, "etth1", home, IngestConfig(format="wide"))
        job = from_flags(TrainJob, dataset="etth1", models=FAMILIES, seed=seed, device="cpu", **budget)
        r = train_flow(job, home)
    table = r["table"]
    rows = table[["model", "mase", "val_backtest_mase"]].to_dict("records")
    return {"rows": rows, "best_baseline": r["summary"]["best_baseline"],
            "best_baseline_mase": r["summary"]["best_baseline_value"], "margins": r["summary"]["margins"]}


def merge(out: Path) -> dict:
    runs = S.load_seeds(out, NAME)
    if not runs:
        raise SystemExit(f"no {NAME}_seed*.json in {out}")
    models = [r["model"] for r in runs[-1]["result"]["rows"]]
    mase = {m: S.mean_sd([row["mase"] for run in runs for row in run["result"]["rows"] if row["model"] == m])
            for m in models}
    margins = {f: S.mean_sd([run["result"]["margins"][f] for run in runs]) for f in FAMILIES}
    goals = {f: S.compare(margins[f], TARGET_MARGIN) for f in FAMILIES}
    res = {**{k: v for k, v in runs[-1].items() if k != "result"}, "seeds": [r["seed"] for r in runs],
           "seed": ", ".join(str(r["seed"]) for r in runs), "runs": S.runs_meta(runs), "mase": mase,
           "margins": margins, "best_baselines": [r["result"]["best_baseline"] for r in runs], "goals": goals,
           "per_seed": [{"seed": r["seed"], **r["result"]} for r in runs]}
    C.write(out, NAME, res, render(res))
    return res


def _verdict(v: str, mean: float) -> str:
    if v == "tie":
        return f"**tie** (within 2 sd; the mean {'misses' if mean > TARGET_MARGIN else 'meets'} it)"
    return "**met**" if v == "better" else "**missed**"


def summary(res: dict) -> str:
    rows = [[m, S.fmt(v, 4)] for m, v in res["mase"].items()]
    lines = [f"Test MASE, mean ± sd over seeds {res['seeds']}; the demo's budget "
             f"({res['budget']['trials']} trials x {res['budget']['max_epochs']} epochs per family).\n",
             C.table(["demo (ETTh1, 7 series, H=24)", "test MASE"], rows)]
    for f in FAMILIES:
        m = res["margins"][f]
        lines.append(f"- {f.upper()} margin to the best baseline ({', '.join(sorted(set(res['best_baselines'])))}): "
                     f"{m['mean']:+.1%} ± {m['sd']:.1%}; target ≤ {TARGET_MARGIN:+.0%}: "
                     f"{_verdict(res['goals'][f], m['mean'])}.")
    return "\n".join(lines) + "\n"


def render(res: dict) -> str:
    return "## Demo accuracy\n\n" + C.conditions(res) + "\n" + summary(res)


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--merge-only", action="store_true", help="only fold the seed files into demo.json")
    args = p.parse_args(argv)
    if args.merge_only:
        return merge(args.out)
    C.set_threads(args.threads)
    budget = QUICK if args.quick else BUDGET
    run = C.Run(NAME, args, budget, extra_versions=("optuna", "mlflow", "prefect", "scikit-learn"))
    out = run.finish({"result": run_seed(args.seed, budget, args.quick)})
    return S.write_and_merge(args.out, NAME, args.seed, out, merge)


if __name__ == "__main__":
    main()
