"""Stopping cleanly on SIGINT, SIGTERM and SIGHUP, in every phase.

Outside the training loop a signal raises `Stopped` where the program is: `finally` blocks and context managers
run (temporary files are removed, worker pools terminated) and the CLI prints one line and exits 128 + the
signal number. Inside `graceful()` (the training and evaluation loops) a first signal only sets `requested`,
so the loop can stop at the next step boundary and say how to resume; a second signal raises at once.

`phase(name)` names what the program is doing for that one line. For tests only, the environment variable
REGLAB_TEST_PAUSE_AT=<name> makes the phase of that name wait (up to a minute) for a signal, so a test can
interrupt a phase that would otherwise be over before the signal arrives. It is read once, when this module is
imported (a test sets it for the process it starts): a pause point inside a training loop costs a comparison.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)
PAUSE_ENV = "REGLAB_TEST_PAUSE_AT"

requested = 0  # the signal number a graceful region has been asked to stop by (0: none)
_pause_at = os.environ.get(PAUSE_ENV)
_graceful_depth = 0
_phases: list[str] = []


class Stopped(BaseException):
    """A signal arrived outside a graceful region. BaseException, like KeyboardInterrupt: no `except Exception`
    may swallow it."""

    def __init__(self, signum: int, phase: str = ""):
        self.signum, self.phase = signum, phase
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}" + (f" while {phase}" if phase else ""))


def current_phase() -> str:
    return _phases[-1] if _phases else ""


def _handle(signum, frame):
    global requested
    if _graceful_depth and not requested:
        requested = signum
        return
    raise Stopped(signum, current_phase())


@contextlib.contextmanager
def handled():
    """Install the handlers for the duration (main thread only; elsewhere, e.g. in a Ray worker thread, the
    process's own handling stays)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handle)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def graceful():
    """Within: a first signal sets `requested` (check it between steps); a second one raises Stopped."""
    global _graceful_depth, requested
    with handled():
        _graceful_depth += 1
        if _graceful_depth == 1:
            requested = 0
        try:
            yield
        finally:
            _graceful_depth -= 1
            if _graceful_depth == 0:
                requested = 0


@contextlib.contextmanager
def phase(name: str, key: str = ""):
    """Name what the program is doing (for the one-line message when a signal stops it)."""
    _phases.append(name)
    try:
        if key and _pause_at == key:
            _pause(key)
        yield
    finally:
        _phases.pop()


def pause_point(key: str) -> None:
    """A place inside a loop where a test may ask to wait for a signal (see the module docstring)."""
    if _pause_at == key:
        _pause(key)


def _pause(key: str) -> None:
    print(f"reglab-test: paused at {key} (pid {os.getpid()})", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 60
    while not requested and time.monotonic() < deadline:
        time.sleep(0.02)


def ignore_in_worker() -> None:
    """Initializer of worker processes: the parent decides when they stop (it terminates them), so a Ctrl-C
    sent to the whole process group does not print a traceback from every worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for s in SIGNALS:
        if s != signal.SIGINT:
            signal.signal(s, signal.SIG_DFL)
