"""Simple forecasts every model is compared with: naive, seasonal naive, a global linear model.

All work on batches of windows on the per-series standardized scale: history [..., L] -> [..., H].
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from forecasting.core.scaling import LOG_FLOOR, window_norm
from forecasting.core.windows import Windows

if TYPE_CHECKING:
    from sklearn.linear_model import Ridge

LINEAR_ALPHAS = (0.1, 1.0, 10.0, 100.0)  # ridge penalties tried, chosen on validation
MAX_LINEAR_WINDOWS = 50_000  # windows sampled to fit a ridge map (the fit is O(N L^2))
# Ridge starts already fitted in this process, by the windows' content and the normalization: every
# trial of a search with the same lookback, and the refit, start from the same map. A few seconds
# each on the demo; bounded, since each holds an [H, L] map.
_STARTS: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
MAX_STARTS = 16


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
    from forecasting.core.seasons import seasonal_periods

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
        from sklearn.linear_model import Ridge  # imported where it fits: a forecast never needs it

        self.model_ = Ridge(alpha=self.alpha).fit(*self.normalized(x, y))
        return self

    @staticmethod
    def normalized(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inputs [N, L] and targets [N, H] minus each window's last input value."""
        last = x[:, -1:]  # [N, 1]
        return x - last, y - last

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Forecasts [N, H] for inputs x [N, L] (only the last `lookback` steps are used)."""
        x = np.asarray(x, dtype=np.float64)[:, -self.lookback:]
        last = x[:, -1:]
        return self.model_.predict(x - last).reshape(len(x), self.horizon) + last


def best_ridge(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray,
               alphas: tuple[float, ...] = LINEAR_ALPHAS) -> tuple[Ridge, list[float]]:
    """Ridge maps x [N, L] -> y [N, H], one per penalty; the one with the lowest validation MSE
    on (xv, yv), and every penalty's validation MSE. The penalty is never chosen on test."""
    from sklearn.linear_model import Ridge

    fits = [Ridge(alpha=a).fit(x, y) for a in alphas]
    errs = [float(np.mean((r.predict(xv) - yv) ** 2)) for r in fits]
    return fits[int(np.argmin(errs))], errs


def windows_key(*windows: Windows) -> str:
    """A digest of what a ridge start reads from windows: the target column of their panel, their
    starts, lookback and horizon (equal data gives an equal key, whichever objects hold it)."""
    h = hashlib.blake2b(digest_size=16)
    for w in windows:
        h.update(np.ascontiguousarray(w.panel.values[:, 0]).tobytes())
        h.update(np.ascontiguousarray(w.starts, dtype=np.int64).tobytes())
        h.update(f"|{w.lookback}|{w.horizon}|".encode())
    return h.hexdigest()


def linear_start(train: Windows, val: Windows, norm: str, logs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge map [H, L] and bias [H] from the window-normalized lookback to the normalized horizon,
    fitted on training windows with the penalty that scores best on validation windows: the
    highway's starting point for `init="linear"` (the model then starts as the linear baseline).
    With `logs`, both sides are log(x + c) first, c the windows' level column (last): a multiplicative
    model's highway. Fitted once per process for the same windows and normalization (`_STARTS`);
    copies are returned."""
    key = f"{windows_key(train, val)}-{norm}-{'log' if logs else 'raw'}"
    if key not in _STARTS:
        _STARTS[key] = _fit_linear_start(train, val, norm, logs)
        while len(_STARTS) > MAX_STARTS:
            _STARTS.popitem(last=False)
    _STARTS.move_to_end(key)
    coef, bias = _STARTS[key]
    return coef.clone(), bias.clone()


def _fit_linear_start(train: Windows, val: Windows, norm: str, logs: bool) -> tuple[torch.Tensor, torch.Tensor]:
    def normalized(w: Windows) -> tuple[np.ndarray, np.ndarray]:
        x, y = w.arrays(np.linspace(0, len(w) - 1, min(len(w), MAX_LINEAR_WINDOWS)).astype(np.int64))
        if logs:  # log(x + c) on both sides, c [N, 1] the level column (a start checks training is positive)
            c = x[:, -1:, -1]
            x, y = np.log(np.maximum(x[..., :1] + c[..., None], LOG_FLOOR)), np.log(np.maximum(y + c, LOG_FLOOR))
        xn, loc, scale = window_norm(torch.from_numpy(np.ascontiguousarray(x[..., :1])), norm)
        return xn[..., 0].double().numpy(), ((torch.from_numpy(y) - loc) / scale).double().numpy()

    x, y = normalized(train)
    xv, yv = normalized(val) if len(val) else (x, y)
    best, _ = best_ridge(x, y, xv, yv)
    return torch.as_tensor(best.coef_, dtype=torch.float32), torch.as_tensor(best.intercept_, dtype=torch.float32)
