"""Past one process: a Dask cluster behind Prefect's own task runner (prefect-dask), for `--cluster`.

`--cluster local` starts a LocalCluster with one single-threaded worker process per usable CPU,
`local:N` with N; `tcp://host:8786` joins a scheduler that already runs (its workers must reach the
home's files and stores: a shared file system and a tracking server). Without the option nothing
here is imported: the single-process path needs no Dask.
"""

from __future__ import annotations

import argparse
import re

from forecasting.core.allocator import ENVIRON as ALLOCATOR_ENV

SPEC = re.compile(r"local(:(?P<n>[1-9]\d{0,3}))?|tcp://[\w.\-]+:\d{1,5}")
PARTS_PER_WORKER = 2  # a little slack: a slow or restarted worker does not hold the whole job back
# Our LocalCluster's workers run without Dask's statistical profiler: it samples the running task's
# stack every 10 ms, taking the GIL from training and forecasting loops that are mostly Python.
# (Dotted keys: the Nanny hands them to the worker's `dask.config.set`, which merges them.)
WORKER_CONFIG = {"distributed.worker.profile.enabled": False}
# What the Nanny sets before it starts a worker process (glibc reads MALLOC_* only at start-up). Dask's
# default, MALLOC_TRIM_THRESHOLD_=65536, returns freed memory at once and fixes glibc's mmap threshold
# at 128 KiB: every batch's tensors are then fresh mappings whose pages the kernel faults in and zeroes
# (a forecast of 200,000 windows took 71 s with it, 50 s without it, 45 s with ours: single hand-timed
# runs, no committed script). Our workers get Dask's other settings (one thread for the numeric
# libraries) with ours, those of our command-line entry points (`forecasting.core.allocator`), on top.
PRE_SPAWN = "distributed.nanny.pre-spawn-environ"


def cluster_spec(text: str) -> str:
    """An option's parser: `local`, `local:N` or `tcp://host:port` (anything else is the option's error)."""
    if not SPEC.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected local, local:N or tcp://host:port, got {text!r}")
    return text


def workers(spec: str) -> int:
    """How many workers `spec` gives: N of `local:N`, the usable CPUs for `local`, or what the scheduler
    at a `tcp://` address has now."""
    m = SPEC.fullmatch(spec)
    if spec.startswith("local"):
        from forecasting.core.cpus import usable_cpus

        return int(m.group("n")) if m.group("n") else usable_cpus()
    from distributed import Client

    with Client(spec, timeout=10) as client:
        return max(1, len(client.scheduler_info()["workers"]))


def local_cluster(**kwargs):
    """A `distributed.LocalCluster(**kwargs)` whose worker processes start with our allocator settings
    over Dask's pre-spawn environment (the Nanny reads it when it is created: the setting is scoped to
    the cluster's start)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({PRE_SPAWN: {**dask.config.get(PRE_SPAWN, {}), **ALLOCATOR_ENV}}):
        return LocalCluster(**kwargs)


def task_runner(spec: str):
    """Prefect's Dask task runner for `spec`: a LocalCluster of single-threaded worker processes (torch
    runs one thread in each), or the scheduler at a `tcp://` address."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        from forecasting.core.errors import ForecastingError

        raise ForecastingError("--cluster needs Dask and prefect-dask: pip install -e '.[cluster]'") from None
    if spec.startswith("local"):
        kwargs = {"n_workers": workers(spec), "threads_per_worker": 1, "processes": True, "dashboard_address": None,
                  "config": WORKER_CONFIG}
        return DaskTaskRunner(cluster_class=local_cluster, cluster_kwargs=kwargs)
    return DaskTaskRunner(address=spec)


def partitions(spec: str | None) -> int:
    """How many parts a job is cut into on `spec` (1: no cluster, one part in this process)."""
    return PARTS_PER_WORKER * workers(spec) if spec else 1
