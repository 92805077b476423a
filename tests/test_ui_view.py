"""The MLflow UI opens our experiments in its model-training view (issue 22): checked in a real
headless Chromium against a real `mlflow ui` (skipped where Debian's chromium is not installed), and,
without a browser, against the UI bundle MLflow ships."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from forecasting.tracking.runs import UI_VIEW, ui_address

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_ui_bundle_still_reads_the_view_parameter():
    """The parameter our addresses carry is the one this MLflow's UI reads (an upgrade that renames
    it would send users back to the GenAI view)."""
    import mlflow

    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    text = "".join(p.read_text(errors="ignore") for p in bundle.glob("main.*.js"))
    key, value = UI_VIEW.split("=")
    assert f'get("{key}")' in text and f'MACHINE_LEARNING="{value}"' in text
    assert ui_address(5001, "7") == f"http://127.0.0.1:5001/#/experiments/7?{UI_VIEW}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _page_text(url: str) -> str:
    dom = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian's package `chromium`) on this machine")
def test_our_experiment_address_opens_the_runs_table_in_a_real_browser(tmp_path):
    store = tmp_path / "mlruns" / "mlflow.db"
    setup = textwrap.dedent(f"""
        from forecasting.tracking import runs
        runs.configure({str(tmp_path)!r})
        exp = runs.ensure_experiment("demo-h24", {str(tmp_path)!r})
        runs.end_run(runs.start_run(exp, "pipeline-1"))
        print(exp)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    exp = subprocess.run([sys.executable, "-c", setup], env=env, capture_output=True, text=True,
                         check=True).stdout.split()[-1]
    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{store}",
                           "--host", "127.0.0.1", "--port", str(port)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        _page_text(ui_address(port, exp))  # a first visit warms the server (its first queries are slow)
        text = _page_text(ui_address(port, exp))
    finally:
        ui.terminate()
        ui.wait(timeout=30)
    assert re.search(r"\b1 matching run\b", text) and "pipeline-1" in text  # the model-training view's runs table
    assert "Latency" not in text  # not the GenAI overview (traces, latency, errors)


def test_a_registered_version_describes_its_scores_one_per_line():
    from forecasting.pipeline.steps import version_description

    row = {"model": "gru", "mase": 0.94512345, "val_backtest_mase": 0.9395, "params": 44209,
           "vs_best_baseline": -0.0183, "not_shown": 1.0}
    assert version_description(row, ["model", "mase", "val_backtest_mase", "params", "vs_best_baseline"]) == (
        "Scores of this version (gru, the comparison table's row):\n\n"
        "- against the best baseline: -1.8%\n- mase: 0.9451\n- val_backtest_mase: 0.9395\n- params: 44209")
