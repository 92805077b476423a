"""Threads: one training epoch with 1 and with 2 torch threads, on an idle machine and on a loaded one.

The model and data are the demo's (bundled ETTh1, 7 series; a GRU of hidden 64 reading 336 hours in
24-hour segments, the linear highway on; batches of 256; 4,096 sampled windows an epoch). Each
setting trains `--repeats` epochs from the same weights in a fresh process (torch's thread pool is
fixed once it starts); the best and the median wall time are kept. "Loaded" starts one busy process
per usable CPU (a pure-Python loop) and waits for the load average to show them before it measures,
then records which default `forecasting.core.cpus.default_threads` picks under that load.

`--demo` measures the whole `forecasting demo` instead (results `threads_demo`): in a fresh home with
1 and with 2 torch threads, at `pipeline.py`'s budget (`--trials`, `--max-epochs`), on the machine
as it is. Off a cluster the demo scores the baselines and finishes each family beside the tuning:
this is the measurement behind the default's reserved core (`cpus.default_threads(reserved=1)`).

    python benchmarks/threads.py [--quick] [--out DIR] [--repeats N]
    python benchmarks/threads.py --demo [--quick] [--out DIR] [--trials N] [--max-epochs N]
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "threads"
EPOCH = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from forecasting.api.forecaster import build_panel, ForecasterConfig
from forecasting.core.data import IngestConfig, split_fractions, to_long
from forecasting.core.training import TrainConfig, fit
from forecasting.core.windows import make_windows
from forecasting.families.recurrent import ModelConfig, RecurrentForecaster
import pandas as pd
raw = pd.read_csv(sys.argv[2], nrows=int(sys.argv[3]))
df = to_long(raw, IngestConfig(format="wide", time_col="date")).drop(columns="_row")
df["ds"] = pd.to_datetime(df["ds"])
split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.1, 0.2)
m = ModelConfig(cell="gru", lookback=336, horizon=24, hidden=64, layers=1, segment=24, highway=True)
cfg = ForecasterConfig(model=m, freq="h", calendar=False)
panel = build_panel(df, cfg)
train = make_windows(panel, 336, 24, split, "train")
val = make_windows(panel, 336, 24, split, "val")
out = []
for r in range(int(sys.argv[4])):
    torch.manual_seed(0)
    model = RecurrentForecaster(m)
    t = TrainConfig(batch_size=256, max_epochs=1, max_train_windows=int(sys.argv[5]), max_val_windows=512,
                    device="cpu", seed=0)
    c0, w0 = time.process_time(), time.perf_counter()
    fit(model, train, val, t)
    out.append((time.perf_counter() - w0, time.process_time() - c0))
print(json.dumps(out))
"""


def spin() -> None:
    """A busy process: the load another user's job puts on a core."""
    while True:
        pass


def epochs(threads: int, rows: int, repeats: int, windows: int) -> dict:
    """Wall and CPU seconds of `repeats` epochs in a fresh process with `threads` torch threads."""
    cmd = [sys.executable, "-c", EPOCH, str(threads), str(C.REPO / "data" / "ETTh1.csv"), str(rows), str(repeats),
           str(windows)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    times = json.loads(r.stdout.strip().splitlines()[-1])
    wall = [w for w, _ in times]
    return {"threads": threads, "wall": wall, "cpu": [c for _, c in times], "best": min(wall),
            "median": statistics.median(wall)}


def scenario(name: str, busy: int, args) -> dict:
    """Both thread counts with `busy` spinning processes running (0: as the machine is)."""
    from forecasting.core.cpus import default_threads, usable_cpus

    procs = [mp.Process(target=spin, daemon=True) for _ in range(busy)]
    for p in procs:
        p.start()
    try:
        if busy and not args.quick:
            time.sleep(65)  # the 1-minute load average needs about a minute to show them
        load = C.loadavg()
        chosen = default_threads()
        rows = [epochs(t, 2400 if args.quick else 17420, args.repeats, 256 if args.quick else 4096) for t in (1, 2)]
    finally:
        for p in procs:
            p.terminate()
    return {"scenario": name, "spinning_processes": busy, "usable_cpus": usable_cpus(), "loadavg": load,
            "default_threads": chosen, "rows": rows, "ratio_2_to_1": rows[1]["best"] / rows[0]["best"]}


def demo_rows(args) -> list[dict]:
    """The demo in a fresh home at 1 and at 2 torch threads: wall and CPU seconds, trials, best losses."""
    import tempfile

    from pipeline import run_demo, study_record

    rows = []
    for threads in (1, 2):
        with tempfile.TemporaryDirectory() as home:
            load = C.loadavg()
            run = run_demo(C.REPO, Path(home), args, threads)
            studies = study_record(Path(home))
            rows.append({"threads": threads, "loadavg": load, **run, "studies": studies})
    return rows


def render_demo(res: dict) -> str:
    rows = [[str(r["threads"]), str(r["loadavg"]), f"{r['wall_seconds']:.0f}", f"{r['cpu_seconds']:.0f}",
             ", ".join(f"{k.rsplit('-', 1)[-1]} {v['trials']} done, {v['pruned']} pruned, best {v['best_val_loss']:.4f}"
                       for k, v in r["studies"].items())] for r in res["rows"]]
    one, two = (r["wall_seconds"] for r in res["rows"])
    return ("## Threads: the whole demo\n\n" + C.conditions(res) + f"\n`forecasting demo` at {res['budget']['trials']} "
            f"trials x {res['budget']['max_epochs']} epochs per family in a fresh home, `--threads 1` and `--threads 2`"
            f"; the default picks {res['default_threads']} here.\n\n"
            + C.table(["threads", "load at start (1/5/15 min)", "wall s", "CPU s", "trials"], rows)
            + f"\n2 threads take {two / one:.2f}x the wall time of 1.\n")


def render(res: dict) -> str:
    rows = [[s["scenario"], str(s["loadavg"]), str(r["threads"]), f"{r['best']:.2f}", f"{r['median']:.2f}",
             f"{statistics.median(r['cpu']):.2f}", str(s["default_threads"])]
            for s in res["scenarios"] for r in s["rows"]]
    ratios = "; ".join(f"{s['scenario']}: 2 threads take {s['ratio_2_to_1']:.2f}x the time of 1"
                       for s in res["scenarios"])
    return ("## Threads\n\n" + C.conditions(res) + "\nOne epoch of the demo's GRU (hidden 64, lookback 336 in "
            "24-hour segments, highway on, 4,096 windows of batch 256), best and median of "
            f"{res['repeats']} epochs in a fresh process per setting. \"loaded\": one busy process per usable "
            "CPU.\n\n" + C.table(["machine", "load (1/5/15 min)", "threads", "best s", "median s", "CPU s",
                                  "default picks"], rows) + f"\n{ratios}.\n")


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="epochs per setting (default 3; 1 under --quick)")
    p.add_argument("--scenarios", nargs="+", choices=("idle", "loaded"), default=["idle", "loaded"])
    p.add_argument("--demo", action="store_true", help="the whole demo at 1 and 2 threads (results threads_demo)")
    p.add_argument("--trials", type=int, default=None, help="--demo: trials per family (default 10; 2 quick)")
    p.add_argument("--max-epochs", type=int, default=None, help="--demo: epochs per trial (default 10; 1 quick)")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    from forecasting.core.cpus import default_threads, usable_cpus

    if args.demo:
        args.trials, args.max_epochs = args.trials or (2 if args.quick else 10), args.max_epochs or (1 if args.quick else 10)
        run = C.Run(f"{NAME}_demo", args, {"trials": args.trials, "max_epochs": args.max_epochs})
        res = run.finish({"rows": demo_rows(args), "default_threads": default_threads(reserved=1)})
        C.write(args.out, f"{NAME}_demo", res, render_demo(res))
        print(render_demo(res))
        return res

    run = C.Run(NAME, args, {"repeats": args.repeats})
    res = run.finish({"repeats": args.repeats, "scenarios": [
        scenario(s, 0 if s == "idle" else usable_cpus(), args) for s in args.scenarios]})
    C.write(args.out, NAME, res, render(res))
    print(render(res))
    return res


if __name__ == "__main__":
    main()
