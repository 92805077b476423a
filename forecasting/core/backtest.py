"""Rolling-origin backtesting (cross-validation) over the end of each series' history.

K cutoffs per series, `step` rows apart, the last one leaving exactly H rows before `end`.
At a cutoff the forecaster sees the `lookback` rows before it and nothing after; its H
forecasts are compared with the next H rows. The output is the long frame of Nixtla's
`cross_validation`: `unique_id, ds, cutoff, y` and one forecast column per predictor
(the model's column is `y_hat`), where `cutoff` is the timestamp of the last row seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.core.columns import CUTOFF, ID, TARGET, TIME
from forecasting.core.config import BacktestConfig  # noqa: F401  (re-exported)
from forecasting.core.evaluation import Evaluation, PredictFn, Predictor, in_process, point_metrics, score
from forecasting.core.metrics import mse
from forecasting.core.windows import Panel, Windows

METRICS = ("mase", "smape", "mae", "mse", "mse_std")


@dataclass
class Backtest:
    """The forecasts frame and its metrics per predictor, overall and per cutoff."""

    forecasts: pd.DataFrame  # unique_id, ds, cutoff, y, <predictor>...
    metrics: pd.DataFrame  # predictor, metric values (overall)
    by_cutoff: pd.DataFrame  # predictor, cutoff, metric values


def cutoffs(end: np.ndarray, horizon: int, lookback: int, cfg: BacktestConfig,
            lo: np.ndarray | None = None) -> list[np.ndarray]:
    """Per series, the local row of each cutoff's first target, oldest first.

    The last cutoff's targets end at `end`; targets stay at or after `lo` (the part's start)
    and inputs need `lookback` rows before the cutoff.
    """
    step = cfg.step or horizon
    out = []
    for i, e in enumerate(np.asarray(end)):
        first_ok = max(lookback, 0 if lo is None else int(np.asarray(lo)[i]))
        last = int(e) - horizon
        n = (last - first_ok) // step + 1 if last >= first_ok else 0
        if cfg.n_windows:
            n = min(n, cfg.n_windows)
        out.append(np.arange(last - (n - 1) * step, last + 1, step, dtype=np.int64) if n > 0 else
                   np.zeros(0, dtype=np.int64))
    return out


def cutoff_windows(panel: Panel, lookback: int, horizon: int, end: np.ndarray, cfg: BacktestConfig,
                   lo: np.ndarray | None = None) -> tuple[Windows, np.ndarray]:
    """Windows whose targets start at each cutoff, and the cutoff's local row [N]."""
    rows = cutoffs(end, horizon, lookback, cfg, lo)
    local = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    series = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    starts = panel.offsets[:-1][series] + local - lookback  # inputs [c - L, c), targets [c, c + H)
    return Windows(panel, lookback, horizon, starts.astype(np.int64)), local


def _times(panel: Panel, series: np.ndarray, rows: np.ndarray) -> pd.DatetimeIndex:
    """Timestamps of local `rows` of `series` (same shapes, flattened)."""
    step = pd.tseries.frequencies.to_offset(panel.freq)
    starts = pd.DatetimeIndex(panel.starts)[series]
    try:
        return starts + pd.to_timedelta(rows * pd.Timedelta(step).value, unit="ns")
    except ValueError:  # calendar frequencies: walk the calendar per series
        grids = [panel.timestamps(i) for i in range(len(panel.ids))]
        return pd.DatetimeIndex([grids[s][r] for s, r in zip(series, rows, strict=True)])


def cross_validation(panel: Panel, predictors: list[Predictor], horizon: int, end: np.ndarray,
                     mean: np.ndarray, std: np.ndarray, mase_scale: np.ndarray,
                     cfg: BacktestConfig = BacktestConfig(), lo: np.ndarray | None = None,
                     predict: PredictFn = in_process) -> Backtest:
    """Backtest every predictor at the same cutoffs of a standardized `panel`.

    `mean`/`std` [S] undo the standardization of the target; `mase_scale` [S] is each series'
    in-sample seasonal-naive error. Every predictor sees the same targets: the windows are cut
    with the longest lookback among them. `predict` runs a predictor on the windows (here, or in
    parts elsewhere); scoring stays here, on all the windows at once.
    """
    L = max(p.lookback for p in predictors)
    w, local = cutoff_windows(panel, L, horizon, end, cfg, lo)
    if len(w) == 0:
        raise ValueError(f"no backtest cutoff fits: each series needs lookback {L} + horizon {horizon} "
                         "rows before the end of the backtested part")
    x, y_std = w.arrays()  # [N, L, F], [N, H]
    series = w.series_index
    rows = local[:, None] + np.arange(horizon)  # [N, H] local rows of the targets
    frame = pd.DataFrame({
        ID: np.repeat(np.asarray(panel.ids, dtype=object)[series], horizon),
        TIME: _times(panel, np.repeat(series, horizon), rows.reshape(-1)),
        CUTOFF: np.repeat(_times(panel, series, local - 1), horizon),
    })
    overall, per_cut = [], []
    for p, y_hat_std in zip(predictors, predict(predictors, x, series), strict=True):  # [N, H] each
        ev = score(y_std, y_hat_std, series, mean, std, mase_scale)
        if "y" not in frame:
            frame[TARGET] = ev.y.reshape(-1)
        frame[p.name] = ev.y_hat.reshape(-1)
        overall.append({"predictor": p.name, **{k: ev.metrics[k] for k in METRICS}})
        per_cut += _by_cutoff(p.name, frame[CUTOFF].to_numpy()[::horizon], ev, y_std, y_hat_std, mase_scale)
    return Backtest(frame, pd.DataFrame(overall), pd.DataFrame(per_cut))


def _by_cutoff(name: str, cut: np.ndarray, ev: Evaluation, y_std: np.ndarray, y_hat_std: np.ndarray,
               mase_scale: np.ndarray) -> list[dict]:
    """Metrics of one predictor per cutoff timestamp (the windows of all series at that cutoff)."""
    out = []
    for c in np.unique(cut):
        k = cut == c  # [N]
        m = point_metrics(ev.y[k], ev.y_hat[k], mase_scale[ev.series[k]])
        m["mse_std"] = mse(y_std[k], y_hat_std[k])
        out.append({"predictor": name, CUTOFF: pd.Timestamp(c), **{key: m[key] for key in METRICS},
                    "n_series": int(k.sum())})
    return out
