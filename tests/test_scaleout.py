"""Scale-out: tuning workers that share one Optuna study in PostgreSQL.

Everything here is real: a PostgreSQL server on 127.0.0.1:5432 (each test creates and drops a
database of its own), worker processes, an `mlflow server` with a PostgreSQL backend store, a
`prefect server` for the CLI's flows, and SIGKILL. Nothing from Optuna, MLflow or Prefect is mocked.
The tests skip when PostgreSQL is not reachable.

The MLflow and Prefect servers are started once for the module (both at once; each takes 20-30 s
on a busy 2-core machine); a CLI call against a running Prefect server also saves the ~15 s its
temporary server takes to start.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from flows.server import free_port
from forecasting.core import datasets
from forecasting.pipeline import plan, search
from forecasting.pipeline.steps import TrainJob
from forecasting.tuning.study import FINISHED, TuneConfig, study_name

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
PG_SERVER = os.environ.get("FORECASTING_TEST_POSTGRES", f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}")
H = 12
PROC_TIMEOUT = 420  # seconds for a worker or CLI process: other people's tests share these 2 cores
REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.postgres, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]


# --------------------------------------------------------------------------- PostgreSQL


def _admin_connection():
    """An autocommit connection to the `postgres` database, or a skip saying why there is none."""
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is not installed")
    try:
        conn = psycopg2.connect(f"{PG_SERVER}/postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable on {PG_SERVER.split('@')[-1]}: {str(exc).strip().splitlines()[0]}")
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    return conn


def _create_database(prefix: str) -> tuple[str, str]:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return name, f"{PG_SERVER}/{name}"


def _drop_database(name: str) -> None:
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # ends leftover connections
    finally:
        conn.close()


@pytest.fixture
def pg_url():
    """A fresh, uniquely named PostgreSQL database for this test (dropped afterwards)."""
    name, url = _create_database("fc_test")
    yield url
    _drop_database(name)


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=True)
    finally:
        storage.engine.dispose()


def _create_study(url: str, name: str, enqueue: dict | None = None) -> None:
    """Create the study (and Optuna's tables), optionally with one trial queued."""
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize")
        if enqueue:
            study.enqueue_trial(enqueue)
    finally:
        storage.engine.dispose()


def assert_study_complete(trials: list[optuna.trial.FrozenTrial], n_trials: int) -> None:
    """At least `n_trials` finished, numbers unique and contiguous, values present, nothing RUNNING."""
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials))), f"trial numbers not unique/contiguous: {numbers}"
    states = Counter(t.state.name for t in trials)
    assert sum(t.state in FINISHED for t in trials) >= n_trials, states
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], states
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert t.value is not None and t.value == t.value, f"trial {t.number} has no value"


# --------------------------------------------------------------------------- processes


def _spawn(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """Start a process in a session of its own (its children can be stopped with it), output to `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Terminate a process started by `_spawn` and its children (its process group), then wait."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass
    try:  # children that outlived their parent (uvicorn, job runners)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no output)"


def _wait(proc: subprocess.Popen, log: Path, timeout: float = PROC_TIMEOUT) -> None:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        pytest.fail(f"{proc.args[:4]} still running after {timeout:.0f}s:\n{_tail(log)}")
    assert rc == 0, f"{proc.args[:4]} exited {rc}:\n{_tail(log)}"


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[:3]} exited {proc.returncode} before {url} answered:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout:.0f}s:\n{_tail(log)}")


def _forecasting() -> list[str]:
    script = Path(sys.executable).parent / "forecasting"
    return [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]


def _base_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    env.update({
        "OMP_NUM_THREADS": "1",  # small models; spinning OpenMP threads on a busy machine are slow
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    })
    return env


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """An `mlflow server` on a PostgreSQL backend store and a `prefect server`, started together.

    Yields {"mlflow": tracking URI, "prefect": API URL, "artifacts": artifact folder}.
    """
    db_name, db_url = _create_database("fc_test_mlflow")
    tmp = tmp_path_factory.mktemp("servers")
    env = _base_env(tmp)
    mlflow_port, prefect_port = free_port(), free_port()
    mlflow_log, prefect_log = tmp / "mlflow-server.log", tmp / "prefect-server.log"
    procs = []
    try:
        mlflow_env = env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner processes
        procs.append(_spawn([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", db_url,
                             "--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(mlflow_port), "--workers", "1"], mlflow_env, mlflow_log))
        procs.append(_spawn([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(prefect_port), "--no-services", "--no-ui"],
                            env | {"PREFECT_HOME": str(tmp / "prefect-server")}, prefect_log))
        _wait_http(f"http://127.0.0.1:{mlflow_port}/health", procs[0], mlflow_log)
        _wait_http(f"http://127.0.0.1:{prefect_port}/api/health", procs[1], prefect_log)
        yield {"mlflow": f"http://127.0.0.1:{mlflow_port}", "prefect": f"http://127.0.0.1:{prefect_port}/api",
               "artifacts": tmp / "artifacts", "prefect_home": tmp / "prefect-server"}
    finally:
        for p in procs:
            _stop(p)
        _drop_database(db_name)


def _mlflow_client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# --------------------------------------------------------------------------- data and jobs


@pytest.fixture
def dataset(tmp_path, make_sine_frame) -> tuple[Path, str]:
    """A state directory and the name of a dataset ingested there: 3 noisy hourly sine series of
    500 points. The name is unique (experiments and models on the shared MLflow server)."""
    src = tmp_path / "sine.csv"
    make_sine_frame(n_series=3, length=500, noise=0.2, seed=0).to_csv(src, index=False)
    home, name = tmp_path / "home", f"sine{uuid.uuid4().hex[:6]}"
    datasets.ingest(src, name, home)
    return home, name


def tiny_job(dataset: str, storage: str, n_trials: int, **tune) -> TrainJob:
    """The job `forecasting tune-worker DATASET --horizon 12 --trials N --max-epochs 2 --device cpu
    --max-train-windows 128 --pruner none --storage URL` runs (workers of a study must agree on it)."""
    cfg = TuneConfig(n_trials=n_trials, max_epochs=2, storage=storage, pruner="none", **tune)
    return TrainJob(dataset, H, ("gru",), cfg, device="cpu", max_train_windows=128)


def tune_worker_command(home: Path, dataset: str, storage: str, n_trials: int, parent: str, index: int) -> list[str]:
    """`forecasting tune-worker` with the options of `tiny_job` (as on another machine)."""
    return [*_forecasting(), "tune-worker", dataset, "--horizon", str(H), "--family", "gru", "--storage", storage,
            "--trials", str(n_trials), "--max-epochs", "2", "--device", "cpu", "--max-train-windows", "128",
            "--pruner", "none", "--index", str(index), "--parent-run-id", parent, "--threads", "1",
            "--home", str(home)]


def _start_parent(client, dataset: str) -> tuple[str, str]:
    """Experiment `<dataset>-h<H>` and a parent run on the server (what `forecasting train` makes)."""
    exp = client.create_experiment(f"{dataset}-h{H}")
    return exp, client.create_run(exp, run_name="scaleout-test", tags={"kind": "pipeline"}).info.run_id


def _trial_runs(client, exp: str, parent: str) -> list:
    runs = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)
    return [r for r in runs if r.data.tags.get("kind") == "trial"]


def _worker_env(tmp: Path, tracking_uri: str) -> dict:
    return _base_env(tmp) | {"MLFLOW_TRACKING_URI": tracking_uri}


# --------------------------------------------------------------------------- tests


def test_two_workers_share_one_study(dataset, pg_url, servers, tmp_path):
    """Two worker processes fill one study: no duplicate trial numbers, no lost results, both
    workers ran trials, and every trial is exactly one nested MLflow run."""
    n = 6
    home, ds = dataset
    job = tiny_job(ds, pg_url, n)
    name = study_name(ds, H, "gru")
    client = _mlflow_client(servers["mlflow"])
    exp, parent = _start_parent(client, ds)
    _create_study(pg_url, name)

    # Hold the workers at the gate (their first query waits on a table lock) until both are up,
    # so neither can run the whole study before the other one has imported torch.
    import psycopg2

    gate = psycopg2.connect(pg_url)
    env = _worker_env(tmp_path, servers["mlflow"])
    procs, logs = [], []
    try:
        with gate.cursor() as cur:
            cur.execute("LOCK TABLE version_info, studies IN ACCESS EXCLUSIVE MODE")
            # one worker as `forecasting train --workers N` starts them, one as `forecasting tune-worker`
            logs += [tmp_path / "worker-module.log", tmp_path / "worker-cli.log"]
            procs.append(_spawn(search.worker_command(home, job, "gru", parent, 0, 1), env, logs[0]))
            procs.append(_spawn(tune_worker_command(home, ds, pg_url, n, parent, 1), env, logs[1]))
            deadline = time.monotonic() + PROC_TIMEOUT
            while True:
                cur.execute("SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted "
                            "AND relation IN ('version_info'::regclass, 'studies'::regclass)")
                if cur.fetchone()[0] >= 2:
                    break
                for p, log in zip(procs, logs, strict=True):
                    assert p.poll() is None, f"worker exited {p.returncode} before the gate opened:\n{_tail(log)}"
                assert time.monotonic() < deadline, "workers never reached the study"
                time.sleep(0.2)
        gate.rollback()  # open the gate: both workers start tuning at once
        for p, log in zip(procs, logs, strict=True):
            _wait(p, log)
    finally:
        gate.close()
        for p in procs:
            _stop(p)
    client.set_terminated(parent)

    trials = _trials(pg_url, name)
    assert_study_complete(trials, n)
    assert sum(t.state in FINISHED for t in trials) == n  # a trial that would overshoot yields (surplus)
    ran = Counter(t.user_attrs.get("worker") for t in trials)
    expected = {f"{socket.gethostname()}-{p.pid}" for p in procs}
    assert set(ran) == expected, f"trials per worker: {dict(ran)}; worker processes: {expected}"
    trials = [t for t in trials if not t.user_attrs.get("surplus")]  # never trained: no MLflow run

    runs = _trial_runs(client, exp, parent)
    per_trial = Counter(int(r.data.tags["optuna.trial"]) for r in runs)
    assert per_trial == Counter({t.number: 1 for t in trials}), per_trial
    by_number = {int(r.data.tags["optuna.trial"]): r for r in runs}
    for t in trials:
        r = by_number[t.number]
        assert t.user_attrs["mlflow_run_id"] == r.info.run_id
        assert r.info.status == "FINISHED" and r.data.tags["state"] == t.state.name.lower()
        if t.state == TrialState.COMPLETE:  # its value is the best epoch of the curve logged in MLflow
            curve = t.intermediate_values
            start = t.user_attrs.get("start_val_loss")  # a highway's baseline start competes too
            assert t.value == pytest.approx(min([*curve.values(), *([start] if start is not None else [])]))
            assert r.data.metrics["val_loss"] == pytest.approx(curve[max(curve)])


def _slow_params(home: Path, job: TrainJob) -> dict:
    """The slowest configuration of the job's search space (largest model, smallest batches and
    learning rate, so early stopping comes late): easy to catch mid-trial."""
    df, freq = datasets.load_processed(home, job.dataset)
    split = plan.make_split(df, job)
    space = plan.search_space(df, split, plan.base_config(df, freq, job, split), job)
    own = space.own("gru")  # the recurrent family's own ranges
    return {"lookback": max(space.lookbacks), "hidden": own.hidden[1], "layers": own.layers[1],
            "dropout": own.dropout[0], "lr": space.lr[0], "batch_size": min(space.batch_sizes),
            "weight_decay": space.weight_decay[0], "norm": own.norms[0], "segment": min(own.segments),
            "multiplicative": False, "lags": False}


def test_killed_worker_trial_is_failed_retried_and_closed(dataset, pg_url, servers, tmp_path):
    """SIGKILL a worker mid-trial: the next worker fails its stale trial, reruns its parameters,
    fills the study, and ends the killed trial's MLflow run as KILLED."""
    home, ds = dataset
    beat = {"heartbeat_interval": 1, "grace_period": 2}
    name = study_name(ds, H, "gru")
    client = _mlflow_client(servers["mlflow"])
    exp, parent = _start_parent(client, ds)
    env = _worker_env(tmp_path, servers["mlflow"])

    # Worker A: long trials (every window, up to 200 epochs, the slowest configuration first) and
    # more of them than it can run before it is killed.
    job_a = replace(tiny_job(ds, pg_url, 100, **beat), max_train_windows=None)
    job_a = replace(job_a, tune=replace(job_a.tune, max_epochs=200))
    _create_study(pg_url, name, enqueue=_slow_params(home, job_a))
    log_a = tmp_path / "worker-a.log"
    a = _spawn(search.worker_command(home, job_a, "gru", parent, 0, 1), env, log_a)
    try:
        storage = optuna.storages.RDBStorage(pg_url)
        deadline = time.monotonic() + PROC_TIMEOUT
        killed = None
        while killed is None:
            assert a.poll() is None, f"worker A exited {a.returncode} before it was killed:\n{_tail(log_a)}"
            assert time.monotonic() < deadline, f"worker A never started a trial:\n{_tail(log_a)}"
            sid = storage.get_study_id_from_name(name)
            running = [t for t in storage.get_all_trials(sid, states=(TrialState.RUNNING,))
                       if "mlflow_run_id" in t.user_attrs and t.intermediate_values]
            if running:
                os.kill(a.pid, signal.SIGKILL)  # mid-trial: its run exists and it has reported an epoch
                a.wait(timeout=30)
                killed = storage.get_trial(running[0]._trial_id)
                finished_before = len(storage.get_all_trials(sid, states=FINISHED))
            else:
                time.sleep(0.1)
        storage.engine.dispose()
    finally:
        _stop(a)
    assert killed.state == TrialState.RUNNING  # still: nobody has noticed yet
    run_id = killed.user_attrs["mlflow_run_id"]
    assert client.get_run(run_id).info.status == "RUNNING"

    time.sleep(beat["grace_period"] + 1.5)  # its heartbeat is stale now
    n = finished_before + 2  # worker B has the retry and one more trial to run
    log_b = tmp_path / "worker-b.log"
    b = _spawn(search.worker_command(home, tiny_job(ds, pg_url, n, **beat), "gru", parent, 1, 1), env, log_b)
    try:
        _wait(b, log_b)
    finally:
        _stop(b)
    client.set_terminated(parent)

    trials = _trials(pg_url, name)
    assert_study_complete(trials, n)
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1, [(t.number, t.system_attrs) for t in trials]
    assert retries[0].params == killed.params
    assert retries[0].state in FINISHED

    killed_run = client.get_run(run_id)
    assert killed_run.info.status == "KILLED"
    assert killed_run.data.tags["state"] == "failed"
    assert "heartbeat" in killed_run.data.tags["error"]
    retry_run = client.get_run(retries[0].user_attrs["mlflow_run_id"])
    assert retry_run.info.run_id != run_id and retry_run.info.status == "FINISHED"
    per_trial = Counter(int(r.data.tags["optuna.trial"]) for r in _trial_runs(client, exp, parent))
    assert per_trial == Counter({t.number: 1 for t in trials}), per_trial


def test_cli_train_and_forecast_through_mlflow_server(pg_url, servers, tmp_path, make_sine_frame):
    """`forecasting ingest`, `train --storage postgresql://...` and `forecast` against an MLflow server
    with a PostgreSQL backend: the model is registered as champion on the server and forecasts."""
    dataset = f"srv{uuid.uuid4().hex[:6]}"
    src = tmp_path / "sine.csv"
    make_sine_frame(n_series=3, length=500, noise=0.2, seed=1).to_csv(src, index=False)
    home = tmp_path / "home"
    env = _worker_env(tmp_path, servers["mlflow"]) | {"PREFECT_API_URL": servers["prefect"]}
    out = tmp_path / "forecast.csv"
    steps = [
        ["ingest", str(src), "--name", dataset],
        ["train", dataset, "--horizon", str(H), "--models", "gru", "--trials", "2", "--max-epochs", "2",
         "--max-train-windows", "128", "--storage", pg_url],
        ["forecast", f"{dataset}-gru", "--input", str(src), "--output", str(out)],
    ]
    for args in steps:
        log = tmp_path / f"cli-{args[0]}.log"
        proc = _spawn([*_forecasting(), *args, "--home", str(home)], env, log)
        try:
            _wait(proc, log)
        finally:
            _stop(proc)

    client = _mlflow_client(servers["mlflow"])
    mv = client.get_model_version_by_alias(f"{dataset}-gru", "champion")
    assert str(mv.version) == "1"
    assert client.get_run(mv.run_id).data.tags["family"] == "gru"
    assert not (home / "mlruns" / "mlflow.db").exists()  # everything went to the server
    assert any(servers["artifacts"].rglob("MLmodel"))  # the model's files, through the server's proxy
    assert_study_complete(_trials(pg_url, study_name(dataset, H, "gru")), 2)

    fc = pd.read_csv(out)
    assert len(fc) == 3 * H and set(fc["unique_id"]) == {"s0", "s1", "s2"}
    assert fc.groupby("unique_id").size().eq(H).all()
    assert fc["y_hat"].notna().all()
    last = pd.to_datetime(pd.read_csv(src)["ds"]).max()
    assert pd.to_datetime(fc["ds"]).min() == last + pd.Timedelta(hours=1)


def with_password(url: str) -> tuple[str, str]:
    """`url` with a password in it (trust authentication ignores it), and that password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    secret = "s3cret-" + uuid.uuid4().hex[:8]
    return url.replace(f"{parts.username}@", f"{parts.username}:{secret}@", 1), secret


def files_holding(text: str, *roots: Path) -> list[Path]:
    """Every file under `roots` whose bytes contain `text`."""
    files = [p for root in roots for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()]
    return [p for p in files if text.encode() in p.read_bytes()]


@pytest.mark.parametrize("runner", [pytest.param([], marks=pytest.mark.variant), ["--cluster", "local:2"]],
                         ids=["processes", "dask"])  # processes on PostgreSQL: test_two_workers_share_one_study
def test_cli_train_with_two_workers(dataset, pg_url, servers, tmp_path, runner):
    """`forecasting train --workers 2 --storage postgresql://user:password@...` end to end, with the default
    local MLflow store (SQLite, written by both processes), reaches the trial count; the password is
    nowhere in what the run recorded: the home's stores, Prefect's (the server's and the command's),
    the user's home, or the command's output. With `--cluster local:2` the two workers are tasks on a
    Dask LocalCluster's worker processes (not the command's own), on the same one study."""
    n = 4
    home, ds = dataset
    url, secret = with_password(pg_url)
    user = tmp_path / "user"
    user.mkdir()
    env = _base_env(tmp_path) | {"PREFECT_API_URL": servers["prefect"], "HOME": str(user)}
    log = tmp_path / "cli-train.log"
    proc = _spawn([*_forecasting(), "train", ds, "--horizon", str(H), "--models", "gru",
                   "--trials", str(n), "--max-epochs", "2", "--max-train-windows", "128", "--pruner", "none",
                   "--storage", url, "--workers", "2", "--home", str(home), *runner], env, log)
    try:
        _wait(proc, log)
    finally:
        _stop(proc)
    assert f"registered {ds}-gru v1 -> @champion" in log.read_text()

    trials = _trials(pg_url, study_name(ds, H, "gru"))
    assert_study_complete(trials, n)
    client = _mlflow_client(f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"{ds}-h{H}").experiment_id
    parent = client.search_runs([exp], filter_string="tags.kind = 'pipeline'")[0]
    assert parent.info.status == "FINISHED"
    per_trial = Counter(int(r.data.tags["optuna.trial"]) for r in _trial_runs(client, exp, parent.info.run_id))
    # a worker that asks for a trial when the study is already full gets one it fails unrun (no MLflow run)
    assert per_trial == Counter({t.number: 1 for t in trials if not t.user_attrs.get("surplus")}), per_trial
    assert str(client.get_model_version_by_alias(f"{ds}-gru", "champion").version) == "1"
    assert parent.data.params["tune.storage"] == url.replace(secret, "***")  # what the run says it used
    assert files_holding(secret, home, tmp_path / "prefect-home", servers["prefect_home"], user, log) == []
    workers = Counter(t.user_attrs.get("worker") for t in trials)
    if runner:  # every trial ran in a cluster worker process, none in the command's
        assert all(w and not w.endswith(f"-{proc.pid}") for w in workers), workers
        assert "2 workers on the cluster, one study" in log.read_text()
    print(json.dumps({"trials_per_worker": workers}))


def test_workers_opening_a_fresh_database_together_all_get_the_one_study(pg_url):
    """Workers starting at once on a new PostgreSQL database race to create Optuna's tables (seen: a
    worker failed with `duplicate key value violates unique constraint "pg_type_typname_nsp_index"`;
    without the retry this failed in 5 of 5 tries); every one gets the same study."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from forecasting.tuning.study import TuneConfig, open_study

    n = 6
    start = threading.Barrier(n)

    def worker(i: int) -> int:
        start.wait()
        return open_study("race", TuneConfig(storage=pg_url, seed=i))._study_id

    with ThreadPoolExecutor(n) as pool:
        ids = list(pool.map(worker, range(n)))
    assert len(set(ids)) == 1


def test_a_lost_schema_race_is_tried_again_on_a_server_database_only(monkeypatch, tmp_path):
    """What the race looks like to the loser (an IntegrityError from the storage's CREATE), made to
    happen once: a server database tries again and opens the study; an SQLite file does not retry."""
    from sqlalchemy.exc import IntegrityError

    from forecasting.tuning import study as study_mod
    from forecasting.tuning.study import TuneConfig

    real, calls = study_mod.make_storage, []

    def racing(url, cfg, on_stale=None):
        calls.append(url)
        if len(calls) == 1:
            raise IntegrityError("CREATE TABLE studies", {}, Exception("duplicate key value"))
        return real(url, cfg, on_stale)

    monkeypatch.setattr(study_mod, "make_storage", racing)
    monkeypatch.setattr(study_mod.time, "sleep", lambda s: None)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    study = study_mod._create_study("s", TuneConfig(storage=url), None, server=True)
    assert study.study_name == "s" and len(calls) == 2
    calls.clear()
    with pytest.raises(IntegrityError):
        study_mod._create_study("s", TuneConfig(storage=url), None, server=False)
