"""The ensemble check: trials ranked on one half of the validation windows, the best one and the
combination of the K best scored on the other half, both ways (hand-computed values); on real fits it
scores what each member's own evaluation scores and never reads the test part."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.api import ensemble_check
from forecasting.api.ensemble_check import EnsembleCheck, check, cross_fitted, halves, kept


def test_halves_cut_each_series_windows_in_time():
    # series 0: 3 windows (1 earlier, 2 later); series 1: 2 (1, 1); series 2: 1 (its number is even: 0)
    assert halves(np.array([0, 0, 0, 1, 1, 2])).tolist() == [0, 1, 1, 0, 1, 0]
    assert halves(np.array([4, 4, 4, 4])).tolist() == [0, 0, 1, 1]
    # one window per series (validation as long as the horizon): the series alternate
    assert halves(np.array([0, 1, 2, 3, 4])).tolist() == [0, 1, 0, 1, 0]
    assert halves(np.array([0, 0, 1, 2, 2])).tolist() == [0, 1, 1, 0, 1]


def test_kept_drops_members_far_worse_than_the_best():
    assert kept([3.0, 1.0, 2.0, 1.5], 3) == [1, 3, 2]
    assert kept([3.0, 1.0, 2.0, 1.5], 2) == [1, 3]
    assert kept([1.0, 2.1, 1.5], 3) == [0, 2]  # 2.1 > 2 x 1.0
    assert kept([0.5], 3) == [0]


def test_cross_fitted_scores_by_hand():
    """Three trials, four windows of one step, actuals 0, MAE, halves [0, 0, 1, 1], K = 2.
    Ranked on the later half (losses 3, 1, 2): best t1, combined t1+t2, scored on the earlier half:
    2 and |2 - 2| / 2 = 0. Ranked on the earlier half (1, 2, 2): best t0, combined t0+t1 (t1 before
    t2 on a tie), scored on the later half: 3 and |3 - 1| / 2 = 1. Each half holds half the windows."""
    preds = np.array([[1, 1, 3, 3], [2, 2, -1, -1], [-2, -2, 2, 2]], dtype=float)[:, :, None]  # [T, N, H]
    y, scale, half = np.zeros((4, 1)), np.ones(4), np.array([0, 0, 1, 1])
    single, combined = cross_fitted(preds, y, scale, half, k=2, metric="mae")
    assert (single, combined) == pytest.approx((0.5 * 2 + 0.5 * 3, 0.5 * 0 + 0.5 * 1))
    # The median of two is their mean; MASE divides each window by its series' scale.
    assert cross_fitted(preds, y, scale, half, 2, "mae", "median") == pytest.approx((2.5, 0.5))
    assert cross_fitted(preds, y, 2 * scale, half, 2, "mase") == pytest.approx((1.25, 0.25))


def test_the_check_keeps_the_best_alone_when_the_others_err_the_same_way():
    """The others (within twice the best one's loss, so candidates) share one bias: combining them
    with the best adds it rather than cancelling anything."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=(400, 6))
    half = np.tile([0, 1], 200)
    good = y + rng.normal(scale=0.1, size=y.shape)  # MAE about 0.08
    biased = [y + 0.14 + rng.normal(scale=0.01, size=y.shape) for _ in range(4)]  # MAE about 0.14
    single, combined = cross_fitted(np.stack([good, *biased]), y, np.ones(400), half, 3, "mae")
    assert single < combined
    # Trials equally good in expectation: the best on one half is no better on the other, and their
    # mean cancels much of their independent errors.
    alike = np.stack([y + rng.normal(scale=1.0, size=y.shape) for _ in range(5)])
    single, combined = cross_fitted(alike, y, np.ones(400), half, 3, "mae")
    assert combined < 0.75 * single


@pytest.fixture(scope="module")
def fits():
    """Three small GRUs of different lookbacks and seeds on a sine panel with noise."""
    from forecasting.api.forecaster import Forecaster, ForecasterConfig
    from forecasting.core.data import split_fractions
    from forecasting.core.training import TrainConfig
    from forecasting.families.recurrent import ModelConfig
    from tests.conftest import sine_frame

    df = sine_frame(n_series=3, length=400, noise=0.3)
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.2, 0.2)
    out = []
    for lookback, seed in ((24, 0), (48, 1), (36, 2)):
        cfg = ForecasterConfig(model=ModelConfig(lookback=lookback, horizon=6, hidden=8, layers=1, highway=True),
                               train=TrainConfig(max_epochs=2, device="cpu", seed=seed, max_train_windows=256),
                               calendar=False, seasons=(24,))
        f = Forecaster(cfg)
        f.fit(df, split)
        out.append(f)
    return df, split, out


@pytest.mark.slow
def test_the_check_scores_what_each_members_own_evaluation_scores(fits):
    """An independent path: each member's `evaluate` on the validation part (its own windows and
    scaling), halves by a loop over the series, the same cross-fitting."""
    df, split, members = fits
    found = check(members, df, split, k=3, metric="mase")
    evs = [m.evaluate(df, split, "val") for m in members]
    assert all(len(e.series) == len(evs[0].series) for e in evs)  # the series are long enough for every lookback
    series = evs[0].series
    half = np.zeros(len(series), dtype=int)
    for s in np.unique(series):
        rows = np.flatnonzero(series == s)
        half[rows[len(rows) // 2:]] = 1
    preds = np.stack([e.y_hat for e in evs])
    want = cross_fitted(preds, evs[0].y, members[0].mase_scale_[series], half, 3, "mase")
    assert (found.single, found.combined) == pytest.approx(want, rel=1e-5)
    assert found.k == (3 if want[1] <= want[0] else 1) and found.candidates == 3
    assert isinstance(found, EnsembleCheck) and set(found.params()) >= {"ensemble_check_kept", "ensemble_check_single"}


@pytest.mark.slow
def test_the_check_never_reads_the_test_part(fits):
    df, split, members = fits
    before = check(members, df, split, k=3)
    changed = df.copy()
    for s, (_, rows) in enumerate(changed.groupby("unique_id", sort=False).groups.items()):
        test_rows = rows[int(split.val_end[s]):]
        changed.loc[test_rows, "y"] = 1e6  # would change every score that read it
    after = check(members, changed, split, k=3)
    assert (after.single, after.combined, after.k) == (before.single, before.combined, before.k)


@pytest.mark.slow
def test_the_check_does_not_apply_to_one_member_or_k_of_one(fits):
    df, split, members = fits
    assert check(members[:1], df, split, k=3) is None
    assert check(members, df, split, k=1) is None
    assert ensemble_check.check(members, df, split, k=2, max_windows=1) is None  # one window: a half is empty
