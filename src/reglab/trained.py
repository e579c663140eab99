"""Use what you trained: a finished run folder as a model that classifies images, and its export.

    run = load_run("runs/compare/regularized/seed-42")   # restored best weights, classes, history
    probs = run.predict(["cat.jpg", "dog.png"])           # (N, classes), exactly the training pipeline's resize

`predict_to_csv` is `reglab predict`: images and folders in, one CSV row per image out; `export_run` is
`reglab export`. Images are decoded and resized as training decoded them (data/decode.py), and the model runs
at the precision the run was evaluated at, so predicting a run's own val/ reproduces its accuracy.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import atomic, rundir, signals
from .checkpoint import check_compatible, load_weights
from .config import Config, from_dict
from .data import CLASS_NAMES
from .data.decode import DecodeError, _to_rgb_array, decode_image, resize_bilinear
from .data.folder import image_extensions, show
from .data.loader import to_float
from .device import autocast, pick_device
from .errors import UserError
from .models import build_model
from .progress import echo, progress
from .readfile import regular_file_error
from .text import say


@dataclass
class TrainedRun:
    """A finished run: its restored best model (eval mode), classes and history."""

    path: Path
    config: Config
    classes: list[str]  # class folder names, in label order
    summary: rundir.Summary
    history: list[dict]  # metrics.csv rows, one per epoch
    model: torch.nn.Module
    device: torch.device
    precision: str

    @property
    def class_names(self) -> list[str]:
        """Readable names where known (Imagenette's WordNet ids), else the folder names."""
        return [CLASS_NAMES.get(c, c) for c in self.classes]

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def preprocess(self, image) -> np.ndarray:
        """A path, a PIL image or an (H, W, 3) uint8 array -> (size, size, 3) uint8, as training resized it."""
        if isinstance(image, (str, os.PathLike)):
            return decode_image(str(image), self.image_size)
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise UserError(f"an image array must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
            return resize_bilinear(image, self.image_size)
        return resize_bilinear(_to_rgb_array(image), self.image_size)  # a PIL image

    @torch.no_grad()
    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) uint8 -> (N, classes) float32 probabilities."""
        x = to_float(torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device), self.config.channels_last)
        with autocast(self.precision, self.device):
            logits = self.model(x).float()
        return logits.softmax(1).cpu().numpy()

    def predict(self, images, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (N, classes) for images: paths, PIL images or uint8 (H, W, 3) arrays."""
        batch = [self.preprocess(im) for im in images]
        if not batch:
            return np.zeros((0, len(self.classes)), np.float32)
        return np.concatenate([self.predict_batch(np.stack(batch[i:i + batch_size]))
                               for i in range(0, len(batch), batch_size)])


def load_run(path: str | Path, device: str = "cpu", precision: str | None = None) -> TrainedRun:
    """Open a finished run folder for prediction; one clear UserError if it is not one."""
    path = Path(path)
    if rundir.classify(path) != "run":
        raise UserError(f"{path} is not a run folder; give a folder written by reglab train (or a "
                        "<variant>/seed-<seed> folder of a study)")
    run = rundir.load_run(path, check_predictions=False)
    if run.status != "finished":
        raise UserError(f"run {path} is not finished (status {run.status}); resume it with reglab train --resume "
                        f"{path} first")
    cfg = from_dict(run.config)
    classes = list(run.summary.dataset.classes)
    if not classes:
        raise UserError(f"{path / 'summary.json'} does not list the classes; this run cannot be used to predict")
    dev = pick_device(device)
    model = build_model(cfg, len(classes))
    weights = load_weights(path / "best.safetensors")
    check_compatible(path / "best.safetensors", model, weights)
    model.load_state_dict(weights)
    model = model.to(dev).eval()
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # the precision the run evaluated at, so its own val/ gives its own accuracy (older runs: fp32)
    used = precision or run.summary.precision or "fp32"
    if precision is None and used == "bf16" and dev.type != (run.summary.device or dev.type):
        used = "fp32"  # the run's bf16 on another kind of device would not reproduce it either
    return TrainedRun(path, cfg, classes, run.summary, run.metrics, model, dev, used)


def find_images(inputs: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Image files named or found (recursively, sorted) under folders; and (input, reason) for inputs that are
    neither."""
    exts = image_extensions()
    found, problems = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [os.path.join(root, n) for n in sorted(names)
                          if not n.startswith(".") and os.path.splitext(n)[1].lower() in exts]
        elif not (why := regular_file_error(p)):
            found.append(str(p))
        else:
            problems.append((item, "no such file or folder" if why == "no such file" else why))
    return found, problems


def predict_to_csv(run_dir: Path, inputs: list[str], out: Path, top_k: int = 3, device: str = "auto",
                   precision: str | None = None, batch_size: int = 256, quiet: bool = False) -> dict:
    """`reglab predict`: a CSV with one row per image (path, predicted class, its probability, top-k)."""
    paths, problems = find_images(inputs)  # check first: the inputs and --out before the model is loaded
    for item, why in problems:
        raise UserError(f"cannot read input {show(item)}: {why}; give image files or folders")
    if not paths:
        raise UserError(f"no images found in {', '.join(map(show, inputs))}; give image files or folders")
    run = load_run(run_dir, device, precision)
    atomic.check_output_file(out, "--out")
    k = min(top_k, len(run.classes))
    rows, skipped = [], []
    with progress(not quiet) as bar:
        task = bar.add_task("predicting", total=len(paths), info="")
        for start in range(0, len(paths), batch_size):
            chunk, images = [], []
            for path in paths[start:start + batch_size]:
                try:
                    images.append(decode_image(path, run.image_size))
                    chunk.append(path)
                except DecodeError as e:
                    skipped.append((path, str(e)))
            if images:
                probs = run.predict_batch(np.stack(images))
                for path, p in zip(chunk, probs):
                    order = np.argsort(-p, kind="stable")[:k]
                    row = {"path": show(path), "predicted_class": run.classes[order[0]],
                           "predicted_name": run.class_names[order[0]], "probability": f"{p[order[0]]:.6f}"}
                    for rank, c in enumerate(order, 1):
                        row[f"class_{rank}"], row[f"prob_{rank}"] = run.classes[c], f"{p[c]:.6f}"
                    rows.append(row)
            bar.advance(task, len(paths[start:start + batch_size]))
    if not rows:
        raise UserError(f"none of the {len(paths)} image(s) could be decoded (first: {show(skipped[0][0])}: "
                        f"{skipped[0][1]})")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(out, buf.getvalue())
    for path, why in skipped:
        say(f"skipped {show(path)}: {why}")
    echo(f"predicted {len(rows)} image(s) with {run_dir} -> {out}"
         + (f"; {len(skipped)} unreadable image(s) skipped (listed above)" if skipped else ""), quiet)
    return {"rows": len(rows), "skipped": skipped}


def export_run(run_dir: Path, fmt: str, out: Path | None = None) -> Path:
    """`reglab export`: the restored best model with its preprocessing inside, for use without reglab."""
    from . import __version__
    from .exported import export_model

    if out is None:
        out = run_dir / ("model.onnx" if fmt == "onnx" else "model.pt")
    run = load_run(run_dir, "cpu", precision="fp32")
    atomic.check_output_file(out, "export output")  # check first: before the model is traced and written
    meta = {"reglab_version": __version__, "run": str(run_dir), "model": run.config.model,
            "variant": run.summary.variant, "seed": run.config.seed,
            "restored_val_accuracy": run.summary.restored_val_accuracy, "class_folders": run.classes}
    with signals.phase(f"exporting {run_dir} to {out}", "export"):
        return export_model(run.model, run.image_size, run.class_names, fmt, out, metadata=meta)
