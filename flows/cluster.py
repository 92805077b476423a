"""Past one process: a Dask cluster behind Prefect's own task runner (prefect-dask), for `--cluster`.

`--cluster local` starts a LocalCluster with one single-threaded worker process per usable CPU,
`local:N` with N; `tcp://host:8786` joins a scheduler that already runs (its workers must reach the
home's files and stores: a shared file system and a tracking server). Without the option nothing
here is imported: the single-process path needs no Dask.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

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
# (`benchmarks/allocator.py`: a forecast took 1.51x as long with it as with ours, an epoch 1.34x). Our
# workers get Dask's other settings (one thread for the numeric libraries) with ours, those of our
# command-line entry points (`forecasting.core.allocator`), on top.
PRE_SPAWN = "distributed.nanny.pre-spawn-environ"
# What each of our local workers imports as it starts, before it registers and takes a task (Dask's
# `preload`), besides the command's flow module: MLflow's store check and model loader. A first task
# would otherwise import them, the workers one after the other under the store's creation lock (about
# 4 s of each worker's first part in a py-spy profile of a 1M-series forecast on 2 cores).
WORKER_IMPORTS = ("mlflow.store.db.utils", "mlflow.pyfunc")


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


def local_options(spec: str, preload: tuple[str, ...] = (), scratch: str | None = None) -> dict:
    """The LocalCluster of `local[:N]`: single-threaded worker processes (torch runs one thread in each)
    without the profiler, importing `preload` and `WORKER_IMPORTS` as they start, their scratch space
    in `scratch` (Dask's default is the system's temporary folder)."""
    kwargs = {"n_workers": workers(spec), "threads_per_worker": 1, "processes": True, "dashboard_address": None,
              "config": WORKER_CONFIG, "preload": [*preload, *WORKER_IMPORTS]}
    return {**kwargs, "local_directory": scratch} if scratch else kwargs


@contextlib.contextmanager
def started_early(spec: str | None, preload: tuple[str, ...] = (), scratch: str | None = None
                  ) -> Iterator[Future | None]:
    """For `local[:N]`: its LocalCluster, starting in a thread from now on, so that the workers start
    and import while this process imports, loads the model and plans (prefect-dask would start it at
    the flow's first task); closed on the way out, whether a flow used it or not. None for no cluster
    or a `tcp://` address."""
    if not spec or not spec.startswith("local"):
        yield None
        return
    _check_installed()
    with ThreadPoolExecutor(1, thread_name_prefix="cluster-start") as pool:
        future = pool.submit(local_cluster, **local_options(spec, preload, scratch))
        _STARTING[id(future)] = future
        try:
            yield future
        finally:
            _STARTING.pop(id(future), None)
            with contextlib.suppress(Exception):  # a start that failed has nothing to close
                future.result().close()  # a no-op where the flow's task runner closed it


def task_runner(spec: str, started: Future | None = None):
    """Prefect's Dask task runner for `spec`: the LocalCluster `started` (see `started_early`), else
    one it starts at the first task, or the scheduler at a `tcp://` address."""
    _check_installed()
    from prefect_dask import DaskTaskRunner

    if started is not None:
        return DaskTaskRunner(cluster_class=early_cluster, cluster_kwargs={"key": id(started)})
    if spec.startswith("local"):
        return DaskTaskRunner(cluster_class=local_cluster, cluster_kwargs=local_options(spec))
    return DaskTaskRunner(address=spec)


# The clusters `started_early` is starting, by key: the task runner names one by its key, not by the
# future itself, because Prefect pickles the flow's context, task runner included, into every task.
_STARTING: dict[int, Future] = {}


def early_cluster(key: int):
    """What prefect-dask calls to start its cluster: the one `started_early` is starting (it waits)."""
    return _STARTING[key].result()


def _check_installed() -> None:
    """Refuse `--cluster` in one line where Dask or prefect-dask is missing (an optional extra)."""
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("distributed", "prefect_dask")):
        from forecasting.core.errors import ForecastingError

        raise ForecastingError("--cluster needs Dask and prefect-dask: pip install -e '.[cluster]'")


def partitions(spec: str | None) -> int:
    """How many parts a job is cut into on `spec` (1: no cluster, one part in this process)."""
    return PARTS_PER_WORKER * workers(spec) if spec else 1
