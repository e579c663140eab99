"""Where the data comes from: a directory the user names, or a known dataset downloaded once.

Known names map to fast.ai's official tarballs. A name is downloaded (https only, size and sha256
checked), extracted safely into a temporary sibling directory, marked complete, and renamed into place
under the cache (`cache_dir`, else $REGLAB_DATA, else ~/.cache/reglab). Later calls see the marker and
never touch the network; a directory without the marker (an interrupted run, or someone's own copy) is
never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_open, check_writable_dir, write_json
from ..errors import UserError
from .extract import safe_extract

TIMEOUT_S = 30  # seconds for connecting and for each read: a dead network fails instead of hanging
CHUNK = 1 << 20
MARKER = ".reglab-complete.json"  # written inside the extracted tree before it is renamed into place


@dataclass
class Source:
    """One downloadable dataset. Mutable on purpose: tests point an entry at a local server."""

    url: str
    size: int | None  # bytes of the archive; None = not checked
    sha256: str | None  # hex digest of the archive; None = not checked
    subdir: str  # folder inside the archive that holds train/ and val/
    about: str = ""


# Sizes and sha256 digests as published by tensorflow_datasets (imagenette/checksums.tsv) and fast.ai
# (fastai/data/checks.txt, sizes only). fast.ai re-cut the v2 tarballs in 2021, so older pins are stale.
SOURCES: dict[str, Source] = {
    "imagenette2-160": Source(
        url="https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
        size=99_003_388,
        sha256="64d0c4859f35a461889e0147755a999a48b49bf38a7e0f9bd27003f10db02fe5",
        subdir="imagenette2-160",
        about="Imagenette v2, 160 px: 9,469 train / 3,925 val, 10 classes",
    ),
    "imagenette2-320": Source(
        url="https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",
        size=341_663_724,
        sha256="569b4497c98db6dd29f335d1f109cf315fe127053cedf69010d047f0188e158c",
        subdir="imagenette2-320",
        about="Imagenette v2, 320 px: 9,469 train / 3,925 val, 10 classes",
    ),
    "imagewoof2-160": Source(
        url="https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-160.tgz",
        size=92_612_825,
        sha256=None,  # no published digest for the current (2021) upload was found; size is checked
        subdir="imagewoof2-160",
        about="Imagewoof v2, 160 px: 10 dog breeds",
    ),
    "imagenette-160": Source(
        url="https://s3.amazonaws.com/fast-ai-imageclas/imagenette-160.tgz",
        size=98_752_094,
        sha256="4bacf19aa3f2454e330ac366c98ac1e470ccc6bebca8ff63ecc7f339cb2ead11",
        subdir="imagenette-160",
        about="Imagenette v1, 160 px (tensorflow_datasets imagenette/160px): 12,894 train / 500 val",
    ),
}
DEFAULT = "imagenette2-160"

# Errors that mean "the network or the server failed", as opposed to our own disk (plain OSError).
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError)


def resolve_data(spec: str, cache_dir: Path | None = None, progress: bool = True) -> Path:
    """The ImageFolder root (holding train/ and val/) for a --data value: a directory or a known name."""
    spec = str(spec)
    expanded = os.path.expanduser(spec)
    has_separator = any(sep in spec for sep in {os.sep, os.altsep or os.sep, "/"})
    if os.path.isdir(expanded) or has_separator or spec.startswith((".", "~")):
        path = Path(expanded)
        if not path.exists():
            raise UserError(
                f"data directory {path} does not exist; pass a folder holding train/ and val/, "
                f"or a dataset name ({', '.join(SOURCES)})"
            )
        if not path.is_dir():
            raise UserError(f"data path {path} is not a directory; pass a folder holding train/ and val/")
        return path
    source = SOURCES.get(spec)
    if source is None:
        raise UserError(
            f"unknown dataset {spec!r}; known names: {', '.join(SOURCES)} "
            f"(default {DEFAULT}); a directory path holding train/ and val/ also works"
        )
    cache = Path(cache_dir or os.environ.get("REGLAB_DATA") or "~/.cache/reglab").expanduser()
    return _fetch(spec, source, cache / "datasets", progress)


def _fetch(name: str, source: Source, cache: Path, progress: bool) -> Path:
    final = cache / name
    if (final / MARKER).is_file():  # the fast path: no lock, no network
        return final / source.subdir
    check_writable_dir(cache, "data cache directory", hint="set REGLAB_DATA to a writable folder for downloads")
    # One process downloads and extracts; others (e.g. parallel workers) wait, then reuse its result.
    with _lock(cache / f".{name}.lock"):
        if (final / MARKER).is_file():
            return final / source.subdir
        if final.exists():
            # Not ours (we only ever rename a marked tree into place): never trust it, never delete it.
            raise UserError(
                f"{final} exists but is not a complete reglab download; pass it as --data "
                f"{final / source.subdir} if it is a good copy, or remove it and retry"
            )
        archive = cache / Path(urllib.parse.urlsplit(source.url).path).name
        _remove_leftovers(cache, name, archive.name)
        if not (archive.is_file() and _archive_ok(archive, source)):
            if progress:
                _console().print(f"downloading {name} from {source.url} into {cache}")
            download(source.url, archive, source.sha256, source.size, progress=progress)
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{name}.", suffix=".partial"))
        try:
            if progress:
                _console().print(f"extracting {archive.name}")
            safe_extract(archive, tmp)
            root = tmp / source.subdir
            if not ((root / "train").is_dir() and (root / "val").is_dir()):
                raise UserError(
                    f"{archive} does not contain {source.subdir}/train and {source.subdir}/val; "
                    f"remove it and retry, or pass a folder holding train/ and val/ as --data"
                )
            write_json(tmp / MARKER, {"name": name, "url": source.url, "sha256": source.sha256})
            os.rename(tmp, final)  # the commit point: before it there is no `final`, after it is complete
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        archive.unlink(missing_ok=True)  # the extracted tree is what we use; keep the disk free
    return final / source.subdir


def download(url: str, dest: Path, sha256: str | None = None, size: int | None = None,
             progress: bool = True, allow_http: bool = False) -> Path:
    """Stream `url` into `dest`: temporary sibling file, size and sha256 checked, then renamed into place.

    Any failure (network, truncated transfer, wrong size or checksum, Ctrl-C) removes the temporary file
    and raises UserError; `dest` only ever appears complete and verified.
    """
    dest = Path(dest)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    allow_http = allow_http or os.environ.get("REGLAB_ALLOW_HTTP") == "1"
    if scheme != "https" and not (scheme == "http" and allow_http):
        raise UserError(f"refusing to download {url}: only https:// URLs are allowed (set REGLAB_ALLOW_HTTP=1 "
                        f"to allow plain http)")
    request = urllib.request.Request(url, headers={"User-Agent": "reglab"})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except KeyboardInterrupt:
        raise UserError(f"download of {url} interrupted") from None
    except urllib.error.HTTPError as e:
        raise _network_error(url, f"HTTP {e.code} {e.reason}") from None
    except _NETWORK_ERRORS as e:
        raise _network_error(url, getattr(e, "reason", None) or e) from None
    # atomic_open: temporary sibling, fsync, rename on success; removes the temporary file on any
    # exception, KeyboardInterrupt included, and turns disk errors (ENOSPC, EACCES) into UserError.
    with response, atomic_open(dest, "wb") as f:
        try:
            _stream(url, response, f, sha256, size, progress)
        except KeyboardInterrupt:
            raise UserError(f"download of {url} interrupted; the partial file was removed") from None
        except http.client.IncompleteRead as e:
            raise UserError(f"download of {url} was cut short ({e}); retry, or use a local copy "
                            f"with --data DIR") from None
        except _NETWORK_ERRORS as e:
            raise _network_error(url, e) from None
    return dest


def _stream(url, response, f, sha256, size, progress) -> None:
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if size is not None and length is not None and length != size:
        raise UserError(f"{url} is {length} bytes but {size} were expected; the upstream file may have "
                        f"changed: download and extract it by hand and pass --data DIR")
    digest, received = hashlib.sha256(), 0
    with _progress_bar(progress, dest_name=Path(urllib.parse.urlsplit(url).path).name,
                       total=size or length) as advance:
        while chunk := response.read(CHUNK):
            f.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            advance(len(chunk))
    # http.client returns a short body without complaint when the connection drops: count ourselves.
    if length is not None and received != length:
        raise UserError(f"download of {url} was cut short ({received} of {length} bytes); retry, "
                        f"or use a local copy with --data DIR")
    _check(url, received, digest.hexdigest(), size, sha256)


def _check(what, received: int, hexdigest: str, size: int | None, sha256: str | None) -> None:
    if size is not None and received != size:
        raise UserError(f"{what}: got {received} bytes, expected {size}; retry, or download and extract "
                        f"the archive by hand and pass --data DIR")
    if sha256 is not None and hexdigest != sha256.lower():
        raise UserError(f"{what}: sha256 {hexdigest} does not match the expected {sha256}; the file is "
                        f"corrupt or was changed upstream: retry, or download and extract it by hand and "
                        f"pass --data DIR")


def _archive_ok(archive: Path, source: Source) -> bool:
    """Is an archive left by an earlier run (download done, extraction interrupted) still the right one?"""
    digest = hashlib.sha256()
    with open(archive, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    try:
        _check(archive, archive.stat().st_size, digest.hexdigest(), source.size, source.sha256)
    except UserError:
        return False
    return True


def _network_error(url: str, reason) -> UserError:
    return UserError(f"cannot download {url} ({reason}); to use a local copy instead (e.g. no network), download "
                     f"and extract the tarball by hand and pass the extracted folder (holding train/ and val/) "
                     f"as --data DIR")


def _remove_leftovers(cache: Path, name: str, archive_name: str) -> None:
    """Temporary files and directories of runs that were killed (we hold the lock, so none is live)."""
    for pattern in (f".{name}.*.partial", f".{archive_name}.*.tmp"):
        for p in cache.glob(pattern):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


@contextlib.contextmanager
def _lock(path: Path):
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process lock; the rename is still atomic
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _console():
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def _progress_bar(enabled: bool, dest_name: str, total: int | None):
    """Yields advance(n): a rich progress bar on stderr, or a no-op."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=_console()) as bar:
        task = bar.add_task(dest_name, total=total)
        yield lambda n: bar.advance(task, n)
