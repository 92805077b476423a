"""Kept fits: a refit of a configuration a trial already trained on the same data and split loads
that trial's forecaster (same forecasts as training it again); anything that differs trains."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from forecasting.api import ensemble_check
from forecasting.api.fitcache import FitCache, fit_or_load
from forecasting.api.forecaster import Forecaster, ForecasterConfig
from forecasting.core.data import split_fractions
from forecasting.core.provenance import dataset_fingerprint
from forecasting.core.training import TrainConfig
from forecasting.families.recurrent import ModelConfig
from forecasting.pipeline.plan import fit_final
from forecasting.pipeline.search import top_configs
from forecasting.tuning.objective import tune
from forecasting.tuning.space import SearchSpace
from forecasting.tuning.study import TuneConfig
from tests.conftest import sine_frame

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data():
    df = sine_frame(n_series=3, length=24 * 20)
    return df, split_fractions(df.groupby("unique_id", sort=False).size(), 0.15, 0.15)


def config(max_epochs: int = 2) -> ForecasterConfig:
    return ForecasterConfig(model=ModelConfig(lookback=48, horizon=12, hidden=8, layers=1, highway=True),
                            train=TrainConfig(max_epochs=max_epochs, device="cpu", seed=0), calendar=False,
                            seasons=(24,))


def test_a_kept_fit_loads_with_its_record_and_forecasts_as_a_fresh_fit(data, tmp_path):
    df, split = data
    cache = FitCache(tmp_path, dataset_fingerprint(df))
    first, kept = fit_or_load(config(), df, split, cache)
    again, kept_again = fit_or_load(config(), df, split, cache)
    assert (kept, kept_again) == (False, True) and len(list(tmp_path.iterdir())) == 1
    assert again.fit_result_ == first.fit_result_
    pd.testing.assert_frame_equal(again.predict(df)[0], first.predict(df)[0])
    fresh = Forecaster(config())
    fresh.fit(df, split)
    pd.testing.assert_frame_equal(again.predict(df)[0], fresh.predict(df)[0], atol=1e-5, rtol=0)


def test_another_configuration_dataset_or_split_trains(data, tmp_path):
    df, split = data
    cache = FitCache(tmp_path, dataset_fingerprint(df))
    key = cache.key(config(), split)
    assert cache.key(config(max_epochs=3), split) != key
    assert FitCache(tmp_path, "another-dataset").key(config(), split) != key
    other = replace(split, train_end=split.train_end - 1)
    assert cache.key(config(), other) != key
    assert cache.key(config(), split) == key  # equal inputs, equal key
    assert cache.load(key) is None  # nothing kept yet: the caller trains


def test_the_refit_after_a_search_loads_the_best_trials(data, tmp_path, monkeypatch):
    """As the train flow does: tune with the cache, then refit the K best configurations (every one:
    on this clean sine the ridge-started best trial is many times better than the others)."""
    monkeypatch.setattr(ensemble_check, "MAX_MEMBER_LOSS_RATIO", float("inf"))
    df, split = data
    cache = FitCache(tmp_path / "fits", dataset_fingerprint(df))
    base = config()
    space = SearchSpace(lookbacks=(24, 48), periods=(24,))
    result = tune(df, split, base, "gru", "kept", TuneConfig(n_trials=3, max_epochs=2, seed=0), space,
                  progress=False, cache=cache)
    cfgs = top_configs(result, "gru", 2)
    model, cost = fit_final(df, split, cfgs, cache)
    assert cost["loaded_fits"] == 2 and cost["ensemble_size"] == 2
    trained, cost_trained = fit_final(df, split, cfgs)  # no cache: both trained again
    assert cost_trained["loaded_fits"] == 0
    np.testing.assert_allclose(model.evaluate(df, split, "test").y_hat, trained.evaluate(df, split, "test").y_hat,
                               atol=1e-5)


def test_an_ensemble_across_seeds_refits_each_configuration_with_the_next_seeds(data, tmp_path, monkeypatch):
    monkeypatch.setattr(ensemble_check, "MAX_MEMBER_LOSS_RATIO", float("inf"))
    df, split = data
    cache = FitCache(tmp_path / "fits", dataset_fingerprint(df))
    space = SearchSpace(lookbacks=(24, 48), periods=(24,))
    result = tune(df, split, config(), "gru", "seeds", TuneConfig(n_trials=2, max_epochs=2, seed=0), space,
                  progress=False, cache=cache)
    cfgs = top_configs(result, "gru", 2, seeds=2)
    base = config().train.seed
    assert [c.train.seed for c in cfgs] == [base, base + 1, base, base + 1]
    assert cfgs[0].model == cfgs[1].model and cfgs[0].model != cfgs[2].model
    model, cost = fit_final(df, split, cfgs, cache, combine="median")
    assert cost["ensemble_size"] == 4 and cost["loaded_fits"] == 2  # each trial's own seed is loaded
    assert model.combine == "median" and [m.cfg.train.seed for m in model.members] == [base, base + 1] * 2


def test_a_trial_far_worse_than_the_best_does_not_join_the_ensemble():
    """The K best completed trials, less any whose validation loss is over twice the best one's (a
    diverged trial scored 68 beside 0.89 and made a two-member mean 76 times worse)."""
    from types import SimpleNamespace

    from forecasting.pipeline.search import ensemble_trials

    trials = [SimpleNamespace(value=v) for v in (68.0, 0.9, 1.7, 1.0, 1.81)]
    assert [t.value for t in ensemble_trials(trials, 3)] == [0.9, 1.0, 1.7]
    assert [t.value for t in ensemble_trials(trials, 5)] == [0.9, 1.0, 1.7]  # 1.81 > 2 x 0.9, and 68
    assert [t.value for t in ensemble_trials(trials, 1)] == [0.9]
    assert [t.value for t in ensemble_trials([SimpleNamespace(value=0.0), SimpleNamespace(value=0.1)], 2)] == [0.0]
    assert ensemble_trials([], 3) == []
