"""One family's search: draw a configuration, fit it with early stopping, report each epoch,
prune; the study comes from `study.py`, the space from `space.py`."""

from __future__ import annotations

import logging
import math
import os
import socket
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace

import optuna
import pandas as pd
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from forecasting.api.fitcache import FitCache
from forecasting.api.forecaster import Forecaster, ForecasterConfig
from forecasting.api.jobs import TuneConfig
from forecasting.core.data import Split
from forecasting.core.errors import DivergedError, ForecastingError, SurplusTrialError
from forecasting.families import Choice, IntRange, Param
from forecasting.tuning.progress import SearchProgress
from forecasting.tuning.space import SearchSpace, apply_params, default_space, starting_point
from forecasting.tuning.study import (
    FINISHED,
    StaleHook,
    fail_dead_local_trials,
    finished_trials,
    is_surplus,
    open_study,
)

EpochLogger = Callable[[int, float, float], None]
# A trial hook opens a context around one trial (an MLflow nested run, say) and
# yields the per-epoch logger; on exit it learns the trial's outcome.
TrialHook = Callable[[optuna.Trial, dict], AbstractContextManager[EpochLogger]]


def _draw(trial: optuna.Trial, name: str, p: Param):
    if isinstance(p, Choice):
        return trial.suggest_categorical(name, list(p.values))
    if isinstance(p, IntRange):
        return trial.suggest_int(name, p.low, p.high, log=p.log)
    return trial.suggest_float(name, p.low, p.high, log=p.log)


def suggest(trial: optuna.Trial, space: SearchSpace, family: str) -> dict:
    """Draw one configuration of `family` from the space (shared ranges and the family's own)."""
    return {name: _draw(trial, name, p) for name, p in space.params(family).items()}


@dataclass
class TuneResult:
    study: optuna.Study
    best_params: dict
    config: ForecasterConfig
    resumed: int = 0  # finished trials the study already held when this search started


@contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Optuna's per-trial INFO lines off (`Progress` prints ours), its "experimental" warnings for
    the heartbeat API we use knowingly hidden, and its traceback of a trial stopped by Ctrl-C dropped
    (the command says "interrupted"), for the search only: all restored after it."""
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # On the handlers: a logger's own filters do not see records its children (optuna._optimize) log.
    handlers = logging.getLogger("optuna").handlers
    for h in handlers:
        h.addFilter(_not_interrupted)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        for h in handlers:
            h.removeFilter(_not_interrupted)
        optuna.logging.set_verbosity(old)


def _not_interrupted(record: logging.LogRecord) -> bool:
    """False for Optuna's record of a trial that failed because the user pressed Ctrl-C."""
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, KeyboardInterrupt) and "KeyboardInterrupt" not in record.getMessage()


def _prepared_study(name: str, cfg: TuneConfig, space: SearchSpace, family: str, on_stale: StaleHook | None
                    ) -> optuna.Study:
    """The study, its dead workers' trials failed and re-queued, the starting point enqueued when new."""
    study = open_study(name, cfg, on_stale)
    if cfg.storage:
        # Optuna looks for trials of dead workers only when it starts a trial: do it now as well,
        # or a study already full would keep them RUNNING (and their MLflow runs) for ever.
        optuna.storages.fail_stale_trials(study)
        fail_dead_local_trials(study, on_stale, cfg.max_retry)
    if not study.get_trials(deepcopy=False):
        study.enqueue_trial(starting_point(space, family), skip_if_exists=True)
    return study


def _say_reused(bar: SearchProgress, name: str, cfg: TuneConfig, done: int) -> None:
    """A reused study is said aloud, or a search that runs nothing looks like a bug."""
    bar.say(f"[{name}] the study already holds {done} finished trial(s) of {cfg.n_trials}: "
            + (f"running {cfg.n_trials - done} more" if done < cfg.n_trials else "no new trial needed")
            + f" (delete it from {(cfg.storage or 'memory').rsplit('@', 1)[-1]} to search afresh)")


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
    bar: SearchProgress | None
    cache: FitCache | None = None  # where each finished trial's forecaster is kept for the refit

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}-{os.getpid()}")  # many workers share a study
        self._refuse_surplus(trial)
        params = suggest(trial, self.space, self.family)
        fcfg = apply_params(self.base, params, self.family)
        fcfg = replace(fcfg, train=replace(fcfg.train, max_epochs=self.cfg.max_epochs))
        trial.set_user_attr("config", fcfg.to_dict())
        f = Forecaster(fcfg)
        with self.hook(trial, params) if self.hook else nullcontext(lambda *a: None) as log_epoch:
            try:
                result = f.fit(self.df, self.split, callback=self._on_epoch(trial, log_epoch))
            except (optuna.TrialPruned, DivergedError) as e:
                # A pruned or diverged trial trained too: its seconds count in the study's cost.
                trial.set_user_attr("train_seconds", getattr(e, "fit_seconds", 0.0))
                raise
        if self.cache:  # a pruned or failed trial raised above: only finished fits are kept
            self.cache.save(self.cache.key(fcfg, self.split), f)
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
            self.bar.trial(t.number, t.state.name.lower(), t.value, finished_trials(study))


def tune(df: pd.DataFrame, split: Split, base: ForecasterConfig, family: str, name: str,
         cfg: TuneConfig = TuneConfig(), space: SearchSpace | None = None, trial_hook: TrialHook | None = None,
         progress: bool = True, on_stale: StaleHook | None = None, cache: FitCache | None = None) -> TuneResult:
    """Search until the study holds `cfg.n_trials` finished trials (or `cfg.timeout` passes).
    With `cache`, every finished trial's forecaster is kept there for a refit to load.

    Validation loss is reported each epoch and the pruner may stop a trial; a
    trial whose loss is NaN or infinite fails alone and the search goes on.
    """
    periods = base.seasons or (base.period,)
    space = space or default_space(periods, 2 * max(periods), base.model.horizon)
    with _optuna_quiet():
        study = _prepared_study(name, cfg, space, family, on_stale)
        done = finished_trials(study)
        bar = SearchProgress(name, cfg.n_trials, done, cfg.max_epochs, _best_value(study)) if progress else None
        if bar and done:
            _say_reused(bar, name, cfg, done)
        objective = _Objective(study, df, split, base, family, cfg, space, trial_hook, bar, cache)
        try:
            if cfg.n_trials > done:
                # MaxTrialsCallback stops every worker once the study holds enough finished trials;
                # the cap bounds a search whose trials keep failing.
                study.optimize(objective, n_trials=cfg.n_trials - done + cfg.max_failures, timeout=cfg.timeout,
                               catch=(DivergedError, SurplusTrialError), gc_after_trial=False,
                               callbacks=[MaxTrialsCallback(cfg.n_trials, states=FINISHED), objective.report])
        finally:
            if bar:
                bar.close()
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise ForecastingError(f"study {name!r}: no trial completed (all failed or were pruned)")
    best = study.best_trial
    return TuneResult(study, dict(best.params), apply_params(base, best.params, family), resumed=done)


def _best_value(study: optuna.Study) -> float | None:
    """The best finished trial's value so far (a resumed study has one), else None."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(t.value for t in complete) if complete else None


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Number, state, value and parameters of every trial."""
    rows = [{"number": t.number, "state": t.state.name, "value": t.value, **t.params}
            for t in study.get_trials(deepcopy=False)]
    return pd.DataFrame(rows)


