"""What a search shows while it runs: a live status line on a terminal, one line per trial elsewhere.

The style comes from `$FORECASTING_PROGRESS` (the command line sets it from `--quiet`/`--verbose`):
  - `quiet`: nothing;
  - `normal` (default): on a terminal, one live line per family (trial k of N, epoch, current and
    best validation loss, pruned and failed counts, elapsed time, time left) above which each
    finished trial leaves one line; elsewhere (CI, log files), only the line per finished trial;
  - `verbose`: also one line per epoch.

The time left is an estimate in epochs, not trials: seconds per epoch (median of the recent ones)
times the epochs still to come, where a trial not yet finished is expected to run as many epochs
as the finished ones did on average (pruning and early stopping end most trials early), or
`max_epochs` before any has finished. It falls within a trial as epochs pass instead of growing.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections import deque

STYLES = ("quiet", "normal", "verbose")
STYLE_ENV = "FORECASTING_PROGRESS"


def style() -> str:
    """The progress style in force ($FORECASTING_PROGRESS; `normal` when unset or unknown)."""
    value = os.environ.get(STYLE_ENV, "normal")
    return value if value in STYLES else "normal"


def duration(seconds: float) -> str:
    """`75` -> `1m15s`; `3725` -> `1h02m`."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Clock:
    """Elapsed time and an estimate of the time left, counted in epochs."""

    def __init__(self, total: int, done: int, max_epochs: int):
        self.total, self.max_epochs, self.t0 = total, max_epochs, time.perf_counter()
        self.last = self.t0  # end of the previous epoch (or trial, or the start)
        self.epoch_seconds: deque[float] = deque(maxlen=20)
        self.trial_epochs: list[int] = []
        self.done, self.current_epochs = done, 0

    def tick_epoch(self, epoch: int) -> None:
        now = time.perf_counter()
        self.epoch_seconds.append(now - self.last)
        self.last, self.current_epochs = now, epoch + 1

    def tick_trial(self, done: int) -> None:
        if self.current_epochs:
            self.trial_epochs.append(self.current_epochs)
        self.done, self.current_epochs, self.last = done, 0, time.perf_counter()

    def left(self) -> float:
        """Seconds left; NaN before the first epoch has been timed."""
        if not self.epoch_seconds:
            return math.nan
        per_trial = statistics.fmean(self.trial_epochs) if self.trial_epochs else self.max_epochs
        trials_left = max(self.total - self.done, 0)
        epochs = max(per_trial - self.current_epochs, 1.0) * bool(trials_left) + max(trials_left - 1, 0) * per_trial
        return statistics.median(self.epoch_seconds) * epochs

    def text(self) -> str:
        elapsed, left = time.perf_counter() - self.t0, self.left()
        return f"{duration(elapsed)} elapsed" + (f", ~{duration(left)} left" if math.isfinite(left) else "")


class SearchProgress:
    """The display of one family's search (see the module docstring); `close()` ends it."""

    def __init__(self, label: str, total: int, done: int, max_epochs: int, best: float | None = None,
                 stream=None, mode: str | None = None):
        self.label, self.total, self.max_epochs = label, total, max_epochs
        self.stream = stream or sys.stderr  # looked up now, not at import: redirections apply
        self.mode = mode or style()
        self.clock = Clock(total, done, max_epochs)
        self.best, self.best_trial = best, None
        self.pruned = self.failed = 0
        self.live = _live(self.stream) if self.mode != "quiet" and _is_terminal(self.stream) else None

    def _counts(self) -> str:
        best = f"best {self.best:.5f}" + (f" (#{self.best_trial})" if self.best_trial is not None else "") \
            if self.best is not None else "best -"
        return f"{best} | {self.pruned} pruned, {self.failed} failed | {self.clock.text()}"

    def epoch(self, trial: int, done: int, epoch: int, val: float) -> None:
        """An epoch of trial `trial` ended with validation loss `val`; `done` trials are finished."""
        self.clock.tick_epoch(epoch)
        line = (f"[{self.label}] trial {min(done + 1, self.total)}/{self.total} (#{trial}) epoch "
                f"{epoch + 1}/{self.max_epochs}: val_loss {val:.5f} | {self._counts()}")
        if self.live is not None:
            from rich.text import Text  # plain text: "[label]" is not rich markup

            self.live.update(Text(line, no_wrap=True, overflow="ellipsis"))
        if self.mode == "verbose":
            self.say(line)

    def trial(self, number: int, state: str, value: float | None, done: int) -> None:
        """Trial `number` finished as `state` ("complete", "pruned", "fail") with `value`."""
        self.clock.tick_trial(done)
        self.pruned += state == "pruned"
        self.failed += state == "fail"
        if state == "complete" and value is not None and (self.best is None or value < self.best):
            self.best, self.best_trial = value, number
        shown = f"{value:.5f}" if value is not None else "-"
        # Several workers may finish a trial or two past the target at once: count up to it.
        self.say(f"[{self.label}] trial {min(done, self.total)}/{self.total} (#{number}) {state} val_loss {shown} "
                 f"| {self._counts()}")

    def say(self, line: str) -> None:
        """A lasting line (above the live one on a terminal); nothing when quiet."""
        if self.mode == "quiet":
            return
        if self.live is not None:
            self.live.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def _live(stream):
    """rich's live display on `stream`, started (one status line that is redrawn in place)."""
    from rich.console import Console
    from rich.live import Live

    live = Live("", console=Console(file=stream), transient=True, refresh_per_second=4, auto_refresh=True)
    live.start()
    return live
