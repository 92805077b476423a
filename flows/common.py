"""Task options shared by the flows."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.cache_policies import NO_CACHE

from forecasting.core.errors import ForecastingError


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


@contextmanager
def step(label: str) -> Iterator[None]:
    """One progress line when a pipeline step starts and one with its time when it ends (stderr)."""
    t0 = time.perf_counter()
    print(f"[{label}] ...", file=sys.stderr, flush=True)
    yield
    print(f"[{label}] done in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
