"""Train and evaluate one peer library's GRU on ETTh1-OT; run by speed.py inside that peer's virtualenv.

It needs only numpy, pandas, torch and the peer library (not this project), reads ETTh1.csv
itself and prints one JSON object on its last stdout line. The protocol matches speed.py's
own measurement: standardize with the training rows' mean and standard deviation, train on
windows whose targets lie in the training rows for a fixed number of epoch-equivalents (no
validation, no early stopping), then forecast every test window (stride 1) and report MSE
and MAE on the standardized scale. Throughput counts training windows per second from the
start of the first training batch to the end of the last (trainer setup excluded).

    python peer_worker.py --library neuralforecast --csv ETTh1.csv --borders 8640 11520 14400
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings

TIMES = {"t_first": None, "t_last": None, "batches": 0, "windows": 0}


def timer_callback(pl, windows_of):
    """A Lightning callback timing training batches. It writes to the module-level `TIMES`
    because the libraries may deep-copy the callbacks they are given."""

    class Timer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if TIMES["t_first"] is None:
                TIMES["t_first"] = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            TIMES["t_last"] = time.perf_counter()
            TIMES["batches"] += 1
            TIMES["windows"] += windows_of(batch)

    return Timer()


def load(csv: str, borders: list[int]):
    import numpy as np
    import pandas as pd

    train_end, val_end, length = borders
    raw = pd.read_csv(csv, nrows=length)
    y = raw["OT"].to_numpy(np.float64)
    mean, std = y[:train_end].mean(), y[:train_end].std()
    return pd.to_datetime(raw["date"]), ((y - mean) / std).astype(np.float32)


def test_windows(y, borders, L: int, H: int):
    """Inputs [N, L] and targets [N, H] of every test window (targets in [val_end, length))."""
    import numpy as np

    _, val_end, length = borders
    starts = np.arange(val_end - L, length - L - H + 1)
    idx = starts[:, None] + np.arange(L + H)[None, :]
    w = y[idx]
    return starts, w[:, :L], w[:, L:]


def run_neuralforecast(args, ds, y):
    import numpy as np
    import pandas as pd
    import pytorch_lightning as pl
    from neuralforecast import NeuralForecast
    from neuralforecast.losses.pytorch import MSE
    from neuralforecast.models import GRU

    L, H, B = args.lookback, args.horizon, args.batch_size
    train_end = args.borders[0]
    n_windows = train_end - L - H + 1
    steps = args.epochs * math.ceil(n_windows / B)
    timer = timer_callback(pl, lambda batch: min(B, n_windows))
    model = GRU(
        h=H, input_size=L, encoder_hidden_size=args.hidden, encoder_n_layers=args.layers,
        loss=MSE(), max_steps=steps, learning_rate=args.lr, batch_size=1, windows_batch_size=B,
        val_check_steps=steps, random_seed=args.seed, scaler_type="robust",
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, callbacks=[timer],
    )
    nf = NeuralForecast(models=[model], freq="h")
    train = pd.DataFrame({"unique_id": "OT", "ds": ds[:train_end], "y": y[:train_end]})
    t0 = time.perf_counter()
    nf.fit(df=train, val_size=0)
    fit_seconds = time.perf_counter() - t0
    # Every test window as its own short series: the model reads the last L points of each.
    starts, x, target = test_windows(y, args.borders, L, H)
    idx = starts[:, None] + np.arange(L)[None, :]
    hist = pd.DataFrame({"unique_id": np.repeat([f"w{s:06d}" for s in starts], L),
                         "ds": ds.to_numpy()[idx.reshape(-1)], "y": x.reshape(-1)})
    t1 = time.perf_counter()
    fc = nf.predict(df=hist)
    predict_seconds = time.perf_counter() - t1
    fc = fc.sort_values(["unique_id", "ds"])
    y_hat = fc["GRU"].to_numpy(np.float64).reshape(len(starts), H)
    settings = {"model": "neuralforecast.models.GRU (direct, MLP decoder defaults)", "loss": "MSE",
                "scaler_type": "robust (default: per-window)", "batch_size (series)": 1,
                "windows_batch_size": B, "max_steps": steps, "optimizer": "Adam (default)"}
    return timer, fit_seconds, predict_seconds, target, y_hat, settings


def run_darts(args, ds, y):
    import numpy as np
    import pytorch_lightning as pl
    import torch
    from darts import TimeSeries
    from darts.models import BlockRNNModel

    L, H, B = args.lookback, args.horizon, args.batch_size
    train_end = args.borders[0]

    def windows_of(batch):
        target = getattr(batch, "past_target", None)
        if target is None:  # older Darts: a tuple whose first element is the past target
            target = next(t for t in batch if isinstance(t, torch.Tensor))
        return int(target.shape[0])

    timer = timer_callback(pl, windows_of)
    model = BlockRNNModel(
        input_chunk_length=L, output_chunk_length=H, model="GRU", hidden_dim=args.hidden,
        n_rnn_layers=args.layers, batch_size=B, n_epochs=args.epochs, optimizer_kwargs={"lr": args.lr},
        random_state=args.seed, use_reversible_instance_norm=True,
        pl_trainer_kwargs={"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
                           "enable_model_summary": False, "enable_checkpointing": False,
                           "callbacks": [timer]},
    )
    train = TimeSeries.from_values(y[:train_end])
    t0 = time.perf_counter()
    model.fit(train, verbose=False)
    fit_seconds = time.perf_counter() - t0
    starts, x, target = test_windows(y, args.borders, L, H)
    series = [TimeSeries.from_values(row) for row in x]
    t1 = time.perf_counter()
    preds = model.predict(n=H, series=series, batch_size=1024, verbose=False)
    predict_seconds = time.perf_counter() - t1
    y_hat = np.stack([p.values()[:, 0] for p in preds]).astype(np.float64)
    settings = {"model": "darts.models.BlockRNNModel(model='GRU') (last state -> linear head)",
                "loss": "MSE (default)", "use_reversible_instance_norm": True, "batch_size": B,
                "n_epochs": args.epochs, "optimizer": "Adam (default)"}
    return timer, fit_seconds, predict_seconds, target, y_hat, settings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--library", choices=("neuralforecast", "darts"), required=True)
    p.add_argument("--csv", required=True)
    p.add_argument("--borders", type=int, nargs=3, required=True)
    p.add_argument("--lookback", type=int, default=96)
    p.add_argument("--horizon", type=int, default=24)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import importlib.metadata as md

    import numpy as np
    import torch

    warnings.filterwarnings("ignore")
    os.environ.setdefault("PL_DISABLE_FORK", "1")
    torch.set_num_threads(args.threads)
    ds, y = load(args.csv, args.borders)
    run = run_neuralforecast if args.library == "neuralforecast" else run_darts
    _, fit_seconds, predict_seconds, target, y_hat, settings = run(args, ds, y)
    err = y_hat - target
    if not TIMES["batches"]:
        sys.exit("the timing callback saw no training batch")
    train_seconds = TIMES["t_last"] - TIMES["t_first"]
    out = {
        "library": args.library,
        "version": md.version(args.library),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "epochs": args.epochs,
        "train_batches": TIMES["batches"],
        "train_windows": TIMES["windows"],
        "train_seconds": train_seconds,
        "fit_seconds_total": fit_seconds,
        "windows_per_second": TIMES["windows"] / train_seconds if train_seconds > 0 else None,
        "seconds_per_epoch": train_seconds / args.epochs,
        "predict_seconds": predict_seconds,
        "n_test_windows": int(len(target)),
        "test_mse_std": float(np.mean(err**2)),
        "test_mae_std": float(np.mean(np.abs(err))),
        "settings": settings,
    }
    sys.stdout.write("\n" + json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
