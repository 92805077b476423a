"""Sliding windows against a plain Python loop; zero-copy views; panels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting.core.data import Split, split_fractions
from forecasting.core.errors import DataError
from forecasting.core.windows import Panel, make_windows, panel_from_long, sliding_view, window_starts

LENGTHS = [37, 5, 64, 20, 1, 49]


def random_frame(lengths=LENGTHS, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = [
        pd.DataFrame({
            "unique_id": f"u{i:02d}",
            "ds": pd.date_range("2022-01-01", periods=n, freq="h"),
            "y": rng.normal(size=n),
            "x": rng.normal(size=n),
        })
        for i, n in enumerate(lengths)
    ]
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return random_frame()


@pytest.fixture(scope="module")
def panel(frame) -> Panel:
    return panel_from_long(frame, "h", covariates=("x",))


def reference_windows(series: list[np.ndarray], L: int, H: int, stride: int, lo=None, hi=None):
    """By definition: local starts s whose targets [s+L, s+L+H) lie in [lo, hi) of their series,
    every `stride`-th counted from the first; returns (series index, local start) pairs."""
    out = []
    for i, values in enumerate(series):
        n = len(values)
        a = 0 if lo is None else int(lo[i])
        b = n if hi is None else min(int(hi[i]), n)
        admissible = [s for s in range(n) if s + L >= a and s + L + H <= b]
        out += [(i, s) for s in admissible[::stride]]
    return out


def per_series(frame: pd.DataFrame) -> list[np.ndarray]:
    return [g[["y", "x"]].to_numpy(np.float32) for _, g in frame.groupby("unique_id", sort=True)]


def test_panel_from_long(frame, panel):
    np.testing.assert_array_equal(panel.lengths, LENGTHS)
    np.testing.assert_array_equal(panel.offsets, np.concatenate([[0], np.cumsum(LENGTHS)]))
    assert panel.ids == tuple(f"u{i:02d}" for i in range(len(LENGTHS)))
    assert panel.columns == ("y", "x")
    assert panel.values.dtype == np.float32 and panel.values.flags.c_contiguous
    for i, ref in enumerate(per_series(frame)):
        np.testing.assert_array_equal(panel.series(i), ref)
        assert list(panel.timestamps(i)) == list(pd.date_range("2022-01-01", periods=LENGTHS[i], freq="h"))
    assert np.shares_memory(panel.series(2), panel.values)


def test_panel_rejects_ungrouped_rows(frame):
    a, b = frame[frame.unique_id == "u00"], frame[frame.unique_id == "u02"]
    mixed = pd.concat([a.iloc[:10], b, a.iloc[10:]], ignore_index=True)
    with pytest.raises(DataError, match="not grouped by series"):
        panel_from_long(mixed, "h")
    with pytest.raises(DataError, match="missing column"):
        panel_from_long(frame, "h", covariates=("temperature",))


@pytest.mark.parametrize(("L", "H", "stride"), [(1, 1, 1), (4, 2, 1), (8, 3, 2), (10, 5, 3), (3, 7, 5), (30, 20, 1)])
def test_all_windows_match_loop(frame, panel, L, H, stride):
    series = per_series(frame)
    ref = reference_windows(series, L, H, stride)
    assert ref
    w = make_windows(panel, L, H, stride=stride)
    expected_starts = [panel.offsets[i] + s for i, s in ref]
    np.testing.assert_array_equal(w.starts, expected_starts)
    np.testing.assert_array_equal(
        window_starts(panel.offsets, L, H, stride), expected_starts
    )
    assert len(w) == len(ref)
    np.testing.assert_array_equal(w.series_index, [i for i, _ in ref])
    x, y = w.arrays()
    assert x.shape == (len(ref), L, 2) and y.shape == (len(ref), H)
    for k, (i, s) in enumerate(ref):
        # Compared with the series' own array: a window that crossed into the next series would differ.
        assert s + L + H <= len(series[i])
        np.testing.assert_array_equal(x[k], series[i][s:s + L])
        np.testing.assert_array_equal(y[k], series[i][s + L:s + L + H, 0])


@pytest.mark.parametrize(("L", "H", "stride"), [(4, 2, 1), (8, 3, 2), (6, 4, 3), (12, 1, 1)])
@pytest.mark.parametrize("part", ["train", "val", "test"])
def test_split_part_windows_match_loop(frame, panel, L, H, stride, part):
    split = split_fractions(dict(zip(panel.ids, LENGTHS, strict=True)), val=0.2, test=0.25)
    lo, hi = {
        "train": (np.zeros(len(LENGTHS), int), split.train_end),
        "val": (split.train_end, split.val_end),
        "test": (split.val_end, split.lengths),
    }[part]
    series = per_series(frame)
    ref = reference_windows(series, L, H, stride, lo, hi)
    assert ref
    w = make_windows(panel, L, H, split, part, stride=stride)
    np.testing.assert_array_equal(w.starts, [panel.offsets[i] + s for i, s in ref])
    x, y = w.arrays()
    for k, (i, s) in enumerate(ref):
        assert lo[i] <= s + L and s + L + H <= hi[i]  # targets stay inside the part
        np.testing.assert_array_equal(x[k], series[i][s:s + L])
        np.testing.assert_array_equal(y[k], series[i][s + L:s + L + H, 0])


def test_split_parts_hand_counts():
    # One series of 20 rows: train [0,12), val [12,16), test [16,20); L=4, H=2.
    values = np.arange(20, dtype=np.float32)[:, None]
    panel = Panel(("a",), values, np.array([0, 20]), (pd.Timestamp("2020-01-01"),), "h")
    split = Split(("a",), np.array([20]), np.array([12]), np.array([16]))
    train = make_windows(panel, 4, 2, split, "train")
    val = make_windows(panel, 4, 2, split, "val")
    test = make_windows(panel, 4, 2, split, "test")
    np.testing.assert_array_equal(train.starts, np.arange(0, 7))  # last targets rows 10, 11
    np.testing.assert_array_equal(val.starts, np.arange(8, 11))  # targets 12..15
    np.testing.assert_array_equal(test.starts, np.arange(12, 15))  # targets 16..19
    _, y = test.arrays()
    np.testing.assert_array_equal(y, [[16, 17], [17, 18], [18, 19]])
    assert make_windows(panel, 4, 2, split, "test", stride=2).starts.tolist() == [12, 14]
    assert len(make_windows(panel, 4, 5, split, "val")) == 0  # H longer than the part


def test_targets_of_parts_partition_the_series(frame, panel):
    split = split_fractions(dict(zip(panel.ids, LENGTHS, strict=True)), val=0.2, test=0.25)
    L, H = 3, 1
    covered = {}
    for part in ("train", "val", "test"):
        w = make_windows(panel, L, H, split, part)
        for g in w.starts + L:
            assert g not in covered
            covered[int(g)] = part
    # With H=1, every row after the first L of each series is a target exactly once.
    expected = {int(o + r) for o, n in zip(panel.offsets[:-1], LENGTHS, strict=True) for r in range(L, n)}
    assert set(covered) == expected


def test_view_is_zero_copy(panel):
    w = make_windows(panel, 6, 3)
    view = w.view()
    assert view.shape == (len(panel.values) - 9 + 1, 9, 2)
    assert np.shares_memory(view, panel.values)
    assert not view.flags.writeable
    np.testing.assert_array_equal(view[17], panel.values[17:26])
    assert np.shares_memory(sliding_view(panel.values, 4), panel.values)


def test_torch_unfold_view_is_zero_copy_on_cpu(panel):
    import torch

    from forecasting.core.training import _device_windows
    from forecasting.core.windows import inputs_targets

    w = make_windows(panel, 6, 3, stride=2)
    view, starts = _device_windows(w, torch.device("cpu"))
    assert view.data_ptr() == panel.values.ctypes.data  # the panel's own memory, no copy
    x, y = inputs_targets(view[starts], w.lookback)  # the same gather as `Windows.arrays`, on the device
    xr, yr = w.arrays()
    np.testing.assert_array_equal(x.numpy(), xr)
    np.testing.assert_array_equal(y.numpy(), yr)


def test_make_windows_argument_errors(panel):
    with pytest.raises(ValueError, match="split is needed"):
        make_windows(panel, 4, 2, part="train")
    split = split_fractions(dict(zip(panel.ids, LENGTHS, strict=True)))
    with pytest.raises(ValueError, match="part must be"):
        make_windows(panel, 4, 2, split, "holdout")
    other = split_fractions({"zz": 10})
    with pytest.raises(DataError, match="different series"):
        make_windows(panel, 4, 2, other, "train")


def test_no_windows_when_series_too_short(panel):
    w = make_windows(panel, 60, 10)
    assert len(w) == 0 and w.starts.dtype == np.int64


def test_rows_grouped_by_series_in_time_order_equal_a_stable_lexsort():
    """The one-pass check of an already ordered history gives the sort's own order, and any other
    history is sorted (interleaved series, time going backwards, ties within a series)."""
    from forecasting.api.inputs import _by_series_in_time

    shuffle = np.random.default_rng(0).permutation(18)
    t = np.datetime64("2024-01-01T00", "ns") + np.arange(6).astype("timedelta64[h]")
    cases = {
        "ordered": (np.repeat([0, 1, 2], 6), np.tile(t, 3)),
        "ordered with a tie": (np.repeat([0, 1], 3), t[[0, 1, 1, 2, 3, 4]]),
        "interleaved": (np.tile([0, 1], 6), np.repeat(t, 2)),
        "backwards in time": (np.repeat([0, 1], 6), np.tile(t[::-1], 2)),
        "shuffled": (np.repeat([0, 1, 2], 6)[shuffle], np.tile(t, 3)[shuffle]),
    }
    for name, (codes, ds) in cases.items():
        np.testing.assert_array_equal(_by_series_in_time(codes, ds), np.lexsort((ds, codes)), err_msg=name)
