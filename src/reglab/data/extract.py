"""Extract .tar / .tgz / .tar.gz / .zip archives without ever writing outside the target directory.

A downloaded archive is untrusted input, so extraction is done by hand instead of by extractall(): only
member types we checked can be written, whatever the Python version's tarfile filters do.

- Every member is validated before anything is written, so a bad archive writes nothing at all.
- Names: no absolute paths or drive letters, no `..` components ('/' and '\\' both count as separators).
- Types: regular files, directories and links only; devices, FIFOs and anything else are refused.
- Hard links (tar) are copied from an already extracted regular file inside the target.
- Symlinks (tar) must be relative and resolve inside the target. They are created last, after every
  file, so no file is ever written through a link; then all of them are resolved again, because a later
  link can change where an earlier one points. Zip symlinks are refused outright.
- Regular files are opened with O_NOFOLLOW, and every parent directory is checked to resolve inside the
  target, so even a target that already holds symlinks cannot redirect a write.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import BinaryIO, Callable

from ..errors import UserError

CHUNK = 1 << 20
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


@dataclass
class _Member:
    name: str
    kind: str  # "file", "dir", "symlink", "hardlink", or a description of a refused type
    link: str = ""  # symlink target (relative to the link's folder) or hardlink source (archive root)
    open: Callable[[], BinaryIO] | None = None
    parts: tuple[str, ...] = ()  # validated path components of `name`
    link_parts: tuple[str, ...] = ()  # validated path components of a hardlink's source


def safe_extract(archive: Path, target: Path) -> None:
    """Extract `archive` into `target` (created if needed); UserError naming the member if it is unsafe.

    On a refusal found while validating, nothing is written. A symlink escape can only be detected once the
    links exist; then the links are removed again and the regular files already written stay inside
    `target` (callers that want all-or-nothing extract into a temporary directory, as sources.py does).
    """
    archive, target = Path(archive), Path(target)
    lower = archive.name.lower()
    if lower.endswith(".zip"):
        reader = _zip_members
    elif lower.endswith((".tgz", ".tar.gz", ".tar")):
        reader = _tar_members
    else:
        raise UserError(f"cannot extract {archive}: unsupported archive type (use .tar, .tar.gz, .tgz or .zip)")
    try:
        with reader(archive) as members:
            for m in members:
                _validate(archive, m)
            target.mkdir(parents=True, exist_ok=True)
            _write(archive, target, members)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise UserError(f"cannot read {archive} ({e}); it is corrupt or truncated: delete it and retry") from None
    except OSError as e:
        raise UserError(f"cannot extract {archive} into {target}: {e.strerror or e}") from None


@contextlib.contextmanager
def _tar_members(archive: Path):
    with tarfile.open(archive, "r:*") as tar:
        yield [_Member(m.name, _tar_kind(m), m.linkname, lambda m=m: tar.extractfile(m))
               for m in tar.getmembers()]


def _tar_kind(m: tarfile.TarInfo) -> str:
    if m.isreg():
        return "file"
    if m.isdir():
        return "dir"
    if m.issym():
        return "symlink"
    if m.islnk():
        return "hardlink"
    if m.ischr():
        return "character device"
    if m.isblk():
        return "block device"
    if m.isfifo():
        return "FIFO"
    return f"member of tar type {m.type!r}"


@contextlib.contextmanager
def _zip_members(archive: Path):
    with zipfile.ZipFile(archive) as zf:
        members = []
        for info in zf.infolist():
            # Zips made on unix keep st_mode in the high 16 bits of external_attr; 0 elsewhere.
            ftype = stat.S_IFMT(info.external_attr >> 16)
            if ftype == stat.S_IFLNK:
                kind = "symlink stored in a zip"  # the link target is the file's data: refused, never followed
            elif info.is_dir() or ftype == stat.S_IFDIR:
                kind = "dir"
            elif ftype in (0, stat.S_IFREG):
                kind = "file"
            else:
                kind = f"special file (mode {oct(ftype)})"
            members.append(_Member(info.filename, kind, open=lambda info=info: zf.open(info)))
        yield members


def _refuse(archive: Path, member: str, why: str) -> UserError:
    return UserError(f"refusing to extract {archive}: member {member!r} {why}")


def _is_absolute(name: str) -> bool:
    # PureWindowsPath also catches "C:\x", "C:x" and "\\server\share", whatever OS we run on.
    return name.replace("\\", "/").startswith("/") or bool(PureWindowsPath(name).drive)


def _safe_parts(archive: Path, member: str, name: str, what: str = "has") -> tuple[str, ...]:
    if _is_absolute(name):
        raise _refuse(archive, member, f"{what} an absolute path ({name!r})")
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(archive, member, f"{what} a '..' component ({name!r}), which could escape the target")
    return parts


def _validate(archive: Path, m: _Member) -> None:
    """Checks that need no file system: names, types, link targets (lexically). Fills m.parts."""
    m.parts = _safe_parts(archive, m.name, m.name)
    if m.kind not in ("file", "dir", "symlink", "hardlink"):
        raise _refuse(archive, m.name, f"is a {m.kind}; only regular files, directories and links are extracted")
    if not m.parts and m.kind != "dir":  # "./" is the target itself; any other empty name is nonsense
        raise _refuse(archive, m.name, "has an empty path")
    if m.kind == "symlink":
        if not m.link or _is_absolute(m.link):
            raise _refuse(archive, m.name, f"is a symlink to an absolute or empty path ({m.link!r})")
        lexical = posixpath.normpath(posixpath.join("/".join(m.parts[:-1]), m.link.replace("\\", "/")))
        if lexical == ".." or lexical.startswith("../"):
            raise _refuse(archive, m.name, f"is a symlink pointing outside the target ({m.link!r})")
    if m.kind == "hardlink":
        m.link_parts = _safe_parts(archive, m.name, m.link, what="is a hard link to")
        if not m.link_parts:
            raise _refuse(archive, m.name, "is a hard link to an empty path")


def _write(archive: Path, target: Path, members: list[_Member]) -> None:
    root = os.path.realpath(target)

    def inside(path: str) -> bool:  # after following every symlink that exists now
        real = os.path.realpath(path)
        return real == root or real.startswith(root + os.sep)

    def parent_dir(m: _Member) -> str:
        parent = os.path.join(root, *m.parts[:-1])
        if not inside(parent):
            raise _refuse(archive, m.name, "would be written through a symlink that leaves the target")
        os.makedirs(parent, exist_ok=True)
        return parent

    links = []
    for m in members:
        if not m.parts:
            continue
        if m.kind == "symlink":
            links.append(m)  # after every file: nothing is ever written through an extracted link
        elif m.kind == "dir":
            parent_dir(m)
            os.makedirs(os.path.join(root, *m.parts), exist_ok=True)
        elif m.kind == "file":
            with m.open() as src:
                _copy(src, os.path.join(parent_dir(m), m.parts[-1]))
        else:  # hardlink: copy the earlier member's bytes; a real link could alias a file outside
            source = os.path.join(root, *m.link_parts)
            if not (inside(source) and os.path.isfile(source) and not os.path.islink(source)):
                raise _refuse(archive, m.name, f"is a hard link to {m.link!r}, not an extracted regular file")
            with open(source, "rb") as src:
                _copy(src, os.path.join(parent_dir(m), m.parts[-1]))

    created = []
    try:
        for m in links:
            dest = os.path.join(parent_dir(m), m.parts[-1])
            if os.path.islink(dest) or os.path.isfile(dest):  # a duplicate name: the later member wins
                os.unlink(dest)
            os.symlink(m.link, dest)
            created.append((m, dest))
        for m, dest in created:  # a later link can redirect an earlier one: check the final state
            if not inside(dest):
                raise _refuse(archive, m.name, f"is a symlink that resolves outside the target ({m.link!r})")
    except BaseException:
        for _, dest in created:
            with contextlib.suppress(OSError):
                os.unlink(dest)
        raise


def _copy(src: BinaryIO, dest: str) -> None:
    fd = os.open(dest, _WRITE_FLAGS, 0o644)  # O_NOFOLLOW: never write through a symlink at `dest`
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
