"""Point-forecast metrics. Arrays broadcast; means run over every element."""

from __future__ import annotations

import numpy as np


def mae(y: np.ndarray, y_hat: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y) - np.asarray(y_hat))))


def mse(y: np.ndarray, y_hat: np.ndarray) -> float:
    return float(np.mean((np.asarray(y) - np.asarray(y_hat)) ** 2))


def rmse(y: np.ndarray, y_hat: np.ndarray) -> float:
    return float(np.sqrt(mse(y, y_hat)))


def smape(y: np.ndarray, y_hat: np.ndarray) -> float:
    """M4 sMAPE in percent: mean of 200·|y − ŷ| / (|y| + |ŷ|); a 0/0 term counts as 0."""
    y, y_hat = np.asarray(y, dtype=np.float64), np.asarray(y_hat, dtype=np.float64)
    num = 200.0 * np.abs(y - y_hat)
    den = np.abs(y) + np.abs(y_hat)
    return float(np.mean(np.divide(num, den, out=np.zeros_like(num), where=den > 0)))


def seasonal_scale(insample: np.ndarray, m: int = 1) -> float:
    """MASE denominator: mean |y_t − y_{t−m}| over the in-sample (training) part."""
    insample = np.asarray(insample, dtype=np.float64)
    if len(insample) <= m:
        raise ValueError(f"in-sample part has {len(insample)} points, needs more than m={m}")
    return float(np.mean(np.abs(insample[m:] - insample[:-m])))


def mase(y: np.ndarray, y_hat: np.ndarray, scale: float | np.ndarray) -> float:
    """Mean absolute error divided by the seasonal-naive in-sample scale (per row if an array)."""
    err = np.abs(np.asarray(y, dtype=np.float64) - np.asarray(y_hat, dtype=np.float64))
    scale = np.asarray(scale, dtype=np.float64)
    if scale.ndim == 1 and err.ndim == 2:
        scale = scale[:, None]
    return float(np.mean(err / scale))
