"""The `backtest` command's integration side: which configuration a family backtest fits (its
study's best, else the search's starting point) and the MLflow run that records a backtest.
The backtests themselves are `backtest_run.py` (core)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd

from forecasting.api.forecaster import ForecasterConfig
from forecasting.api.jobs import TrainJob
from forecasting.core.backtest import BacktestConfig
from forecasting.core.columns import CUTOFF, ID
from forecasting.core.home import sqlite_path
from forecasting.pipeline.plan import base_config, make_split, search_space
from forecasting.tracking import runs
from forecasting.tuning.space import apply_params, starting_point
from forecasting.tuning.study import default_storage, study_name


def family_config(df: pd.DataFrame, freq: str, home: str | Path, dataset: str, family: str, horizon: int,
                  max_epochs: int, seed: int) -> ForecasterConfig:
    """The best configuration of the family's study for this dataset and horizon when one exists in
    the default storage, else the search space's starting point."""
    job = TrainJob(dataset, horizon, (family,), seed=seed)
    split = make_split(df, job)
    base = base_config(df, freq, job, split, family)
    base = replace(base, train=replace(base.train, max_epochs=max_epochs))
    params = starting_point(search_space(df, split, base, job), family)
    storage = default_storage(home)
    if not sqlite_path(storage).exists():  # no search has run here: nothing to load
        return apply_params(base, params, family)
    try:
        study = optuna.load_study(study_name=study_name(dataset, horizon, family), storage=storage)
        params = study.best_trial.params
    except (KeyError, ValueError):  # no such study, or no completed trial in it
        pass
    return apply_params(base, params, family)


def log_backtest_run(home: str | Path, dataset: str, result, cfg: BacktestConfig, df: pd.DataFrame | None = None,
                     levels: tuple[int, ...] = ()) -> str:
    """A run `backtest-<time>` in experiment `<dataset>-h<H>` holding the backtest's tables and plots
    (with interval columns and a fan chart of the last cutoff when `levels` were asked for)."""
    runs.configure(home)
    horizon = int(result.backtest.forecasts.groupby([ID, CUTOFF]).size().iloc[0])
    exp = runs.ensure_experiment(runs.experiment_name(dataset, horizon), home)
    with runs.run(exp, f"backtest-{time.strftime('%Y%m%d-%H%M%S')}",
                  tags={"kind": "backtest", "what": result.what, "in_sample": result.in_sample}) as run_id:
        runs.log_values(run_id, params={"windows": cfg.n_windows, "step": cfg.step or horizon})
        runs.log_backtest(run_id, result.backtest, f"{dataset}: {result.what}")
        if levels and df is not None:
            frame = result.backtest.forecasts
            last = frame[frame[CUTOFF] == frame.groupby(ID)[CUTOFF].transform("max")]
            runs.log_fan_chart(run_id, df, last, levels, (), f"{dataset}: {result.what}, last cutoff", "backtest")
    return run_id
