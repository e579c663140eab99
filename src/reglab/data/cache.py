"""Decode once: every image of a split decoded in parallel into one uint8 array, cached on disk.

Cache entry: <cache_root>/decoded/<key>/<split>-images.u8 (raw N*H*W*3 bytes) and <split>.json (labels,
shape, CRC-32, skipped files). The JSON is written last, atomically, so it is the commit marker; a
missing, damaged or mismatched entry is rebuilt. The key hashes the file list with each file's size and
mtime, the class list and the image size, so any change to the data or the size setting invalidates it.
Workers write their images straight into the (temporary) cache file through a memory map: nothing large
crosses a pipe.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import atomic, signals
from ..errors import BadImageError, UserError
from ..progress import progress
from ..readfile import damaged, read_own_text, regular_file_error
from ..text import say
from .decode import DecodeError, decode_image
from .folder import SplitFiles, show

CACHE_FORMAT = 2  # 2: the metadata is checksummed too
CHUNK = 64


def cache_root() -> Path:
    return Path(os.environ.get("REGLAB_DATA", "~/.cache/reglab")).expanduser()


def cache_key(split: SplitFiles, size: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"format": CACHE_FORMAT, "size": size, "classes": split.classes}).encode())
    for f in split.files:
        h.update(os.fsencode(f.path) + b"\0" + f"{f.label}:{f.size}:{f.mtime_ns}\n".encode())
    return h.hexdigest()[:32]


@dataclass
class DecodedSplit:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64
    paths: list[str]
    skipped: list[tuple[str, str]]  # (path, reason)
    from_cache: bool


def _crc(buf) -> int:
    return zlib.crc32(memoryview(buf).cast("B"))


def _decode_chunk(out_path: str, count: int, size: int, start: int, paths: list[str]) -> list[tuple[int, str]]:
    """Worker: decode paths[i] into row start+i of the memory-mapped output; return (row, reason) failures."""
    out = np.memmap(out_path, dtype=np.uint8, mode="r+", shape=(count, size, size, 3))
    failed = []
    for i, path in enumerate(paths):
        try:
            out[start + i] = decode_image(path, size)
        except DecodeError as e:
            failed.append((start + i, str(e)))
        except Exception as e:  # a Pillow plugin bug must still name the file, not kill the pool
            failed.append((start + i, f"{type(e).__name__}: {e}"))
    out.flush()
    del out
    return failed


def _allocate(path: Path, nbytes: int) -> None:
    """Create the output file with its blocks reserved. A sparse file (np.memmap mode w+) would defer running
    out of disk to the workers' page writes, where it is SIGBUS (a dead process), not an OSError."""
    with open(path, "wb") as f:
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(f.fileno(), 0, nbytes)
                return
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise  # ENOSPC, EFBIG, EIO: the caller turns it into one clear line
        f.truncate(nbytes)


def _decode_all(split: SplitFiles, size: int, out_path: Path, workers: int, show_progress: bool) -> dict[int, str]:
    paths = [f.path for f in split.files]
    n = len(paths)
    _allocate(out_path, max(n, 1) * size * size * 3)
    failures: dict[int, str] = {}
    chunks = [(s, paths[s : s + CHUNK]) for s in range(0, n, CHUNK)]
    with progress(show_progress) as bar:
        task = bar.add_task(f"decoding {split.name}", total=n, info="")
        if workers <= 1:
            for s, part in chunks:
                failures.update(_decode_chunk(str(out_path), n, size, s, part))
                bar.advance(task, len(part))
        else:
            # fork: workers inherit the imported modules (fast start); they use only numpy and Pillow.
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=signals.ignore_in_worker)
            try:
                futures = {pool.submit(_decode_chunk, str(out_path), n, size, s, part): len(part) for s, part in chunks}
                for fut in as_completed(futures):
                    failures.update(fut.result())
                    bar.advance(task, futures[fut])
            except BaseException:  # a signal, a dead worker: stop the others now instead of draining the queue
                terminate_pool(pool)
                raise
            pool.shutdown()
    return failures


def terminate_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a process pool's workers at once (Python 3.14 has pool.terminate_workers() for this)."""
    if hasattr(pool, "terminate_workers"):
        pool.terminate_workers()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for p in processes:
        p.terminate()
    pool.shutdown(wait=True, cancel_futures=True)
    for p in processes:
        p.join(timeout=5)


def _sweep(folder: Path) -> None:
    """Remove temporary files of decodes whose process is gone (killed before it could clean up)."""
    for tmp in folder.glob(".*-images.u8.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if not pid.isdigit() or not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


META_BYTES = 64 << 20  # an entry's metadata lists its split's paths: a line per image


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _meta_digest(meta: dict) -> str:
    """Checksum of the entry's metadata (everything but the checksum itself), so a damaged or edited JSON is
    detected like damaged pixels."""
    body = json.dumps({k: v for k, v in meta.items() if k != "meta_sha256"}, sort_keys=True).encode()
    return hashlib.sha256(body).hexdigest()


REBUILT = "the decode cache is rebuilt automatically"


def _rebuilt(path: Path, why: str) -> None:
    """A damaged cache entry is no error: one note line, and the split is decoded again."""
    say(f"reglab: note: {damaged(path, why, REBUILT)}")


def _discard(path: Path) -> None:
    """Make way for a cache file: a folder or a link left in its place (a damaged cache) cannot be renamed over."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path) and not path.is_file():
        path.unlink()


def _load_entry(folder: Path, split: SplitFiles, size: int) -> DecodedSplit | None:
    """The cached split, or None when the entry is missing, damaged (said in a note) or of another format. Labels
    and paths come from the scan (which the key covers), never from the cache: an edited entry cannot relabel an
    image."""
    meta_path, data_path = folder / f"{split.name}.json", folder / f"{split.name}-images.u8"
    try:
        meta = json.loads(read_own_text(meta_path, META_BYTES, REBUILT))
    except FileNotFoundError:
        return None
    except UserError as e:  # not a regular file, too large, not UTF-8: the same line, as a note
        return say(f"reglab: note: {e}")
    except (ValueError, RecursionError) as e:
        return _rebuilt(meta_path, f"not JSON: {e}")
    try:
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
            return None  # another version's entry: replaced without a word
        if meta.get("meta_sha256") != _meta_digest(meta):
            return _rebuilt(meta_path, "its checksum does not match")
        paths = [f.path for f in split.files]
        skipped = {p: why for p, why in meta["skipped"]}
        kept = [i for i, p in enumerate(paths) if p not in skipped]
        n = meta["count"]
        wanted = (size, split.classes, len(kept), [paths[i] for i in kept])
        if (meta["size"], meta["classes"], n, meta["paths"]) != wanted:
            return _rebuilt(meta_path, "it describes other images")
        expected = n * size * size * 3
        if regular_file_error(data_path) or data_path.stat().st_size != max(expected, size * size * 3):
            return _rebuilt(data_path, "not the size its metadata says")
        raw = np.fromfile(data_path, dtype=np.uint8, count=expected)
        if raw.size != expected or _crc(raw) != meta["crc32"]:
            return _rebuilt(data_path, "its pixels do not match their checksum")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return _rebuilt(meta_path, f"{type(e).__name__}: {e}")
    labels = np.array([split.files[i].label for i in kept], dtype=np.int64)
    return DecodedSplit(
        images=raw.reshape(n, size, size, 3), labels=labels, paths=[paths[i] for i in kept],
        skipped=[(p, skipped[p]) for p in paths if p in skipped], from_cache=True,
    )


def decode_split(
    split: SplitFiles, size: int, on_bad_image: str = "error", workers: int | None = None,
    root: Path | None = None, show_progress: bool = True,
) -> DecodedSplit:
    """Decoded images of one split: from the cache when valid, else decoded in parallel and cached."""
    unreadable = list(split.unreadable)
    if unreadable and on_bad_image == "error":
        raise BadImageError(show(unreadable[0][0]), unreadable[0][1])
    folder = (root or cache_root()) / "decoded" / cache_key(split, size)
    cached = _load_entry(folder, split, size)
    if cached is not None:
        if cached.skipped and on_bad_image == "error":
            raise BadImageError(show(cached.skipped[0][0]), cached.skipped[0][1])
        cached.skipped = unreadable + cached.skipped
        return cached

    atomic.check_writable_dir(folder, "cache directory", hint="set REGLAB_DATA to a writable folder for the cache")
    _sweep(folder)
    workers = workers or os.cpu_count() or 1
    data_path = folder / f"{split.name}-images.u8"
    tmp_path = folder / f".{split.name}-images.u8.{os.getpid()}.tmp"
    try:
        failures = _decode_all(split, size, tmp_path, workers, show_progress)
        if failures and on_bad_image == "error":
            row = min(failures)
            raise BadImageError(show(split.files[row].path), failures[row])
        keep = np.array([i for i in range(len(split.files)) if i not in failures], dtype=np.int64)
        if keep.size == 0:
            raise UserError(f"no decodable images in the {split.name} split; check the data folder")
        all_images = np.memmap(tmp_path, dtype=np.uint8, mode="r", shape=(max(len(split.files), 1), size, size, 3))
        if failures:  # compact: drop the rows of skipped files
            images = np.ascontiguousarray(all_images[keep])
            del all_images
            images.tofile(tmp_path)
        else:
            images = np.array(all_images)
            del all_images
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        _discard(data_path)
        os.replace(tmp_path, data_path)
    except OSError as e:
        raise atomic._os_error_to_user(e, data_path) from None
    except BrokenProcessPool:
        raise UserError(
            f"a decode worker died while decoding the {split.name} split (out of memory or disk, or a crash in an "
            f"image decoder); free some memory or disk and retry"
        ) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    labels = np.array([split.files[i].label for i in keep], dtype=np.int64)
    paths = [split.files[i].path for i in keep]
    skipped = [(split.files[i].path, failures[i]) for i in sorted(failures)]
    meta = {"format": CACHE_FORMAT, "count": int(keep.size), "size": size, "crc32": _crc(images),
            "paths": paths, "skipped": skipped, "classes": split.classes}
    _discard(folder / f"{split.name}.json")
    atomic.write_json(folder / f"{split.name}.json", {**meta, "meta_sha256": _meta_digest(meta)})
    return DecodedSplit(images=images, labels=labels, paths=paths, skipped=unreadable + skipped, from_cache=False)
