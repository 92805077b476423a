"""Conformal prediction intervals against analytic references, and the interval metrics by hand."""

from __future__ import annotations

import json

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from forecasting.intervals import (
    Conformal,
    add_intervals,
    calibrate,
    calibrate_backtest,
    column,
    history_scales,
    interval_columns,
    series_scale,
)
from forecasting.metrics import coverage, interval_metrics, interval_pinball, msis, scaled_pinball
from forecasting.plots import fan_chart, fan_figure

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
