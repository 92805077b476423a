"""M4 Hourly accuracy benchmark: one global GRU and one LSTM against the official scores.

414 series, horizon 48, seasonality 24. Metrics exactly as the competition defines them:
per-series sMAPE (percent) and MASE (scale: in-sample seasonal naive, m = 24, over the whole
training series), each averaged over the series, and OWA = (sMAPE / 18.383 + MASE / 2.395) / 2
against the published Naive2 scores. Model selection uses the last 48 points of every training
series as validation (Optuna, validation MSE on the per-series standardized scale); the selected
configuration is then refit on the full training series for the epochs validation chose, and
forecasts the 48 test points from the end of each training series. Series have different
lengths and start dates; each gets a synthetic hourly index (only relative positions matter),
so calendar features are off.

Prediction intervals (80 and 95 %): split conformal on rolling-origin residuals over the end of
the training series only. For each selected configuration a calibration copy is trained, like the
final refit, on each series less its last K·48 points and forecasts from K cutoffs 48 points apart
(the last one ends where the test starts); its residuals, divided by a per-series scale (the
in-sample seasonal naive MAE up to the cutoff, or the series' own mean |residual| over its other
calibration windows: normalized conformal), give per-step quantiles that widen the final model's test
forecasts. Which scale and how many windows to use is chosen on the last training window (calibrating
on the earlier ones), never on test. Scored with the M4 MSIS (95 %) and ACD against the official table.

Statistical rows in the same run: statsforecast's MSTL (seasons 24 and 168 where a series holds two
cycles of 168, else 24; AutoETS "ZZN" trend), AutoETS (m = 24) and AutoTheta (m = 24), each fitted per
series on its full training part (no tuning) and forecasting the 48 test points, scored the same way,
with their CPU and wall seconds. They do not depend on the seed: they are computed once per data set
and cached in `<out>/m4_hourly_statistical.json` (keyed by the number of series and a hash of the
training data), which later seeds reuse.

NeuralForecast's N-HiTS in the same run (see `_nhits.py`): the library's defaults with input size
3 x 48 = 144 and `scaler_type="robust"`, fitted on the full training series (what the final refits
learn from), forecasting the 48 test points; one row per seed, cached in `<out>/m4_hourly_nhits.json`.
`--nhits-only` computes only the seed's N-HiTS row and re-merges; without neuralforecast it is skipped
and the report says so.

Families: any registered one (`--families`; default GRU and LSTM). The recurrent families search the
benchmark's own space below; any other searches the same shared ranges with its default space for the
periods (24, 168), its first trial from `starting_point` with the shared prior values where they fit.

    python benchmarks/m4_hourly.py [--quick] [--out DIR] [--data-dir DIR] [--trials N] [--max-epochs N]
                                   [--families gru lstm ...]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _nhits as N  # noqa: E402
import _seeds as S  # noqa: E402

from forecasting import families  # noqa: E402
from forecasting.api import ensemble_check, family_mix  # noqa: E402
from forecasting.api.ensemble import Ensemble  # noqa: E402
from forecasting.api.fitcache import FitCache  # noqa: E402
from forecasting.api.forecaster import Forecaster, ForecasterConfig  # noqa: E402
from forecasting.core.data import Split  # noqa: E402
from forecasting.core.intervals import (  # noqa: E402
    RESIDUAL,
    SEASONAL,
    Conformal,
    add_intervals,
    calibrate_backtest,
    column,
    history_scales,
)
from forecasting.core.metrics import interval_metrics  # noqa: E402
from forecasting.core.training import TrainConfig  # noqa: E402
from forecasting.families import Choice, Param  # noqa: E402
from forecasting.families.recurrent import ModelConfig, RecurrentSpace  # noqa: E402
from forecasting.pipeline import search  # noqa: E402
from forecasting.stats.predictors import MODELS as STAT_MODELS  # noqa: E402
from forecasting.stats.predictors import fitting_periods, make_model  # noqa: E402
from forecasting.tuning.space import SearchSpace, apply_params, starting_point  # noqa: E402

NAME = "m4_hourly"
H, M = 48, 24
SEASONS = (24, 168)
NAIVE2_SMAPE, NAIVE2_MASE = 18.383, 2.395
from forecasting.families import DEFAULT as FAMILIES  # noqa: E402  (the families `train` tunes by default)

ENSEMBLE = 3
# Our rows per family: the best trial's refit, and the mean and the median of the 3 best trials' refits.
VARIANTS = {"single": "best trial", "ensemble": f"mean of {ENSEMBLE} best trials",
            "median": f"median of {ENSEMBLE} best trials",
            "checked": f"train's default: the mean of {ENSEMBLE} best or the best, by the ensemble check"}
LEVELS = (80, 95)
MSIS_TARGET, COVERAGE_TOL = 7.9, 0.02  # issue 12: MSIS <= 7.9 and 95 % coverage within 2 points
# Method choices for the intervals, each scored on the last training window: residuals scaled by the
# seasonal naive MAE, by the series' own mean |residual| (leave-window-out; needs several windows), or raw;
# every calibration window or only the most recent one. (scaled, windows, mode)
OPTIONS = {"scaled, all windows": (True, "all", SEASONAL), "scaled, last window": (True, "last", SEASONAL),
           "unscaled, all windows": (False, "all", SEASONAL), "unscaled, last window": (False, "last", SEASONAL),
           "residual-scaled, all windows": (True, "all", RESIDUAL)}
OFFICIAL_PI = ("238", "118", "ARIMA", "ETS", "Naive")  # best hourly MSIS, the M4 winner, benchmarks
SHOWN = ("Smyl", "Doornik", "Pawlikowski", "Jaganathan", "sNaive", "Theta", "Naive2", "MLP", "RNN", "Naive")

# The recurrent families (GRU and LSTM), one space. The highway (on/off), where it starts and the training loss are searched;
# selection is on validation MAE (the M4 scores are absolute errors).
SPACE = SearchSpace(
    lookbacks=(96, 168, 336), lr=(3e-4, 3e-3), batch_sizes=(128, 256, 512), weight_decay=(1e-7, 1e-3), losses=("mse", "mae", "mase"),
    family=RecurrentSpace(hidden=(32, 256), layers=(1, 2), dropout=(0.0, 0.3), norms=("none", "last", "standard"), segments=(12, 24), highway=(True, False), inits=("linear", "seasonal")),
)
# The first trial; seasonal lags on: on M4's validation part they beat this trial without them by
# more than 2 sd over 3 seeds (benchmarks/results/forms.md; no test value read).
PRIOR = {"lookback": 336, "hidden": 128, "layers": 1, "dropout": 0.0, "lr": 1e-3, "batch_size": 256,
         "weight_decay": 1e-6, "norm": "standard", "segment": 24, "highway": True, "init": "linear", "loss": "mae",
         "multiplicative": False, "lags": True}
QUICK_SPACE = SearchSpace(
    lookbacks=(48, 96), lr=(1e-3, 3e-3), batch_sizes=(256,), weight_decay=(1e-7, 1e-5), losses=("mae",),
    family=RecurrentSpace(hidden=(8, 16), layers=(1, 1), dropout=(0.0, 0.1), norms=("last", "standard"), segments=(24,), highway=(True, False), inits=("linear",)),
)
QUICK_PRIOR = {"lookback": 96, "hidden": 16, "layers": 1, "dropout": 0.0, "lr": 1e-3, "batch_size": 256,
               "weight_decay": 1e-6, "norm": "last", "segment": 24, "highway": True, "init": "linear", "loss": "mae",
               "multiplicative": False, "lags": True}
# Any other family: the same shared ranges, its own default space for SEASONS, its first trial from
# `starting_point` with these shared prior values where they lie inside the space (the lookback stays the
# family's own first choice, which knows what its seasons need).
SHARED_PRIOR = ("lr", "batch_size", "weight_decay", "loss")
# statsforecast's models (forecasting.stats.predictors.make_model), by the name shown in the tables.
STATISTICAL = {"MSTL": "mstl", "AutoETS": "autoets", "AutoTheta": "autotheta"}
assert set(STATISTICAL.values()) == set(STAT_MODELS)
STAT_CACHE = f"{NAME}_statistical.json"
STAT_FORMAT = 1  # of a cached entry's rows: a change recomputes them


def is_recurrent(family: str) -> bool:
    """Whether `family` builds the recurrent config (GRU, LSTM): the families the benchmark's own space is for."""
    return families.get(family).config is ModelConfig


def _inside(p: Param, value: object) -> bool:
    """Whether `value` lies inside the range or among the choices `p`."""
    return value in p.values if isinstance(p, Choice) else p.low <= value <= p.high


def family_space(family: str, quick: bool) -> tuple[SearchSpace, dict, str]:
    """The space, first trial and a label of what `family` searches: the benchmark's recurrent space for
    GRU/LSTM (unchanged), else the shared ranges with the family's default space for SEASONS."""
    space, prior = (QUICK_SPACE, QUICK_PRIOR) if quick else (SPACE, PRIOR)
    size = "quick" if quick else "full"
    if is_recurrent(family):
        return space, prior, f"benchmark recurrent space ({size})"
    own = replace(space, family=None, periods=SEASONS)
    ranges = own.params(family)
    shared = {k: prior[k] for k in SHARED_PRIOR if k in ranges and _inside(ranges[k], prior[k])}
    return own, {**starting_point(own, family), **shared}, (
        f"shared ranges ({size}) + {family} default space for periods {list(SEASONS)}")


# --------------------------------------------------------------------------- data and metrics


def read_wide(path: Path, n_series: int | None = None) -> dict[str, np.ndarray]:
    """The M4 wide CSV (id in V1, values padded with empty fields) as {id: values} in file order."""
    raw = pd.read_csv(path, nrows=n_series)
    ids = raw.iloc[:, 0].astype(str)
    values = raw.iloc[:, 1:].to_numpy(np.float64)
    return {i: row[~np.isnan(row)] for i, row in zip(ids, values, strict=True)}


def long_frame(train: dict[str, np.ndarray]) -> pd.DataFrame:
    """Long frame with a synthetic hourly index per series, in file order."""
    start = pd.Timestamp("2000-01-01")
    parts = [pd.DataFrame({"unique_id": uid, "ds": pd.date_range(start, periods=len(v), freq="h"), "y": v})
             for uid, v in train.items()]
    return pd.concat(parts, ignore_index=True)


def smape_series(y: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Per-series sMAPE in percent, as in the M4 evaluation: mean of 200|y - f| / (|y| + |f|)."""
    return np.mean(200.0 * np.abs(y - f) / (np.abs(y) + np.abs(f)), axis=1)


def mase_series(y: np.ndarray, f: np.ndarray, insample: list[np.ndarray], m: int = M) -> np.ndarray:
    """Per-series MASE; the scale is the in-sample seasonal naive MAE over the whole training series."""
    scale = np.array([np.mean(np.abs(x[m:] - x[:-m])) for x in insample])
    return np.mean(np.abs(y - f), axis=1) / scale


def m4_scores(y: np.ndarray, f: np.ndarray, insample: list[np.ndarray]) -> dict[str, float]:
    """sMAPE and MASE averaged over series, and OWA relative to the published Naive2 scores."""
    s, m = float(np.mean(smape_series(y, f))), float(np.mean(mase_series(y, f, insample)))
    return {"smape": s, "mase": m, "owa": 0.5 * (s / NAIVE2_SMAPE + m / NAIVE2_MASE)}


def seasonal_naive(x: np.ndarray, h: int = H, m: int = M) -> np.ndarray:
    """The last season of x repeated over h steps."""
    return x[len(x) - m:][np.arange(h) % m]


def _acf(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelations of x at lags 1..max_lag."""
    d = x - x.mean()
    den = np.sum(d * d)
    return np.array([np.sum(d[k:] * d[:len(d) - k]) / den for k in range(1, max_lag + 1)])


def seasonality_test(x: np.ndarray, m: int = M) -> bool:
    """The M4 benchmarks' test: |acf(m)| above the 90% limit with Bartlett's variance."""
    if len(x) < 3 * m:
        return False
    acf = _acf(x, m)
    limit = 1.645 / np.sqrt(len(x)) * np.sqrt(1 + 2 * np.sum(acf[: m - 1] ** 2))
    return bool(abs(acf[m - 1]) > limit)


def naive2(x: np.ndarray, h: int = H, m: int = M) -> np.ndarray:
    """Naive on the series seasonally adjusted by classical multiplicative decomposition (when the
    seasonality test passes), reseasonalized: the M4 Naive2 benchmark."""
    n = len(x)
    if not seasonality_test(x, m):
        return np.repeat(x[-1], h)
    w = np.r_[0.5, np.ones(m - 1), 0.5] / m  # centred 2 x m moving average (m even)
    trend = np.convolve(x, w, mode="valid")  # centres m/2 .. n-1-m/2
    pos = np.arange(m // 2, n - m // 2)
    ratio = x[pos] / trend
    figure = np.array([ratio[pos % m == k].mean() for k in range(m)])
    figure /= figure.mean()
    seasonal = figure[np.arange(n + h) % m]
    return (x[-1] / seasonal[n - 1]) * seasonal[n:]


def official_scores(data_dir: Path) -> list[dict]:
    """The published hourly sMAPE, MASE and OWA of every M4 method."""
    (path,) = C.require(data_dir, "m4/m4_hourly_point_forecast_scores.csv")
    with path.open(newline="") as fh:
        return [{"method_id": r["method_id"], "name": r["first_author_or_benchmark"], "type": r["method_type"],
                 "smape": float(r["hourly_smape"]), "mase": float(r["hourly_mase"]), "owa": float(r["hourly_owa"])}
                for r in csv.DictReader(fh)]


_XL = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"


def xlsx_rows(path: Path, sheet: str) -> list[dict[str, str]]:
    """The cells of one worksheet as [{column letter: text}] per row, with the standard library only
    (openpyxl is not among the project's dependencies)."""
    with zipfile.ZipFile(path) as z:
        strings = [''.join(t.text or '' for t in si.iter(f"{_XL}t"))
                   for si in ET.fromstring(z.read("xl/sharedStrings.xml")).iter(f"{_XL}si")]
        rid = next(e.get(_REL) for e in ET.fromstring(z.read("xl/workbook.xml")).iter(f"{_XL}sheet")
                   if e.get("name") == sheet)
        rels = ET.fromstring(z.read("xl/_rels/workbook.xml.rels"))
        target = next(e.get("Target") for e in rels if e.get("Id") == rid)
        root = ET.fromstring(z.read(f"xl/{target.lstrip('/').removeprefix('xl/')}"))
    rows = []
    for row in root.iter(f"{_XL}row"):
        cells = {}
        for c in row.iter(f"{_XL}c"):
            v = c.find(f"{_XL}v")
            if v is not None:
                cells["".join(ch for ch in c.get("r") if ch.isalpha())] = (
                    strings[int(v.text)] if c.get("t") == "s" else v.text)
        rows.append(cells)
    return rows


def official_intervals(data_dir: Path) -> list[dict]:
    """Hourly MSIS (column G) and ACD (column N) of every method in the official M4 table
    (Evaluation_and_Ranks.xlsx, sheet "Prediction Intervals-Frequency"), named as in the point table."""
    (path,) = C.require(data_dir, "m4/Evaluation_and_Ranks.xlsx")
    names = {r["method_id"]: r["name"] for r in official_scores(data_dir)}
    out = []
    for r in xlsx_rows(path, "Prediction Intervals-Frequency")[2:]:
        try:
            msis, acd = float(r["G"]), float(r["N"])
        except (KeyError, ValueError):
            continue  # footnotes
        out.append({"method_id": r["A"], "name": names.get(r["A"], r["A"]), "msis": msis, "acd": acd})
    return out


# --------------------------------------------------------------------------- model


def forecast_frame(f: Forecaster, df: pd.DataFrame, ids: list[str]) -> np.ndarray:
    """Forecasts [S, H] from the end of every series, in the order of `ids`."""
    out, skipped = f.predict(df)
    if skipped:
        raise RuntimeError(f"series skipped by the forecaster: {skipped[:3]}")
    wide = out.assign(step=out.groupby("unique_id").cumcount()).pivot(index="unique_id", columns="step",
                                                                       values="y_hat")
    return wide.loc[ids].to_numpy(np.float64)


def fit_member(df: pd.DataFrame, split_val: Split, split_full: Split, cfg: ForecasterConfig,
               max_epochs: int) -> tuple[Forecaster, dict]:
    """Train with the validation hold-out to learn how many epochs pay, then refit on the full training
    series for that many epochs (0: the highway's linear start on the full series)."""
    cfg = replace(cfg, train=replace(cfg.train, max_epochs=max_epochs))
    kept = Forecaster(cfg)
    fit_val = kept.fit(df, split_val)
    epochs = fit_val.best_epoch + 1
    refit = Forecaster(replace(cfg, train=replace(cfg.train, max_epochs=epochs, patience=max(epochs, 1))))
    fit_full = refit.fit(df, split_full)
    return refit, {"val_loss": fit_val.best_val_loss, "best_epoch": fit_val.best_epoch, "full_epochs": epochs,
                   "seconds": fit_val.seconds + fit_full.seconds, "n_parameters": refit.n_parameters}


def calibration_windows(lengths: np.ndarray, max_lookback: int, cap: int = 4) -> int:
    """K, by rule: as many 48-point windows as leave the shortest series max_lookback + 2·48 training
    points for the calibration copy, at most `cap` (4 × 414 residuals per step), at least 2 (one to
    calibrate on and one to choose the method on)."""
    return int(max(2, min(cap, (int(lengths.min()) - max_lookback - 2 * H) // H)))


def forecasts_at(predict_fn: Callable[[pd.DataFrame], np.ndarray], df: pd.DataFrame, lengths: np.ndarray,
                 k: int) -> np.ndarray:
    """Forecasts [K, S, H] from the K cutoffs lengths − k·H, ..., lengths − H of every series, each from
    the history before the cutoff only (`predict_fn(frame) -> [S, H]`)."""
    pos = df.groupby("unique_id", sort=False).cumcount().to_numpy()  # [rows] position in its series
    end = np.repeat(lengths, lengths)  # [rows]; df holds the series in file order, whole
    return np.stack([predict_fn(df[pos < end - (k - j) * H]) for j in range(k)])


def calibration_member(df: pd.DataFrame, lengths: np.ndarray, ids: list[str], cfg: ForecasterConfig, epochs: int,
                       k: int) -> np.ndarray:
    """The final refit's configuration and epochs trained on every series less its last k·H points;
    its forecasts [K, S, H] from the K calibration cutoffs (none of them inside its training data)."""
    cut = lengths - k * H
    f = Forecaster(replace(cfg, train=replace(cfg.train, max_epochs=epochs, patience=max(epochs, 1))))
    f.fit(df, Split(tuple(ids), lengths, train_end=cut, val_end=cut))
    return forecasts_at(lambda part: forecast_frame(f, part, ids), df, lengths, k)


def run_family(df: pd.DataFrame, split_val: Split, split_full: Split, ids: list[str], family: str,
               args: argparse.Namespace, space: SearchSpace, prior: dict, tmp: Path) -> tuple[dict, dict]:
    """Tune one family, refit its 3 best trials and train their calibration copies; returns per-variant
    test forecasts [S, H] and calibration forecasts [K, S, H] under "<variant>" and "<variant>_cal",
    and the record."""
    base = ForecasterConfig(
        model=families.get(family).new_config(lookback=prior["lookback"], horizon=H),
        train=TrainConfig(seed=args.seed, device="cpu", patience=args.patience, val_metric="mae",
                          max_train_windows=args.max_train_windows),
        freq="h", calendar=False, season=M, seasons=SEASONS,
    )
    cache = FitCache(Path(tmp) / f"fits-{family}", "m4-hourly")  # each trial keeps its fit, as in `train`
    result, study_seconds, states = C.tuned_study(
        df, split_val, base, family, f"m4-hourly-h{H}-{family}", prior, space, args, tmp, cache=cache)
    done = sorted((t for t in result.study.trials if t.value is not None and t.state.name == "COMPLETE"),
                  key=lambda t: t.value)[:ENSEMBLE]
    # train's ensemble check on the trials' own fits (validation: each series' last 48 training points)
    val_fits = search.trial_fits(result, family, cache, split_val)
    check = ensemble_check.check(val_fits, df, split_val, ENSEMBLE)
    members, cals, fits = [], [], []
    for t in done:
        print(f"[m4] {family}: refit trial {t.number}", file=sys.stderr, flush=True)
        cfg = apply_params(result.config, t.params, family)
        f, rec = fit_member(df, split_val, split_full, cfg, args.max_epochs)
        members.append(forecast_frame(f, df, ids))
        cals.append(calibration_member(df, split_full.lengths, ids, cfg, rec["full_epochs"], args.cal_windows))
        fits.append({"trial": t.number, "params": t.params, "val_mae_std": t.value, **rec})
    record = {"best_params": done[0].params, "best_trial": done[0].number, "best_val_mae_std": done[0].value,
              "trials": {s: states.count(s) for s in ("complete", "pruned", "fail") if states.count(s)},
              "study_seconds": study_seconds, "refits": fits, "config": apply_params(
                  result.config, done[0].params, family).to_dict(),
              "ensemble_check": check.params() if check else None}
    out = {"single": members[0], "ensemble": np.mean(members, axis=0), "median": np.median(members, axis=0),
           "single_cal": cals[0], "ensemble_cal": np.mean(cals, axis=0), "median_cal": np.median(cals, axis=0)}
    chosen = "single" if check is not None and check.k == 1 else "ensemble"  # no check possible: combined
    n = 1 if chosen == "single" else len(members)
    # what `train`'s families' combination pools from this family: its chosen members (their validation
    # fits for the combination check, their refits' test and calibration forecasts)
    pool = {"val_fits": val_fits[:n], "members": members[:n], "cals": cals[:n]}
    return {**out, "checked": out[chosen], "checked_cal": out[f"{chosen}_cal"], "pool": pool}, record


def linear_forecasts(df: pd.DataFrame, split_val: Split, ids: list[str], seed: int,
                     lookbacks: tuple[int, ...]) -> tuple[np.ndarray, dict]:
    """The ridge baseline (lookback and penalty chosen on the last 48 training points), forecasting from
    the end of every full training series."""
    f = Forecaster(ForecasterConfig(model=ModelConfig(lookback=max(lookbacks), horizon=H),
                                    train=TrainConfig(seed=seed), freq="h", calendar=False, season=M,
                                    seasons=SEASONS))
    f.fit_scaler(df, split_val)
    predictors, rec = f.baselines(df, split_val, tuple(lookbacks))
    inp = f.inputs(df)
    assert list(inp.ids) == ids
    return predictors[-1].fn(inp.x) * inp.std[:, None] + inp.mean[:, None], {k: v for k, v in rec.items() if k != "tried"}


# --------------------------------------------------------------------------- statistical rows


def stat_forecast(model: str, y: np.ndarray) -> np.ndarray:
    """statsforecast's `model` fitted on one series' full training part y [n], its H-step forecast [H]
    (MSTL: the periods of SEASONS the series holds twice; AutoETS, AutoTheta: m = 24)."""
    return make_model(model, fitting_periods(SEASONS, len(y))).fit(np.asarray(y, np.float64)).predict(h=H)["mean"]


def stat_row(model: str, insample: list[np.ndarray], y_test: np.ndarray) -> dict:
    """One statistical row: M4 scores of `model` fitted per series, with the CPU (`process_time`) and wall
    seconds of fit + predict over all series; a first fit beforehand (numba compilation) is timed apart."""
    t0 = time.perf_counter()
    stat_forecast(model, insample[0])
    warmup = time.perf_counter() - t0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    fc = np.stack([stat_forecast(model, x) for x in insample])  # [S, H]
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {**m4_scores(y_test, fc, insample), "cpu_seconds": round(cpu, 2), "wall_seconds": round(wall, 2),
            "warmup_wall_seconds": round(warmup, 2),
            "season_lengths": sorted({str(make_model(model, fitting_periods(SEASONS, len(x))).season_length)
                                      for x in insample})}


def data_hash(ids: list[str], arrays: list[np.ndarray]) -> str:
    """SHA-256 of the series ids and values (the cache key of the statistical rows)."""
    h = hashlib.sha256()
    for uid, x in zip(ids, arrays, strict=True):
        h.update(uid.encode() + b"\0" + np.ascontiguousarray(x, np.float64).tobytes())
    return h.hexdigest()


def _stat_key(ids: list[str], insample: list[np.ndarray], y_test: np.ndarray) -> tuple[str, dict]:
    """The cache key (number of series, training data hash) and what else a cached entry must match."""
    import statsforecast

    key = f"n{len(ids)}-train{data_hash(ids, insample)[:16]}"
    return key, {"test_sha256": data_hash(ids, list(y_test)), "horizon": H, "models": STATISTICAL,
                 "statsforecast": statsforecast.__version__, "format": STAT_FORMAT}


def statistical_rows(out: Path, ids: list[str], insample: list[np.ndarray], y_test: np.ndarray) -> dict:
    """The statistical rows from `<out>/m4_hourly_statistical.json` when it holds this data set, else computed
    (they do not depend on the seed) and added to it; `cached` says which."""
    path = Path(out) / STAT_CACHE
    cache = json.loads(path.read_text()) if path.is_file() else {}
    key, check = _stat_key(ids, insample, y_test)
    if key in cache and cache[key].get("check") == check:
        print(f"[m4] statistical rows reused from {path} ({key})", file=sys.stderr, flush=True)
        return {**cache[key], "key": key, "cached": True}
    rows = {}
    for name, model in STATISTICAL.items():
        rows[name] = stat_row(model, insample, y_test)
        print(f"[m4] {name}: OWA {rows[name]['owa']:.3f}, {rows[name]['cpu_seconds']:.1f} CPU s",
              file=sys.stderr, flush=True)
    cache[key] = {"check": check, "computed": datetime.now(UTC).isoformat(timespec="seconds"),
                  "n_series": len(ids), "rows": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(cache, indent=2, default=C._jsonable) + "\n")
    tmp.replace(path)
    return {**cache[key], "key": key, "cached": False}


NHITS_INPUT = 3 * H  # NeuralForecast's N-HiTS input rule here: a small multiple of the horizon


def nhits_key(data_key: str, quick: bool) -> str:
    return N.key_of(data_key, H, NHITS_INPUT, N.QUICK_STEPS if quick else N.STEPS)


def nhits_row(args: argparse.Namespace, insample: list[np.ndarray], y_test: np.ndarray, data_key: str) -> None:
    """Compute and cache this seed's N-HiTS row unless it is cached, skipped or neuralforecast is missing."""
    key = nhits_key(data_key, args.quick)
    if args.nhits == "skip" or N.cached(args.out, NAME, key, args.seed) is not None:
        return
    python = N.interpreter()
    if python is None:
        print(f"[m4] N-HiTS skipped: {N.missing_reason()}", file=sys.stderr, flush=True)
        return
    steps = N.QUICK_STEPS if args.quick else N.STEPS
    windows = np.stack([x[-NHITS_INPUT:] for x in insample])  # [S, 144]: the end of each training series
    fc, rec = N.forecast(insample, windows, H, NHITS_INPUT, args.seed, steps, python)
    N.store(args.out, NAME, key, args.seed, {**m4_scores(y_test, fc, insample), **rec})
    print(f"[m4] seed {args.seed} N-HiTS: OWA {m4_scores(y_test, fc, insample)['owa']:.3f}", file=sys.stderr,
          flush=True)


# --------------------------------------------------------------------------- intervals


def cv_frame(fc: np.ndarray, insample: list[np.ndarray], ids: list[str], windows: list[int], k: int) -> pd.DataFrame:
    """The cross-validation frame (unique_id, ds, cutoff, y, y_hat) of calibration windows `windows` of
    forecasts fc [K, S, H], on the synthetic hourly index of `long_frame`."""
    start, parts = pd.Timestamp("2000-01-01"), []
    for j in windows:
        for s, (uid, x) in enumerate(zip(ids, insample, strict=True)):
            c = len(x) - (k - j) * H  # first target row
            parts.append(pd.DataFrame({"unique_id": uid, "ds": start + pd.to_timedelta(np.arange(c, c + H), "h"),
                                       "cutoff": start + pd.Timedelta(hours=c - 1), "y": x[c:c + H],
                                       "y_hat": fc[j, s]}))
    return pd.concat(parts, ignore_index=True)


def interval_scores(y: np.ndarray, f: np.ndarray, ids: list[str], conf: Conformal, scales: pd.Series,
                    msis_scale: np.ndarray) -> dict:
    """Bands from `add_intervals` on forecasts f [S, H], scored against y [S, H] (MSIS per row scaled by
    the in-sample seasonal naive MAE [S]); ACD = |coverage − 0.95|."""
    frame = add_intervals(pd.DataFrame({"unique_id": np.repeat(ids, H), "y_hat": f.reshape(-1)}), scales, conf)
    bounds = {lv: tuple(frame[column(lv, side)].to_numpy().reshape(f.shape) for side in ("lo", "hi"))
              for lv in conf.levels}
    out = interval_metrics(y, bounds, msis_scale)
    return {**out, "acd_95": abs(out["coverage_95"] - 0.95)}


def choose_option(cal: np.ndarray, insample: list[np.ndarray], ids: list[str], df: pd.DataFrame,
                  k: int) -> tuple[str, dict]:
    """The interval option with the lowest MSIS (95 %) on the last training window (calibration window
    K), each calibrated on windows 1..K−1 (all, or the most recent) and the history before it."""
    ends = [x[:len(x) - H] for x in insample]  # what was known at the last window's cutoff
    scales = pd.Series([_scale(x) for x in ends], index=ids)
    y_val = np.stack([x[len(x) - H:] for x in insample])
    scores = {}
    for name, (scaled, which, mode) in OPTIONS.items():
        windows = list(range(k - 1)) if which == "all" else [k - 2]
        conf = calibrate_backtest(cv_frame(cal, insample, ids, windows, k), df, LEVELS, M, scaled=scaled, mode=mode)
        m = interval_scores(y_val, cal[k - 1], ids, conf, scales, scales.to_numpy())
        scores[name] = {key: m[key] for key in ("msis_95", "coverage_95", "coverage_80")}
    return min(scores, key=lambda n: scores[n]["msis_95"]), scores


def _scale(x: np.ndarray) -> float:
    """The in-sample seasonal naive MAE of x (m = 24)."""
    return float(np.mean(np.abs(x[M:] - x[:-M])))


def interval_row(cal: np.ndarray, f_test: np.ndarray, y_test: np.ndarray, insample: list[np.ndarray], ids: list[str],
                 df: pd.DataFrame, k: int) -> dict:
    """Choose the option on validation, calibrate it on its windows up to the end of training, score
    the test forecasts f_test [S, H]."""
    chosen, validation = choose_option(cal, insample, ids, df, k)
    scaled, which, mode = OPTIONS[chosen]
    windows = list(range(k)) if which == "all" else [k - 1]
    conf = calibrate_backtest(cv_frame(cal, insample, ids, windows, k), df, LEVELS, M, scaled=scaled, mode=mode)
    msis_scale = np.array([_scale(x) for x in insample])  # the M4 MSIS denominator
    test = interval_scores(y_test, f_test, ids, conf, history_scales(df, M).loc[ids], msis_scale)
    return {**test, "chosen": chosen, "validation": validation, "calibration_windows": windows,
            "conformal": {k: v for k, v in conf.to_dict().items() if k != "series_scales"}}  # 414 scales: kept out


def snaive_calibration(insample: list[np.ndarray], k: int) -> np.ndarray:
    """Seasonal naive forecasts [K, S, H] from the K calibration cutoffs."""
    return np.stack([np.stack([seasonal_naive(x[:len(x) - (k - j) * H]) for x in insample]) for j in range(k)])


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The options, with the budget's defaults filled in (smaller under --quick)."""
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=None, help="Optuna trials per family (default 8)")
    p.add_argument("--max-epochs", type=int, default=None, help="epochs per trial (default 20)")
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--max-train-windows", type=int, default=None,
                   help="training windows sampled per epoch (default 16384)")
    p.add_argument("--study-timeout", type=float, default=None,
                   help="seconds per family search, a safety cap on a loaded machine (default 420; 0 for none)")
    p.add_argument("--families", nargs="+", choices=families.names(), default=list(FAMILIES),
                   help=f"registered families to tune (default {' '.join(FAMILIES)})")
    p.add_argument("--merge-only", action="store_true", help="only fold the seed files into m4_hourly.json")
    p.add_argument("--nhits", choices=("run", "skip"), default="run",
                   help="the seed's N-HiTS row: computed when neuralforecast is installed (default), or skipped")
    p.add_argument("--nhits-only", action="store_true", help="only compute the seed's N-HiTS row and re-merge")
    args = p.parse_args(argv)
    quick = args.quick
    args.trials = args.trials or (2 if quick else 8)
    args.max_epochs = args.max_epochs or (1 if quick else 20)
    if args.study_timeout is None:
        args.study_timeout = None if quick else 420.0
    args.study_timeout = args.study_timeout or None
    args.max_train_windows = args.max_train_windows or (512 if quick else 16384)
    return args


STAT_SETUP = ("statsforecast MSTL (seasons 24 and 168 where a series holds two cycles of 168, else 24; trend "
              "AutoETS ZZN), AutoETS (m = 24), AutoTheta (m = 24): each fitted per series on its full training "
              "part (no tuning, no validation), forecasting the 48 test points; seed-independent, computed once "
              f"per data set and cached in {STAT_CACHE}")


def budget_of(args: argparse.Namespace) -> dict:
    """What the run may spend, the search space each family uses, and how the statistical rows are made."""
    return {"n_trials": args.trials, "max_epochs": args.max_epochs, "patience": args.patience,
            "max_train_windows_per_epoch": args.max_train_windows, "study_timeout": args.study_timeout,
            "pruner": "median", "sampler": "TPE (multivariate, seed)", "ensemble": ENSEMBLE,
            "families": list(args.families),
            "spaces": {f: family_space(f, args.quick)[2] for f in args.families}, "statistical": STAT_SETUP}


def run_models(df: pd.DataFrame, split_val: Split, split_full: Split, ids: list[str], insample: list[np.ndarray],
               y_test: np.ndarray, args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """Every family, each in its own space (`family_space`): point scores, tuning records (with the space's
    label) and interval scores per variant."""
    ours, records, intervals, pools = {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for fam in args.families:
            space, prior, label = family_space(fam, args.quick)
            fc, records[fam] = run_family(df, split_val, split_full, ids, fam, args, space, prior, Path(tmp))
            records[fam]["space"], pools[fam] = label, fc
            for variant in VARIANTS:
                ours[f"{fam}_{variant}"] = m4_scores(y_test, fc[variant], insample)
                intervals[f"{fam}_{variant}"] = interval_row(fc[f"{variant}_cal"], fc[variant], y_test, insample,
                                                             ids, df, args.cal_windows)
            print(f"[m4] seed {args.seed} {fam}: {ours[f'{fam}_single']} "
                  f"MSIS {intervals[f'{fam}_single']['msis_95']:.3f}", file=sys.stderr, flush=True)
        for key, (fc, cal) in combination(pools, df, split_val, records).items():
            ours[key] = m4_scores(y_test, fc, insample)
            intervals[key] = interval_row(cal, fc, y_test, insample, ids, df, args.cal_windows)
    return ours, records, intervals


def combination(pools: dict[str, dict], df: pd.DataFrame, split_val: Split, records: dict) -> dict:
    """`train`'s families' combination (`family_mix`) with two or more families: the check on the chosen
    members' validation fits, then the mean of the kept families' chosen refits ("combined", always
    reported) and the model `train` ends with ("default": the combination where the check keeps it, else
    the best family's own choice); each as (test forecasts [S, H], calibration forecasts [K, S, H])."""
    if len(pools) < 2 or any(not p["pool"]["val_fits"] for p in pools.values()):
        return {}
    finals = {fam: p["pool"]["val_fits"][0] if len(p["pool"]["val_fits"]) == 1 else Ensemble(p["pool"]["val_fits"])
              for fam, p in pools.items()}
    mix = family_mix.check(finals, df, split_val, "mase")
    records["combination_check"] = mix.params() | {"combines": mix.combines}
    fc = np.mean([m for fam in mix.kept for m in pools[fam]["pool"]["members"]], axis=0)
    cal = np.mean([c for fam in mix.kept for c in pools[fam]["pool"]["cals"]], axis=0)
    best = pools[mix.kept[0]]
    return {"combined": (fc, cal), "default": (fc, cal) if mix.combines else (best["checked"], best["checked_cal"])}


def run_baselines(df: pd.DataFrame, split_val: Split, ids: list[str], insample: list[np.ndarray], y_test: np.ndarray,
                  args: argparse.Namespace, lookbacks: tuple[int, ...]) -> tuple[dict, dict]:
    """The recomputed baselines' M4 scores beside the official ones, and the ridge baseline's record."""
    lin, lin_rec = linear_forecasts(df, split_val, ids, args.seed, lookbacks)
    baselines = {"Naive": np.stack([np.repeat(x[-1], H) for x in insample]),
                 "sNaive": np.stack([seasonal_naive(x) for x in insample]),
                 "sNaive168": np.stack([seasonal_naive(x, m=168) for x in insample]),
                 "Naive2": np.stack([naive2(x) for x in insample]), "Linear": lin}
    by_name = {r["name"]: r for r in official_scores(args.data_dir)}
    checks = {k: {**m4_scores(y_test, v, insample), "official": {kk: by_name[k][kk] for kk in ("smape", "mase", "owa")}
                  if k in by_name else None} for k, v in baselines.items()}
    return checks, lin_rec


def spaces_record(args: argparse.Namespace) -> tuple[dict, dict]:
    """Per family: the space searched (its label, the shared ranges and its own, resolved) and the first trial."""
    spaces, priors = {}, {}
    for fam in args.families:
        space, priors[fam], label = family_space(fam, args.quick)
        shared = {k: v for k, v in asdict(space).items() if k != "family"}
        spaces[fam] = {"label": label, **shared, "family": asdict(space.own(fam))}
    return spaces, priors


def load(args: argparse.Namespace) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """Series ids, training series and test targets [S, H] (the first 20 series under --quick)."""
    train_csv, test_csv = C.require(args.data_dir, "m4/Hourly-train.csv", "m4/Hourly-test.csv")
    n = 20 if args.quick else None
    train, test = read_wide(train_csv, n), read_wide(test_csv, n)
    ids = list(train)
    assert ids == list(test), "train and test files list different series"
    return ids, [train[i] for i in ids], np.stack([test[i] for i in ids])


def main(argv: list[str] | None = None) -> dict:
    """One seed: the tuned families, the baselines and the statistical rows, written and merged into `out`."""
    args = parse(argv)
    if args.merge_only:
        return merge(args.out)
    ids, insample, y_test = load(args)
    C.set_threads(args.threads)
    if args.nhits_only:
        nhits_row(args, insample, y_test, _stat_key(ids, insample, y_test)[0])
        return merge(args.out)
    run = C.Run(NAME, args, budget_of(args), extra_versions=("optuna", "scikit-learn", "statsforecast"))
    statistical = statistical_rows(args.out, ids, insample, y_test)
    nhits_row(args, insample, y_test, statistical["key"])
    df, lengths = long_frame(dict(zip(ids, insample, strict=True))), np.array([len(x) for x in insample])
    # Validation = the last H points of each training series; no test part inside the training file.
    split_val = Split(tuple(ids), lengths, train_end=lengths - H, val_end=lengths)
    split_full = Split(tuple(ids), lengths, train_end=lengths, val_end=lengths)
    lookbacks = (QUICK_SPACE if args.quick else SPACE).lookbacks  # shared by every family's space
    args.cal_windows = calibration_windows(lengths, max(lookbacks))
    ours, records, intervals = run_models(df, split_val, split_full, ids, insample, y_test, args)
    combination_check = records.pop("combination_check", None)
    intervals["sNaive"] = interval_row(snaive_calibration(insample, args.cal_windows),
                                       np.stack([seasonal_naive(x) for x in insample]), y_test, insample, ids, df,
                                       args.cal_windows)
    checks, lin_rec = run_baselines(df, split_val, ids, insample, y_test, args, lookbacks)
    spaces, priors = spaces_record(args)
    out = run.finish({"n_series": len(ids), "horizon": H, "seasonality": M, "seasons": list(SEASONS),
                      "train_lengths": {"min": int(lengths.min()), "max": int(lengths.max())},
                      "search_spaces": spaces, "priors": priors, "tuning": records, "ours": ours,
                      "combination_check": combination_check,
                      "intervals": intervals, "interval_setup": interval_setup(args.cal_windows),
                      "linear": lin_rec, "baselines_recomputed": checks, "statistical": statistical,
                      "official": official_scores(args.data_dir), "official_intervals": official_intervals(args.data_dir)})
    return S.write_and_merge(args.out, NAME, args.seed, out, merge)


def interval_setup(k: int) -> dict:
    """How the intervals were calibrated and their option chosen."""
    return {"levels": list(LEVELS), "calibration_windows": k, "window_step": H, "scale_season": M,
            "options": list(OPTIONS),
            "rule": "K = as many 48-point windows as leave the shortest series max lookback + 96 training points, "
                    "between 2 and 4",
            "choice": "lowest MSIS (95 %) on the last training window, calibrated on the earlier ones"}


# --------------------------------------------------------------------------- seeds and report

LABELS = {"sNaive": "Seasonal naive (m = 24)",  # other rows: see `label`
          "combined": "families combined (ours: the mean of every family's train's-default members)",
          "default": "ours, what train ends with: the families combined where their check keeps it, else the "
                     "best family's train's default"}
OWA_TARGET = 0.48  # issue 18 (the M4 winner, Smyl's ES-RNN, scored 0.440)
AHEAD = {"better": "yes", "worse": "no", "tie": "tie (within 2 sd)"}


def label(key: str) -> str:
    """The table name of a result key: "<family>_<variant>" (VARIANTS), or LABELS, or the key."""
    fam, _, variant = key.rpartition("_")
    if key in LABELS or variant not in VARIANTS:
        return LABELS.get(key, key)
    return f"{fam.upper()} (ours, {VARIANTS[variant]})"


def stat_rows(run: dict) -> dict:
    """The statistical rows of a result ({} in results from before they were added)."""
    return (run.get("statistical") or {}).get("rows", {})


def point_goals(agg: dict, run: dict, nhits: dict) -> tuple[str, float, dict]:
    """The best comparator row (recomputed baselines and statistical rows, by OWA), its OWA, and per row
    of ours: the OWA target, the best comparator, seasonal naive, each statistical row and N-HiTS (mean
    ± sd over its seeds, when it ran)."""
    others = {k: v["owa"] for k, v in run["baselines_recomputed"].items()} | {
        k: v["owa"] for k, v in stat_rows(run).items()}
    best = min(others, key=others.get)
    goals = {k: {"owa_target": S.compare(v["owa"], OWA_TARGET), "vs_best_baseline": S.compare(v["owa"], others[best]),
                 "vs_snaive": S.compare(v["owa"], others["sNaive"]),
                 "vs_statistical": {n: S.compare(v["owa"], r["owa"]) for n, r in stat_rows(run).items()},
                 "vs_nhits": S.compare(v["owa"], nhits["aggregate"]["owa"]) if nhits.get("aggregate") else None}
             for k, v in agg.items()}
    return best, others[best], goals


def merge_statistical(runs: list[dict]) -> dict:
    """The last seed's statistical rows, with which seeds computed them and which reused the cache."""
    st = runs[-1].get("statistical")
    if not st:
        return {}
    has = [r for r in runs if r.get("statistical")]
    return {"statistical": {**st, "computed_by_seeds": [r["seed"] for r in has if not r["statistical"]["cached"]],
                            "reused_by_seeds": [r["seed"] for r in has if r["statistical"]["cached"]]}}


NHITS_SETUP = (f"NeuralForecast N-HiTS, library defaults ({N.STEPS:,} steps, no early stopping) except input size "
               f"{NHITS_INPUT} (3 x horizon) and scaler_type=\"robust\"; fitted on the full training series, one "
               "global model, forecasting the 48 test points; one run per seed, cached in m4_hourly_nhits.json")


def merge_nhits(out: Path, runs: list[dict]) -> dict:
    """N-HiTS's rows of every seed cached for this data (mean ± sd of each score), or why there are none."""
    st = runs[-1].get("statistical")
    rows = N.seeds_of(out, NAME, nhits_key(st["key"], runs[-1]["quick"])) if st else {}
    if not rows:
        return {"missing": N.no_rows()}
    steps = next(iter(rows.values()))["max_steps"]
    return {"seeds": sorted(int(k) for k in rows), "setup": NHITS_SETUP.replace(f"{N.STEPS:,} steps", f"{steps:,} steps"),
            "aggregate": {m: S.mean_sd([r[m] for r in rows.values()]) for m in ("smape", "mase", "owa")},
            "cost": N.cost_text(rows), "rows": {k: {kk: vv for kk, vv in r.items() if kk != "run"} for k, r in rows.items()},
            "runs": {k: r.get("run") for k, r in rows.items()}}


def merge(out: Path) -> dict:
    """Fold every seed file in `out` into m4_hourly.json and m4_hourly.md."""
    runs = S.load_seeds(out, NAME)
    if not runs:
        raise SystemExit(f"no {NAME}_seed*.json in {out}")
    agg = {k: {m: S.mean_sd([r["ours"][k][m] for r in runs if k in r["ours"]]) for m in ("smape", "mase", "owa")}
           for k in runs[-1]["ours"]}
    nhits = merge_nhits(out, runs)
    best_base, best_owa, goals = point_goals(agg, runs[-1], nhits)
    res = {**{k: v for k, v in runs[-1].items() if k not in ("ours", "tuning")}, "seeds": [r["seed"] for r in runs],
           "seed": ", ".join(str(r["seed"]) for r in runs),
           "runs": S.runs_meta(runs), "aggregate": agg, "best_baseline": best_base, "best_baseline_owa": best_owa,
           "goals": goals, "nhits": nhits,
           "per_seed": [{"seed": r["seed"], "ours": r["ours"], "tuning": r["tuning"],
                         "intervals": r.get("intervals"), "combination_check": r.get("combination_check")}
                        for r in runs]}
    res.update(merge_intervals(runs))
    res.update(merge_statistical(runs))
    C.write(out, NAME, res, render(res))
    return res


INTERVAL_METRICS = ("msis_95", "acd_95", "coverage_95", "coverage_80", "msis_80", "pinball_95", "pinball_80")


def merge_intervals(runs: list[dict]) -> dict:
    """Mean ± sd of the interval scores over the seeds that have them, and the issue's goals."""
    with_pi = [r["intervals"] for r in runs if r.get("intervals")]
    if not with_pi:
        return {}
    agg = {k: {m: S.mean_sd([iv[k][m] for iv in with_pi if k in iv]) for m in INTERVAL_METRICS}
           for k in with_pi[-1]}
    goals = {k: {"msis_target": S.compare(v["msis_95"], MSIS_TARGET),
                 "coverage_ok": abs(v["coverage_95"]["mean"] - 0.95) <= COVERAGE_TOL} for k, v in agg.items()}
    chosen = {k: [iv[k]["chosen"] for iv in with_pi if k in iv] for k in agg}
    return {"interval_aggregate": agg, "interval_goals": goals, "interval_chosen": chosen,
            "interval_seeds": [r["seed"] for r in runs if r.get("intervals")]}


def _rows(res: dict, official_too: bool) -> list[list[str]]:
    """Ours (mean ± sd over seeds), the recomputed baselines, the statistical rows and (`official_too`) the
    official M4 rows."""
    rows = [[label(k), S.fmt(v["smape"]), S.fmt(v["mase"]), S.fmt(v["owa"]), "this run"]
            for k, v in res["aggregate"].items()]
    for k in ("sNaive", "sNaive168", "Linear", "Naive2"):
        v = res["baselines_recomputed"].get(k)
        if v:
            rows.append([f"{k} (recomputed here)", f"{v['smape']:.3f}", f"{v['mase']:.3f}", f"{v['owa']:.3f}",
                         "this run"])
    for k, v in stat_rows(res).items():
        rows.append([f"{k} (statsforecast, per series; {v['cpu_seconds']:.1f} CPU s)", f"{v['smape']:.3f}",
                     f"{v['mase']:.3f}", f"{v['owa']:.3f}", "this data (computed once, cached)"])
    nh = (res.get("nhits") or {}).get("aggregate")
    if nh:
        rows.append([f"N-HiTS (neuralforecast, seeds {res['nhits']['seeds']})", S.fmt(nh["smape"]), S.fmt(nh["mase"]),
                     S.fmt(nh["owa"]), "this data"])
    if official_too:
        by = {o["name"]: o for o in res["official"]}
        for n in SHOWN:
            if n in by:
                rows.append([f"{n} ({by[n]['type']})", f"{by[n]['smape']:.3f}", f"{by[n]['mase']:.3f}",
                             f"{by[n]['owa']:.3f}", "official"])
    return rows


def _interval_rows(res: dict) -> list[list[str]]:
    """Our conformal intervals (mean ± sd over seeds) and the official hourly MSIS/ACD rows."""
    rows = [[f"{label(k)} + conformal", S.fmt(v["msis_95"]),
             S.fmt(v["acd_95"]), S.fmt(v["coverage_95"]), S.fmt(v["coverage_80"]), "this run"]
            for k, v in res["interval_aggregate"].items()]
    by = {o["method_id"]: o for o in res.get("official_intervals", [])}
    note = {"238": "best hourly MSIS", "118": "M4 winner"}
    for mid in OFFICIAL_PI:
        if mid in by:
            o = by[mid]
            name = f"{o['name']} ({note[mid]})" if mid in note else o["name"]
            rows.append([name, f"{o['msis']:.3f}", f"{o['acd']:.3f}", "–", "–", "official"])
    return rows


def _interval_text(res: dict) -> str:
    """The interval table and the goal line (MSIS ≤ 7.9, 95 % coverage within 2 points)."""
    if not res.get("interval_aggregate"):
        return ""
    parts = []
    for k, g in res["interval_goals"].items():
        v = res["interval_aggregate"][k]
        side = "the mean misses" if v["msis_95"]["mean"] > MSIS_TARGET else "the mean meets it"
        met = {"better": "**met**", "worse": "**missed**", "tie": f"**tie** (within 2 sd; {side})"}[g["msis_target"]]
        parts.append(f"{label(k)}: MSIS {S.fmt(v['msis_95'])}, target ≤ {MSIS_TARGET} {met}; "
                     f"coverage {S.fmt(v['coverage_95'])} {'within' if g['coverage_ok'] else 'outside'} "
                     f"{COVERAGE_TOL:.2f} of 0.95; option chosen on validation: "
                     f"{', '.join(sorted(set(res['interval_chosen'][k])))}")
    setup = res.get("interval_setup", {})
    return ("\n95 % prediction intervals (split conformal on the last "
            f"{setup.get('calibration_windows')} × 48 training points; seeds {res['interval_seeds']}). "
            "MSIS (M4 definition, scaled by the in-sample seasonal naive MAE, m = 24) and ACD = |coverage − 0.95| "
            "beside the official Hourly columns of Evaluation_and_Ranks.xlsx (sheet \"Prediction "
            "Intervals-Frequency\").\n\n"
            + C.table(["method", "MSIS (95 %)", "ACD", "coverage 95", "coverage 80", "source"], _interval_rows(res))
            + "\nInterval goals (target MSIS ≤ 7.9, coverage within 2 points of 95 %): " + "; ".join(parts) + ".\n")


def _verdict(v: str, mean: float, target: float) -> str:
    """A comparison with a target in words (a tie says on which side the mean falls)."""
    if v == "tie":
        side = "the mean misses" if mean > target else "the mean meets it"
        return f"**tie** (within 2 sd; {side})"
    return {"better": "**met**", "worse": "**missed**"}[v]


def _goal_text(res: dict) -> str:
    """Per row of ours: the OWA target, the best comparator row and whether it is ahead of each statistical row."""
    best_owa = res.get("best_baseline_owa", res["baselines_recomputed"].get(res["best_baseline"], {}).get("owa"))
    stat, parts = stat_rows(res), []
    for k, g in res["goals"].items():
        owa = res["aggregate"][k]["owa"]
        ahead = ", ".join(f"{n} ({stat[n]['owa']:.3f}) {AHEAD[c]}" for n, c in g.get("vs_statistical", {}).items())
        if g.get("vs_nhits"):
            ahead += f", N-HiTS ({S.fmt(res['nhits']['aggregate']['owa'])}) {AHEAD[g['vs_nhits']]}"
        parts.append(f"{label(k)} OWA {S.fmt(owa)}: target ≤ {OWA_TARGET} "
                     f"{_verdict(g['owa_target'], owa['mean'], OWA_TARGET)}; against the best baseline "
                     f"({res['best_baseline']}, {best_owa:.3f}) {g['vs_best_baseline']}"
                     + (f"; ahead of {ahead}" if ahead else ""))
    return "Goals (mean ± sd of OWA over seeds): " + "; ".join(parts) + "."


def _statistical_text(res: dict) -> str:
    """How the statistical rows were made, when they were computed, which seeds reused them, their cost."""
    st = res.get("statistical")
    if not st:
        return ""
    cost = "; ".join(f"{n} {v['cpu_seconds']:.1f} CPU s ({v['wall_seconds']:.1f} s wall)" for n, v in st["rows"].items())
    return (f"Statistical rows: {res['budget'].get('statistical', STAT_SETUP)}. Computed once, {st['computed']} "
            f"(cache key {st['key']}); seeds {st.get('computed_by_seeds')} computed them, seeds "
            f"{st.get('reused_by_seeds')} reused them. Fit + predict over the {st['n_series']} series: {cost} "
            "(a first fit before the timing, numba compilation, is not counted).\n")


def _nhits_text(res: dict) -> str:
    """How the N-HiTS row was made and what it cost, or why it is missing."""
    nh = res.get("nhits") or {}
    if not nh.get("aggregate"):
        return f"N-HiTS: no row ({nh.get('missing', 'not computed')}).\n" if nh else ""
    return f"N-HiTS row: {nh['setup']}. Fit + predict: {nh['cost']}.\n"


def _header(res: dict) -> str:
    """The paragraph on seeds, data, metrics and the tuning budget."""
    b = res["budget"]
    return (f"Seeds {res['seeds']} (separate runs; cells are mean ± standard deviation over seeds). "
            f"{res['n_series']} series, horizon {res['horizon']}, one global model per family. sMAPE and MASE "
            f"(m = {res['seasonality']}) per series, averaged; OWA against Naive2 (sMAPE 18.383, MASE 2.395). "
            f"Selection on the last {res['horizon']} training points only (validation MAE): {b['n_trials']} Optuna "
            f"trials per family (the first a fixed prior), at most {b['max_epochs']} epochs of "
            f"{b['max_train_windows_per_epoch']:,} sampled windows, patience {b['patience']}, median pruner, search "
            f"capped at {b.get('study_timeout')} s. Each selected configuration is refit on the full training series "
            f"for the epochs validation chose; the ensemble rows take the mean, or the median, of the refits of the "
            f"{ENSEMBLE} best trials. The rows marked train's default take the mean or the best alone as `train`'s "
            f"ensemble check chose on the trials' own fits (the series' last {res['horizon']} training points, series "
            f"alternately in two halves: ranked on one, scored on the other, MASE): {_check_choices(res)}.\n")


def _check_choices(res: dict) -> str:
    """Members the ensemble check kept, per family and seed (older results: not run)."""
    kept = {fam: [(t.get("ensemble_check") or {}).get("ensemble_check_kept") for t in
                  (run["tuning"].get(fam, {}) for run in res["per_seed"])] for fam in res["per_seed"][0]["tuning"]}
    text = "; ".join(f"{fam.upper()} kept {', '.join(str(k) if k else '–' for k in ks)} member(s) in seeds "
                     f"{res['seeds']}" for fam, ks in kept.items())
    mixes = [run.get("combination_check") for run in res["per_seed"]]
    if any(mixes):  # older results: not run
        said = ["–" if m is None else (f"combined ({m['combine_check_combined']:.4f} vs {m['combine_check_single']:.4f})"
                                       if m["combines"] else f"{m['combined_families'].split(',')[0]} alone "
                                       f"({m['combine_check_single']:.4f} vs {m['combine_check_combined']:.4f})")
                for m in mixes]
        text += (f"; the families' combination check (the same halves, families ranked on one) chose: "
                 f"{', '.join(said)} in seeds {res['seeds']}")
    return text


TUNED = ("lookback", "segment", "hidden", "layers", "norm", "highway", "init", "trend", "multiplicative", "lags", "loss")


def _tuning_table(res: dict) -> str:
    """Per seed and family: the space searched, the best trial's parameters, its validation MAE and cost."""
    rows = []
    for run in res["per_seed"]:
        for fam, t in run["tuning"].items():
            p = t["best_params"]
            rows.append([str(run["seed"]), fam.upper(), t.get("space", "–"), *(str(p.get(k, "–")) for k in TUNED),
                         f"{t['best_val_mae_std']:.4f}", str(t["trials"]), f"{t['study_seconds']:.0f}",
                         ", ".join(str(r["full_epochs"]) for r in t["refits"])])
    return C.table(["seed", "model", "space", *TUNED, "val MAE", "trials", "search s", "refit epochs"], rows)


def _spaces_text(res: dict) -> str:
    """Each family's search space and first trial (older results: one space and prior for all)."""
    if "search_spaces" not in res:
        return f"Search space: {res.get('search_space')}. Prior: {res.get('prior')}."
    return " ".join(f"{fam.upper()}: {sp['label']}: {sp}; first trial {res['priors'][fam]}."
                    for fam, sp in res["search_spaces"].items())


def render(res: dict) -> str:
    """The full Markdown report of a merged result."""
    lines = ["## M4 Hourly\n", C.conditions(res), _header(res),
             C.table(["method", "sMAPE", "MASE", "OWA", "source"], _rows(res, True)), _goal_text(res) + "\n",
             _statistical_text(res), _nhits_text(res), _interval_text(res), _tuning_table(res),
             f"Ridge baseline: {res.get('linear')}. {_spaces_text(res)}\n"]
    return "\n".join(lines)


def summary(res: dict) -> str:
    """The short section report.py shows."""
    fams = ", ".join(f.upper() for f in res["budget"].get("families", FAMILIES))
    return (f"Mean ± sd over seeds {res['seeds']}; {fams}; {res['budget']['n_trials']} trials x "
            f"{res['budget']['max_epochs']} epochs per family and seed.\n\n"
            + C.table(["M4 Hourly", "sMAPE", "MASE", "OWA", "source"], _rows(res, False))
            + "\n" + _goal_text(res) + " Official: Smyl (M4 winner) 0.440, best Hourly entry (Doornik) 0.410, "
            "sNaive 0.627.\n" + _statistical_text(res) + _nhits_text(res) + _interval_text(res))


if __name__ == "__main__":
    main()
