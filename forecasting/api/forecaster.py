"""The front door: a global forecaster over a long DataFrame.

`fit / predict / cross_validation / calibrate / save / load`, the same for one model and for an
`Ensemble`. It glues the core pieces together (panel, scaler, windows, the family's module, fit
loop) and is what the MLflow pyfunc model wraps; it needs only torch, numpy, pandas and
scikit-learn. The model family comes from the registry (`forecasting.families`): nothing here
depends on which one it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from forecasting import __version__, families
from forecasting.api.inputs import Inputs, future_times, model_inputs
from forecasting.core.backtest import Backtest, BacktestConfig, cross_validation, cutoff_windows
from forecasting.core.baselines import season_length
from forecasting.core.columns import ID, TIME, Y_HAT
from forecasting.core.data import Split
from forecasting.core.evaluation import (
    Evaluation,
    PredictFn,
    Predictor,
    fit_linear,
    in_process,
    point_metrics,
    score,
    simple_predictors,
)
from forecasting.core.features import calendar_features, n_calendar_features
from forecasting.core.intervals import (
    Conformal,
    choose_calibration,
    forecast_intervals,
    interval_columns,
    load_conformal,
)
from forecasting.core.metrics import series_scale
from forecasting.core.options import from_dict, to_dict
from forecasting.core.scaling import SeriesScaler
from forecasting.core.training import FitResult, TrainConfig, count_parameters, fit, predict, set_seed
from forecasting.core.windows import Panel, Windows, make_windows, panel_from_long

FORECAST_COLUMNS = (ID, TIME, Y_HAT)
__all__ = ["Evaluation", "Forecaster", "ForecasterConfig", "point_metrics"]


@dataclass(frozen=True)
class ForecasterConfig:
    """Everything that defines a forecaster besides its learnt state. `model` is the config of the
    registered family `family` (by default the family whose config `model` is)."""

    model: Any = field(default_factory=lambda: families.get(families.DEFAULT[0]).new_config())
    train: TrainConfig = field(default_factory=TrainConfig)
    freq: str = "h"
    calendar: bool = True
    covariates: tuple[str, ...] = ()
    season: int | None = None  # seasonal period of MASE; the shortest of `seasons` if None
    seasons: tuple[int, ...] = ()  # every seasonal period kept for this dataset, shortest first
    family: str = ""
    level_input: bool = False  # inputs end with c = mu / sigma per series (set for a multiplicative model)

    def __post_init__(self) -> None:
        if not self.family:
            object.__setattr__(self, "family", families.family_of(self.model))

    @property
    def period(self) -> int:
        """The MASE period (M4 convention: the shortest seasonal cycle)."""
        return self.season or (self.seasons[0] if self.seasons else season_length(self.freq))

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict, module: str = "") -> ForecasterConfig:
        """The inverse of `to_dict` (the project's one dataclass deserializer: nested configs, tuples);
        the model config is read as its family's (`module` defines a plug-in family). Configs saved
        before families were registered hold recurrent models only, named by their cell."""
        d = dict(d)
        model = d.pop("model", {})
        name = d.get("family") or model.get("cell", families.DEFAULT[0])
        fam = families.import_family(name, module)
        return replace(from_dict(cls, {**d, "family": name, "model": None}), model=from_dict(fam.config, model))


def with_features(cfg: ForecasterConfig) -> ForecasterConfig:
    """Set the model's input width from the target, covariates, calendar features and the level
    column, which a multiplicative model reads (and keeps once given: a fitted model whose start fell
    back to the additive form was built with it)."""
    level = cfg.level_input or bool(getattr(cfg.model, "multiplicative", False))
    n = 1 + len(cfg.covariates) + (n_calendar_features(cfg.freq) if cfg.calendar else 0) + level
    return replace(cfg, level_input=level, model=replace(cfg.model, n_features=n))


def with_level(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Append the level column c = mean / std (per row [T] or per window [N, L]) to x [..., F]."""
    c = (mean / std).astype(x.dtype)
    return np.concatenate([x, np.broadcast_to(c.reshape(c.shape + (1,) * (x.ndim - c.ndim)), x.shape[:-1] + (1,))],
                          axis=-1)


def build_panel(df: pd.DataFrame, cfg: ForecasterConfig) -> Panel:
    """Long frame -> panel with target, covariates and (optionally) calendar columns."""
    panel = panel_from_long(df, cfg.freq, cfg.covariates)
    if not cfg.calendar:
        return panel
    cal = calendar_features(pd.DatetimeIndex(df[TIME]), cfg.freq)  # [T, C]
    values = np.ascontiguousarray(np.concatenate([panel.values, cal], axis=1))
    names = tuple(f"cal{i}" for i in range(cal.shape[1]))
    return replace(panel, values=values, columns=panel.columns + names)


class Fitted:
    """What a fitted `Forecaster` and an `Ensemble` share, written once over their `panel`,
    `predictor`, `cfg`, `scaler_` and `mase_scale_`: backtests and interval calibration."""

    conformal_: Conformal | None

    def cross_validation(self, df: pd.DataFrame, end: np.ndarray | None = None, lo: np.ndarray | None = None,
                         backtest: BacktestConfig = BacktestConfig(), predictors: list[Predictor] | None = None,
                         predict: PredictFn = in_process) -> Backtest:
        """Rolling-origin backtest (Nixtla's `cross_validation` frame: unique_id, ds, cutoff, y, y_hat
        and one column per extra predictor) whose targets lie in rows [lo, end) of each series
        (default: up to each series' end); inputs may come from before `lo`. `predict` runs each
        predictor on the windows (default: here)."""
        end = df.groupby(ID, sort=False).size().to_numpy() if end is None else end
        return cross_validation(self.panel(df), predictors or [self.predictor()], self.cfg.model.horizon, end,
                                self.scaler_.mean[:, 0], self.scaler_.std[:, 0], self.mase_scale_, backtest, lo,
                                predict)

    def calibrate(self, df: pd.DataFrame, levels: tuple[int, ...], end: np.ndarray, lo: np.ndarray
                  ) -> Conformal | None:
        """Conformal intervals from every window whose targets lie in rows [lo, end) (cutoffs one row
        apart), in the scale mode (seasonal or the series' own residuals) that scores best on the
        later of those windows; kept in `conformal_`, saved with the model. No levels: none."""
        self.conformal_ = None
        if levels:
            cal = self.cross_validation(df, end, lo, BacktestConfig(0, 1))
            self.conformal_ = choose_calibration(cal.forecasts, df, levels, self.cfg.period)
        return self.conformal_

    def baselines(self, df: pd.DataFrame, split: Split, lookbacks: tuple[int, ...] = ()) -> tuple[
            list[Predictor], dict]:
        """Naive, seasonal naive at every kept period and the ridge baseline (lookback among
        `lookbacks`, default the model's, and penalty chosen on validation); needs `fit_scaler`.
        Returns the predictors and the ridge baseline's selection record."""
        H = self.cfg.model.horizon
        linear, record = fit_linear(self.panel(df), split, H, tuple(lookbacks) or (self.cfg.model.lookback,),
                                    self.cfg.train.seed)
        return [*simple_predictors(H, self.cfg.seasons or (self.cfg.period,)), linear], record

    def mase_scales(self) -> pd.Series:
        """Each known series' in-sample seasonal-naive MAE (MASE and MSIS denominator), by unique_id."""
        return pd.Series(self.mase_scale_, index=list(self.scaler_.ids))


class Forecaster(Fitted):
    """One global model of a registered family across all series of a dataset."""

    def __init__(self, cfg: ForecasterConfig):
        self.cfg = with_features(cfg)
        self.model_: torch.nn.Module | None = None
        self.scaler_: SeriesScaler | None = None
        self.mase_scale_: np.ndarray | None = None  # [S] in original units
        self.fit_result_: FitResult | None = None
        self.conformal_: Conformal | None = None  # interval calibration (`calibrate`; saved)

    @property
    def family(self) -> families.Family:
        return families.get(self.cfg.family)

    # ------------------------------------------------------------------ training
    def fit(self, df: pd.DataFrame, split: Split, callback=None) -> FitResult:
        """Fit scaler (training rows only) and model; early stopping on the validation part. The
        family's start (if any) sets where training begins, and competes with every epoch."""
        panel = self.fit_scaler(df, split)
        m = self.cfg.model
        train = make_windows(panel, m.lookback, m.horizon, split, "train")
        val = make_windows(panel, m.lookback, m.horizon, split, "val")
        if self.cfg.train.val_cutoffs:  # the objective: the last K validation cutoffs only
            bt = BacktestConfig(self.cfg.train.val_cutoffs, self.cfg.train.val_step or None)
            val, _ = cutoff_windows(panel, m.lookback, m.horizon, split.val_end, bt, split.train_end)
        set_seed(self.cfg.train.seed)  # the initial weights too, not only the fit loop
        self.model_ = self.family.build(m)
        started = self.family.start(self.model_, m, train, val, self.cfg.seasons or (self.cfg.period,)) \
            if self.family.start else None
        if started is not None:
            self.cfg = replace(self.cfg, model=started)
        self.fit_result_ = fit(self.model_, train, val, self.cfg.train, callback, start_competes=started is not None,
                               weights=self.mase_weights())
        self.model_.cpu()
        return self.fit_result_

    def mase_weights(self) -> np.ndarray:
        """Per series [S]: MASE units per standardized unit (standard deviation over the in-sample
        seasonal-naive MAE), the weights that put the "mase" loss on MASE's own scale."""
        return self.scaler_.std[:, 0] / self.mase_scale_

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
        self.mase_scale_ = np.array([series_scale(raw.series(i)[: int(e), 0], self.cfg.period)
                                     for i, e in enumerate(split.train_end)])
        return self.scaled(raw)

    def scaled(self, raw: Panel) -> Panel:
        """A raw panel standardized by the fitted scaler, with the level column when the model reads it."""
        panel = self.scaler_.transform(raw)
        if not self.cfg.level_input:
            return panel
        codes = np.repeat(self.scaler_.index(panel.ids), panel.lengths)  # [T] series of each row
        values = with_level(panel.values, self.scaler_.mean[codes, 0], self.scaler_.std[codes, 0])
        return replace(panel, values=np.ascontiguousarray(values), columns=panel.columns + ("level",))

    def rescaled(self, scaler: SeriesScaler, mase_scale: np.ndarray) -> Forecaster:
        """The same fitted model reading series through other statistics (a backtest of a registered
        model over series or rows it has not seen)."""
        g = Forecaster(self.cfg)
        g.model_, g.scaler_, g.mase_scale_, g.conformal_ = self.model_, scaler, mase_scale, self.conformal_
        return g

    @property
    def n_parameters(self) -> int:
        return count_parameters(self.model_) if self.model_ is not None else 0

    # ------------------------------------------------------------------ evaluation
    def panel(self, df: pd.DataFrame) -> Panel:
        """The standardized panel of `df` (series statistics of the fitted scaler)."""
        return self.scaled(build_panel(df, self.cfg))

    def windows(self, df: pd.DataFrame, split: Split, part: str, lookback: int | None = None) -> Windows:
        """Scaled windows of a split part (stride 1)."""
        return make_windows(self.panel(df), lookback or self.cfg.model.lookback, self.cfg.model.horizon, split, part)

    def predictor(self, device: str = "cpu") -> Predictor:
        """The fitted model as a predictor on standardized windows (column `y_hat` in backtests)."""
        return Predictor(Y_HAT, self.cfg.model.lookback, lambda x: predict(self.model_, x, device))

    def evaluate(self, df: pd.DataFrame, split: Split, part: str = "test", device: str = "cpu",
                 predictor: Predictor | None = None) -> Evaluation:
        """Forecast every window of a part (stride 1) with the model, or `predictor`; metrics on the
        original scale plus `mse_std`, `mae_std` on the standardized one."""
        pred = predictor or self.predictor(device)
        w = self.windows(df, split, part, lookback=pred.lookback)
        x, y = w.arrays()
        return self._evaluation(w, y, pred(x, w.series_index))

    def _evaluation(self, w: Windows, y_std: np.ndarray, y_hat_std: np.ndarray) -> Evaluation:
        return score(y_std, y_hat_std, w.series_index, self.scaler_.mean[:, 0], self.scaler_.std[:, 0],
                     self.mase_scale_)

    # ------------------------------------------------------------------ forecasting
    def inputs(self, history: pd.DataFrame) -> Inputs:
        """Standardized model inputs [S, L, F] at the end of every usable series of `history`."""
        cfg = self.cfg
        inputs = model_inputs(history, self.scaler_, cfg.model.lookback, cfg.freq, cfg.covariates, cfg.calendar)
        if cfg.level_input:
            inputs = replace(inputs, x=with_level(inputs.x, inputs.mean, inputs.std))
        return inputs

    def predict(self, history: pd.DataFrame, device: str = "cpu", levels: tuple[int, ...] = ()
                ) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
        """Next H steps after the end of every series in a long history frame.

        Returns the forecasts (`unique_id`, `ds`, `y_hat`, and `y_hat-lo-<L>`/`y_hat-hi-<L>` for each
        of `levels` from the stored conformal calibration) and the series skipped, each with its
        reason (too short, gaps or missing values in the lookback). Series unseen in training are
        standardized with their own history.
        """
        cfg, H = self.cfg, self.cfg.model.horizon
        inp = self.inputs(history)
        if not inp.ids:
            return pd.DataFrame({c: [] for c in (*FORECAST_COLUMNS, *interval_columns(levels))}), inp.skipped
        y_hat = predict(self.model_, inp.x, device) * inp.std[:, None] + inp.mean[:, None]  # [S, H]
        out = pd.DataFrame({ID: np.repeat(np.array(inp.ids, dtype=object), H),
                            TIME: future_times(inp.last, H, cfg.freq),
                            Y_HAT: y_hat.reshape(-1).astype(np.float64)})
        return forecast_intervals(out, history, self.conformal_, levels), inp.skipped

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write config.json, weights.pt, scaler.json (and intervals.json when calibrated) into a directory."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"config": self.cfg.to_dict(), "version": __version__, "family_module": self.family.module,
                "mase_scale": self.mase_scale_.tolist()}
        (path / "config.json").write_text(json.dumps(meta, indent=2))
        torch.save({k: v.cpu() for k, v in self.model_.state_dict().items()}, path / "weights.pt")
        (path / "scaler.json").write_text(json.dumps(self.scaler_.to_dict()))
        if self.conformal_ is not None:  # what intervals need at predict time: nothing is recomputed
            (path / "intervals.json").write_text(json.dumps(self.conformal_.to_dict()))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Forecaster:
        """Rebuild a saved forecaster on the CPU (whatever device it was trained on)."""
        path = Path(path)
        meta = json.loads((path / "config.json").read_text())
        self = cls(ForecasterConfig.from_dict(meta["config"], meta.get("family_module", "")))
        self.model_ = self.family.build(self.cfg.model)
        state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
        self.model_.load_state_dict(state)
        self.model_.eval()
        self.scaler_ = SeriesScaler.from_dict(json.loads((path / "scaler.json").read_text()))
        self.mase_scale_ = np.array(meta["mase_scale"])
        self.conformal_ = load_conformal(path)
        return self
