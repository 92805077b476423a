"""The families' combination: families ranked on one half of the validation windows, the best family
alone and the combination of every kept family's members scored on the other half, both ways
(hand-computed values); a family far worse than the best is left out; on real fits the check scores
what the models' own evaluation scores."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.api.ensemble import Ensemble, members
from forecasting.api.family_mix import FamilyMix, check, cross_fitted, pooled


def test_cross_fitted_scores_by_hand():
    """Family A has members a0, a1 (its forecast: their mean), family B one member b0; four windows of
    one step, actuals 0, MAE, halves [0, 0, 1, 1].
    A's forecasts: (1+3)/2 = 2 on the earlier half, (-1+-3)/2 = -2 on the later; B: -2, then 1.
    Ranked on the later half (A 2, B 1): B; scored on the earlier half: 2; the pool (a0, a1, b0):
    (1+3-2)/3 = 2/3. Ranked on the earlier half (A 2, B 2, a tie: A first): A; scored on the later
    half: 2; the pool: (-1-3+1)/3 = -1, so 1."""
    preds = np.array([[1, 1, -1, -1], [3, 3, -3, -3], [-2, -2, 1, 1]], dtype=float)[:, :, None]  # [M, N, H]
    owner, y, scale, half = np.array([0, 0, 1]), np.zeros((4, 1)), np.ones(4), np.array([0, 0, 1, 1])
    single, combined = cross_fitted(preds, owner, y, scale, half, metric="mae")
    assert (single, combined) == pytest.approx((0.5 * 2 + 0.5 * 2, 0.5 * 2 / 3 + 0.5 * 1))
    # MASE divides each window by its series' scale.
    assert cross_fitted(preds, owner, y, 2 * scale, half, "mase") == pytest.approx((1.0, 5 / 12))


def test_a_family_far_worse_than_the_best_is_left_out_of_the_combination():
    """B errs over twice as much as A on every window: ranked on either half, only A is kept, and the
    'combination' is A alone (the same score as the best family)."""
    preds = np.array([[1, -1, 1, -1], [5, -5, 5, -5]], dtype=float)[:, :, None]
    single, combined = cross_fitted(preds, np.array([0, 1]), np.zeros((4, 1)), np.ones(4), np.array([0, 1, 0, 1]),
                                    metric="mae")
    assert single == combined == pytest.approx(1.0)


def test_families_erring_independently_combine_and_one_sharing_a_bias_does_not():
    rng = np.random.default_rng(0)
    y, half, owner = rng.normal(size=(400, 6)), np.tile([0, 1], 200), np.array([0, 1])
    alike = np.stack([y + rng.normal(scale=1.0, size=y.shape) for _ in range(2)])
    single, combined = cross_fitted(alike, owner, y, np.ones(400), half, "mae")
    assert combined < 0.8 * single
    # The other family makes the best one's errors and a bias of its own (MAE about 0.13, within twice
    # the best's 0.08, so kept): the mean halves the bias and cancels nothing.
    good = y + rng.normal(scale=0.1, size=y.shape)
    single, combined = cross_fitted(np.stack([good, good + 0.12]), owner, y, np.ones(400), half, "mae")
    assert single < 0.9 * combined


def test_the_verdict_needs_two_families_no_worse_than_the_best_alone():
    assert FamilyMix(("gru", "lstm"), 1.0, 0.9, "mase").combines
    assert FamilyMix(("gru", "lstm"), 1.0, 1.0, "mase").combines
    assert not FamilyMix(("gru", "lstm"), 1.0, 1.1, "mase").combines
    assert not FamilyMix(("gru",), 1.0, 0.9, "mase").combines
    assert "registered as 'combined'" in FamilyMix(("gru", "lstm"), 1.0, 0.9, "mase").describe()


def test_on_real_fits_the_check_scores_the_pool_of_every_family_s_members(two_families):
    """A GRU (two members) and an LSTM fitted on one split: the pool holds the three members and
    forecasts their mean; the families' ranking uses their own validation scores."""
    df, split, gru, lstm = two_families
    pool = pooled([gru, lstm])
    assert members(gru) == gru.members and members(lstm) == [lstm] and pool.members == [*gru.members, lstm]
    ev, parts = pool.evaluate(df, split, "val"), [m.evaluate(df, split, "val") for m in pool.members]
    np.testing.assert_allclose(ev.y_hat, np.mean([p.y_hat for p in parts], axis=0), rtol=1e-5)
    mix = check({"gru": gru, "lstm": lstm}, df, split, metric="mae")
    scores = {"gru": gru.evaluate(df, split, "val").metrics["mae"], "lstm": lstm.evaluate(df, split, "val").metrics["mae"]}
    assert mix.kept[0] == min(scores, key=scores.get) and mix.metric == "mae"
    assert np.isfinite([mix.single, mix.combined]).all()
    assert check({"gru": gru}, df, split) is None  # one family: nothing to combine


@pytest.fixture(scope="module")
def two_families():
    from forecasting.api.forecaster import Forecaster, ForecasterConfig
    from forecasting.core.data import split_fractions
    from forecasting.core.training import TrainConfig
    from forecasting.families.recurrent import RecurrentConfig
    from tests.conftest import sine_frame

    df = sine_frame(n_series=3, length=400, seed=3)
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.2, 0.2)

    def fitted(cell: str, lookback: int, seed: int) -> Forecaster:
        f = Forecaster(ForecasterConfig(model=RecurrentConfig(cell=cell, lookback=lookback, horizon=12, hidden=8,
                                                              layers=1), family=cell,
                                        train=TrainConfig(max_epochs=2, device="cpu", seed=seed)))
        f.fit(df, split)
        return f

    gru = Ensemble([fitted("gru", 24, 0), fitted("gru", 48, 1)])
    return df, split, gru, fitted("lstm", 36, 2)
