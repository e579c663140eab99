"""Reading a file without trusting what it is: only a regular file, and only up to a bound.

    data = read_bytes(path, limit, what)      # bytes, or a UserError naming the path and what to do
    text = read_text(path, limit, what)       # the same, decoded as UTF-8

A path a user gives (a --config, an image to predict, a file in a data folder) can name a FIFO, which blocks the
reader until somebody writes to it, a device such as /dev/zero, which never ends, or a file far larger than its
kind can be. The file is opened without blocking, checked to be a regular file on the open descriptor (no race
with a rename between the check and the read), and read to at most `limit` bytes: every such case is one line.
`regular_file_error(path)` is the same check for readers that open the file themselves (Pillow).

Files reglab wrote itself (a run's config.yaml, summary.json, a checkpoint, study.json) are input too when read
back: a folder can be damaged, edited, copied or half-written. `read_own_bytes` / `read_own_text` are the same
reads for them, and every damage is the one line `damaged(path, what, todo)` makes: `{path} is damaged ({what});
{todo}`, where `todo` is what the file's own reader knows to do about it. An absent file is FileNotFoundError:
whether absence is damage is the caller's to say.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import UserError
from .text import show


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def regular_file_error(path: str | Path) -> str | None:
    """Why `path` cannot be read as a file ("a FIFO (named pipe)", "no such file", ...), or None if it can."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as e:
        return e.strerror or type(e).__name__
    return None if stat.S_ISREG(mode) else _kind(mode)


def read_head(path: str | Path, size: int) -> bytes:
    """The first `size` bytes of the regular file `path`; b"" for anything else (absent, a FIFO, unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read(size) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
        except OSError:
            return b""


def read_bytes(path: str | Path, limit: int, what: str) -> bytes:
    """The whole of the regular file `path`, at most `limit` bytes; `what` names it in the one-line refusal."""
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UserError(f"{what} {show(path)} not found; check the path") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {show(path)}: {e.strerror or e}; check the path") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UserError(f"{what} {show(path)} is {_kind(st.st_mode)}, not a file; give a regular file")
    with os.fdopen(fd, "rb") as f:
        if st.st_size > limit:
            raise UserError(f"{what} {show(path)} is {st.st_size:,} bytes, more than a {what} can be "
                            f"({limit:,}); give the right file")
        try:
            data = f.read(limit + 1)  # the size can grow while we read: the bound holds whatever stat said
        except OSError as e:
            raise UserError(f"cannot read {what} {show(path)}: {e.strerror or e}") from None
    if len(data) > limit:
        raise UserError(f"{what} {show(path)} grew past {limit:,} bytes while being read; give a finished file")
    return data


def read_text(path: str | Path, limit: int, what: str) -> str:
    """read_bytes, decoded as UTF-8 (a byte that is not is one line naming the file and the offset)."""
    data = read_bytes(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {show(path)} is not UTF-8 text (byte {e.start}); give a text file") from None


def damaged(path: str | Path, what: str, todo: str) -> UserError:
    """The one refusal of a file reglab wrote that is not what it wrote."""
    return UserError(f"{show(path)} is damaged ({what}); {todo}")


def read_own_bytes(path: str | Path, limit: int, todo: str) -> bytes:
    """A file reglab wrote, as read_bytes reads it; damage is `damaged(path, ...)`, absence FileNotFoundError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except NotADirectoryError:  # a file where its folder should be: the file is not there, as for its writer
        raise FileNotFoundError(path) from None
    except OSError as e:
        raise damaged(path, f"cannot be read: {e.strerror or e}", todo) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise damaged(path, f"it is {_kind(st.st_mode)}, not a file", todo)
    with os.fdopen(fd, "rb") as f:
        if st.st_size > limit:
            raise damaged(path, f"{st.st_size:,} bytes, more than such a file can be ({limit:,})", todo)
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise damaged(path, f"cannot be read: {e.strerror or e}", todo) from None
    if len(data) > limit:
        raise damaged(path, f"it grew past {limit:,} bytes while being read", todo)
    return data


def read_own_text(path: str | Path, limit: int, todo: str) -> str:
    """read_own_bytes, decoded as UTF-8."""
    data = read_own_bytes(path, limit, todo)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise damaged(path, f"not UTF-8 text at byte {e.start}", todo) from None
