"""What a run tells: the terminal (Keras-like epoch lines), RUN_DIR/train.log (the same lines, kept), and
TensorBoard event files in the run folder, so `tensorboard --logdir runs/compare` shows every run of a study
side by side. Without the `tensorboard` package the run keeps going with metrics.csv alone (one note says so).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .data.augment import augmentation_grid
from .progress import echo
from .text import say

_warned_no_tensorboard = False


class RunLog:
    def __init__(self, out: Path, quiet: bool = False, verbose: bool = False, first_epoch: int = 0):
        self.out, self.quiet, self.verbose = Path(out), quiet, verbose
        self._file = open(self.out / "train.log", "a", encoding="utf-8")
        self.tb = _writer(self.out, first_epoch, quiet)

    def line(self, text: str, detail: bool = False) -> None:
        """A line for the terminal (stdout) and train.log; `detail` lines reach the terminal only with -v."""
        self._file.write(text + "\n")
        self._file.flush()
        if not detail or self.verbose:
            echo(text, self.quiet)

    def warn(self, text: str) -> None:
        """A message for stderr (even when quiet: it is a warning) and train.log."""
        self._file.write(text + "\n")
        self._file.flush()
        say(text)

    def epoch(self, r: dict, chooser: str, epochs: int, prefix: str = "") -> None:
        """One metrics row (chooser: the split that chooses, 'val' or 'select'): Keras's epoch line, and the
        same values for TensorBoard."""
        c = chooser
        self.line(f"{prefix}Epoch {r['epoch']}/{epochs} - {r['seconds']:.1f}s - loss: {r['train_loss']:.4f} - "
                  f"accuracy: {r['train_accuracy']:.4f} - {c}_loss: {r[f'{c}_loss']:.4f} - "
                  f"{c}_accuracy: {r[f'{c}_accuracy']:.4f} - lr: {r['lr']:.4e}")
        self.scalars(r["epoch"], {
            "loss/train": r["train_loss"], f"loss/{c}": r[f"{c}_loss"], "accuracy/train (running)": r["train_accuracy"],
            f"accuracy/{c}": r[f"{c}_accuracy"], "lr": r["lr"], "epoch_seconds": r["seconds"],
        })

    def scalars(self, epoch: int, values: dict) -> None:
        if self.tb is None:
            return
        for tag, v in values.items():
            if v is not None:
                self.tb.add_scalar(tag, v, epoch)
        self.tb.flush()

    def images(self, tag: str, grid: np.ndarray) -> None:
        """(N, H, W, 3) uint8 images, shown once as one TensorBoard image grid."""
        if self.tb is not None:
            self.tb.add_images(tag, grid, 0, dataformats="NHWC")
            self.tb.flush()

    def augmentation(self, images: np.ndarray, name: str, draws: int = 3) -> None:
        """The augmentation the run trains with, drawn on a few (H, W, 3) uint8 training images, for TensorBoard."""
        if self.tb is not None and name != "none":
            self.images(f"augmentation ({name})", augmentation_grid(images, name, draws))

    def close(self) -> None:
        self._file.close()
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def _writer(out: Path, first_epoch: int, quiet: bool):
    global _warned_no_tensorboard
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _warned_no_tensorboard and not quiet:
            print("note: the tensorboard package is not installed; logging to metrics.csv and train.log only "
                  "(pip install tensorboard)", file=sys.stderr)
        _warned_no_tensorboard = True
        return None
    # purge_step: a resumed run rewrites the epochs after its checkpoint; TensorBoard drops the old ones
    return SummaryWriter(log_dir=str(out), purge_step=first_epoch + 1 if first_epoch else None)
