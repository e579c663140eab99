"""The run folder: the single source of truth for one training run. Reports read only these files.

RUN_DIR/
  config.yaml         the fully resolved Config (config.py), as trained; a valid --config file
  summary.json        results and provenance; `status`: running, interrupted, failed or finished
  metrics.csv         one row per epoch (METRIC_COLUMNS)
  train.log           the epoch lines and messages the terminal showed
  events.out.tfevents.*  the same per-epoch values for TensorBoard
  curves.png          loss and accuracy, train against the split that chooses
  best.safetensors    the restored best weights (on the choosing split's loss)
  last.ckpt           everything needed to resume (train.py); removed when the run finishes unless keep_last
  predictions.npz     labels (N,) int64, probs (N, C) float32 of the restored model on the val split,
                      worst_index (k,) int64 and worst_images (k, H, W, 3) uint8: the most confidently
                      misclassified val images
  samples.npz         images (n, H, W, 3) uint8: a few training images, for the augmentation figure

A study folder (compare, ablate) holds run folders at DIR/<variant>/seed-<seed>/ beside study.json, report.md,
report.html and figures/.
"""

from __future__ import annotations

import csv
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .errors import UserError

# train_* are Keras's running values (training mode, augmentation on); val_* are measured on val/ and select_*
# on the held-out selection split, at every epoch end, in eval mode. With --selection-split the selection split
# chooses and val_* stay empty (val/ is the test set, evaluated once at the end); without it val/ chooses.
METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "select_loss",
                  "select_accuracy", "lr", "seconds")
RUN_FILES = frozenset({"config.yaml", "summary.json", "metrics.csv", "train.log", "curves.png", "best.safetensors",
                       "last.ckpt", "predictions.npz", "samples.npz", "report.md", "report.html", "figures",
                       "model.onnx", "model.pt"})  # the last four: `reglab report RUN_DIR` and `reglab export`
TENSORBOARD_PREFIX = "events.out.tfevents."
STATUSES = ("running", "interrupted", "failed", "finished")


def is_run_file(name: str) -> bool:
    return name in RUN_FILES or name.startswith(TENSORBOARD_PREFIX) or name.startswith(".")


# ------------------------------------------------------------------------------------------ what a folder is


def classify(path: str | os.PathLike) -> str:
    """'absent', 'file', 'empty', 'run', 'study' or 'foreign' (a folder reglab did not make). A symlink is
    judged by what it points to."""
    path = Path(path)
    if not path.exists():
        return "file" if path.is_symlink() else "absent"  # a dangling link is not a folder to write into
    if not path.is_dir():
        return "file"
    try:
        entries = [e for e in os.scandir(path)]
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}; check its permissions") from None
    visible = [e.name for e in entries if not e.name.startswith(".")]
    if not visible:
        return "empty"
    if {"config.yaml", "summary.json", "last.ckpt"} & set(visible) and all(is_run_file(n) for n in visible):
        return "run"
    study = path / "study.json"
    if study.is_file():
        try:
            meta = json.loads(study.read_text())
            if isinstance(meta, dict) and meta.get("kind") in ("compare", "ablate", "train"):
                return "study"
        except (OSError, ValueError):
            pass
        return "foreign"
    if "report.md" in visible or "report.html" in visible:
        return "foreign"  # a report without the study.json that reglab writes beside it: not ours to replace
    for name in visible:
        sub = path / name
        if name == "figures" and sub.is_dir():
            continue
        if not sub.is_dir() or sub.is_symlink():
            return "foreign"
        seeds = [e for e in os.scandir(sub) if not e.name.startswith(".")]
        if not seeds or not all(e.is_dir() and e.name.startswith("seed-") and classify(e.path) in ("run", "empty")
                                for e in seeds):
            return "foreign"
    return "study"


def contents(path: Path, limit: int = 3) -> str:
    names = sorted(e.name for e in os.scandir(path) if not e.name.startswith("."))
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def sweep_temporaries(folder: Path) -> None:
    """Remove temporary files that atomic writes of a killed process left behind (called under the lock)."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- a run


@dataclass
class Run:
    path: Path
    config: dict
    summary: dict
    metrics: list[dict] = field(default_factory=list)
    problem: str = ""  # why this run cannot be used (damaged files), or ""

    @property
    def status(self) -> str:
        return "damaged" if self.problem else str(self.summary.get("status", "unknown"))

    @property
    def variant(self) -> str:
        return self.summary.get("variant") or self.config.get("model") or self.path.parent.name

    @property
    def seed(self) -> int:
        seed = self.summary.get("seed", self.config.get("seed"))
        if seed is None:
            seed = int(self.path.name.removeprefix("seed-")) if self.path.name.removeprefix("seed-").isdigit() else -1
        return int(seed)

    def column(self, name: str) -> np.ndarray:
        return np.array([np.nan if row.get(name) is None else row[name] for row in self.metrics], dtype=float)

    def predictions(self) -> dict | None:
        return read_predictions(self.path / "predictions.npz")

    def samples(self) -> np.ndarray | None:
        p = self.path / "samples.npz"
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return z["images"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None  # only an illustration: a damaged one is left out of the figure


def read_predictions(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # a truncated .npz is a bad zip
        raise UserError(f"{path} is damaged ({type(e).__name__}: {e})") from None
    probs, labels = out.get("probs"), out.get("labels")
    if probs is None or labels is None or probs.ndim != 2 or labels.shape != (probs.shape[0],) \
            or (labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1])):
        raise UserError(f"{path} is damaged (labels and probabilities missing or of inconsistent shapes)")
    return out


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path} is damaged ({e})") from None
    out = []
    for n, row in enumerate(rows, start=2):
        try:
            parsed = {}
            for k in METRIC_COLUMNS:
                text = row.get(k)
                if k == "epoch":
                    parsed[k] = int(text)
                else:  # an absent column (older runs) or an empty cell (not measured) is None
                    parsed[k] = float(text) if text not in (None, "") else None
            out.append(parsed)
        except (TypeError, ValueError):
            raise UserError(f"{path} is damaged (line {n} is not a row of numbers)") from None
    if [r["epoch"] for r in out] != list(range(1, len(out) + 1)):
        raise UserError(f"{path} is damaged (its epochs are not 1, 2, 3, ...)")
    return out


def read_summary(path: Path) -> dict:
    try:
        summary = json.loads((path / "summary.json").read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is not a run folder (no summary.json); train it first") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path / 'summary.json'} is damaged ({type(e).__name__}: {e})") from None
    if not isinstance(summary, dict) or summary.get("status") not in STATUSES:
        raise UserError(f"{path / 'summary.json'} is damaged (no valid status)")
    return summary


def status(path: Path) -> str | None:
    """The run's status from summary.json; None when there is none or it is unreadable."""
    try:
        return read_summary(Path(path))["status"]
    except UserError:
        return None


def is_finished(path: Path) -> bool:
    return status(path) == "finished"


def load_run(path: str | Path, check_predictions: bool = True) -> Run:
    """A run folder, checked: UserError naming the damaged file and why."""
    path = Path(path)
    summary = read_summary(path)
    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is not a complete run folder (no config.yaml)") from None
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise UserError(f"{path / 'config.yaml'} is damaged ({type(e).__name__})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path / 'config.yaml'} is damaged (not a mapping)")
    run = Run(path=path, config=config, summary=summary, metrics=read_metrics(path / "metrics.csv"))
    if summary["status"] == "finished":
        for key in ("restored_val_accuracy", "epochs_run"):
            v = summary.get(key)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise UserError(f"{path / 'summary.json'} is damaged ({key} missing or not a number)")
        if check_predictions:
            run.predictions()
    return run


def scan_study(study_dir: str | Path) -> list[Run]:
    """Every run folder under a study (DIR/<variant>/seed-<seed>/), whatever its status; a damaged one is kept
    with its `problem`, so a report names it instead of silently leaving it out. Sorted by variant then seed."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise UserError(f"study folder {study_dir} does not exist; give the --out folder of a compare or ablate")
    runs = []
    for folder in sorted(p for p in study_dir.glob("*/seed-*") if p.is_dir()):
        if not any((folder / f).exists() for f in ("summary.json", "config.yaml", "last.ckpt")):
            continue  # an empty folder: a run not started
        try:
            runs.append(load_run(folder))
        except UserError as e:
            cfg = {}
            try:
                cfg = yaml.safe_load((folder / "config.yaml").read_text()) or {}
            except (OSError, ValueError, yaml.YAMLError):
                pass
            summary = {"variant": folder.parent.name}
            if not (folder / "summary.json").exists():  # killed before its first summary: not damaged
                runs.append(Run(folder, cfg if isinstance(cfg, dict) else {}, {**summary, "status": "running"}))
                continue
            runs.append(Run(folder, cfg if isinstance(cfg, dict) else {}, summary, problem=str(e)))
    return sorted(runs, key=lambda r: (r.variant, r.seed))


def find_runs(study_dir: str | Path) -> list[Run]:
    """The finished, undamaged runs under a study folder, sorted by variant then seed."""
    return [r for r in scan_study(study_dir) if r.status == "finished"]
