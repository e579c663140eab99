"""Progress bars on stderr when it is a terminal, silence elsewhere (logs, CI, pipes, --quiet).

One live display at a time: a study opens it and shows its own bar (runs done of total, elapsed, remaining);
the runs inside it add their epoch and evaluation bars to the same display, below the study's.
"""

from __future__ import annotations

import contextlib
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .text import visible

console = Console(stderr=True)
_active: Progress | None = None


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
    """Yields an object with rich.Progress's add_task/advance/update/remove_task; a no-op off a terminal.
    Inside another progress() the same display is shared (tasks added here are removed on exit)."""
    global _active
    if not (enabled and interactive()):
        yield _Silent()
        return
    if _active is not None:
        tasks_before = set(_active.task_ids)
        try:
            yield _active
        finally:
            for task in set(_active.task_ids) - tasks_before:
                _active.remove_task(task)
        return
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
        redirect_stdout=False, redirect_stderr=False,  # stdout stays stdout (`> out.txt` gets the results)
    )
    _active = bar
    try:
        with bar:
            yield bar
    finally:
        _active = None


def echo(text: str, quiet: bool = False) -> None:
    """A result or status line on stdout (kept clear of the bars on stderr); nothing when quiet."""
    if quiet:
        return
    # the caller's line breaks stay; a control character from a path or name is shown, never obeyed
    text = "\n".join(visible(line) for line in str(text).split("\n"))
    if _active is not None and sys.stdout.isatty():  # the same terminal as the bars: print above them
        _active.console.print(text, markup=False, highlight=False, soft_wrap=True)
    else:
        print(text, flush=True)
