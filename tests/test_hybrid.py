"""The ES-RNN-style hybrid family ("esrnn"): additive double-seasonal Holt-Winters plus a recurrent
remainder. Untrained (head at zero) it is exactly Holt-Winters; it reads nothing after the window;
through the front door it beats seasonal naive on a daily + weekly panel and survives save/load."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from leaks import assert_first_cutoff_reads_nothing_after_it

from forecasting import families
from forecasting.api.forecaster import Forecaster, ForecasterConfig, with_features
from forecasting.core.data import split_fractions
from forecasting.core.training import TrainConfig
from forecasting.families import hybrid
from forecasting.families.hybrid import HybridConfig, HybridForecaster
from forecasting.tuning.space import SearchSpace, apply_params, starting_point

torch.set_num_threads(1)


def reference_holt_winters(y: list[float], seasons: tuple[int, ...], trend: bool, alpha: float, beta: float,
                           gammas: tuple[float, ...], horizon: int) -> list[float]:
    """Taylor's additive (double-)seasonal Holt-Winters over plain floats, with the family's
    documented initial states."""
    L = len(y)
    first = seasons[0] if seasons else 1
    level = sum(y[:first]) / first
    s: list[list[float]] = []
    for k, m in enumerate(seasons):
        init = [y[j] - level for j in range(m)]
        if k > 0:
            init = [init[j] - s[0][j % seasons[0]] for j in range(m)]
        s.append(init)
    b = 0.0
    if trend and seasons and L >= 2 * seasons[-1]:
        m = seasons[-1]
        b = (sum(y[m:2 * m]) / m - sum(y[:m]) / m) / m
    for t in range(L):
        prior = [s[k][t % m] for k, m in enumerate(seasons)]
        total = sum(prior)
        new_level = alpha * (y[t] - total) + (1 - alpha) * (level + b)
        if trend:
            b = beta * (new_level - level) + (1 - beta) * b
        level = new_level
        for k, m in enumerate(seasons):
            s[k][t % m] = gammas[k] * (y[t] - level - (total - prior[k])) + (1 - gammas[k]) * prior[k]
    return [level + (h * b if trend else 0.0) + sum(s[k][(L - 1 + h) % m] for k, m in enumerate(seasons))
            for h in range(1, horizon + 1)]


def started(cfg: HybridConfig, alpha=0.3, beta=0.15, gammas=(0.2, 0.35)) -> HybridForecaster:
    """A model started as Holt-Winters (head at zero), with the given smoothing coefficients."""
    model = HybridForecaster(cfg)
    hybrid.start(model, cfg, None, None, ())
    model.set_smoothing(alpha, beta, gammas)
    return model.eval()


def seasonal_batch(B: int, L: int, F: int, seed: int = 0) -> torch.Tensor:
    """x [B, L, F]: a target with cycles of 4 and 12 steps, a slope and noise; covariates noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(L, dtype=torch.float32)
    y = (torch.sin(2 * torch.pi * t / 4) + 0.7 * torch.cos(2 * torch.pi * t / 12) + 0.02 * t
         + 0.3 * torch.randn(B, L, generator=g))
    return torch.cat([y.unsqueeze(-1), torch.randn(B, L, F - 1, generator=g)], dim=-1)


# --------------------------------------------------------------------------- 1. it is Holt-Winters


@pytest.mark.parametrize("seasons, trend", [((4, 12), False), ((4, 12), True), ((5,), True), ((), True), ((), False)])
def test_with_the_head_at_zero_the_forecast_is_a_plain_holt_winters(seasons, trend):
    cfg = HybridConfig(lookback=30, horizon=14, n_features=3, hidden=8, segment=5, seasons=seasons, trend=trend)
    model = started(cfg)
    x = seasonal_batch(4, 30, 3)
    want = torch.tensor([reference_holt_winters(x[i, :, 0].tolist(), seasons, trend, 0.3, 0.15, (0.2, 0.35), 14)
                         for i in range(4)])
    with torch.no_grad():
        y_hat, hw = model(x), model.holt_winters(x)
    torch.testing.assert_close(hw, want, atol=1e-5, rtol=0)
    assert torch.equal(y_hat, hw)  # exactly: the remainder is 0


@pytest.mark.parametrize("seasons, trend", [((4, 12), False), ((4, 12), True), ((), False)])
def test_multiplicative_with_the_head_at_zero_is_holt_winters_on_the_log_of_the_original_values(seasons, trend):
    """x + c = y / sigma: the forecast is exp(Holt-Winters of log(x + c)) - c, computed by hand."""
    cfg = HybridConfig(lookback=30, horizon=14, n_features=3, hidden=8, segment=5, seasons=seasons, trend=trend,
                       multiplicative=True)
    model = started(cfg)
    x = seasonal_batch(4, 30, 3)
    c = torch.tensor([4.0, 5.0, 6.5, 9.0])
    x[..., -1] = c[:, None]  # the level column
    want = torch.tensor([[math.exp(v) - c[i].item() for v in reference_holt_winters(
        [math.log(v + c[i].item()) for v in x[i, :, 0].tolist()], seasons, trend, 0.3, 0.15, (0.2, 0.35), 14)]
        for i in range(4)])
    with torch.no_grad():
        y_hat, hw = model(x), model.holt_winters(x)
    torch.testing.assert_close(hw, want, atol=1e-4, rtol=1e-5)
    assert torch.equal(y_hat, hw)
    additive = started(replace(cfg, multiplicative=False))
    assert not torch.allclose(additive.holt_winters(x), hw, atol=1e-2)  # the two forms differ here
    with pytest.raises(ValueError, match="level column"):
        HybridForecaster(HybridConfig(n_features=1, multiplicative=True))


def test_a_multiplicative_start_on_data_with_a_non_positive_value_stays_additive(tmp_path):
    df = daily_weekly_frame(n_series=2, weeks=5)
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.15, 0.15)
    cfg = ForecasterConfig(model=HybridConfig(lookback=48, horizon=12, hidden=8, segment=12, seasons=(24,),
                                              multiplicative=True),
                           train=TrainConfig(max_epochs=1, device="cpu"), calendar=False, seasons=(24,))
    f = Forecaster(cfg)
    assert f.cfg.level_input and f.cfg.model.n_features == 2  # a multiplicative model reads the level column
    f.fit(df, split)
    assert f.cfg.model.multiplicative  # positive data: it stays multiplicative
    mean, std = f.scaler_.mean[:, 0], f.scaler_.std[:, 0]
    np.testing.assert_allclose(f.panel(df).series(1)[:, -1], mean[1] / std[1], rtol=1e-6)
    bad = df.copy()
    bad.loc[bad.index[5], "y"] = -1.0  # inside the first training window
    g = Forecaster(cfg)
    g.fit(bad, split)
    assert not g.cfg.model.multiplicative and not g.model_.cfg.multiplicative
    assert g.cfg.level_input and g.panel(bad).values.shape[1] == 2  # built with the column, it keeps it
    loaded = Forecaster.load(g.save(tmp_path / "g"))
    np.testing.assert_allclose(loaded.predict(bad)[0]["y_hat"], g.predict(bad)[0]["y_hat"], rtol=1e-6)


def test_configs_saved_before_the_level_column_load_without_it():
    cfg = with_features(ForecasterConfig(model=HybridConfig(lookback=48, horizon=12), calendar=False))
    assert not cfg.level_input and cfg.model.n_features == 1  # additive: no level column
    old = cfg.to_dict()
    del old["level_input"]
    assert ForecasterConfig.from_dict(old) == cfg
    mult = with_features(replace(cfg, model=replace(cfg.model, multiplicative=True)))
    assert mult.level_input and mult.model.n_features == 2


def test_the_smoothing_is_learnt_and_the_remainder_is_added_once_the_head_moves():
    cfg = HybridConfig(lookback=30, horizon=6, n_features=2, hidden=8, seasons=(4, 12), trend=True)
    model = started(cfg).train()
    x = seasonal_batch(8, 30, 2)
    model(x).square().mean().backward()
    for p in (model.raw_alpha, model.raw_beta, model.raw_gamma):
        assert p.grad is not None and torch.all(p.grad != 0)
    assert model.head.weight.grad.abs().sum() > 0  # the zeroed head still learns
    torch.nn.init.normal_(model.head.bias)
    with torch.no_grad():
        model.eval()
        assert not torch.allclose(model(x), model.holt_winters(x))
    alpha, beta, gamma = model.smoothing()
    assert (alpha.item(), beta.item()) == pytest.approx((0.3, 0.15)) and gamma.tolist() == pytest.approx([0.2, 0.35])


# --------------------------------------------------------------------------- a fitted forecaster (2 and 3)


def daily_weekly_frame(n_series: int = 3, weeks: int = 8, seed: int = 0) -> pd.DataFrame:
    """Hourly series: a daily sine, day-of-week offsets, a drifting level (slope + random walk), noise."""
    rng = np.random.default_rng(seed)
    n = 168 * weeks
    t = np.arange(n)
    parts = []
    for i in range(n_series):
        daily = rng.uniform(1.5, 3.0) * np.sin(2 * np.pi * t / 24 + rng.uniform(0, 2 * np.pi))
        weekly = np.repeat(rng.normal(0.0, 1.0, 7), 24)[t % 168]
        level = rng.uniform(5, 15) + rng.uniform(-0.01, 0.01) * t + np.cumsum(rng.normal(0.0, 0.05, n))
        y = level + daily + weekly + rng.normal(0.0, 0.3, n)
        parts.append(pd.DataFrame({"unique_id": f"s{i}", "ds": pd.date_range("2022-01-03", periods=n, freq="h"),
                                   "y": y}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def fitted():
    df = daily_weekly_frame()
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.1, 0.2)
    model = HybridConfig(lookback=336, horizon=24, hidden=32, segment=24)  # seasons: chosen by `start`
    f = Forecaster(ForecasterConfig(model=model, calendar=False, seasons=(24, 168),
                                    train=TrainConfig(max_epochs=3, lr=3e-3, device="cpu", seed=0)))
    t0 = time.perf_counter()
    f.fit(df, split)
    print(f"\nesrnn fit: {time.perf_counter() - t0:.2f} s, history {f.fit_result_.history}, "
          f"start val {f.fit_result_.start_val_loss:.4f}, best epoch {f.fit_result_.best_epoch}")
    return f, df, split


# --------------------------------------------------------------------------- 2. nothing after the window


def test_a_forecast_reads_its_own_window_only():
    cfg = HybridConfig(lookback=30, horizon=6, n_features=3, hidden=8, seasons=(4, 12), trend=True)
    torch.manual_seed(0)
    model = HybridForecaster(cfg).eval()  # a random head: the recurrence is read too
    x = seasonal_batch(5, 30, 3)
    later = x.clone()
    later[1:] = torch.randn_like(later[1:]) * 10  # every other window (targets and covariates) changes
    with torch.no_grad():
        torch.testing.assert_close(model(later)[0], model(x)[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(model(x[:1])[0], model(x)[0], atol=1e-6, rtol=0)
        moved = x.clone()
        moved[0, -1, 1] += 1.0  # its own covariates are read
        assert not torch.allclose(model(moved)[0], model(x)[0])


def test_the_first_backtest_forecast_is_unchanged_when_later_data_changes(fitted):
    assert_first_cutoff_reads_nothing_after_it(*fitted)


def test_a_multiplicative_model_reads_nothing_after_the_cutoff_either():
    """Its level column comes from the training rows' statistics, not from the window's future."""
    df = daily_weekly_frame()
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.1, 0.2)
    f = Forecaster(ForecasterConfig(model=HybridConfig(lookback=336, horizon=24, hidden=16, segment=24,
                                                       multiplicative=True),
                                    calendar=False, seasons=(24, 168), train=TrainConfig(max_epochs=1, device="cpu")))
    f.fit(df, split)
    assert f.cfg.model.multiplicative
    assert_first_cutoff_reads_nothing_after_it(f, df, split)


# --------------------------------------------------------------------------- 3. through the front door


def test_through_the_front_door_it_beats_seasonal_naive_and_round_trips(fitted, tmp_path):
    f, df, split = fitted
    assert f.cfg.family == "esrnn" and f.cfg.model.seasons == (24, 168)  # the start chose them
    assert f.fit_result_.best_val_loss <= f.fit_result_.start_val_loss  # Holt-Winters competed
    bt = f.cross_validation(df, split.val_end, split.train_end, predictors=[f.predictor(), *f.baselines(df, split)[0]])
    mase = bt.metrics.set_index("predictor")["mase"]
    print(mase.to_dict())
    assert mase["y_hat"] < mase["seasonal_naive_24"] and mase["y_hat"] < mase["seasonal_naive_168"]
    fc, skipped = f.predict(df)
    assert len(fc) == 3 * 24 and not skipped
    g = Forecaster.load(f.save(tmp_path / "esrnn"))
    assert g.cfg == f.cfg and g.family.name == "esrnn"
    pd.testing.assert_frame_equal(g.predict(df)[0], fc)


# --------------------------------------------------------------------------- 4. configuration


def test_the_config_refuses_seasons_that_do_not_fit_and_start_drops_them():
    with pytest.raises(ValueError, match=r"each season must be in \[2, lookback=96\], got \(24, 168\)"):
        HybridConfig(lookback=96, seasons=(24, 168))  # refused: the window could not initialize 168
    with pytest.raises(ValueError, match="each season must be in"):
        HybridConfig(seasons=(1,))
    with pytest.raises(ValueError, match="at most 2 seasons"):
        HybridConfig(lookback=400, seasons=(12, 24, 168))
    with pytest.raises(ValueError, match="shortest first"):
        HybridConfig(lookback=336, seasons=(168, 24))
    with pytest.raises(ValueError, match="cell must be one of"):
        HybridConfig(cell="rnn")
    with pytest.raises(ValueError, match="segment must be in"):
        HybridConfig(lookback=48, segment=49)
    with pytest.raises(ValueError, match="dropout"):
        HybridConfig(dropout=1.0)
    assert HybridConfig(cell="lstm", lookback=168, seasons=(24, 168)).seasons == (24, 168)
    # `start` picks from the data's periods and drops those longer than the lookback ...
    for lookback, periods, want in [(96, (24, 168), (24,)), (336, (24, 168), (24, 168)), (96, (168,), ()),
                                    (400, (12, 24, 168), (12, 24))]:
        cfg = HybridConfig(lookback=lookback, horizon=6)
        model = HybridForecaster(cfg)
        got = hybrid.start(model, cfg, None, None, periods)
        assert got.seasons == want and model.cfg.seasons == want and model.head.weight.abs().sum() == 0
        assert model(torch.randn(2, lookback, 1)).shape == (2, 6)
    # ... and keeps the config's own.
    assert hybrid.start(HybridForecaster(HybridConfig(lookback=336, seasons=(168,))), HybridConfig(
        lookback=336, seasons=(168,)), None, None, (24, 168)).seasons == (168,)


def test_the_family_is_registered_with_its_space_first_trial_and_configure():
    assert "esrnn" in families.names() and families.family_of(HybridConfig()) == "esrnn"
    space = families.get("esrnn").space((24, 168))
    assert space.segments == (12, 24)
    assert set(space.params()) == {"hidden", "layers", "dropout", "segment", "trend", "multiplicative"}
    assert space.params()["hidden"] == families.IntRange(16, 128, log=True)
    search = SearchSpace(lookbacks=(48, 96, 168, 336), periods=(24, 168))
    first = starting_point(search, "esrnn")
    assert first["lookback"] == 336  # two weeks: the weekly season is smoothed over its second cycle
    assert (first["hidden"], first["layers"], first["segment"], first["trend"]) == (64, 1, 24, False)
    assert hybrid.first(hybrid.default_space((24,)), (48, 96, 168, 336))["lookback"] == 168  # 7 segments
    base = ForecasterConfig(model=HybridConfig(horizon=12, n_features=1), calendar=False)
    cfg = apply_params(base, {**first, "lookback": 48, "segment": 64, "trend": True}, "esrnn").model
    assert cfg == HybridConfig(lookback=48, horizon=12, hidden=64, layers=1, dropout=0.0, segment=48, trend=True)
    assert hybrid.configure(replace(cfg, lookback=336, seasons=(24, 168)), first).seasons == (24, 168)


def test_a_training_step_of_the_test_model_takes_a_fraction_of_a_second():
    """Forward + backward of a batch of the front-door model (loosely bounded: the machine is shared)."""
    cfg = HybridConfig(lookback=336, horizon=24, hidden=32, segment=24, seasons=(24, 168))
    model = started(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(256, 336, 1)
    t0 = time.perf_counter()
    for _ in range(2):
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    per_batch = (time.perf_counter() - t0) / 2
    print(f"\nesrnn L=336, 2 seasons, batch 256: {per_batch:.3f} s forward + backward")
    assert per_batch < 5.0


def test_an_ensemble_of_additive_and_multiplicative_members_gives_each_its_own_columns():
    from forecasting.api.ensemble import Ensemble

    df = daily_weekly_frame(n_series=2, weeks=5)
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.15, 0.15)
    members = []
    for mult in (False, True):
        f = Forecaster(ForecasterConfig(model=HybridConfig(lookback=48, horizon=12, hidden=8, segment=12,
                                                           multiplicative=mult),
                                        train=TrainConfig(max_epochs=1, device="cpu"), calendar=False, seasons=(24,)))
        f.fit(df, split)
        members.append(f)
    assert [m.cfg.model.n_features for m in members] == [1, 2]
    ens = Ensemble(members)
    each = [m.evaluate(df, split, "test").y_hat for m in members]
    np.testing.assert_allclose(ens.evaluate(df, split, "test").y_hat, np.mean(each, axis=0), rtol=1e-5)
    got, _ = ens.predict(df)
    np.testing.assert_allclose(got["y_hat"], np.mean([m.predict(df)[0]["y_hat"] for m in members], axis=0), rtol=1e-5)
