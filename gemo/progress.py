"""Progress bars shared by every long loop (rich), with items per second."""

from contextlib import contextmanager

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

console = Console(stderr=True)


class _Rate(ProgressColumn):
    def __init__(self, unit):
        super().__init__()
        self.unit = unit

    def render(self, task):
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="cyan")


@contextmanager
def progress_bar(description, total, *, unit="clips", enabled=True):
    """Yield ``advance(n=1, *, status="", total=None)``; draws nothing when disabled.

    ``total`` may be None at first and given later through ``advance``.

    >>> with progress_bar("frames", 3, enabled=False) as advance:
    ...     for _ in range(3):
    ...         advance()
    """
    if not enabled:
        yield lambda n=1, *, status="", total=None: None
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    ]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total, status="")

        def advance(n=1, *, status="", total=None):
            bar.update(task, advance=n, status=status, total=total)

        yield advance
