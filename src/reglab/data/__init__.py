"""files -> cached uint8 arrays -> device batches.

`find_data(spec)` resolves --data (a folder or a dataset name) and scans it: the file lists and the data's
identity, with every check that needs no decoding. `decode(files, size)` returns both splits decoded (from
the decode-once cache when valid); `load_data` is the two in one. `DeviceLoader` then serves seeded batches
from device tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .. import signals
from .cache import DecodedSplit, decode_split
from .folder import SplitFiles, scan, show
from .identity import identity

# Human-readable names of the Imagenette / Imagewoof classes (WordNet ids as folder names).
CLASS_NAMES = {
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
    "n03888257": "parachute",
    "n02086240": "Shih-Tzu", "n02087394": "Rhodesian ridgeback", "n02088364": "beagle",
    "n02089973": "English foxhound", "n02093754": "Border terrier", "n02096294": "Australian terrier",
    "n02099601": "golden retriever", "n02105641": "Old English sheepdog", "n02111889": "Samoyed",
    "n02115641": "dingo",
}


@dataclass
class DataFiles:
    """A scanned ImageFolder tree: what the data is, before any image is decoded."""

    name: str
    root: Path
    train: SplitFiles
    val: SplitFiles

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def num_files(self) -> int:
        return len(self.train.files) + len(self.val.files)

    def identity(self) -> dict:
        return identity(self.root, [self.train, self.val])


@dataclass
class Data:
    name: str
    root: Path
    classes: list[str]
    train: DecodedSplit
    val: DecodedSplit
    identity: dict

    @property
    def class_names(self) -> list[str]:
        return [CLASS_NAMES.get(c, c) for c in self.classes]

    def describe(self) -> dict:
        return {
            "name": self.name, "path": show(self.root), "train_size": int(len(self.train.labels)),
            "val_size": int(len(self.val.labels)), "classes": self.classes, "class_names": self.class_names,
            "skipped": [[show(p), why] for p, why in self.train.skipped + self.val.skipped],
            "identity": self.identity,
        }


def resolve_root(spec: str, show_progress: bool = True) -> tuple[str, Path]:
    """(dataset name, ImageFolder root) for a --data value: a directory, or a name downloaded once."""
    from .sources import resolve_data

    root = resolve_data(spec, progress=show_progress)
    name = spec if Path(root) != Path(spec).expanduser() else Path(root).expanduser().resolve().name
    return name, Path(root)


def find_data(spec: str, show_progress: bool = True) -> DataFiles:
    """Resolve and scan --data; refuses a tree with fewer than two classes. Reads only (a dataset name is
    downloaded once into the cache)."""
    name, root = resolve_root(spec, show_progress)
    with signals.phase(f"scanning {show(root)}", "scan"):
        train_files, val_files, _ = scan(root)
    return DataFiles(name=name, root=root, train=train_files, val=val_files)


def decode(files: DataFiles, image_size: int, on_bad_image: str = "error", show_progress: bool = True,
           workers: int | None = None, cache_dir: Path | None = None) -> Data:
    with signals.phase("decoding images", "decode"):
        train = decode_split(files.train, image_size, on_bad_image, workers, cache_dir, show_progress)
        val = decode_split(files.val, image_size, on_bad_image, workers, cache_dir, show_progress)
    if len(train.labels) == 0 or len(val.labels) == 0:
        raise UserError(f"no usable images in {show(files.root)}; check the data folder")
    return Data(name=files.name, root=files.root, classes=files.classes, train=train, val=val,
                identity=files.identity())


def load_data(spec: str, image_size: int, on_bad_image: str = "error", show_progress: bool = True,
              workers: int | None = None, cache_dir: Path | None = None) -> Data:
    return decode(find_data(spec, show_progress), image_size, on_bad_image, show_progress, workers, cache_dir)
