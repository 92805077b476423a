"""GPU: epoch time on the CPU and on CUDA in fp32, bf16 and fp16 (with loss scaling), what dtype
cuDNN's GRU really runs in under each autocast, and tuning trials per hour with 1, 2 and 4 workers
sharing one GPU. Meant to finish in under 5 minutes on one GPU.

The model and data are the demo's (bundled ETTh1, 7 series; a GRU of hidden 64 over 336 hours in
24-hour segments, highway on), at batch 256 and 1,024. Each setting trains `--epochs` epochs from the
same weights; the first epoch (CUDA context, cuDNN plans) is reported apart. The validation loss after
those epochs shows whether a low precision costs accuracy. Trials per hour: `forecasting train` on the
bundled data in a fresh home with `--workers N --device cuda` (small budget, recorded).

On a machine without CUDA it writes `gpu.md` saying so, and exits 0.

    python benchmarks/gpu.py [--quick] [--out DIR] [--epochs N]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "gpu"


def demo_windows(rows: int):
    """Training and validation windows of the demo's data (lookback 336, horizon 24)."""
    import pandas as pd

    from forecasting.api.forecaster import ForecasterConfig, build_panel
    from forecasting.core.data import IngestConfig, split_fractions, to_long
    from forecasting.core.scaling import SeriesScaler
    from forecasting.core.windows import make_windows

    raw = pd.read_csv(C.REPO / "data" / "ETTh1.csv", nrows=rows)
    df = to_long(raw, IngestConfig(format="wide", time_col="date")).drop(columns="_row")
    df["ds"] = pd.to_datetime(df["ds"])
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.1, 0.2)
    panel = build_panel(df, ForecasterConfig(freq="h", calendar=False))
    panel = SeriesScaler.fit(panel, split.train_end).transform(panel)
    return make_windows(panel, 336, 24, split, "train"), make_windows(panel, 336, 24, split, "val")


def epochs(device: str, precision: str, batch: int, train, val, n: int) -> dict:
    """Seconds of each of `n` epochs and the final validation loss for one setting."""
    import torch

    from forecasting.core.training import TrainConfig, fit
    from forecasting.families.recurrent import ModelConfig, RecurrentForecaster

    m = ModelConfig(cell="gru", lookback=336, horizon=24, hidden=64, layers=1, segment=24, highway=True)
    torch.manual_seed(0)
    model = RecurrentForecaster(m)
    cfg = TrainConfig(batch_size=batch, max_epochs=n, patience=n, device=device, precision=precision, seed=0,
                      max_train_windows=16384, max_val_windows=4096)
    t = [time.perf_counter()]

    def on_epoch(epoch: int, *_):
        if device == "cuda":
            torch.cuda.synchronize()
        t.append(time.perf_counter())

    result = fit(model, train, val, cfg, on_epoch)
    times = [b - a for a, b in zip(t, t[1:], strict=False)]
    return {"device": device, "precision": precision, "batch": batch, "first_epoch_s": times[0],
            "epoch_s": min(times[1:] or times), "val_loss": result.best_val_loss}


def rnn_dtypes() -> dict[str, str]:
    """The dtype cuDNN's GRU returns under each autocast (what it ran in)."""
    import torch

    gru = torch.nn.GRU(8, 16, batch_first=True).cuda()
    x = torch.randn(4, 10, 8, device="cuda")
    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with torch.autocast("cuda", dtype=dtype):
            out[name] = str(gru(x)[0].dtype)
    return out


def trials_per_hour(workers: int, quick: bool) -> dict:
    """`forecasting train` with N workers on one GPU in a fresh home: finished trials per hour."""
    trials = 4 if quick else 8
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "PYTHONPATH": str(C.REPO)}
        run = [sys.executable, "-m", "flows.cli"]
        subprocess.run([*run, "ingest", str(C.REPO / "data" / "ETTh1.csv"), "--name", "e", "--format", "wide",
                        "--home", home], env=env, check=True, capture_output=True)
        t0 = time.perf_counter()
        subprocess.run([*run, "train", "e", "--home", home, "--horizon", "24", "--models", "gru", "--trials",
                        str(trials), "--max-epochs", "3", "--workers", str(workers), "--device", "cuda",
                        "--max-train-windows", "8192", "--level"], env=env, check=True, capture_output=True)
        wall = time.perf_counter() - t0
    return {"workers": workers, "trials": trials, "wall_seconds": wall, "trials_per_hour": 3600 * trials / wall}


def render(res: dict) -> str:
    head = "## GPU\n\n" + C.conditions(res) + "\n"
    if res.get("not_run"):
        return head + f"Not run: {res['not_run']}.\n"
    rows = [[r["device"], r["precision"], str(r["batch"]), f"{r['first_epoch_s']:.2f}", f"{r['epoch_s']:.3f}",
             f"{r['val_loss']:.4f}"] for r in res["epochs"]]
    tph = [[str(r["workers"]), str(r["trials"]), f"{r['wall_seconds']:.0f}", f"{r['trials_per_hour']:.0f}"]
           for r in res["trials"]]
    return (head + "\nOne epoch of the demo's GRU (16,384 windows):\n\n"
            + C.table(["device", "precision", "batch", "first epoch s", "epoch s", "val loss"], rows)
            + f"\ncuDNN GRU output dtype under autocast: {res['rnn_dtypes']}.\n\nTuning on one GPU:\n\n"
            + C.table(["workers", "trials", "wall s", "trials per hour"], tph))


def main(argv: list[str] | None = None) -> dict:
    import torch

    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None, help="epochs per setting (default 3; 2 under --quick)")
    args = p.parse_args(argv)
    C.set_threads(args.threads)
    run = C.Run(NAME, args, {"epochs": args.epochs or (2 if args.quick else 3)})
    if not torch.cuda.is_available():
        res = run.finish({"not_run": "no CUDA device on this machine (torch.cuda.is_available() is False)"})
    else:
        n = args.epochs or (2 if args.quick else 3)
        train, val = demo_windows(2400 if args.quick else 17420)
        rows = [epochs("cpu", "fp32", 256, train, val, n)]
        rows += [epochs("cuda", p_, b, train, val, n) for b in (256, 1024) for p_ in ("fp32", "bf16", "fp16")]
        res = run.finish({"epochs": rows, "rnn_dtypes": rnn_dtypes(),
                          "trials": [trials_per_hour(w, args.quick) for w in (1, 2, 4)]})
    C.write(args.out, NAME, res, render(res))
    print(render(res))
    return res


if __name__ == "__main__":
    main()
