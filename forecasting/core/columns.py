"""The column names of the long-format contract and of forecast frames, in one place.

Long input (Nixtla's convention): `unique_id`, `ds`, `y` (plus covariates). Forecasts add `y_hat`
and, for intervals, `y_hat-lo-<L>` / `y_hat-hi-<L>` (`core.intervals.column`); backtests add
`cutoff`, the timestamp of the last row each forecast saw.
"""

ID, TIME, TARGET = "unique_id", "ds", "y"
Y_HAT = "y_hat"
CUTOFF = "cutoff"
