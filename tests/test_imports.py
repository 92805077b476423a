"""The core library imports with torch, numpy, pandas and scikit-learn only: no MLflow, Optuna,
Prefect or matplotlib."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CORE = ("core.data", "core.windows", "core.scaling", "families.recurrent", "core.baselines", "core.training", "core.metrics", "core.features", "api.forecaster", "core.errors",
        "core.seasons", "core.evaluation", "core.backtest", "api.backtest_run", "api.ensemble", "api.batch", "core.files",
        "api.inputs", "core.datasets", "api.jobs",
        "core.options", "core.tables", "core.provenance")
HEAVY = ("mlflow", "optuna", "prefect", "matplotlib")


def imported_after(statement: str) -> dict:
    """Run `statement` in a fresh interpreter; report which HEAVY top-level packages got imported."""
    code = (
        f"import json, sys\n{statement}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_core_modules_leave_tracking_tuning_and_flows_out():
    statement = "\n".join(f"import forecasting.{m}" for m in CORE)
    assert imported_after(statement) == []


def test_the_check_can_see_an_import():
    # The probe itself works: a heavy package that is imported is reported.
    pytest.importorskip("optuna")
    assert imported_after("import optuna") == ["optuna"]
