"""What a run tells: the terminal (Keras-like epoch lines), RUN_DIR/train.log (the same lines, kept), and the
trackers. TensorBoard event files in the run folder hold the per-epoch values and, once the run has finished, its
hparams (tracker_params: its result-relevant settings) with its final metrics (tracker_metrics), one HParams
session per run folder, so `tensorboard --logdir runs/compare` compares every run of a study side by side. Without
the `tensorboard` package the run keeps going with metrics.csv alone (one note says so). With the `mlflow`
setting the same values go to MLflow as well (mlflow_log.py).

The final values are read back from the summary.json the trainer wrote when the log closes, so the trainer's only
hook is the RunLog it opens with the run's config and closes at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import rundir
from .config import NON_RESULT_FIELDS, Config
from .data.augment import augmentation_grid
from .errors import UserError
from .progress import echo
from .text import say

_warned_no_tensorboard = False


class RunLog:
    def __init__(self, out: Path, quiet: bool = False, verbose: bool = False, first_epoch: int = 0,
                 cfg: Config | None = None):
        self.out, self.quiet, self.verbose, self.cfg = Path(out), quiet, verbose, cfg
        self._file = open(self.out / "train.log", "a", encoding="utf-8")
        self.tb = _writer(self.out, first_epoch, quiet)
        self.mlflow = None
        if cfg is not None and cfg.mlflow:
            from .mlflow_log import MlflowRun

            self.mlflow = MlflowRun(cfg.mlflow, self.out, tracker_params(cfg), self.warn)

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
        if self.mlflow is not None:  # MLflow's names: metrics.csv's columns
            self.mlflow.metrics({k: v for k, v in r.items() if k != "epoch"}, r["epoch"])

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
        """The trackers get the run's end (a finished run: its hparams and final metrics), then the files close."""
        if self.cfg is not None and (self.tb is not None or self.mlflow is not None):
            self._final()
        self._file.close()
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    def _final(self) -> None:
        try:
            summary = rundir.read_summary(self.out)
        except UserError as e:
            self.warn(f"warning: the trackers get no final values: {e}")
            return
        final, step = tracker_metrics(summary), summary.epochs_run or 0
        variant = {"variant": summary.variant or self.cfg.model}  # what a study's runs are told apart by
        if self.tb is not None and summary.finished:
            try:
                self.hparams(variant | tracker_params(self.cfg), final, step)
            except Exception as e:  # noqa: BLE001  (the run has finished and is written; only its hparams are missing)
                self.warn(f"warning: TensorBoard got no hparams ({type(e).__name__}: {e})")
        if self.mlflow is not None:
            self.mlflow.finish(summary.status, final, step, variant)

    def hparams(self, params: dict, final: dict, step: int) -> None:
        """One HParams session in this run folder's own event file (SummaryWriter.add_hparams would open a
        subfolder per call): the settings, and the final metrics as scalars beside the per-epoch ones."""
        from torch.utils.tensorboard.summary import hparams

        values = {k: v for k, v in final.items() if v is not None}
        for summary in hparams(params, values):
            self.tb.file_writer.add_summary(summary)
        self.scalars(step, values)


def tracker_params(cfg: Config) -> dict:
    """The settings that change what a run computes (every one, so runs compare on any of them), each plugin
    setting by name, as the scalars and strings trackers take."""
    skip = NON_RESULT_FIELDS | {"plugin_settings"}
    values = {k: v for k, v in cfg.to_dict().items() if k not in skip} | dict(cfg.plugin_settings)
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in values.items()}


def tracker_metrics(s: rundir.Summary) -> dict:
    """A run's final values: its restored best model on val/ (the test set when a selection split chose), on the
    selection split, on a clean sample of its training images, and the measured gap (clean train - val)."""
    gap = None
    if s.clean_train_accuracy is not None and s.restored_val_accuracy is not None:
        gap = s.clean_train_accuracy - s.restored_val_accuracy
    return {"final/val_accuracy": s.restored_val_accuracy, "final/val_loss": s.restored_val_loss,
            "final/select_accuracy": s.restored_select_accuracy, "final/clean_train_accuracy": s.clean_train_accuracy,
            "final/gap": gap, "final/best_epoch": s.best_epoch, "final/epochs_run": s.epochs_run}


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
