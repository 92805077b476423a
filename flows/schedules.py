"""What `forecasting serve` schedules, as option dataclasses: importable without Prefect, so that
building the command's options does not import it (nor what it starts)."""

from __future__ import annotations

from dataclasses import dataclass

from forecasting.api.jobs import name_list
from forecasting.core.config import FORMATS
from forecasting.core.options import option


@dataclass(frozen=True)
class Schedules:
    """Cron expressions (server time zone UTC unless the server says otherwise)."""

    ingest: str = option("0 1 * * *", "when the ingest runs (daily 01:00)", flag="--cron-ingest")
    train: str = option("0 2 * * 0", "when the train runs (weekly, Sunday 02:00)", flag="--cron-train")
    forecast: str = option("0 3 * * *", "when the forecast runs (daily 03:00)", flag="--cron-forecast")


@dataclass(frozen=True)
class ServeConfig:
    """What the scheduled runs do: which file to ingest as which dataset, and what to forecast."""

    source: str | None = option(None, "file ingested by the daily ingest (default: bundled ETTh1)")
    dataset: str = option("etth1", "dataset name the flows use")
    horizon: int = option(24, "steps ahead")
    home: str = "."
    format: str = option("auto", "layout of the source file", choices=FORMATS)
    trials: int = option(20, "Optuna trials per family in the weekly train")
    max_epochs: int = option(20, "epochs per trial")
    forecast_models: tuple[str, ...] = option(("gru",), "families whose champion forecasts daily",
                                              parse=name_list)
    levels: tuple[int, ...] = option((80, 95), "prediction-interval levels of the scheduled forecasts, e.g. "
                                     "--level 80 95 (--level with no value: none)", flag="--level", parse=int,
                                     many=True)
