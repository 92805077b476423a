"""Small shared fixtures for the core-library tests: files on disk and synthetic series."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def write_text(tmp_path):
    """write_text(name, text) -> path of a file with that content in a temporary directory."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


def sine_frame(
    n_series: int = 4,
    length: int | list[int] = 24 * 30,
    period: int = 24,
    noise: float = 0.3,
    trend: float = 0.0,
    seed: int = 0,
    start: str = "2021-01-01",
    freq: str = "h",
) -> pd.DataFrame:
    """Long frame of noisy sine waves: random amplitude, phase and level per series, optional trend."""
    rng = np.random.default_rng(seed)
    lengths = [length] * n_series if isinstance(length, int) else list(length)
    parts = []
    for i, n in enumerate(lengths):
        t = np.arange(n)
        amp, phase, level = rng.uniform(1.0, 3.0), rng.uniform(0, 2 * np.pi), rng.uniform(5.0, 15.0)
        y = level + amp * np.sin(2 * np.pi * t / period + phase) + trend * t + rng.normal(0, noise, n)
        parts.append(pd.DataFrame({
            "unique_id": f"s{i}",
            "ds": pd.date_range(start, periods=n, freq=freq),
            "y": y,
        }))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="session")
def make_sine_frame():
    """The `sine_frame` factory, as a fixture."""
    return sine_frame


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The tests' small models train fastest on one thread: two spin-waiting OpenMP threads on a
    busy 2-core machine were measured 100x slower (90 s instead of 0.6 s per fit)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# The longest test files (a minute or more each, mostly servers and subprocesses), longest first.
# `make test` hands whole files to two processes in collection order: starting these first keeps one
# long file from running alone at the end while the other process idles.
LONGEST_FIRST = ("test_benchmarks_smoke.py", "test_benchmarks_scale_smoke.py", "test_scaleout.py", "test_cli.py",
                 "test_serving.py", "test_tuning.py", "test_cluster.py", "test_families.py", "test_flows.py",
                 "test_server_lifetime.py")


# Tests marked `variant` run a second variant of a path another test in the default run already runs
# on the same real components (a kill at another moment, the other runner, the other input format).
# On a slow 2-core machine the whole suite took 19 minutes, past CI's 15: they run with
# FORECASTING_FULL_TESTS=1.
FULL = "FORECASTING_FULL_TESTS"


def pytest_collection_modifyitems(items: list) -> None:
    """Order the files longest first (the same order in every process); tests keep their order within a
    file. `variant` tests are skipped unless FORECASTING_FULL_TESTS=1."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: the rest as collected
    if os.environ.get(FULL) != "1":
        skip = pytest.mark.skip(reason=f"a variant of a path the default run covers: runs with {FULL}=1")
        for item in items:
            if "variant" in item.keywords:
                item.add_marker(skip)
