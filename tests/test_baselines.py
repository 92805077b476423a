"""Naive and seasonal-naive forecasts; seasonal period from the frequency."""

from __future__ import annotations

import numpy as np
import pytest

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
