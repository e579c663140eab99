"""One process at a time per run or study folder.

The lock is `DIR/.reglab.lock`, held with flock(2) and naming its holder (host, PID, command). The kernel
releases a flock when its process dies however it dies, so a lock left by a killed process is simply taken
over. After locking, the file is checked to still be the one at that path (another process may have removed
it on release in between), and it is removed on release.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
from pathlib import Path

from .errors import UserError
from .provenance import command_line
from .readfile import damaged, read_own_text

NAME = ".reglab.lock"

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; reglab runs there without this protection
    fcntl = None


INFO_BYTES = 64 << 10  # host, PID and command line


def _holder(path: Path) -> str:
    try:
        info = json.loads(read_own_text(path, INFO_BYTES, ""))
        return f"PID {info['pid']} on {info['host']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError, RecursionError, UserError):
        return "another process"


def _check_lock_file(fd: int, path: Path) -> None:
    """A FIFO or a device in the lock's place is no lock reglab made (and could not hold the holder's name)."""
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise damaged(path, "it is not a regular file", "delete it; reglab makes it again")


def check_free(folder: Path, what: str) -> None:
    """Refuse early (before any work) when a live process holds the folder; takes nothing."""
    path = Path(folder) / NAME
    if fcntl is None or not path.exists():
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not wait for a writer
    except OSError:
        return
    _check_lock_file(fd, path)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(f"{what} {folder} is in use by {_holder(path)}; wait for it to finish or stop it") from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold(folder: Path, what: str = "folder"):
    """Hold the folder's lock for the duration; UserError (one line, naming the holder) if it is taken."""
    folder = Path(folder)
    if fcntl is None:
        yield
        return
    path = folder / NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{what} {folder} cannot be created ({e.strerror or e}); choose another folder") from None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o644)
        except OSError as e:  # a folder in its place, a read-only lock file
            if not os.path.lexists(path):
                raise
            raise damaged(path, f"cannot be opened: {e.strerror or e}", "delete it; reglab makes it again") from None
        _check_lock_file(fd, path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"{what} {folder} is in use by {_holder(path)}; wait for it to finish or stop it") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed it as we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "command": command_line()}).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
