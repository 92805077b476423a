"""Optuna search over the recurrent forecaster (imports optuna; not part of the core).

One study per (dataset, horizon, family), named `<dataset>-h<H>-<family>`, in a
persistent RDB storage with heartbeats, so a killed search resumes: completed
trials stay, a trial left RUNNING by a dead process is failed once its heartbeat
is stale and re-queued with the same parameters, and the search runs until the
requested number of finished (complete or pruned) trials is reached.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from forecasting.api.forecaster import Forecaster, ForecasterConfig
from forecasting.api.jobs import TuneConfig
from forecasting.core.data import Split
from forecasting.core.errors import DivergedError, ForecastingError, SurplusTrialError
from forecasting.core.files import pid_alive

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
EpochLogger = Callable[[int, float, float], None]
# A trial hook opens a context around one trial (an MLflow nested run, say) and
# yields the per-epoch logger; on exit it learns the trial's outcome.
TrialHook = Callable[[optuna.Trial, dict], AbstractContextManager[EpochLogger]]
# Called with a trial whose worker stopped sending heartbeats (killed mid-trial).
StaleHook = Callable[[optuna.Study, FrozenTrial], None]


@dataclass(frozen=True)
class SearchSpace:
    """Ranges searched; the same space is used for every model family (a fair comparison)."""

    lookbacks: tuple[int, ...] = (48, 96, 168, 336)
    hidden: tuple[int, int] = (16, 128)
    layers: tuple[int, int] = (1, 3)
    dropout: tuple[float, float] = (0.0, 0.3)
    lr: tuple[float, float] = (1e-4, 1e-2)
    batch_sizes: tuple[int, ...] = (64, 128, 256, 512)
    weight_decay: tuple[float, float] = (1e-7, 1e-2)
    norms: tuple[str, ...] = ("none", "last", "standard")
    segments: tuple[int, ...] = (1, 24)
    highway: tuple[bool, ...] = (True, False)
    inits: tuple[str, ...] = ("linear", "seasonal")  # where the highway starts (when on)
    losses: tuple[str, ...] = ("mse", "mae")  # training loss (selection is on the job's fixed metric)


def default_lookbacks(periods: tuple[int, ...], max_lookback: int, horizon: int) -> tuple[int, ...]:
    """Two and four shortest seasons, one and two longest seasons (the longest kept period is
    always reachable when it fits); without a season, two and four horizons."""
    if periods and max(periods) > 1:
        short, long = min(periods), max(periods)
        wanted = {2 * short, 4 * short, long, 2 * long}
    else:
        wanted = {2 * horizon, 4 * horizon}
    return tuple(sorted(lb for lb in wanted if lb <= max_lookback)) or (max_lookback,)


def default_space(periods: tuple[int, ...], max_lookback: int, horizon: int = 24) -> SearchSpace:
    """Lookbacks from `default_lookbacks`; segments of half or one shortest season; the linear
    highway on or off.

    Step-by-step reading (segment 1) is left out for seasonal data: on ETTh1 it
    trained many times slower and ended less accurate at the same budget than
    season-long segments (benchmarks/results/speed.md); pass a space to search it.
    """
    period = min(periods) if periods else 1
    segments = tuple(sorted({max(period // 2, 1), period})) if period >= 8 else (1,)
    return SearchSpace(lookbacks=default_lookbacks(periods, max_lookback, horizon), segments=segments)


def starting_point(space: SearchSpace) -> dict:
    """A sensible first trial inside the space (enqueued into a new study so that even a tiny
    budget has one reasonable configuration): mid-size one-layer model, window standardization,
    the longest segment, the highway on (it starts as the best seasonal naive) and the longest
    lookback up to 7 segments (one week of hourly data)."""
    lookback = [lb for lb in space.lookbacks if lb <= 7 * max(space.segments)] or list(space.lookbacks)
    return {"highway": True in space.highway, "init": space.inits[0], "loss": space.losses[0], **{
        "lookback": max(lookback), "hidden": min(max(64, space.hidden[0]), space.hidden[1]),
        "layers": space.layers[0], "dropout": space.dropout[0],
        "lr": min(max(3e-3, space.lr[0]), space.lr[1]),
        "batch_size": min(space.batch_sizes, key=lambda b: abs(b - 256)),
        "weight_decay": space.weight_decay[0],
        "norm": "standard" if "standard" in space.norms else space.norms[0],
        "segment": max(s for s in space.segments if s <= max(lookback)) if any(
            s <= max(lookback) for s in space.segments) else min(space.segments),
    }}


def study_name(dataset: str, horizon: int, family: str) -> str:
    return f"{dataset}-h{horizon}-{family}"


def default_storage(home: str | Path) -> str:
    """SQLite file beside the MLflow store: `<home>/mlruns/optuna.db` (created by `open_study`)."""
    return f"sqlite:///{Path(home).resolve() / 'mlruns' / 'optuna.db'}"


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


def _sqlite_file(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def open_study(name: str, cfg: TuneConfig, on_stale: StaleHook | None = None) -> optuna.Study:
    """Create the study or load it if it exists (a resumed search, or another worker's).

    An unreadable storage raises one `ForecastingError` naming it and what to do; an empty SQLite
    file is said aloud (a new store is created in it: any earlier history is gone)."""
    path = _sqlite_file(cfg.storage) if cfg.storage else None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if path is not None and path.is_file() and path.stat().st_size == 0:
        print(f"note: Optuna storage {path} is an empty file; a new study store is created in it "
              "(no earlier trials to resume)", file=sys.stderr)
    try:
        storage = make_storage(cfg.storage, cfg, on_stale) if cfg.storage else None
        study = optuna.create_study(
            storage=storage, study_name=name, direction="minimize",
            sampler=_sampler(cfg.seed), pruner=_pruner(cfg.pruner), load_if_exists=True,
        )
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


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict:
    """Draw one configuration from the space."""
    return {
        "lookback": trial.suggest_categorical("lookback", list(space.lookbacks)),
        "hidden": trial.suggest_int("hidden", *space.hidden, log=True),
        "layers": trial.suggest_int("layers", *space.layers),
        "dropout": trial.suggest_float("dropout", *space.dropout),
        "lr": trial.suggest_float("lr", *space.lr, log=True),
        "batch_size": trial.suggest_categorical("batch_size", list(space.batch_sizes)),
        "weight_decay": trial.suggest_float("weight_decay", *space.weight_decay, log=True),
        "norm": trial.suggest_categorical("norm", list(space.norms)),
        "segment": trial.suggest_categorical("segment", list(space.segments)),
        "highway": trial.suggest_categorical("highway", list(space.highway)),
        "init": trial.suggest_categorical("init", list(space.inits)),
        "loss": trial.suggest_categorical("loss", list(space.losses)),
    }


def apply_params(base: ForecasterConfig, params: dict, family: str) -> ForecasterConfig:
    """The forecaster configuration a parameter set stands for."""
    model = replace(
        base.model, cell=family, lookback=params["lookback"], hidden=params["hidden"],
        layers=params["layers"], dropout=params["dropout"], norm=params["norm"],
        segment=min(params["segment"], params["lookback"]), highway=bool(params.get("highway", False)),
        init=params.get("init", base.model.init),
    )
    train = replace(base.train, lr=params["lr"], batch_size=params["batch_size"],
                    weight_decay=params["weight_decay"], loss=params.get("loss", base.train.loss))
    return replace(base, model=model, train=train)


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


class Progress:
    """One line per epoch and per trial: trial k of N, epoch, validation loss, elapsed, remaining."""

    def __init__(self, label: str, total: int, done: int, stream=None):
        self.label, self.total, self.start_done = label, total, done
        self.stream = stream or sys.stderr  # looked up now, not at import: redirections apply
        self.t0 = time.perf_counter()

    def _eta(self, done: int) -> str:
        elapsed = time.perf_counter() - self.t0
        new = done - self.start_done
        left = (elapsed / new) * (self.total - done) if new > 0 else float("nan")
        return f"elapsed {elapsed:5.0f}s, remaining ~{left:4.0f}s" if math.isfinite(left) else f"elapsed {elapsed:5.0f}s"

    def epoch(self, trial: int, done: int, epoch: int, val: float) -> None:
        print(f"[{self.label}] trial {done + 1}/{self.total} (#{trial}) epoch {epoch + 1}: "
              f"val_loss {val:.5f} | {self._eta(done)}", file=self.stream, flush=True)

    def trial(self, t: FrozenTrial, done: int) -> None:
        value = f"{t.value:.5f}" if t.value is not None else "-"
        # Several workers may finish a trial or two past the target at once: count up to it.
        print(f"[{self.label}] trial {min(done, self.total)}/{self.total} (#{t.number}) {t.state.name.lower()} "
              f"val_loss {value} | {self._eta(done)}", file=self.stream, flush=True)


@dataclass
class TuneResult:
    study: optuna.Study
    best_params: dict
    config: ForecasterConfig
    resumed: int = 0  # finished trials the study already held when this search started


@contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Optuna's per-trial INFO lines off (`Progress` prints ours) and its "experimental" warnings
    for the heartbeat API we use knowingly hidden, for the search only: both restored after it."""
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(old)


def _prepared_study(name: str, cfg: TuneConfig, space: SearchSpace, on_stale: StaleHook | None) -> optuna.Study:
    """The study, its dead workers' trials failed and re-queued, the starting point enqueued when new."""
    study = open_study(name, cfg, on_stale)
    if cfg.storage:
        # Optuna looks for trials of dead workers only when it starts a trial: do it now as well,
        # or a study already full would keep them RUNNING (and their MLflow runs) for ever.
        optuna.storages.fail_stale_trials(study)
        fail_dead_local_trials(study, on_stale, cfg.max_retry)
    if not study.get_trials(deepcopy=False):
        study.enqueue_trial(starting_point(space), skip_if_exists=True)
    return study


def _say_reused(bar: Progress, name: str, cfg: TuneConfig, done: int) -> None:
    """A reused study is said aloud, or a search that runs nothing looks like a bug."""
    print(f"[{name}] the study already holds {done} finished trial(s) of {cfg.n_trials}: "
          + (f"running {cfg.n_trials - done} more" if done < cfg.n_trials else "no new trial needed")
          + f" (delete it from {(cfg.storage or 'memory').rsplit('@', 1)[-1]} to search afresh)",
          file=bar.stream, flush=True)


@dataclass
class _Objective:
    """One trial: draw a configuration, fit it with early stopping on validation, report each epoch."""

    study: optuna.Study
    df: pd.DataFrame
    split: Split
    base: ForecasterConfig
    family: str
    cfg: TuneConfig
    space: SearchSpace
    hook: TrialHook | None
    bar: Progress | None

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}-{os.getpid()}")  # many workers share a study
        self._refuse_surplus(trial)
        params = suggest(trial, self.space)
        fcfg = apply_params(self.base, params, self.family)
        fcfg = replace(fcfg, train=replace(fcfg.train, max_epochs=self.cfg.max_epochs))
        trial.set_user_attr("config", fcfg.to_dict())
        with self.hook(trial, params) if self.hook else nullcontext(lambda *a: None) as log_epoch:
            result = Forecaster(fcfg).fit(self.df, self.split, callback=self._on_epoch(trial, log_epoch))
        trial.set_user_attr("train_seconds", result.seconds)
        # A highway that starts as a baseline competes before epoch 0: the value may be that score.
        trial.set_user_attr("start_val_loss", result.start_val_loss)
        return result.best_val_loss

    def _refuse_surplus(self, trial: optuna.Trial) -> None:
        if is_surplus(self.study, trial.number, self.cfg.n_trials):
            trial.set_user_attr("surplus", True)  # no MLflow run: it never trained
            self.study.stop()
            raise SurplusTrialError(f"trial {trial.number}: the study already has {self.cfg.n_trials} trials "
                                    "finished or under way; this worker stops")

    def _on_epoch(self, trial: optuna.Trial, log_epoch: Callable) -> Callable[[int, float, float], None]:
        def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
            if not math.isfinite(val_loss):
                raise DivergedError(f"trial {trial.number} epoch {epoch}: validation loss is {val_loss}")
            log_epoch(epoch, train_loss, val_loss)
            if self.bar:
                self.bar.epoch(trial.number, finished_trials(self.study), epoch, val_loss)
            trial.report(val_loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        return on_epoch

    def report(self, study: optuna.Study, t: FrozenTrial) -> None:
        if self.bar:
            self.bar.trial(t, finished_trials(study))


def tune(df: pd.DataFrame, split: Split, base: ForecasterConfig, family: str, name: str,
         cfg: TuneConfig = TuneConfig(), space: SearchSpace | None = None, trial_hook: TrialHook | None = None,
         progress: bool = True, on_stale: StaleHook | None = None) -> TuneResult:
    """Search until the study holds `cfg.n_trials` finished trials (or `cfg.timeout` passes).

    Validation loss is reported each epoch and the pruner may stop a trial; a
    trial whose loss is NaN or infinite fails alone and the search goes on.
    """
    periods = base.seasons or (base.period,)
    space = space or default_space(periods, 2 * max(periods), base.model.horizon)
    with _optuna_quiet():
        study = _prepared_study(name, cfg, space, on_stale)
        done = finished_trials(study)
        bar = Progress(name, cfg.n_trials, done) if progress else None
        if bar and done:
            _say_reused(bar, name, cfg, done)
        objective = _Objective(study, df, split, base, family, cfg, space, trial_hook, bar)
        if cfg.n_trials > done:
            # MaxTrialsCallback stops every worker once the study holds enough finished trials;
            # the cap bounds a search whose trials keep failing.
            study.optimize(objective, n_trials=cfg.n_trials - done + cfg.max_failures, timeout=cfg.timeout,
                           catch=(DivergedError, SurplusTrialError), gc_after_trial=False,
                           callbacks=[MaxTrialsCallback(cfg.n_trials, states=FINISHED), objective.report])
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise ForecastingError(f"study {name!r}: no trial completed (all failed or were pruned)")
    best = study.best_trial
    return TuneResult(study, dict(best.params), apply_params(base, best.params, family), resumed=done)


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Number, state, value and parameters of every trial."""
    rows = [{"number": t.number, "state": t.state.name, "value": t.value, **t.params}
            for t in study.get_trials(deepcopy=False)]
    return pd.DataFrame(rows)


