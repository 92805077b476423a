"""The benchmarks' N-HiTS row: the worker's forecast of a window is NeuralForecast's own forecast at
that origin, and the predictor hands standardized windows over on the original scale.

Needs neuralforecast (the `.[bench]` extra or benchmarks/.venv-peers-neuralforecast); skipped without."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _nhits as N  # noqa: E402

PYTHON = N.interpreter()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(PYTHON is None, reason="neuralforecast is not installed (benchmark extra)")]

DIRECT = """
import sys, numpy as np, pandas as pd
from neuralforecast import NeuralForecast
sys.path.insert(0, sys.argv[1])
import nhits_worker as W
d = np.load(sys.argv[2])
class A: horizon, input_size, seed, scaler, max_steps = 6, 12, 3, "robust", 5
nf = NeuralForecast(models=[W.model(A)], freq=1)
train = W.frame(d["train_y"], d["train_id"])
nf.fit(df=train, val_size=0)
fc = nf.predict()  # at the end of every training series
print(",".join(f"{v:.10g}" for v in fc[fc["unique_id"] == "1"]["NHITS"]))
"""


def panel(n: int = 120) -> list[np.ndarray]:
    t = np.arange(n)
    rng = np.random.default_rng(0)
    return [10 + k + np.sin(2 * np.pi * t / 12) + 0.1 * rng.normal(size=n) for k in range(3)]


def test_a_window_is_forecast_as_neuralforecast_forecasts_at_its_origin(tmp_path):
    train = panel()
    windows = np.stack([train[1][-30:], train[0][:30]])  # the end of series 1, then an earlier window
    fc, rec = N.forecast(train, windows, horizon=6, input_size=12, seed=3, steps=5, python=PYTHON)
    assert fc.shape == (2, 6) and rec["train_series"] == 3 and rec["train_rows"] == 360
    ids = np.concatenate([np.full(len(y), i) for i, y in enumerate(train)])
    np.savez(tmp_path / "d.npz", train_y=np.concatenate(train), train_id=ids)
    script = tmp_path / "direct.py"
    script.write_text(DIRECT)
    out = subprocess.run([str(PYTHON), str(script), str(N.WORKER.parent), str(tmp_path / "d.npz")],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    np.testing.assert_allclose(fc[0], [float(v) for v in out.split(",")], rtol=1e-5)
    assert not np.allclose(fc[0], fc[1])  # the second window is read, not the series end


def test_the_predictor_undoes_and_redoes_the_standardization():
    train = panel()
    mean, std = np.array([10.0, 11.0, 12.0]), np.array([0.5, 2.0, 1.0])
    raw = np.stack([train[2][-24:], train[0][-24:]])  # [2, 24] original scale, series 2 then 0
    series = np.array([2, 0])
    x = ((raw - mean[series, None]) / std[series, None])[..., None]  # [2, 24, 1] standardized
    rec: dict = {}
    p = N.predictor(train, mean, std, 6, 12, 3, 5, PYTHON, rec)
    got = p(x, series) * std[series, None] + mean[series, None]
    want, _ = N.forecast(train, raw, 6, 12, 3, 5, PYTHON)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert p.lookback == 12 and rec["windows"] == 2 and rec["max_steps"] == 5
