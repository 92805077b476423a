"""A leak check shared by the model-family tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.api.forecaster import Forecaster


def assert_first_cutoff_reads_nothing_after_it(f: Forecaster, df: pd.DataFrame, split) -> None:
    """Changing every value after the first backtest cutoff changes none of its forecasts (while the
    targets and a later cutoff's forecasts do change)."""
    bt = f.cross_validation(df, split.val_end, split.train_end)
    fc = bt.forecasts
    first_cut = fc["cutoff"].min()
    changed = df.copy()
    after = changed["ds"] > first_cut  # the first cutoff's targets and everything after them
    changed.loc[after, "y"] = changed.loc[after, "y"] * -3.0 + 100.0
    fc2 = f.cross_validation(changed, split.val_end, split.train_end).forecasts
    mine, theirs = fc[fc["cutoff"] == first_cut], fc2[fc2["cutoff"] == first_cut]
    np.testing.assert_array_equal(mine["y_hat"].to_numpy(), theirs["y_hat"].to_numpy())
    assert not np.allclose(mine["y"].to_numpy(), theirs["y"].to_numpy())  # the targets did change
    later_cut = fc["cutoff"].max()
    assert not np.allclose(fc.loc[fc["cutoff"] == later_cut, "y_hat"], fc2.loc[fc2["cutoff"] == later_cut, "y_hat"])
