"""The run folder: the single source of truth for one training run. Reports read only these files.

RUN_DIR/
  config.yaml         the fully resolved Config (config.py), as trained
  metrics.csv         one row per epoch: epoch, train_loss, train_accuracy, val_loss, val_accuracy, lr, seconds
  summary.json        results and provenance (train.Trainer.finish); `status` is "finished" or "failed"
  curves.png          loss and accuracy, train against val
  best.safetensors    the restored best weights (on val_loss)
  last.ckpt           everything needed to resume (train.py)
  predictions.npz     labels (N,) int64, probs (N, C) float32 of the restored model on the val split,
                      worst_index (k,) int64 and worst_images (k, H, W, 3) uint8: the most confidently
                      misclassified val images
  samples.npz         images (n, H, W, 3) uint8: a few training images, for the augmentation figure

A study folder (compare, ablate) holds run folders at DIR/<variant>/seed-<seed>/.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .errors import UserError

METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")


@dataclass
class Run:
    path: Path
    config: dict
    summary: dict
    metrics: list[dict] = field(default_factory=list)

    @property
    def variant(self) -> str:
        return self.summary.get("variant") or self.config.get("model")

    @property
    def seed(self) -> int:
        return int(self.summary.get("seed", self.config.get("seed")))

    def column(self, name: str) -> np.ndarray:
        return np.array([row[name] for row in self.metrics], dtype=float)

    def predictions(self) -> dict | None:
        p = self.path / "predictions.npz"
        if not p.exists():
            return None
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def samples(self) -> np.ndarray | None:
        p = self.path / "samples.npz"
        if not p.exists():
            return None
        with np.load(p, allow_pickle=False) as z:
            return z["images"]


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        try:
            out.append({k: (int(row[k]) if k == "epoch" else float(row[k])) for k in METRIC_COLUMNS})
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path} is damaged (bad row {row!r}); delete the run folder and train again") from None
    return out


def is_finished(path: Path) -> bool:
    p = Path(path) / "summary.json"
    if not p.exists():
        return False
    try:
        return json.loads(p.read_text()).get("status") == "finished"
    except (OSError, ValueError):
        return False


def load_run(path: str | Path) -> Run:
    path = Path(path)
    try:
        summary = json.loads((path / "summary.json").read_text())
        config = yaml.safe_load((path / "config.yaml").read_text())
    except FileNotFoundError as e:
        raise UserError(f"{path} is not a finished run folder (missing {Path(e.filename).name}); train it first") from None
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise UserError(f"cannot read run folder {path}: {e}") from None
    return Run(path=path, config=config, summary=summary, metrics=read_metrics(path / "metrics.csv"))


def find_runs(study_dir: str | Path) -> list[Run]:
    """All finished runs under a study folder (DIR/<variant>/seed-<seed>/), sorted by variant then seed."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise UserError(f"study folder {study_dir} does not exist; give the --out folder of a compare or ablate")
    runs = [load_run(p.parent) for p in sorted(study_dir.glob("*/seed-*/summary.json")) if is_finished(p.parent)]
    return sorted(runs, key=lambda r: (r.variant, r.seed))
