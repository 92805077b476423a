"""Batch forecasting: read a history file, forecast every series with a fitted forecaster, and
refuse a forecast in which nothing could be forecast. Writing is `files.write_table`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting.core import locations
from forecasting.core.columns import ID
from forecasting.core.data import IngestConfig, parse_long, read_table, to_long
from forecasting.core.errors import DataError, NothingToForecastError
from forecasting.core.files import write_atomic, write_whole


def read_history(path: str | Path, cfg: IngestConfig = IngestConfig()) -> pd.DataFrame:
    """A long history frame from a long or wide CSV/Parquet file (same options and the same
    parser as ingest). Series whose last lookback points have gaps or missing values are not
    refused here: the forecaster skips them, with the reason."""
    return parse_history(read_table(path), cfg, str(path))


def parse_history(raw: pd.DataFrame, cfg: IngestConfig, source: str) -> pd.DataFrame:
    """A raw table (or part of one) as the long history frame: reshaped and checked by the parser every
    reader uses; errors name `source` and the file row (from `raw`'s index for a long file)."""
    return parse_long(to_long(raw, cfg), source=source).drop(columns="_row", errors="ignore")


@dataclass
class BatchResult:
    forecasts: pd.DataFrame  # [rows, unique_id ds y_hat ...]; empty for parts their worker wrote itself
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    written: int = 0  # series forecast into part files by the workers (their rows are not in `forecasts`)
    written_rows: int = 0

    @property
    def n_forecast(self) -> int:
        return self.written + (int(self.forecasts[ID].nunique()) if len(self.forecasts) else 0)

    @property
    def rows(self) -> int:
        return self.written_rows + len(self.forecasts)


def write_part(result: BatchResult, path: str | Path) -> BatchResult:
    """Write a part's forecasts to `path` (a dataset's part file, atomically); the result without them."""
    write_atomic(path, lambda tmp: result.forecasts.to_parquet(tmp, index=False))
    return BatchResult(result.forecasts.iloc[:0], result.skipped, result.seconds, result.n_forecast, result.rows)


def require_forecasts(result: BatchResult) -> BatchResult:
    """Refuse a forecast in which every series was skipped (nothing is written), naming why each was."""
    if result.n_forecast == 0:
        reasons = "; ".join(f"{u!r}: {why}" for u, why in result.skipped[:5])
        more = f" (and {len(result.skipped) - 5} more)" if len(result.skipped) > 5 else ""
        raise NothingToForecastError(f"no series could be forecast, all {len(result.skipped)} were skipped: "
                                     f"{reasons}{more}")
    return result


def forecast_with(forecaster, history: pd.DataFrame, levels: tuple[int, ...] = ()) -> BatchResult:
    """Forecast every series of `history` with a fitted `Forecaster` or `Ensemble` (with intervals at
    `levels`); the series it skipped come back with their reasons."""
    t0 = time.perf_counter()
    out, skipped = forecaster.predict(history, levels=levels)
    return BatchResult(out, skipped, time.perf_counter() - t0)


def partitions(history: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    """`history` cut into at most `n` parts of whole series (a series is never split), in the order
    the series first appear; each part holds about the same number of series."""
    ids = history[ID].drop_duplicates().to_numpy()
    n = max(1, min(n, len(ids)))
    part_of = pd.Series(np.arange(len(ids)) * n // max(len(ids), 1), index=ids)
    keys = part_of.reindex(history[ID].to_numpy()).to_numpy()
    return [history[keys == k].reset_index(drop=True) for k in range(n)]


def merged(results: list[BatchResult]) -> BatchResult:
    """The parts' results as one: forecasts in part order, every skipped series, the summed model time."""
    frames = [r.forecasts for r in results if len(r.forecasts)]
    out = pd.concat(frames, ignore_index=True) if frames else results[0].forecasts
    return BatchResult(out, [s for r in results for s in r.skipped], sum(r.seconds for r in results),
                       sum(r.written for r in results), sum(r.written_rows for r in results))


def check_plot(path: str | Path) -> locations.Location:
    """The fan chart's path (or URL), refused early unless it is a PNG file."""
    path = locations.resolve(path)
    if locations.suffix(path) != ".png":
        raise DataError(f"--plot {path}: the fan chart is written as PNG; use a .png file name")
    return path


def write_fan_chart(history: pd.DataFrame, result: BatchResult, levels: tuple[int, ...], path: str | Path,
                    title: str, series: tuple[str, ...] = ()) -> locations.Location:
    """The forecasts of `series` and a sample of the others after the end of their history, with the
    interval bands at `levels`, as a PNG written atomically."""
    from forecasting.core.plots import fan_figure

    fig = fan_figure(history, result.forecasts, levels, series=list(series), title=title)
    return write_whole(check_plot(path), lambda tmp: fig.savefig(tmp, format="png", dpi=90))
