"""A global forecaster over a long DataFrame: fit, evaluate, forecast, save and load.

It glues the core pieces together (panel, scaler, windows, model, fit loop) and
is what the MLflow pyfunc model wraps; it needs only torch, numpy, pandas and scikit-learn.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import Ridge

from forecasting import __version__
from forecasting.backtest import BacktestConfig, cutoff_windows
from forecasting.baselines import season_length, seasonal_naive
from forecasting.data import ID, TARGET, TIME, Split
from forecasting.errors import DataError
from forecasting.evaluation import (
    LINEAR_ALPHAS,
    MAX_LINEAR_WINDOWS,
    Evaluation,
    Predictor,
    fit_linear,
    point_metrics,
    score,
    simple_predictors,
)
from forecasting.features import calendar_features, n_calendar_features
from forecasting.metrics import mse, seasonal_scale
from forecasting.models import ModelConfig, RecurrentForecaster, count_parameters
from forecasting.scaling import SeriesScaler, window_norm
from forecasting.training import FitResult, TrainConfig, fit, predict, set_seed
from forecasting.windows import Panel, Windows, make_windows, panel_from_long

FORECAST_COLUMNS = (ID, TIME, "y_hat")
__all__ = ["Evaluation", "Forecaster", "ForecasterConfig", "point_metrics"]


@dataclass(frozen=True)
class ForecasterConfig:
    """Everything that defines a forecaster besides its learnt state."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    freq: str = "h"
    calendar: bool = True
    covariates: tuple[str, ...] = ()
    season: int | None = None  # seasonal period of MASE; the shortest of `seasons` if None
    seasons: tuple[int, ...] = ()  # every seasonal period kept for this dataset, shortest first

    @property
    def period(self) -> int:
        """The MASE period (M4 convention: the shortest seasonal cycle)."""
        return self.season or (self.seasons[0] if self.seasons else season_length(self.freq))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ForecasterConfig:
        return cls(
            model=ModelConfig(**d["model"]), train=TrainConfig(**d["train"]), freq=d["freq"],
            calendar=d["calendar"], covariates=tuple(d["covariates"]), season=d.get("season"),
            seasons=tuple(d.get("seasons", ())),
        )


def with_features(cfg: ForecasterConfig) -> ForecasterConfig:
    """Set the model's input width from the target, covariates and calendar features."""
    n = 1 + len(cfg.covariates) + (n_calendar_features(cfg.freq) if cfg.calendar else 0)
    return replace(cfg, model=replace(cfg.model, n_features=n))


def build_panel(df: pd.DataFrame, cfg: ForecasterConfig) -> Panel:
    """Long frame -> panel with target, covariates and (optionally) calendar columns."""
    panel = panel_from_long(df, cfg.freq, cfg.covariates)
    if not cfg.calendar:
        return panel
    cal = calendar_features(pd.DatetimeIndex(df[TIME]), cfg.freq)  # [T, C]
    values = np.ascontiguousarray(np.concatenate([panel.values, cal], axis=1))
    names = tuple(f"cal{i}" for i in range(cal.shape[1]))
    return replace(panel, values=values, columns=panel.columns + names)


def linear_start(train: Windows, val: Windows, norm: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge map [H, L] and bias [H] from the window-normalized lookback to the normalized horizon,
    fitted on training windows with the penalty that scores best on validation windows: the
    highway's starting point for `init="linear"` (the model then starts as the linear baseline)."""
    def normalized(w: Windows, n: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = w.arrays(np.linspace(0, len(w) - 1, min(len(w), n)).astype(np.int64))
        xn, loc, scale = window_norm(torch.from_numpy(np.ascontiguousarray(x[..., :1])), norm)
        return xn[..., 0].double().numpy(), ((torch.from_numpy(y) - loc) / scale).double().numpy()

    x, y = normalized(train, MAX_LINEAR_WINDOWS)
    xv, yv = normalized(val, MAX_LINEAR_WINDOWS) if len(val) else (x, y)
    fits = [Ridge(alpha=a).fit(x, y) for a in LINEAR_ALPHAS]
    best = min(fits, key=lambda r: float(np.mean((r.predict(xv) - yv) ** 2)))
    return torch.as_tensor(best.coef_, dtype=torch.float32), torch.as_tensor(best.intercept_, dtype=torch.float32)


class Forecaster:
    """One global recurrent model across all series of a dataset."""

    def __init__(self, cfg: ForecasterConfig):
        self.cfg = with_features(cfg)
        self.model_: RecurrentForecaster | None = None
        self.scaler_: SeriesScaler | None = None
        self.mase_scale_: np.ndarray | None = None  # [S] in original units
        self.fit_result_: FitResult | None = None

    # ------------------------------------------------------------------ training
    def fit(self, df: pd.DataFrame, split: Split, callback=None) -> FitResult:
        """Fit scaler (training rows only) and model; early stopping on the validation part."""
        panel = self.fit_scaler(df, split)
        m = self.cfg.model
        train = make_windows(panel, m.lookback, m.horizon, split, "train")
        val = make_windows(panel, m.lookback, m.horizon, split, "val")
        if self.cfg.train.val_cutoffs:  # the objective: the last K validation cutoffs only
            bt = BacktestConfig(self.cfg.train.val_cutoffs, self.cfg.train.val_step or None)
            val, _ = cutoff_windows(panel, m.lookback, m.horizon, split.val_end, bt, split.train_end)
        if m.highway and m.init == "seasonal":
            self.cfg = replace(self.cfg, model=replace(m, season=self._start_season(train)))
        set_seed(self.cfg.train.seed)  # the initial weights too, not only the fit loop
        self.model_ = RecurrentForecaster(self.cfg.model)
        if m.highway and m.init == "linear":
            self.model_.start_as_linear(*linear_start(train, val, m.norm, self.cfg.train.seed))
        self.fit_result_ = fit(self.model_, train, val, self.cfg.train, callback, start_competes=m.highway)
        self.model_.cpu()
        return self.fit_result_

    def _start_season(self, train: Windows, max_windows: int = 20_000) -> int:
        """The kept period whose seasonal naive fits the training windows best (0: none fits the
        lookback): the highway starts there. Chosen on training data only."""
        m = self.cfg.model
        periods = [p for p in self.cfg.seasons or (self.cfg.period,) if 1 < p <= m.lookback]
        if not periods or len(train) == 0:
            return 0
        idx = np.linspace(0, len(train) - 1, min(len(train), max_windows)).astype(np.int64)
        x, y = train.arrays(idx)
        return min(periods, key=lambda p: mse(y, seasonal_naive(x[..., 0], m.horizon, p)))

    def fit_scaler(self, df: pd.DataFrame, split: Split) -> Panel:
        """Fit the per-series scaler and MASE scales on the training rows; returns the scaled panel.

        Baselines that learn nothing call this alone to be scored like the models.
        """
        raw = build_panel(df, self.cfg)
        scaler = SeriesScaler.fit(raw, split.train_end)
        # Calendar columns are bounded sin/cos that `predict` feeds unscaled: leave them as they are.
        n_var = 1 + len(self.cfg.covariates)
        mean, std = scaler.mean.copy(), scaler.std.copy()
        mean[:, n_var:], std[:, n_var:] = 0.0, 1.0
        self.scaler_ = replace(scaler, mean=mean, std=std)
        self.mase_scale_ = self._mase_scales(raw, split.train_end)
        return self.scaler_.transform(raw)

    def _mase_scales(self, raw: Panel, train_end: np.ndarray) -> np.ndarray:
        scales = []
        for i in range(len(raw.ids)):
            ins = raw.series(i)[: int(train_end[i]), 0]
            m = self.cfg.period if len(ins) > self.cfg.period else 1
            s = seasonal_scale(ins, m) if len(ins) > m else 1.0
            scales.append(s if s > 0 else 1.0)
        return np.array(scales)

    @property
    def n_parameters(self) -> int:
        return count_parameters(self.model_) if self.model_ is not None else 0

    # ------------------------------------------------------------------ evaluation
    def windows(self, df: pd.DataFrame, split: Split, part: str, lookback: int | None = None) -> Windows:
        """Scaled windows of a split part (stride 1)."""
        panel = self.scaler_.transform(build_panel(df, self.cfg))
        return make_windows(panel, lookback or self.cfg.model.lookback, self.cfg.model.horizon, split, part)

    def predictor(self, device: str = "cpu") -> Predictor:
        """The fitted model as a predictor on standardized windows (column `y_hat` in backtests)."""
        return Predictor("y_hat", self.cfg.model.lookback, lambda x: predict(self.model_, x, device))

    def baselines(self, df: pd.DataFrame, split: Split, lookbacks: tuple[int, ...] = ()) -> tuple[
            list[Predictor], dict]:
        """Naive, seasonal naive at every kept period and the ridge baseline (lookback among
        `lookbacks`, default the model's, and penalty chosen on validation); needs `fit_scaler`.
        Returns the predictors and the ridge baseline's selection record."""
        panel = self.scaler_.transform(build_panel(df, self.cfg))
        H = self.cfg.model.horizon
        linear, record = fit_linear(panel, split, H, tuple(lookbacks) or (self.cfg.model.lookback,),
                                    self.cfg.train.seed)
        return [*simple_predictors(H, self.cfg.seasons or (self.cfg.period,)), linear], record

    def evaluate(self, df: pd.DataFrame, split: Split, part: str = "test", device: str = "cpu",
                 predictor: Predictor | None = None) -> Evaluation:
        """Forecast every window of a part (stride 1) with the model, or `predictor`; metrics on the
        original scale plus `mse_std`, `mae_std` on the standardized one."""
        pred = predictor or self.predictor(device)
        w = self.windows(df, split, part, lookback=pred.lookback)
        x, y = w.arrays()
        return self._evaluation(w, y, pred.fn(x))

    def evaluate_seasonal_naive(self, df: pd.DataFrame, split: Split, part: str = "test") -> Evaluation:
        """Seasonal naive at the MASE period on the same targets."""
        (pred,) = simple_predictors(self.cfg.model.horizon, (self.cfg.period,))[1:]
        return self.evaluate(df, split, part, predictor=pred)

    def _evaluation(self, w: Windows, y_std: np.ndarray, y_hat_std: np.ndarray) -> Evaluation:
        return score(y_std, y_hat_std, w.series_index, self.scaler_.mean[:, 0], self.scaler_.std[:, 0],
                     self.mase_scale_)

    # ------------------------------------------------------------------ forecasting
    def predict(self, history: pd.DataFrame, device: str = "cpu") -> tuple[pd.DataFrame, list[tuple[str, str]]]:
        """Next H steps after the end of every series in a long history frame.

        Returns the forecasts (`unique_id`, `ds`, `y_hat`) and the series skipped,
        each with its reason (too short, gaps or missing values in the lookback).
        Series unseen in training are standardized with their own history.
        """
        x, ids, last, mean, std, skipped = self._inputs(history)
        if not ids:
            return pd.DataFrame({c: [] for c in FORECAST_COLUMNS}), skipped
        y_std = predict(self.model_, x, device)  # [S, H]
        y_hat = y_std * std[:, None] + mean[:, None]
        H = self.cfg.model.horizon
        step = pd.tseries.frequencies.to_offset(self.cfg.freq)
        ds = (pd.DatetimeIndex(np.repeat(last, H)) + np.tile(np.arange(1, H + 1), len(ids)) * pd.Timedelta(step)
              if _fixed(step) else pd.DatetimeIndex(
                  np.concatenate([pd.date_range(t, periods=H + 1, freq=step)[1:] for t in last])))
        out = pd.DataFrame({ID: np.repeat(np.array(ids, dtype=object), H), TIME: ds,
                            "y_hat": y_hat.reshape(-1).astype(np.float64)})
        return out, skipped

    def _inputs(self, history: pd.DataFrame):
        """Model inputs [S, L, F] from the last L rows of each usable series, plus the series
        ids, last timestamps, target mean/std [S] and the skipped series.

        Vectorized over series (one factorize and one sort, no per-series Python loop): a batch
        forecast of 10,000 series spends its time in the model, not here.
        """
        cfg, L = self.cfg, self.cfg.model.lookback
        need = [ID, TIME, TARGET, *cfg.covariates]
        missing = [c for c in need if c not in history.columns]
        if missing:
            raise DataError(f"history is missing column(s) {missing}; columns present: {list(history.columns)}")
        codes, uniques = pd.factorize(history[ID].astype(str))
        ds = pd.to_datetime(history[TIME], errors="coerce").to_numpy()
        if np.isnat(ds).any():
            raise DataError(f"column {TIME!r}: unparseable timestamp at row {int(np.flatnonzero(np.isnat(ds))[0]) + 2}")
        vals = np.column_stack([pd.to_numeric(history[c], errors="coerce").to_numpy(np.float64) for c in need[2:]])
        order = np.lexsort((ds, codes))  # group rows by series, in time order
        counts = np.bincount(codes, minlength=len(uniques))  # [G]
        ends = np.cumsum(counts)  # end of each series' rows in `order`
        ok = counts >= L
        skipped = [(str(u), f"{n} points, needs lookback {L}") for u, n in zip(uniques[~ok], counts[~ok], strict=True)]
        rows = order[(ends[ok] - L)[:, None] + np.arange(L)]  # [S, L] row numbers of the last L points
        ids_all, x, times = np.asarray(uniques[ok], dtype=object), vals[rows], ds[rows]  # [S], [S, L, 1+C], [S, L]
        bad = ~np.isfinite(x).all(axis=(1, 2))
        step = pd.tseries.frequencies.to_offset(cfg.freq)
        if _fixed(step) and L > 1:
            bad |= (np.diff(times, axis=1) != np.timedelta64(pd.Timedelta(step))).any(axis=1)
        skipped += [(str(u), f"gaps, missing or non-finite values in the last {L} points") for u in ids_all[bad]]
        ids, x, times = list(ids_all[~bad]), x[~bad], times[~bad]
        mean, std = self._stats(ids, codes, vals, np.flatnonzero(ok)[~bad])
        x = (x - mean[:, None, :]) / std[:, None, :]  # [S, L, 1+C]
        if cfg.calendar:
            # Series share timestamps: compute the features once per distinct timestamp.
            uniq, inv = np.unique(times.reshape(-1), return_inverse=True)
            cal = calendar_features(pd.DatetimeIndex(uniq), cfg.freq)[inv]  # [S*L, C]
            x = np.concatenate([x, cal.reshape(len(ids), L, cal.shape[1])], axis=2)
        last = times[:, -1] if len(ids) else times
        return x.astype(np.float32), ids, last, mean[:, 0], std[:, 0], skipped

    def _stats(self, ids: list[str], codes: np.ndarray, vals: np.ndarray, groups: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Per-series mean and std [S, 1+C]: training statistics for known series, the series'
        own history (rows with `codes` == group) for new ones."""
        nvar = vals.shape[1]
        mean, std = np.zeros((len(ids), nvar)), np.ones((len(ids), nvar))
        pos = {u: i for i, u in enumerate(self.scaler_.ids)}
        known = np.array([u in pos for u in ids], dtype=bool)
        if known.any():
            idx = np.array([pos[u] for u in np.array(ids, dtype=object)[known]])
            mean[known], std[known] = self.scaler_.mean[idx, :nvar], self.scaler_.std[idx, :nvar]
        if (~known).any():
            finite = np.isfinite(vals)
            v = np.where(finite, vals, 0.0)
            n = np.stack([np.bincount(codes, finite[:, j], minlength=codes.max() + 1) for j in range(nvar)], 1)
            s1 = np.stack([np.bincount(codes, v[:, j], minlength=codes.max() + 1) for j in range(nvar)], 1)
            s2 = np.stack([np.bincount(codes, v[:, j] ** 2, minlength=codes.max() + 1) for j in range(nvar)], 1)
            g = groups[~known]
            m = s1[g] / np.maximum(n[g], 1)
            sd = np.sqrt(np.maximum(s2[g] / np.maximum(n[g], 1) - m**2, 0.0))
            mean[~known], std[~known] = m, np.where(sd > 1e-8, sd, 1.0)
        return mean, std

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write config.json, weights.pt and scaler.json into a directory."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"config": self.cfg.to_dict(), "version": __version__,
                "mase_scale": self.mase_scale_.tolist()}
        (path / "config.json").write_text(json.dumps(meta, indent=2))
        torch.save({k: v.cpu() for k, v in self.model_.state_dict().items()}, path / "weights.pt")
        (path / "scaler.json").write_text(json.dumps(self.scaler_.to_dict()))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Forecaster:
        """Rebuild a saved forecaster on the CPU (whatever device it was trained on)."""
        path = Path(path)
        meta = json.loads((path / "config.json").read_text())
        self = cls(ForecasterConfig.from_dict(meta["config"]))
        self.model_ = RecurrentForecaster(self.cfg.model)
        state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
        self.model_.load_state_dict(state)
        self.model_.eval()
        self.scaler_ = SeriesScaler.from_dict(json.loads((path / "scaler.json").read_text()))
        self.mase_scale_ = np.array(meta["mase_scale"])
        return self


def _fixed(step) -> bool:
    try:
        pd.Timedelta(step)
        return True
    except ValueError:
        return False
