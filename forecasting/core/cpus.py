"""How many CPUs this process may use, and the torch threads that follow from it.

torch's default starts one thread per core of the host, whatever the process may actually use: in
a 2-CPU container on a 64-core host it starts 64. Small recurrent models gain little from a second
thread even on an idle machine, and on a machine whose cores are already busy extra threads only
contend (benchmarks/threads.py measures both cases). So the default is the CPUs this process may use
(its affinity mask and its cgroup quota), less the cores other work keeps busy where that can be
seen (the load average, read only when the process may use every core of the host, since a host's
load says nothing about a container's share), split between the workers that share them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cgroup_quota(root: Path = CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (cgroup v2 `cpu.max`, else v1 `cpu.cfs_*`),
    or None when there is none or it cannot be read."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        if text:
            return None
    except (OSError, ValueError, IndexError):
        pass
    for sub in ("cpu", "cpu,cpuacct"):
        try:
            quota = int((root / sub / "cpu.cfs_quota_us").read_text())
            period = int((root / sub / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def affinity() -> int:
    """CPUs in this process's affinity mask (all of the host's where the OS has no such mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def usable_cpus(root: Path = CGROUP) -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup quota (rounded up)."""
    quota = cgroup_quota(root)
    n = affinity()
    return max(1, min(n, math.ceil(quota)) if quota else n)


def busy_cores(usable: int, root: Path = CGROUP) -> int:
    """Cores other work keeps busy (the 1-minute load average, rounded), counted only when this
    process may use every core of the host and has no quota; never all of them."""
    if usable < (os.cpu_count() or usable) or cgroup_quota(root) is not None:
        return 0
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0
    return min(usable - 1, max(0, round(load)))


def default_threads(workers: int = 1, root: Path = CGROUP, reserved: int = 0) -> int:
    """torch threads per worker when the user gave none: the usable CPUs that are not busy, less
    `reserved` cores for other work of this process (train scores the baselines and finishes each
    family beside its tuning), split between `workers` processes that share them, at least one each."""
    usable = usable_cpus(root)
    return max(1, (usable - busy_cores(usable, root) - reserved) // max(1, workers))
