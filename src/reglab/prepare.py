"""The data for a run, a cohort or a study: found, checked and decoded once, before any folder is touched.

This is the one place the sequence lives: resolve and scan --data (find) -> refuse data that is not what the
runs being continued were trained on (identity) -> refuse a run that cannot fit in memory (fits) -> decode into
the cache (decode) -> name the images left out (skipped).
"""

from __future__ import annotations

import torch

from .config import Config
from .data import Data, DataFiles, decode, find_data
from .data.folder import show
from .data.identity import describe_change
from .device import check_fits
from .errors import UserError
from .text import say


def find(cfg: Config, quiet: bool = False) -> DataFiles:
    """Resolve and scan cfg.data (a dataset name is downloaded once); nothing is decoded."""
    return find_data(cfg.data, show_progress=not quiet)


def check_trained_on(identity: dict, trained_on: dict, data: str, hint: str) -> None:
    """Refuse when the data now differs from what a run recorded. trained_on: {run folder: recorded identity}
    (older runs that recorded none are left out)."""
    for run_dir, then in trained_on.items():
        change = describe_change(then or {}, identity)
        if change:
            raise UserError(f"run {run_dir} was trained on other data: the data at {show(data)} is not what this run "
                            f"was trained on ({change}); {hint}")


def prepare_data(cfg: Config, device: torch.device, data: Data | DataFiles | None = None, *, members: int = 1,
                 trained_on: dict | None = None, hint: str = "restore the data, or train a new run",
                 quiet: bool = False) -> Data:
    """Decoded data for `members` runs of `cfg` on `device`, checked against the data identities that runs being
    continued recorded (`trained_on`). `data`: already decoded by the caller (a study shares it between its runs,
    and checked memory for them), or already scanned files, or None (find them)."""
    if isinstance(data, Data):
        check_trained_on(data.identity, trained_on or {}, cfg.data, hint)
        return data
    files = data or find(cfg, quiet)
    check_trained_on(files.identity(), trained_on or {}, cfg.data, hint)
    check_fits(cfg, device, files.num_files, len(files.classes), members=members)
    data = decode(files, cfg.image_size, cfg.on_bad_image, show_progress=not quiet)
    for path, why in data.describe()["skipped"]:
        say(f"skipped {path}: {why}")
    return data
