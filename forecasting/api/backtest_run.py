"""`forecasting backtest`: rolling-origin backtests of a registered model or a model family over
the end of a processed dataset, beside the baselines, at the same cutoffs.

Everything a backtest learns comes from rows before its first cutoff: the family's fit, the
ridge baseline, the MASE scales and (for series a registered model has not seen) the series'
standardization. A registered model keeps its own stored statistics for the series it knows;
cutoffs inside the data it was trained on make an in-sample backtest, which the result flags.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from forecasting.api.forecaster import Fitted, Forecaster, ForecasterConfig
from forecasting.core.backtest import Backtest, BacktestConfig, cutoffs
from forecasting.core.columns import CUTOFF, ID, Y_HAT
from forecasting.core.data import Split
from forecasting.core.errors import DataError
from forecasting.core.evaluation import PredictFn, in_process
from forecasting.core.intervals import Conformal, backtest_intervals, interval_scores
from forecasting.core.scaling import SeriesScaler


@dataclass
class BacktestResult:
    backtest: Backtest
    what: str  # "etth1-gru@champion (v3)" or "gru (fitted before the first cutoff)"
    n_cutoffs: int
    in_sample: bool  # a registered model whose training data reach past the first cutoff


def cutoff_split(df: pd.DataFrame, horizon: int, lookback: int, cfg: BacktestConfig, val_frac: float = 0.1) -> Split:
    """Per series: everything before the first cutoff is for fitting (its last `val_frac` for
    validation), the rest holds the K cutoffs' targets (the 'test' part here)."""
    lengths = df.groupby(ID, sort=False).size()
    n = lengths.to_numpy().astype(np.int64)
    rows = cutoffs(n, horizon, lookback, cfg)
    short = [u for u, r in zip(lengths.index, rows, strict=True) if len(r) < max(cfg.n_windows, 1)]
    if short:
        raise DataError(f"series {short[0]!r} ({len(short)} in all) is too short for {cfg.n_windows} cutoff(s) "
                        f"with lookback {lookback} and horizon {horizon}")
    first = np.array([r[0] for r in rows], dtype=np.int64)
    val = np.maximum(np.round(first * val_frac).astype(np.int64), horizon)
    return Split(tuple(map(str, lengths.index)), n, first - val, first)


def _scaling(f: Forecaster, df: pd.DataFrame, split: Split) -> Forecaster:
    """A copy of the fitted `f` whose series statistics and MASE scales come from the rows before the
    first cutoff for series it does not know (its own stored statistics for the others)."""
    own = Forecaster(f.cfg)
    own.fit_scaler(df, replace(split, train_end=split.val_end))  # rows before the first cutoff only
    known = np.array([u in set(f.scaler_.ids) for u in own.scaler_.ids])
    mean, std = own.scaler_.mean.copy(), own.scaler_.std.copy()
    if known.any():
        idx = f.scaler_.index([u for u, k in zip(own.scaler_.ids, known, strict=True) if k])
        mean[known], std[known] = f.scaler_.mean[idx], f.scaler_.std[idx]
    return f.rescaled(SeriesScaler(own.scaler_.ids, mean, std), own.mase_scale_)


def run_backtest(df: pd.DataFrame, forecaster: Fitted, split: Split, cfg: BacktestConfig,
                 predict: PredictFn = in_process) -> Backtest:
    """The model and the baselines (naive, seasonal naive per period, ridge fitted before the first
    cutoff) at the K cutoffs over the end of every series; `predict` runs each on the windows."""
    baselines, _ = forecaster.baselines(df, split, (forecaster.cfg.model.lookback,))
    return forecaster.cross_validation(df, split.lengths, split.val_end, cfg, [forecaster.predictor(), *baselines],
                                       predict)


def with_intervals(bt: Backtest, df: pd.DataFrame, f: Fitted, conf: Conformal | None,
                   levels: tuple[int, ...]) -> Backtest:
    """The backtest with the model's interval columns at `levels` (each window scaled by its series'
    history up to its cutoff) and their coverage, MSIS and pinball in the model's metrics row."""
    if not levels:
        return bt
    if conf is None:
        raise DataError("this model has no calibrated prediction intervals; backtest it without --level")
    frame = backtest_intervals(bt.forecasts, df, conf, levels)
    scores = interval_scores(frame, levels, f.mase_scales())
    metrics = bt.metrics.copy()
    for k, v in scores.items():
        metrics.loc[metrics["predictor"] == Y_HAT, k] = v
    return replace(bt, forecasts=frame, metrics=metrics)


def backtest_registered(df: pd.DataFrame, forecaster: Fitted, cfg: BacktestConfig, what: str,
                        trained_until: pd.Timestamp | None = None, levels: tuple[int, ...] = (),
                        predict: PredictFn = in_process) -> BacktestResult:
    """Backtest a loaded registered model (no refit) over the end of `df`, with its stored intervals;
    `predict` runs the model and the baselines on the cutoffs' windows (default: here)."""
    m = forecaster.cfg.model
    split = cutoff_split(df, m.horizon, m.lookback, cfg)
    g = _scaling(forecaster, df, split)
    bt = with_intervals(run_backtest(df, g, split, cfg, predict), df, g, forecaster.conformal_, levels)
    first = bt.forecasts[CUTOFF].min()
    return BacktestResult(bt, what, int(bt.by_cutoff[CUTOFF].nunique()),
                          bool(trained_until is not None and trained_until > first))


def backtest_family(df: pd.DataFrame, cfg: ForecasterConfig, bt_cfg: BacktestConfig,
                    levels: tuple[int, ...] = (), predict: PredictFn = in_process) -> BacktestResult:
    """Fit `cfg` on the rows before the first cutoff (early stopping on their last tenth, where its
    intervals are calibrated too), then backtest it with the baselines at the K cutoffs (`predict`
    runs them on the windows; the fit stays in this process)."""
    split = cutoff_split(df, cfg.model.horizon, cfg.model.lookback, bt_cfg)
    f = Forecaster(cfg)
    f.fit(df, split)
    # Calibrated on every window of the fitting rows' validation tenth, before the first cutoff.
    conf = f.calibrate(df, levels, split.val_end, split.train_end)
    # MASE scales from every row before the first cutoff, as for a registered model: both modes score
    # the same cutoffs alike (the fit's own scales stop at its validation tenth).
    g = _scaling(f, df, split)
    bt = with_intervals(run_backtest(df, g, split, bt_cfg, predict), df, g, conf, levels)
    return BacktestResult(bt, f"{cfg.family} (fitted before the first cutoff)", int(bt.by_cutoff[CUTOFF].nunique()),
                          False)
