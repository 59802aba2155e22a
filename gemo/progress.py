"""Where gemo's output goes, and the progress display shared by every long loop.

Two consoles, one rule: ``results`` (stdout) gets what the user asked for
(tables, JSON, paths of written files); ``console`` (stderr) gets progress,
logs, warnings and errors. So ``gemo info > caches.txt`` holds the table, and
a log of stderr holds the progress.

On a terminal progress shows as rich bars with items per second. Elsewhere (a
log file, a pipe) a bar would only be drawn once, at the end, 80 columns wide;
there progress is written as plain lines instead: one each ``every`` items
(default: every 10%) or :data:`PLAIN_SECONDS` seconds, whichever comes first,
and one when the task ends.
"""

import os
import sys
import time
from contextlib import contextmanager, nullcontext
from datetime import timedelta

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)  # progress, logs, warnings, errors
# What the user asked for. Written to a file, tables get room for whole model names (rich
# would take 80 columns and fold them); $COLUMNS still decides where it is set.
FILE_WIDTH = 160
results = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else FILE_WIDTH)

PLAIN_SECONDS = 30.0  # at least one line this often in a log file, however slow the task


class _Rate(ProgressColumn):
    def __init__(self, unit):
        super().__init__()
        self.unit = unit

    def render(self, task):
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", self.unit)
        return Text(f"{speed:.1f} {unit}/s" if speed else f"- {unit}/s", style="cyan")


def log(message):
    """One plain line on stderr, never wrapped (log files are read by grep too)."""
    console.print(message, soft_wrap=True, markup=False, highlight=False)


class ProgressDisplay:
    """Progress of one or more tasks (a task per fold model, say); see the module docstring.

    >>> with ProgressDisplay(enabled=False) as display:
    ...     task = display.task("frames", 3)
    ...     for _ in range(3):
    ...         task.update(advance=1)
    ...     task.finish()
    """

    def __init__(self, *, enabled=True):
        self.enabled = enabled
        self._bars = None
        self._tasks = []

    def __enter__(self):
        if self.enabled and console.is_terminal:
            self._bars = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(bar_width=30),
                MofNCompleteColumn(), _Rate("clips"), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(), TextColumn("{task.fields[status]}"), console=console)
            self._bars.__enter__()
        return self

    def __exit__(self, *exc):
        for task in self._tasks:
            task.finish()
        if self._bars is not None:
            self._bars.__exit__(*exc)

    def task(self, description, total=None, *, unit="clips", every=None):
        """A :class:`Task` of ``total`` ``unit`` (None: not known yet); a plain line each
        ``every`` of them (default: each 10% of ``total``)."""
        task = Task(self, description, total, unit, every)
        self._tasks.append(task)
        return task


class Task:
    """One line of a :class:`ProgressDisplay`: a bar on a terminal, log lines elsewhere."""

    def __init__(self, display, description, total, unit, every):
        self.display, self.description, self.unit = display, description, unit
        self.total, self.completed, self.status = total, 0, ""
        self._every = every
        self._started = self._logged_at = time.monotonic()
        self._logged = 0  # completed count at the last plain line
        self._finished = not display.enabled
        self._id = None
        if display._bars is not None:
            self._id = display._bars.add_task(description, total=total, status="", unit=unit)

    def update(self, *, advance=0, completed=None, total=None, status=None):
        """Move on by ``advance`` or to ``completed``; ``total`` and ``status`` replace theirs."""
        if self._finished:
            return
        self.completed = self.completed + advance if completed is None else completed
        self.total = self.total if total is None else total
        self.status = self.status if status is None else status
        if self._id is not None:
            self.display._bars.update(self._id, completed=self.completed, total=self.total,
                                      status=self.status)
        elif self._plain_line_due():
            self._log()

    def finish(self, *, completed=None, total=None, status=None):
        """The final state; in a log file its line (with the rate and time taken)."""
        self.update(completed=completed, total=total, status=status)
        if not self._finished and self._id is None:
            self._log(final=True)
        self._finished = True

    def _plain_line_due(self):
        if self.total is not None and self.completed >= self.total:
            return False  # the final line says it
        every = self._every or (max(1, -(-self.total // 10)) if self.total else None)
        crossed = every is not None and self.completed // every > self._logged // every
        return crossed or time.monotonic() - self._logged_at >= PLAIN_SECONDS

    def _log(self, *, final=False):
        elapsed = time.monotonic() - self._started
        rate = self.completed / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.completed}/{self.total} {self.unit} "
                 f"({100 * self.completed / self.total:.0f}%)" if self.total
                 else f"{self.completed} {self.unit}",
                 f"{rate:.1f} {self.unit}/s", f"{_clock(elapsed)} elapsed"]
        if not final and self.total and rate > 0:
            parts.append(f"eta {_clock((self.total - self.completed) / rate)}")
        if self.status:
            parts.append(self.status)
        log(f"{self.description}: {', '.join(parts)}")
        self._logged, self._logged_at = self.completed, time.monotonic()


def _clock(seconds):
    return str(timedelta(seconds=round(seconds)))


@contextmanager
def progress_bar(description, total, *, unit="clips", enabled=True):
    """Yield ``advance(n=1, *, status="", total=None)`` for one task; shows nothing when disabled.

    ``total`` may be None at first and given later through ``advance``.

    >>> with progress_bar("frames", 3, enabled=False) as advance:
    ...     for _ in range(3):
    ...         advance()
    """
    with ProgressDisplay(enabled=enabled) as display:
        task = display.task(description, total, unit=unit)
        yield lambda n=1, *, status="", total=None: task.update(advance=n, status=status,
                                                                total=total)


def status(message, *, enabled=True):
    """A spinner with ``message`` while a step runs; in a log file the message once."""
    if not enabled:
        return nullcontext()
    if console.is_terminal:
        return console.status(message)
    log(f"{message} ...")
    return nullcontext()
