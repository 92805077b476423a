"""What a search shows: one line per finished trial when the output is not a terminal, per epoch
as well when verbose, nothing when quiet; a live line on a terminal; a time-left estimate that
falls within a trial instead of growing."""

from __future__ import annotations

import io
import re

import pytest

from forecasting.core.data import split_fractions
from forecasting.tuning import progress
from forecasting.tuning.objective import tune
from forecasting.tuning.progress import Clock, SearchProgress, duration
from forecasting.tuning.study import TuneConfig, study_name
from tests.conftest import sine_frame
from tests.test_tuning import SPACE, base_config

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(scope="module")
def data():
    df = sine_frame(n_series=2, length=300, noise=0.2, seed=0)
    return df, split_fractions(df.groupby("unique_id", sort=False).size(), 0.1, 0.2)


def _search(data, mode: str, monkeypatch) -> list[str]:
    """A 3-trial, 2-epoch search with its progress written to a (non-terminal) buffer."""
    out = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", out)
    monkeypatch.setenv(progress.STYLE_ENV, mode)
    df, split = data
    cfg = TuneConfig(n_trials=3, max_epochs=2, pruner="none")
    tune(df, split, base_config(), "gru", study_name("toy", 12, "gru"), cfg, SPACE)
    return out.getvalue().splitlines()


@pytest.mark.slow
def test_not_a_terminal_one_line_per_trial_and_per_epoch_only_when_verbose(data, monkeypatch):
    lines = _search(data, "normal", monkeypatch)
    assert len(lines) == 3, lines
    for k, line in enumerate(lines, 1):
        assert re.match(rf"\[toy-h12-gru\] trial {k}/3 \(#{k - 1}\) complete val_loss \d\.\d{{5}} \| best "
                        r"\d\.\d{5} \(#\d\) \| 0 pruned, 0 failed \| \d+s elapsed", line), line
    assert lines[0].endswith(" left") and lines[-1].endswith("~0s left")
    verbose = _search(data, "verbose", monkeypatch)
    epochs = [ln for ln in verbose if " epoch " in ln]
    assert len(epochs) >= 3 and len(verbose) - len(epochs) == 3  # every trial ran at least one epoch
    assert _search(data, "quiet", monkeypatch) == []


def test_the_best_so_far_is_the_lowest_completed_value_and_counts_add_up():
    out = io.StringIO()
    bar = SearchProgress("s", total=4, done=0, max_epochs=2, stream=out, mode="normal")
    bar.trial(0, "complete", 0.5, 1)
    bar.trial(1, "pruned", 0.1, 2)  # a pruned trial's last value is not a result
    bar.trial(2, "complete", 0.3, 3)
    bar.trial(3, "fail", None, 4)
    last = out.getvalue().splitlines()[-1]
    assert "trial 4/4 (#3) fail val_loss - | best 0.30000 (#2) | 1 pruned, 1 failed" in last


def test_time_left_falls_within_a_trial_and_follows_the_epochs_trials_really_run(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    clock = Clock(total=3, done=0, max_epochs=4)
    lefts = []
    for epoch in range(2):  # trial 0: 1 s per epoch, then pruned after 2 epochs
        now[0] += 1.0
        clock.tick_epoch(epoch)
        lefts.append(clock.left())
    # 4 epochs expected per trial before any finished: 2 (then 1) more of this one, 8 of the next two
    assert lefts == [11.0, 10.0]
    clock.tick_trial(1)
    assert clock.left() == 4.0  # trials now last 2 epochs: 2 trials x 2 epochs x 1 s
    now[0] += 3.0  # a slower epoch: the median of (1, 1, 3) stays 1 s
    clock.tick_epoch(0)
    assert clock.left() == 3.0  # 1 epoch left of this trial + 2 of the last, at 1 s each


def test_durations_read_as_a_person_would_write_them():
    assert [duration(s) for s in (5, 75, 3725)] == ["5s", "1m15s", "1h02m"]


def test_a_terminal_gets_a_live_line_that_is_not_left_behind(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    out = Terminal()
    bar = SearchProgress("[s]", total=2, done=0, max_epochs=2, stream=out, mode="normal")
    assert bar.live is not None
    bar.epoch(0, 0, 0, 0.25)
    bar.trial(0, "complete", 0.25, 1)
    bar.close()
    text = out.getvalue()
    assert "trial 1/2 (#0) complete val_loss 0.25000" in text  # the lasting line, markup left alone
    assert bar.live is None
