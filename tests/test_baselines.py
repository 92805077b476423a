"""Naive and seasonal-naive forecasts; seasonal period from the frequency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forecasting.core.baselines import naive, season_length, seasonal_naive


def test_seasonal_naive_exact_on_periodic_series():
    rng = np.random.default_rng(0)
    period, L, H = 24, 60, 50  # L not a multiple of the period, H longer than one period
    pattern = rng.normal(size=period)
    y = pattern[np.arange(200) % period]
    for start in (0, 5, 31, 77):
        hist = y[start:start + L]
        np.testing.assert_array_equal(seasonal_naive(hist, H, period), y[start + L:start + L + H])
    # Batched over leading dimensions [B, L] -> [B, H].
    batch = np.stack([y[s:s + L] for s in range(10)])
    out = seasonal_naive(batch, H, period)
    assert out.shape == (10, H)
    np.testing.assert_array_equal(out, np.stack([y[s + L:s + L + H] for s in range(10)]))


def test_seasonal_naive_hand_example():
    hist = np.arange(10.0)
    np.testing.assert_array_equal(seasonal_naive(hist, 5, 3), [7, 8, 9, 7, 8])
    np.testing.assert_array_equal(seasonal_naive(hist, 2, 4), [6, 7])
    np.testing.assert_array_equal(seasonal_naive(hist, 3, 1), [9, 9, 9])  # period 1 is naive
    np.testing.assert_array_equal(seasonal_naive(hist, 4, 10), [0, 1, 2, 3])


def test_seasonal_naive_errors():
    with pytest.raises(ValueError, match="positive"):
        seasonal_naive(np.arange(5.0), 2, 0)
    with pytest.raises(ValueError, match="shorter than the period"):
        seasonal_naive(np.arange(5.0), 2, 6)


def test_naive():
    hist = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    np.testing.assert_array_equal(naive(hist, 2), [[3, 3], [6, 6]])
    np.testing.assert_array_equal(naive(np.array([7.0, -1.0]), 3), [-1, -1, -1])


@pytest.mark.parametrize(
    ("freq", "period"),
    [("h", 24), ("D", 7), ("15min", 96), ("2h", 12), ("min", 1440), ("B", 5), ("W", 52), ("MS", 12), ("QE", 4)],
)
def test_season_length(freq, period):
    assert season_length(freq) == period


def test_a_ridge_start_is_fitted_once_per_process_for_the_same_windows(monkeypatch):
    """Trials with the same lookback (and the refit on the same data) reuse the ridge start; other
    data, windows or normalization fit anew; callers get copies they may change."""
    from forecasting.core import baselines
    from forecasting.core.windows import make_windows, panel_from_long

    calls = []
    real = baselines.best_ridge
    monkeypatch.setattr(baselines, "best_ridge", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(baselines, "_STARTS", type(baselines._STARTS)())

    def windows(scale: float = 1.0, lookback: int = 24):
        import pandas as pd

        rng = np.random.default_rng(0)
        y = scale * (np.sin(np.arange(300) * 2 * np.pi / 24) + 0.1 * rng.normal(size=300))
        df = pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2024-01-01", periods=300, freq="h"), "y": y})
        panel = panel_from_long(df, "h")  # a new panel object every call
        w = make_windows(panel, lookback, 6)
        return baselines.Windows(panel, lookback, 6, w.starts[:200]), baselines.Windows(panel, lookback, 6, w.starts[200:])

    first = baselines.linear_start(*windows(), "last")
    first[0].zero_()  # the caller's copy
    again = baselines.linear_start(*windows(), "last")
    assert len(calls) == 1 and again[0].abs().sum() > 0
    fresh = baselines._fit_linear_start(*windows(), "last", False)
    torch.testing.assert_close(again, fresh)
    baselines.linear_start(*windows(scale=2.0), "last")  # other values
    baselines.linear_start(*windows(lookback=48), "last")  # other windows
    baselines.linear_start(*windows(), "standard")  # other normalization
    assert len(calls) == 5  # the first, the direct fit beside it, and the three others
