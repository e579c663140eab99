"""files -> cached uint8 arrays -> device batches.

`load_data(cfg)` resolves --data (a folder or a dataset name), scans it, and returns both splits decoded
(from the decode-once cache when valid). `DeviceLoader` then serves seeded batches from device tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .cache import DecodedSplit, decode_split
from .folder import scan, show

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
class Data:
    name: str
    root: Path
    classes: list[str]
    train: DecodedSplit
    val: DecodedSplit

    @property
    def class_names(self) -> list[str]:
        return [CLASS_NAMES.get(c, c) for c in self.classes]

    def describe(self) -> dict:
        return {
            "name": self.name, "path": show(self.root), "train_size": int(len(self.train.labels)),
            "val_size": int(len(self.val.labels)), "classes": self.classes, "class_names": self.class_names,
            "skipped": [[show(p), why] for p, why in self.train.skipped + self.val.skipped],
        }


def resolve_root(spec: str, show_progress: bool = True) -> tuple[str, Path]:
    """(dataset name, ImageFolder root) for a --data value: a directory, or a name downloaded once."""
    from .sources import resolve_data

    root = resolve_data(spec, progress=show_progress)
    name = spec if Path(root) != Path(spec).expanduser() else Path(root).expanduser().resolve().name
    return name, Path(root)


def load_data(spec: str, image_size: int, on_bad_image: str = "error", show_progress: bool = True,
              workers: int | None = None, cache_dir: Path | None = None) -> Data:
    name, root = resolve_root(spec, show_progress)
    train_files, val_files, _ = scan(root)
    train = decode_split(train_files, image_size, on_bad_image, workers, cache_dir, show_progress)
    val = decode_split(val_files, image_size, on_bad_image, workers, cache_dir, show_progress)
    if len(train.labels) == 0 or len(val.labels) == 0:
        raise UserError(f"no usable images in {show(root)}; check the data folder")
    return Data(name=name, root=root, classes=train_files.classes, train=train, val=val)
