"""Should `train` register the combination of its K best trials instead of the best one, and does the
ensemble check (the choice made on held-out validation halves, `forecasting.api.ensemble_check`)
choose well? Measured on a development dataset that is not the demo's: ETTh2 (7 series, the demo's
horizon and budget).

For each seed, one fresh home: the demo's training job (10 trials x 10 epochs per family, GRU and LSTM)
with `--ensemble 1`, then in the same home the same job with `--ensemble 3 --no-ensemble-check` (always
combined) and with `--ensemble 3` (the check decides), so the later runs tune nothing new and combine
the very trials the first one chose from (a paired comparison: only the combination differs). Reported
per family: the validation-backtest MASE that gates champions and the test MASE, and what the check
chose. The bundled ETTh1 (the demo's data) is not read here.

    python benchmarks/ensemble_choice.py --seed S [--quick] [--out DIR] [--data-dir DIR]
    python benchmarks/ensemble_choice.py --merge-only [--out DIR]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _seeds as S  # noqa: E402
from demo import BUDGET, QUICK, QUICK_ROWS  # noqa: E402

NAME = "ensemble_choice"
K = 3
FAMILIES = ("gru", "lstm")
# (name, --ensemble, ensemble check): the best trial; the K best always combined; the check's choice
ARMS = (("k1", 1, False), (f"k{K}", K, False), ("checked", K, True))


@contextmanager
def etth2_home(data: Path, quick: bool) -> Iterator[str]:
    """A fresh home holding ETTh2 ingested as dataset "etth2" (under `quick` its first QUICK_ROWS rows)."""
    import pandas as pd

    from forecasting.core import datasets
    from forecasting.core.data import IngestConfig

    with tempfile.TemporaryDirectory() as home:
        src = data
        if quick:
            src = Path(home) / "etth2.csv"
            pd.read_csv(data, nrows=QUICK_ROWS).to_csv(src, index=False)
        datasets.ingest(src, "etth2", home, IngestConfig(format="wide"))
        yield home


def run_seed(data: Path, seed: int, quick: bool) -> dict:
    """Both jobs of one seed in one fresh home; per family and K, the gate and test MASE."""
    from flows.server import prefect_api
    from flows.train import train_flow
    from forecasting.api.jobs import TrainJob
    from forecasting.core.options import from_flags

    out: dict = {}
    with etth2_home(data, quick) as home, prefect_api():
        for arm, k, checked in ARMS:
            # Within each family only: the families' combination is family_mix.py's question.
            job = from_flags(TrainJob, dataset="etth2", models=FAMILIES, seed=seed, device="cpu", ensemble=k,
                             ensemble_check=checked, combine_families=False, **(QUICK if quick else BUDGET))
            r = train_flow(job, home)
            table = r["table"].set_index("model")
            out[arm] = {m: {"val": float(table.loc[m, "val_backtest_mase"]), "test": float(table.loc[m, "mase"])}
                        for m in (*FAMILIES, "linear")}
            for m, params in _final_params(r["experiment_id"], r["parent_run_id"]).items():
                out[arm][m]["members"] = int(params["ensemble_size"])
    return out


def _final_params(experiment_id: str, parent_run_id: str) -> dict[str, dict]:
    """Each family's final run's parameters (its members, the check's scores) in one pipeline run."""
    from mlflow import MlflowClient

    found = MlflowClient().search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                       "tags.kind = 'final'")
    return {run.data.tags["family"]: run.data.params for run in found if run.data.tags["family"] in FAMILIES}


def merge(out: Path) -> dict:
    """Every seed file in `out` folded into `<out>/ensemble_choice.{json,md}`."""
    runs = S.load_seeds(out, NAME)
    res = {**runs[-1], "seeds": [r["seed"] for r in runs], "runs": S.runs_meta(runs),
           "per_seed": [r["result"] for r in runs]}
    res.pop("result", None)
    res["summary"] = {f: {part: {arm: _paired(res["per_seed"], f, part, arm) for arm, _, _ in ARMS[1:]}
                          for part in ("val", "test")} for f in FAMILIES}
    res["chosen"] = {f: [r["checked"][f].get("members") for r in res["per_seed"] if "checked" in r]
                     for f in FAMILIES}
    C.write(out, NAME, res, render(res))
    return res


def _paired(per_seed: list[dict], family: str, part: str, arm: str) -> dict:
    """Mean and sd over seeds of K=1, of `arm` and of their paired difference (`arm` minus K=1)."""
    one = [r["k1"][family][part] for r in per_seed]
    other = [r[arm][family][part] for r in per_seed]
    diff = [b - a for a, b in zip(one, other, strict=True)]
    sd = statistics.stdev(diff) if len(diff) > 1 else 0.0
    verdict = ("better" if sum(diff) / len(diff) < -2 * sd else "worse" if sum(diff) / len(diff) > 2 * sd
               else "tie")
    return {"k1": S.mean_sd(one), "arm": S.mean_sd(other), "diff": S.mean_sd(diff), "verdict": verdict}


def render(res: dict) -> str:
    return (f"## Ensemble of the {K} best trials or the best one (ETTh2, development data)\n\n" + C.conditions(res)
            + "\n" + summary(res))


def summary(res: dict) -> str:
    """The paired comparison per family and part, and what was run."""
    names = {f"k{K}": f"mean of {K} best, always", "checked": f"--ensemble {K}, the check's choice"}
    rows = [[f, part, names[arm], _fmt(s["k1"]), _fmt(s["arm"]), _fmt(s["diff"]), s["verdict"]]
            for f, parts in res["summary"].items() for part, arms in parts.items() for arm, s in arms.items()]
    chosen = "; ".join(f"{f}: {members}" for f, members in res.get("chosen", {}).items())
    return (f"Seeds {res['seeds']}; the demo's job on ETTh2 (7 series, H=24, "
            f"{res['budget']['trials']} trials x {res['budget']['max_epochs']} epochs per family) with --ensemble 1, "
            f"then the same job in the same home with --ensemble {K} --no-ensemble-check and with --ensemble {K} "
            "(no new trials: the same trials combined). MASE; val = the validation backtest that gates champions; "
            "diff = the arm minus the best trial, paired by seed; better/worse by more than 2 sd of the paired "
            "difference.\n\n"
            + C.table(["family", "part", "arm", "best trial", "arm's score", "difference", "verdict"], rows)
            + f"\n\nMembers the check kept, per seed: {chosen} (1: the best trial alone).\n")


def _fmt(m: dict) -> str:
    return f"{m['mean']:.4f} ± {m['sd']:.4f}"


def etth2_main(name: str, doc: str, argv: list[str] | None, run_seed, merge, budget) -> dict:
    """The command of a benchmark on ETTh2 (development data): `run_seed(data, seed, quick)` for one seed,
    written and merged into `--out` (`merge(out)`), or only `--merge-only`; `budget(quick)` is recorded."""
    p = C.parser(doc.splitlines()[0])
    p.add_argument("--merge-only", action="store_true", help="only fold the seed files into the result")
    args = p.parse_args(argv)
    if args.merge_only:
        return merge(args.out)
    C.set_threads(args.threads)
    (data,) = C.require(args.data_dir, "ett/ETTh2.csv")
    run = C.Run(name, args, budget(args.quick), extra_versions=("optuna", "mlflow", "prefect"))
    out = run.finish({"result": run_seed(data, args.seed, args.quick)})
    return S.write_and_merge(args.out, name, args.seed, out, merge)


def main(argv: list[str] | None = None) -> dict:
    return etth2_main(NAME, __doc__, argv, run_seed, merge,
                      lambda quick: {**(QUICK if quick else BUDGET), "arms": [list(a) for a in ARMS]})


if __name__ == "__main__":
    main()
