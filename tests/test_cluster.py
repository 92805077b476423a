"""`--cluster`: a real Dask LocalCluster behind Prefect's Dask task runner (prefect-dask) gives the
same batch forecast as the single-process path: the same series, timestamps, skipped series and
reasons, and the same values up to float32 rounding (the parts are batched differently)."""

from __future__ import annotations

import argparse

import flows_fixtures  # noqa: F401  (first: sets PREFECT_HOME before prefect is imported)
import numpy as np
import pandas as pd
import pytest
from flows_fixtures import DATASET

pytest_plugins = ["flows_fixtures"]
pytest.importorskip("prefect_dask")


@pytest.fixture(autouse=True)
def _environ(restore_environ):
    pass


@pytest.mark.slow
def test_a_batch_forecast_on_a_local_cluster_equals_the_single_process_one(trained_home, tmp_path, capsys):
    from flows.cli import main

    hist = pd.read_csv(trained_home.csv)
    short = hist[hist["unique_id"] == hist["unique_id"].iloc[0]].tail(3).assign(unique_id="short")
    src = tmp_path / "history.csv"
    pd.concat([hist, short]).to_csv(src, index=False)
    outs = {}
    for name, extra in (("single", []), ("cluster", ["--cluster", "local:2"])):
        outs[name] = tmp_path / f"{name}.parquet"
        assert main(["forecast", f"{DATASET}-gru", "--input", str(src), "--output", str(outs[name]), "--level", "80",
                     "--home", str(trained_home.home), *extra]) == 0
    printed = capsys.readouterr().out
    assert printed.count("skipped series 'short'") == 2  # both paths name it, with the same reason
    single, cluster = (pd.read_parquet(p) for p in outs.values())
    assert list(cluster.columns) == list(single.columns) and len(cluster) == len(single) > 0
    pd.testing.assert_frame_equal(cluster[["unique_id", "ds"]], single[["unique_id", "ds"]])
    for col in ("y_hat", "y_hat-lo-80", "y_hat-hi-80"):
        np.testing.assert_allclose(cluster[col], single[col], rtol=1e-5, atol=1e-5)
    assert "short" not in set(cluster["unique_id"])


def test_parts_hold_whole_series_in_order_and_every_row_once():
    from forecasting.api.batch import partitions

    df = pd.DataFrame({"unique_id": np.repeat(["c", "a", "b", "d", "e"], 3), "ds": np.tile([1, 2, 3], 5),
                       "y": np.arange(15.0)})
    parts = partitions(df, 2)
    assert [p["unique_id"].unique().tolist() for p in parts] == [["c", "a", "b"], ["d", "e"]]
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), df)
    assert len(partitions(df, 99)) == 5 and len(partitions(df, 1)) == 1


def test_a_bad_cluster_option_is_the_options_error():
    from flows.cluster import cluster_spec

    for good in ("local", "local:4", "tcp://10.0.0.5:8786", "tcp://sched.example.org:8786"):
        assert cluster_spec(good) == good
    for bad in ("local:0", "remote", "tcp://host", "local:x", "http://h:1"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected local, local:N or tcp://host:port"):
            cluster_spec(bad)
