"""Per-series scaling fitted on training rows only; per-window normalization."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from forecasting.core.scaling import SeriesScaler, window_norm
from forecasting.core.windows import Panel

LENGTHS = [12, 7, 20]
TRAIN_END = np.array([8, 5, 10])


def make_panel(seed: int = 0) -> Panel:
    rng = np.random.default_rng(seed)
    n = sum(LENGTHS)
    values = np.stack([rng.normal(5, 3, n), rng.normal(-2, 0.5, n)], axis=1).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(LENGTHS)])
    starts = tuple(pd.Timestamp("2020-01-01") for _ in LENGTHS)
    return Panel(("a", "b", "c"), values, offsets, starts, "h", ("y", "x"))


def test_fit_uses_training_rows_only():
    panel = make_panel()
    sc = SeriesScaler.fit(panel, TRAIN_END)
    for i in range(3):
        train = panel.series(i)[: TRAIN_END[i]].astype(np.float64)
        np.testing.assert_allclose(sc.mean[i], train.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(sc.std[i], np.sqrt(((train - train.mean(axis=0)) ** 2).mean(axis=0)), rtol=1e-12)
    assert sc.ids == ("a", "b", "c") and sc.mean.shape == (3, 2)


def test_changing_test_rows_does_not_change_the_scaler():
    panel = make_panel()
    values = panel.values.copy()
    for i in range(3):  # overwrite everything after each series' training part
        lo, hi = panel.offsets[i] + TRAIN_END[i], panel.offsets[i + 1]
        values[lo:hi] = 1e6
    changed = replace(panel, values=values)
    a, b = SeriesScaler.fit(panel, TRAIN_END), SeriesScaler.fit(changed, TRAIN_END)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.std, b.std)
    # ...whereas a training row does change it (so the check above can fail).
    values[panel.offsets[1]] += 100.0
    c = SeriesScaler.fit(replace(panel, values=values), TRAIN_END)
    assert c.mean[1, 0] != a.mean[1, 0]
    np.testing.assert_array_equal(c.mean[[0, 2]], a.mean[[0, 2]])


def test_fit_without_train_end_uses_whole_series():
    panel = make_panel()
    sc = SeriesScaler.fit(panel)
    np.testing.assert_allclose(sc.mean[2], panel.series(2).astype(np.float64).mean(axis=0), rtol=1e-12)


def test_constant_series_keeps_unit_scale():
    values = np.array([[3.0], [3.0], [3.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    panel = Panel(("k", "v"), values, np.array([0, 3, 6]), (pd.Timestamp(0),) * 2, "h")
    sc = SeriesScaler.fit(panel)
    assert sc.std[0, 0] == 1.0 and sc.mean[0, 0] == 3.0
    np.testing.assert_array_equal(sc.transform(panel).series(0)[:, 0], [0, 0, 0])
    assert sc.std[1, 0] == pytest.approx(math.sqrt(2 / 3))


def test_transform_values_standardize_training_rows():
    panel = make_panel()
    sc = SeriesScaler.fit(panel, TRAIN_END)
    scaled = sc.transform(panel)
    assert scaled.values.dtype == np.float32 and scaled.values is not panel.values
    for i in range(3):
        expected = (panel.series(i).astype(np.float64) - sc.mean[i]) / sc.std[i]
        np.testing.assert_allclose(scaled.series(i), expected, rtol=1e-5, atol=1e-6)
        # Training rows standardized: mean 0, std 1 per column.
        tr = scaled.series(i)[: TRAIN_END[i]].astype(np.float64)
        np.testing.assert_allclose(tr.mean(axis=0), 0, atol=1e-6)
        np.testing.assert_allclose(tr.std(axis=0), 1, atol=1e-5)
    assert panel.values[0, 0] != scaled.values[0, 0]  # the input panel was not modified in place


def test_transform_other_panel_by_id_and_unknown_ids():
    panel = make_panel()
    sc = SeriesScaler.fit(panel, TRAIN_END)
    sub = Panel(("c", "a"), np.concatenate([panel.series(2), panel.series(0)]),
                np.array([0, 20, 32]), panel.starts[:2], "h", panel.columns)
    out = sc.transform(sub)
    np.testing.assert_allclose(out.series(0), sc.transform(panel).series(2), rtol=1e-6)
    np.testing.assert_array_equal(sc.index(["c", "a"]), [2, 0])
    with pytest.raises(KeyError, match="zz"):
        sc.index(["a", "zz"])


def test_dict_round_trip():
    sc = SeriesScaler.fit(make_panel(), TRAIN_END)
    back = SeriesScaler.from_dict(sc.to_dict())
    assert back.ids == sc.ids
    np.testing.assert_array_equal(back.mean, sc.mean)
    np.testing.assert_array_equal(back.std, sc.std)


# --------------------------------------------------------------------------- window_norm

X = torch.tensor([[[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [6.0, 40.0]],
                  [[4.0, 1.0], [4.0, 2.0], [4.0, 3.0], [4.0, 4.0]]])  # [B=2, L=4, F=2]


def test_window_norm_none():
    xn, loc, scale = window_norm(X, "none")
    assert torch.equal(xn, X)
    assert torch.equal(loc, torch.zeros(2, 1)) and torch.equal(scale, torch.ones(2, 1))


def test_window_norm_last():
    xn, loc, scale = window_norm(X, "last")
    assert torch.equal(loc, torch.tensor([[6.0], [4.0]])) and torch.equal(scale, torch.ones(2, 1))
    assert torch.equal(xn[0, :, 0], torch.tensor([-5.0, -4.0, -3.0, 0.0]))
    assert torch.equal(xn[1, :, 0], torch.zeros(4))
    assert torch.equal(xn[..., 1], X[..., 1])  # covariates untouched


def test_window_norm_mean():
    xn, loc, scale = window_norm(X, "mean")
    assert torch.equal(loc, torch.tensor([[3.0], [4.0]]))
    assert torch.equal(xn[0, :, 0], torch.tensor([-2.0, -1.0, 0.0, 3.0]))
    assert torch.equal(xn[..., 1], X[..., 1])


def test_window_norm_standard():
    xn, loc, scale = window_norm(X, "standard", eps=1e-5)
    sd = math.sqrt((4 + 1 + 0 + 9) / 4)  # population std of 1, 2, 3, 6
    assert loc[0, 0].item() == 3.0 and scale[0, 0].item() == pytest.approx(sd, rel=1e-6)
    torch.testing.assert_close(xn[0, :, 0], torch.tensor([-2.0, -1.0, 0.0, 3.0]) / sd)
    assert scale[1, 0].item() == pytest.approx(1e-5)  # constant window: scale clamped at eps
    assert torch.equal(xn[1, :, 0], torch.zeros(4))
    assert torch.equal(xn[..., 1], X[..., 1])


def test_window_norm_rejects_unknown_mode():
    with pytest.raises(ValueError, match="window norm"):
        window_norm(X, "minmax")


def test_a_flat_window_is_divided_by_the_floor_not_by_an_epsilon():
    """A window stuck at one value (std 0) and a nearly flat one are scaled by the floor, a twentieth
    of the (standardized) series' spread: what follows them stays within tens, not 1e5."""
    from forecasting.core.scaling import WINDOW_SCALE_FLOOR

    x = torch.zeros(2, 168, 1)
    x[1, -1, 0] = 0.01  # one small step at the end of a flat week: std about 0.00077
    xn, loc, scale = window_norm(x, "standard")
    assert WINDOW_SCALE_FLOOR == 0.05
    torch.testing.assert_close(scale, torch.full((2, 1), 0.05))
    assert torch.all((2.0 - loc) / scale < 41)  # a jump to 2 series-sd after the flat week: 40 window units (before: 2e5)


def test_the_ridge_start_of_a_panel_with_flat_stretches_is_as_good_as_on_the_rest():
    """ETTh2's LULL sits at 0 for days: before the floor, the flat windows' targets were divided by
    1e-5 and the ridge start (fitted on every window) was useless on validation (MAE 68 for 0.53)."""
    import pandas as pd

    from forecasting.core import baselines
    from forecasting.core.windows import make_windows, panel_from_long

    rng = np.random.default_rng(0)
    t = np.arange(1200)
    daily = np.sin(2 * np.pi * t / 24) + 0.1 * rng.normal(size=t.size)
    stuck = np.where((t // 200) % 2 == 0, 0.0, daily + 1.0)  # flat at 0 for 200 steps, then moving
    df = pd.DataFrame({"unique_id": np.repeat(["daily", "stuck"], t.size),
                       "ds": np.tile(pd.date_range("2024-01-01", periods=t.size, freq="h"), 2),
                       "y": np.concatenate([daily, stuck])})
    w = make_windows(panel_from_long(df, "h"), 48, 12)
    train = baselines.Windows(w.panel, 48, 12, w.starts[: len(w.starts) * 3 // 4])
    val = baselines.Windows(w.panel, 48, 12, w.starts[len(w.starts) * 3 // 4:])
    coef, bias = baselines._fit_linear_start(train, val, "standard", False)
    x, y = val.arrays(np.arange(len(val)))
    xn, loc, scale = window_norm(torch.from_numpy(np.ascontiguousarray(x[..., :1])).float(), "standard")
    pred = (xn[..., 0] @ coef.T + bias) * scale + loc  # [N, H] back on the series' scale
    mae = float(np.mean(np.abs(pred.numpy() - y)))
    last = float(np.mean(np.abs(x[:, -1:, 0] - y)))
    assert mae < last  # the ridge start beats repeating the last value
