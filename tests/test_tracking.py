"""MLflow tracking: store and experiments, nested trial runs, the pyfunc model, the
registry's champion/challenger aliases, and the pipeline's steps end to end.

Everything runs against real SQLite MLflow and Optuna stores in pytest's temporary directories;
nothing from MLflow or Optuna is mocked. `MLFLOW_TRACKING_URI` is removed for every test and
MLflow's global URIs are reset afterwards, so no test reaches the project's own `./mlruns`.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from forecasting.api.forecaster import Forecaster, ForecasterConfig
from forecasting.core.data import split_fractions
from forecasting.core.errors import ModelNotFoundError
from forecasting.core.training import TrainConfig
from forecasting.families.recurrent import (
    ModelConfig,
    RecurrentSpace,  # noqa: E402
)
from forecasting.pipeline import plan, search, search_log
from forecasting.pipeline import steps as pipeline
from forecasting.tracking import registry, runs
from forecasting.tuning.objective import tune
from forecasting.tuning.space import SearchSpace
from forecasting.tuning.study import TuneConfig, default_storage, study_name
from tests.conftest import sine_frame

REPO = Path(__file__).resolve().parents[1]
H = 12

pytestmark = [
    pytest.mark.filterwarnings("ignore:Add type hints"),
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Fixed parameter"),
]


def _reset_mlflow_uris() -> None:
    mlflow.set_tracking_uri(None)  # also unsets MLFLOW_TRACKING_URI, which set_tracking_uri exports
    mlflow.set_registry_uri(None)


@pytest.fixture(autouse=True)
def no_tracking_env(monkeypatch):
    """No inherited store: each test points MLflow at a temporary one (`runs.configure`)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    yield
    _reset_mlflow_uris()


def frame() -> tuple[pd.DataFrame, object]:
    df = sine_frame(n_series=3, length=400, noise=0.2, seed=0)
    return df, split_fractions(df.groupby("unique_id", sort=False).size(), 0.1, 0.2)


def small_config(seed: int = 0) -> ForecasterConfig:
    return ForecasterConfig(
        model=ModelConfig(lookback=24, horizon=H, hidden=8, layers=1, norm="standard"),
        train=TrainConfig(lr=1e-2, batch_size=64, max_epochs=2, device="cpu", seed=seed),
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A project home whose MLflow SQLite store (`<home>/mlruns/mlflow.db`) is shared by this
    module's tests, each under its own experiment and model names: creating a store runs MLflow's
    migrations, which takes seconds."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        runs.configure(home)
        MlflowClient().search_experiments()  # creates the database
        _reset_mlflow_uris()
    return home


@pytest.fixture(scope="module")
def store(home):
    """Three small forecasters logged as pyfunc models in the shared store."""
    df, split = frame()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        uri = runs.configure(home)
        exp = runs.ensure_experiment(runs.experiment_name("models", H), home)
        forecasters, uris = [], []
        for seed in range(3):
            f = Forecaster(small_config(seed))
            f.fit(df, split)
            run_id = runs.start_run(exp, f"model-{seed}")
            uris.append(registry.log_model(run_id, f, registry.input_example(df, f.cfg.model.lookback)))
            runs.end_run(run_id)
            forecasters.append(f)
        _reset_mlflow_uris()
    return SimpleNamespace(home=home, uri=uri, df=df, split=split, forecasters=forecasters, uris=uris)


# --------------------------------------------------------------------------- store


def test_tracking_uri_env_wins_else_sqlite_under_home(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    assert runs.tracking_uri(tmp_path) == "sqlite:////elsewhere/mlflow.db"
    assert not (tmp_path / "mlruns").exists()

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    expected = f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    assert runs.tracking_uri(tmp_path) == expected
    assert not (tmp_path / "mlruns").exists()  # a getter: nothing is created until `configure`
    monkeypatch.chdir(tmp_path)
    assert runs.tracking_uri() == expected  # absolute, whatever the working directory

    assert runs.configure(tmp_path) == expected
    assert (tmp_path / "mlruns").is_dir()
    assert mlflow.get_tracking_uri() == expected and mlflow.get_registry_uri() == expected


def test_a_relative_home_stores_runs_in_its_sqlite_file_after_the_cwd_changes(monkeypatch, tmp_path, home):
    """`configure` with a relative home gives an absolute store: a run written after moving to another
    working directory lands in `<home>/mlruns/mlflow.db` (read back with sqlite3, not through MLflow)
    and no `mlruns` appears in either working directory."""
    monkeypatch.chdir(home.parent)
    uri = runs.configure(Path(home.name))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    exp_id = runs.ensure_experiment(runs.experiment_name("relhome", H), home.name)
    run_id = runs.start_run(exp_id, "written", tags={"kind": "check"})
    runs.log_values(run_id, params={"lr": 0.01}, metrics={"mase": 0.75})
    runs.end_run(run_id)

    db = home / "mlruns" / "mlflow.db"
    assert uri == f"sqlite:///{db.resolve()}"
    with closing(sqlite3.connect(db)) as con:
        assert con.execute("SELECT name FROM experiments WHERE experiment_id = ?", (exp_id,)).fetchall() == [
            ("relhome-h12",)]
        assert con.execute("SELECT name, status, experiment_id FROM runs WHERE run_uuid = ?", (run_id,)
                           ).fetchall() == [("written", "FINISHED", int(exp_id))]
        assert con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)).fetchall() == [
            ("lr", "0.01")]
        assert con.execute("SELECT key, value FROM latest_metrics WHERE run_uuid = ?", (run_id,)).fetchall() == [
            ("mase", 0.75)]
        assert ("kind", "check") in con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall()
    assert not (elsewhere / "mlruns").exists() and not (home.parent / "mlruns").exists()


def test_ensure_experiment_puts_artifacts_under_home(monkeypatch, tmp_path, home):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert runs.configure(home) == f"sqlite:///{home.resolve()}/mlruns/mlflow.db"
    assert runs.experiment_name("toy", H) == "toy-h12"
    name = runs.experiment_name("exp", H)
    exp_id = runs.ensure_experiment(name, home)
    assert runs.ensure_experiment(name, home) == exp_id  # found, not created twice
    location = (home.resolve() / "mlruns" / "artifacts" / name).as_uri()
    assert MlflowClient().get_experiment(exp_id).artifact_location == location

    run_id = runs.start_run(exp_id, "r", tags={"kind": "test"})
    runs.log_table(run_id, pd.DataFrame({"model": ["gru"], "mase": [0.5]}), "table")
    runs.end_run(run_id)
    stored = home / "mlruns" / "artifacts" / name / run_id / "artifacts"
    assert sorted(p.name for p in stored.iterdir()) == ["table.csv", "table.md"]
    assert (stored / "table.md").read_text().splitlines()[:2] == ["| model | mase |", "|---|---|"]
    assert not (elsewhere / "mlruns").exists()  # nothing in the plain ./mlruns file store


# --------------------------------------------------------------------------- trials


@pytest.mark.slow
def test_trial_logger_one_nested_run_per_trial(tmp_path, home):
    """Each trial is a nested run (parent tag, params, per-epoch val_loss history, state tag):
    complete, pruned (state=pruned) and diverged (FAILED with the error) trials alike."""
    df, split = frame()
    runs.configure(home)
    exp = runs.ensure_experiment(runs.experiment_name("trials", H), home)
    parent = runs.start_run(exp, "pipeline")
    name = study_name("trials", H, "gru")
    cfg = TuneConfig(n_trials=4, max_epochs=3, storage=default_storage(tmp_path), pruner="median")
    (tmp_path / "mlruns").mkdir()  # `default_storage` only names the file; `open_study` would create it
    space = SearchSpace(
        lookbacks=(24,), lr=(1e-6, 1e-1), batch_sizes=(64,), weight_decay=(1e-7, 1e-3),
        family=RecurrentSpace(hidden=(4, 16), layers=(1, 1), dropout=(0.0, 0.1), norms=("standard",), segments=(1,)),
    )
    good = {"lookback": 24, "hidden": 8, "layers": 1, "dropout": 0.0, "lr": 1e-2, "batch_size": 64,
            "weight_decay": 1e-6, "norm": "standard", "segment": 1, "highway": False, "init": "linear",
            "loss": "mse", "multiplicative": False, "lags": False}
    study = optuna.create_study(study_name=name, storage=cfg.storage, direction="minimize")
    for params in (good, {**good, "lr": 1e20}, {**good, "hidden": 12}, {**good, "hidden": 16},
                   {**good, "lr": 1e-6}):
        study.enqueue_trial(params)
    base = ForecasterConfig(model=ModelConfig(horizon=H), calendar=False,
                            train=TrainConfig(device="cpu", clip=0.0))

    result = tune(df, split, base, "gru", name, cfg, space, search_log.TrialLogger(exp, parent, "gru"), progress=False)
    runs.end_run(parent)

    trials = result.study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE,
                                        TrialState.COMPLETE, TrialState.PRUNED]
    client = MlflowClient()
    children = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == len(trials)
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in children}
    expected = {TrialState.COMPLETE: ("complete", "FINISHED"), TrialState.PRUNED: ("pruned", "FINISHED"),
                TrialState.FAIL: ("failed", "FAILED")}
    for t in trials:
        run = by_trial[t.number]
        assert run.info.run_id == t.user_attrs["mlflow_run_id"]
        assert run.info.run_name == f"gru-trial-{t.number}"
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags["kind"] == "trial" and run.data.tags["family"] == "gru"
        assert run.data.tags["optuna.study"] == name
        assert (run.data.tags["state"], run.info.status) == expected[t.state]
        assert float(run.data.params["lr"]) == t.params["lr"]
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == sorted(t.intermediate_values)
        for m in history:
            assert m.value == pytest.approx(t.intermediate_values[m.step])
    assert "DivergedError" in by_trial[1].data.tags["error"]
    assert max(trials[4].intermediate_values) < cfg.max_epochs - 1  # stopped early
    assert len(client.get_metric_history(by_trial[0].info.run_id, "val_loss")) == cfg.max_epochs


# --------------------------------------------------------------------------- registry


@pytest.mark.slow
def test_register_champion_moves_only_for_a_better_model(store):
    runs.configure(store.home)
    client = MlflowClient()
    name = "reg-gru"
    tags = {"dataset_fingerprint": "abc123", "horizon": H, "frequency": "h", "code_version": "deadbeef"}
    a, b, c = store.uris

    first = registry.register(a, name, "mase", 1.0, tags)
    assert (first["version"], first["alias"], first["previous_champion"]) == (1, "champion", None)

    worse = registry.register(b, name, "mase", 1.5, tags)
    assert (worse["version"], worse["alias"], worse["previous_champion"]) == (2, "challenger", 1.0)
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"

    better = registry.register(c, name, "mase", 0.5, tags)
    assert (better["version"], better["alias"], better["previous_champion"]) == (3, "champion", 1.0)
    assert str(client.get_model_version_by_alias(name, "champion").version) == "3"

    tie = registry.register(a, name, "mase", 0.5, tags)  # equal is not better
    assert tie["alias"] == "challenger"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "3"
    assert registry.champion_value(name, "mase") == 0.5

    for version, value in ((1, 1.0), (2, 1.5), (3, 0.5)):
        mv = client.get_model_version(name, str(version))
        assert mv.tags == {"dataset_fingerprint": "abc123", "horizon": str(H), "frequency": "h",
                           "code_version": "deadbeef", "mase": str(value)}
    # Each version points at the logged model it was registered from.
    assert [client.get_model_version(name, str(v)).source for v in (1, 2, 3, 4)] == [a, b, c, a]


REGISTER_SCRIPT = textwrap.dedent('''
    import json, sys
    from forecasting.tracking import registry, runs
    runs.configure(sys.argv[1])
    print(json.dumps(registry.register(sys.argv[2], "race-gru", "mase", 0.5)))
''')


@pytest.mark.slow
def test_two_processes_registering_at_once_cannot_both_win(store, tmp_path):
    """Both register an equally good first version while the registry lock is held; released, they
    compare-and-set one after the other: exactly one becomes champion, the other sees it and loses.
    Without the lock both would read 'no champion' and both claim the alias."""
    import fcntl
    import json
    import time

    runs.configure(store.home)
    script = tmp_path / "register.py"
    script.write_text(REGISTER_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    with open(registry.lock_path("race-gru"), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        procs = [subprocess.Popen([sys.executable, str(script), str(store.home), uri], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for uri in store.uris[:2]]
        client = MlflowClient()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # both versions registered: both now wait on the lock
            try:
                if len(client.search_model_versions("name='race-gru'")) == 2:
                    break
            except Exception:  # noqa: BLE001 - the model may not exist yet
                pass
            time.sleep(0.2)
        time.sleep(2.0)
        # While the lock is held nobody may touch the aliases (without it, the first would be champion now).
        assert client.get_registered_model("race-gru").aliases == {}
        fcntl.flock(held, fcntl.LOCK_UN)
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["alias"] for r in results) == ["challenger", "champion"]
    loser = next(r for r in results if r["alias"] == "challenger")
    assert loser["previous_champion"] == 0.5  # it saw the winner's score, under the lock
    winner = next(r for r in results if r["alias"] == "champion")
    assert str(client.get_model_version_by_alias("race-gru", "champion").version) == str(winner["version"])


@pytest.mark.slow
def test_champion_value_and_load_model_unknown(store):
    runs.configure(store.home)
    assert registry.champion_value("no-such-model", "mase") is None
    with pytest.raises(ModelNotFoundError, match="no registered model named 'no-such-model'"):
        registry.load_model("no-such-model")
    registry.register(store.uris[0], "alias-gru", "mase", 1.0)
    with pytest.raises(ModelNotFoundError, match="has no alias 'staging'"):
        registry.load_model("alias-gru", "staging")
    model, version = registry.load_model("alias-gru")
    assert version == "1" and isinstance(model, mlflow.pyfunc.PyFuncModel)


FRESH_SCRIPT = textwrap.dedent('''
    import sys
    import mlflow
    import pandas as pd

    history = pd.read_parquet(sys.argv[1])
    model = mlflow.pyfunc.load_model("models:/fresh-gru@champion")
    out = model.predict(history)
    forecaster = model.unwrap_python_model().forecaster
    assert {p.device.type for p in forecaster.model_.parameters()} == {"cpu"}
    out.to_parquet(sys.argv[2])
''')


@pytest.mark.slow
def test_champion_predicts_the_same_in_a_fresh_process(store, tmp_path):
    """models:/<dataset>-gru@champion, loaded by a new interpreter that knows only
    MLFLOW_TRACKING_URI (and sees no GPU), forecasts what the in-process forecaster does."""
    runs.configure(store.home)
    assert registry.register(store.uris[0], "fresh-gru", "mase", 1.0)["alias"] == "champion"
    forecaster = store.forecasters[0]
    rng = np.random.default_rng(5)
    unseen = pd.DataFrame({"unique_id": "new", "ds": pd.date_range("2021-03-01", periods=60, freq="h"),
                           "y": 3.0 + np.sin(np.arange(60) * 2 * np.pi / 24) + rng.normal(0, 0.1, 60)})
    history = pd.concat([store.df, unseen], ignore_index=True)
    history.to_parquet(tmp_path / "history.parquet")

    script = tmp_path / "predict.py"
    script.write_text(FRESH_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_REGISTRY_URI",)}
    env.update(MLFLOW_TRACKING_URI=store.uri, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "history.parquet"), str(tmp_path / "out.parquet")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    got = pd.read_parquet(tmp_path / "out.parquet")
    want, skipped = forecaster.predict(history)
    assert skipped == []
    assert len(want) == 4 * H
    assert list(got.columns) == ["unique_id", "ds", "y_hat"]
    assert got["unique_id"].astype(str).tolist() == want["unique_id"].astype(str).tolist()
    assert (got["ds"].astype("datetime64[ns]").to_numpy() == want["ds"].astype("datetime64[ns]").to_numpy()).all()
    np.testing.assert_allclose(got["y_hat"].to_numpy(), want["y_hat"].to_numpy(), rtol=1e-5, atol=1e-6)


def test_an_ensemble_is_one_registered_model_that_averages_its_members(store):
    """`--ensemble K`: the members' mean forecast, saved and registered as one pyfunc model that
    loads back with every member and forecasts the same mean."""
    from forecasting.api.ensemble import Ensemble

    runs.configure(store.home)
    ens = Ensemble(store.forecasters)
    got, skipped = ens.predict(store.df)
    each = [f.predict(store.df)[0]["y_hat"].to_numpy() for f in store.forecasters]
    assert skipped == [] and len(got) == 3 * H
    np.testing.assert_allclose(got["y_hat"].to_numpy(), np.mean(each, axis=0), rtol=1e-6)
    # the same mean on windows: what evaluation and backtests score
    ev = ens.evaluate(store.df, store.split, "test")
    members = [f.evaluate(store.df, store.split, "test").y_hat for f in store.forecasters]
    np.testing.assert_allclose(ev.y_hat, np.mean(members, axis=0), rtol=1e-5)
    assert ens.n_parameters == sum(f.n_parameters for f in store.forecasters)

    exp = runs.ensure_experiment(runs.experiment_name("models", H), store.home)
    run_id = runs.start_run(exp, "ensemble")
    uri = registry.log_model(run_id, ens, registry.input_example(store.df, ens.cfg.model.lookback))
    runs.end_run(run_id)
    loaded = mlflow.pyfunc.load_model(uri)
    assert len(loaded.unwrap_python_model().forecaster.members) == 3
    np.testing.assert_allclose(loaded.predict(store.df)["y_hat"].to_numpy(), got["y_hat"].to_numpy(), rtol=1e-5)


def test_a_median_ensemble_forecasts_the_members_median_and_keeps_it_when_saved(store, tmp_path):
    from forecasting.api.ensemble import Ensemble, load_forecaster

    ens = Ensemble(store.forecasters, combine="median")
    got, _ = ens.predict(store.df)
    each = [f.predict(store.df)[0]["y_hat"].to_numpy() for f in store.forecasters]
    np.testing.assert_allclose(got["y_hat"].to_numpy(), np.median(each, axis=0), rtol=1e-6)
    assert not np.allclose(np.median(each, axis=0), np.mean(each, axis=0))  # the test can tell them apart
    members = [f.evaluate(store.df, store.split, "test").y_hat for f in store.forecasters]
    np.testing.assert_allclose(ens.evaluate(store.df, store.split, "test").y_hat, np.median(members, axis=0),
                               rtol=1e-5)
    loaded = load_forecaster(ens.save(tmp_path / "ens"))
    assert loaded.combine == "median"
    np.testing.assert_allclose(loaded.predict(store.df)[0]["y_hat"].to_numpy(), got["y_hat"].to_numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="combine"):
        Ensemble(store.forecasters, combine="mode")


# --------------------------------------------------------------------------- pipeline


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path, home):
    """start -> tune (gru, 2 trials) -> final model -> seasonal naive -> comparison -> register ->
    finish: runs nested under one parent, the artifacts logged, and the champion predicts on CPU."""
    df, _ = frame()
    job = plan.TrainJob(dataset="toy", horizon=H, families=("gru",),
                            tune=TuneConfig(n_trials=2, max_epochs=2), device="cpu",
                            max_train_windows=128, max_lookback=48)
    split = plan.make_split(df, job)
    # Keep the two trials small and deterministic: enqueue the smallest models of the pipeline's
    # own search space into the study it uses.
    space = plan.search_space(df, split, plan.base_config(df, "h", job, split), job)
    own = space.own("gru")  # the recurrent family's own ranges
    lookback = min(space.lookbacks)
    smallest = {"lookback": lookback, "hidden": own.hidden[0], "layers": own.layers[0],
                "dropout": own.dropout[0], "batch_size": min(space.batch_sizes),
                "weight_decay": space.weight_decay[0], "norm": own.norms[-1],
                "segment": max([s for s in own.segments if s <= lookback] or [1]), "multiplicative": False, "lags": False}
    study = optuna.create_study(study_name=study_name("toy", H, "gru"), storage=default_storage(home),
                                direction="minimize")
    for lr in (space.lr[1], space.lr[0]):
        study.enqueue_trial({**smallest, "lr": lr})

    ctx = pipeline.start_pipeline(home, job, df, "h")
    exp, parent = ctx.experiment_id, ctx.parent_run_id
    result = search.tune_family(ctx, job, df, split, "gru", progress=False)
    assert len(result.study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2
    row, model = pipeline.final_model(ctx, job, df, split, [result.config], "gru")
    row = pipeline.backtest_step(model, row, df, split, job)
    assert row["backtest_cutoffs"] >= 1 and np.isfinite(row["val_backtest_mase"])
    row = pipeline.intervals_step(ctx, job, model, row, df, split)
    assert model.conformal_.levels == (80, 95) and model.conformal_.n_calibration == 3 * (40 - H + 1)
    assert 0 <= row["coverage_80"] <= row["coverage_95"] <= 1 and row["msis_95"] > 0
    baselines = pipeline.baseline_rows(ctx, job, df, split)
    assert [b["model"] for b in baselines] == ["naive", "seasonal_naive_24", "linear"]
    table, summary = pipeline.comparison([row, *baselines], job, parent)
    assert table["model"].tolist() == ["gru", "naive", "seasonal_naive_24", "linear"]
    assert list(table.columns) == plan.comparison_columns(job)
    assert {"coverage_80", "coverage_95", "msis_80", "msis_95"} <= set(table.columns)
    assert table[["coverage_95", "msis_95"]].notna().all().all()  # the baselines' intervals too
    best = min(baselines, key=lambda b: b["mase"])
    assert summary["best_baseline"] == best["model"]
    assert summary["margins"]["gru"] == pytest.approx(row["mase"] / best["mase"] - 1)
    reg = pipeline.register_family(ctx, job, row, df, split)
    assert (reg["name"], reg["version"], reg["alias"]) == ("toy-gru", 1, "champion")
    assert reg["metric"] == "val_backtest_mase"
    # The same job on the same data again is the model the registry already holds: nothing registered.
    again = pipeline.register_family(ctx, job, row, df, split)
    assert (again["version"], again["alias"], again["unchanged"]) == (1, "champion", True)
    forced = replace(job, force=True)  # the rows below stand for other models: registered whatever their key
    # The alias follows the validation backtest only: a far better *test* score does not move it ...
    lucky = pipeline.register_family(ctx, forced, {**row, "mase": 0.0, "val_backtest_mase": row["val_backtest_mase"] * 1.01},
                                     df, split)
    assert lucky["alias"] == "challenger"
    # ... the champion was re-scored from its model on the same cutoffs, not read from a tag ...
    assert lucky["previous_champion"] == pytest.approx(row["val_backtest_mase"], rel=1e-6)
    # ... and a better backtest moves it whatever the test score says.
    better = pipeline.register_family(ctx, forced, {**row, "mase": 99.0, "val_backtest_mase": row["val_backtest_mase"] * 0.99},
                                      df, split)
    assert better["alias"] == "champion"
    pipeline.finish(ctx, [reg])

    client = MlflowClient()
    assert mlflow.get_tracking_uri() == f"sqlite:///{home.resolve()}/mlruns/mlflow.db"
    assert client.get_experiment(exp).name == "toy-h12"
    assert (home / "mlruns" / "optuna.db").exists()  # the study beside the MLflow store
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.tags["registered.toy-gru"] == "v1@champion"
    assert parent_run.data.tags["best_baseline"] == summary["best_baseline"]
    assert parent_run.data.tags["kind"] == "pipeline" and "dataset_fingerprint" in parent_run.data.tags
    children = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    kinds = sorted(r.data.tags["kind"] for r in children)
    assert kinds == ["baseline"] * 3 + ["final", "trial", "trial"]

    # Comparison table (CSV and Markdown) and the Optuna history plot on the parent run.
    top = {a.path for a in client.list_artifacts(parent)}
    assert {"comparison.csv", "comparison.md"} <= top
    csv = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent, artifact_path="comparison.csv",
                                                          dst_path=str(tmp_path / "dl")))
    assert csv["model"].tolist() == ["gru", "naive", "seasonal_naive_24", "linear"]
    assert csv.loc[0, "mase"] == pytest.approx(row["mase"])
    assert "optuna/gru_optuna_history.png" in {a.path for a in client.list_artifacts(parent, "optuna")}

    # The final run: test metrics, loss curves and forecast plot, and the pyfunc model.
    final = client.get_run(row["run_id"])
    assert final.data.tags["mlflow.parentRunId"] == parent
    assert final.data.metrics["test_mase"] == pytest.approx(row["mase"])
    assert len(client.get_metric_history(row["run_id"], "val_loss")) >= 1
    plots = {a.path for a in client.list_artifacts(row["run_id"], "plots")}
    assert plots == {"plots/loss_curves.png", "plots/fan_chart.png"}
    assert final.data.metrics["test_coverage_95"] == pytest.approx(row["coverage_95"])
    assert final.data.params["interval_scale"] in ("seasonal", "residual")  # chosen on validation windows
    backtest = {a.path for a in client.list_artifacts(row["run_id"], "backtest")}
    assert {"backtest/metrics_by_cutoff.csv", "backtest/forecasts.csv", "backtest/backtest.png"} <= backtest
    assert final.data.metrics["val_backtest_mase"] == pytest.approx(row["val_backtest_mase"])
    png = mlflow.artifacts.download_artifacts(run_id=row["run_id"], artifact_path="plots/loss_curves.png",
                                              dst_path=str(tmp_path / "dl"))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert row["model_uri"].startswith("models:/m-")
    info = mlflow.models.get_model_info(row["model_uri"])
    assert "python_function" in info.flavors and info.signature is not None
    assert mlflow.get_logged_model(row["model_uri"].removeprefix("models:/")).source_run_id == row["run_id"]
    version = client.get_model_version("toy-gru", "1")
    assert version.tags["horizon"] == str(H) and version.tags["frequency"] == "h"
    assert version.tags["family"] == "gru" and "code_version" in version.tags

    # The registered champion loads on the CPU and forecasts H steps after each series.
    model = mlflow.pyfunc.load_model("models:/toy-gru/1")
    assert {p.device.type for p in model.unwrap_python_model().forecaster.model_.parameters()} == {"cpu"}
    out = model.predict(df)
    assert len(out) == 3 * H and np.isfinite(out["y_hat"]).all()
    assert list(out.columns) == ["unique_id", "ds", "y_hat"]  # intervals only when asked for
    bands = model.predict(df, params={"level": [80, 95]})
    np.testing.assert_allclose(bands["y_hat"], out["y_hat"])  # the point forecast is unchanged
    lo95, lo80, hi80, hi95 = (bands[f"y_hat-{s}-{lv}"] for s, lv in (("lo", 95), ("lo", 80), ("hi", 80), ("hi", 95)))
    assert ((lo95 <= lo80) & (lo80 < bands["y_hat"]) & (bands["y_hat"] < hi80) & (hi80 <= hi95)).all()
    first = out[out["unique_id"] == "s0"]["ds"]
    assert first.iloc[0] == df[df["unique_id"] == "s0"]["ds"].max() + pd.Timedelta(hours=1)


def test_epoch_metrics_are_written_off_the_training_thread_in_order(home, monkeypatch):
    """`MetricQueue.put` returns at once even when the store is slow; every epoch arrives, in steps;
    a store error comes back from `close` instead of failing the trial."""
    import time as _time

    from mlflow import MlflowClient

    from forecasting.tracking import runs as R

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    R.configure(home)
    run_id = R.start_run(R.ensure_experiment("queue", home), "trial")
    slow = MlflowClient.log_batch
    monkeypatch.setattr(MlflowClient, "log_batch", lambda self, *a, **k: (_time.sleep(0.2), slow(self, *a, **k)))
    q = R.MetricQueue(run_id)
    t0 = _time.perf_counter()
    for epoch in range(10):
        q.put({"train_loss": 1.0 / (epoch + 1), "val_loss": float("nan") if epoch == 3 else 2.0 - epoch}, epoch)
    assert _time.perf_counter() - t0 < 0.1  # ten writes of 0.2 s would take 2 s on this thread
    assert q.close() is None
    hist = MlflowClient().get_metric_history(run_id, "val_loss")
    assert [m.step for m in hist] == [0, 1, 2, 4, 5, 6, 7, 8, 9] and hist[-1].value == -7.0  # NaN left out
    assert len(MlflowClient().get_metric_history(run_id, "train_loss")) == 10
    monkeypatch.setattr(MlflowClient, "log_batch", lambda self, *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    broken = R.MetricQueue(run_id)
    broken.put({"val_loss": 1.0}, 11)
    assert isinstance(broken.close(), OSError)
