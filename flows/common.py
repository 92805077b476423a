"""Task options shared by the flows."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.cache_policies import NO_CACHE

from forecasting.core.errors import ForecastingError
from forecasting.tuning.progress import style


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
    """One progress line when a pipeline step starts and one with its time when it ends (stderr;
    none under --quiet)."""
    t0 = time.perf_counter()
    say(f"[{label}] ...")
    yield
    say(f"[{label}] done in {time.perf_counter() - t0:.1f}s")


def say(line: str) -> None:
    """A progress line on stderr, unless the command runs quietly; also in the run's Prefect log."""
    if style() != "quiet":
        print(line, file=sys.stderr, flush=True)
    log(line)


def log(line: str) -> None:
    """A line in the current flow or task run's log (the Prefect UI shows it); nothing outside a run."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        get_run_logger().info(line)
    except MissingContextError:
        pass
