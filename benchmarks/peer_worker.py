"""Train and evaluate one peer library's GRU on ETTh1-OT; run by speed.py inside that peer's virtualenv.

It needs only numpy, pandas, torch and the peer library (not this project), reads ETTh1.csv
itself and prints one JSON object on its last stdout line. The protocol matches speed.py's
own measurement: standardize with the training rows' mean and standard deviation, train on
windows whose targets lie in the training rows (no validation, no early stopping), then
forecast every test window (stride 1) and report MSE and MAE on the standardized scale.
Throughput counts training windows per second from the start of the first training batch to
the end of the last (trainer setup excluded).

`--config same` trains the GRU configuration shared with speed.py's own run (hidden, layers,
batch, lr, epochs, clipping, per-window standardization) to measure library overhead;
`--config default` trains the library's own default GRU (only lookback and horizon given)
with its own default budget.

    python peer_worker.py --library neuralforecast --config same --csv ETTh1.csv --borders 8640 11520 14400
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


def nf_model_kwargs(args, n_windows: int) -> tuple[dict, dict]:
    """NeuralForecast GRU arguments for `--config` and the settings to report.

    same: the shared GRU (encoder hidden x layers, per-window standardization, MSE, Adam at
    `lr`, clipping 1.0) with a one-layer linear decoder, `epochs` passes' worth of steps;
    default: the library's own defaults, only the task (h, input_size) given."""
    from neuralforecast.losses.pytorch import MSE

    if args.config == "default":
        settings = {"model": "neuralforecast.models.GRU, library defaults", "encoder": "GRU 200 x 2 (default)",
                    "decoder": "MLP 2 layers, 128 hidden (default)", "loss": "MAE (default)",
                    "scaler_type": "robust (default)", "max_steps": "1000 (default)",
                    "windows_batch_size": "128 (default)", "optimizer": "Adam lr 1e-3 (default)"}
        return ({"max_steps": 5} if args.quick else {}), settings
    B = args.batch_size
    steps = args.epochs * math.ceil(n_windows / B)
    kw = {"encoder_hidden_size": args.hidden, "encoder_n_layers": args.layers, "decoder_layers": 1,
          "loss": MSE(), "max_steps": steps, "learning_rate": args.lr, "batch_size": 1,
          "windows_batch_size": B, "val_check_steps": steps, "scaler_type": "standard",
          "gradient_clip_val": args.clip}
    return kw, {"model": "neuralforecast.models.GRU (direct): GRU over the lookback, linear decoder on "
                         "the last h hidden states", "encoder": f"GRU {args.hidden} x {args.layers}",
                "decoder_layers": 1, "loss": "MSE", "scaler_type": "standard (per window)",
                "windows_batch_size": B, "max_steps": steps, "optimizer": f"Adam lr {args.lr}",
                "gradient_clip_val": args.clip}


def run_neuralforecast(args, ds, y):
    import numpy as np
    import pandas as pd
    import pytorch_lightning as pl
    from neuralforecast import NeuralForecast
    from neuralforecast.models import GRU

    L, H = args.lookback, args.horizon
    train_end = args.borders[0]
    n_windows = train_end - L - H + 1
    kw, settings = nf_model_kwargs(args, n_windows)
    wbs = kw.get("windows_batch_size", 128)
    timer = timer_callback(pl, lambda batch: min(wbs, n_windows))
    model = GRU(h=H, input_size=L, random_seed=args.seed, accelerator="cpu", devices=1, logger=False,
                enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                callbacks=[timer], **kw)
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
    settings["n_parameters"] = n_parameters(nf.models[0])
    return fit_seconds, predict_seconds, target, y_hat, settings


def darts_model_kwargs(args) -> tuple[dict, dict]:
    """Darts BlockRNNModel arguments for `--config` and the settings to report (see nf_model_kwargs);
    the default config names the GRU cell (the library's default cell is a vanilla RNN)."""
    if args.config == "default":  # the default cell is a vanilla RNN: name the GRU, leave the rest
        return {"model": "GRU", **({"n_epochs": 1} if args.quick else {})}, {
            "model": "darts.models.BlockRNNModel(model='GRU'), otherwise library defaults",
            "encoder": "GRU 25 x 1 (default)", "loss": "MSE (default)", "use_reversible_instance_norm": False,
            "batch_size": "32 (default)", "n_epochs": "100 (default)", "optimizer": "Adam lr 1e-3 (default)"}
    kw = {"model": "GRU", "hidden_dim": args.hidden, "n_rnn_layers": args.layers, "batch_size": args.batch_size,
          "n_epochs": args.epochs, "optimizer_kwargs": {"lr": args.lr}, "use_reversible_instance_norm": True}
    return kw, {"model": "darts.models.BlockRNNModel(model='GRU'): GRU over the lookback, linear head on "
                         "the last output_chunk_length outputs", "encoder": f"GRU {args.hidden} x {args.layers}",
                "loss": "MSE (default)", "use_reversible_instance_norm": "True (per-window standardization)",
                "batch_size": args.batch_size, "n_epochs": args.epochs, "optimizer": f"Adam lr {args.lr}",
                "gradient_clip_val": args.clip}


def run_darts(args, ds, y):
    import numpy as np
    import pytorch_lightning as pl
    import torch
    from darts import TimeSeries
    from darts.models import BlockRNNModel

    L, H = args.lookback, args.horizon
    train_end = args.borders[0]

    def windows_of(batch):
        target = getattr(batch, "past_target", None)
        if target is None:  # older Darts: a tuple whose first element is the past target
            target = next(t for t in batch if isinstance(t, torch.Tensor))
        return int(target.shape[0])

    timer = timer_callback(pl, windows_of)
    kw, settings = darts_model_kwargs(args)
    trainer = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
               "enable_model_summary": False, "enable_checkpointing": False, "callbacks": [timer]}
    if args.config == "same":
        trainer["gradient_clip_val"] = args.clip
    model = BlockRNNModel(input_chunk_length=L, output_chunk_length=H, random_state=args.seed,
                          pl_trainer_kwargs=trainer, **kw)
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
    settings["n_parameters"] = n_parameters(model.model)
    return fit_seconds, predict_seconds, target, y_hat, settings


def n_parameters(module) -> int:
    """Trainable parameters of a torch module."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--library", choices=("neuralforecast", "darts"), required=True)
    p.add_argument("--config", choices=("same", "default"), default="same",
                   help="same: the shared GRU configuration below; default: the library's own defaults "
                        "(only lookback and horizon given)")
    p.add_argument("--csv", required=True)
    p.add_argument("--borders", type=int, nargs=3, required=True)
    p.add_argument("--lookback", type=int, default=96)
    p.add_argument("--horizon", type=int, default=24)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping (same config)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true",
                   help="default config: a tiny budget instead of the library's own (smoke tests only)")
    return p.parse_args(argv)


def result(args: argparse.Namespace, fit_seconds: float, predict_seconds: float, target, y_hat,
           settings: dict) -> dict:
    """The JSON line: throughput from the timing callback, test errors on the standardized scale."""
    import importlib.metadata as md

    import numpy as np
    import torch

    err = y_hat - target
    train_seconds = TIMES["t_last"] - TIMES["t_first"]
    n_windows = args.borders[0] - args.lookback - args.horizon + 1
    epochs = TIMES["windows"] / n_windows  # epoch-equivalents (the libraries count steps or epochs)
    return {
        "library": args.library, "config": args.config, "version": md.version(args.library),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "epochs": round(epochs, 2), "train_batches": TIMES["batches"], "train_windows": TIMES["windows"],
        "train_seconds": train_seconds, "fit_seconds_total": fit_seconds,
        "windows_per_second": TIMES["windows"] / train_seconds if train_seconds > 0 else None,
        "seconds_per_epoch": train_seconds / epochs, "predict_seconds": predict_seconds,
        "n_test_windows": int(len(target)), "n_parameters": settings.pop("n_parameters", None),
        "test_mse_std": float(np.mean(err**2)), "test_mae_std": float(np.mean(np.abs(err))),
        "settings": settings,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    warnings.filterwarnings("ignore")
    os.environ.setdefault("PL_DISABLE_FORK", "1")
    torch.set_num_threads(args.threads)
    ds, y = load(args.csv, args.borders)
    run = run_neuralforecast if args.library == "neuralforecast" else run_darts
    fit_seconds, predict_seconds, target, y_hat, settings = run(args, ds, y)
    if not TIMES["batches"]:
        sys.exit("the timing callback saw no training batch")
    out = result(args, fit_seconds, predict_seconds, target, y_hat, settings)
    sys.stdout.write("\n" + json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
