"""Should `train` combine its families' final models? The families' combination
(`forecasting.api.family_mix`) on a development dataset that is not the demo's: ETTh2 (7 series, the
demo's horizon and budget).

For each seed, one fresh home and the demo's training job on ETTh2 (GRU and LSTM; `train`'s defaults:
the ensemble check and the families' combination). Reported per seed and over seeds, in MASE: what the
combination check decided (its two cross-fitted scores), and the champion each rule gives, the model
best on the validation backtest (what `demo` forecasts with): among the families only (the rule before
the combination), and among the families and the combination where its check kept it. Both on the
validation backtest and on test, paired by seed. The bundled ETTh1 (the demo's data) is not read here.

    python benchmarks/family_mix.py --seed S [--quick] [--out DIR] [--data-dir DIR]
    python benchmarks/family_mix.py --merge-only [--out DIR]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _seeds as S  # noqa: E402
from demo import BUDGET, QUICK  # noqa: E402
from ensemble_choice import etth2_home, etth2_main  # noqa: E402

NAME = "family_mix"
FAMILIES = ("gru", "lstm")
COMBINED = "combined"
RULES = {"families": "the family best on validation (the rule before)",
         "with_combined": "the best on validation of the families and the combination (train's default)"}


def run_seed(data: Path, seed: int, quick: bool) -> dict:
    """The demo's job on ETTh2 in a fresh home: each model's validation-backtest and test MASE, the
    combination check's record, and the champion of each rule."""
    from mlflow import MlflowClient

    from flows.server import prefect_api
    from flows.train import train_flow
    from forecasting.api.jobs import TrainJob
    from forecasting.core.options import from_flags

    with etth2_home(data, quick) as home, prefect_api():
        job = from_flags(TrainJob, dataset="etth2", models=FAMILIES, seed=seed, device="cpu",
                         **(QUICK if quick else BUDGET))
        r = train_flow(job, home)
        params = MlflowClient().get_run(r["parent_run_id"]).data.params
    table = r["table"].set_index("model")
    models = {m: {"val": float(table.loc[m, "val_backtest_mase"]), "test": float(table.loc[m, "mase"])}
              for m in (*FAMILIES, COMBINED, "linear") if m in table.index}
    check = {k: params[k] for k in ("combined_families", "combine_check_single", "combine_check_combined")
             if k in params}
    return {"models": models, "check": check, "champions": champions(models)}


def champions(models: dict) -> dict:
    """Each rule's champion: the lowest validation-backtest MASE among the models it may pick."""
    pick = {"families": FAMILIES, "with_combined": (*FAMILIES, COMBINED)}
    return {rule: min((m for m in names if m in models), key=lambda m: models[m]["val"]) for rule, names in pick.items()}


def merge(out: Path) -> dict:
    """Every seed file in `out` folded into `<out>/family_mix.{json,md}`."""
    runs = S.load_seeds(out, NAME)
    res = {**runs[-1], "seeds": [r["seed"] for r in runs], "runs": S.runs_meta(runs),
           "per_seed": [r["result"] for r in runs]}
    res.pop("result", None)
    res["summary"] = {part: paired(res["per_seed"], part) for part in ("val", "test")}
    res["kept"] = [COMBINED in r["models"] for r in res["per_seed"]]
    C.write(out, NAME, res, render(res))
    return res


def paired(per_seed: list[dict], part: str) -> dict:
    """Each rule's champion score (mean ± sd over seeds) and the paired difference (with the combination
    minus families only), with a verdict by 2 sd of the difference."""
    score = {rule: [r["models"][r["champions"][rule]][part] for r in per_seed] for rule in RULES}
    diff = [b - a for a, b in zip(score["families"], score["with_combined"], strict=True)]
    if len(diff) < 2:
        return {**{rule: S.mean_sd(v) for rule, v in score.items()}, "diff": S.mean_sd(diff),
                "verdict": "one seed: no verdict"}
    sd, mean = statistics.stdev(diff), sum(diff) / len(diff)
    verdict = "better" if mean < -2 * sd else "worse" if mean > 2 * sd else "tie"
    return {**{rule: S.mean_sd(v) for rule, v in score.items()}, "diff": S.mean_sd(diff), "verdict": verdict}


def render(res: dict) -> str:
    return ("## The families' combination (ETTh2, development data)\n\n" + C.conditions(res) + "\n" + summary(res))


def summary(res: dict) -> str:
    """The two rules' champions per part, paired by seed, and what the check did in each seed."""
    rows = [[part, S.fmt(s["families"], 4), S.fmt(s["with_combined"], 4), S.fmt(s["diff"], 4), s["verdict"]]
            for part, s in res["summary"].items()]
    seeds = "; ".join(
        f"seed {seed}: {_check_text(r)}, champion {r['champions']['with_combined']} "
        f"(before: {r['champions']['families']})" for seed, r in zip(res["seeds"], res["per_seed"], strict=True))
    return (f"Seeds {res['seeds']}; the demo's job on ETTh2 (7 series, H=24, {res['budget']['trials']} trials x "
            f"{res['budget']['max_epochs']} epochs per family, GRU and LSTM, train's defaults). MASE; val = the "
            "validation backtest that gates champions and picks the demo's model. Champion: "
            f"{RULES['families']}, against {RULES['with_combined']}; difference paired by seed, better/worse by "
            "more than 2 sd of it.\n\n"
            + C.table(["part", "families only", "with the combination", "difference", "verdict"], rows)
            + f"\n\nCombination check per seed (cross-fitted MASE, combined vs the best family alone): {seeds}.\n")


def _check_text(r: dict) -> str:
    c = r["check"]
    if not c:
        return "no check"
    kept = "kept" if COMBINED in r["models"] else "not kept"
    return f"{kept} ({float(c['combine_check_combined']):.4f} vs {float(c['combine_check_single']):.4f})"


def main(argv: list[str] | None = None) -> dict:
    return etth2_main(NAME, __doc__, argv, run_seed, merge, lambda quick: dict(QUICK if quick else BUDGET))


if __name__ == "__main__":
    main()
