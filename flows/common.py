"""Task options shared by the flows."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from forecasting.errors import ForecastingError


def retry_io(task, task_run, state) -> bool:
    """Retry transient I/O failures, never a data or model error (those fail the same again)."""
    try:
        state.result()
    except ForecastingError:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return False


# Tasks take frames and models as inputs: hashing them for a cache key is wasted work.
IO = {"retries": 2, "retry_delay_seconds": 1, "retry_condition_fn": retry_io, "cache_policy": NO_CACHE}
COMPUTE = {"cache_policy": NO_CACHE}
