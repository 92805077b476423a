"""Which form wins on validation, on M4 Hourly, ETTh1 and ETTh2: each family's first trial against the
same trial with one change (multiplicative form, MASE-scaled loss, seasonal-lag inputs).

Validation only, no test value read: M4 Hourly's last 48 training points of each of the 414 series;
ETTh1/ETTh2 OT's validation months of the standard split (12/4/4 months), horizon 168. The budget of
one benchmark trial, several seeds: what the search's choices are worth before it spends trials on
them, and which to keep across the three datasets.

    python benchmarks/forms.py [--quick] [--seeds 0 1 2] [--datasets m4 ETTh1 ETTh2] [--out DIR]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _seeds as S  # noqa: E402
import etth1 as E  # noqa: E402
import m4_hourly as M4  # noqa: E402

from forecasting import families  # noqa: E402
from forecasting.api.forecaster import Forecaster, ForecasterConfig  # noqa: E402
from forecasting.core.data import Split  # noqa: E402
from forecasting.core.training import TrainConfig  # noqa: E402
from forecasting.tuning.space import apply_params  # noqa: E402

NAME = "forms"
DATASETS = ("m4", "ETTh1", "ETTh2")
ETT_HORIZON = 168  # where the ETTh1 goal asks the GRU to beat the ridge by more than 2 sd
# (row label, family, changes to the family's first trial)
VARIANTS = (("GRU (the prior)", "gru", {}),
            ("GRU multiplicative", "gru", {"multiplicative": True}),
            ("GRU MASE-scaled loss", "gru", {"loss": "mase"}),
            ("GRU seasonal-lag inputs", "gru", {"lags": True}),
            ("ESRNN (the prior)", "esrnn", {}),
            ("ESRNN multiplicative", "esrnn", {"multiplicative": True}))


def setup(name: str, args) -> dict:
    """A dataset's frame, split (train/validation only), horizon, selection metric and first trials."""
    if name == "m4":
        ids, insample, _ = M4.load(args)  # the test targets are not used
        lengths = np.array([len(x) for x in insample])
        return {"df": M4.long_frame(dict(zip(ids, insample, strict=True))), "horizon": M4.H, "metric": "mae",
                "split": Split(tuple(ids), lengths, train_end=lengths - M4.H, val_end=lengths),
                "priors": {fam: M4.family_space(fam, args.quick)[1] for fam in ("gru", "esrnn")}}
    borders = C.ETTH1_QUICK_BORDERS if args.quick else C.ETTH1_BORDERS
    df = C.etth1_frame(args.data_dir, borders[1], dataset=name)  # rows up to the validation end only
    split = C.etth1_split((borders[0], borders[1], borders[1]))
    gru = E.QUICK_PRIOR if args.quick else E.PRIOR  # the ETTh1 benchmark's first trial (MSE loss)
    esrnn = {**M4.family_space("esrnn", args.quick)[1], "loss": "mse"}
    return {"df": df, "split": split, "horizon": ETT_HORIZON, "metric": "mse", "priors": {"gru": gru, "esrnn": esrnn}}


def fit_variant(data: dict, family: str, change: dict, seed: int, args) -> dict:
    """The family's first trial with `change`, fitted with early stopping on the validation part."""
    prior = data["priors"][family]
    base = ForecasterConfig(
        model=families.get(family).new_config(lookback=prior["lookback"], horizon=data["horizon"]),
        train=TrainConfig(seed=seed, device="cpu", patience=args.patience, val_metric=data["metric"],
                          max_epochs=args.max_epochs, max_train_windows=args.max_train_windows),
        freq="h", calendar=False, season=24, seasons=M4.SEASONS)
    f = Forecaster(apply_params(base, {**prior, **change}, family))
    with C.timed() as t:
        res = f.fit(data["df"], data["split"])
    return {"val_loss": res.best_val_loss, "start_val_loss": res.start_val_loss, "best_epoch": res.best_epoch,
            "multiplicative": bool(getattr(f.cfg.model, "multiplicative", False)), "loss": f.cfg.train.loss,
            "lag_periods": list(getattr(f.cfg.model, "lag_periods", ())), **t}


def positive_training(data: dict) -> bool:
    df, split = data["df"], data["split"]
    first = df.groupby("unique_id", sort=False).cumcount().to_numpy()
    ends = dict(zip(split.ids, split.train_end, strict=True))
    return bool((df["y"].to_numpy()[first < df["unique_id"].map(ends).to_numpy()] > 0).all())


def run_dataset(name: str, args) -> dict:
    data = setup(name, args)
    positive, variants = positive_training(data), {}
    for label, fam, change in VARIANTS:
        if change.get("multiplicative") and not positive:
            variants[label] = {"family": fam, "change": change, "skipped": "a non-positive training value: "
                               "the multiplicative form falls back to the additive one (the prior)"}
            continue
        seeds = [fit_variant(data, fam, change, s, args) for s in args.seeds]
        variants[label] = {"family": fam, "change": change, "seeds": seeds,
                           "summary": S.mean_sd([r["val_loss"] for r in seeds])}
        print(f"[forms] {name} {label}: {variants[label]['summary']}", file=sys.stderr, flush=True)
    return {"n_series": len(data["split"].ids), "horizon": data["horizon"], "metric": data["metric"],
            "variants": variants}


def verdicts(ds: dict) -> dict[str, str]:
    """Each change against its family's prior: better, worse or tie (within 2 sd), or skipped."""
    base = {v["family"]: v["summary"] for v in ds["variants"].values() if not v["change"]}
    return {label: ("n/a" if "skipped" in v else S.compare(v["summary"], base[v["family"]]))
            for label, v in ds["variants"].items() if v["change"]}


def dataset_table(name: str, ds: dict) -> str:
    head = ["variant", f"validation {ds['metric'].upper()} (standardized)", "vs the prior", "per seed",
            "best epochs", "CPU s per fit"]
    verdict, rows = verdicts(ds), []
    for label, v in ds["variants"].items():
        if "skipped" in v:
            rows.append([label, "not run", "n/a: " + v["skipped"], "", "", ""])
            continue
        rows.append([label, S.fmt(v["summary"], 4), verdict.get(label, ""),
                     ", ".join(f"{r['val_loss']:.4f}" for r in v["seeds"]),
                     ", ".join(str(r["best_epoch"]) for r in v["seeds"]),
                     f"{statistics.fmean(r['cpu_seconds'] for r in v['seeds']):.0f}"])
    what = "414 series, the last 48 training points" if name == "m4" else "OT, the 4 validation months"
    return f"### {name} (horizon {ds['horizon']}; {what})\n\n" + C.table(head, rows) + "\n"


def summary(res: dict) -> str:
    """Each change against its family's first trial on each dataset's validation part, and the budget."""
    b, per = res["budget"], {n: verdicts(d) for n, d in res["datasets"].items()}
    changes = [label for label, _, change in VARIANTS if change]
    keep = C.table(["change (validation, vs the family's first trial)", *per],
                   [[c, *(per[n].get(c, "") for n in per)] for c in changes])
    return (keep + f"\nSeeds {res['seeds']}; each family's first trial of the benchmark (M4 Hourly's for M4 and the "
            "ESRNN everywhere, ETTh1's for the GRU on ETT, horizon 168) with one change; at most "
            f"{b['max_epochs']} epochs of {b['max_train_windows']:,} sampled windows, patience {b['patience']}; "
            "validation only, no test value read. better/worse: lower/higher validation loss by more than two "
            "standard deviations; n/a: the multiplicative form needs positive training values.\n")


def markdown(res: dict) -> str:
    return ("## Which form wins on validation: multiplicative, MASE-scaled loss, seasonal lags\n\n"
            + C.conditions(res) + "\n" + summary(res) + "\n"
            + "\n".join(dataset_table(n, d) for n, d in res["datasets"].items()))


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--max-epochs", type=int, default=12)
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--max-train-windows", type=int, default=16_384)
    args = p.parse_args(argv)
    if args.quick:
        args.max_epochs, args.max_train_windows, args.seeds = 1, 512, args.seeds[:2]
    C.set_threads(args.threads)
    run = C.Run(NAME, args, {"max_epochs": args.max_epochs, "max_train_windows": args.max_train_windows,
                             "patience": args.patience})
    datasets = {name: run_dataset(name, args) for name in args.datasets}
    res = run.finish({"seeds": args.seeds, "datasets": datasets})
    md = markdown(res)
    C.write(args.out, NAME, res, md)
    print(md)
    return res


if __name__ == "__main__":
    main()
