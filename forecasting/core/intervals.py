"""Split-conformal prediction intervals from rolling-origin backtest residuals, per horizon step.

The point model is left as it is. Its backtest residuals (forecasts made at cutoffs it did not
train past) are divided by a per-series scale, so one global model's residuals pool across
series of very different levels; per horizon step h the conformal quantile q[level, h] of the
scaled absolute residuals gives the band `y_hat ∓ q[level, h] · scale[series]`.

Two scales (`Conformal.mode`): "seasonal", the series' in-sample seasonal-naive MAE up to the cutoff,
and "residual" (normalized conformal), the series' own mean |residual| over its calibration windows,
taken leave-window-out at calibration so each score is divided by a scale its own window did not
shape. `choose_calibration` picks the mode by MSIS on the later calibration windows.

Everything works on long frames (`unique_id, ds, ...`), so it does not depend on the model's
internals. Columns follow Nixtla's naming: `y_hat-lo-95`, `y_hat-hi-95`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from forecasting.core.columns import CUTOFF, ID, TARGET, TIME, Y_HAT
from forecasting.core.data import parse_long
from forecasting.core.metrics import interval_metrics, msis, prefix_scales, series_scale

MODEL = Y_HAT
# A flat history has no scale: fall back to this fraction of its level (or to 1.0 at level 0), so the
# band stays in the series' units and proportional to its size instead of dividing by zero.


def column(level: int, side: str, model_col: str = MODEL) -> str:
    """The interval column of `model_col` at `level` percent: side "lo" or "hi" (`y_hat-lo-95`)."""
    if side not in ("lo", "hi"):
        raise ValueError(f"side must be 'lo' or 'hi', got {side!r}")
    return f"{model_col}-{side}-{int(level)}"


def interval_columns(levels, model_col: str = MODEL) -> list[str]:
    """Every lo/hi column of `levels`, lowest level first: lo-80, hi-80, lo-95, hi-95."""
    return [column(lv, side, model_col) for lv in sorted(levels) for side in ("lo", "hi")]


def history_scales(history: pd.DataFrame, season: int) -> pd.Series:
    """`series_scale` of every series of a long frame (`unique_id, ds, y`), indexed by unique_id."""
    ordered = history.sort_values([ID, TIME], kind="stable")
    return ordered.groupby(ID, sort=False)[TARGET].apply(lambda y: series_scale(y.to_numpy(), season))


SEASONAL, RESIDUAL = "seasonal", "residual"
MODES = (SEASONAL, RESIDUAL)


@dataclass(frozen=True)
class Conformal:
    """Per level and horizon step, the conformal quantile of the scaled absolute residuals."""

    levels: tuple[int, ...]  # ascending
    quantiles: tuple[tuple[float, ...], ...]  # [n_levels, H]
    season: int  # period of the per-series seasonal scale
    n_calibration: int  # residuals per step (the smallest count over steps)
    scaled: bool = True  # False: residuals in the series' own units (scale 1 everywhere)
    mode: str = SEASONAL  # which per-series scale divides the residuals (SEASONAL or RESIDUAL)
    series_scales: dict | None = None  # RESIDUAL: unique_id -> mean |residual| over its calibration windows
    unseen_ratio: float = 1.0  # RESIDUAL: median residual / seasonal scale; a series without its own scale
    choice: dict | None = None  # how `choose_calibration` chose the mode (validation MSIS of each)

    @property
    def q(self) -> np.ndarray:
        return np.asarray(self.quantiles, dtype=np.float64)  # [n_levels, H]

    @property
    def horizon(self) -> int:
        return len(self.quantiles[0])

    def to_dict(self) -> dict:
        return {"levels": list(self.levels), "quantiles": [list(r) for r in self.quantiles],
                "season": self.season, "n_calibration": self.n_calibration, "scaled": self.scaled,
                "mode": self.mode, "series_scales": self.series_scales, "unseen_ratio": self.unseen_ratio,
                "choice": self.choice}

    @classmethod
    def from_dict(cls, d: dict) -> Conformal:
        """Also reads files written before the residual mode existed (no `mode`: seasonal)."""
        scales = d.get("series_scales")
        return cls(tuple(int(v) for v in d["levels"]), tuple(tuple(float(v) for v in r) for r in d["quantiles"]),
                   int(d["season"]), int(d["n_calibration"]), bool(d.get("scaled", True)),
                   str(d.get("mode", SEASONAL)), None if scales is None else {k: float(v) for k, v in scales.items()},
                   float(d.get("unseen_ratio", 1.0)), d.get("choice"))

    def band_scales(self, uids, seasonal: np.ndarray | None) -> np.ndarray:
        """The scale [R] that multiplies q for rows of series `uids` [R], given their seasonal scales
        [R] (None only when no row needs one): the seasonal scale in SEASONAL mode; in RESIDUAL mode
        the series' stored scale, or seasonal × `unseen_ratio` for a series calibration did not see."""
        uids = np.asarray(uids, dtype=object)
        if not self.scaled:
            return np.ones(len(uids))
        own = (pd.Series(uids).map(self.series_scales or {}).to_numpy(np.float64) if self.mode == RESIDUAL
               else np.full(len(uids), np.nan))
        need = np.isnan(own)
        if need.any() and seasonal is None:
            raise ValueError("this calibration is per-series scaled: pass the series' scales (history_scales)")
        ratio = self.unseen_ratio if self.mode == RESIDUAL else 1.0
        return np.where(need, (np.ones(len(uids)) if seasonal is None else np.asarray(seasonal, np.float64)) * ratio,
                        own)


def load_conformal(folder) -> Conformal | None:
    """The calibration saved beside a model (`intervals.json`), or None when it has none."""
    from pathlib import Path

    path = Path(folder) / "intervals.json"
    return Conformal.from_dict(json.loads(path.read_text())) if path.exists() else None


def check_levels(levels) -> tuple[int, ...]:
    """Levels as sorted unique whole percentages strictly between 0 and 100 (ValueError otherwise)."""
    if not all(float(lv).is_integer() for lv in levels):
        raise ValueError(f"levels must be whole percentages, got {list(levels)}")
    levels = tuple(sorted({int(lv) for lv in levels}))
    if not levels or not all(0 < lv < 100 for lv in levels):
        raise ValueError(f"levels must be integers in (0, 100), got {levels}")
    return levels


def calibrate(residuals_scaled: np.ndarray, levels, season: int, scaled: bool = True) -> Conformal:
    """Conformal quantiles from scaled residuals [N, H] (NaN: missing): per step, the
    ceil((n + 1)·level/100)-th smallest |e| of its n finite residuals (the finite-sample correction
    that makes the coverage at least `level` for exchangeable residuals). Raises ValueError when a
    step has too few residuals for a level. Higher levels never get a narrower band."""
    levels = check_levels(levels)
    r = np.abs(np.asarray(residuals_scaled, dtype=np.float64))  # [N, H]
    if r.ndim != 2 or r.shape[1] == 0:
        raise ValueError(f"residuals must be [N, H], got shape {r.shape}")
    n = np.isfinite(r).sum(axis=0)  # [H]
    srt = np.sort(np.where(np.isfinite(r), r, np.inf), axis=0)  # missing values sort last
    rows = []
    for lv in levels:
        k = -(-(n + 1) * lv // 100)  # [H] integer ceil, no float rounding at exact products
        if (k > n).any():
            raise ValueError(f"level {lv} needs at least {int(np.ceil(lv / (100 - lv)))} residuals per step; "
                             f"step {int(np.argmax(k > n)) + 1} has n={int(n[np.argmax(k > n)])}")
        rows.append(srt[k - 1, np.arange(r.shape[1])])
    q = np.maximum.accumulate(np.stack(rows), axis=0)  # [n_levels, H] nested: bands never cross
    return Conformal(levels, tuple(tuple(map(float, row)) for row in q), int(season), int(n.min()), scaled)


def _scales_at(history: pd.DataFrame, keys: pd.DataFrame, season: int) -> np.ndarray:
    """`series_scale` of each (unique_id, cutoff) row of `keys` over that series' history with
    ds <= cutoff, without re-slicing: cumulative sums of the |seasonal| and |naive| differences."""
    # Sets of the unique ids, not of the columns: iterating an Arrow string column element by element
    # took most of the calibration's time (16.7 s of a demo).
    missing = sorted(set(keys[ID].unique()) - set(history[ID].unique()))
    if missing:
        raise ValueError(f"no history for series {missing[:5]}")
    h = history.sort_values([ID, TIME], kind="stable")
    out = np.empty(len(keys))
    pos = keys.groupby(ID, sort=False).indices
    cut = keys[TIME].to_numpy()
    for uid, part in h.groupby(ID, sort=False):
        if uid in pos:
            idx = pos[uid]
            n = np.searchsorted(part[TIME].to_numpy(), cut[idx], side="right")  # rows with ds <= cutoff
            out[idx] = prefix_scales(part[TARGET].to_numpy(np.float64), n, season)
    return out


def step_index(frame: pd.DataFrame, by: list[str]) -> np.ndarray:
    """The 0-based horizon step of each row: the rank of ds within its `by` group."""
    return frame.groupby(by, sort=False)[TIME].rank(method="first").to_numpy(np.int64) - 1


def _windows(f: pd.DataFrame, history: pd.DataFrame, season: int) -> pd.DataFrame:
    """One row per (unique_id, cutoff) window of a cross-validation frame, in `ngroup` order: its
    series, cutoff, first and last target ds and the seasonal scale of the history up to its cutoff."""
    w = f.groupby([ID, CUTOFF], sort=False).agg(first=(TIME, "min"), last=(TIME, "max")).reset_index()
    w["seasonal"] = _scales_at(history, w[[ID, CUTOFF]].rename(columns={CUTOFF: TIME}), season)
    return w


def calibrate_backtest(forecasts: pd.DataFrame, history: pd.DataFrame, levels, season: int,
                       model_col: str = MODEL, scaled: bool = True, mode: str = SEASONAL) -> Conformal:
    """Calibrate on a cross-validation frame (`unique_id, ds, cutoff, y, <model_col>`).

    SEASONAL: each row's residual y − forecast is divided by its series' `series_scale` over the
    history (`unique_id, ds, y`) up to and including its cutoff: what was known when the forecast
    was made. RESIDUAL: by the series' mean |residual| over its other calibration windows
    (`residual_scales`); the full mean is stored for prediction.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    f = forecasts.reset_index(drop=True)
    step = step_index(f, [ID, CUTOFF])  # [R]
    window = f.groupby([ID, CUTOFF], sort=False).ngroup().to_numpy()  # [R]
    H = int(step.max()) + 1
    resid = (f[TARGET] - f[model_col]).to_numpy(np.float64)  # [R]
    grid = np.full((int(window.max()) + 1, H), np.nan)  # [W windows, H]
    grid[window, step] = resid
    if not scaled:
        return calibrate(grid, levels, season, scaled=False)
    w = _windows(f, history, season)  # [W] rows, in window-id order
    if mode == SEASONAL:
        return calibrate(grid / w["seasonal"].to_numpy()[:, None], levels, season)
    loo, full, ratio = residual_scales(grid, w)
    conf = calibrate(grid / loo[:, None], levels, season)
    return replace(conf, mode=RESIDUAL, series_scales=full, unseen_ratio=ratio)


def residual_scales(grid: np.ndarray, w: pd.DataFrame) -> tuple[np.ndarray, dict, float]:
    """Per window [W], its series' mean |residual| over the series' windows whose targets do not
    overlap it (leave-window-out: with cutoffs one row apart, a neighbour shares most of its
    targets); the full per-series means {unique_id: scale} of the series that had one; and the
    median full / seasonal ratio over them. A window with no other window to learn from, or a zero
    scale, gets its seasonal scale × ratio, as does an unseen series at prediction time."""
    absr = np.abs(grid)  # [W, H]
    tot, cnt = np.nansum(absr, axis=1), np.isfinite(absr).sum(axis=1)  # [W] each
    cutoff, first, last = (w[c].to_numpy() for c in (CUTOFF, "first", "last"))  # [W] each
    seasonal = w["seasonal"].to_numpy(np.float64)  # [W]
    loo = np.full(len(w), np.nan)
    full, ratios = {}, []
    for uid, idx in w.groupby(ID, sort=False).indices.items():
        idx = idx[np.argsort(cutoff[idx], kind="stable")]  # this series' windows by time
        lo = np.searchsorted(last[idx], first[idx], side="left")  # first window ending at or after my start
        hi = np.searchsorted(first[idx], last[idx], side="right")  # one past the last starting by my end
        cs, cc = np.r_[0.0, np.cumsum(tot[idx])], np.r_[0, np.cumsum(cnt[idx])]
        s_out, c_out = cs[-1] - (cs[hi] - cs[lo]), cc[-1] - (cc[hi] - cc[lo])  # [n] outside the overlap
        loo[idx] = np.divide(s_out, c_out, out=np.full(len(idx), np.nan), where=c_out > 0)
        if (loo[idx] > 0).any() and cs[-1] > 0:  # the series is "seen": its own scale is used for it
            full[uid] = float(cs[-1] / cc[-1])
            ratios.append(full[uid] / seasonal[idx[-1]])
    ratio = float(np.median(ratios)) if ratios else 1.0
    bad = ~(loo > 0)  # no other window, or a zero scale
    loo[bad] = seasonal[bad] * ratio
    return loo, full, ratio


def choose_calibration(forecasts: pd.DataFrame, history: pd.DataFrame, levels, season: int,
                       model_col: str = MODEL, score_share: float = 1 / 3) -> Conformal:
    """Calibrate in the mode with the lower MSIS at the highest level, measured on calibration data
    only: each series' later `score_share` of windows are scored with bands calibrated on its earlier
    windows that end before them; the winner is then recalibrated on every window. The choice and
    both validation MSIS are kept in `Conformal.choice`. Falls back to SEASONAL (recorded) when the
    earlier windows are too few to calibrate a level."""
    levels = check_levels(levels)
    early, late = split_windows(forecasts, score_share)
    scores, reason = {}, None if len(early) and len(late) else "no earlier windows to calibrate on"
    try:
        scores = _validation_msis(early, late, history, levels, season, model_col) if reason is None else {}
    except ValueError as err:  # too few earlier windows for a level
        scores, reason = {}, str(err)
    chosen = min(scores, key=scores.get) if scores else SEASONAL
    conf = calibrate_backtest(forecasts, history, levels, season, model_col, mode=chosen)
    choice = {"chosen": chosen, "level": levels[-1], "validation_msis": scores,
              "windows": {"calibrate": int(early.groupby([ID, CUTOFF]).ngroups),
                          "score": int(late.groupby([ID, CUTOFF]).ngroups)}}
    return replace(conf, choice=choice | ({"fallback": reason} if reason else {}))


def split_windows(forecasts: pd.DataFrame, score_share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A cross-validation frame cut by time per series: its last ceil(share · n) windows (at least
    one, at most n − 1) to score, and the earlier windows whose targets end before the first of
    them starts (the windows in between would share targets with both) to calibrate."""
    f = forecasts.reset_index(drop=True)
    w = f.groupby([ID, CUTOFF], sort=False).agg(first=(TIME, "min")).reset_index()
    w = w.sort_values([ID, CUTOFF], kind="stable")
    n = w.groupby(ID)[CUTOFF].transform("size").to_numpy()
    rank = w.groupby(ID).cumcount().to_numpy()
    late = rank >= n - np.clip(np.ceil(score_share * n), 1, np.maximum(n - 1, 1))  # [W]
    start = w[late].groupby(ID)["first"].min()  # first scored target of each series
    key = pd.MultiIndex.from_frame(f[[ID, CUTOFF]])
    late_keys = pd.MultiIndex.from_frame(w.loc[late, [ID, CUTOFF]])
    is_late = key.isin(late_keys)
    last = f.groupby([ID, CUTOFF], sort=False)[TIME].transform("max")
    before = (last < f[ID].map(start)).to_numpy()  # NaN start (a series with one window) compares False
    return f[~is_late & before], f[is_late]


def _validation_msis(early: pd.DataFrame, late: pd.DataFrame, history: pd.DataFrame, levels: tuple[int, ...],
                     season: int, model_col: str) -> dict[str, float]:
    """Per mode, the MSIS at the highest level of the `late` windows with bands calibrated on `early`;
    each row scaled, as in M4, by its series' seasonal-naive MAE up to its cutoff (the same for both)."""
    late = late.reset_index(drop=True)
    window = late.groupby([ID, CUTOFF], sort=False).ngroup().to_numpy()  # [R]
    scale = _windows(late, history, season)["seasonal"].to_numpy()[window]  # [R]
    lv, out = levels[-1], {}
    for mode in MODES:
        conf = calibrate_backtest(early, history, levels, season, model_col, mode=mode)
        frame = backtest_intervals(late, history, conf, (lv,), model_col)  # same rows, same order
        out[mode] = msis(frame[TARGET].to_numpy(np.float64), frame[column(lv, "lo", model_col)].to_numpy(),
                         frame[column(lv, "hi", model_col)].to_numpy(), scale, lv)
    return out


def _put_bands(out: pd.DataFrame, conf: Conformal, levels, step: np.ndarray, scale: np.ndarray,
               model_col: str) -> pd.DataFrame:
    for lv in levels:
        width = conf.q[conf.levels.index(lv)][step] * scale  # [R]
        out[column(lv, "lo", model_col)] = out[model_col] - width
        out[column(lv, "hi", model_col)] = out[model_col] + width
    return out


def _levels_of(conf: Conformal, levels) -> tuple[int, ...]:
    levels = conf.levels if levels is None else check_levels(levels)
    missing = [lv for lv in levels if lv not in conf.levels]
    if missing:
        raise ValueError(f"level {missing[0]} was not calibrated; calibrated levels: {list(conf.levels)}")
    return levels


def add_intervals(forecast: pd.DataFrame, scales: pd.Series | dict | None, conf: Conformal, levels=None,
                  model_col: str = MODEL) -> pd.DataFrame:
    """`forecast` (rows of each unique_id in horizon order) with lo/hi columns
    `y_hat ∓ q[level, step] · scale[unique_id]`; the point column is unchanged. `scales` are the
    series' seasonal scales (`history_scales`): the scale itself in SEASONAL mode, and in RESIDUAL
    mode only for series without a stored scale. None is fine when no row needs one."""
    levels = _levels_of(conf, levels)
    out = forecast.copy()
    step = out.groupby(ID, sort=False).cumcount().to_numpy()  # [R]
    if step.max(initial=0) >= conf.horizon:
        raise ValueError(f"a series has {step.max() + 1} forecast rows; calibrated horizon is {conf.horizon}")
    return _put_bands(out, conf, levels, step, _row_scales(out, scales, conf), model_col)


def _row_scales(forecast: pd.DataFrame, scales, conf: Conformal) -> np.ndarray:
    seasonal = None
    if scales is not None:
        seasonal = forecast[ID].map(pd.Series(scales) if isinstance(scales, dict) else scales).to_numpy(np.float64)
    s = conf.band_scales(forecast[ID].to_numpy(), seasonal)
    if np.isnan(s).any():
        raise ValueError(f"no scale for series {sorted(set(forecast[ID][np.isnan(s)]))[:5]}")
    return s


# --------------------------------------------------------------------------- with models


def forecast_intervals(forecast: pd.DataFrame, history: pd.DataFrame, conf: Conformal | None, levels,
                       model_col: str = MODEL) -> pd.DataFrame:
    """`forecast` (the next steps after `history`) with lo/hi columns at `levels`; unchanged when
    `levels` is empty. Seasonal scales come from the history given, as at calibration; in RESIDUAL
    mode only series without a stored scale need them."""
    if not levels:
        return forecast
    if conf is None:
        raise ValueError("this model has no calibrated prediction intervals (trained with --level and no value, "
                         "or before intervals existed); retrain it to get them")
    scales = None
    need = set(forecast[ID].unique()) - (set(conf.series_scales or {}) if conf.mode == RESIDUAL else set())
    if conf.scaled and need:
        known = history[history[ID].isin(need)]
        scales = history_scales(parse_long(known[[ID, TIME, TARGET]], numeric=[TARGET]), conf.season)
    return add_intervals(forecast, scales, conf, levels, model_col)


def backtest_intervals(frame: pd.DataFrame, history: pd.DataFrame, conf: Conformal, levels,
                       model_col: str = MODEL) -> pd.DataFrame:
    """A cross-validation frame (`unique_id, ds, cutoff, ...`) with lo/hi columns of `model_col`.
    SEASONAL: each window's scale from its series' history up to its cutoff (nothing after it);
    RESIDUAL: the series' stored scale (seasonal up to the cutoff × ratio for an unseen series)."""
    levels = _levels_of(conf, levels)
    out = frame.reset_index(drop=True).copy()
    step = step_index(out, [ID, CUTOFF])  # [R]
    seasonal = None
    if conf.scaled:
        window = out.groupby([ID, CUTOFF], sort=False).ngroup().to_numpy()
        keys = out.drop_duplicates([ID, CUTOFF])[[ID, CUTOFF]].rename(columns={CUTOFF: TIME})
        seasonal = _scales_at(history, keys.reset_index(drop=True), conf.season)[window]
    return _put_bands(out, conf, levels, step, conf.band_scales(out[ID].to_numpy(), seasonal), model_col)


def interval_scores(frame: pd.DataFrame, levels, mase_scale: pd.Series, model_col: str = MODEL) -> dict[str, float]:
    """Coverage, MSIS and scaled pinball per level of a frame with `y` and lo/hi columns; `mase_scale`
    (by unique_id) is each series' in-sample seasonal-naive MAE (the M4 MSIS denominator)."""
    y = frame[TARGET].to_numpy(np.float64)
    bounds = {lv: (frame[column(lv, "lo", model_col)].to_numpy(), frame[column(lv, "hi", model_col)].to_numpy())
              for lv in levels}
    return interval_metrics(y, bounds, frame[ID].map(mase_scale).to_numpy(np.float64))
