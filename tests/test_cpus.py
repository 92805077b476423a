"""The default torch threads: the CPUs a process may use (affinity, cgroup quota) less the busy ones."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from forecasting.core import cpus


def quota_root(tmp_path, v2: str | None = None, v1: tuple[str, str] | None = None):
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(v1[0] + "\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(v1[1] + "\n")
    return tmp_path


@pytest.mark.parametrize(("v2", "v1", "want"), [
    ("150000 100000", None, 1.5), ("max 100000", None, None), (None, ("200000", "100000"), 2.0),
    (None, ("-1", "100000"), None), (None, None, None), ("garbage", None, None)])
def test_the_cgroup_quota_is_read_from_v2_or_v1(tmp_path, v2, v1, want):
    assert cpus.cgroup_quota(quota_root(tmp_path, v2, v1)) == want


def test_a_quota_caps_the_affinity_rounded_up(tmp_path, monkeypatch):
    monkeypatch.setattr(cpus, "affinity", lambda: 64)  # a 64-core host ...
    assert cpus.usable_cpus(quota_root(tmp_path, "150000 100000")) == 2  # ... and a 1.5-CPU container
    assert cpus.default_threads(root=tmp_path) == 2  # the host's load is not read under a quota
    assert cpus.default_threads(workers=2, root=tmp_path) == 1
    assert cpus.default_threads(root=tmp_path, reserved=1) == 1  # a core for the work beside the tuning


@pytest.mark.parametrize(("load", "want"), [(0.2, 4), (1.4, 3), (2.6, 1), (9.0, 1)])
def test_busy_cores_of_the_host_are_left_alone(tmp_path, monkeypatch, load, want):
    monkeypatch.setattr(cpus, "affinity", lambda: 4)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0))
    assert cpus.default_threads(root=tmp_path) == want  # never fewer than one
    assert cpus.default_threads(root=tmp_path, reserved=1) == max(1, want - 1)


def test_a_process_that_may_use_part_of_the_host_ignores_the_hosts_load(tmp_path, monkeypatch):
    monkeypatch.setattr(cpus, "affinity", lambda: 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "getloadavg", lambda: (40.0, 0.0, 0.0))
    assert cpus.default_threads(root=tmp_path) == 2


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity masks on this OS")
def test_a_process_pinned_to_one_cpu_gets_one_thread():
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from forecasting.core import cpus; print(cpus.usable_cpus(), cpus.default_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "1"]


def test_every_command_that_trains_takes_threads_and_refuses_zero():
    for cmd in ("train", "demo", "tune-worker"):
        help_text = subprocess.run([sys.executable, "-m", "flows.cli", cmd, "--help"], capture_output=True,
                                   text=True).stdout
        assert "--threads" in help_text, cmd
    r = subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--threads", "0"], capture_output=True, text=True)
    assert r.returncode != 0 and "--threads" in r.stderr and "Traceback" not in r.stderr
