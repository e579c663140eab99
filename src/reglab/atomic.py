"""Atomic file writes: a crash never leaves a half-written file that a later run trusts.

Every output goes to a temporary file in the same directory, is flushed and fsynced, then renamed
over the target (rename is atomic on POSIX filesystems).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path

from . import signals
from .errors import UserError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb"):
    """Open a temporary sibling of `path` for writing; rename it over `path` on success."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _os_error_to_user(e, path) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs should look like any other file
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        signals.honour()  # a deferred signal stops the program before it commits an output, not after
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _os_error_to_user(e, path) from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _os_error_to_user(e: OSError, path: Path) -> UserError:
    if e.errno == errno.ENOSPC:
        return UserError(f"no space left on device while writing {path}; free some disk space or write elsewhere")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"cannot write {path}: permission denied; choose a writable --out or cache directory")
    return UserError(f"cannot write {path}: {e.strerror or e}")


def check_writable_dir(path: str | os.PathLike, what: str = "output directory",
                       hint: str = "choose another directory") -> Path:
    """Create `path` if needed and prove it is writable, or raise one clear UserError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".reglab-write-test.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(
            f"{what} {path} is not writable ({e.strerror or e}); {hint}"
        ) from None
    return path


def check_can_create(path: str | os.PathLike, what: str = "output folder") -> None:
    """Without creating anything: could `path` be created (or written, if it is a folder) by this process?"""
    _check_creatable(Path(path).absolute(), Path(path).absolute(), what, "created")


def check_output_file(path: str | os.PathLike, what: str = "--out") -> None:
    """Before any work: a file could be written at `path` (not a folder; its folder exists or could be created,
    and is writable). Creates nothing."""
    path = Path(path).absolute()
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name")
    _check_creatable(path, path.parent, what, "written")


def _check_creatable(path: Path, folder: Path, what: str, verb: str) -> None:
    ancestor = folder  # the nearest folder that exists decides
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{what} {path} cannot be {verb}: {ancestor} is a file, not a folder; choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path} is not writable ({ancestor}: permission denied); choose another folder")
