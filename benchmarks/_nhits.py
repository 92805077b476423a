"""NeuralForecast's N-HiTS as a comparison row of the accuracy benchmarks.

neuralforecast is a benchmark-only extra: it runs in its own interpreter (`nhits_worker.py`), the
current one when `pip install -e '.[bench]'` put it there, else `benchmarks/.venv-peers-neuralforecast`
(which `speed.py` installs), so the project never imports it. The worker fits N-HiTS on exactly the
training rows our models learn from and forecasts the windows it is given; the benchmark scores those
forecasts with its own scorer, on the same windows as every other row.

Settings: the library's defaults (1,000 steps, its learning rate, windows and batch sizes, no early
stopping) except `input_size` (each benchmark records its rule) and `scaler_type="robust"`: with the
default (no scaling) N-HiTS is far off on unscaled panels (OWA 1.14 on M4 Hourly), which would not be
a fair row. One row per seed, cached in `<out>/<name>_nhits.json` (keyed by the data, the horizon and
the settings), so a seed run computes only what is missing and a merge reads every seed's row.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import _common as C
import numpy as np

from forecasting.core.evaluation import Predictor

STEPS = 1000  # the library's default max_steps
QUICK_STEPS = 20
SCALER = "robust"
WORKER = Path(__file__).with_name("nhits_worker.py")
PEER = C.REPO / "benchmarks" / ".venv-peers-neuralforecast" / "bin" / "python"


def interpreter() -> Path | None:
    """A Python that has neuralforecast: this one (the `.[bench]` extra), else the peer virtualenv."""
    if importlib.util.find_spec("neuralforecast") is not None:
        return Path(sys.executable)
    return PEER if PEER.exists() else None


def no_rows(otherwise: str = "not computed for these data yet") -> str:
    """Why a merge has no N-HiTS row: neuralforecast missing, else `otherwise`."""
    return missing_reason() if interpreter() is None else otherwise


def missing_reason() -> str:
    return ("neuralforecast is not installed: `pip install -e '.[bench]'` (or `python benchmarks/speed.py`, "
            "which installs it into benchmarks/.venv-peers-neuralforecast)")


def forecast(train: list[np.ndarray], windows: np.ndarray, horizon: int, input_size: int, seed: int,
             steps: int, python: Path) -> tuple[np.ndarray, dict]:
    """N-HiTS fitted on `train` (each series' training values, original scale) and its forecasts
    [N, H] of `windows` [N, >= input_size] (original scale), with the worker's record."""
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        ids = np.concatenate([np.full(len(y), i) for i, y in enumerate(train)])
        np.savez(inp, train_y=np.concatenate(train).astype(np.float64), train_id=ids,
                 windows=np.ascontiguousarray(windows[:, -input_size:], dtype=np.float64))
        cmd = [str(python), str(WORKER), str(inp), str(out), "--horizon", str(horizon), "--input-size",
               str(input_size), "--seed", str(seed), "--max-steps", str(steps), "--scaler", SCALER]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"nhits_worker.py exited {r.returncode}: {r.stderr.strip()[-1500:]}")
        return np.load(out)["forecasts"], json.loads(r.stdout.strip().splitlines()[-1])


def predictor(train: list[np.ndarray], mean: np.ndarray, std: np.ndarray, horizon: int, input_size: int, seed: int,
              steps: int, python: Path, record: dict) -> Predictor:
    """N-HiTS as a predictor on standardized windows (`mean`/`std` [S] undo and redo the series'
    standardization); it fits when first called, on every window at once. `record` receives the worker's."""

    def fn(x: np.ndarray, series: np.ndarray) -> np.ndarray:
        y = x[..., 0].astype(np.float64) * std[series, None] + mean[series, None]  # [N, L] original scale
        fc, rec = forecast(train, y, horizon, input_size, seed, steps, python)
        record.update(rec)
        return (fc - mean[series, None]) / std[series, None]  # [N, H] standardized

    return Predictor("nhits", input_size, fn, by_series=True, params={"input_size": input_size, "max_steps": steps})


def key_of(data_key: str, horizon: int, input_size: int, steps: int) -> str:
    return f"{data_key}-h{horizon}-in{input_size}-steps{steps}-{SCALER}"


def cached(out: Path, name: str, key: str, seed: int) -> dict | None:
    """The cached row of one seed, if any."""
    return C.read_cache(Path(out) / f"{name}_nhits.json").get(key, {}).get(str(seed))


def store(out: Path, name: str, key: str, seed: int, row: dict) -> None:
    """Add one seed's row to `<out>/<name>_nhits.json`, with where and how it was computed."""
    path = Path(out) / f"{name}_nhits.json"
    cache = C.read_cache(path)
    cache.setdefault(key, {})[str(seed)] = {**row, "run": C.stat_meta() | {"versions": C.versions()}}
    C.write_cache(path, cache)


def seeds_of(out: Path, name: str, key: str) -> dict[str, dict]:
    """Every seed's cached row of `key`."""
    return C.read_cache(Path(out) / f"{name}_nhits.json").get(key, {})


def cost_text(rows: dict[str, dict]) -> str:
    """CPU seconds of fit + predict per seed, in words."""
    return ", ".join(f"seed {s}: {r['fit_cpu_seconds'] + r['predict_cpu_seconds']:.0f} CPU s"
                     for s, r in sorted(rows.items()))
