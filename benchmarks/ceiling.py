"""The machine's own ceiling for two workers: the same work in one process alone, then in two processes
at once, with nothing of ours around it (no Optuna, MLflow, Dask or Prefect).

Two workloads, each in fresh processes with one torch thread, timed inside the process (imports not
counted): the threads benchmark's training epochs (the demo's GRU on the bundled ETTh1: hidden 64,
lookback 336 in 24-hour segments, highway on, batch 256; `--windows` windows an epoch, `--repeats`
epochs), the work of one batch-forecast part on a cluster worker (read a Parquet history of
`--series` short hourly series, check it, forecast it with a small fitted GRU, write the part file:
`cluster.py`'s input, cut as `local:2` cuts it), and a pure-Python loop (no memory traffic: what two
cores give when nothing is shared).
Speed-up = 2 x (time alone) / (the slower of the two concurrent times): the most that two workers of
that kind could reach on this machine, against which the scale-out ratios (`scaleout.py`,
`cluster.py`, goal 1.8x) are read.

    python benchmarks/ceiling.py [--quick] [--out DIR] [--rounds N]
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
from threads import EPOCH  # noqa: E402

NAME = "ceiling"
LOOP = """
import json, sys, time
t = time.perf_counter()
x = 0
for i in range(int(sys.argv[1])):
    x += i * i % 7
print(json.dumps([[time.perf_counter() - t, 0.0]]))
"""

# One part of a batch forecast as a cluster worker does it (`flows.forecast.forecast_part`): the input
# and a small GRU (lookback 48, horizon 24) are prepared untimed in the process that times them.
PART = """
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
from cluster import HORIZON, LENGTH, MAX_LOOKBACK, panel
from forecasting.api import batch
from forecasting.api.forecaster import Forecaster, ForecasterConfig
from forecasting.core.data import split_fractions
from forecasting.core.training import TrainConfig
from forecasting.families.recurrent import ModelConfig
n_series, repeats = int(sys.argv[2]), int(sys.argv[3])
train = panel(8, 800, 0)
m = ModelConfig(cell="gru", lookback=MAX_LOOKBACK, horizon=HORIZON, hidden=64, layers=1, highway=True)
f = Forecaster(ForecasterConfig(model=m, train=TrainConfig(max_epochs=1, max_train_windows=256, max_val_windows=256,
                                                           device="cpu", seed=0), calendar=False))
f.fit(train, split_fractions(train.groupby("unique_id", sort=False).size(), 0.1, 0.2))
with tempfile.TemporaryDirectory() as tmp:
    src, out = Path(tmp) / "history.parquet", Path(tmp) / "part.parquet"
    panel(n_series, LENGTH, 1).to_parquet(src)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        batch.write_part(batch.forecast_with(f, batch.read_history(src)), out)
        times.append([time.perf_counter() - t, 0.0])
print(json.dumps(times))
"""


def _start(code: str, *argv: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=C.REPO)


def _seconds(proc: subprocess.Popen) -> float:
    """Total timed seconds a process reports (the sum of its epochs or its one loop)."""
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"a timed process failed with exit {proc.returncode}")
    return sum(w for w, _ in json.loads(out.strip().splitlines()[-1]))


def workload(name: str, code: str, argv: tuple[str, ...], rounds: int) -> dict:
    """`rounds` of (alone, then two at once); the speed-up of each round and their median."""
    alone, together = [], []
    for _ in range(rounds):
        alone.append(_seconds(_start(code, *argv)))
        pair = [_start(code, *argv), _start(code, *argv)]
        together.append([_seconds(p) for p in pair])
    ups = [2 * a / max(t) for a, t in zip(alone, together, strict=True)]
    return {"workload": name, "alone_s": alone, "together_s": together, "speedups": ups,
            "speedup": statistics.median(ups)}


def summary(res: dict) -> str:
    """The table and its reading (the report's section)."""
    rows = [[w["workload"], " / ".join(f"{a:.2f}" for a in w["alone_s"]),
             " / ".join(f"{max(t):.2f}" for t in w["together_s"]), " / ".join(f"{u:.2f}x" for u in w["speedups"]),
             f"**{w['speedup']:.2f}x**"] for w in res["workloads"]]
    return ("The same work in one process "
            "alone, then in two processes at once (one torch thread each; timed inside each process, imports "
            "not counted); speed-up = 2 x alone / the slower of the two. Training: "
            f"{res['budget']['repeats']} epochs of {res['budget']['windows']:,} windows of the demo's GRU on "
            f"ETTh1. Batch-forecast part: read, check, forecast and write {res['budget'].get('series', 0):,} series "
            "x 48 hourly points (a quarter of `cluster.py`'s input: one of `local:2`'s four parts), "
            f"{res['budget']['repeats']} times. Loop: a pure-Python loop.\n\n"
            + C.table(["workload", "alone s (each round)", "two at once s (slower)", "speed-up (each round)",
                       "median"], rows)
            + "\nThe 1.8x scale-out goals are read against the row of their kind: tuning against the training "
            "row, the batch forecast (`cluster.py`) against the batch-forecast row.\n")


def render(res: dict) -> str:
    return "\n".join(["## Two workers' ceiling on this machine", "", C.conditions(res), "", summary(res)])


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=None, help="alone/together rounds (default 3; 1 under --quick)")
    args = p.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    windows, repeats, loop = (1024, 1, 2_000_000) if args.quick else (32768, 3, 60_000_000)
    series = 2_000 if args.quick else 250_000
    run = C.Run(NAME, args, {"rounds": rounds, "windows": windows, "repeats": repeats, "loop": loop, "series": series})
    rows = 2400 if args.quick else 17420
    epoch_argv = ("1", str(C.REPO / "data" / "ETTh1.csv"), str(rows), str(repeats), str(windows))
    part_argv = (str(Path(__file__).resolve().parent), str(series), str(repeats))
    res = run.finish({"workloads": [workload("training epochs", EPOCH, epoch_argv, rounds),
                                    workload("batch-forecast part", PART, part_argv, rounds),
                                    workload("pure-Python loop", LOOP, (str(loop),), rounds)]})
    C.write(args.out, NAME, res, render(res))
    print(render(res))
    return res


if __name__ == "__main__":
    main()
