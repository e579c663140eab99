"""The run folder: the single source of truth for one training run. Reports read only these files.
`RunWriter` is their one writer (every file atomically), except the checkpoints (checkpoint.py) and the logs
(runlog.py); `Summary` is summary.json's schema; the readers are below.

RUN_DIR/
  config.yaml         the fully resolved Config (config.py), as trained; a valid --config file
  summary.json        results and provenance; `status`: running, interrupted, failed or finished
  metrics.csv         one row per epoch (METRIC_COLUMNS)
  train.log           the epoch lines and messages the terminal showed
  events.out.tfevents.*  the same per-epoch values for TensorBoard, and a finished run's hparams (runlog.py)
  mlflow.json         where the run logs to MLflow and its MLflow run id (mlflow_log.py); only with --mlflow
  curves.png          loss and accuracy, train against the split that chooses
  best.safetensors    the restored best weights (on the choosing split's loss)
  last.ckpt           everything needed to resume (checkpoint.py); removed when the run finishes unless keep_last
  predictions.npz     labels (N,) int64, probs (N, C) float32 of the restored model on the val split,
                      worst_index (k,) int64 and worst_images (k, H, W, 3) uint8: the most confidently
                      misclassified val images
  samples.npz         images (n, H, W, 3) uint8 and labels (n,) int64: a few training images, for the
                      augmentation figure; augmented (n, draws, H, W, 3) uint8: `draws` draws of the run's own
                      augmentation of each (absent when the run trained without augmentation and in older runs)

A study folder (compare, ablate) holds run folders at DIR/<variant>/seed-<seed>/ beside study.json, report.md,
report.html and figures/.

Every file here is read back through one reader per kind (read_config, read_summary, read_metrics,
read_predictions, read_samples, read_study_file; checkpoint.py reads the checkpoints), built on readfile's
read_own_*: bounded, regular files only, never blocking; any damage is the one line `{path} is damaged ({what});
{what to do}`, in every command that reads the file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import yaml

from . import atomic, regularizers
from .config import Config, dump_yaml
from .errors import UserError
from .readfile import damaged, read_head, read_own_bytes, read_own_text

# train_* are Keras's running values (training mode, augmentation on); val_* are measured on val/ and select_*
# on the held-out selection split, at every epoch end, in eval mode. With --selection-split the selection split
# chooses and val_* stay empty (val/ is the test set, evaluated once at the end); without it val/ chooses.
METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "select_loss",
                  "select_accuracy", "lr", "seconds")
# the last epoch's values that summary.json repeats
LAST_ROW = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "select_loss", "select_accuracy")
RUN_FILES = frozenset({"config.yaml", "summary.json", "metrics.csv", "train.log", "curves.png", "best.safetensors",
                       "last.ckpt", "predictions.npz", "samples.npz", "mlflow.json", "report.md", "report.html",
                       "figures", "model.onnx", "model.pt"})  # the last five: `reglab report RUN_DIR`, `reglab export`
TENSORBOARD_PREFIX = "events.out.tfevents."
WORST_IMAGES = 16  # the most confidently misclassified val images kept in predictions.npz


# ------------------------------------------------------------------------------------------ the schema

RunStatus = Literal["running", "interrupted", "failed", "finished"]
STATUSES: tuple[str, ...] = get_args(RunStatus)
Design = Literal["val", "selection split"]  # the split that chose the best epoch


class Damaged(ValueError):
    """A file reglab wrote back is not what it wrote: the reader names the file and says what to do."""


def _typed(data: dict, key: str, kinds, default=None, *, low=None, high=None):
    """data[key] checked against `kinds` (and a range); absent or None gives `default`."""
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise Damaged(f"{key} is {value!r}, not a number")
    if not isinstance(value, kinds):
        raise Damaged(f"{key} is {_short(value)}, not {_kind_name(kinds)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise Damaged(f"{key} is {value!r}, not a finite number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise Damaged(f"{key} is {value!r}, outside its possible range [{low}, {high}]")
    return value


def _kind_name(kinds) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    names = {int: "an integer", float: "a number", str: "text", bool: "true or false", list: "a list",
             dict: "a mapping"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


NUMBER = (int, float)
FRACTION = dict(low=0.0, high=1.0)
NONNEG = dict(low=0)


@dataclass
class DatasetInfo:
    """The data a run was trained on, as it was: names, sizes, classes and identity (data/identity.py)."""

    name: str = "unknown"
    path: str = ""
    train_size: int | None = None
    val_size: int | None = None
    classes: list[str] = field(default_factory=list)  # class folder names, in label order
    class_names: list[str] = field(default_factory=list)  # readable names where known
    skipped: list[list[str]] = field(default_factory=list)  # [path, why] of images left out
    identity: dict | None = None  # {classes, counts, digests, fingerprint}; None in older runs
    selection_size: int | None = None  # training images held out to choose (0: val/ chose)
    train_used: int | None = None  # training images the run trained on

    @property
    def fingerprint(self) -> str | None:
        fp = (self.identity or {}).get("fingerprint")
        return fp if isinstance(fp, str) else None

    @classmethod
    def from_json(cls, d) -> "DatasetInfo":
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise Damaged(f"dataset is {_short(d)}, not a mapping")
        identity = d.get("identity")
        if identity is not None and not isinstance(identity, dict):
            raise Damaged("dataset.identity is not a mapping")
        return cls(name=str(_typed(d, "name", str, "unknown")), path=str(_typed(d, "path", str, "")),
                   train_size=_typed(d, "train_size", int, None, **NONNEG),
                   val_size=_typed(d, "val_size", int, None, **NONNEG),
                   classes=[str(c) for c in _typed(d, "classes", list, [])],
                   class_names=[str(c) for c in _typed(d, "class_names", list, [])],
                   skipped=[list(map(str, s)) for s in _typed(d, "skipped", list, []) if isinstance(s, (list, tuple))],
                   identity=identity,
                   selection_size=_typed(d, "selection_size", int, None, **NONNEG),
                   train_used=_typed(d, "train_used", int, None, **NONNEG))


@dataclass
class Provenance:
    """Where a result came from: times, the command, the machine and the software (provenance.environment())."""

    started: str | None = None
    ended: str | None = None
    command: str | None = None
    host: str | None = None
    platform: str | None = None
    cpu: str | None = None
    cpu_count: int | None = None
    cpu_native_bf16: bool | None = None
    gpu: str | None = None
    cuda: str | None = None
    device: str | None = None
    device_name: str | None = None
    precision: str | None = None
    software: dict = field(default_factory=dict)
    git: dict | None = None

    @classmethod
    def from_json(cls, d, top: dict) -> "Provenance":
        """`top`: the summary itself, whose top level held device, precision and software in older runs."""
        d = d if isinstance(d, dict) else {}
        get = lambda k, kinds: _typed(d, k, kinds, None) if d.get(k) is not None else _typed(top, k, kinds, None)  # noqa: E731
        software = d.get("software") if isinstance(d.get("software"), dict) else top.get("software")
        git = d.get("git")
        return cls(started=get("started", str), ended=get("ended", str), command=get("command", str),
                   host=get("host", str), platform=get("platform", str), cpu=get("cpu", str),
                   cpu_count=get("cpu_count", int), cpu_native_bf16=get("cpu_native_bf16", bool), gpu=get("gpu", str),
                   cuda=get("cuda", str), device=get("device", str), device_name=get("device_name", str),
                   precision=get("precision", str), software=software if isinstance(software, dict) else {},
                   git=git if isinstance(git, dict) else None)


@dataclass
class PluginInfo:
    """A user's regularizer a run used (regularizers.Origin): its name, its module, the source file it was read from
    and a sha256 of that source, and the distribution that installed it with its version (None when not one)."""

    name: str
    module: str
    file: str | None = None
    sha256: str | None = None
    distribution: str | None = None
    version: str | None = None

    @classmethod
    def from_json(cls, d) -> "PluginInfo":
        if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not isinstance(d.get("module"), str):
            raise Damaged(f"plugins holds {_short(d)}, not a plugin's name and module")
        return cls(name=d["name"], module=d["module"], file=_typed(d, "file", str), sha256=_typed(d, "sha256", str),
                   distribution=_typed(d, "distribution", str), version=_typed(d, "version", str))


def plugins_used(cfg: Config) -> list[PluginInfo]:
    """What summary.json records of each plugin regularizer active under `cfg` (regularizers.Origin)."""
    return [PluginInfo(name=r.name, **asdict(r.origin)) for r in regularizers.list_regularizers()
            if r.plugin and r.active(cfg)]


@dataclass
class Summary:
    """summary.json: one run's status, results and provenance. The trainer fills it; `to_json` is the file;
    `from_json` reads any version of it (the fallbacks for older runs live there and nowhere else) and refuses
    a damaged one (Damaged: what is wrong)."""

    status: str
    variant: str | None = None  # None in older runs: Run.variant falls back to the model
    model: str | None = None
    seed: int | None = None
    recipe: str | None = None
    failure: str | None = None
    chosen_on: str = "val"  # Design: the split that chose the best epoch
    dataset: DatasetInfo = field(default_factory=DatasetInfo)
    device: str | None = None
    device_name: str | None = None
    precision: str | None = None
    cohort: list[int] = field(default_factory=list)  # the seeds trained together in one packed network
    epochs_max: int | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None
    stopped_early: bool = False
    extensions: list[dict] = field(default_factory=list)  # --resume --epochs N: {from, to, at_epoch}
    # the last epoch's row (Keras's running train values; the split that chose)
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    select_loss: float | None = None
    select_accuracy: float | None = None
    # the restored best weights, evaluated at the end
    restored_val_loss: float | None = None
    restored_val_accuracy: float | None = None
    restored_val_correct: int | None = None
    clean_train_accuracy: float | None = None  # None in older runs: no measured gap
    clean_train_images: int = 0
    restored_select_loss: float | None = None
    restored_select_accuracy: float | None = None
    params_trainable: int | None = None
    params_non_trainable: int | None = None
    layers: list[dict] | None = None  # the Keras-style layer table, recorded at training time (models.layer_table)
    wall_seconds: float | None = None
    train_seconds: float | None = None
    train_images_per_second: float | None = None
    regularizers: list[str] | None = None  # words for the reports; None in the oldest runs
    plugins: list[PluginInfo] = field(default_factory=list)  # the users' regularizers it used
    provenance: Provenance = field(default_factory=Provenance)

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    def to_json(self) -> dict:
        # a diverged run's last losses are nan: JSON has no nan, and the reader refuses one as damage; its
        # `failure` says what happened
        out = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in asdict(self).items()}
        out["cohort"] = {"size": len(self.cohort), "seeds": list(self.cohort)}
        return out

    @classmethod
    def from_json(cls, d) -> "Summary":
        if not isinstance(d, dict):
            raise Damaged(f"it holds {_short(d)}, not a mapping")
        status = d.get("status")
        if status not in STATUSES:
            raise Damaged(f"no valid status ({_short(status)})")
        cohort = d.get("cohort")
        seeds = cohort.get("seeds") if isinstance(cohort, dict) else None
        if seeds is not None and not (isinstance(seeds, list) and all(isinstance(s, int) for s in seeds)):
            raise Damaged("cohort.seeds is not a list of seeds")
        layers = d.get("layers")
        if layers is not None:
            if not (isinstance(layers, list) and all(isinstance(r, dict) for r in layers)):
                raise Damaged("layers is not a list of layer rows")
            layers = [{**r, "output_shape": tuple(r.get("output_shape") or ())} for r in layers]  # JSON has lists
        regs = d.get("regularizers")
        if regs is not None and not isinstance(regs, list):
            raise Damaged("regularizers is not a list")
        ext = d.get("extensions")
        plugins = d.get("plugins") or []
        if not isinstance(plugins, list):
            raise Damaged("plugins is not a list")
        s = cls(
            status=status, variant=_typed(d, "variant", str), model=_typed(d, "model", str),
            seed=_typed(d, "seed", int, None, **NONNEG), recipe=_typed(d, "recipe", str),
            failure=None if d.get("failure") is None else str(d["failure"]),
            chosen_on=_typed(d, "chosen_on", str, "val"), dataset=DatasetInfo.from_json(d.get("dataset")),
            device=_typed(d, "device", str), device_name=_typed(d, "device_name", str),
            precision=_typed(d, "precision", str), cohort=list(seeds or []),
            epochs_max=_typed(d, "epochs_max", int, None, **NONNEG),
            epochs_run=_typed(d, "epochs_run", int, None, **NONNEG),
            best_epoch=_typed(d, "best_epoch", int, None, **NONNEG),
            stopped_early=bool(_typed(d, "stopped_early", bool, False)),
            extensions=[e for e in ext if isinstance(e, dict)] if isinstance(ext, list) else [],
            train_loss=_typed(d, "train_loss", NUMBER), train_accuracy=_typed(d, "train_accuracy", NUMBER, **FRACTION),
            val_loss=_typed(d, "val_loss", NUMBER), val_accuracy=_typed(d, "val_accuracy", NUMBER, **FRACTION),
            select_loss=_typed(d, "select_loss", NUMBER),
            select_accuracy=_typed(d, "select_accuracy", NUMBER, **FRACTION),
            restored_val_loss=_typed(d, "restored_val_loss", NUMBER, low=0.0),
            restored_val_accuracy=_typed(d, "restored_val_accuracy", NUMBER, **FRACTION),
            restored_val_correct=_typed(d, "restored_val_correct", int, None, **NONNEG),
            clean_train_accuracy=_typed(d, "clean_train_accuracy", NUMBER, **FRACTION),
            clean_train_images=_typed(d, "clean_train_images", int, 0, **NONNEG),
            restored_select_loss=_typed(d, "restored_select_loss", NUMBER, low=0.0),
            restored_select_accuracy=_typed(d, "restored_select_accuracy", NUMBER, **FRACTION),
            params_trainable=_typed(d, "params_trainable", int, None, **NONNEG),
            params_non_trainable=_typed(d, "params_non_trainable", int, None, **NONNEG),
            layers=layers, wall_seconds=_typed(d, "wall_seconds", NUMBER, None, low=0.0),
            train_seconds=_typed(d, "train_seconds", NUMBER, None, low=0.0),
            train_images_per_second=_typed(d, "train_images_per_second", NUMBER, None, low=0.0),
            regularizers=[str(r) for r in regs] if regs is not None else None,
            plugins=[PluginInfo.from_json(p) for p in plugins],
            provenance=Provenance.from_json(d.get("provenance"), d))
        # values that must agree with each other
        n = s.dataset.val_size
        if s.restored_val_correct is not None and n is not None and s.restored_val_correct > n:
            raise Damaged(f"restored_val_correct {s.restored_val_correct} exceeds the {n} val images")
        if s.restored_val_correct is None and s.restored_val_accuracy is not None and n:
            s.restored_val_correct = int(round(s.restored_val_accuracy * n))  # older runs stored the fraction only
        if s.chosen_on not in get_args(Design):
            raise Damaged(f"chosen_on is {_short(s.chosen_on)}")
        if s.finished:
            missing = [k for k in ("restored_val_accuracy", "epochs_run") if getattr(s, k) is None]
            if missing:
                raise Damaged(f"a finished run without {', '.join(missing)}")
        return s


def is_run_file(name: str) -> bool:
    return name in RUN_FILES or name.startswith(TENSORBOARD_PREFIX) or name.startswith(".")


# ------------------------------------------------------------------------------------------ the writer


class RunWriter:
    """Writes one run folder's files, each atomically. The trainer tells it when the run starts (`config`,
    `summary`), when an epoch ended (`epoch_ended`) and when the run ended (`finished`)."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)

    def config(self, cfg: Config) -> None:
        atomic.write_text(self.out / "config.yaml", dump_yaml(cfg))

    def epoch_ended(self, rows: list[dict]) -> None:
        """metrics.csv with every epoch so far (rewritten: a resumed run's rows are its checkpoint's)."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k] if k == "epoch" else repr(float(r[k])))
                        for k in METRIC_COLUMNS})
        atomic.write_text(self.out / "metrics.csv", buf.getvalue())

    def summary(self, summary: Summary) -> None:
        atomic.write_json(self.out / "summary.json", summary.to_json())

    def predictions(self, labels: np.ndarray, probs: np.ndarray, images: np.ndarray) -> None:
        """The restored model on val/: its labels, probabilities and (from `images`, the val images) the most
        confidently misclassified ones."""
        pred = probs.argmax(1)
        wrong = np.flatnonzero(pred != labels)
        worst = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:WORST_IMAGES]
        self._npz("predictions.npz", labels=labels, probs=probs.astype(np.float32), worst_index=worst,
                  worst_images=images[worst])

    def samples(self, images: np.ndarray, labels: np.ndarray, augmented: np.ndarray | None) -> None:
        """A few training images, and the run's own augmentation of them (None: it trained without)."""
        extra = {} if augmented is None else {"augmented": augmented}
        self._npz("samples.npz", images=images, labels=labels, **extra)

    def curves(self, rows: list[dict], title: str) -> None:
        from . import curves  # matplotlib: imported only by the run's end

        curves.plot_curves(rows, self.out / "curves.png", title=title)

    def finished(self, summary: Summary, rows: list[dict], predictions: dict, samples: dict) -> None:
        """The run's end: predictions.npz and samples.npz (the keyword arguments of `predictions` and `samples`),
        curves.png, then summary.json, whose status says the run ended."""
        self.predictions(**predictions)
        self.samples(**samples)
        if rows:
            self.curves(rows, f"{summary.variant} (seed {summary.seed})")
        self.summary(summary)

    def _npz(self, name: str, **arrays) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic.write_bytes(self.out / name, buf.getvalue())


# ------------------------------------------------------------------------------------------ what a folder is


FolderKind = Literal["absent", "file", "empty", "run", "study", "foreign"]


REPORT_GENERATOR = '<meta name="generator" content="reglab">'  # in the head of every report.html reglab writes


def _our_report(path: Path) -> bool:
    """FOLDER holds report.md and report.html as reglab writes them (the HTML names its generator at its top)."""
    return (path / "report.md").is_file() and REPORT_GENERATOR.encode() in read_head(path / "report.html", 1024)


def classify(path: str | os.PathLike) -> FolderKind:
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
    beside = {"figures"}  # what a study holds beside its run folders
    if "study.json" in visible:
        try:
            return "study" if read_study_file(path, "") is not None else "foreign"
        except UserError:  # damaged: a study if its runs say so, and the study's own reader then names the damage
            beside |= {"study.json", "report.md", "report.html"}
    elif "report.md" in visible or "report.html" in visible:
        if not _our_report(path):
            return "foreign"  # a report reglab did not write (and no study.json): not ours to replace
        beside |= {"report.md", "report.html"}  # runs trained one by one (the API) and reported: still a study
    for name in visible:
        sub = path / name
        if name in beside and (name != "figures" or sub.is_dir()):
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
    summary: Summary
    metrics: list[dict] = field(default_factory=list)
    problem: str = ""  # why this run cannot be used (damaged files), or ""

    @property
    def status(self) -> str:
        return "damaged" if self.problem else self.summary.status

    @property
    def variant(self) -> str:
        return self.summary.variant or self.config.get("model") or self.path.parent.name

    @property
    def seed(self) -> int:
        seed = self.summary.seed if self.summary.seed is not None else self.config.get("seed")
        if not isinstance(seed, int):
            seed = int(self.path.name.removeprefix("seed-")) if self.path.name.removeprefix("seed-").isdigit() else -1
        return int(seed)

    @property
    def epochs_max(self) -> int | None:
        cap = self.summary.epochs_max if self.summary.epochs_max is not None else self.config.get("epochs")
        return cap if isinstance(cap, int) else None

    def column(self, name: str) -> np.ndarray:
        return np.array([np.nan if row.get(name) is None else row[name] for row in self.metrics], dtype=float)

    def predictions(self) -> dict | None:
        """predictions.npz's arrays (None when absent), read once: a report asks for them more than once."""
        if "_predictions" not in self.__dict__:
            self.__dict__["_predictions"] = read_predictions(self.path / "predictions.npz")
        return self.__dict__["_predictions"]

    def samples(self) -> dict[str, np.ndarray] | None:
        """samples.npz's arrays (images, and the augmented draws where the run recorded them); None when absent
        or damaged: only an illustration, a damaged one is left out of the figure."""
        try:
            return read_arrays(self.path / "samples.npz")
        except UserError:
            return None


# ------------------------------------------------------------------------------------------ the readers

RUN_TODO = "delete the run folder and train it again"
TEXT_BYTES = 16 << 20  # config.yaml, summary.json, study.json: kilobytes as reglab writes them
METRICS_BYTES = 64 << 20  # a line per epoch
ARRAYS_BYTES = 8 << 30  # predictions.npz, samples.npz: val/ probabilities and a few images


def _first_line(e: Exception) -> str:
    text = str(getattr(e, "problem", None) or e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _json(path: Path, todo: str):
    """The JSON value in `path` (FileNotFoundError when absent); damage is one line."""
    text = read_own_text(path, TEXT_BYTES, todo)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: brackets nested thousands deep
        raise damaged(path, f"not JSON: {_first_line(e)}", todo) from None


def read_config(run_dir: str | Path, todo: str = RUN_TODO) -> dict | None:
    """RUN_DIR/config.yaml as the mapping it holds, None when absent; damage is one line ending in `todo`."""
    file = Path(run_dir) / "config.yaml"
    try:
        text = read_own_text(file, TEXT_BYTES, todo)
    except FileNotFoundError:
        return None
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as e:
        raise damaged(file, f"not YAML: {_first_line(e)}", todo) from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise damaged(file, f"it holds {_short(data)}, not a mapping of settings", todo)
    return data


def read_arrays(path: Path, todo: str = RUN_TODO) -> dict[str, np.ndarray] | None:
    """The arrays of an .npz reglab wrote (predictions.npz, samples.npz), None when absent; never a pickle."""
    try:
        data = read_own_bytes(path, ARRAYS_BYTES, todo)
    except FileNotFoundError:
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, MemoryError) as e:  # truncated: a bad zip
        raise damaged(path, f"{type(e).__name__}: {_first_line(e)}", todo) from None


def read_predictions(path: Path, todo: str = RUN_TODO) -> dict | None:
    out = read_arrays(path, todo)
    if out is None:
        return None
    probs, labels = out.get("probs"), out.get("labels")
    if probs is None or labels is None or probs.ndim != 2 or labels.shape != (probs.shape[0],) \
            or labels.dtype.kind not in "iu" or probs.dtype.kind != "f" \
            or (labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1])):
        raise damaged(path, "labels and probabilities missing or of inconsistent shapes", todo)
    return out


def read_metrics(path: Path, todo: str = RUN_TODO) -> list[dict]:
    try:
        text = read_own_text(path, METRICS_BYTES, todo)
    except FileNotFoundError:
        return []
    if text and not text.endswith("\n"):
        raise damaged(path, "it ends in the middle of a line: truncated", todo)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
    except csv.Error as e:
        raise damaged(path, str(e), todo) from None
    if "epoch" not in (reader.fieldnames or ()):
        raise damaged(path, "no header line", todo)
    for n, row in enumerate(rows, start=2):
        if None in row or None in row.values():  # more or fewer cells than the header has columns
            raise damaged(path, f"line {n} has not one cell per column", todo)
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
            raise damaged(path, f"line {n} is not a row of numbers", todo) from None
    if [r["epoch"] for r in out] != list(range(1, len(out) + 1)):
        raise damaged(path, "its epochs are not 1, 2, 3, ...", todo)
    return out


def read_summary(path: Path, todo: str = RUN_TODO) -> Summary:
    """RUN_DIR/summary.json as a Summary; UserError (one line: the file, what is wrong) when absent or damaged."""
    file = Path(path) / "summary.json"
    try:
        data = _json(file, todo)
    except FileNotFoundError:
        raise UserError(f"{path} is not a run folder (no summary.json); train it first") from None
    try:
        return Summary.from_json(data)
    except Damaged as e:
        raise damaged(file, str(e), todo) from None


STUDY_KINDS = ("compare", "ablate", "sweep", "train")  # a new kind of study folder is added here


def read_study_file(folder: str | Path, todo: str) -> dict | None:
    """FOLDER/study.json (written by study.py) as a mapping whose fields have their types; None when
    absent; damage is one line ending in `todo`."""
    file = Path(folder) / "study.json"
    data = None
    try:
        data = _json(file, todo)
    except FileNotFoundError:
        return None
    if not isinstance(data, dict):
        raise damaged(file, f"it holds {_short(data)}, not a mapping", todo)
    try:
        if data.get("kind") not in STUDY_KINDS:
            raise Damaged(f"kind is {_short(data.get('kind'))}, not one of {', '.join(STUDY_KINDS)}")
        for key, kinds in (("variants", str), ("seeds", int)):
            items = _typed(data, key, list, [])
            if not all(isinstance(x, kinds) and not isinstance(x, bool) for x in items):
                raise Damaged(f"{key} is {_short(items)}, not a list of {_kind_name(kinds)}s")
        _typed(data, "wall_seconds", NUMBER, None, low=0.0)
        _typed(data, "margin", NUMBER, None, low=0.0)
        _typed(data, "pack", int, None, low=1)
        _typed(data, "config", dict)
        _typed(data, "retried", dict)
        _typed(data, "sweep", list)  # a sweep's settings and doses (study.py)
    except Damaged as e:
        raise damaged(file, str(e), todo) from None
    return data


def status(path: Path) -> str | None:
    """The run's status from summary.json; None when there is none; a damaged one is one line (read_summary)."""
    if not os.path.lexists(Path(path) / "summary.json"):
        return None
    return read_summary(Path(path)).status


def is_finished(path: Path) -> bool:
    return status(path) == "finished"


def load_run(path: str | Path, check_predictions: bool = True) -> Run:
    """A run folder, checked: UserError naming the damaged file and why."""
    path = Path(path)
    summary = read_summary(path)
    config = read_config(path)
    if config is None:
        raise UserError(f"{path} is not a complete run folder (no config.yaml); {RUN_TODO}")
    run = Run(path=path, config=config, summary=summary, metrics=read_metrics(path / "metrics.csv"))
    if summary.finished and check_predictions:
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
            with contextlib.suppress(UserError):
                cfg = read_config(folder) or {}
            if not (folder / "summary.json").exists():  # killed before its first summary: not damaged
                runs.append(Run(folder, cfg, Summary("running", variant=folder.parent.name)))
                continue
            runs.append(Run(folder, cfg, Summary("failed", variant=folder.parent.name), problem=str(e)))
    return sorted(runs, key=lambda r: (r.variant, r.seed))


def find_runs(study_dir: str | Path) -> list[Run]:
    """The finished, undamaged runs under a study folder, sorted by variant then seed."""
    return [r for r in scan_study(study_dir) if r.status == "finished"]
