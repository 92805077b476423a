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


# --------------------------------------------------------------------------- layers

# Bottom to top; a module may import its own layer and the ones below, never one above.
# Layers of one rank sit side by side and never import each other (api and stats; tuning and
# tracking): the pipeline combines them.
LAYERS = {"core": 0, "families": 1, "api": 2, "stats": 2, "tuning": 3, "tracking": 3, "pipeline": 4}


def _module_imports(path: Path) -> set[str]:
    """Every `forecasting...` module a file imports, at the top or inside functions."""
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("forecasting")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("forecasting"):
            # `from forecasting.core import files` imports forecasting.core and its module files;
            # `from forecasting.families import Choice` only the package (the graph keeps modules).
            out |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return out


def _graph() -> dict[str, set[str]]:
    root = REPO / "forecasting"
    mods = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
            for p in root.rglob("*.py")}
    return {m: {i for i in _module_imports(p) if i in mods} for m, p in mods.items()}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_lives_in_a_layer():
    assert [m for m in _graph() if m != "forecasting" and _layer(m) is None] == []


def test_imports_never_point_up_or_sideways_between_tuning_and_tracking():
    bad = []
    for mod, deps in _graph().items():
        for dep in deps:
            a, b = _layer(mod), _layer(dep)
            if a and b and (LAYERS[b] > LAYERS[a] or (LAYERS[a] == LAYERS[b] and a != b)):
                bad.append(f"{mod} -> {dep}")
    assert bad == []


def test_the_import_graph_has_no_cycles():
    graph, state, cycles = _graph(), {}, []

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(" -> ".join(path[path.index(d):] + [d]) if d in path else f"{m} -> {d}")
            elif d not in state:
                visit(d, [*path, d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_checks_see_a_bad_import(tmp_path):
    # The graph reader itself works: an upward and a sideways import are both found.
    f = tmp_path / "m.py"
    f.write_text("from forecasting.pipeline import steps\nimport forecasting.tracking.runs\n"
                 "def g():\n    from forecasting.core.files import write_table\n")
    assert {"forecasting.pipeline.steps", "forecasting.tracking.runs", "forecasting.core.files"} <= _module_imports(f)
    mods = {"forecasting.core.files", "forecasting.pipeline.steps", "forecasting.tracking.runs"}
    assert {i for i in _module_imports(f) if i in mods} == mods


def test_the_library_never_imports_the_flows():
    hits = [str(p) for p in (REPO / "forecasting").rglob("*.py") if "from flows" in p.read_text()
            or "import flows" in p.read_text()]
    assert hits == []


def test_the_search_space_and_the_front_door_need_no_optuna_or_mlflow():
    assert imported_after("import forecasting.tuning.space, forecasting.families, forecasting.api.forecaster") == []


# --------------------------------------------------------------------------- the command's start-up


def test_building_the_command_line_imports_no_numeric_or_tracking_library():
    # `forecasting --help` answers in a fraction of a second only if building the parser (every
    # option of every job, with its help) imports none of these; each costs 0.4-1.5 s to import.
    code = ("import json, sys\nimport flows.cli\nflows.cli.build_parser().format_help()\n"
            "heavy = ('torch', 'pandas', 'numpy', 'sklearn', 'mlflow', 'optuna', 'prefect', 'matplotlib')\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_every_option_of_every_command_has_help_and_shows_its_default():
    import argparse

    from flows.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
        text = sub.format_help()
        if name == "demo":
            assert "(default: 10)" in text and "(default: 24)" in text and "(default: off)" in text
        if name == "train":
            assert "(default: mase)" in text and "(default: 80,95)" in text and "(default: on)" in text
