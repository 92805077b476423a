"""Simple forecasts every model is compared with: naive, seasonal naive, a global linear model.

All work on batches of windows on the per-series standardized scale: history [..., L] -> [..., H].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import Ridge


def naive(history: np.ndarray, horizon: int) -> np.ndarray:
    """Repeat the last value: history [..., L] -> [..., H]."""
    history = np.asarray(history)
    return np.repeat(history[..., -1:], horizon, axis=-1)


def seasonal_naive(history: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """Repeat the last full season: ŷ[t] = y[L − m + (t mod m)]; history [..., L] -> [..., H]."""
    history = np.asarray(history)
    if period < 1:
        raise ValueError(f"period must be positive, got {period}")
    if history.shape[-1] < period:
        raise ValueError(f"history of {history.shape[-1]} points is shorter than the period {period}")
    last = history[..., history.shape[-1] - period:]  # [..., m]
    return last[..., np.arange(horizon) % period]


def season_length(freq: str) -> int:
    """The shortest seasonal period of a pandas frequency (24 for hourly, 7 for daily, 1 for none)."""
    from forecasting.seasons import seasonal_periods

    periods = seasonal_periods(freq)
    return periods[0] if periods else 1


@dataclass
class LinearBaseline:
    """One global ridge regression from the lookback window to the horizon, fitted on windows
    normalized by their last value (NLinear's normalization, scikit-learn's `Ridge`).

    x [N, L] -> ŷ [N, H]: ŷ = Ridge(x − x_L) + x_L. Shared by all series, so it learns the
    seasonal and autoregressive structure they have in common.
    """

    lookback: int
    horizon: int
    alpha: float = 1.0
    model_: Ridge | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> LinearBaseline:
        """Fit on inputs x [N, L] and targets y [N, H]."""
        last = x[:, -1:]  # [N, 1]
        self.model_ = Ridge(alpha=self.alpha).fit(x - last, y - last)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Forecasts [N, H] for inputs x [N, L] (only the last `lookback` steps are used)."""
        x = np.asarray(x, dtype=np.float64)[:, -self.lookback:]
        last = x[:, -1:]
        return self.model_.predict(x - last).reshape(len(x), self.horizon) + last
