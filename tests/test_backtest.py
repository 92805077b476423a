"""Rolling-origin backtesting: cutoff geometry against a loop, the Nixtla output shape, and no value
after a cutoff ever reaching that cutoff's forecasts (a perturbed future changes nothing)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting.api.backtest_run import backtest_family, cutoff_split
from forecasting.api.forecaster import Forecaster, ForecasterConfig, build_panel
from forecasting.core.backtest import BacktestConfig, cross_validation, cutoff_windows, cutoffs
from forecasting.core.evaluation import simple_predictors
from forecasting.core.training import TrainConfig
from forecasting.families.recurrent import ModelConfig

H, L = 12, 48


def test_cutoffs_against_a_loop():
    end, lo = np.array([200, 150, 90]), np.array([100, 100, 60])
    for cfg in (BacktestConfig(3, 5), BacktestConfig(0, None), BacktestConfig(10, 7)):
        got = cutoffs(end, H, L, cfg, lo)
        for e, a, rows in zip(end, lo, got, strict=True):
            step, want, c = cfg.step or H, [], e - H
            while c >= max(a, L) and (not cfg.n_windows or len(want) < cfg.n_windows):
                want.insert(0, c)
                c -= step
            assert rows.tolist() == want
    # the last cutoff's targets end exactly at `end`; a series too short gets none
    assert cutoffs(np.array([59]), H, L, BacktestConfig(2))[0].tolist() == []


def test_cutoff_windows_read_the_rows_before_each_cutoff(make_sine_frame):
    df = make_sine_frame(n_series=2, length=300, seed=1)
    f = Forecaster(ForecasterConfig(model=ModelConfig(lookback=L, horizon=H), calendar=False))
    panel = build_panel(df, f.cfg)
    w, local = cutoff_windows(panel, L, H, panel.lengths, BacktestConfig(4, 10))
    x, y = w.arrays()
    for i, (s, c) in enumerate(zip(w.series_index, local, strict=True)):
        values = panel.series(s)[:, 0]
        np.testing.assert_array_equal(x[i, :, 0], values[c - L:c])
        np.testing.assert_array_equal(y[i], values[c:c + H])


@pytest.fixture(scope="module")
def family_backtest(make_sine_frame):
    df = make_sine_frame(n_series=3, length=500, noise=0.3, seed=2)
    cfg = ForecasterConfig(model=ModelConfig(lookback=L, horizon=H, hidden=8, layers=1, norm="standard",
                                             highway=True),
                           train=TrainConfig(max_epochs=3, device="cpu", batch_size=64), calendar=False, seasons=(24,))
    return df, cfg, backtest_family(df, cfg, BacktestConfig(4, 6))


def test_backtest_output_is_the_cross_validation_frame(family_backtest):
    df, _, result = family_backtest
    fc = result.backtest.forecasts
    assert list(fc.columns[:5]) == ["unique_id", "ds", "cutoff", "y", "y_hat"]
    assert {"naive", "seasonal_naive_24", "linear"} <= set(fc.columns)
    assert result.n_cutoffs == 4 and len(fc) == 3 * 4 * H
    for (uid, cutoff), part in fc.groupby(["unique_id", "cutoff"]):
        # the H forecast steps follow the cutoff hour by hour, and y is what the data holds there
        assert (part["ds"] == pd.date_range(cutoff, periods=H + 1, freq="h")[1:]).all()
        truth = df[df["unique_id"] == uid].set_index("ds").loc[part["ds"], "y"].to_numpy()
        np.testing.assert_allclose(part["y"].to_numpy(), truth, rtol=1e-5)
    # the last cutoff's targets end at each series' last row
    last = fc.groupby("unique_id")["ds"].max()
    assert (last == df.groupby("unique_id")["ds"].max()).all()
    assert set(result.backtest.by_cutoff["predictor"]) == set(result.backtest.metrics["predictor"])
    assert (result.backtest.by_cutoff["n_series"] == 3).all()


def test_no_value_after_a_cutoff_reaches_its_forecasts(family_backtest):
    """Rerun the whole backtest (fit, scaler, ridge, MASE scales, forecasts) with every value after
    a cutoff replaced: the forecasts made at that cutoff and before must not move, while the actuals
    after it do. Reading one future value anywhere would fail this."""
    df, cfg, result = family_backtest
    fc = result.backtest.forecasts
    cuts = sorted(fc["cutoff"].unique())
    models = ["y_hat", "naive", "seasonal_naive_24", "linear"]
    for k in (0, len(cuts) - 1):
        changed = df.copy()
        after = changed["ds"] > cuts[k]
        changed.loc[after, "y"] = changed.loc[after, "y"] * 3.0 + 100.0
        again = backtest_family(changed, cfg, BacktestConfig(4, 6)).backtest.forecasts
        seen = fc["cutoff"] <= cuts[k]
        np.testing.assert_allclose(again.loc[seen, models].to_numpy(), fc.loc[seen, models].to_numpy(),
                                   rtol=1e-5, atol=1e-5)
        assert not np.allclose(again.loc[seen, "y"], fc.loc[seen, "y"])  # the perturbation did land


def test_every_predictor_is_scored_on_the_same_targets(make_sine_frame):
    df = make_sine_frame(n_series=2, length=400, seed=4)
    f = Forecaster(ForecasterConfig(model=ModelConfig(lookback=L, horizon=H), calendar=False, seasons=(24,)))
    split = cutoff_split(df, H, L, BacktestConfig(3))
    panel = f.fit_scaler(df, split)
    preds = simple_predictors(H, (24,))
    bt = cross_validation(panel, preds, H, split.lengths, f.scaler_.mean[:, 0], f.scaler_.std[:, 0],
                          f.mase_scale_, BacktestConfig(3), lo=split.val_end)
    # seasonal naive at 24 by hand from the raw values, from each cutoff
    for (uid, cutoff), part in bt.forecasts.groupby(["unique_id", "cutoff"]):
        hist = df[(df["unique_id"] == uid) & (df["ds"] <= cutoff)]["y"].to_numpy()
        np.testing.assert_allclose(part["seasonal_naive_24"], hist[-24:][np.arange(H) % 24], rtol=1e-5)
        np.testing.assert_allclose(part["naive"], np.repeat(hist[-1], H), rtol=1e-5)


def test_too_short_series_are_named():
    from forecasting.core.errors import DataError

    df = pd.DataFrame({"unique_id": "tiny", "ds": pd.date_range("2024-01-01", periods=60, freq="h"),
                       "y": np.arange(60.0)})
    with pytest.raises(DataError, match="'tiny'.*too short for 3 cutoff"):
        cutoff_split(df, H, L, BacktestConfig(3))


def test_backtest_objective_sizes_validation_and_scores_only_its_cutoffs(make_sine_frame):
    """`--objective backtest --backtest-windows K --backtest-step S`: the validation part holds exactly
    H + (K - 1) * S rows, and early stopping scores the K cutoff windows per series, nothing else."""
    from forecasting.core.backtest import BacktestConfig as BC
    from forecasting.pipeline.plan import TrainJob, base_config, make_split

    df = make_sine_frame(n_series=2, length=600, seed=5)
    job = TrainJob("toy", H, ("gru",), backtest=BC(3, 6), objective="backtest", device="cpu")
    split = make_split(df, job)
    assert ((split.val_end - split.train_end) == H + 2 * 6).all()
    base = base_config(df, "h", job, split)
    assert (base.train.val_cutoffs, base.train.val_step, base.seasons) == (3, 6, (24, 168))
    assert base.train.val_metric == "mae"  # the job's metric is MASE: select on absolute errors
    cfg = ForecasterConfig(model=ModelConfig(lookback=L, horizon=H, hidden=8, layers=1),
                           train=TrainConfig(max_epochs=1, device="cpu", val_cutoffs=3, val_step=6), calendar=False)
    seen = {}

    def spy(epoch, train_loss, val_loss):
        seen["val"] = val_loss

    f = Forecaster(cfg)
    f.fit(df, split, callback=spy)
    panel = f.scaler_.transform(build_panel(df, f.cfg))
    w, _ = cutoff_windows(panel, L, H, split.val_end, BC(3, 6), split.train_end)
    assert len(w) == 2 * 3
    x, y = w.arrays()
    want = float(np.mean((f.predictor().fn(x) - y) ** 2))
    assert seen["val"] == pytest.approx(want, rel=1e-4)
    with pytest.raises(ValueError, match="backtest windows"):
        TrainJob("toy", H, objective="backtest")
