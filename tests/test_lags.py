"""The recurrent family's seasonal-lag path (`lags`): each output step reads the values whole cycles
before it, the path starts at zero beside the highway, the start records the periods it reads, and
nothing after a cutoff is read."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from leaks import assert_first_cutoff_reads_nothing_after_it

from forecasting.api.forecaster import Forecaster, ForecasterConfig
from forecasting.core.data import split_fractions
from forecasting.core.training import TrainConfig
from forecasting.families import recurrent
from forecasting.families.recurrent import (
    MAX_LAGS,
    RecurrentConfig,
    RecurrentForecaster,
    SeasonalLags,
    lag_index,
)


def naive_lag_positions(lookback: int, horizon: int, period: int) -> list[int]:
    """For each output step (window time L + t), step back a whole cycle until inside the window."""
    out = []
    for t in range(horizon):
        p = lookback + t
        while p >= lookback:
            p -= period
        out.append(p)
    return out


@pytest.mark.parametrize(("lookback", "horizon", "periods"), [(48, 24, (24,)), (168, 48, (24, 168)),
                                                               (30, 13, (7, 12)), (10, 5, ())])
def test_each_step_reads_its_latest_value_whole_cycles_back(lookback, horizon, periods):
    idx = lag_index(lookback, horizon, periods)
    assert idx.shape == (horizon, MAX_LAGS)
    slots = [(periods or (1,))[k % len(periods or (1,))] for k in range(MAX_LAGS)]
    for k, m in enumerate(slots):
        assert idx[:, k].tolist() == naive_lag_positions(lookback, horizon, m)


def test_an_output_step_depends_on_its_lag_values_only():
    """d out[:, t] / d x is nonzero exactly at step t's lag positions (the state held fixed)."""
    cfg = RecurrentConfig(lookback=30, horizon=13, hidden=8, lags=True, lag_periods=(7, 12))
    torch.manual_seed(0)
    path = SeasonalLags(cfg)
    torch.nn.init.normal_(path.out.weight)
    h, x = torch.randn(1, 8), torch.randn(1, 30, requires_grad=True)
    for t in range(13):
        (grad,) = torch.autograd.grad(path(h, x)[0, t], x)
        read = set(torch.nonzero(grad[0]).flatten().tolist())
        assert read == {naive_lag_positions(30, 13, 7)[t], naive_lag_positions(30, 13, 12)[t]}


def test_started_as_the_ridge_the_lag_path_adds_nothing():
    base = RecurrentConfig(lookback=48, horizon=24, hidden=16, segment=24, highway=True, norm="standard")
    torch.manual_seed(0)
    plain = RecurrentForecaster(base).eval()
    torch.manual_seed(0)
    with_lags = RecurrentForecaster(RecurrentConfig(**{**base.__dict__, "lags": True, "lag_periods": (24,)})).eval()
    w, b = torch.randn(24, 48) * 0.05, torch.randn(24)
    plain.start_as_linear(w, b)
    with_lags.start_as_linear(w, b)
    x = torch.randn(6, 48, 1)
    with torch.no_grad():
        torch.testing.assert_close(with_lags(x), plain(x))
        torch.nn.init.normal_(with_lags.lags.out.weight)
        assert not torch.allclose(with_lags(x), plain(x))  # once trained away from zero it is read


def test_config_refuses_lags_that_do_not_fit():
    with pytest.raises(ValueError, match="lag_periods"):
        RecurrentConfig(lookback=24, lags=True, lag_periods=(168,))
    with pytest.raises(ValueError, match="lag_periods"):
        RecurrentConfig(lookback=336, lags=True, lag_periods=(12, 24, 168))
    assert recurrent.lag_periods((168, 24, 8760), 200) == (24, 168)
    assert recurrent.lag_periods((24, 168), 96) == (24,)


@pytest.fixture(scope="module")
def fitted(make_sine_frame):
    df = make_sine_frame(n_series=3, length=24 * 20, period=24, noise=0.2, seed=3)
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.15, 0.2)
    model = RecurrentConfig(lookback=96, horizon=24, hidden=16, layers=1, segment=24, highway=True, lags=True)
    f = Forecaster(ForecasterConfig(model=model, calendar=False, seasons=(24, 168),
                                    train=TrainConfig(max_epochs=2, lr=3e-3, device="cpu", seed=0)))
    f.fit(df, split)
    return f, df, split


def test_the_start_records_the_periods_that_fit_and_a_saved_model_reads_the_same(fitted, tmp_path):
    f, df, _ = fitted
    assert f.cfg.model.lags and f.cfg.model.lag_periods == (24,)  # 168 does not fit a 96-step window
    g = Forecaster.load(f.save(tmp_path / "lags"))
    assert g.cfg == f.cfg
    torch.testing.assert_close(g.model_.lags.index, f.model_.lags.index)
    np.testing.assert_array_equal(g.predict(df)[0]["y_hat"].to_numpy(), f.predict(df)[0]["y_hat"].to_numpy())


def test_the_lag_path_reads_nothing_after_the_cutoff(fitted):
    assert_first_cutoff_reads_nothing_after_it(*fitted)
