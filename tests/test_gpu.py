"""The CUDA path: precision options, one GPU per tuning worker, and a model trained on a GPU that loads
and forecasts on a machine without one. The CUDA tests say why they did not run where there is no GPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from forecasting.api.forecaster import Forecaster, ForecasterConfig
from forecasting.core.data import split_fractions
from forecasting.core.training import TrainConfig, amp_dtype
from forecasting.families.recurrent import ModelConfig
from forecasting.pipeline.search import worker_gpu
from tests.conftest import sine_frame

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine: not run")


def test_the_cpu_always_runs_fp32_and_bad_precisions_are_refused():
    cpu = torch.device("cpu")
    assert all(amp_dtype(cpu, p) is None for p in ("auto", "fp32", "bf16", "fp16"))
    assert amp_dtype(torch.device("cuda"), "fp16") == torch.float16
    assert amp_dtype(torch.device("cuda"), "fp32") is None
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16, got 'int8'"):
        TrainConfig(precision="int8")


def test_fp16_on_the_cpu_trains_exactly_as_fp32():
    """The scaler only acts on CUDA: on the CPU the loop is unchanged, whatever the option."""
    df = sine_frame(n_series=2, length=300)
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.15, 0.15)
    out = []
    for precision in ("fp32", "fp16"):
        cfg = ForecasterConfig(model=ModelConfig(lookback=48, horizon=12, hidden=8, layers=1), calendar=False,
                               train=TrainConfig(max_epochs=2, device="cpu", precision=precision, seed=0))
        f = Forecaster(cfg)
        f.fit(df, split)
        out.append(f.predict(df)[0]["y_hat"].to_numpy())
    assert (out[0] == out[1]).all()


def test_each_tuning_worker_gets_its_own_gpu_round_robin(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [worker_gpu(i, 2) for i in range(1, 4)] == [{"CUDA_VISIBLE_DEVICES": "1"}, {"CUDA_VISIBLE_DEVICES": "0"},
                                                       {"CUDA_VISIBLE_DEVICES": "1"}]
    assert worker_gpu(1, 1) == {} and worker_gpu(3, 0) == {}  # one GPU is shared; none: the CPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")  # the ids the user made visible
    assert worker_gpu(1, 2) == {"CUDA_VISIBLE_DEVICES": "6"}


@CUDA
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_model_trained_on_cuda_loads_and_forecasts_on_a_cpu_only_process(tmp_path, precision):
    df = sine_frame(n_series=3, length=400)
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.15, 0.15)
    cfg = ForecasterConfig(model=ModelConfig(lookback=48, horizon=12, hidden=16, layers=1), calendar=False,
                           train=TrainConfig(max_epochs=2, device="cuda", precision=precision, seed=0))
    f = Forecaster(cfg)
    result = f.fit(df, split)
    assert result.device.startswith("cuda")
    path = f.save(tmp_path / "m")
    df.to_parquet(tmp_path / "h.parquet")
    here = f.predict(df)[0]["y_hat"].to_numpy()
    code = ("import sys, torch, numpy as np, pandas as pd; assert not torch.cuda.is_available(); "
            "from forecasting.api.forecaster import Forecaster; "
            "f = Forecaster.load(sys.argv[1]); fc, _ = f.predict(pd.read_parquet(sys.argv[2])); "
            "np.save(sys.argv[3], fc['y_hat'].to_numpy())")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "h.parquet"), str(tmp_path / "y.npy")],
                   env=env, check=True)
    import numpy as np

    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), here, rtol=1e-4, atol=1e-4)
