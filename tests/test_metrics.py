"""Point metrics against hand-computed values on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from forecasting.core.metrics import mae, mase, mse, prefix_scales, rmse, series_scale, smape

Y = np.array([1.0, 2.0, 3.0, 4.0])
Y_HAT = np.array([2.0, 2.0, 1.0, 8.0])  # errors 1, 0, -2, 4


def test_mae_mse_rmse():
    assert mae(Y, Y_HAT) == pytest.approx(7 / 4)
    assert mse(Y, Y_HAT) == pytest.approx(21 / 4)
    assert rmse(Y, Y_HAT) == pytest.approx(math.sqrt(21 / 4))
    assert mae(Y, Y) == 0.0 and mse(Y, Y) == 0.0
    assert isinstance(mae(Y, Y_HAT), float)


def test_metrics_average_over_all_elements_of_2d_arrays():
    y = np.array([[1.0, 2.0], [3.0, 4.0]])
    y_hat = np.array([[1.0, 4.0], [0.0, 4.0]])  # errors 0, -2, 3, 0
    assert mae(y, y_hat) == pytest.approx(5 / 4)
    assert mse(y, y_hat) == pytest.approx(13 / 4)


def test_smape_m4_definition():
    # 200*|e|/(|y|+|yhat|): 200*1/3, 0, 200*2/4, 200*4/12 -> mean 175/3.
    assert smape(Y, Y_HAT) == pytest.approx(175 / 3)
    assert smape([-1.0], [1.0]) == pytest.approx(200.0)  # absolute values in the denominator
    assert smape([0.0], [5.0]) == pytest.approx(200.0)
    assert smape([0.0, 2.0], [0.0, 2.0]) == 0.0  # 0/0 counts as 0, no NaN
    assert smape([0.0, 1.0], [0.0, 3.0]) == pytest.approx((0 + 100) / 2)


def test_series_scale_and_its_one_fallback_rule():
    ins = np.array([1.0, 3.0, 2.0, 5.0, 4.0, 6.0])
    assert series_scale(ins, 1) == pytest.approx((2 + 1 + 3 + 1 + 2) / 5)
    assert series_scale(ins, 2) == pytest.approx((1 + 2 + 2 + 1) / 4)
    assert series_scale(ins, 5) == pytest.approx(5.0)
    # Too short for the season (6 points, m = 6): the naive scale (m = 1), not an error.
    assert series_scale(ins, 6) == pytest.approx((2 + 1 + 3 + 1 + 2) / 5)
    # A zero seasonal scale falls back to the naive one, a flat series to 1% of its level, zeros to 1.
    assert series_scale(np.array([5.0, 1.0, 5.0, 1.0]), 2) == pytest.approx(4.0)
    assert series_scale(np.array([10.0, 10.0, 10.0]), 2) == pytest.approx(0.1)
    assert series_scale(np.zeros(4), 2) == 1.0


def test_prefix_scales_equal_the_scale_of_each_prefix():
    y = np.random.default_rng(3).normal(size=40).cumsum()
    y[[5, 6]] = 7.0  # a flat stretch
    n = np.array([1, 2, 3, 8, 9, 25, 40])
    assert prefix_scales(y, n, 7) == pytest.approx([series_scale(y[:k], 7) for k in n])


def test_mase_scalar_scale():
    scale = series_scale(np.array([1.0, 3.0, 2.0, 5.0, 4.0, 6.0]), 2)  # 1.5
    assert mase(Y, Y_HAT, scale) == pytest.approx(1.75 / 1.5)


def test_mase_per_row_scale():
    y = np.array([[1.0, 2.0], [3.0, 4.0]])
    y_hat = np.array([[1.0, 1.0], [3.0, 6.0]])  # |e| rows: [0, 1], [0, 2]
    scale = np.array([0.5, 2.0])  # -> [0, 2], [0, 1]
    assert mase(y, y_hat, scale) == pytest.approx(3 / 4)
    # A scale per row is not the same as a single averaged scale.
    assert mase(y, y_hat, scale.mean()) == pytest.approx(3 / 4 / 1.25)


def test_mase_of_seasonal_naive_in_sample_is_one():
    # Seasonal naive evaluated in-sample has MASE exactly 1 by construction.
    rng = np.random.default_rng(0)
    ins = rng.normal(size=50)
    m = 7
    assert mase(ins[m:], ins[:-m], series_scale(ins, m)) == pytest.approx(1.0)
