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


FLAT_FRACTION = 1e-2  # the scale of a flat series: this fraction of its level


def _flat_scale(y: np.ndarray) -> float:
    level = float(np.nanmean(np.abs(y))) if np.isfinite(y).any() else 0.0
    return FLAT_FRACTION * level if level > 0 else 1.0


def series_scale(y: np.ndarray, season: int) -> float:
    """Mean |y_t − y_{t−m}| over the history `y` (m = `season` when the history holds more than m
    points, else 1): the M4 MASE/MSIS denominator. NaN differences are skipped; a zero or undefined
    seasonal scale falls back to the naive (m = 1) one, then to a small fraction of the level."""
    y = np.asarray(y, dtype=np.float64)
    for m in (season if len(y) > season else 1, 1):
        if len(y) > m:
            d = np.abs(y[m:] - y[:-m])
            d = d[np.isfinite(d)]
            if len(d) and d.mean() > 0:
                return float(d.mean())
    return _flat_scale(y)


def prefix_scales(y: np.ndarray, n: np.ndarray, season: int) -> np.ndarray:
    """`series_scale(y[:k], season)` for every k in `n` [C] from cumulative sums (same results)."""
    def prefix_mean(m: int) -> np.ndarray:
        d = np.abs(y[m:] - y[:-m]) if len(y) > m else np.zeros(0)
        ok = np.isfinite(d)
        s = np.r_[0.0, np.cumsum(np.where(ok, d, 0.0))]
        c = np.r_[0, np.cumsum(ok)]
        j = np.clip(n - m, 0, len(d))  # differences inside the first k rows
        return np.divide(s[j], c[j], out=np.zeros(len(n)), where=c[j] > 0)

    seasonal, naive = prefix_mean(season), prefix_mean(1)
    out = np.where(n > season, seasonal, naive)
    out = np.where(out > 0, out, naive)
    bad = ~(out > 0)
    out[bad] = [_flat_scale(y[:k]) for k in n[bad]]
    return out


def mase(y: np.ndarray, y_hat: np.ndarray, scale: float | np.ndarray) -> float:
    """Mean absolute error divided by the seasonal-naive in-sample scale (per row if an array)."""
    err = np.abs(np.asarray(y, dtype=np.float64) - np.asarray(y_hat, dtype=np.float64))
    scale = np.asarray(scale, dtype=np.float64)
    if scale.ndim == 1 and err.ndim == 2:
        scale = scale[:, None]
    return float(np.mean(err / scale))


# --------------------------------------------------------------------------- prediction intervals


def _per_row(scale: float | np.ndarray, like: np.ndarray) -> np.ndarray:
    """A scale [N] broadcast over rows of [N, H] (like `mase`), or a scalar."""
    scale = np.asarray(scale, dtype=np.float64)
    return scale[:, None] if scale.ndim == 1 and like.ndim == 2 else scale


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Fraction of the points with lo <= y <= hi (ends included)."""
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean((y >= np.asarray(lo)) & (y <= np.asarray(hi))))


def msis(y: np.ndarray, lo: np.ndarray, hi: np.ndarray, scale: float | np.ndarray, level: int = 95) -> float:
    """M4 mean scaled interval score: the mean over points of
    (hi − lo) + (2/α)(lo − y)·1{y < lo} + (2/α)(y − hi)·1{y > hi}, α = 1 − level/100, each row divided
    by its in-sample seasonal-naive MAE `scale` ([N] over [N, H], or a scalar). With equal horizons
    the mean over rows of per-row scaled scores is M4's mean over series."""
    y, lo, hi = (np.asarray(a, dtype=np.float64) for a in (y, lo, hi))
    alpha = 1.0 - level / 100.0
    score = (hi - lo) + (2.0 / alpha) * ((lo - y) * (y < lo) + (y - hi) * (y > hi))
    return float(np.mean(score / _per_row(scale, score)))


def scaled_pinball(y: np.ndarray, quantile_forecast: np.ndarray, tau: float, scale: float | np.ndarray) -> float:
    """Mean pinball loss at quantile level `tau`, max(τ(y − q), (τ − 1)(y − q)), each row divided by `scale`."""
    d = np.asarray(y, dtype=np.float64) - np.asarray(quantile_forecast, dtype=np.float64)
    loss = np.maximum(tau * d, (tau - 1.0) * d)
    return float(np.mean(loss / _per_row(scale, loss)))


def interval_pinball(y: np.ndarray, lo: np.ndarray, hi: np.ndarray, level: int, scale: float | np.ndarray) -> float:
    """The mean of the scaled pinball losses of `lo` at τ = α/2 and `hi` at τ = 1 − α/2 (α = 1 − level/100)."""
    alpha = 1.0 - level / 100.0
    return 0.5 * (scaled_pinball(y, lo, alpha / 2, scale) + scaled_pinball(y, hi, 1 - alpha / 2, scale))


def interval_metrics(y: np.ndarray, bounds: dict, scale: float | np.ndarray) -> dict[str, float]:
    """`coverage_<L>`, `msis_<L>` and `pinball_<L>` for every level L of `bounds` {L: (lo, hi)}."""
    out = {}
    for level, (lo, hi) in sorted(bounds.items()):
        out[f"coverage_{level}"] = coverage(y, lo, hi)
        out[f"msis_{level}"] = msis(y, lo, hi, scale, level)
        out[f"pinball_{level}"] = interval_pinball(y, lo, hi, level, scale)
    return out
