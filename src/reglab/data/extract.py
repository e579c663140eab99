"""Extract .tar / .tgz / .tar.gz / .zip archives without ever writing outside the target directory.

tarfile (filter="data") and zipfile extract; the checks here refuse what they let through or silently rewrite.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path, PureWindowsPath

from ..errors import UserError


def safe_extract(archive: Path, target: Path) -> None:
    """Extract `archive` into `target` (created if needed); UserError naming the member if it is unsafe.

    Every member is checked before anything is written, so a refused archive writes nothing; only a symlink
    that escapes through a later link is found after extracting, and then the links are removed again
    (callers that want all-or-nothing extract into a temporary directory, as sources.py does).
    """
    archive, target = Path(archive), Path(target)
    lower = archive.name.lower()
    if lower.endswith(".zip"):
        extract = _extract_zip
    elif lower.endswith((".tgz", ".tar.gz", ".tar")):
        extract = _extract_tar
    else:
        raise UserError(f"cannot extract {archive}: unsupported archive type (use .tar, .tar.gz, .tgz or .zip)")
    try:
        extract(archive, target)
    except tarfile.FilterError as e:
        m = e.tarinfo
        if isinstance(e, tarfile.SpecialFileError):  # its text only says "special file": name the kind
            kind = ("character device" if m.ischr() else "block device" if m.isblk()
                    else "FIFO" if m.isfifo() else f"member of tar type {m.type!r}")
            raise _refuse(archive, m.name, f"is a {kind}; only regular files, directories and links are "
                                           "extracted") from None
        raise _refuse(archive, m.name, f"is refused by tarfile's data filter ({e})") from None
    except tarfile.ExtractError as e:
        raise UserError(f"cannot extract {archive} into {target}: {e}") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise UserError(f"cannot read {archive} ({e}); it is corrupt or truncated: delete it and retry") from None
    except OSError as e:
        raise UserError(f"cannot extract {archive} into {target}: {e.strerror or e}") from None


def _extract_tar(archive: Path, target: Path) -> None:
    if not hasattr(tarfile, "data_filter"):
        raise UserError(f"cannot extract {archive} safely: Python {sys.version.split()[0]} lacks tarfile's "
                        "extraction filters; upgrade Python (3.10.12+, 3.11.4+ or 3.12+)")
    with tarfile.open(archive, "r:*") as tar:
        tar.errorlevel = 2  # raise ExtractError too, instead of only logging it and skipping the member
        members = tar.getmembers()
        files, folders = set(), {"."}
        for m in members:  # validation pass: nothing is written unless every member passes
            _check_name(archive, m.name)
            # '\\' counts as a separator in link targets too ("..\\x"); the filter itself only knows '/'.
            tarfile.data_filter(m.replace(linkname=m.linkname.replace("\\", "/"), deep=False), str(target))
            # A hard link to a name that is not an earlier regular file would make tarfile extract (unfiltered)
            # some other member, or fail with a bare KeyError: refuse it here.
            if m.islnk() and posixpath.normpath(m.linkname) not in files:
                raise _refuse(archive, m.name, f"is a hard link to {m.linkname!r}, not to an earlier regular "
                                               "file")
            if m.isreg():
                files.add(posixpath.normpath(m.name))
            parts = posixpath.normpath(m.name).split("/")
            folders.update("/".join(parts[:i]) for i in range(1, len(parts) + m.isdir()))
        # Symlinks go last, so no file or hard link is ever made through an extracted link (whatever the
        # filter's realpath() misses; CVE-2025-4517, fixed in 3.10.18 / 3.11.13 / 3.12.11). A link on a
        # folder's path could then not replace that folder, and tarfile's copy fallback can recurse forever.
        links = [m for m in members if m.issym()]
        for m in links:
            if posixpath.normpath(m.name) in folders:
                raise _refuse(archive, m.name, "is a symlink at a path the archive also uses as a folder")
        target.mkdir(parents=True, exist_ok=True)
        tar.extractall(target, [m for m in members if not m.issym()], filter="data")
        root = os.path.realpath(target)
        try:
            tar.extractall(target, links, filter="data")
            for m in links:  # the filter checks each link when made; a later link can redirect an earlier one
                if not _inside(root, os.path.join(root, m.name)):
                    raise _refuse(archive, m.name, f"is a symlink that resolves outside the target "
                                                   f"({m.linkname!r})")
        except BaseException:
            for m in reversed(links):
                path = os.path.join(root, m.name.rstrip("/"))
                if _inside(root, os.path.dirname(path)) and os.path.islink(path):  # never unlink outside
                    with contextlib.suppress(OSError):
                        os.unlink(path)
            raise


def _extract_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        root = os.path.realpath(target)
        for info in zf.infolist():
            name = info.filename
            ftype = stat.S_IFMT(info.external_attr >> 16)  # unix st_mode, kept in the high 16 bits; 0 elsewhere
            if ftype == stat.S_IFLNK:  # zipfile would write a file holding the link text
                raise _refuse(archive, name, "is a symlink stored in a zip; zip symlinks are not extracted")
            if ftype not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _refuse(archive, name, f"is a special file (mode {oct(ftype)}); only regular files and "
                                             "directories are extracted")
            _check_name(archive, name)
            if not _inside(root, os.path.join(root, name)):  # zipfile follows symlinks already in the target
                raise _refuse(archive, name, "would be written through a symlink that leaves the target")
        target.mkdir(parents=True, exist_ok=True)
        zf.extractall(target)


def _refuse(archive: Path, member: str, why: str) -> UserError:
    return UserError(f"refusing to extract {archive}: member {member!r} {why}; the archive is unsafe, "
                     "do not use it")


def _check_name(archive: Path, name: str) -> None:
    """Refuse absolute names, drive letters and '..' components, which tarfile's filter strips or allows
    (a name that leaves the target and comes back in can still create folders outside) and zipfile rewrites."""
    flat = name.replace("\\", "/")  # '\\' counts as a separator, whatever OS we run on
    if flat.startswith("/") or PureWindowsPath(name).drive:  # also "C:x" and "\\\\server\\share"
        raise _refuse(archive, name, f"has an absolute path ({name!r})")
    if ".." in flat.split("/"):
        raise _refuse(archive, name, f"has a '..' component ({name!r}), which could escape the target")


def _inside(root: str, path: str) -> bool:
    """Is `path` inside the real folder `root`, after following every symlink that exists now?"""
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)
