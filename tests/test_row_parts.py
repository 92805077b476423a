"""Parts of a long Parquet file that workers read themselves (`forecasting.api.row_parts`), checked
against the driver's own path: reading the whole file (`batch.read_history`) and cutting it
(`batch.partitions`) must give exactly the same parts, whatever the row groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting.api import batch, row_parts
from forecasting.core.config import IngestConfig
from forecasting.core.errors import DataError


@pytest.fixture
def panel(make_sine_frame) -> pd.DataFrame:
    """7 series of unequal lengths (3 to 40 rows), one with a covariate column, in file order s0..s6."""
    frame = make_sine_frame(n_series=7, length=[40, 3, 25, 17, 40, 9, 31])
    return frame.assign(temp=np.arange(len(frame), dtype=float))


def _write(frame: pd.DataFrame, path, row_group_size: int = 11):
    frame.to_parquet(path, index=False, row_group_size=row_group_size)  # small groups: parts cross them
    return str(path)


@pytest.mark.parametrize("n", [2, 3, 4, 7, 20])
@pytest.mark.parametrize("group", [1, 11, 1000])
def test_parts_read_by_workers_equal_the_drivers_cut(panel, tmp_path, n, group):
    path = _write(panel, tmp_path / "h.parquet", group)
    plan = row_parts.plan(path, IngestConfig(), n)
    expected = batch.partitions(batch.read_history(path), n)
    assert plan is not None and len(plan) == len(expected) == min(n, 7)
    assert plan[0].start == 0 and plan[-1].stop == len(panel)
    assert all(a.stop == b.start for a, b in zip(plan, plan[1:], strict=False))  # every row once, in order
    for part, want in zip(plan, expected, strict=True):
        got = row_parts.read_part(part, IngestConfig())
        pd.testing.assert_frame_equal(got, want)
        assert part.n_series == row_parts.n_series(want) == want["unique_id"].nunique()


def test_custom_column_names_and_integer_ids(panel, tmp_path):
    ids = panel["unique_id"].str[1:].astype(int)  # integer ids: not dictionary-read, still coded
    frame = panel.rename(columns={"ds": "when", "y": "load"}).assign(unique_id=ids).rename(columns={"unique_id": "id"})
    path = _write(frame, tmp_path / "h.parquet")
    cfg = IngestConfig(id_col="id", time_col="when", target_col="load")
    plan = row_parts.plan(path, cfg, 3)
    expected = batch.partitions(batch.read_history(path, cfg), 3)
    for part, want in zip(plan, expected, strict=True):
        pd.testing.assert_frame_equal(row_parts.read_part(part, cfg), want)


def test_no_plan_where_workers_cannot_read_their_own_rows(panel, tmp_path):
    """The driver reads these as before: CSV, a wide file, interleaved series, a missing id, one part."""
    cfg = IngestConfig()
    panel.to_csv(tmp_path / "h.csv", index=False)
    assert row_parts.plan(str(tmp_path / "h.csv"), cfg, 2) is None
    wide = panel.pivot(index="ds", columns="unique_id", values="y").reset_index()
    assert row_parts.plan(_write(wide, tmp_path / "w.parquet"), cfg, 2) is None
    assert row_parts.plan(_write(panel, tmp_path / "l.parquet"), IngestConfig(format="wide"), 2) is None
    shuffled = panel.sample(frac=1.0, random_state=0)  # s0's rows no longer one run
    assert row_parts.plan(_write(shuffled, tmp_path / "s.parquet"), cfg, 2) is None
    gap = panel.astype({"unique_id": object})
    gap.loc[5, "unique_id"] = None
    assert row_parts.plan(_write(gap, tmp_path / "g.parquet"), cfg, 2) is None
    assert row_parts.plan(_write(panel, tmp_path / "one.parquet"), cfg, 1) is None


def test_input_errors_are_the_readers_one_line_errors(panel, tmp_path):
    with pytest.raises(DataError, match="file not found"):
        row_parts.plan(str(tmp_path / "absent.parquet"), IngestConfig(), 2)
    with pytest.raises(DataError, match=r"missing id/time/target column\(s\) \['y'\]"):
        row_parts.plan(_write(panel.drop(columns="y"), tmp_path / "h.parquet"), IngestConfig(), 2)


def test_a_bad_value_in_a_late_part_names_the_same_file_row_as_a_full_read(panel, tmp_path):
    bad = panel.astype({"y": str})  # a text column (as from a spreadsheet export), parsed as numbers
    bad.loc[150, "y"] = "oops"  # in the last part; the file's row 152 (header is row 1)
    path = _write(bad, tmp_path / "h.parquet")
    with pytest.raises(DataError) as full:
        batch.read_history(path)
    plan = row_parts.plan(path, IngestConfig(), 3)
    row_parts.read_part(plan[0], IngestConfig())  # the other parts read cleanly
    with pytest.raises(DataError) as part:
        row_parts.read_part(plan[-1], IngestConfig())
    assert str(part.value) == str(full.value) and "row 152" in str(part.value)


def test_a_remote_url_is_planned_and_read_through_fsspec(panel, tmp_path):
    import fsspec

    local = _write(panel, tmp_path / "h.parquet")
    url = "memory://row-parts/h.parquet"
    with open(local, "rb") as src, fsspec.open(url, "wb") as dst:
        dst.write(src.read())
    plan = row_parts.plan(url, IngestConfig(), 2)
    for part, want in zip(plan, batch.partitions(batch.read_history(local), 2), strict=True):
        pd.testing.assert_frame_equal(row_parts.read_part(part, IngestConfig()), want)


def test_a_file_pyarrow_cannot_read_is_left_to_the_drivers_reader(tmp_path):
    """No plan (the driver's `read_table` then names the problem in one line), never a traceback."""
    garbage = tmp_path / "h.parquet"
    garbage.write_bytes(b"not parquet at all")
    assert row_parts.plan(str(garbage), IngestConfig(), 2) is None
    with pytest.raises(DataError, match="cannot read"):
        batch.read_history(str(garbage))


def test_a_file_broken_after_the_plan_fails_its_part_in_one_line(panel, tmp_path):
    path = _write(panel, tmp_path / "h.parquet")
    plan = row_parts.plan(path, IngestConfig(), 2)
    (tmp_path / "h.parquet").write_bytes(b"truncated")
    with pytest.raises(DataError, match=r"cannot read rows 0-\d+ of .*h.parquet"):
        row_parts.read_part(plan[0], IngestConfig())
