"""Ingest: reading, validation messages, regularization, formats, frequency, splits."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.core import data as D
from forecasting.core.errors import DataError
from forecasting.core.files import write_table

ETTH1 = Path(__file__).resolve().parents[1] / "data" / "ETTh1.csv"
HEADER = "unique_id,ds,y\n"


def hourly_rows(uid: str, hours: list[int], values: list) -> str:
    """CSV lines for one series at the given hour offsets from 2020-01-01 00:00."""
    t0 = pd.Timestamp("2020-01-01")
    return "".join(
        f"{uid},{t0 + pd.Timedelta(hours=h)},{'' if v is None else v}\n" for h, v in zip(hours, values, strict=True)
    )


def load_error(path, **cfg) -> str:
    with pytest.raises(DataError) as info:
        D.load(path, D.IngestConfig(**cfg))
    return str(info.value)


# --------------------------------------------------------------------------- unreadable / empty


def test_empty_file(write_text):
    msg = load_error(write_text("empty.csv", ""))
    assert "empty" in msg and "empty.csv" in msg


def test_header_only_file(write_text):
    msg = load_error(write_text("header.csv", HEADER))
    assert "no data rows" in msg and "header.csv" in msg


def test_missing_path(tmp_path):
    msg = load_error(tmp_path / "absent.csv")
    assert "not found" in msg and "absent.csv" in msg


def test_binary_garbage_parquet(tmp_path):
    path = tmp_path / "garbage.parquet"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 512, dtype=np.uint8).tobytes())
    msg = load_error(path)
    assert "cannot read" in msg and "garbage.parquet" in msg


def test_unsupported_extension(write_text):
    msg = load_error(write_text("table.xlsx", "whatever"))
    assert "unsupported file type" in msg and ".xlsx" in msg


def test_directory_is_not_a_file(tmp_path):
    msg = load_error(tmp_path)
    assert "not a file" in msg


# --------------------------------------------------------------------------- bad values


def test_missing_target_column(write_text):
    path = write_text("m.csv", "unique_id,ds\na,2020-01-01 00:00\na,2020-01-01 01:00\n")
    msg = load_error(path)
    assert "missing" in msg and "['y']" in msg and "unique_id" in msg  # names the column and lists present


def test_missing_configured_column(write_text):
    path = write_text("m.csv", "series,time,value\na,2020-01-01 00:00,1\n")
    msg = load_error(path, id_col="series", time_col="time", target_col="load")
    assert "['load']" in msg


def test_missing_id_column_in_long_format(write_text):
    path = write_text("m.csv", "ds,y\n2020-01-01 00:00,1\n")
    msg = load_error(path, format="long")
    assert "['unique_id']" in msg


def test_configured_column_names_are_renamed(write_text):
    body = "series,time,value,temp\n" + "".join(
        f"a,2020-01-01 0{h}:00,{h},{10 + h}\n" for h in range(4)
    )
    df, rep = D.load(write_text("c.csv", body), D.IngestConfig(id_col="series", time_col="time", target_col="value"))
    assert list(df.columns) == ["unique_id", "ds", "y", "temp"]
    assert df["y"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert df["temp"].tolist() == [10.0, 11.0, 12.0, 13.0]
    assert rep.n_series == 1 and rep.n_rows == 4


def test_unparseable_timestamp(write_text):
    body = HEADER + "a,2020-01-01 00:00,1\na,notadate,2\na,2020-01-01 02:00,3\n"
    msg = load_error(write_text("t.csv", body))
    assert "column 'ds'" in msg and "row 3" in msg and "notadate" in msg


def test_missing_timestamp_cell(write_text):
    body = HEADER + "a,2020-01-01 00:00,1\na,2020-01-01 01:00,2\na,,3\n"
    msg = load_error(write_text("t.csv", body))
    assert "column 'ds'" in msg and "row 4" in msg


def test_non_numeric_value(write_text):
    body = HEADER + "a,2020-01-01 00:00,1\nb,2020-01-01 00:00,2\nb,2020-01-01 01:00,abc\n"
    msg = load_error(write_text("n.csv", body))
    assert "column 'y'" in msg and "non-numeric" in msg and "row 4" in msg and "series 'b'" in msg
    assert "abc" in msg


def test_non_numeric_covariate(write_text):
    body = "unique_id,ds,y,temp\na,2020-01-01 00:00,1,5\na,2020-01-01 01:00,2,warm\n"
    msg = load_error(write_text("n.csv", body))
    assert "column 'temp'" in msg and "row 3" in msg and "warm" in msg


def test_duplicate_pairs(write_text):
    body = HEADER + hourly_rows("a", [0, 1, 1, 2], [1, 2, 3, 4])
    msg = load_error(write_text("d.csv", body))
    assert "2 rows" in msg and "series 'a'" in msg and "2020-01-01 01:00:00" in msg and "rows 3, 4" in msg


@pytest.mark.parametrize("token", ["inf", "-inf"])
def test_infinity(write_text, token):
    body = HEADER + hourly_rows("a", [0, 1, 2], [1, 2, 3]) + hourly_rows("b", [0, 1, 2], [1, token, 3])
    msg = load_error(write_text("i.csv", body))
    assert "infinite" in msg and "column 'y'" in msg and "row 6" in msg and "series 'b'" in msg


def test_irregular_spacing(write_text):
    body = HEADER + hourly_rows("a", [0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]) + (
        "b,2020-01-01 00:00,1\nb,2020-01-01 01:00,2\nb,2020-01-01 02:30,3\nb,2020-01-01 03:00,4\n"
    )
    msg = load_error(write_text("irr.csv", body))
    assert "series 'b'" in msg and "irregular" in msg and "2020-01-01 02:30:00" in msg and "row 10" in msg


def test_irregular_spacing_row_is_the_file_row_when_unsorted(write_text):
    # The off-grid row is line 8 of the file; sorting must not change the row the message names.
    body = HEADER + (
        "b,2020-01-01 00:00,1\nb,2020-01-01 01:00,1\nb,2020-01-01 02:00,1\n"
        "a,2020-01-01 03:00,3\na,2020-01-01 00:00,1\na,2020-01-01 01:00,2\n"
        "a,2020-01-01 01:30,3\na,2020-01-01 04:00,3\n"
    )
    msg = load_error(write_text("irr.csv", body))
    assert "series 'a'" in msg and "01:30:00" in msg and "(row 8)" in msg


def test_given_frequency_rejects_off_grid(write_text):
    body = HEADER + hourly_rows("a", [0, 1, 2, 3], [1, 2, 3, 4])
    msg = load_error(write_text("f.csv", body), freq="2h")
    assert "series 'a'" in msg and "irregular" in msg and "'2h'" in msg


def test_bad_config_values():
    with pytest.raises(DataError, match="fill policy"):
        D.IngestConfig(fill="mean")
    with pytest.raises(DataError, match="short-series policy"):
        D.IngestConfig(short="keep")
    with pytest.raises(DataError, match="format"):
        D.IngestConfig(format="tall")


# --------------------------------------------------------------------------- short series


def short_body() -> str:
    return HEADER + hourly_rows("a", range(6), [1, 2, 3, 4, 5, 6]) + hourly_rows("b", range(4), [1, 2, 3, 4])


def test_short_series_error(write_text):
    msg = load_error(write_text("s.csv", short_body()), min_length=5, short="error")
    assert "series 'b'" in msg and "too short" in msg and "4 points" in msg and "5" in msg


def test_short_series_drop(write_text):
    with pytest.warns(UserWarning, match="dropping series 'b'"):
        df, rep = D.load(write_text("s.csv", short_body()), D.IngestConfig(min_length=5, short="drop"))
    assert rep.dropped == (("b", "too short: 4 points, needs at least 5"),)
    assert rep.n_series == 1 and rep.n_rows == 6
    assert df["unique_id"].unique().tolist() == ["a"]


def test_all_series_too_short(write_text):
    with pytest.warns(UserWarning):
        msg = load_error(write_text("s.csv", short_body()), min_length=10)
    assert "no usable series: too short" in msg and "needs at least 10" in msg and "1 more" in msg


@pytest.mark.parametrize("fill", ["interpolate", "ffill", "zero"])
def test_a_series_without_a_single_number_is_dropped_and_the_report_matches_the_file(write_text, fill):
    """No fill policy can fill a series whose y is all empty: it is dropped by the short-series policy
    (or refused), and neither the file nor the report counts it (before: 'filled', NaN in the Parquet)."""
    body = "unique_id,ds,y\n" + "".join(f"a,2020-01-01 {h:02d}:00,{h}.5\n" for h in range(6)) + "".join(
        f"e,2020-01-01 {h:02d}:00,\n" for h in range(6))
    with pytest.warns(UserWarning, match="dropping series 'e': none of its 6 y values is a number"):
        df, rep = D.load(write_text("e.csv", body), D.IngestConfig(fill=fill))
    assert df["unique_id"].unique().tolist() == ["a"] and np.isfinite(df["y"]).all()
    assert rep.n_filled == 0 and rep.dropped == (("e", "none of its 6 y values is a number"),)
    msg = load_error(write_text("e2.csv", body), short="error")
    assert "series 'e' cannot be used: none of its 6 y values is a number" in msg


def test_long_enough_series_are_kept_silently(write_text):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        df, rep = D.load(write_text("s.csv", short_body()), D.IngestConfig(min_length=4))
    assert rep.dropped == () and rep.n_series == 2 and len(df) == 10


# --------------------------------------------------------------------------- sorting and gaps


def test_unsorted_rows_are_sorted(write_text):
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({
        "unique_id": np.repeat(["a", "b", "c"], 5),
        "ds": np.tile(pd.date_range("2020-01-01", periods=5, freq="h"), 3),
        "y": rng.normal(size=15).round(6),
    })
    path = write_text("u.csv", ref.sample(frac=1.0, random_state=3).to_csv(index=False))
    df, rep = D.load(path)
    assert rep.was_sorted is False
    pd.testing.assert_frame_equal(df, ref, check_dtype=False, check_index_type=False)

    df2, rep2 = D.load(write_text("s.csv", ref.to_csv(index=False)))
    assert rep2.was_sorted is True
    pd.testing.assert_frame_equal(df2, df)


GAP_BODY = (
    HEADER
    + hourly_rows("a", [0, 1, 4, 5], [1, 2, 8, 3])  # 02:00 and 03:00 absent
    + hourly_rows("b", [0, 1, 2, 4], [1, None, 5, 9])  # 01:00 empty, 03:00 absent
)


@pytest.mark.parametrize(
    ("fill", "a_filled", "b_filled"),
    [
        ("interpolate", [4.0, 6.0], [3.0, 7.0]),
        ("ffill", [2.0, 2.0], [1.0, 5.0]),
        ("zero", [0.0, 0.0], [0.0, 0.0]),
    ],
)
def test_gap_fill_policies(write_text, fill, a_filled, b_filled):
    df, rep = D.load(write_text("g.csv", GAP_BODY), D.IngestConfig(fill=fill))
    assert rep.n_filled == 4
    assert rep.n_rows == 11 and rep.n_series == 2 and rep.freq == "h"
    a = df[df["unique_id"] == "a"]
    b = df[df["unique_id"] == "b"]
    assert a["ds"].tolist() == list(pd.date_range("2020-01-01", periods=6, freq="h"))
    assert b["ds"].tolist() == list(pd.date_range("2020-01-01", periods=5, freq="h"))
    assert a["y"].tolist() == [1.0, 2.0, *a_filled, 8.0, 3.0]
    assert b["y"].tolist() == [1.0, b_filled[0], 5.0, b_filled[1], 9.0]
    assert not df["y"].isna().any()


def test_interpolation_fills_covariates_too(write_text):
    body = "unique_id,ds,y,temp\n" + "".join(
        f"a,2020-01-01 {h:02d}:00,{h},{10 * h}\n" for h in (0, 1, 3)
    )
    df, rep = D.load(write_text("c.csv", body))
    assert rep.n_filled == 1
    assert df["y"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert df["temp"].tolist() == [0.0, 10.0, 20.0, 30.0]


def test_fill_error(write_text):
    msg = load_error(write_text("g.csv", GAP_BODY), fill="error")
    assert "series 'a'" in msg and "2 missing" in msg and "2020-01-01 02:00:00" in msg and "fill='error'" in msg


def test_no_gaps_reports_zero_filled(write_text):
    df, rep = D.load(write_text("ok.csv", short_body()))
    assert rep.n_filled == 0 and rep.n_rows == 10


# --------------------------------------------------------------------------- wide format


def test_wide_format(write_text):
    body = (
        "date,zeta,alpha\n"
        "2020-01-01 00:00,1.5,10\n"
        "2020-01-01 01:00,2.5,20\n"
        "2020-01-01 02:00,3.5,30\n"
    )
    df, rep = D.load(write_text("w.csv", body))
    times = list(pd.date_range("2020-01-01", periods=3, freq="h"))
    expected = pd.DataFrame({
        "unique_id": ["alpha"] * 3 + ["zeta"] * 3,
        "ds": times * 2,
        "y": [10.0, 20.0, 30.0, 1.5, 2.5, 3.5],
    })
    pd.testing.assert_frame_equal(df, expected, check_dtype=False)
    assert rep.n_series == 2 and rep.n_rows == 6 and rep.freq == "h"
    assert rep.was_sorted is False  # columns zeta, alpha melt into unsorted ids


def test_wide_format_series_cols_and_errors(write_text):
    body = "date,A,B\n2020-01-01,1,x1\n2020-01-02,2,2\n2020-01-03,3,3\n"
    path = write_text("w.csv", body)
    df, rep = D.load(path, D.IngestConfig(series_cols=("A",)))
    assert df["unique_id"].unique().tolist() == ["A"] and df["y"].tolist() == [1.0, 2.0, 3.0]
    assert rep.freq == "D"
    # The bad cell is on line 2 of the file, in column B.
    msg = load_error(path)
    assert "non-numeric" in msg and "row 2" in msg and "series 'B'" in msg and "x1" in msg
    msg = load_error(path, series_cols=("A", "C"))
    assert "['C']" in msg


def test_wide_etth1():
    raw = pd.read_csv(ETTH1)
    df, rep = D.load(ETTH1)
    cols = [c for c in raw.columns if c != "date"]
    assert rep.n_series == len(cols) == 7
    assert rep.n_rows == len(raw) * 7 == len(df)
    assert rep.freq == "h" and rep.n_filled == 0
    assert df["unique_id"].tolist() == list(np.repeat(sorted(cols), len(raw)))
    # Every series equals its column in the raw file, in time order.
    times = pd.to_datetime(raw["date"])
    for col in ("OT", "HUFL"):
        part = df[df["unique_id"] == col]
        np.testing.assert_array_equal(part["y"].to_numpy(), raw[col].to_numpy(np.float64))
        np.testing.assert_array_equal(part["ds"].to_numpy(), times.to_numpy())
    assert df.iloc[0]["unique_id"] == "HUFL" and df.iloc[0]["y"] == pytest.approx(5.827000141143799)


# --------------------------------------------------------------------------- frequency


@pytest.mark.parametrize(("freq", "expected"), [("h", "h"), ("D", "D"), ("15min", "15min")])
def test_infer_frequency(freq, expected):
    df = pd.DataFrame({
        "unique_id": np.repeat(["a", "b"], 10),
        "ds": np.tile(pd.date_range("2020-03-01", periods=10, freq=freq), 2),
        "y": np.arange(20.0),
    })
    assert D.infer_freq(df) == expected
    _, rep = D.validate(df)
    assert rep.freq == expected and rep.n_filled == 0


def test_infer_frequency_is_a_string_without_warnings():
    # pandas 3 warns that infer_freq will return an offset object; the report keeps a string, quietly.
    df = pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2020-01-01", periods=5, freq="h"), "y": 1.0})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        freq = D.infer_freq(df)
    assert freq == "h" and isinstance(freq, str)
    assert [str(w.message) for w in caught] == []


def test_infer_frequency_with_gaps_uses_commonest_step():
    ds = pd.date_range("2020-01-01", periods=10, freq="h").delete([3, 6])  # pandas cannot infer
    df = pd.DataFrame({"unique_id": "a", "ds": ds, "y": np.arange(8.0)})
    assert pd.infer_freq(ds) is None
    assert D.infer_freq(df) == "h"
    out, rep = D.validate(df)
    assert rep.n_filled == 2 and len(out) == 10


def test_infer_frequency_needs_two_points():
    df = pd.DataFrame({"unique_id": ["a", "b"], "ds": pd.to_datetime(["2020-01-01", "2020-01-02"]), "y": [1.0, 2.0]})
    with pytest.raises(DataError, match="cannot infer a frequency"):
        D.validate(df)


def test_unknown_frequency():
    df = pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2020-01-01", periods=4, freq="h"), "y": 1.0})
    with pytest.raises(DataError, match="unknown frequency 'fortnightly'"):
        D.validate(df, D.IngestConfig(freq="fortnightly"))


# --------------------------------------------------------------------------- csv and parquet


def test_csv_and_parquet_load_the_same(tmp_path, make_sine_frame):
    ref = make_sine_frame(n_series=3, length=[30, 40, 25], freq="D")
    ref["temp"] = np.arange(len(ref), dtype=np.float64)
    ref.to_csv(tmp_path / "x.csv", index=False)
    write_table(ref, tmp_path / "x.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv", "x.parquet"]  # no temp file left
    a, rep_a = D.load(tmp_path / "x.csv")
    b, rep_b = D.load(tmp_path / "x.parquet")
    assert rep_a == rep_b
    assert rep_a.freq == "D" and rep_a.n_rows == 95 and rep_a.n_series == 3
    pd.testing.assert_frame_equal(a, b, check_dtype=False, check_index_type=False, atol=1e-12)
    np.testing.assert_allclose(b["y"].to_numpy(), ref["y"].to_numpy())
    assert b["ds"].tolist() == ref["ds"].tolist()


# --------------------------------------------------------------------------- splits


def test_split_fractions():
    sp = D.split_fractions({"a": 100, "b": 50}, val=0.1, test=0.2)
    assert sp.ids == ("a", "b")
    np.testing.assert_array_equal(sp.lengths, [100, 50])
    np.testing.assert_array_equal(sp.train_end, [70, 35])
    np.testing.assert_array_equal(sp.val_end, [80, 40])


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.2), (0.5, 0.5), (0.1, 1.0)])
def test_split_fractions_rejects_bad_fractions(val, test):
    with pytest.raises(DataError, match="fractions"):
        D.split_fractions({"a": 10}, val=val, test=test)


def test_error_messages_name_the_problem_not_a_traceback(write_text):
    # Every message is a single line that a user can act on.
    msg = load_error(write_text("t.csv", HEADER + "a,yesterday,1\n"))
    assert "\n" not in msg and re.search(r"row \d+", msg)


def test_numeric_timestamps_need_their_unit(write_text):
    """Epoch seconds were read as nanoseconds (everything in 1970, frequency 3600ns): now refused in one
    line naming the column and row, and read correctly with --time-unit."""
    epoch = 1_700_000_000  # 2023-11-14 22:13:20 UTC
    body = "unique_id,ds,y\n" + "".join(f"a,{epoch + 3600 * h},{h}.0\n" for h in range(6))
    msg = load_error(write_text("n.csv", body))
    assert "column 'ds' holds numbers, not timestamps (row 2: 1700000000)" in msg and "--time-unit" in msg
    df, rep = D.load(write_text("n.csv", body), D.IngestConfig(time_unit="s"))
    assert rep.freq == "h" and df["ds"].iloc[0] == pd.Timestamp("2023-11-14 22:13:20")
    ms = "unique_id,ds,y\n" + "".join(f"a,{(epoch + 3600 * h) * 1000},{h}.0\n" for h in range(6))
    assert D.load(write_text("m.csv", ms), D.IngestConfig(time_unit="ms"))[0]["ds"].equals(df["ds"])
    with pytest.raises(D.DataError, match="--time-unit must be one of s, ms, us, ns, got 'h'"):
        D.IngestConfig(time_unit="h")


def test_an_inferred_frequency_under_a_second_is_refused(write_text):
    body = "unique_id,ds,y\n" + "".join(f"a,1970-01-01 00:00:00.{h:06d},{h}.0\n" for h in range(6))
    msg = load_error(write_text("f.csv", body))
    assert "inferred frequency" in msg and "under a second" in msg and "--freq" in msg
    assert D.load(write_text("f.csv", body), D.IngestConfig(freq="us"))[1].freq == "us"  # named: kept


def test_several_utc_offsets_are_read_as_utc_and_a_mix_with_naive_times_is_refused(write_text):
    """Across a daylight-saving change a file holds +01:00 and +02:00 offsets: read as UTC, one hour
    apart; a column mixing offsets with times without one is refused naming a row of each."""
    stamps = ["2024-03-31 00:00+01:00", "2024-03-31 01:00+01:00", "2024-03-31 03:00+02:00",
              "2024-03-31 04:00+02:00"]
    body = "unique_id,ds,y\n" + "".join(f"a,{s},{i}.0\n" for i, s in enumerate(stamps))
    df, rep = D.load(write_text("dst.csv", body))
    assert rep.freq == "h" and rep.n_filled == 0
    assert df["ds"].tolist() == list(pd.date_range("2024-03-30 23:00", periods=4, freq="h"))
    mixed = body.replace("2024-03-31 04:00+02:00", "2024-03-31 03:00")
    msg = load_error(write_text("mixed.csv", mixed))
    assert "column 'ds' mixes timestamps with a UTC offset (row 2:" in msg and "without one (row 5:" in msg


def test_series_checked_all_at_once_regularize_exactly_as_one_by_one(monkeypatch):
    """The vectorized path (series already complete) gives the frame and report of the per-series loop,
    on a panel mixing complete series, a gap, a missing value, a covariate, a short and an empty series."""
    rng = np.random.default_rng(3)
    parts = []
    for i in range(8):
        n = 5 if i == 6 else 30
        ds = pd.date_range("2024-01-01", periods=n, freq="h")
        part = pd.DataFrame({"unique_id": f"s{i}", "ds": ds, "y": rng.normal(size=n), "temp": rng.normal(size=n)})
        if i == 2:
            part = part.drop(index=[7, 8])  # a gap
        if i == 4:
            part.loc[3, "y"] = np.nan  # a missing value
        if i == 7:
            part["y"] = np.nan  # nothing to fill from
        parts.append(part)
    df = pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=0)  # unsorted too
    cfg = D.IngestConfig(min_length=10)
    with pytest.warns(UserWarning):
        fast, rep_fast = D.validate(df, cfg)
    monkeypatch.setattr(D, "_complete", lambda df, offset, n: np.zeros(len(df), dtype=bool))
    with pytest.warns(UserWarning):
        slow, rep_slow = D.validate(df, cfg)
    pd.testing.assert_frame_equal(fast, slow)
    assert rep_fast == rep_slow and rep_fast.n_series == 6 and rep_fast.n_filled == 3
    assert fast["unique_id"].unique().tolist() == ["s0", "s1", "s2", "s3", "s4", "s5"]


def test_a_long_file_without_the_default_column_names_says_what_it_found_and_which_options_map_them():
    # No unique_id column, so the file is read as wide; its first column is no time column either:
    # the error names the columns found and the options, instead of "'north' is not a timestamp".
    df = pd.DataFrame({"region": ["north", "south"] * 3, "timestamp": ["2020-01-01"] * 6, "demand": range(6)})
    with pytest.raises(DataError) as err:
        D.to_long(df)
    msg = str(err.value)
    assert "columns found: ['region', 'timestamp', 'demand']" in msg and "--id-col, --time-col and --target-col" in msg
    long = D.to_long(df, D.IngestConfig(id_col="region", time_col="timestamp", target_col="demand"))
    assert list(long.columns[:3]) == ["unique_id", "ds", "y"] and len(long) == 6
