"""The accuracy machinery: seasonal periods, the highway's special cases, the ridge baseline against
scikit-learn on hand-cut windows, and a tuned GRU against weekly seasonal naive on a daily+weekly cycle."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import Ridge

from forecasting.api.forecaster import Forecaster, ForecasterConfig, build_panel
from forecasting.core.baselines import LinearBaseline, seasonal_naive
from forecasting.core.data import split_fractions
from forecasting.core.evaluation import LINEAR_ALPHAS, fit_linear
from forecasting.core.seasons import kept_periods, seasonal_periods
from forecasting.core.training import TrainConfig
from forecasting.families.recurrent import ModelConfig, RecurrentForecaster
from forecasting.tuning.space import default_space, starting_point

# --------------------------------------------------------------------------- seasons


@pytest.mark.parametrize(("freq", "periods"), [
    ("h", (24, 168)), ("30min", (48, 336)), ("15min", (96, 672)), ("2h", (12, 84)), ("D", (7, 365)),
    ("B", (5, 260)), ("W", (52,)), ("W-SUN", (52,)), ("MS", (12,)), ("QE", (4,)), ("YE", ()), ("3D", ()),
])
def test_seasonal_periods_of_each_frequency(freq, periods):
    assert seasonal_periods(freq) == periods


def test_kept_periods_need_two_seasons_of_training_history():
    assert kept_periods("h", [300, 300]) == (24,)  # a week needs 336 points of training history
    assert kept_periods("h", [336, 336]) == (24, 168)
    assert kept_periods("h", [47]) == ()
    assert kept_periods("h", [100, 2000, 2000]) == (24, 168)  # the median series decides
    assert kept_periods("h", [100, 100, 2000]) == (24,)
    assert kept_periods("h", [2000], override=[336, 48]) == (48, 336)
    with pytest.raises(ValueError, match="--seasons"):
        kept_periods("h", [600], override=[48, 336])


def test_default_lookbacks_reach_the_longest_period():
    assert default_space((24, 168), max_lookback=400, horizon=24).lookbacks == (48, 96, 168, 336)
    assert default_space((48, 336), 1000, 48).lookbacks == (96, 192, 336, 672)
    # The longest period is reachable only when it fits under the cap: 2 x 168 does not fit in 300.
    assert default_space((24, 168), max_lookback=300, horizon=24).lookbacks == (48, 96, 168)
    # Without a season: two and four horizons; nothing fits: the cap itself.
    assert default_space((), 100, 12).lookbacks == (24, 48)
    assert default_space((24, 168), max_lookback=40, horizon=24).lookbacks == (40,)


def test_the_recurrent_space_follows_the_periods_and_the_first_trial_fits_it():
    space = default_space((24, 168), max_lookback=400, horizon=24)
    assert space.own("gru").segments == (12, 24)  # half and one shortest season
    assert space.own("lstm") == space.own("gru")  # one space for both cells: a fair comparison
    assert default_space((4,), 100, 12).own("gru").segments == (1,)  # short periods: step by step
    first = starting_point(space, "gru")
    # Longest lookback within 7 segments of 24 (a week of hourly data), read in day-long segments.
    assert (first["lookback"], first["segment"], first["highway"], first["init"]) == (168, 24, True, "linear")
    assert first["lags"] and not first["multiplicative"]  # lags won on validation (benchmarks/forms.py)
    assert set(first) == set(space.params("gru"))  # every drawn parameter has a first value


# --------------------------------------------------------------------------- the highway


@pytest.mark.parametrize("norm", ["none", "last", "mean", "standard"])
@pytest.mark.parametrize(("cell", "segment"), [("gru", 1), ("lstm", 24)])
def test_highway_reproduces_seasonal_naive_exactly(norm, cell, segment):
    """With the highway set to the seasonal-naive selection and the recurrent head at zero, the model
    *is* seasonal naive, for every window normalization: the family contains it."""
    L, H = 336, 48
    torch.manual_seed(0)
    x = torch.randn(16, L, 3) * 5 + 20  # [B, L, F]: target plus two covariates
    for period in (24, 168):
        cfg = ModelConfig(cell=cell, lookback=L, horizon=H, n_features=3, hidden=16, layers=2, norm=norm,
                          segment=segment, highway=True, season=period, init="seasonal")
        model = RecurrentForecaster(cfg).eval()
        with torch.no_grad():
            got = model(x).numpy()
        want = seasonal_naive(x[..., 0].numpy(), H, period)
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-4)
    # Without the highway nothing forces it: the untrained model is far from seasonal naive.
    off = RecurrentForecaster(replace(cfg, highway=False)).eval()
    with torch.no_grad():
        assert np.abs(off(x).numpy() - want).max() > 1.0


# --------------------------------------------------------------------------- the ridge baseline


def loop_windows(series: list[np.ndarray], lo: list[int], hi: list[int], L: int, H: int):
    """Inputs and targets of every window whose targets lie in [lo, hi) of its series (a plain loop)."""
    xs, ys = [], []
    for s, a, b in zip(series, lo, hi, strict=True):
        for t in range(max(a, L), b - H + 1):  # t: first target row
            xs.append(s[t - L:t])
            ys.append(s[t:t + H])
    return np.array(xs), np.array(ys)


@pytest.fixture(scope="module")
def panel_case(make_sine_frame):
    df = make_sine_frame(n_series=3, length=600, noise=0.4, seed=3)
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.15, 0.15)
    cfg = ForecasterConfig(model=ModelConfig(lookback=48, horizon=12), calendar=False, seasons=(24,))
    f = Forecaster(cfg)
    panel = f.fit_scaler(df, split)
    series = [panel.series(i)[:, 0].astype(np.float64) for i in range(3)]
    return df, split, f, panel, series


def test_linear_baseline_matches_scikit_learn_on_hand_cut_windows(panel_case):
    _, split, _, _, series = panel_case
    L, H = 48, 12
    x, y = loop_windows(series, [0] * 3, list(split.train_end), L, H)
    xv, _ = loop_windows(series, list(split.train_end), list(split.val_end), L, H)
    ours = LinearBaseline(L, H, alpha=10.0).fit(x, y).predict(xv)
    ref = Ridge(alpha=10.0).fit(x - x[:, -1:], y - x[:, -1:])
    np.testing.assert_allclose(ours, ref.predict(xv - xv[:, -1:]) + xv[:, -1:], rtol=1e-8, atol=1e-8)


def test_linear_baseline_is_selected_on_validation_and_matches_the_reference(panel_case):
    _, split, _, panel, series = panel_case
    H = 12
    pred, record = fit_linear(panel, split, H, (24, 48))
    # Independent selection: every (lookback, alpha) fitted on loop-cut training windows, scored on
    # loop-cut validation windows; the best one must be the one chosen, with the same forecasts.
    scores = {}
    for L in (24, 48):
        x, y = loop_windows(series, [0] * 3, list(split.train_end), L, H)
        xv, yv = loop_windows(series, list(split.train_end), list(split.val_end), L, H)
        for a in LINEAR_ALPHAS:
            r = Ridge(alpha=a).fit(x - x[:, -1:], y - x[:, -1:])
            scores[(L, a)] = float(np.mean((r.predict(xv - xv[:, -1:]) + xv[:, -1:] - yv) ** 2))
    best = min(scores, key=scores.get)
    assert (record["lookback"], record["alpha"]) == best
    assert record["val_mse_std"] == pytest.approx(scores[best], rel=1e-4)
    xt, _ = loop_windows(series, list(split.val_end), [len(s) for s in series], best[0], H)
    x, y = loop_windows(series, [0] * 3, list(split.train_end), best[0], H)
    r = Ridge(alpha=best[1]).fit(x - x[:, -1:], y - x[:, -1:])
    got = pred.fn(xt[..., None].astype(np.float32))
    np.testing.assert_allclose(got, r.predict(xt - xt[:, -1:]) + xt[:, -1:], rtol=1e-4, atol=1e-4)


def test_linear_start_makes_the_untrained_model_the_ridge_baseline(panel_case):
    """`init="linear"` with zero epochs: the model forecasts what the ridge baseline forecasts."""
    df, split, _, _, _ = panel_case
    cfg = ForecasterConfig(model=ModelConfig(lookback=48, horizon=12, hidden=8, layers=1, norm="last",
                                             highway=True, init="linear"),
                           train=TrainConfig(max_epochs=0, device="cpu"), calendar=False, seasons=(24,))
    f = Forecaster(cfg)
    f.fit(df, split)
    panel = f.scaler_.transform(build_panel(df, f.cfg))
    linear, _ = fit_linear(panel, split, 12, (48,))
    ours = f.evaluate(df, split, "test").y_hat
    ref = f.evaluate(df, split, "test", predictor=linear).y_hat
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)


# --------------------------------------------------------------------------- a known process


def daily_weekly_frame(n_series: int = 4, weeks: int = 12, seed: int = 0) -> pd.DataFrame:
    """Hourly series: a daily and a weekly cycle (weekdays differ) plus AR(1) noise (phi 0.8)."""
    rng = np.random.default_rng(seed)
    n = 168 * weeks
    t = np.arange(n)
    parts = []
    for i in range(n_series):
        week = rng.normal(0, 1.5, 7)[(t // 24) % 7]  # a level per weekday
        day = rng.uniform(1, 3) * np.sin(2 * np.pi * t / 24 + rng.uniform(0, 6))
        e = np.zeros(n)
        for k in range(1, n):
            e[k] = 0.8 * e[k - 1] + rng.normal(0, 0.5)
        parts.append(pd.DataFrame({"unique_id": f"s{i}", "ds": pd.date_range("2022-01-03", periods=n, freq="h"),
                                   "y": 10 + week + day + e}))
    return pd.concat(parts, ignore_index=True)


@pytest.mark.slow
def test_tuned_gru_beats_weekly_seasonal_naive_on_a_daily_and_weekly_cycle(tmp_path):
    from forecasting.tuning.objective import tune
    from forecasting.tuning.study import TuneConfig

    df = daily_weekly_frame()
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.15, 0.15)
    H = 24
    base = ForecasterConfig(model=ModelConfig(horizon=H), freq="h", calendar=False, seasons=(24, 168),
                            train=TrainConfig(device="cpu", max_train_windows=2048, patience=2))
    space = default_space((24, 168), 336, H)
    space = replace(space, family=replace(space.own("gru"), hidden=(8, 32), layers=(1, 1)))
    cfg = TuneConfig(n_trials=3, max_epochs=4, storage=f"sqlite:///{tmp_path / 'o.db'}", seed=0)
    result = tune(df, split, base, "gru", "weekly-h24-gru", cfg, space, progress=False)
    f = Forecaster(replace(result.config, train=replace(result.config.train, max_epochs=4)))
    f.fit(df, split)
    ours = f.evaluate(df, split, "test").metrics["mse"]
    predictors, _ = f.baselines(df, split, (168,))
    snaive = {p.name: f.evaluate(df, split, "test", predictor=p).metrics["mse"] for p in predictors}
    # The noise is AR(1): a week-old value carries almost none of it, the last hours carry most.
    assert ours < 0.8 * snaive["seasonal_naive_168"], (ours, snaive)
    assert ours < snaive["seasonal_naive_24"]


# --------------------------------------------------------------------------- multiplicative data


def multiplicative_frame(n_series: int = 8, weeks: int = 12, seed: int = 0) -> pd.DataFrame:
    """Hourly demand-like series: a daily and a weekly cycle whose swings scale with a level that
    drifts as a geometric random walk (1 % per hour), with 3 % multiplicative noise."""
    rng = np.random.default_rng(seed)
    n = 168 * weeks
    t = np.arange(n)
    parts = []
    for i in range(n_series):
        level = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        day = 1 + rng.uniform(0.3, 0.6) * np.sin(2 * np.pi * t / 24 + rng.uniform(0, 2 * np.pi))
        week = 1 + rng.uniform(0.15, 0.3) * np.where((t // 24) % 7 >= 5, -1.0, 0.4)  # weekends lower
        parts.append(pd.DataFrame({"unique_id": f"s{i}", "ds": pd.date_range("2024-01-01", periods=n, freq="h"),
                                   "y": level * day * week * (1 + 0.03 * rng.normal(size=n))}))
    return pd.concat(parts, ignore_index=True)


def test_a_multiplicative_linear_start_is_the_ridge_on_log_windows():
    """`multiplicative` with zero epochs forecasts sigma exp(ridge of the last-value-normalized log
    window): the ridge refitted here with scikit-learn on loop-cut windows of log(y / sigma)."""
    from forecasting.core.baselines import best_ridge

    df = multiplicative_frame(n_series=3, weeks=6)
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.15, 0.15)
    L, H = 48, 12
    cfg = ForecasterConfig(model=ModelConfig(lookback=L, horizon=H, hidden=8, layers=1, norm="last", highway=True,
                                             init="linear", multiplicative=True),
                           train=TrainConfig(max_epochs=0, device="cpu"), calendar=False, seasons=(24,))
    f = Forecaster(cfg)
    f.fit(df, split)
    assert f.cfg.model.multiplicative and f.cfg.level_input
    raw = [g["y"].to_numpy() for _, g in df.groupby("unique_id", sort=False)]
    logs = [np.log(y / s) for y, s in zip(raw, f.scaler_.std[:, 0], strict=True)]  # log(x + c)
    x, y = loop_windows(logs, [0] * 3, list(split.train_end), L, H)
    xv, yv = loop_windows(logs, list(split.train_end), list(split.val_end), L, H)
    ridge, _ = best_ridge(x - x[:, -1:], y - x[:, -1:], xv - xv[:, -1:], yv - xv[:, -1:])
    ref_alpha = min(LINEAR_ALPHAS, key=lambda a: np.mean(
        (Ridge(alpha=a).fit(x - x[:, -1:], y - x[:, -1:]).predict(xv - xv[:, -1:]) - (yv - xv[:, -1:])) ** 2))
    assert ridge.alpha == ref_alpha
    xt, _ = loop_windows(logs, list(split.val_end), [len(s) for s in logs], L, H)
    r = Ridge(alpha=ref_alpha).fit(x - x[:, -1:], y - x[:, -1:])
    sigma = np.repeat(f.scaler_.std[:, 0], [len(s) - int(e) - H + 1 for s, e in zip(logs, split.val_end, strict=True)])
    want = sigma[:, None] * np.exp(r.predict(xt - xt[:, -1:]) + xt[:, -1:])  # forecasts in original units
    np.testing.assert_allclose(f.evaluate(df, split, "test").y_hat, want, rtol=1e-4)


@pytest.mark.slow
def test_on_a_multiplicative_daily_and_weekly_panel_the_tuned_model_beats_mstl_and_the_ridge(tmp_path):
    """Swings that grow with a drifting level: additive models (the ridge, MSTL) cannot scale them;
    the search finds the multiplicative form on validation, and it wins on the test part."""
    from forecasting.core.windows import make_windows
    from forecasting.stats.predictors import stats_predictor
    from forecasting.tuning.objective import tune
    from forecasting.tuning.study import TuneConfig

    df = multiplicative_frame()
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.15, 0.15)
    H = 24
    base = ForecasterConfig(model=ModelConfig(horizon=H), freq="h", calendar=False, seasons=(24, 168),
                            train=TrainConfig(device="cpu", max_train_windows=2048, patience=2))
    space = replace(default_space((24, 168), 336, H), lookbacks=(168, 336), losses=("mae",))
    space = replace(space, family=replace(space.own("gru"), hidden=(8, 32), layers=(1, 1)))
    cfg = TuneConfig(n_trials=4, max_epochs=4, storage=f"sqlite:///{tmp_path / 'o.db'}", seed=0)
    result = tune(df, split, base, "gru", "multiplicative-h24-gru", cfg, space, progress=False)
    f = Forecaster(replace(result.config, train=replace(result.config.train, max_epochs=4)))
    f.fit(df, split)
    assert f.cfg.model.multiplicative  # chosen on validation

    def test_mase(p):  # every 24th test window (MSTL reads each window anew: one per day keeps this quick)
        w = make_windows(f.panel(df), p.lookback, H, split, "test", stride=24)
        x, y = w.arrays()
        return f._evaluation(w, y, p(x, w.series_index)).metrics["mase"]

    (*_, linear), _ = f.baselines(df, split, (168, 336))
    raw = build_panel(df, replace(f.cfg, level_input=False))
    mstl = stats_predictor("mstl", raw, split, f.scaler_.mean[:, 0], f.scaler_.std[:, 0], H, 336, (24, 168))
    ours, ridge, ms = test_mase(f.predictor()), test_mase(linear), test_mase(mstl)
    print(f"\ntest MASE: tuned {f.cfg.family} {ours:.4f}, ridge {ridge:.4f}, MSTL {ms:.4f}")
    assert ours < 0.95 * ridge and ours < 0.95 * ms, (ours, ridge, ms)
