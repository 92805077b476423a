"""Which form wins on validation on M4 Hourly: each family's first trial (the M4 benchmark's prior),
additive against multiplicative, and the GRU's MAE loss against the MASE-scaled one.

Validation only (the last 48 training points of each of the 414 series; no test value is read), the
same budget as one M4 benchmark trial, several seeds: what the search's new choices are worth before a
search spends trials on them.

    python benchmarks/forms.py [--quick] [--seeds 0 1 2] [--out DIR]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _seeds as S  # noqa: E402
import m4_hourly as M4  # noqa: E402

from forecasting import families  # noqa: E402
from forecasting.api.forecaster import Forecaster, ForecasterConfig  # noqa: E402
from forecasting.core.data import Split  # noqa: E402
from forecasting.core.training import TrainConfig  # noqa: E402
from forecasting.tuning.space import apply_params  # noqa: E402

NAME = "forms"
# (row label, family, changes to the family's first trial)
VARIANTS = (("GRU additive, MAE loss (the prior)", "gru", {}),
            ("GRU multiplicative, MAE loss", "gru", {"multiplicative": True}),
            ("GRU additive, MASE-scaled loss", "gru", {"loss": "mase"}),
            ("ESRNN additive (the prior)", "esrnn", {}),
            ("ESRNN multiplicative", "esrnn", {"multiplicative": True}))


def fit_variant(df, split: Split, family: str, change: dict, seed: int, args) -> dict:
    """The family's M4 first trial with `change`, fitted with early stopping on the validation part."""
    _, prior, _ = M4.family_space(family, args.quick)
    base = ForecasterConfig(model=families.get(family).new_config(lookback=prior["lookback"], horizon=M4.H),
                            train=TrainConfig(seed=seed, device="cpu", patience=args.patience, val_metric="mae",
                                              max_epochs=args.max_epochs, max_train_windows=args.max_train_windows),
                            freq="h", calendar=False, season=M4.M, seasons=M4.SEASONS)
    f = Forecaster(apply_params(base, {**prior, **change}, family))
    with C.timed() as t:
        res = f.fit(df, split)
    return {"val_mae_std": res.best_val_loss, "start_val_mae_std": res.start_val_loss, "best_epoch": res.best_epoch,
            "multiplicative": bool(getattr(f.cfg.model, "multiplicative", False)), "loss": f.cfg.train.loss, **t}


def markdown(res: dict) -> str:
    head = ["variant", "validation MAE (standardized)", "per seed", "best epochs", "CPU s per fit"]
    base = {fam: res["variants"][label]["summary"] for label, fam, change in VARIANTS if not change}
    rows = []
    for label, fam, change in VARIANTS:
        v = res["variants"][label]
        s, ref = v["summary"], base[fam]
        verdict = f" ({S.compare(s, ref)} than the prior)" if change else ""
        rows.append([label, S.fmt(s, 4) + verdict.replace("tie than the prior", "ties the prior"),
                     ", ".join(f"{r['val_mae_std']:.4f}" for r in v["seeds"]),
                     ", ".join(str(r["best_epoch"]) for r in v["seeds"]),
                     f"{statistics.fmean(r['cpu_seconds'] for r in v['seeds']):.0f}"])
    b = res["budget"]
    return ("## Additive or multiplicative, MAE or MASE-scaled loss: validation on M4 Hourly\n\n" + C.conditions(res)
            + f"\nSeeds {res['seeds']}; {res['n_series']} series; each family's first trial of the M4 benchmark with "
            f"one change; at most {b['max_epochs']} epochs of {b['max_train_windows']:,} sampled windows, patience "
            f"{b['patience']}; validation = the last {M4.H} training points (no test value read). A change within "
            "two standard deviations of the prior is a tie.\n\n" + C.table(head, rows) + "\n")


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max-epochs", type=int, default=12)
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--max-train-windows", type=int, default=16_384)
    args = p.parse_args(argv)
    if args.quick:
        args.max_epochs, args.max_train_windows, args.seeds = 1, 512, args.seeds[:2]
    C.set_threads(args.threads)
    run = C.Run(NAME, args, {"max_epochs": args.max_epochs, "max_train_windows": args.max_train_windows,
                             "patience": args.patience})
    ids, insample, _ = M4.load(args)  # the test targets are not used
    df, lengths = M4.long_frame(dict(zip(ids, insample, strict=True))), np.array([len(x) for x in insample])
    split = Split(tuple(ids), lengths, train_end=lengths - M4.H, val_end=lengths)
    variants = {}
    for label, fam, change in VARIANTS:
        seeds = [fit_variant(df, split, fam, change, s, args) for s in args.seeds]
        variants[label] = {"family": fam, "change": change, "seeds": seeds, "summary": S.mean_sd([r["val_mae_std"] for r in seeds])}
        print(f"[forms] {label}: {variants[label]['summary']}", file=sys.stderr, flush=True)
    res = run.finish({"seeds": args.seeds, "n_series": len(ids), "variants": variants})
    md = markdown(res)
    C.write(args.out, NAME, res, md)
    print(md)
    return res


if __name__ == "__main__":
    main()
