"""Scan an ImageFolder tree (`train/<class>/*`, `val/<class>/*`) into file lists, with clear errors.

Classes are the sorted class-folder names of train/ and must match val/'s. Hidden files and folders
(.DS_Store, .ipynb_checkpoints) are ignored; so are files whose extension Pillow does not read.
Files are found recursively under each class folder without following symlinked folders, so a
symlink loop cannot hang the scan. Entries that are not regular files (a FIFO would block the decoder
forever) are reported as unreadable, like broken links.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..errors import UserError
from ..text import show

SPLITS = ("train", "val")


def image_extensions() -> frozenset[str]:
    Image.init()
    return frozenset(ext.lower() for ext in Image.registered_extensions())


@dataclass(frozen=True)
class FileEntry:
    path: str  # absolute
    label: int
    size: int
    mtime_ns: int


@dataclass
class SplitFiles:
    name: str
    classes: list[str]
    files: list[FileEntry]
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): not even stat-able


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _class_dirs(split_dir: Path) -> list[str]:
    try:
        visible = [e for e in os.scandir(split_dir) if _visible(e.name)]
    except OSError as e:
        raise UserError(f"cannot read {show(split_dir)}: {e.strerror}; check its permissions") from None
    names = []
    for e in visible:
        try:
            is_dir = e.is_dir()  # follows symlinks; a symlink loop raises ELOOP here
        except OSError as err:
            raise UserError(f"cannot read {show(e.path)}: {err.strerror or err}; fix or remove it") from None
        if is_dir:
            names.append(e.name)
    return sorted(names)


def _files_in(class_dir: Path, exts: frozenset[str]) -> list[tuple[str, os.stat_result | OSError]]:
    out = []
    for root, dirs, names in os.walk(class_dir, followlinks=False, onerror=None):
        dirs[:] = sorted(d for d in dirs if _visible(d))
        for name in sorted(names):
            if not _visible(name) or os.path.splitext(name)[1].lower() not in exts:
                continue
            path = os.path.join(root, name)
            try:
                st = os.stat(path)  # follows file symlinks; a loop or dangling link raises here
            except OSError as e:
                out.append((path, e))
                continue
            if not stat_mod.S_ISREG(st.st_mode):  # a FIFO would block the decoder forever; devices never end
                out.append((path, OSError(errno.EINVAL, "not a regular file (a FIFO, socket or device)")))
                continue
            out.append((path, st))
    return out


def scan(root: str | os.PathLike) -> tuple[SplitFiles, SplitFiles, list[tuple[str, str]]]:
    """Return (train, val, unreadable) where unreadable lists (path, reason) for files that cannot even be
    stat'ed (broken links, symlink loops); the caller decides (error or skip) as for undecodable images."""
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"data directory {show(root)} does not exist; pass --data DIR (an ImageFolder tree) or a "
                        "dataset name")
    if not root.is_dir():
        raise UserError(f"data path {show(root)} is not a directory; pass --data DIR with train/ and val/ inside")
    for split in SPLITS:
        if not (root / split).is_dir():
            raise UserError(
                f"data directory {show(root)} has no {split}/ folder; expected ImageFolder layout "
                f"{split}/<class>/<images>"
            )
    exts = image_extensions()
    train_classes = _class_dirs(root / "train")
    if not train_classes:
        raise UserError(f"{show(root / 'train')} has no class folders; expected train/<class>/<images>")
    if len(train_classes) < 2:
        raise UserError(f"{show(root / 'train')} has one class folder ({show(train_classes[0])}); a classifier needs "
                        "at least two: add class folders under train/ and val/")
    val_classes = _class_dirs(root / "val")
    if not val_classes:
        raise UserError(f"{show(root / 'val')} has no class folders; expected val/<class>/<images>")
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        parts = []
        if only_train:
            parts.append(f"only in train: {', '.join(map(show, only_train))}")
        if only_val:
            parts.append(f"only in val: {', '.join(map(show, only_val))}")
        raise UserError(f"classes differ between train and val in {show(root)} ({'; '.join(parts)}); make the class "
                        "folders match")

    splits = []
    for split in SPLITS:
        files: list[FileEntry] = []
        unreadable: list[tuple[str, str]] = []
        for label, cls in enumerate(train_classes):
            found = _files_in(root / split / cls, exts)
            if not found:
                raise UserError(
                    f"class folder {show(root / split / cls)} has no images; add images or remove the folder from "
                    "both splits"
                )
            for path, st in found:
                if isinstance(st, OSError):
                    unreadable.append((path, st.strerror or str(st)))
                else:
                    files.append(FileEntry(path=os.path.abspath(path), label=label, size=st.st_size,
                                           mtime_ns=st.st_mtime_ns))
        splits.append(SplitFiles(name=split, classes=train_classes, files=files, unreadable=unreadable))
    train, val = splits
    return train, val, train.unreadable + val.unreadable
