"""The C allocator's setting: training epochs and a batch forecast under glibc's defaults, under Dask's
worker default and with the setting our entry points make (`forecasting.core.allocator`).

Each setting runs in a fresh process (glibc reads MALLOC_* once, at start-up; `keep_freed_memory`
is process-wide), one torch thread:
- "glibc default": nothing set;
- "Dask worker default": MALLOC_TRIM_THRESHOLD_=65536, what Dask's Nanny sets in its workers;
- "ours": `keep_freed_memory()` called first (no mmap for large blocks, no trimming).

The model and data are the demo's (bundled ETTh1; a GRU of hidden 64 reading 336 hours in 24-hour
segments, the linear highway on; 4,096 windows of batch 256 an epoch, as `threads.py`). Each process
trains `--repeats` epochs from the same weights, then forecasts a synthetic panel (`--series` hourly
series of 400 points) `--repeats` times with `Forecaster.predict`, the path of `forecasting forecast`.
The table keeps the best and the median; minor page faults show what the setting changes.

    python benchmarks/allocator.py [--quick] [--out DIR] [--repeats N] [--series N]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "allocator"
MODES = {"glibc default": {}, "Dask worker default": {"MALLOC_TRIM_THRESHOLD_": "65536"}, "ours": {}}
CHILD = """
import json, resource, sys, time
if sys.argv[1] == "ours":
    from forecasting.core.allocator import keep_freed_memory
    assert keep_freed_memory()
import numpy as np, pandas as pd, torch
torch.set_num_threads(1)
from dataclasses import replace
from forecasting.api.forecaster import Forecaster, ForecasterConfig
from forecasting.core.data import IngestConfig, split_fractions, to_long
from forecasting.core.training import TrainConfig, fit
from forecasting.core.windows import make_windows
from forecasting.families.recurrent import ModelConfig, RecurrentForecaster
rows, repeats, windows, n_series = (int(a) for a in sys.argv[3:7])
df = to_long(pd.read_csv(sys.argv[2], nrows=rows), IngestConfig(format="wide", time_col="date")).drop(columns="_row")
df["ds"] = pd.to_datetime(df["ds"])
split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.1, 0.2)
m = ModelConfig(cell="gru", lookback=336, horizon=24, hidden=64, layers=1, segment=24, highway=True)
t = TrainConfig(batch_size=256, max_epochs=1, max_train_windows=windows, max_val_windows=512, device="cpu", seed=0)
f = Forecaster(ForecasterConfig(model=m, train=t, freq="h", calendar=False))
f.fit(df, split)  # untimed: a fitted forecaster for the forecasts, and the panel for the epochs
panel = f.fit_scaler(df, split)
train, val = (make_windows(panel, 336, 24, split, part) for part in ("train", "val"))
def timed(step):
    f0, w0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    step()
    return time.perf_counter() - w0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
def epoch():
    torch.manual_seed(0)
    fit(RecurrentForecaster(m), train, val, t)
rng = np.random.default_rng(0)
ds = pd.date_range("2024-01-01", periods=400, freq="h")
y = 10 + np.sin(2 * np.pi * np.arange(400) / 24 + rng.uniform(0, 6.3, (n_series, 1))) + rng.normal(0, .2, (n_series, 400))
history = pd.DataFrame({"unique_id": np.repeat(np.char.add("s", np.arange(n_series).astype(str)), 400),
                        "ds": np.tile(ds.to_numpy(), n_series), "y": y.reshape(-1)})
out = {"epoch": [timed(epoch) for _ in range(repeats)],
       "forecast": [timed(lambda: f.predict(history)) for _ in range(repeats)]}
print(json.dumps(out))
"""


def measure(mode: str, args) -> dict:
    """Wall seconds and minor page faults of each epoch and each forecast, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(OMP_NUM_THREADS="1", **MODES[mode])
    cmd = [sys.executable, "-c", CHILD, mode, str(C.REPO / "data" / "ETTh1.csv"), str(2400 if args.quick else 17420),
           str(args.repeats), str(256 if args.quick else 4096), str(args.series)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=C.REPO)
    if r.returncode != 0:
        raise SystemExit(f"error: the {mode} run failed: {r.stderr[-2000:]}")
    times = json.loads(r.stdout.strip().splitlines()[-1])
    return {"mode": mode, "env": MODES[mode], **{
        part: {"wall": [w for w, _ in v], "faults": [f for _, f in v], "best": min(w for w, _ in v),
               "median": statistics.median(w for w, _ in v)} for part, v in times.items()}}


def render(res: dict) -> str:
    ours = next(r for r in res["rows"] if r["mode"] == "ours")
    rows = [[r["mode"], *(f"{r[p][k]:.2f}" for p in ("epoch", "forecast") for k in ("best", "median")),
             *(f"{statistics.median(r[p]['faults']):,.0f}" for p in ("epoch", "forecast")),
             *(f"{r[p]['best'] / ours[p]['best']:.2f}x" for p in ("epoch", "forecast"))] for r in res["rows"]]
    return ("## Allocator setting\n\n" + C.conditions(res) + "\nOne process per setting, one torch thread: "
            f"{res['repeats']} epochs of the demo's GRU (4,096 windows of batch 256), then {res['repeats']} "
            f"forecasts of {res['series']:,} series x 400 hourly points with `Forecaster.predict`.\n\n"
            + C.table(["setting", "epoch best s", "epoch median s", "forecast best s", "forecast median s",
                       "epoch page faults", "forecast page faults", "epoch vs ours", "forecast vs ours"], rows)
            + "\n")


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="epochs and forecasts per setting (default 3; 1 quick)")
    p.add_argument("--series", type=int, default=None, help="series in the forecast (default 20,000; 500 quick)")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.series = args.series or (500 if args.quick else 20_000)
    run = C.Run(NAME, args, {"repeats": args.repeats, "series": args.series})
    res = run.finish({"repeats": args.repeats, "series": args.series, "rows": [measure(m, args) for m in MODES]})
    C.write(args.out, NAME, res, render(res))
    print(render(res))
    return res


if __name__ == "__main__":
    main()
