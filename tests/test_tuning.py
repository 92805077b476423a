"""Optuna search: resume after a killed worker, a diverging trial fails alone, pruning.

Everything runs against a real Optuna SQLite storage (and, for the killed worker, a real MLflow
SQLite store) in pytest's temporary directory; nothing from Optuna or MLflow is mocked.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from forecasting.api.forecaster import ForecasterConfig
from forecasting.core.data import split_fractions
from forecasting.core.errors import ForecastingError
from forecasting.core.training import TrainConfig
from forecasting.families.recurrent import (
    ModelConfig,
    RecurrentSpace,  # noqa: E402
)
from forecasting.tuning.objective import trials_frame, tune
from forecasting.tuning.space import SearchSpace
from forecasting.tuning.study import FINISHED, TuneConfig, _pruner, study_name
from tests.conftest import sine_frame

REPO = Path(__file__).resolve().parents[1]
H = 12
GOOD = {"lookback": 24, "hidden": 8, "layers": 1, "dropout": 0.0, "lr": 1e-2, "batch_size": 64,
        "weight_decay": 1e-6, "norm": "standard", "segment": 1, "highway": False, "init": "linear", "loss": "mse",
        "multiplicative": False, "lags": False}
SPACE = SearchSpace(lookbacks=(24,), lr=(1e-3, 1e-2), batch_sizes=(64,), weight_decay=(1e-7, 1e-3),
                    family=RecurrentSpace(hidden=(4, 16), layers=(1, 1), dropout=(0.0, 0.1), norms=("standard",),
                                          segments=(1, 4)))

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(scope="module")
def data():
    df = sine_frame(n_series=3, length=400, noise=0.2, seed=0)
    return df, split_fractions(df.groupby("unique_id", sort=False).size(), 0.1, 0.2)


def base_config(**train) -> ForecasterConfig:
    return ForecasterConfig(model=ModelConfig(horizon=H), calendar=False,
                            train=TrainConfig(device="cpu", seed=0, **train))


def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def by_number(study: optuna.Study) -> dict[int, optuna.trial.FrozenTrial]:
    return {t.number: t for t in study.get_trials()}


# --------------------------------------------------------------------------- killed worker

# A search in its own process: 3 sine series, tiny GRUs, each epoch stretched by `pause` seconds
# (through the public trial hook) so that a trial lasts long enough to be killed in its middle.
# Trials are logged to MLflow with `TrialLogger`; a stale trial's run is closed by
# `close_stale_trial_run` when the next search finds it.
SEARCH_SCRIPT = '''
import sys, time, warnings
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch

torch.set_num_threads(1)
warnings.filterwarnings("ignore")

from forecasting.tracking import runs

from forecasting.pipeline import search_log
from forecasting.core.data import split_fractions
from forecasting.api.forecaster import ForecasterConfig
from forecasting.families.recurrent import ModelConfig, RecurrentSpace
from forecasting.core.training import TrainConfig
from forecasting.tuning.space import SearchSpace
from forecasting.tuning.objective import tune
from forecasting.tuning.study import TuneConfig, study_name

home, storage, n_trials, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
rng = np.random.default_rng(0)
parts = []
for i in range(3):
    t = np.arange(400)
    y = rng.uniform(5, 15) + rng.uniform(1, 3) * np.sin(2 * np.pi * t / 24 + rng.uniform(0, 6)) + rng.normal(0, 0.2, 400)
    parts.append(pd.DataFrame({"unique_id": f"s{i}", "ds": pd.date_range("2021-01-01", periods=400, freq="h"), "y": y}))
df = pd.concat(parts, ignore_index=True)
split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.1, 0.2)
base = ForecasterConfig(model=ModelConfig(horizon=12), calendar=False, train=TrainConfig(device="cpu", seed=0))
space = SearchSpace(lookbacks=(24,), lr=(1e-3, 1e-2), batch_sizes=(64,), weight_decay=(1e-7, 1e-3),
                    family=RecurrentSpace(hidden=(4, 16), layers=(1, 1), dropout=(0.0, 0.1), norms=("standard",),
                                          segments=(1, 4)))
cfg = TuneConfig(n_trials=n_trials, max_epochs=3, storage=storage, heartbeat_interval=1, grace_period=2)

runs.configure(home)
exp = runs.ensure_experiment("toy-h12", home)
runs.close_dead_runs(exp)  # what a killed earlier search of this host left RUNNING
parent = runs.start_run(exp, "search", tags={"kind": "pipeline", **runs.owner_tags()})
logger = search_log.TrialLogger(exp, parent, "gru")


@contextmanager
def slow_trial(trial, params):
    with logger(trial, params) as log_epoch:
        def slow(epoch, train_loss, val_loss):
            log_epoch(epoch, train_loss, val_loss)
            time.sleep(pause)
        yield slow


result = tune(df, split, base, "gru", study_name("toy", 12, "gru"), cfg, space, trial_hook=slow_trial,
              on_stale=search_log.close_stale_trial_run)
runs.end_run(parent)
print("best", result.study.best_value)
'''


def _trial_states(db: Path, name: str) -> list[tuple[int, str, int]]:
    """(number, state, epochs reported) of every trial, read straight from the SQLite file
    (empty until it exists)."""
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(
                "SELECT t.number, t.state, (SELECT COUNT(*) FROM trial_intermediate_values v "
                "WHERE v.trial_id = t.trial_id) FROM trials t JOIN studies s ON t.study_id = s.study_id "
                "WHERE s.study_name = ?", (name,)).fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
        return []


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


@pytest.mark.slow
@pytest.mark.parametrize("wait", [True, pytest.param(False, marks=pytest.mark.variant)], ids=["after-grace", "at-once"])
def test_killed_search_resumes(tmp_path, wait):
    """SIGKILL a search mid-trial, restart it (after the heartbeat grace period, or at once, when only
    the dead process id tells): finished trials stay, the killed trial is failed and retried with its
    parameters, nothing is left RUNNING in Optuna or MLflow, and exactly n_trials trials finish."""
    from mlflow import MlflowClient

    n_trials, grace = 3, 2
    db, url, name = tmp_path / "optuna.db", storage_url(tmp_path), study_name("toy", H, "gru")
    script = tmp_path / "search.py"
    script.write_text(SEARCH_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    cmd = [sys.executable, str(script), str(tmp_path), url, str(n_trials), "0.25"]

    log1 = tmp_path / "run1.log"
    with open(log1, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            states = _trial_states(db, name)
            # Kill in the middle of a trial: one has finished, the next has reported its first epoch
            # (two more to go, each stretched by `pause`).
            if any(s == "COMPLETE" for _, s, _ in states) and any(s == "RUNNING" and k == 1 for _, s, k in states):
                break
            assert proc.poll() is None, f"search exited early ({proc.returncode}):\n{_tail(log1)}"
            assert time.monotonic() < deadline, f"no complete + running trial in time: {states}\n{_tail(log1)}"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    study = optuna.load_study(study_name=name, storage=url)
    before = by_number(study)
    running = [t for t in before.values() if t.state == TrialState.RUNNING]
    assert len(running) == 1, trials_frame(study)  # the dead worker's trial is left RUNNING
    killed = running[0]
    finished_before = {n: (t.state, t.value) for n, t in before.items() if t.state in FINISHED}
    assert any(s == TrialState.COMPLETE for s, _ in finished_before.values())
    assert killed.params and "mlflow_run_id" in killed.user_attrs

    if wait:
        time.sleep(grace + 1.5)  # the killed trial's heartbeat is now stale
    log2 = tmp_path / "run2.log"
    with open(log2, "w") as out:
        rerun = subprocess.run(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=240)
    assert rerun.returncode == 0, _tail(log2)

    study = optuna.load_study(study_name=name, storage=url)
    after = by_number(study)
    # Completed (and pruned) trials of the first run are kept as they were.
    for n, (state, value) in finished_before.items():
        assert after[n].state == state and after[n].value == value
    # Nothing is left running or queued; the killed trial failed and was retried once, same params.
    assert not [t.number for t in after.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert after[killed.number].state == TrialState.FAIL
    retries = [t for t in after.values() if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert len(retries) == 1, trials_frame(study)
    assert retries[0].state in FINISHED and retries[0].params == killed.params
    assert [t.number for t in after.values() if t.state == TrialState.FAIL] == [killed.number]
    # One worker: the search stops at exactly n_trials finished trials.
    assert sum(t.state in FINISHED for t in after.values()) == n_trials
    assert len(after) == n_trials + 1
    # The restarted search draws new configurations (besides the retry), not the first run's again.
    finished = [tuple(sorted(t.params.items())) for t in after.values() if t.state in FINISHED]
    assert len(set(finished)) == n_trials, trials_frame(study)

    # MLflow: the killed trial's run was closed as KILLED by the next search; the retry has its own run.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    dead = client.get_run(killed.user_attrs["mlflow_run_id"])
    assert dead.info.status == "KILLED"
    assert dead.data.tags["state"] == "failed"
    retry_run = client.get_run(retries[0].user_attrs["mlflow_run_id"])
    assert retry_run.info.run_id != dead.info.run_id and retry_run.info.status == "FINISHED"
    assert retry_run.data.tags["optuna.trial"] == str(retries[0].number)
    # The killed search's parent run was closed by the next one, which finished.
    parents = client.search_runs([dead.info.experiment_id], "tags.kind = 'pipeline'", order_by=["start_time"])
    assert [r.info.status for r in parents] == ["KILLED", "FINISHED"]
    assert not client.search_runs([dead.info.experiment_id], "attributes.status = 'RUNNING'")


@pytest.mark.slow
def test_resumed_search_draws_new_configurations(tmp_path, data):
    """A search resumed on its persistent study continues where it stopped, with configurations
    it has not tried (a sampler reseeded as at the start would redraw the first ones)."""
    df, split = data
    name = study_name("toy", H, "gru")
    cfg = TuneConfig(n_trials=2, max_epochs=1, storage=storage_url(tmp_path), pruner="none")
    first = tune(df, split, base_config(), "gru", name, cfg, SPACE, progress=False)
    assert len(first.study.get_trials()) == 2
    result = tune(df, split, base_config(), "gru", name, replace(cfg, n_trials=4), SPACE, progress=False)
    trials = result.study.get_trials()
    assert [(t.number, t.state) for t in trials] == [(n, TrialState.COMPLETE) for n in range(4)]
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4, trials_frame(result.study)


# --------------------------------------------------------------------------- divergence


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Fixed parameter")
def test_diverging_trial_fails_alone(tmp_path, data):
    """An absurd learning rate (no clipping) drives the loss to NaN: that trial is FAIL, the rest
    complete and the study still reaches its count."""
    df, split = data
    name = study_name("toy", H, "gru")
    cfg = TuneConfig(n_trials=3, max_epochs=2, storage=storage_url(tmp_path), pruner="none")
    study = optuna.create_study(study_name=name, storage=cfg.storage, direction="minimize")
    study.enqueue_trial(GOOD)
    study.enqueue_trial({**GOOD, "lr": 1e20})  # out of the searched range on purpose

    result = tune(df, split, base_config(clip=0.0), "gru", name, cfg, SPACE, progress=False)

    trials = by_number(result.study)
    assert trials[1].params["lr"] == 1e20 and trials[1].state == TrialState.FAIL
    others = [t for n, t in trials.items() if n != 1]
    assert [t.state for t in others] == [TrialState.COMPLETE] * 3
    assert len(trials) == 4
    assert result.study.best_value == min(t.value for t in others)
    assert result.best_params == result.study.best_trial.params
    assert result.config.train.lr == result.best_params["lr"] and result.config.model.cell == "gru"

    # A second call on the same (persistent) study finds the count reached and runs nothing more.
    again = tune(df, split, base_config(clip=0.0), "gru", name, cfg, SPACE, progress=False)
    assert len(again.study.get_trials()) == 4


@pytest.mark.filterwarnings("ignore:Fixed parameter")
@pytest.mark.slow
def test_search_where_every_trial_diverges_raises(tmp_path, data):
    df, split = data
    name = study_name("toy", H, "lstm")
    cfg = TuneConfig(n_trials=1, max_epochs=2, storage=storage_url(tmp_path), pruner="none", max_failures=1)
    study = optuna.create_study(study_name=name, storage=cfg.storage, direction="minimize")
    for _ in range(2):
        study.enqueue_trial({**GOOD, "lr": 1e20})
    with pytest.raises(ForecastingError, match="no trial completed"):
        tune(df, split, base_config(clip=0.0), "lstm", name, cfg, SPACE, progress=False)
    # The failure cap bounds the search: n_trials + max_failures attempts, all failed.
    states = [t.state for t in optuna.load_study(study_name=name, storage=cfg.storage).get_trials()]
    assert states == [TrialState.FAIL, TrialState.FAIL]


# --------------------------------------------------------------------------- pruning


@pytest.mark.slow
def test_bad_trials_are_pruned(tmp_path, data):
    """Median pruner: after three good trials, trials with lr=1e-6 (barely learning) are pruned at
    the first epoch the pruner looks at; the search still finishes its count."""
    df, split = data
    name = study_name("toy", H, "gru")
    cfg = TuneConfig(n_trials=6, max_epochs=3, storage=storage_url(tmp_path), pruner="median", seed=1)
    space = replace(SPACE, lr=(1e-6, 1e-1))
    study = optuna.create_study(study_name=name, storage=cfg.storage, direction="minimize")
    for hidden in (8, 12, 16):
        study.enqueue_trial({**GOOD, "hidden": hidden})
    for hidden in (8, 16):
        study.enqueue_trial({**GOOD, "hidden": hidden, "lr": 1e-6})

    result = tune(df, split, base_config(), "gru", name, cfg, space, progress=False)

    trials = by_number(result.study)
    assert [trials[n].state for n in range(3)] == [TrialState.COMPLETE] * 3
    for n in (3, 4):  # the bad ones: pruned at epoch 1 (the median pruner warms up for one step)
        assert trials[n].state == TrialState.PRUNED, trials_frame(result.study)
        assert max(trials[n].intermediate_values) == 1
        # Its two epochs count in the study's training cost, and within the trial's own duration.
        duration = (trials[n].datetime_complete - trials[n].datetime_start).total_seconds()
        assert 0 < trials[n].user_attrs["train_seconds"] <= duration
    assert sum(t.state in FINISHED for t in trials.values()) == cfg.n_trials
    assert not [t for t in trials.values() if t.state == TrialState.FAIL]
    assert result.study.best_trial.state == TrialState.COMPLETE
    assert result.study.best_trial.params["lr"] > 1e-6


def test_study_name_and_pruners():
    """One study per dataset, horizon and family; the pruner is chosen by name."""
    assert study_name("ETTh1", 24, "lstm") == "ETTh1-h24-lstm"
    assert isinstance(_pruner("median"), optuna.pruners.MedianPruner)
    assert isinstance(_pruner("hyperband"), optuna.pruners.HyperbandPruner)
    with pytest.raises(ValueError, match="pruner"):
        _pruner("nope")


def test_surplus_trials_yield_to_lower_numbers():
    """Two workers starting trials at once on a nearly full study: the lower-numbered trial runs,
    the other sees the study full and yields (it fails as surplus and its worker stops)."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from forecasting.tuning.study import is_surplus

    study = optuna.create_study()
    for v in (1.0, 2.0, 3.0):
        study.add_trial(create_trial(value=v, params={"x": v}, distributions={"x": FloatDistribution(0, 5)}))
    a, b = study.ask(), study.ask()  # two RUNNING trials, numbers 3 and 4
    assert not is_surplus(study, a.number, 4) and is_surplus(study, b.number, 4)
    assert not is_surplus(study, a.number, 5) and not is_surplus(study, b.number, 5)
    study.tell(a, 0.5)
    assert is_surplus(study, b.number, 4)


@pytest.mark.slow
@pytest.mark.variant  # on PostgreSQL: test_scaleout.test_two_workers_share_one_study
def test_two_searches_at_once_on_one_study_finish_exactly_n_trials(tmp_path, data):
    """Two processes tune one SQLite study with --trials 4: exactly 4 trials finish, however they
    interleave (a surplus trial fails alone, marked as such)."""
    script = tmp_path / "search.py"
    script.write_text(SEARCH_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    url, name = storage_url(tmp_path), study_name("toy", H, "gru")
    optuna.create_study(study_name=name, storage=url, direction="minimize")  # both load it
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / f"h{i}"), url, "4", "0.0"], cwd=tmp_path,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert sum(t.state in FINISHED for t in trials) == 4, trials_frame(optuna.load_study(study_name=name, storage=url))
    assert all(t.state in FINISHED or t.state == TrialState.FAIL for t in trials)


@pytest.mark.slow
def test_a_reused_study_says_how_many_trials_it_holds(tmp_path, data, capfd):
    df, split = data
    name = study_name("reuse", H, "gru")
    cfg = TuneConfig(n_trials=2, max_epochs=1, storage=storage_url(tmp_path), seed=0)
    tune(df, split, base_config(), "gru", name, cfg, SPACE, progress=False)
    tune(df, split, base_config(), "gru", name, cfg, SPACE, progress=True)
    err = capfd.readouterr().err
    assert f"[{name}] the study already holds 2 finished trial(s) of 2: no new trial needed" in err
    tune(df, split, base_config(), "gru", name, replace(cfg, n_trials=3), SPACE, progress=True)
    assert "holds 2 finished trial(s) of 3: running 1 more" in capfd.readouterr().err
