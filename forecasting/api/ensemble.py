"""An equal-weight ensemble of fitted forecasters (refits of the K best trials of a search, each
with one or more seeds).

Combining several good configurations is how N-BEATS and the strongest M4 entries got their
accuracy: the mean, or the median (N-BEATS's and Smyl's choice), which one bad member cannot drag.
The members share the dataset, split and horizon, so they share the per-series scaler; each reads
its own lookback from the end of a window cut with the longest one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting.api.forecaster import Fitted, Forecaster, ForecasterConfig
from forecasting.core.columns import ID, TIME, Y_HAT
from forecasting.core.data import Split
from forecasting.core.evaluation import Evaluation, Predictor
from forecasting.core.intervals import forecast_intervals, load_conformal
from forecasting.core.training import FitResult

COMBINES = {"mean": np.mean, "median": np.median}  # how members' forecasts become one, per point


class Ensemble(Fitted):
    """The mean or median forecast of `members` (`Forecaster`s of one dataset and horizon), with the
    front door of one: fit, predict, cross_validation, calibrate, save, load."""

    def __init__(self, members: list[Forecaster], combine: str = "mean"):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if len({m.cfg.model.horizon for m in members}) != 1:
            raise ValueError("ensemble members must share the horizon")
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {', '.join(COMBINES)}, got {combine!r}")
        self.members, self.combine = members, combine
        self.conformal_ = None  # the ensemble's own interval calibration (its residuals, not a member's)

    @classmethod
    def of(cls, cfgs: list[ForecasterConfig], combine: str = "mean") -> Forecaster | Ensemble:
        """One unfitted forecaster per configuration: itself when there is one, else their ensemble."""
        members = [Forecaster(c) for c in cfgs]
        return members[0] if len(members) == 1 else cls(members, combine)

    def fit(self, df: pd.DataFrame, split: Split, callback=None) -> list[FitResult]:
        """Fit every member on the same split (each with its own early stopping)."""
        return [m.fit(df, split, callback) for m in self.members]

    @property
    def cfg(self) -> ForecasterConfig:
        """The configuration of the member with the longest lookback (what the ensemble reads)."""
        return max(self.members, key=lambda m: m.cfg.model.lookback).cfg

    @property
    def scaler_(self):
        return self.members[0].scaler_

    @property
    def mase_scale_(self) -> np.ndarray:
        return self.members[0].mase_scale_

    @property
    def fit_result_(self):
        return self.members[0].fit_result_

    def rescaled(self, scaler, mase_scale: np.ndarray) -> Ensemble:
        """Every member reading series through other statistics (see `Forecaster.rescaled`)."""
        ens = Ensemble([m.rescaled(scaler, mase_scale) for m in self.members], self.combine)
        ens.conformal_ = self.conformal_
        return ens

    @property
    def n_parameters(self) -> int:
        return sum(m.n_parameters for m in self.members)

    def member_forecasts(self, x: np.ndarray, device: str = "cpu") -> np.ndarray:
        """Every member's forecasts [M, N, H] of standardized windows x [N, L_max, F]."""
        L = self.cfg.model.lookback
        # Each member reads its own lookback and its own columns: the level column is last, so a
        # member without it reads the first columns of the widest member's windows.
        preds = [(m.predictor(device), m.cfg.model.n_features) for m in self.members]
        return np.stack([p.fn(x[:, L - p.lookback:, :F]) for p, F in preds])

    def predictor(self, device: str = "cpu") -> Predictor:
        """Mean or median of the members' forecasts on standardized windows x [N, L_max, F] -> [N, H]
        (the per-series scaling is shared and monotone, so the median commutes with it)."""
        combine = COMBINES[self.combine]
        return Predictor(Y_HAT, self.cfg.model.lookback, lambda x: combine(self.member_forecasts(x, device), axis=0))

    def evaluate(self, df: pd.DataFrame, split: Split, part: str = "test", device: str = "cpu") -> Evaluation:
        return self.widest.evaluate(df, split, part, predictor=self.predictor(device))

    @property
    def widest(self) -> Forecaster:
        """The member with the most input columns (with the level column, if any member reads it)."""
        return max(self.members, key=lambda m: m.cfg.model.n_features)

    def panel(self, df: pd.DataFrame):
        """The standardized panel of `df` (the members share the scaler), with every member's columns."""
        return self.widest.panel(df)

    def windows(self, df: pd.DataFrame, split: Split, part: str):
        return self.widest.windows(df, split, part, lookback=self.cfg.model.lookback)

    def predict(self, history: pd.DataFrame, device: str = "cpu", levels: tuple[int, ...] = ()
                ) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
        """Mean or median of the members' forecasts of the series every member could forecast, with
        the ensemble's intervals at `levels`."""
        outs, skipped = zip(*(m.predict(history, device) for m in self.members), strict=True)
        frame = pd.concat(outs, ignore_index=True)
        counts = frame.groupby([ID, TIME], sort=False)[Y_HAT].transform("size")
        every = frame[counts == len(self.members)]
        combined = every.groupby([ID, TIME], sort=False, as_index=False)[Y_HAT].agg(self.combine)
        return forecast_intervals(combined, history, self.conformal_, levels), sorted(set().union(*map(set, skipped)))

    def save(self, path: str | Path) -> Path:
        """members/<i>/ per member plus ensemble.json."""
        path = Path(path)
        for i, m in enumerate(self.members):
            m.save(path / "members" / str(i))
        (path / "ensemble.json").write_text(json.dumps({"members": len(self.members), "combine": self.combine}))
        if self.conformal_ is not None:
            (path / "intervals.json").write_text(json.dumps(self.conformal_.to_dict()))
        return path


    @classmethod
    def load(cls, path: str | Path) -> Ensemble:
        """A saved ensemble, on the CPU."""
        path = Path(path)
        meta = json.loads((path / "ensemble.json").read_text())
        ens = cls([Forecaster.load(path / "members" / str(i)) for i in range(meta["members"])],
                  meta.get("combine", "mean"))  # saved before the median existed: the mean
        ens.conformal_ = load_conformal(path)
        return ens


def members(f: Fitted) -> list[Forecaster]:
    """The fitted forecasters a model consists of: an ensemble's members, or the forecaster itself."""
    return list(f.members) if isinstance(f, Ensemble) else [f]


def load_forecaster(path: str | Path) -> Forecaster | Ensemble:
    """A saved `Forecaster` or `Ensemble`, whichever `path` holds, on the CPU."""
    path = Path(path)
    return Ensemble.load(path) if (path / "ensemble.json").exists() else Forecaster.load(path)
