"""Conformal prediction intervals against analytic references, and the interval metrics by hand."""

from __future__ import annotations

import json

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from forecasting.core.intervals import (
    RESIDUAL,
    SEASONAL,
    Conformal,
    add_intervals,
    backtest_intervals,
    calibrate,
    calibrate_backtest,
    choose_calibration,
    column,
    history_scales,
    interval_columns,
    residual_scales,
    series_scale,
    split_windows,
)
from forecasting.core.metrics import coverage, interval_metrics, interval_pinball, msis, scaled_pinball
from forecasting.core.plots import fan_chart, fan_figure

PHI, SIGMA, H = 0.7, 2.0, 12
LEVELS = (80, 95)


def ar1_windows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n independent AR(1) windows: the true conditional-mean forecast φ^h·y_T [n, H] and the path [n, H]."""
    rng = np.random.default_rng(seed)
    y = rng.normal(0.0, SIGMA / np.sqrt(1 - PHI**2), n)  # y_T from the stationary law
    f = y[:, None] * PHI ** np.arange(1, H + 1)  # [n, H]
    path = np.empty((n, H))
    for h in range(H):
        y = PHI * y + rng.normal(0.0, SIGMA, n)
        path[:, h] = y
    return f, path


def analytic_halfwidth(level: int) -> np.ndarray:
    """σ·sqrt(Σ_{k<h} φ^{2k})·z_{(1+level)/2} for h = 1..H."""
    sd = SIGMA * np.sqrt(np.cumsum(PHI ** (2 * np.arange(H))))
    return sd * norm.ppf((1 + level / 100) / 2)


@pytest.fixture(scope="module")
def ar1_conformal() -> Conformal:
    f, y = ar1_windows(50_000, seed=1)
    return calibrate(y - f, LEVELS, season=1)


def test_ar1_quantiles_match_the_gaussian_forecast_error(ar1_conformal):
    # 50,000 windows: the sample quantile's standard error is about 1.7 % (95) and 1.0 % (80) of σ_h.
    for i, (lv, tol) in enumerate(zip(LEVELS, (0.03, 0.05), strict=True)):
        np.testing.assert_allclose(ar1_conformal.q[i], analytic_halfwidth(lv), rtol=tol)
    assert ar1_conformal.n_calibration == 50_000 and ar1_conformal.horizon == H


def test_ar1_coverage_on_fresh_windows(ar1_conformal):
    f, y = ar1_windows(40_000, seed=2)
    ids = np.repeat(np.arange(len(f)).astype(str), H)
    frame = add_intervals(pd.DataFrame({"unique_id": ids, "y_hat": f.reshape(-1)}),
                          pd.Series(1.0, index=np.unique(ids)), ar1_conformal)
    for lv in LEVELS:
        lo, hi = (frame[column(lv, s)].to_numpy().reshape(f.shape) for s in ("lo", "hi"))
        per_step = ((y >= lo) & (y <= hi)).mean(axis=0)  # [H], binomial sd <= 0.2 % over 40,000 windows
        assert np.abs(per_step - lv / 100).max() < 0.012, (lv, per_step)
        assert coverage(y, lo, hi) == pytest.approx(lv / 100, abs=0.006)


def test_bands_nest_and_the_point_forecast_is_unchanged():
    rng = np.random.default_rng(0)
    resid = rng.standard_t(3, size=(300, 6))
    conf = calibrate(resid, (95, 80, 50), season=24)
    assert conf.levels == (50, 80, 95)
    assert (np.diff(conf.q, axis=0) >= 0).all()
    fc = pd.DataFrame({"unique_id": np.repeat(["a", "b"], 6), "ds": np.tile(pd.date_range("2024", periods=6,
                       freq="h"), 2), "y_hat": rng.normal(size=12)})
    out = add_intervals(fc, {"a": 1.0, "b": 30.0}, conf)
    assert out["y_hat"].equals(fc["y_hat"])
    assert list(out.columns[-6:]) == interval_columns((50, 80, 95))
    cols = [column(95, "lo"), column(80, "lo"), column(50, "lo"), "y_hat",
            column(50, "hi"), column(80, "hi"), column(95, "hi")]
    assert (np.diff(out[cols].to_numpy(), axis=1) >= 0).all()
    # per-series scale: b's band is 30 times a's
    w = out[column(95, "hi")] - out[column(95, "lo")]
    np.testing.assert_allclose(w[6:].to_numpy(), 30 * w[:6].to_numpy())


def test_finite_sample_rank_and_too_few_residuals():
    r = np.arange(1.0, 20.0)[:, None]  # n = 19 residuals 1..19 at one step
    conf = calibrate(r, (80, 95), season=1)
    assert conf.q[:, 0].tolist() == [16.0, 19.0]  # ceil(20·0.8) = 16th, ceil(20·0.95) = 19th smallest
    with pytest.raises(ValueError, match="level 95 .* n=18"):
        calibrate(r[:18], (95,), season=1)


# --------------------------------------------------------------------------- metrics by hand

Y = np.array([[10.0, 12.0, 8.0], [1.0, 5.0, 2.0]])
LO = np.array([[9.0, 9.0, 9.0], [0.0, 0.0, 3.0]])
HI = np.array([[11.0, 11.0, 11.0], [4.0, 4.0, 4.0]])
SCALE = np.array([2.0, 0.5])  # per row


def test_msis_by_hand():
    # level 80: α = 0.2, 2/α = 10. Row 0 (width 2): 2, 2 + 10·1, 2 + 10·1 -> /2: 1, 6, 6.
    # Row 1: width 4 -> 4, 4 + 10·1 = 14; width 1 and 3 − 2 = 1 below -> 1 + 10 = 11; /0.5: 8, 28, 22.
    assert msis(Y, LO, HI, SCALE, level=80) == pytest.approx((1 + 6 + 6 + 8 + 28 + 22) / 6)
    # level 95: 2/α = 40: row 0: 2, 42, 42 (/2: 1, 21, 21); row 1: 4, 44, 41 (/0.5: 8, 88, 82).
    assert msis(Y, LO, HI, SCALE) == pytest.approx((1 + 21 + 21 + 8 + 88 + 82) / 6)


def test_coverage_and_pinball_by_hand():
    assert coverage(Y, LO, HI) == pytest.approx(2 / 6)  # 10 and 1 inside
    assert coverage([1.0, 2.0], [1.0, 0.0], [3.0, 1.0]) == 0.5  # ends count as inside
    # τ = 0.1 on LO: d = y − lo = 1, 3, −1 | 1, 5, −1 -> 0.1, 0.3, 0.9 | 0.1, 0.5, 0.9; scaled /2 | /0.5
    lo_loss = (0.05 + 0.15 + 0.45 + 0.2 + 1.0 + 1.8) / 6
    # τ = 0.9 on HI: d = −1, 1, −3 | −3, 1, −2 -> 0.1, 0.9, 0.3 | 0.3, 0.9, 0.2; scaled
    hi_loss = (0.05 + 0.45 + 0.15 + 0.6 + 1.8 + 0.4) / 6
    assert scaled_pinball(Y, LO, 0.1, SCALE) == pytest.approx(lo_loss)
    assert scaled_pinball(Y, HI, 0.9, SCALE) == pytest.approx(hi_loss)
    assert interval_pinball(Y, LO, HI, 80, SCALE) == pytest.approx((lo_loss + hi_loss) / 2)
    m = interval_metrics(Y, {80: (LO, HI)}, SCALE)
    assert m == pytest.approx({"coverage_80": 2 / 6, "msis_80": 71 / 6, "pinball_80": (lo_loss + hi_loss) / 2})


# --------------------------------------------------------------------------- backtest calibration


def _history(future: float) -> pd.DataFrame:
    """Series a (season 2) and a flat series b; `future` sits after every cutoff."""
    ds = pd.date_range("2024-01-01", periods=9, freq="h")
    a = [1.0, 3.0, 2.0, 6.0, 4.0, 10.0, 5.0, future, future]
    b = [10.0] * 5 + [future] * 4
    return pd.DataFrame({"unique_id": ["a"] * 9 + ["b"] * 9, "ds": list(ds) * 2, "y": a + b})


def _cv_frame() -> pd.DataFrame:
    ds = pd.date_range("2024-01-01", periods=9, freq="h")
    rows = []
    # a, cutoff row 4: scale mean(|2−1|, |6−3|, |4−2|) = 2; residuals 2, −4, 6 -> 1, −2, 3
    rows += [("a", ds[5 + h], ds[4], 0.0, -e) for h, e in enumerate([2.0, -4.0, 6.0])]
    # a, cutoff row 5: the diffs add |10 − 6| = 4 -> scale 2.5; residuals 5, −5, 10 -> 2, −2, 4
    rows += [("a", ds[6 + h], ds[5], 0.0, -e) for h, e in enumerate([5.0, -5.0, 10.0])]
    # b, cutoff row 4: flat history -> 1 % of its level 10 = 0.1; residuals 0.1, 0.2, −0.3 -> 1, 2, −3
    rows += [("b", ds[5 + h], ds[4], 0.0, -e) for h, e in enumerate([0.1, 0.2, -0.3])]
    frame = pd.DataFrame(rows, columns=["unique_id", "ds", "cutoff", "y", "y_hat"])
    return frame.sample(frac=1.0, random_state=0)  # steps come from ds, not from row order


def test_calibrate_backtest_steps_and_scales_at_each_cutoff():
    conf = calibrate_backtest(_cv_frame(), _history(future=100.0), (50, 75), season=2)
    # |scaled| per step: (1, 2, 1), (2, 2, 2), (3, 4, 3); n = 3: level 50 -> 2nd smallest, 75 -> 3rd
    np.testing.assert_allclose(conf.q, [[1, 2, 3], [2, 2, 4]])
    assert conf.n_calibration == 3
    # values after the cutoffs do not move the scales
    leaked = calibrate_backtest(_cv_frame(), _history(future=1e6), (50, 75), season=2)
    np.testing.assert_allclose(leaked.q, conf.q)


def test_series_scale_and_fallbacks():
    assert series_scale(np.array([1.0, 3.0, 2.0, 6.0, 4.0]), 2) == pytest.approx(2.0)
    assert series_scale(np.array([1.0, 2.0, 4.0]), 24) == pytest.approx(1.5)  # too short: naive diffs
    assert series_scale(np.array([5.0, 1.0, 5.0, 1.0]), 2) == pytest.approx(4.0)  # seasonal 0 -> naive
    assert series_scale(np.array([10.0, 10.0, 10.0]), 2) == pytest.approx(0.1)  # flat -> 1 % of level
    assert series_scale(np.zeros(4), 2) == 1.0
    s = history_scales(_history(future=100.0), 2)
    assert s["a"] == pytest.approx(series_scale(_history(100.0).query("unique_id == 'a'")["y"].to_numpy(), 2))


def test_round_trip_and_missing_level():
    conf = calibrate(np.random.default_rng(3).normal(size=(100, 4)), LEVELS, season=24)
    again = Conformal.from_dict(json.loads(json.dumps(conf.to_dict())))
    assert again == conf
    fc = pd.DataFrame({"unique_id": ["a"] * 4, "y_hat": np.zeros(4)})
    with pytest.raises(ValueError, match="level 90 was not calibrated"):
        add_intervals(fc, {"a": 1.0}, conf, levels=(80, 90))
    with pytest.raises(ValueError, match="no scale for series"):
        add_intervals(fc, {"b": 1.0}, conf)


# --------------------------------------------------------------------------- residual (normalized) mode


def ar1_panel(sigmas: np.ndarray, trends: np.ndarray, n_windows: int, h: int, hist: int, seed: int
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Series y_t = b_i·t + x_t, x an AR(1) (φ = 0.5) with Gaussian noise σ_i, and the oracle forecasts
    b_i·(c + k) + φ^k·x_c from `n_windows` cutoffs c, h apart, after `hist` rows: (history, cv frame).
    A trend moves the seasonal scale (m·b_i) but not the forecast error (σ_i)."""
    rng, phi = np.random.default_rng(seed), 0.5
    T, ds = hist + n_windows * h, pd.date_range("2000-01-01", periods=hist + n_windows * h, freq="h")
    hists, cvs = [], []
    for i, (sigma, b) in enumerate(zip(sigmas, trends, strict=True)):
        e = rng.normal(0.0, sigma, T)
        x = np.empty(T)
        x[0] = e[0] / np.sqrt(1 - phi**2)
        for t in range(1, T):
            x[t] = phi * x[t - 1] + e[t]
        y = b * np.arange(T) + x
        hists.append(pd.DataFrame({"unique_id": f"s{i}", "ds": ds, "y": y}))
        c = hist - 1 + h * np.arange(n_windows)[:, None]  # [W, 1] cutoff rows
        k = np.arange(1, h + 1)  # [h]
        cvs.append(pd.DataFrame({"unique_id": f"s{i}", "ds": ds[(c + k).ravel()], "cutoff": ds[np.repeat(c[:, 0], h)],
                                 "y": y[(c + k).ravel()], "y_hat": (b * (c + k) + phi**k * x[c]).ravel()}))
    return pd.concat(hists, ignore_index=True), pd.concat(cvs, ignore_index=True)


def _split_at(cv: pd.DataFrame, n_cal: int, h: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    edge = cv["cutoff"].min() + pd.Timedelta(hours=n_cal * h)
    return cv[cv["cutoff"] < edge], cv[cv["cutoff"] >= edge]


def _msis_95(frame: pd.DataFrame, history: pd.DataFrame) -> float:
    scale = frame["unique_id"].map(history_scales(history, 4)).to_numpy()
    return msis(frame["y"], frame[column(95, "lo")], frame[column(95, "hi")], scale, 95)


@pytest.fixture(scope="module")
def uneven_panel():
    """40 series, noise σ from 0.1 to 10 and the same trend: σ / seasonal scale spans ~40 times."""
    sig = np.geomspace(0.1, 10.0, 40)
    hist, cv = ar1_panel(sig, np.ones(40), n_windows=80, h=4, hist=400, seed=0)
    return hist, *_split_at(cv, 30, 4)


def test_residual_mode_covers_noisy_and_quiet_series_alike(uneven_panel):
    hist, cal, test = uneven_panel
    cov, score = {}, {}
    for mode in (SEASONAL, RESIDUAL):
        frame = backtest_intervals(test, hist, calibrate_backtest(cal, hist, LEVELS, 4, mode=mode), LEVELS)
        inside = (frame["y"] >= frame[column(95, "lo")]) & (frame["y"] <= frame[column(95, "hi")])
        per = inside.groupby(frame["unique_id"], sort=False).mean().to_numpy()  # [40], σ ascending
        cov[mode] = (per[:5].mean(), per[-5:].mean())  # quietest 5, noisiest 5: 1,000 points each
        score[mode] = _msis_95(frame, hist)
    # reference: one pooled quantile of seasonally scaled residuals over-covers the quiet, under-covers the noisy
    assert cov[SEASONAL][0] > 0.99 and cov[SEASONAL][1] < 0.85, cov
    assert abs(cov[RESIDUAL][0] - 0.95) < 0.03 and abs(cov[RESIDUAL][1] - 0.95) < 0.03, cov
    assert score[RESIDUAL] < 0.8 * score[SEASONAL], score


def test_chooser_picks_by_score_on_calibration_windows_only(uneven_panel):
    hist, cal, _ = uneven_panel
    conf = choose_calibration(cal, hist, LEVELS, 4)
    assert conf.mode == RESIDUAL and conf.choice["chosen"] == RESIDUAL
    msis_of = conf.choice["validation_msis"]
    assert msis_of[RESIDUAL] < msis_of[SEASONAL] and conf.choice["level"] == 95
    # σ_i proportional to the seasonal scale (no trend) and long histories: the seasonal scale is
    # exact, while each series' own residual scale comes from 24 residuals and only adds noise
    hist2, cv2 = ar1_panel(np.geomspace(0.1, 10.0, 200), np.zeros(200), n_windows=9, h=4, hist=2000, seed=1)
    conf2 = choose_calibration(cv2, hist2, LEVELS, 4)
    assert conf2.mode == SEASONAL and conf2.choice["validation_msis"][SEASONAL] < conf2.choice["validation_msis"][RESIDUAL]
    assert conf2.choice["windows"] == {"calibrate": 200 * 6, "score": 200 * 3}
    # the same choice and calibration whatever follows the calibration windows in the history
    later = hist2.assign(y=np.where(hist2["ds"] > cv2["ds"].max(), 1e6, hist2["y"]))
    assert choose_calibration(cv2, later, LEVELS, 4) == conf2


def test_split_windows_scores_later_windows_after_the_calibrating_ones():
    ds = pd.date_range("2024-01-01", periods=20, freq="h")
    cv = pd.DataFrame([("a", ds[c + k], ds[c], 0.0, 0.0) for c in range(2, 11) for k in (1, 2)],
                      columns=["unique_id", "ds", "cutoff", "y", "y_hat"])  # 9 windows one row apart, H = 2
    early, late = split_windows(cv, 1 / 3)
    assert sorted(late["cutoff"].unique()) == list(ds[8:11])  # the last 3
    # the window at cutoff 7 targets rows 8-9, shared with the first scored window: dropped
    assert sorted(early["cutoff"].unique()) == list(ds[2:7])
    assert early["ds"].max() < late["ds"].min()


def _tiny() -> tuple[pd.DataFrame, pd.DataFrame]:
    ds = pd.date_range("2024-01-01", periods=10, freq="h")
    hist = pd.DataFrame({"unique_id": ["a"] * 10 + ["b"] * 10, "ds": list(ds) * 2,
                         "y": [1.0, 3, 2, 6, 4, 10, 5, 9, 0, 0] + [0.0, 2, 0, 4, 0, 0, 0, 0, 0, 0]})
    rows = [("a", ds[c + k], ds[c], e) for c, es in ((3, (1, -3)), (5, (2, 2)), (7, (-6, 0)))
            for k, e in zip((1, 2), es, strict=True)]
    rows += [("b", ds[3 + k], ds[3], e) for k, e in zip((1, 2), (0.5, -1.0), strict=True)]
    cv = pd.DataFrame(rows, columns=["unique_id", "ds", "cutoff", "y"]).assign(y_hat=0.0)
    return hist, cv


def test_leave_window_out_scales_by_hand():
    hist, cv = _tiny()
    conf = calibrate_backtest(cv, hist, (50, 75), season=2, mode=RESIDUAL)
    # a: |e| sums 4, 4, 6 over 2 steps each -> full mean 14/6; leave-one-out 10/4, 10/4, 8/4.
    # Seasonal scale of a up to its last cutoff (row 7): lag-2 diffs 1, 3, 2, 4, 1, 1 -> 2; ratio (7/3)/2.
    assert conf.series_scales == pytest.approx({"a": 7 / 3}) and conf.unseen_ratio == pytest.approx(7 / 6)
    # b has one window (nothing to leave out): seasonal scale up to row 3 (diffs 0, 2 -> 1) × ratio = 7/6.
    # Scaled |e| per step: a 0.4, 0.8, 3 | 1.2, 0.8, 0; b 3/7 | 6/7. n = 4: level 50 -> 3rd, 75 -> 4th.
    np.testing.assert_allclose(conf.q, [[0.8, 6 / 7], [3.0, 1.2]])
    fc = pd.DataFrame({"unique_id": ["a", "a", "b", "b", "c", "c"], "y_hat": 0.0})
    out = add_intervals(fc, {"a": 99.0, "b": 1.0, "c": 3.0}, conf)  # a's seasonal scale is not used
    np.testing.assert_allclose(out[column(75, "hi")], [3 * 7 / 3, 1.2 * 7 / 3, 3 * 7 / 6, 1.2 * 7 / 6,
                                                       3 * 3 * 7 / 6, 1.2 * 3 * 7 / 6])


def test_overlapping_windows_are_left_out_together():
    # one series, H = 2, cutoffs one row apart: window j shares targets with j ± 1
    w = pd.DataFrame({"unique_id": "a", "cutoff": pd.date_range("2024", periods=4, freq="h")})
    w["first"], w["last"] = w["cutoff"] + pd.Timedelta("1h"), w["cutoff"] + pd.Timedelta("2h")
    w["seasonal"] = 2.0
    grid = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, -3.0], [0.0, 4.0]])
    loo, full, ratio = residual_scales(grid, w)
    np.testing.assert_allclose(loo, [(6 + 4) / 4, 4 / 2, 2 / 2, (2 + 4) / 4])
    assert full == pytest.approx({"a": 16 / 8}) and ratio == pytest.approx(1.0)
    # a zero scale falls back to seasonal × ratio
    loo0, _, _ = residual_scales(np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]), w)
    assert loo0[2] == pytest.approx(2.0 * 0.5 / 2.0) and (loo0 > 0).all()


def test_residual_round_trip_and_old_files_load_as_seasonal():
    hist, cv = _tiny()
    conf = choose_calibration(cv, hist, (50,), season=2)
    again = Conformal.from_dict(json.loads(json.dumps(conf.to_dict())))
    assert again == conf and again.choice == conf.choice
    assert conf.choice["windows"] == {"calibrate": 2, "score": 2} and set(conf.choice["validation_msis"]) == {
        SEASONAL, RESIDUAL}
    alone = choose_calibration(cv[cv["unique_id"] == "b"], hist, (50,), season=2)  # one window: nothing to choose on
    assert alone.mode == SEASONAL and alone.choice["fallback"] == "no earlier windows to calibrate on"
    res = calibrate_backtest(cv, hist, (50, 75), season=2, mode=RESIDUAL)
    assert Conformal.from_dict(json.loads(json.dumps(res.to_dict()))) == res
    old = {"levels": [80], "quantiles": [[1.0, 2.0]], "season": 24, "n_calibration": 30, "scaled": True}
    conf_old = Conformal.from_dict(old)
    assert conf_old.mode == SEASONAL and conf_old.series_scales is None and conf_old.choice is None
    out = add_intervals(pd.DataFrame({"unique_id": ["a", "a"], "y_hat": 0.0}), {"a": 3.0}, conf_old)
    np.testing.assert_allclose(out[column(80, "hi")], [3.0, 6.0])


@pytest.mark.parametrize("mode", [SEASONAL, RESIDUAL])
def test_nested_levels_never_cross(mode, uneven_panel):
    hist, cal, test = uneven_panel
    levels = (50, 80, 95, 99)
    frame = backtest_intervals(test, hist, calibrate_backtest(cal, hist, levels, 4, mode=mode), levels)
    cols = [column(lv, "lo") for lv in reversed(levels)] + ["y_hat"] + [column(lv, "hi") for lv in levels]
    assert (np.diff(frame[cols].to_numpy(), axis=1) >= 0).all()


# --------------------------------------------------------------------------- fan chart


def test_fan_chart_png_on_dates(tmp_path):
    ds = pd.date_range("2016-07-01", periods=200, freq="h")
    rng = np.random.default_rng(0)
    hist = pd.DataFrame({"unique_id": np.repeat(["HUFL", "OT", "LULL"], 176), "ds": list(ds[:176]) * 3,
                         "y": rng.normal(size=528).cumsum()})
    fc = pd.DataFrame({"unique_id": np.repeat(["HUFL", "OT", "LULL"], 24), "ds": list(ds[176:]) * 3,
                       "y_hat": np.zeros(72)})
    conf = calibrate(rng.normal(size=(200, 24)), LEVELS, season=24)
    fc = add_intervals(fc, history_scales(hist, 24), conf)
    actual = pd.DataFrame({"unique_id": "OT", "ds": ds[176:190], "y": np.ones(14)})
    path = fan_chart(tmp_path / "fan.png", hist, fc, LEVELS, actuals=actual, series=["OT"], n_series=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = fan_figure(hist, fc, LEVELS, actuals=actual, series=["OT"], n_series=2)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes][0] == "OT" and len(axes) == 2
    left, right = (mdates.num2date(x).replace(tzinfo=None) for x in axes[0].get_xlim())
    assert pd.Timestamp("2016-07-01") <= left < pd.Timestamp(ds[176 - 96]) and right >= ds[-1] - pd.Timedelta("1h")
