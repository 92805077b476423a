"""Fixtures for the flow, CLI and schedule tests (a pytest plugin: `pytest_plugins = ["flows_fixtures"]`).

PYTEST_DONT_REWRITE (imported by the test modules before pytest loads it as a plugin).

Loaded as a plugin rather than imported into each test module so that the session-scoped
fixtures are defined once and really run once per session (a fixture imported into two
modules gets two definitions, each with its own session cache).

Importing this module sets `PREFECT_HOME` to a fresh temporary directory when Prefect is not
imported yet (`prefect_test_harness` isolates the database but not result storage,
and Prefect reads `PREFECT_HOME` once, at import). Test modules therefore import it before
anything that imports prefect.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.server import free_port  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
FORECASTING_EXE = VENV_BIN / "forecasting"
PREFECT_EXE = VENV_BIN / "prefect"

PREFECT_HOME_ISOLATED = "prefect" not in sys.modules
if PREFECT_HOME_ISOLATED:
    _prefect_home = tempfile.mkdtemp(prefix="forecasting-tests-prefect-home-")
    atexit.register(shutil.rmtree, _prefect_home, ignore_errors=True)
    os.environ["PREFECT_HOME"] = _prefect_home
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# A command run as a subprocess keeps its Prefect server for the next one: 300 s here (the tests' commands
# share one Prefect home, so most find it running), not 10 minutes: a session's servers end soon after it.
os.environ.setdefault("FORECASTING_SERVER_IDLE", "300")

# The tiny training budget every trained home uses (seconds on a 2-core CPU).
DATASET = "syn"
HORIZON = 12
N_SERIES = 3
LENGTH = 500
TRAIN_KWARGS = dict(horizon=HORIZON, models=("gru", "lstm"), trials=2, max_epochs=2, max_train_windows=128,
                    device="cpu", seed=0)


def train_job(**overrides):
    """The `TrainJob` of `forecasting train syn --horizon 12 --models gru,lstm --trials 2 ...` (the tiny
    budget above), with `overrides` given as command-line option names."""
    from forecasting.api.jobs import TrainJob
    from forecasting.core.options import from_flags

    return from_flags(TrainJob, dataset=DATASET, **{**TRAIN_KWARGS, **overrides})


# --------------------------------------------------------------------------- data


def synthetic_frame(n_series: int = N_SERIES, length: int = LENGTH, freq: str = "h", seed: int = 0,
                    start: str = "2023-01-01") -> pd.DataFrame:
    """Long frame (`unique_id`, `ds`, `y`) of noisy daily sine waves on an hourly grid."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n_series):
        t = np.arange(length)
        y = (10 + 3 * i + rng.uniform(1, 3) * np.sin(2 * np.pi * t / 24 + rng.uniform(0, 6))
             + rng.normal(0, 0.2, length))
        parts.append(pd.DataFrame({"unique_id": f"s{i}", "ds": pd.date_range(start, periods=length, freq=freq),
                                   "y": y}))
    return pd.concat(parts, ignore_index=True)


def write_csv(path: Path, df: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: this session's PREFECT_HOME, no outside MLflow store."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTEST_CURRENT_TEST")}
    env.update(extra)
    return env


def bare_python(root: Path, tracking_uri: str) -> tuple[Path, dict[str, str]]:
    """A virtualenv under `root` with the model's dependencies but not this project (no `forecasting`
    importable there), and the environment to run it in against the store `tracking_uri`."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    # The dependencies' folder on the path; its .pth files (our editable install) are not run.
    (venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / "deps.pth"
     ).write_text(site + "\n")
    py = venv / "bin" / "python"
    # `mlflow models serve --env-manager local` runs the `uvicorn` command: give this environment one.
    (venv / "bin" / "uvicorn").write_text(f"#!{py}\nfrom uvicorn.main import main\nmain()\n")
    (venv / "bin" / "uvicorn").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_REGISTRY_URI", "FORECASTING_FAMILIES")}
    env.update(MLFLOW_TRACKING_URI=tracking_uri, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    probe = subprocess.run([str(py), "-c", "import forecasting"], cwd=root, env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'forecasting'" in probe.stderr
    return py, env


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def restore_environ():
    """Undo environment changes made by the code under test (`flows.cli.main` sets logging variables)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def prefect_api_url():
    """A temporary Prefect API (`prefect_test_harness`) for the whole session; yields its URL.

    Also unsets `MLFLOW_TRACKING_URI` for the session, so every store is `<home>/mlruns/mlflow.db`.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    saved_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory(prefix="forecasting-tests-prefect-home-") as fallback_home:
        # Prefect was imported before this plugin (another plugin or conftest): the best we can do.
        ctx = temporary_settings({PREFECT_HOME: fallback_home}) if not PREFECT_HOME_ISOLATED else None
        if ctx is not None:
            ctx.__enter__()
        try:
            with prefect_test_harness(server_startup_timeout=180):
                yield PREFECT_API_URL.value()
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
            if saved_uri is not None:
                os.environ["MLFLOW_TRACKING_URI"] = saved_uri


@dataclass
class TrainedHome:
    home: Path
    csv: Path  # the raw long-format file that was ingested
    processed: Path
    ingest: dict  # ingest_flow's result
    train: dict  # the first train_flow's result


@pytest.fixture(scope="session")
def trained_home(prefect_api_url, tmp_path_factory) -> TrainedHome:
    """A home with dataset `syn` ingested and GRU/LSTM trained once and registered (tiny budget)."""
    from flows.ingest import ingest_flow
    from flows.train import train_flow

    root = tmp_path_factory.mktemp("trained")
    home = root / "home"
    csv = write_csv(root / "raw" / "syn.csv", synthetic_frame())
    ingest = ingest_flow(str(csv), DATASET, str(home))
    train = train_flow(train_job(), str(home))
    return TrainedHome(home, csv, Path(ingest["path"]), ingest, train)
