"""The registered model stands alone: it carries its code, loads where this project is not installed,
accepts CSV and JSON with ISO-8601 timestamps and a `horizon` parameter, and serves over HTTP with
`mlflow models serve`, forecasting what `forecasting forecast` does."""

from __future__ import annotations

import json
import os
import subprocess
import time

import flows_fixtures  # noqa: F401  (first: sets PREFECT_HOME before prefect is imported)
import httpx
import numpy as np
import pandas as pd
import pytest
from flows_fixtures import FORECASTING_EXE, bare_python, subprocess_env

from flows.server import free_port
from forecasting.api.forecaster import Forecaster, ForecasterConfig
from forecasting.core.data import split_fractions
from forecasting.core.intervals import calibrate_backtest
from forecasting.core.training import TrainConfig
from forecasting.families.recurrent import ModelConfig
from forecasting.pipeline import plan
from forecasting.tracking import registry, runs
from tests.conftest import sine_frame

NAME, H = "srv-gru", 12


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A home with one registered champion, the history CSV it forecasts, and a virtualenv that has
    the model's dependencies but not this project (no `forecasting` importable there)."""
    root = tmp_path_factory.mktemp("serving")
    home = root / "home"
    df = sine_frame(n_series=3, length=300, seed=7)
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.1, 0.2)
    f = Forecaster(ForecasterConfig(model=ModelConfig(lookback=24, horizon=H, hidden=8, layers=1, highway=True),
                                    train=TrainConfig(max_epochs=1, device="cpu")))
    f.fit(df, split)
    # Calibrated as the train pipeline does: conformal on every validation window, stored in the model.
    f.conformal_ = calibrate_backtest(plan.calibration_backtest(f, df, split).forecasts, df, (80, 95), f.cfg.period)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        uri = runs.configure(home)
        exp = runs.ensure_experiment("srv-h12", home)
        run = runs.start_run(exp, "model")
        model_uri = registry.log_model(run, f, registry.input_example(df, 24))
        runs.end_run(run)
        registry.register(model_uri, NAME, "mase", 1.0)
    csv = root / "history.csv"
    df.to_csv(csv, index=False)
    py, env = bare_python(root, uri)
    return {"home": home, "uri": uri, "csv": csv, "df": df, "py": py, "env": env, "root": root, "forecaster": f}


def _cli_forecast(served, *levels: int) -> pd.DataFrame:
    """`forecasting forecast` of the served model at `levels`, run once per set of levels in the module
    (each run is a fresh process: seconds)."""
    done = served.setdefault("cli", {})
    if levels not in done:
        done[levels] = _run_cli_forecast(served, *levels)
    return done[levels].copy()


def _run_cli_forecast(served, *levels: int) -> pd.DataFrame:
    out = served["root"] / f"cli{len(levels)}.csv"
    level = ["--level", *map(str, levels)] if levels else []
    r = subprocess.run([str(FORECASTING_EXE), "forecast", NAME, "--input", str(served["csv"]), "--output", str(out),
                        "--home", str(served["home"]), *level], env=subprocess_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return pd.read_csv(out, parse_dates=["ds"])


@pytest.mark.slow
def test_the_model_loads_and_predicts_where_the_project_is_not_installed(served):
    script = ("import sys, mlflow, pandas as pd\n"
              f"m = mlflow.pyfunc.load_model('models:/{NAME}@champion')\n"
              "df = pd.read_csv(sys.argv[1])  # ds as ISO-8601 strings\n"
              "m.predict(df).to_csv(sys.argv[2], index=False)\n"
              "m.predict(df, params={'horizon': 3}).to_csv(sys.argv[3], index=False)\n"
              "m.predict(df, params={'level': [80, 95]}).to_csv(sys.argv[4], index=False)\n"
              "import forecasting; print(forecasting.__file__)\n")
    a, b, c = served["root"] / "a.csv", served["root"] / "b.csv", served["root"] / "c.csv"
    r = subprocess.run([str(served["py"]), "-c", script, str(served["csv"]), str(a), str(b), str(c)],
                       cwd=served["root"], env=served["env"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "/artifacts/code/forecasting/" in r.stdout  # the bundled copy, not a checkout
    got, short = pd.read_csv(a, parse_dates=["ds"]), pd.read_csv(b, parse_dates=["ds"])
    want = _cli_forecast(served)
    assert len(got) == 3 * H and len(short) == 3 * 3
    np.testing.assert_allclose(got["y_hat"], want["y_hat"], rtol=1e-5)
    assert (got["ds"] == want["ds"]).all() and (got["unique_id"] == want["unique_id"]).all()
    # Intervals survive the registry: the stored calibration, loaded in a fresh process without the
    # project, gives the bands the CLI gives, around the same point forecast.
    bands, want_bands = pd.read_csv(c, parse_dates=["ds"]), _cli_forecast(served, 80, 95)
    cols = ["y_hat", "y_hat-lo-80", "y_hat-hi-80", "y_hat-lo-95", "y_hat-hi-95"]
    assert list(bands.columns) == ["unique_id", "ds", *cols] == list(want_bands.columns)
    np.testing.assert_allclose(bands[cols], want_bands[cols], rtol=1e-5)
    np.testing.assert_allclose(bands["y_hat"], got["y_hat"], rtol=1e-6)
    assert (bands["y_hat-lo-95"] <= bands["y_hat-lo-80"]).all() and (bands["y_hat-hi-80"] <= bands["y_hat-hi-95"]).all()


@pytest.mark.slow
def test_mlflow_models_serve_answers_json_and_csv_requests(served):
    port = free_port()
    log = served["root"] / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(served["py"]), "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion",
                                 "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                                cwd=served["root"], env=served["env"], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "server did not come up:\n" + log.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        df = served["df"].assign(ds=served["df"]["ds"].dt.strftime("%Y-%m-%dT%H:%M:%S"))
        split = json.loads(df.to_json(orient="split", index=False))
        r_json = httpx.post(f"{base}/invocations", json={"dataframe_split": split}, timeout=120)
        r_csv = httpx.post(f"{base}/invocations", content=df.to_csv(index=False),
                           headers={"Content-Type": "text/csv"}, timeout=120)
        r_h = httpx.post(f"{base}/invocations", json={"dataframe_split": split, "params": {"horizon": 4}}, timeout=120)
        r_lv = httpx.post(f"{base}/invocations", json={"dataframe_split": split, "params": {"level": [95]}},
                          timeout=120)
        r_bad = httpx.post(f"{base}/invocations", json={"dataframe_split": split, "params": {"horizon": 99}},
                           timeout=120)
        bad = {"horizon 0": {"dataframe_split": split, "params": {"horizon": 0}},
               "no y column": {"dataframe_split": json.loads(df.drop(columns="y").to_json(orient="split", index=False))},
               "no rows": {"dataframe_split": {"columns": ["unique_id", "ds", "y"], "data": []}},
               "all y null": {"dataframe_split": json.loads(df.assign(y=None).to_json(orient="split", index=False))}}
        r_refused = {k: httpx.post(f"{base}/invocations", json=v, timeout=120) for k, v in bad.items()}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    want = _cli_forecast(served)
    for r in (r_json, r_csv):
        assert r.status_code == 200, r.text[:2000]
        got = pd.DataFrame(r.json()["predictions"])
        assert list(got.columns) == ["unique_id", "ds", "y_hat"] and len(got) == 3 * H
        np.testing.assert_allclose(got["y_hat"], want["y_hat"], rtol=1e-5)
        assert (pd.to_datetime(got["ds"]) == want["ds"]).all()
    assert r_h.status_code == 200 and len(r_h.json()["predictions"]) == 3 * 4
    assert r_lv.status_code == 200, r_lv.text[:2000]
    lv = pd.DataFrame(r_lv.json()["predictions"])
    assert list(lv.columns) == ["unique_id", "ds", "y_hat", "y_hat-lo-95", "y_hat-hi-95"]
    # each level's band is calibrated on its own: the command's 95% band asked beside 80% is the one asked alone
    np.testing.assert_allclose(lv[["y_hat-lo-95", "y_hat-hi-95"]],
                               _cli_forecast(served, 80, 95)[["y_hat-lo-95", "y_hat-hi-95"]], rtol=1e-5)
    assert r_bad.status_code == 400 and "trained horizon 12" in r_bad.text
    reasons = {"horizon 0": "between 1 and the trained horizon 12, got 0", "no y column": "missing column(s) ['y']",
               "no rows": "holds no rows", "all y null": "no series could be forecast (3 skipped"}
    for k, r in r_refused.items():  # 400 with the one-line reason, not a 500 or a 200 with an empty list
        assert r.status_code == 400 and reasons[k] in r.json()["message"], (k, r.status_code, r.text[:500])
        assert "Traceback" not in r.json()["message"]


@pytest.mark.slow
def _get_when_answering(url: str, within: float = 30.0) -> httpx.Response:
    """GET `url`, retrying a connection the server drops while it still starts its workers (seen once
    under load: the health check answered, then the page's first request was dropped)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return httpx.get(url, timeout=10)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.variant  # the served model's HTTP requests: test_mlflow_models_serve_answers_json_and_csv_requests
def test_mlflow_ui_starts_without_noise(served):
    """`forecasting ui`: the UI answers on 127.0.0.1 and prints no deprecation warnings or telemetry errors."""
    port = free_port()
    env = subprocess_env()
    proc = subprocess.Popen([str(FORECASTING_EXE), "ui", "--home", str(served["home"]), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline, ok = time.monotonic() + 120, False
        while time.monotonic() < deadline and not ok:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            try:
                ok = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.5)
        assert ok, "the UI did not come up"
        assert _get_when_answering(f"http://127.0.0.1:{port}/").status_code == 200
    finally:
        os.killpg(proc.pid, 15)
        out = proc.communicate(timeout=30)[0]
    assert f"MLflow UI on http://127.0.0.1:{port}" in out
    assert "DeprecationWarning" not in out and "telemetry" not in out.lower(), out[-3000:]
