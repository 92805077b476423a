"""statsforecast's models as baselines: the rows equal direct statsforecast calls on the same windows,
they learn from the training rows only, and a forecast reads nothing after its cutoff."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsforecast.models import MSTL, AutoETS, AutoTheta

from forecasting.api.forecaster import Forecaster, ForecasterConfig, build_panel
from forecasting.core.data import split_fractions
from forecasting.families.recurrent import RecurrentConfig
from forecasting.stats.predictors import fitting_periods, make_model, stats_predictor
from tests.conftest import sine_frame

H, L = 12, 96


@pytest.fixture(scope="module")
def setup():
    df = sine_frame(n_series=2, length=500, seed=4, trend=0.01)
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.1, 0.2)
    f = Forecaster(ForecasterConfig(model=RecurrentConfig(lookback=L, horizon=H), calendar=False, seasons=(24,)))
    f.fit_scaler(df, split)
    return df, split, f


def _predictor(name: str, df, split, f):
    return stats_predictor(name, build_panel(df, f.cfg), split, f.scaler_.mean[:, 0], f.scaler_.std[:, 0], H, L,
                           (24,))


def test_the_models_are_the_ones_a_forecaster_would_pick():
    mstl = make_model("mstl", (24, 168))
    assert isinstance(mstl, MSTL) and mstl.season_length == [24, 168]
    assert isinstance(mstl.trend_forecaster, AutoETS) and mstl.trend_forecaster.model == "ZZN"
    assert isinstance(make_model("autoets", (24,)), AutoETS) and isinstance(make_model("autotheta", (24,)), AutoTheta)
    assert fitting_periods((24, 168), 335) == (24,)  # a window must hold a period twice
    assert fitting_periods((168, 24), 336) == (24, 168)
    with pytest.raises(ValueError, match="unknown statistical model 'arima'"):
        make_model("arima", (24,))


@pytest.mark.parametrize("name", ["mstl", "autoets", "autotheta"])
def test_rows_equal_a_direct_statsforecast_call_on_the_same_windows(name, setup):
    """Each series' model is fitted on its training rows, sliced here from the long frame, and
    applied to the lookback before each backtest cutoff: the predictor's column is exactly that."""
    df, split, f = setup
    bt = f.cross_validation(df, split.val_end, split.train_end, predictors=[_predictor(name, df, split, f)])
    frame = bt.forecasts
    for i, (uid, part) in enumerate(df.groupby("unique_id", sort=False)):
        y = part["y"].to_numpy(np.float64)
        model = make_model(name, (24,)).fit(y[: int(split.train_end[i])])
        for cutoff, rows in frame[frame["unique_id"] == uid].groupby("cutoff"):
            end = int(np.flatnonzero(part["ds"].to_numpy() == np.datetime64(cutoff))[0]) + 1
            want = model.forward(y=y[end - L:end], h=H)["mean"]
            np.testing.assert_allclose(rows[name].to_numpy(), want, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(rows["y"].to_numpy(), y[end:end + H], rtol=1e-6)


def test_only_the_training_rows_are_learnt_from_and_nothing_after_a_cutoff_is_read(setup):
    df, split, f = setup
    bt = f.cross_validation(df, split.val_end, split.train_end, predictors=[_predictor("autoets", df, split, f)])
    first = bt.forecasts[bt.forecasts["cutoff"] == bt.forecasts["cutoff"].min()]
    # Everything after the first cutoff's inputs changed: validation and test values of every series.
    changed = df.copy()
    after = changed["ds"] > first["cutoff"].iloc[0]
    changed.loc[after, "y"] = changed.loc[after, "y"] * 3 + 50
    g = Forecaster(f.cfg)
    g.fit_scaler(changed, split)  # the scaler reads training rows only: unchanged too
    bt2 = g.cross_validation(changed, split.val_end, split.train_end,
                             predictors=[_predictor("autoets", changed, split, g)])
    first2 = bt2.forecasts[bt2.forecasts["cutoff"] == first["cutoff"].iloc[0]]
    np.testing.assert_allclose(first2["autoets"].to_numpy(), first["autoets"].to_numpy(), rtol=1e-6)
    assert not np.allclose(bt2.forecasts["autoets"].to_numpy(), bt.forecasts["autoets"].to_numpy())


def test_a_series_model_is_applied_to_its_own_windows(setup):
    """Windows of two series in one batch: each gets its own series' fitted model and scale."""
    df, split, f = setup
    p = _predictor("autoets", df, split, f)
    w = f.windows(df, split, "test")
    x, _ = w.arrays()
    idx = np.r_[np.flatnonzero(w.series_index == 0)[:3], np.flatnonzero(w.series_index == 1)[:3]]
    both = p(x[idx], w.series_index[idx])
    swapped = p(x[idx], 1 - w.series_index[idx])
    assert both.shape == (6, H) and not np.allclose(both, swapped)
    alone = np.concatenate([p(x[idx[:3]], w.series_index[idx[:3]]), p(x[idx[3:]], w.series_index[idx[3:]])])
    np.testing.assert_allclose(both, alone)


@pytest.mark.slow
def test_the_pipeline_compares_every_model_with_them_and_names_the_best_baseline(tmp_path, monkeypatch):
    """`--statistical`: MSTL, AutoETS and AutoTheta rows in the comparison (test, validation backtest,
    intervals, CPU seconds), each a nested MLflow run; `best_baseline` is chosen among all baselines."""
    from mlflow import MlflowClient

    from forecasting.api.jobs import TrainJob
    from forecasting.pipeline import plan, steps

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    df = sine_frame(n_series=2, length=500, seed=4, trend=0.01)
    job = TrainJob("toy", H, ("gru",), statistical=True, levels=(80,), max_lookback=96, seasons=(24,))
    split = plan.make_split(df, job)
    ctx = steps.start_pipeline(tmp_path, job, df, "h")
    rows = steps.baseline_rows(ctx, job, df, split)
    by = {r["model"]: r for r in rows}
    assert {"naive", "seasonal_naive_24", "linear", "mstl", "autoets", "autotheta"} == set(by)
    for name in ("mstl", "autoets", "autotheta"):
        r = by[name]
        assert np.isfinite([r["mase"], r["val_backtest_mase"], r["msis_80"], r["coverage_80"]]).all()
    table, summary = steps.comparison(rows + [{**by["linear"], "model": "gru", "mase": 0.0}], job)
    best = min((r for r in rows), key=lambda r: r["mase"])
    assert summary["best_baseline"] == best["model"] and summary["best_baseline_value"] == best["mase"]
    runs = MlflowClient().search_runs([ctx.experiment_id], "tags.kind = 'baseline'")
    logged = {r.data.tags["family"]: r for r in runs}
    assert {"mstl", "autoets", "autotheta"} <= set(logged)
    assert "MSTL" in logged["mstl"].data.params["model"] and logged["mstl"].data.metrics["test_cpu_seconds"] > 0


def test_a_second_run_on_the_same_data_and_settings_reuses_the_baseline_scores(tmp_path, monkeypatch):
    """The baselines are scored once per (data, code, settings) in a home: a second pipeline run reads the
    scores back (same rows, logged again under the new run); other settings or data are scored anew."""
    from dataclasses import replace

    from mlflow import MlflowClient

    from forecasting.api.jobs import TrainJob
    from forecasting.pipeline import plan, steps

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    calls = []
    real = steps.score_baselines
    monkeypatch.setattr(steps, "score_baselines", lambda *a: calls.append(1) or real(*a))
    df = sine_frame(n_series=2, length=400, seed=5)
    job = TrainJob("toy", H, ("gru",), levels=(80,), max_lookback=48, seasons=(24,))
    split = plan.make_split(df, job)
    first = steps.baseline_rows(steps.start_pipeline(tmp_path, job, df, "h"), job, df, split)
    ctx = steps.start_pipeline(tmp_path, replace(job, tune=replace(job.tune, n_trials=99)), df, "h")
    second = steps.baseline_rows(ctx, job, df, split)  # another search budget: the same baselines
    assert len(calls) == 1 and all(r["reused"] for r in second) and not any(r["reused"] for r in first)
    pd.testing.assert_frame_equal(pd.DataFrame(second).drop(columns="reused"),
                                  pd.DataFrame(first).drop(columns="reused"))
    logged = MlflowClient().search_runs([ctx.experiment_id], f"tags.mlflow.parentRunId = '{ctx.parent_run_id}'")
    assert {r.data.tags["family"] for r in logged} == {r["model"] for r in second}
    steps.baseline_rows(ctx, replace(job, levels=(90,)), df, split)  # another interval level
    changed = df.assign(y=df["y"] + np.where(df["ds"] == df["ds"].max(), 1.0, 0.0))  # one value differs
    steps.baseline_rows(steps.start_pipeline(tmp_path, job, changed, "h"), job, changed, split)
    assert len(calls) == 3
