"""What a search leaves in MLflow: one nested run per Optuna trial, stale trials' runs closed,
and the study's plots and trials table on the parent run (imports optuna)."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from mlflow import MlflowClient

from forecasting.tracking.runs import MetricQueue, end_run, log_table, log_values, start_run
from forecasting.tuning.objective import trials_frame


class TrialLogger:
    """Optuna trial hook: one nested MLflow run per trial with params, per-epoch losses and state."""

    def __init__(self, experiment_id: str, parent_run_id: str, family: str):
        self.experiment_id, self.parent_run_id, self.family = experiment_id, parent_run_id, family

    @contextmanager
    def __call__(self, trial: optuna.Trial, params: dict) -> Iterator:
        run_id = start_run(
            self.experiment_id, f"{self.family}-trial-{trial.number}", self.parent_run_id,
            tags={"kind": "trial", "family": self.family, "optuna.study": trial.study.study_name,
                  "optuna.trial": trial.number},
        )
        trial.set_user_attr("mlflow_run_id", run_id)
        log_values(run_id, params=params)

        epochs = MetricQueue(run_id)  # written off the training thread

        def log_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
            epochs.put({"train_loss": train_loss, "val_loss": val_loss}, epoch)

        state, status = "complete", "FINISHED"
        try:
            yield log_epoch
        except optuna.TrialPruned:
            state = "pruned"
            raise
        except BaseException as exc:
            state, status = "failed", "FAILED"
            log_values(run_id, tags={"error": f"{type(exc).__name__}: {exc}"[:500]})
            raise
        finally:
            lost = epochs.close()
            log_values(run_id, tags={"state": state} | ({"epoch_metrics_error": repr(lost)[:500]} if lost else {}))
            end_run(run_id, status)


def close_stale_trial_run(study: optuna.Study, trial) -> None:
    """Stale-trial hook: the trial's worker died, so end its MLflow run as KILLED (the retry gets a
    run of its own under its new trial number)."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        log_values(run_id, tags={"state": "failed", "error": "worker stopped sending heartbeats"})
        end_run(run_id, "KILLED")


@contextmanager
def _agg_backend() -> Iterator[None]:
    """Matplotlib's file-only backend while Optuna draws with pyplot (no display on servers), the
    process's own backend restored after it."""
    import matplotlib.pyplot as plt

    old = plt.get_backend()
    plt.switch_backend("Agg")
    try:
        yield
    finally:
        if old.lower() != "agg":
            try:
                plt.switch_backend(old)
            except ImportError:  # an interactive backend that cannot start here
                pass


def log_study_plots(run_id: str, study: optuna.Study, stem: str) -> list[str]:
    """Optuna optimization history and parameter importances as PNG artifacts (skipped when the
    study is too small for them); returns the names logged."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    logged = []
    with _agg_backend(), warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # Optuna's plots are "experimental"
        for kind, plot in (("history", ovm.plot_optimization_history), ("importance", ovm.plot_param_importances)):
            try:
                ax = plot(study)
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                path = Path(tmp) / f"{stem}_optuna_{kind}.png"
                fig.set_size_inches(8, 4.5)
                fig.tight_layout()
                fig.savefig(path, dpi=90)
                plt.close(fig)
                MlflowClient().log_artifact(run_id, str(path), "optuna")
                logged.append(path.name)
            except (ValueError, RuntimeError, ZeroDivisionError):  # too few completed trials
                plt.close("all")
    return logged


def log_search(parent_run_id: str, study: optuna.Study, family: str) -> None:
    """The study's optimization-history and importance plots and its trials table, on the parent run."""
    log_study_plots(parent_run_id, study, family)
    log_table(parent_run_id, trials_frame(study), f"{family}_trials")
