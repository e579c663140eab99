"""Stopping cleanly on SIGINT, SIGTERM and SIGHUP, in every phase.

One mechanism: every signal is recorded in `requested` until the command ends, and is then either raised at
once or deferred, and a deferred one is always honoured (`Stopped`) at the next edge of a phase: the entry and
end of every `phase()`, `graceful()` and `held()` region, every atomic write before it commits (atomic.py), and
the end of the command (cli.py). Nothing swallows a signal: one deferred, or caught by a library on its way up
(an `except BaseException`, an import that falls back), is raised again at that next edge. Once an exception
leaves a phase or region while a signal is pending, that exception is the stop: the cleanup's own writes on its
way out (a study's study.json, an interrupted run's summary) are not stopped again for the same signal.

- Outside any region a signal raises `Stopped` where the program is: `finally` blocks and context managers run
  (temporary files are removed, worker pools terminated) and the CLI prints one line and exits 128 + the signal
  number. Where raising would be swallowed or printed as a traceback (inside an import, where Python would also
  leave a module half-imported, or a `__del__`), it is deferred instead, and sent again every REDELIVER_S until
  it lands outside (or an edge honours it first).
- Inside `graceful()` (the training and evaluation loops) a first signal only sets `requested`, so the loop can
  stop at the next step boundary and say how to resume; a second signal raises at once.
- Inside `held()` (writes that must finish together: a run's final files, an interrupted run's summaries, a
  report's pages) every signal is deferred to the region's end.

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
REDELIVER_S = 0.05  # how soon a signal that arrived inside an import is tried again

requested = 0  # the first signal this command received (0: none); loops check it to stop at a step boundary
_pause_at = os.environ.get(PAUSE_ENV)
_handled_depth = 0
_graceful_depth = 0
_held_depth = 0
_redelivering = 0  # the signal a helper thread is about to send again (0: none)
_honoured = False  # the stop `requested` asks for is under way: an exception is unwinding for it
_phases: list[str] = []


class Stopped(BaseException):
    """A signal arrived outside a graceful region. BaseException, like KeyboardInterrupt: no `except Exception`
    may swallow it."""

    def __init__(self, signum: int, phase: str = ""):
        self.signum, self.phase = signum, phase
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal_name(signum)}" + (f" while {phase}" if phase else ""))


def current_phase() -> str:
    return _phases[-1] if _phases else ""


def _handle(signum, frame):
    global requested, _redelivering, _honoured
    _redelivering, _honoured = 0, False  # a new signal is honoured even if an earlier one already is
    first, requested = not requested, requested or signum
    if _held_depth or (_graceful_depth and first):
        return  # deferred: honoured at the region's end
    if _fragile(frame):
        _redeliver(signum)  # deferred until the import or finalizer is over, not until the next edge
        return
    raise Stopped(signum, current_phase())


def _redeliver(signum: int) -> None:
    """Send the signal again shortly, from a helper thread, unless something honoured it meanwhile or the command
    that received it is over."""
    global _redelivering
    _redelivering = signum

    def again():
        if _handled_depth and _redelivering == signum:
            os.kill(os.getpid(), signum)

    timer = threading.Timer(REDELIVER_S, again)
    timer.daemon = True
    timer.start()


def _fragile(frame) -> bool:
    """Whether an exception raised here would be lost or printed as a traceback: inside an import (a library may
    catch it as a failed optional import; the module would be left half-imported) or a finalizer."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def honour() -> None:
    """Raise Stopped for a signal received and not yet acted on; inside graceful() or held(), whose end does it,
    nothing; nor while the stop it asked for is already unwinding (its cleanup writes its files)."""
    global _redelivering
    if requested and not _honoured and not (_graceful_depth or _held_depth):
        _redelivering = 0
        raise Stopped(requested, current_phase())


def _unwinding() -> None:
    """An exception leaves a phase or a region while a signal is pending: that exception is the stop the signal
    asked for, and the writes of the cleanup on its way (a study's study.json, a run's summary) are not stopped
    again for it. One that a library swallowed instead leaves its phase normally, and is honoured there."""
    global _honoured
    _honoured = _honoured or bool(requested)


@contextlib.contextmanager
def handled():
    """Install the handlers for the duration (main thread only; elsewhere, e.g. in a Ray worker thread, the
    process's own handling stays). The outermost one is a command: what it received is forgotten at its ends."""
    global _handled_depth, requested, _redelivering, _honoured
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handle)
    _handled_depth += 1
    requested = 0 if _handled_depth == 1 else requested
    try:
        yield
    finally:
        _handled_depth -= 1
        requested = 0 if _handled_depth == 0 else requested
        _redelivering = 0 if _handled_depth == 0 else _redelivering
        _honoured = False if _handled_depth == 0 else _honoured
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def graceful():
    """Within: a first signal sets `requested` (check it between steps); a second one raises Stopped. One that
    arrived before, or after the loop's last check, is honoured at the edges."""
    global _graceful_depth
    with handled():
        honour()
        _graceful_depth += 1
        try:
            yield
        except BaseException:
            _unwinding()
            raise
        finally:
            _graceful_depth -= 1
        honour()


@contextlib.contextmanager
def held(honour_at_end: bool = True):
    """Within: every signal is deferred, so the writes inside finish together; it is honoured (Stopped) when the
    region ends, unless the region ends by an exception, or `honour_at_end` is False (the writes that record a
    stop already under way). Loops inside still see `requested` and stop early."""
    global _held_depth
    with handled():
        _held_depth += 1
        try:
            yield
        except BaseException:
            _unwinding()
            raise
        finally:
            _held_depth -= 1
        if honour_at_end:
            honour()


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


@contextlib.contextmanager
def phase(name: str, key: str = ""):
    """Name what the program is doing (for the one-line message when a signal stops it); a deferred signal is
    honoured as the phase begins and as it ends."""
    honour()
    _phases.append(name)
    try:
        if key and _pause_at == key:
            _pause(key)
        yield
        honour()
    except BaseException:
        _unwinding()
        raise
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
