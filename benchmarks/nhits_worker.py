"""Fit NeuralForecast's N-HiTS on training rows and forecast given windows; run by `_nhits.py`.

It needs only numpy, pandas, torch and neuralforecast (the `.[bench]` extra, or the virtualenv
`benchmarks/.venv-peers-neuralforecast`), not this project. Input: an `.npz` holding
- `train_y` [T], `train_id` [T]: every series' training values (original scale), series by series;
- `windows` [N, L]: the inputs of the windows to forecast (original scale, oldest first).

Each window becomes its own short series for one batched `predict`: N-HiTS reads only the last
`input_size` values of a series, so its forecast for a window is the forecast at that window's
origin. Time is an integer step (freq 1): N-HiTS with its defaults reads no calendar features.
Output: `forecasts` [N, H] in an `.npz` written atomically, and one JSON line on stdout with the
settings and the CPU seconds of fit and predict.

    python nhits_worker.py IN.npz OUT.npz --horizon 48 --input-size 144 --seed 0 [--max-steps 1000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings


def frame(values, ids):
    """A long frame (unique_id, ds, y) with integer time per series."""
    import numpy as np
    import pandas as pd

    ids = np.asarray(ids)
    first = np.r_[True, ids[1:] != ids[:-1]]
    start = np.flatnonzero(first)
    ds = np.arange(len(ids)) - np.repeat(start, np.diff(np.r_[start, len(ids)]))
    return pd.DataFrame({"unique_id": ids.astype(str), "ds": ds, "y": np.asarray(values, dtype=np.float32)})


def model(args):
    """N-HiTS with the library's defaults except `h`, `input_size`, the seed, the scaler (labelled)
    and Lightning's reporting (no progress bar, logger or checkpoints: output only)."""
    from neuralforecast.models import NHITS

    return NHITS(h=args.horizon, input_size=args.input_size, random_seed=args.seed, scaler_type=args.scaler,
                 max_steps=args.max_steps, accelerator="cpu", devices=1, enable_progress_bar=False,
                 logger=False, enable_checkpointing=False, enable_model_summary=False)


def run(args) -> dict:
    import numpy as np
    import torch
    from neuralforecast import NeuralForecast

    torch.set_num_threads(args.threads)
    data = np.load(args.inp, allow_pickle=False)
    train, windows = frame(data["train_y"], data["train_id"]), data["windows"]
    nf = NeuralForecast(models=[model(args)], freq=1)
    c0, w0 = time.process_time(), time.perf_counter()
    nf.fit(df=train, val_size=0)
    c1, w1 = time.process_time(), time.perf_counter()
    ids = np.repeat(np.arange(len(windows)), windows.shape[1])
    fc = nf.predict(df=frame(windows.reshape(-1), ids))
    col = next(c for c in fc.columns if c.startswith("NHITS"))
    fc = fc.assign(w=fc["unique_id"].astype(int)).sort_values(["w", "ds"], kind="stable")
    forecasts = fc[col].to_numpy(np.float64).reshape(len(windows), args.horizon)
    c2, w2 = time.process_time(), time.perf_counter()
    tmp = args.out + ".tmp.npz"
    np.savez(tmp, forecasts=forecasts)
    os.replace(tmp, args.out)
    import neuralforecast

    return {"neuralforecast": neuralforecast.__version__, "torch": torch.__version__, "horizon": args.horizon,
            "input_size": args.input_size, "max_steps": args.max_steps, "scaler_type": args.scaler,
            "seed": args.seed, "train_series": int(train["unique_id"].nunique()), "train_rows": len(train),
            "windows": len(windows), "fit_cpu_seconds": round(c1 - c0, 2), "fit_wall_seconds": round(w1 - w0, 2),
            "predict_cpu_seconds": round(c2 - c1, 2), "predict_wall_seconds": round(w2 - w1, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("inp")
    p.add_argument("out")
    p.add_argument("--horizon", type=int, required=True)
    p.add_argument("--input-size", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=1000)  # the library's default
    p.add_argument("--scaler", default="robust")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    for name in ("lightning", "pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    print(json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()
