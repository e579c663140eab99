"""Progress bars on a terminal, silence elsewhere (logs, CI, pipes)."""

from __future__ import annotations

import contextlib
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_console = Console(stderr=True)


def interactive() -> bool:
    return sys.stderr.isatty()


class _Silent:
    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def advance(self, *a, **k):
        pass

    def remove_task(self, *a, **k):
        pass


@contextlib.contextmanager
def progress(enabled: bool = True):
    """Yields an object with rich.Progress's add_task/advance/update; a no-op off a terminal."""
    if not (enabled and interactive()):
        yield _Silent()
        return
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=_console, transient=True,
    )
    with bar:
        yield bar
