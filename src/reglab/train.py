"""One training run, top to bottom: data on the device, the notebook's recipe, a run folder out.

    train(cfg, out) -> summary dict

Per epoch: seeded batch order -> uint8 batch on device -> float [0,1] -> augmentation -> (random erasing,
mixup/cutmix) -> model (bf16 autocast where native) -> loss -> optimizer. Loss and accuracy accumulate on the
device; the host reads them about once a second for the progress bar and once per epoch, so nothing inside an
epoch waits for the GPU. At each epoch end: evaluate the split that chooses (val/, or the held-out selection
split), run the Keras callbacks, append to metrics.csv, save best weights when its loss improves, and save
last.ckpt (everything needed to resume exactly). At the end: restore the best weights, evaluate them on val/
and on a clean sample of the training images, write predictions, curves and summary.json.

`train()` checks everything first (the folder, the resume request, the device, the data and its identity,
memory, the model) and only then takes the folder's lock and writes: a typo never costs a finished run.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import atomic, lock, rundir, signals
from .callbacks import EarlyStopping, ReduceLROnPlateau, step_schedule
from .checkpoint import check_compatible, load_checkpoint, load_weights, save_checkpoint, save_weights
from .config import NON_RESULT_FIELDS, Config, dump_yaml, from_dict
from .data import Data, DataFiles, decode, find_data
from .data.augment import augment, mix_batch, random_erasing, soft_targets
from .data.folder import show
from .data.identity import describe_change
from .data.loader import DeviceLoader, to_float
from .device import autocast, check_fits, pick_device, pick_precision
from .errors import UserError
from .models import build_model, count_params
from .progress import progress
from .provenance import command_line, environment, utc_now
from .runlog import RunLog

WORST_IMAGES = 16
SAMPLE_IMAGES = 8
BAR_REFRESH_S = 1.0  # the epoch bar's live loss/accuracy cost one host read per refresh


class Interrupted(UserError):
    """A signal arrived; last.ckpt holds the last finished epoch. Exit code 128 + signal number."""

    def __init__(self, signum: int, epoch: int, out: Path):
        self.signum, self.epoch, self.out = signum, epoch, out
        self.exit_code = 128 + signum
        super().__init__(
            f"interrupted by {signal.Signals(signum).name} after epoch {epoch}; "
            f"resume with: reglab train --resume {out}"
        )


def make_optimizer(cfg: Config, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    fused = {"fused": True} if device.type == "cuda" else {}
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adamw" or cfg.weight_decay > 0:
        # decoupled weight decay (AdamW); with weight_decay 0 it is exactly Adam
        return torch.optim.AdamW(params, lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay, **fused)
    return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.adam_eps, **fused)


def make_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """`--model-ema DECAY`: an exponential moving average of the weights and BatchNorm statistics (torch's
    AveragedModel), evaluated and checkpointed instead of the raw model."""
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    # AveragedModel's first update copies the model instead of averaging; counting the initial copy as the first
    # average makes every update a lerp from the initial weights (timm's ModelEmaV2 and our earlier EMA did so)
    ema.n_averaged.fill_(1)
    return ema.eval()


# -------------------------------------------------------------------------------------- which images


def split_selection(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, selection indices): a stratified, seeded fraction of every class held out to choose
    (early stopping, LR on plateau, best checkpoint). fraction 0: everything trains, nothing is held out."""
    if fraction <= 0:
        return np.arange(len(labels)), np.array([], dtype=np.int64)
    rng = np.random.default_rng([seed, 1])
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = min(len(members) - 1, max(1, int(round(fraction * len(members))))) if len(members) > 1 else 0
        chosen.append(rng.permutation(members)[:k])
    select = np.sort(np.concatenate(chosen)).astype(np.int64)
    return np.setdiff1d(np.arange(len(labels)), select), select


def stratified_sample(indices: np.ndarray, labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """At most k of `indices`, every class in proportion (seeded): the clean training-accuracy sample."""
    if k >= len(indices):
        return np.sort(indices)
    rng = np.random.default_rng([seed, 2])
    picked = []
    for c in np.unique(labels[indices]):
        members = indices[labels[indices] == c]
        picked.append(rng.permutation(members)[: max(1, round(k * len(members) / len(indices)))])
    return np.sort(np.concatenate(picked))


@torch.no_grad()
def evaluate(model, loader: DeviceLoader, precision: str, channels_last: bool, device, want_probs: bool = False,
             label: str = "evaluating", quiet: bool = True):
    """(mean loss, correct count[, probs]) over a split in large batches, in its stored order. A signal (inside
    signals.graceful()) ends it early: the caller checks `signals.requested` and must not use the result."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    probs = []
    with progress(not quiet) as bar:
        task = bar.add_task(label, total=len(loader), info="")
        for xb, yb in loader.epoch(None, shuffle=False):
            if signals.requested:
                break
            x = to_float(xb, channels_last)
            with autocast(precision, device):
                logits = model(x).float()
            loss_sum += F.cross_entropy(logits, yb, reduction="sum")
            correct += (logits.argmax(1) == yb).sum()
            if want_probs:
                probs.append(logits.softmax(1))
            bar.advance(task)
    n = loader.num_images
    out = (loss_sum.item() / n, int(correct.item()))
    return (*out, torch.cat(probs).cpu().numpy()) if want_probs else out


# ------------------------------------------------------------------------------------------ the loop


class Trainer:
    def __init__(self, cfg: Config, data: Data, out: Path, device: torch.device, quiet: bool = False,
                 verbose: bool = False):
        self.cfg, self.data, self.out, self.device = cfg, data, out, device
        self.quiet, self.verbose = quiet, verbose
        self.precision = pick_precision(cfg.precision, device)
        torch.manual_seed(cfg.seed)  # model init and dropout draw from the global generator
        self.num_classes = len(data.classes)
        self.model = build_model(cfg, self.num_classes).to(device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # On CUDA, "reduce-overhead" captures the step in CUDA graphs: at batch 16 the GPU is launch-bound.
        mode = "reduce-overhead" if device.type == "cuda" else None
        self.step_model = torch.compile(self.model, mode=mode) if cfg.compile else self.model
        self.optimizer = make_optimizer(cfg, self.model, device)
        self.ema = make_ema(self.model, cfg.model_ema) if cfg.model_ema > 0 else None
        labels = data.train.labels
        self.train_idx, self.select_idx = split_selection(labels, cfg.selection_split, cfg.seed)
        self.clean_idx = stratified_sample(self.train_idx, labels, cfg.clean_train_sample, cfg.seed)
        images = data.train.images
        self.train_loader = DeviceLoader(images[self.train_idx], labels[self.train_idx], device, cfg.batch_size)
        self.val_loader = DeviceLoader(data.val.images, data.val.labels, device, cfg.eval_batch_size)
        self.select_loader = (DeviceLoader(images[self.select_idx], labels[self.select_idx], device,
                                           cfg.eval_batch_size) if len(self.select_idx) else None)
        self.scheduler = step_schedule(self.optimizer, cfg.schedule, cfg.epochs * len(self.train_loader),
                                       int(cfg.warmup_epochs * len(self.train_loader)))
        self.order_gen = torch.Generator().manual_seed(cfg.seed)  # batch order, CPU: same on every device
        self.aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.mix_rng = np.random.default_rng(cfg.seed + 2)
        self.early = EarlyStopping(cfg.early_stopping_patience)
        self.plateau = ReduceLROnPlateau(cfg.plateau_factor, cfg.plateau_patience, cfg.plateau_min_delta, cfg.min_lr)
        self.lr = cfg.lr
        self.epoch = 0
        self.step = 0
        self.rows: list[dict] = []
        self.extensions: list[dict] = []  # --resume --epochs N: when the run was extended, from what to what
        self.train_seconds = 0.0
        self.wall_before = 0.0  # wall time of earlier sessions of this run (resume)
        self.images_seen = 0
        self.started = utc_now()
        self.variant = cfg.model
        self.log: RunLog | None = None

    @property
    def chooser(self) -> str:
        """The split that chooses: 'select' (held out from train) or 'val' (the notebook's way)."""
        return "select" if self.select_loader is not None else "val"

    # ---------------------------------------------------------------- state
    def eval_model(self):
        return self.ema.module if self.ema else self.model

    def state(self) -> dict:
        s = {
            "config": self.cfg.to_dict(), "epoch": self.epoch, "step": self.step, "lr": self.lr,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "early": self.early.state(), "plateau": self.plateau.state(), "rows": self.rows,
            "train_seconds": self.train_seconds, "wall_seconds": self.wall_before + (time.time() - self.t0),
            "images_seen": self.images_seen, "data_identity": self.data.identity, "extensions": self.extensions,
            "started": self.started,
            "rng": {
                "torch": torch.get_rng_state(), "order": self.order_gen.get_state(),
                "aug": self.aug_gen.get_state(), "mix": _np_state_to_tensors(self.mix_rng),
            },
        }
        if self.device.type == "cuda":
            s["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.ema:
            s["ema"] = self.ema.module.state_dict()
        if self.scheduler:
            s["scheduler"] = self.scheduler.state_dict()
        return s

    def load_state(self, s: dict, path: Path):
        check_compatible(path, self.model, s["model"])
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.epoch, self.step, self.lr = s["epoch"], s["step"], s["lr"]
        self.early = EarlyStopping(**s["early"])
        self.plateau = ReduceLROnPlateau(**s["plateau"])
        self.rows = [{k: r.get(k) for k in rundir.METRIC_COLUMNS} for r in s["rows"]]
        self.extensions = list(s.get("extensions", []))
        self.started = s.get("started", self.started)
        self.train_seconds, self.wall_before, self.images_seen = s["train_seconds"], s["wall_seconds"], s["images_seen"]
        torch.set_rng_state(s["rng"]["torch"])
        self.order_gen.set_state(s["rng"]["order"])
        self.aug_gen.set_state(s["rng"]["aug"])
        self.mix_rng.bit_generator.state = _np_state_from_tensors(s["rng"]["mix"])
        if "cuda" in s["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(s["rng"]["cuda"], self.device)
        if self.ema and "ema" in s:
            self.ema.module.load_state_dict(s["ema"])
        if self.scheduler and "scheduler" in s:
            self.scheduler.load_state_dict(s["scheduler"])  # the optimizer's state already holds the next lr

    # ---------------------------------------------------------------- loop
    def train_step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a uint8 batch: schedule, augmentation, loss, update. Returns (loss, logits),
        still on the device: nothing here waits for the GPU."""
        cfg = self.cfg
        self.lr = self.optimizer.param_groups[0]["lr"]  # the lr this step uses (the schedule's, or the plateau's)
        x = augment(cfg.augment, to_float(xb, cfg.channels_last), self.aug_gen)
        if cfg.reprob > 0:
            x = random_erasing(x, self.aug_gen, cfg.reprob)
        with autocast(self.precision, self.device):
            if cfg.mixup > 0 or cfg.cutmix > 0:
                target = soft_targets(yb, self.num_classes, cfg.smoothing)
                x, target = mix_batch(x, target, self.mix_rng, cfg.mixup, cfg.cutmix)
                logits = self.step_model(x).float()
                loss = torch.sum(-target * F.log_softmax(logits, dim=1), dim=1).mean()
            else:
                logits = self.step_model(x).float()
                loss = F.cross_entropy(logits, yb, label_smoothing=cfg.smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler:
            self.scheduler.step()
        if self.ema:
            self.ema.update_parameters(self.model)
        self.step += 1
        return loss.detach(), logits.detach()

    def train_epoch(self) -> tuple[float, float]:
        dev = self.device
        self.model.train()
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        seen, shown = 0, time.monotonic()
        with progress(not self.quiet) as bar:
            task = bar.add_task(f"epoch {self.epoch + 1}/{self.cfg.epochs}", total=len(self.train_loader), info="")
            for xb, yb in self.train_loader.epoch(self.order_gen):
                signals.pause_point("train")
                if signals.requested:
                    raise Interrupted(signals.requested, self.epoch, self.out)
                loss, logits = self.train_step(xb, yb)
                loss_sum += loss * yb.shape[0]
                correct += (logits.argmax(1) == yb).sum()
                seen += yb.shape[0]
                bar.advance(task)
                if not self.quiet and time.monotonic() - shown > BAR_REFRESH_S:
                    shown = time.monotonic()
                    bar.update(task, info=f"loss {loss_sum.item() / seen:.4f} acc {correct.item() / seen:.4f}")
        n = self.train_loader.num_images
        return loss_sum.item() / n, correct.item() / n

    def _evaluate(self, loader: DeviceLoader, label: str, want_probs: bool = False, model=None):
        with signals.phase(label):
            signals.pause_point("evaluate")
            out = evaluate(model or self.eval_model(), loader, self.precision, self.cfg.channels_last, self.device,
                           want_probs, label=label, quiet=self.quiet)
        if signals.requested:
            raise Interrupted(signals.requested, self.epoch, self.out)
        return out

    def fit(self) -> dict:
        cfg, out = self.cfg, self.out
        self.t0 = time.time()
        self.log = RunLog(out, self.quiet, self.verbose, first_epoch=self.epoch)
        try:
            if self.epoch == 0:
                save_checkpoint(out / "last.ckpt", self.state())  # so even an epoch-1 interrupt can resume
                self._log_samples()
            with signals.graceful(), signals.phase(f"training {out}"):
                failed = self._epochs()
            return self.finish(failed)
        except Interrupted:
            self.write_summary("interrupted")
            raise
        except UserError as e:
            self.write_summary("failed", str(e))
            raise
        finally:
            self.log.close()

    def _epochs(self) -> str | None:
        cfg, out = self.cfg, self.out
        while self.epoch < cfg.epochs and not self.early.stopped:
            t_epoch = time.perf_counter()
            try:
                train_loss, train_acc = self.train_epoch()
            except torch.cuda.OutOfMemoryError:
                raise UserError(
                    f"CUDA out of memory at batch size {cfg.batch_size} (image size {cfg.image_size}); "
                    f"try --batch-size {max(2, cfg.batch_size // 2)} or a smaller --image-size"
                ) from None
            t_train = time.perf_counter() - t_epoch
            lr_used = self.lr  # plateau: the epoch's lr; step schedules: the lr of its last step
            loader = self.select_loader or self.val_loader
            try:
                choose_loss, choose_correct = self._evaluate(loader, f"evaluating {self.chooser}")
            except torch.cuda.OutOfMemoryError:
                raise UserError(
                    f"CUDA out of memory while evaluating at batch size {cfg.eval_batch_size}; "
                    f"try --eval-batch-size {max(1, cfg.eval_batch_size // 4)}"
                ) from None
            choose_acc = choose_correct / loader.num_images
            self.epoch += 1
            seconds = time.perf_counter() - t_epoch
            self.train_seconds += t_train
            self.images_seen += self.train_loader.num_images
            row = dict.fromkeys(rundir.METRIC_COLUMNS)
            row.update(epoch=self.epoch, train_loss=train_loss, train_accuracy=train_acc, lr=lr_used, seconds=seconds)
            row[f"{self.chooser}_loss"], row[f"{self.chooser}_accuracy"] = choose_loss, choose_acc
            self.rows.append(row)
            self.log_epoch(row)
            if not all(math.isfinite(v) for v in (train_loss, choose_loss)):
                write_metrics(out / "metrics.csv", self.rows)
                return f"non-finite loss at epoch {self.epoch} (train {train_loss}, {self.chooser} {choose_loss})"
            best_before = self.early.best
            if self.early.update(self.epoch, choose_loss):
                save_weights(out / "best.safetensors", self.eval_model().state_dict())
                self.log.line(f"Epoch {self.epoch}: {self.chooser}_loss improved from {best_before:.5f} to "
                              f"{choose_loss:.5f}, saving model to {out / 'best.safetensors'}", detail=True)
            if cfg.schedule == "plateau":
                new_lr = self.plateau.update(choose_loss, self.lr)
                if new_lr != self.lr:
                    self.log.line(f"Epoch {self.epoch}: ReduceLROnPlateau reducing learning rate to {new_lr:.4e}.")
                self.lr = new_lr
                for group in self.optimizer.param_groups:
                    group["lr"] = self.lr
            write_metrics(out / "metrics.csv", self.rows)
            save_checkpoint(out / "last.ckpt", self.state())
            if signals.requested:
                raise Interrupted(signals.requested, self.epoch, out)
        if self.early.stopped:
            self.log.line(f"Epoch {self.epoch}: early stopping; best epoch {self.early.best_epoch} "
                          f"({self.chooser}_loss {self.early.best:.4f}).")
        return None

    def log_epoch(self, r: dict):
        c = self.chooser
        self.log.line(
            f"Epoch {r['epoch']}/{self.cfg.epochs} - {r['seconds']:.1f}s - loss: {r['train_loss']:.4f} - "
            f"accuracy: {r['train_accuracy']:.4f} - {c}_loss: {r[f'{c}_loss']:.4f} - "
            f"{c}_accuracy: {r[f'{c}_accuracy']:.4f} - lr: {r['lr']:.4e}"
        )
        self.log.scalars(r["epoch"], {
            "loss/train": r["train_loss"], f"loss/{c}": r[f"{c}_loss"], "accuracy/train (running)": r["train_accuracy"],
            f"accuracy/{c}": r[f"{c}_accuracy"], "lr": r["lr"], "epoch_seconds": r["seconds"],
        })

    def _log_samples(self):
        """The augmentation the run trains with, drawn once on a few training images, for TensorBoard."""
        if self.log.tb is None or self.cfg.augment == "none":
            return
        from .report.plots import augmentation_grid

        pick = self.train_idx[: min(4, len(self.train_idx))]
        self.log.images(f"augmentation ({self.cfg.augment})", augmentation_grid(self.data.train.images[pick],
                                                                                 self.cfg.augment, draws=3))

    # ---------------------------------------------------------------- results
    def finish(self, failed: str | None) -> dict:
        cfg, out = self.cfg, self.out
        model = self.eval_model()
        best_path = out / "best.safetensors"
        if cfg.restore_best and best_path.exists():
            best = load_weights(best_path)
            check_compatible(best_path, model, best)
            model.load_state_dict(best)
        elif not failed:
            save_weights(best_path, model.state_dict())
        with signals.graceful():
            val_loss, val_correct, probs = self._evaluate(self.val_loader, "evaluating val", want_probs=True)
            clean_loader = DeviceLoader(self.data.train.images[self.clean_idx], self.data.train.labels[self.clean_idx],
                                        self.device, cfg.eval_batch_size)
            _, clean_correct = self._evaluate(clean_loader, "evaluating clean train sample")
            select = self._evaluate(self.select_loader, "evaluating select") if self.select_loader else None
        self.write_predictions(probs)
        results = {
            "restored_val_loss": val_loss, "restored_val_accuracy": val_correct / self.val_loader.num_images,
            "restored_val_correct": val_correct,
            "clean_train_accuracy": clean_correct / len(self.clean_idx), "clean_train_images": int(len(self.clean_idx)),
        }
        if select is not None:
            results.update(restored_select_loss=select[0],
                           restored_select_accuracy=select[1] / self.select_loader.num_images)
        if self.rows:
            from .report.plots import plot_curves

            plot_curves(self.rows, out / "curves.png", title=f"{self.variant} (seed {cfg.seed})")
        summary = self.write_summary("failed" if failed else "finished", failed, results)
        if not failed and not cfg.keep_last:
            (out / "last.ckpt").unlink(missing_ok=True)  # the optimizer state is only needed to continue
        return summary

    def write_summary(self, status: str, failure: str | None = None, results: dict | None = None) -> dict:
        cfg = self.cfg
        last = self.rows[-1] if self.rows else {}
        trainable, non_trainable = count_params(self.model)
        summary = {
            "status": status,
            "failure": failure,
            "model": cfg.model,
            "variant": self.variant,
            "seed": cfg.seed,
            "recipe": cfg.recipe,
            "chosen_on": "selection split" if self.chooser == "select" else "val",
            "dataset": {**self.data.describe(), "selection_size": int(len(self.select_idx)),
                        "train_used": int(len(self.train_idx))},
            "device": self.device.type,
            "device_name": environment_cache(self.device, self.precision)["device_name"],
            "precision": self.precision,
            "epochs_max": cfg.epochs,
            "epochs_run": self.epoch,
            "best_epoch": self.early.best_epoch,
            "stopped_early": self.early.stopped,
            "extensions": self.extensions,
            **{k: last.get(k) for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "select_loss",
                                        "select_accuracy")},
            **(results or {}),
            "params_trainable": trainable,
            "params_non_trainable": non_trainable,
            "wall_seconds": self.wall_before + (time.time() - self.t0),
            "train_seconds": self.train_seconds,
            "train_images_per_second": self.images_seen / self.train_seconds if self.train_seconds else None,
            "regularizers": cfg.regularizers(),
            "provenance": {"started": self.started, "ended": utc_now() if status != "running" else None,
                           "command": command_line(), **environment_cache(self.device, self.precision)},
        }
        atomic.write_json(self.out / "summary.json", summary)
        return summary

    def write_predictions(self, probs: np.ndarray):
        labels = self.data.val.labels
        pred = probs.argmax(1)
        wrong = np.flatnonzero(pred != labels)
        worst = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:WORST_IMAGES]
        buf = io.BytesIO()
        np.savez(buf, labels=labels, probs=probs.astype(np.float32), worst_index=worst,
                 worst_images=self.data.val.images[worst])
        atomic.write_bytes(self.out / "predictions.npz", buf.getvalue())
        rng = np.random.default_rng(self.cfg.seed)
        pick = np.sort(rng.choice(self.train_idx, size=min(SAMPLE_IMAGES, len(self.train_idx)), replace=False))
        buf = io.BytesIO()
        np.savez(buf, images=self.data.train.images[pick], labels=self.data.train.labels[pick])
        atomic.write_bytes(self.out / "samples.npz", buf.getvalue())


_ENVIRONMENT: dict = {}


def environment_cache(device: torch.device, precision: str) -> dict:
    """provenance.environment() once per process and device (it runs git)."""
    key = (str(device), precision)
    if key not in _ENVIRONMENT:
        _ENVIRONMENT[key] = environment(device, precision)
    return _ENVIRONMENT[key]


def _np_state_to_tensors(rng: np.random.Generator) -> dict:
    """numpy's PCG64 state as plain ints/strings (torch.load(weights_only=True) accepts those)."""
    st = rng.bit_generator.state
    return {"bit_generator": st["bit_generator"], "state": str(st["state"]["state"]), "inc": str(st["state"]["inc"]),
            "has_uint32": st["has_uint32"], "uinteger": st["uinteger"]}


def _np_state_from_tensors(d: dict) -> dict:
    return {"bit_generator": d["bit_generator"], "state": {"state": int(d["state"]), "inc": int(d["inc"])},
            "has_uint32": d["has_uint32"], "uinteger": d["uinteger"]}


def write_metrics(path: Path, rows: list[dict]):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=rundir.METRIC_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k] if k == "epoch" else repr(float(r[k])))
                    for k in rundir.METRIC_COLUMNS})
    atomic.write_text(path, buf.getvalue())


# ------------------------------------------------------------------------------------ check, then touch


def _check_same_run(out: Path, cfg: Config) -> None:
    """A last.ckpt copied in from another run must not silently continue as that run's model."""
    try:
        written = yaml.safe_load((out / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return  # no config.yaml yet (killed before writing it): the checkpoint is all we have
    differ = sorted(k for k, v in cfg.to_dict().items() if k in written and written[k] != v and k not in
                    NON_RESULT_FIELDS | {"epochs"})
    if differ:
        k = differ[0]
        raise UserError(
            f"checkpoint {out / 'last.ckpt'} belongs to another model or run ({k}: {cfg.to_dict()[k]!r} in the "
            f"checkpoint, {written[k]!r} in config.yaml); restore the run's own last.ckpt or use --overwrite"
        )


def _check_new(out: Path, kind: str, overwrite: bool) -> None:
    """A new run may go into an absent or empty folder, or over a reglab run folder with --overwrite. A folder
    whose run never reached its first checkpoint holds nothing to lose: it is started again."""
    if kind == "file":
        raise UserError(f"--out {out} exists and is not a directory; choose another path")
    atomic.check_can_create(out, "run folder")
    if kind in ("study", "foreign"):
        what = "a study folder" if kind == "study" else f"files reglab did not write ({rundir.contents(out)})"
        raise UserError(f"--out {out} is not empty and is not a run folder (it holds {what}); "
                        "choose an empty or new folder")
    if kind != "run" or overwrite:
        return
    state = rundir.status(out)
    if state == "finished":
        raise UserError(f"run folder {out} already holds a finished run; pass --overwrite to replace it or choose "
                        "another --out")
    if (out / "last.ckpt").exists():
        raise UserError(f"run folder {out} holds an unfinished run; pass --resume to continue it or --overwrite to "
                        "start over")
    if state == "failed":
        raise UserError(f"run folder {out} holds a failed run; pass --overwrite to start over or choose another --out")


def _resume_plan(out: Path, kind: str, changes: dict) -> tuple[Config, dict | None, list[dict]]:
    """(config, checkpoint or None, extensions) for --resume; refuses changes that would alter the run."""
    if kind in ("absent", "empty"):
        raise UserError(f"no run at {out}; there is nothing to resume (train without --resume)")
    if kind != "run":
        raise UserError(f"{out} is not a run folder; there is nothing to resume (train without --resume)")
    finished = rundir.is_finished(out)
    saved = load_checkpoint(out / "last.ckpt") if (out / "last.ckpt").exists() else None
    if saved is not None:
        try:
            cfg = from_dict(saved["config"])  # a resumed run continues with exactly its own config
        except UserError as e:
            raise UserError(f"checkpoint {out / 'last.ckpt'} holds an incompatible config ({e})") from None
        _check_same_run(out, cfg)
    else:
        try:
            cfg = from_dict(yaml.safe_load((out / "config.yaml").read_text()))
        except (OSError, yaml.YAMLError):
            raise UserError(f"no checkpoint and no readable config.yaml in {out}; there is nothing to resume "
                            "(train it again with --overwrite)") from None
    current = cfg.to_dict()
    refused = sorted(k for k, v in changes.items() if v != current[k] and k not in NON_RESULT_FIELDS | {"epochs"})
    if refused:
        shown = ", ".join(f"{k} ({current[k]!r} in the run, {changes[k]!r} asked)" for k in refused[:3])
        raise UserError(f"--resume continues a run exactly as it was configured; these would change it: {shown}. "
                        "Drop them, or start a new run with --out")
    new_epochs = changes.get("epochs", cfg.epochs)
    if new_epochs < cfg.epochs:
        raise UserError(f"--epochs {new_epochs} is fewer than the run's {cfg.epochs}; --resume can only extend a run")
    extensions = []
    if new_epochs > cfg.epochs:
        if cfg.schedule != "plateau":
            raise UserError(f"this run's {cfg.schedule} schedule is laid out over its {cfg.epochs} epochs; extending "
                            "it would change its learning rates: train a new run with --epochs "
                            f"{new_epochs} instead")
        if finished and saved is None:
            raise UserError(f"run {out} finished and its last.ckpt was removed to save space; a finished run can be "
                            f"extended only when it was trained with --keep-last (train it again with --keep-last, "
                            f"or start a new run with --epochs {new_epochs})")
        if saved is not None and saved["early"].get("stopped"):
            raise UserError(f"run {out} stopped early at epoch {saved['epoch']} (no improvement for "
                            f"{cfg.early_stopping_patience} epochs); more epochs would not change it")
        extensions.append({"from": cfg.epochs, "to": new_epochs})
    elif finished:
        return cfg, None, []  # nothing to do: train() reports the finished run
    cfg = cfg.replace(**{k: v for k, v in changes.items() if k in NON_RESULT_FIELDS | {"epochs"}})
    return cfg, saved, extensions


def prepare(cfg: Config, data: Data | DataFiles | None, device: torch.device, quiet: bool,
            check_identity: dict | None = None) -> Data:
    """Find, check and decode the data for `cfg` (nothing in the run folder is touched)."""
    if isinstance(data, Data):  # decoded once by a study for all its runs (which checked memory then)
        files, identity = None, data.identity
    else:
        files = data if isinstance(data, DataFiles) else find_data(cfg.data, show_progress=not quiet)
        identity = files.identity()
    if check_identity is not None:
        change = describe_change(check_identity, identity)
        if change:
            raise UserError(f"the data at {show(cfg.data)} is not what this run was trained on: {change}; restore it, "
                            "or train a new run")
    if files is not None:
        check_fits(cfg, device, files.num_files, len(files.classes))
        data = decode(files, cfg.image_size, cfg.on_bad_image, show_progress=not quiet)
        for path, why in data.describe()["skipped"]:
            print(f"skipped {path}: {why}", file=sys.stderr)
    return data


def train(cfg: Config | None, out: str | Path, data: Data | DataFiles | None = None, resume: bool = False,
          overwrite: bool = False, changes: dict | None = None, variant: str | None = None, quiet: bool = False,
          verbose: bool = False) -> dict:
    """Train one run into `out` and return its summary (also written to out/summary.json).

    resume: continue the run in `out` (its own config; `changes` may only raise epochs or change how fast it
    runs). overwrite: replace the run in `out`, once the new one has its data and model. `data`: decoded data
    (or scanned files) to share between runs of a study.
    """
    out = Path(out)
    kind = rundir.classify(out)
    if kind not in ("absent", "file"):
        lock.check_free(out, "run folder")
    saved, extensions = None, []
    if resume:
        cfg, saved, extensions = _resume_plan(out, kind, changes or {})
        if rundir.is_finished(out) and not extensions:
            if not quiet:
                print(f"{out} is already finished; nothing to resume.", flush=True)
            return rundir.read_summary(out)
    else:
        _check_new(out, kind, overwrite)
    device = pick_device(cfg.device)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    data = prepare(cfg, data, device, quiet, check_identity=saved.get("data_identity") if saved else None)
    trainer = Trainer(cfg, data, out, device, quiet=quiet, verbose=verbose)
    trainer.variant = variant or cfg.model
    # Everything is checked: now take the folder and write.
    with lock.hold(out, "run folder"):
        rundir.sweep_temporaries(out)
        if overwrite and not resume and rundir.classify(out) == "run":
            for name in [p for p in out.iterdir() if rundir.is_run_file(p.name) and not p.name.startswith(".")]:
                name.unlink()
        atomic.check_writable_dir(out, "run folder")
        if saved is not None:
            trainer.load_state(saved, out / "last.ckpt")
            trainer.extensions += [{**e, "at_epoch": trainer.epoch} for e in extensions]
            if not quiet:
                print(f"Resuming {out} after epoch {trainer.epoch}"
                      + (f", extended to {cfg.epochs} epochs." if extensions else "."), flush=True)
        atomic.write_text(out / "config.yaml", dump_yaml(cfg))
        trainer.t0 = time.time()
        trainer.write_summary("running")
        return trainer.fit()
