"""Optuna's side of a search: the study, its persistent storage and the coordination of workers.

One study per (dataset, horizon, family), named `<dataset>-h<H>-<family>`, in a persistent RDB
storage with heartbeats, so a killed search resumes: completed trials stay, a trial left RUNNING
by a dead process is failed once its heartbeat is stale (at once when its process on this host is
gone) and re-queued with the same parameters. Workers on many machines share a study; a trial
that would take it past the requested count yields (`is_surplus`).
"""

from __future__ import annotations

import functools
import socket
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

from forecasting.api.jobs import TuneConfig
from forecasting.core.errors import ForecastingError
from forecasting.core.files import create_store_once, pid_alive, sqlite_revision
from forecasting.core.home import Home, sqlite_path, sqlite_url
from forecasting.core.secrets import redact, reveal

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Called with a trial whose worker stopped sending heartbeats (killed mid-trial).
StaleHook = Callable[[optuna.Study, FrozenTrial], None]


def study_name(dataset: str, horizon: int, family: str) -> str:
    return f"{dataset}-h{horizon}-{family}"


def default_storage(home: str | Path) -> str:
    """SQLite file beside the MLflow store: `<home>/mlruns/optuna.db` (created by `open_study`)."""
    return Home.of(home).optuna_url


class _RetryAndReport(RetryHeartbeatStaleTrialCallback):
    """Re-queue a stale trial (its worker died) and tell `on_stale` (to close its MLflow run)."""

    def __init__(self, max_retry: int, on_stale: StaleHook | None):
        super().__init__(max_retry=max_retry)
        self.on_stale = on_stale

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        super().__call__(study, trial)
        if self.on_stale is not None:
            self.on_stale(study, trial)


def _retry(max_retry: int, on_stale: StaleHook | None) -> _RetryAndReport:
    with warnings.catch_warnings():  # the heartbeat callback is "experimental" in Optuna: used knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _RetryAndReport(max_retry, on_stale)


def check_storage(url: str | None) -> None:
    """Refuse, before anything is created, a storage URL that names no database SQLAlchemy can open
    (an unknown scheme, a missing driver, no URL at all); the message never shows its password."""
    if not url:
        return
    from sqlalchemy.engine import make_url

    try:
        make_url(reveal(url)).get_dialect()
    except Exception as exc:  # noqa: BLE001 (ArgumentError, NoSuchModuleError, ImportError of a driver)
        raise ForecastingError(f"--storage {redact(url)}: not a database URL that can be opened "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); use e.g. "
                               "postgresql://user@host/db or sqlite:////abs/path/optuna.db") from None


def make_storage(url: str, cfg: TuneConfig, on_stale: StaleHook | None = None) -> RDBStorage:
    """An RDB storage with heartbeats; stale trials are failed and retried with their parameters."""
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna: used knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url, engine_kwargs=engine_kwargs,
            heartbeat_interval=cfg.heartbeat_interval, grace_period=cfg.grace_period,
            heartbeat_stale_trial_callback=_retry(cfg.max_retry, on_stale),
        )


def _pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be median, hyperband or none, got {name!r}")


def _init_store(path: Path) -> None:
    RDBStorage(sqlite_url(path)).engine.dispose()


@functools.cache
def _head_revision() -> str:
    """The schema revision this Optuna writes (read from a throwaway in-memory store)."""
    return RDBStorage("sqlite:///:memory:").get_head_version()


def _whole_store(path: Path) -> bool:
    return sqlite_revision(path) == _head_revision()


# Workers starting together on a fresh server database (PostgreSQL, MySQL) race to create Optuna's
# tables: the loser's CREATE fails on what the winner just made. Tried again, it finds them made.
SCHEMA_RACE_RETRIES = 3


def _create_study(name: str, cfg: TuneConfig, on_stale: StaleHook | None, server: bool) -> optuna.Study:
    """`optuna.create_study` (load if it exists), tried again after a lost schema-creation race on a
    server database (an SQLite file is created once beforehand)."""
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            storage = make_storage(reveal(cfg.storage), cfg, on_stale) if cfg.storage else None
            return optuna.create_study(storage=storage, study_name=name, direction="minimize",
                                       sampler=_sampler(cfg.seed), pruner=_pruner(cfg.pruner), load_if_exists=True)
        except (IntegrityError, ProgrammingError):
            if not server or attempt == SCHEMA_RACE_RETRIES:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def open_study(name: str, cfg: TuneConfig, on_stale: StaleHook | None = None) -> optuna.Study:
    """Create the study or load it if it exists (a resumed search, or another worker's).

    An unreadable storage raises one `ForecastingError` naming it and what to do; an empty SQLite
    file is said aloud (a new store is created in it: any earlier history is gone)."""
    path = sqlite_path(cfg.storage)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if path is not None and path.is_file() and path.stat().st_size == 0:
        print(f"note: Optuna storage {path} is an empty file; a new study store is created in it "
              "(no earlier trials to resume)", file=sys.stderr)
    if path is not None:  # created whole and once, even by two commands starting together
        create_store_once(path, _init_store, _whole_store, ("trials",), "Optuna storage")
    try:
        study = _create_study(name, cfg, on_stale, path is None)
    except (SQLAlchemyError, RuntimeError, ValueError) as exc:
        what = f"file {path}" if path is not None else cfg.storage.split("@")[-1]
        raise ForecastingError(f"Optuna storage {what} cannot be opened ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:160]}); restore it, or move it away to start "
                               "a new study") from None
    n = len(study.get_trials(deepcopy=False))
    if n:
        # A resumed study: a sampler seeded as at the start would redraw the configurations
        # already tried (its random startup draws ignore the history), so seed it by position.
        study.sampler = _sampler(int(np.random.SeedSequence([cfg.seed, n]).generate_state(1)[0]))
    return study


def _sampler(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=5)


def fail_dead_local_trials(study: optuna.Study, on_stale: StaleHook | None, max_retry: int) -> list[int]:
    """Fail at once the RUNNING trials whose worker ran on this host and is gone (a killed `train`
    rerun within the heartbeat grace period), re-queue their parameters and tell `on_stale`.
    Returns their numbers."""
    host, failed = socket.gethostname(), []
    retry = _retry(max_retry, on_stale)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(t.user_attrs.get("worker", "")).rpartition("-")
        if worker_host == host and pid.isdigit() and not pid_alive(int(pid)):
            if study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                retry(study, study._storage.get_trial(t._trial_id))
                failed.append(t.number)
    return failed


def is_surplus(study: optuna.Study, number: int, n_trials: int) -> bool:
    """Whether trial `number` would take the study past `n_trials`: the finished trials plus the
    running trials numbered before it already make `n_trials` (the lowest numbers go first, so two
    workers starting at once agree on which one yields)."""
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    ahead = sum(t.state in FINISHED or t.number < number for t in trials if t.number != number)
    return ahead >= n_trials


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


