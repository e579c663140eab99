"""One training run, top to bottom: data on the device, the notebook's recipe, a run folder out.

    train(cfg, out) -> summary dict

Per epoch: seeded batch order -> uint8 batch on device -> float [0,1] -> augmentation -> (random erasing,
mixup/cutmix) -> model (bf16 autocast on CUDA) -> loss -> optimizer. Loss and accuracy accumulate on the
device; the host reads them once per epoch, so nothing inside an epoch waits for the GPU. At each epoch
end: evaluate, run the Keras callbacks, append to metrics.csv, save best weights when val_loss improves,
and save last.ckpt (everything needed to resume exactly). At the end: restore the best weights, evaluate
them, write predictions, curves and summary.json.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import math
import platform
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from . import __version__, atomic, rundir
from .callbacks import EarlyStopping, ReduceLROnPlateau, scheduled_lr
from .checkpoint import check_compatible, load_checkpoint, load_weights, save_checkpoint, save_weights
from .config import Config, dump_yaml, from_dict
from .data import Data, load_data
from .data.augment import augment, mix_batch, random_erasing, soft_targets
from .data.loader import DeviceLoader, to_float
from .errors import UserError
from .models import build_model, count_params
from .progress import progress

WORST_IMAGES = 16
SAMPLE_IMAGES = 8


class Interrupted(UserError):
    """SIGINT/SIGTERM arrived; last.ckpt holds the last finished epoch. Exit code 128 + signal number."""

    def __init__(self, signum: int, epoch: int, out: Path):
        self.signum, self.epoch, self.out = signum, epoch, out
        self.exit_code = 128 + signum
        super().__init__(
            f"interrupted by {signal.Signals(signum).name} after epoch {epoch}; "
            f"resume with: reglab train --resume {out}"
        )


class _SignalFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps (a second signal exits at once)."""

    def __init__(self):
        self.signum = 0
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers only there
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(name)


def software() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__, "reglab": __version__}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _autocast(cfg: Config, device: torch.device):
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(cfg: Config, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    fused = {"fused": True} if device.type == "cuda" else {}
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=0.0)
    if cfg.optimizer == "adamw" or cfg.weight_decay > 0:
        # decoupled weight decay (AdamW); with weight_decay 0 it is exactly Adam
        return torch.optim.AdamW(params, lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay, **fused)
    return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.adam_eps, **fused)


class EMA:
    """Exponential moving average of the weights (`--model-ema DECAY`), evaluated instead of the raw model."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module):
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))
        floats = [(e, p) for e, p in pairs if e.dtype.is_floating_point]
        # one fused kernel per dtype group instead of one launch per tensor
        torch._foreach_lerp_([e for e, _ in floats], [p for _, p in floats], 1.0 - self.decay)
        for e, p in pairs:
            if not e.dtype.is_floating_point:
                e.copy_(p)  # BatchNorm's num_batches_tracked


@torch.no_grad()
def evaluate(model, loader: DeviceLoader, cfg: Config, device, want_probs: bool = False):
    """(mean loss, accuracy[, probs]) over a split in large batches, in its stored order."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    probs = []
    for xb, yb in loader.epoch(None, shuffle=False):
        x = to_float(xb, cfg.channels_last)
        with _autocast(cfg, device):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
        if want_probs:
            probs.append(logits.softmax(1))
    n = loader.num_images
    out = (loss_sum.item() / n, correct.item() / n)
    return (*out, torch.cat(probs).cpu().numpy()) if want_probs else out


class Trainer:
    def __init__(self, cfg: Config, data: Data, out: Path, device: torch.device, quiet: bool = False):
        self.cfg, self.data, self.out, self.device, self.quiet = cfg, data, out, device, quiet
        torch.manual_seed(cfg.seed)  # model init and dropout draw from the global generator
        self.num_classes = len(data.classes)
        self.model = build_model(cfg, self.num_classes).to(device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # On CUDA, "reduce-overhead" captures the step in CUDA graphs: at batch 16 the GPU is launch-bound.
        mode = "reduce-overhead" if device.type == "cuda" else None
        self.step_model = torch.compile(self.model, mode=mode) if cfg.compile else self.model
        self.optimizer = make_optimizer(cfg, self.model, device)
        self.ema = EMA(self.model, cfg.model_ema) if cfg.model_ema > 0 else None
        self.train_loader = DeviceLoader(data.train.images, data.train.labels, device, cfg.batch_size)
        self.val_loader = DeviceLoader(data.val.images, data.val.labels, device, cfg.eval_batch_size)
        self.order_gen = torch.Generator().manual_seed(cfg.seed)  # batch order, CPU: same on every device
        self.aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.mix_rng = np.random.default_rng(cfg.seed + 2)
        self.early = EarlyStopping(cfg.early_stopping_patience)
        self.plateau = ReduceLROnPlateau(cfg.plateau_factor, cfg.plateau_patience, cfg.plateau_min_delta, cfg.min_lr)
        self.lr = cfg.lr
        self.epoch = 0
        self.step = 0
        self.rows: list[dict] = []
        self.train_seconds = 0.0
        self.wall_before = 0.0  # wall time of earlier sessions of this run (resume)
        self.images_seen = 0

    # ---------------------------------------------------------------- state
    def eval_model(self):
        return self.ema.model if self.ema else self.model

    def state(self) -> dict:
        s = {
            "config": self.cfg.to_dict(), "epoch": self.epoch, "step": self.step, "lr": self.lr,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "early": self.early.state(), "plateau": self.plateau.state(), "rows": self.rows,
            "train_seconds": self.train_seconds, "wall_seconds": self.wall_before + (time.time() - self.t0),
            "images_seen": self.images_seen,
            "rng": {
                "torch": torch.get_rng_state(), "order": self.order_gen.get_state(),
                "aug": self.aug_gen.get_state(), "mix": _np_state_to_tensors(self.mix_rng),
            },
        }
        if self.device.type == "cuda":
            s["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.ema:
            s["ema"] = self.ema.model.state_dict()
        return s

    def load_state(self, s: dict, path: Path):
        check_compatible(path, self.model, s["model"])
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.epoch, self.step, self.lr = s["epoch"], s["step"], s["lr"]
        self.early = EarlyStopping(**s["early"])
        self.plateau = ReduceLROnPlateau(**s["plateau"])
        self.rows = list(s["rows"])
        self.train_seconds, self.wall_before, self.images_seen = s["train_seconds"], s["wall_seconds"], s["images_seen"]
        torch.set_rng_state(s["rng"]["torch"])
        self.order_gen.set_state(s["rng"]["order"])
        self.aug_gen.set_state(s["rng"]["aug"])
        self.mix_rng.bit_generator.state = _np_state_from_tensors(s["rng"]["mix"])
        if "cuda" in s["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(s["rng"]["cuda"], self.device)
        if self.ema and "ema" in s:
            self.ema.model.load_state_dict(s["ema"])

    # ---------------------------------------------------------------- loop
    def train_step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a uint8 batch: schedule, augmentation, loss, update. Returns (loss, logits),
        still on the device: nothing here waits for the GPU."""
        cfg = self.cfg
        if cfg.schedule != "plateau":
            steps_per_epoch = len(self.train_loader)
            self.lr = scheduled_lr(cfg.schedule, cfg.lr, self.step, cfg.epochs * steps_per_epoch,
                                   int(cfg.warmup_epochs * steps_per_epoch))
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
        x = augment(cfg.augment, to_float(xb, cfg.channels_last), self.aug_gen)
        if cfg.reprob > 0:
            x = random_erasing(x, self.aug_gen, cfg.reprob)
        with _autocast(cfg, self.device):
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
        if self.ema:
            self.ema.update(self.model)
        self.step += 1
        return loss.detach(), logits.detach()

    def train_epoch(self, flag: _SignalFlag) -> tuple[float, float]:
        dev = self.device
        self.model.train()
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        with progress(not self.quiet) as bar:
            task = bar.add_task(f"epoch {self.epoch + 1}/{self.cfg.epochs}", total=len(self.train_loader), info="")
            for xb, yb in self.train_loader.epoch(self.order_gen):
                if flag.signum:
                    raise Interrupted(flag.signum, self.epoch, self.out)
                loss, logits = self.train_step(xb, yb)
                loss_sum += loss * yb.shape[0]
                correct += (logits.argmax(1) == yb).sum()
                bar.advance(task)
        n = self.train_loader.num_images
        return loss_sum.item() / n, correct.item() / n

    def fit(self) -> dict:
        cfg, out = self.cfg, self.out
        self.t0 = time.time()
        if self.epoch == 0:
            save_checkpoint(out / "last.ckpt", self.state())  # so even an epoch-1 interrupt can resume
        failed = None
        with _SignalFlag() as flag:
            while self.epoch < cfg.epochs and not self.early.stopped:
                t_epoch = time.perf_counter()
                try:
                    train_loss, train_acc = self.train_epoch(flag)
                except torch.cuda.OutOfMemoryError:
                    raise UserError(
                        f"CUDA out of memory at batch size {cfg.batch_size} (image size {cfg.image_size}); "
                        f"try --batch-size {max(1, cfg.batch_size // 2)} or a smaller --image-size"
                    ) from None
                t_train = time.perf_counter() - t_epoch
                lr_used = self.lr  # plateau: the epoch's lr; step schedules: the lr of its last step
                try:
                    val_loss, val_acc = evaluate(self.eval_model(), self.val_loader, cfg, self.device)
                except torch.cuda.OutOfMemoryError:
                    raise UserError(
                        f"CUDA out of memory while evaluating at batch size {cfg.eval_batch_size}; "
                        f"try --eval-batch-size {max(1, cfg.eval_batch_size // 4)}"
                    ) from None
                self.epoch += 1
                seconds = time.perf_counter() - t_epoch
                self.train_seconds += t_train
                self.images_seen += self.train_loader.num_images
                row = dict(epoch=self.epoch, train_loss=train_loss, train_accuracy=train_acc, val_loss=val_loss,
                           val_accuracy=val_acc, lr=lr_used, seconds=seconds)
                self.rows.append(row)
                self.log_epoch(row)
                if not all(math.isfinite(v) for v in (train_loss, val_loss)):
                    failed = f"non-finite loss at epoch {self.epoch} (train {train_loss}, val {val_loss})"
                    break
                if self.early.update(self.epoch, val_loss):
                    save_weights(out / "best.safetensors", self.eval_model().state_dict())
                if cfg.schedule == "plateau":
                    new_lr = self.plateau.update(val_loss, self.lr)
                    if new_lr != self.lr and not self.quiet:
                        print(f"Epoch {self.epoch}: ReduceLROnPlateau reducing learning rate to {new_lr:.4e}.", flush=True)
                    self.lr = new_lr
                    for group in self.optimizer.param_groups:
                        group["lr"] = self.lr
                write_metrics(out / "metrics.csv", self.rows)
                save_checkpoint(out / "last.ckpt", self.state())
                if flag.signum:
                    raise Interrupted(flag.signum, self.epoch, out)
        if self.early.stopped and not self.quiet:
            print(f"Epoch {self.epoch}: early stopping; best epoch {self.early.best_epoch} (val_loss {self.early.best:.4f}).")
        write_metrics(out / "metrics.csv", self.rows)
        return self.finish(failed)

    def log_epoch(self, r: dict):
        print(
            f"Epoch {r['epoch']}/{self.cfg.epochs} - {r['seconds']:.1f}s - loss: {r['train_loss']:.4f} - "
            f"accuracy: {r['train_accuracy']:.4f} - val_loss: {r['val_loss']:.4f} - "
            f"val_accuracy: {r['val_accuracy']:.4f} - lr: {r['lr']:.4e}",
            flush=True,
        )

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
        restored_loss, restored_acc, probs = evaluate(model, self.val_loader, cfg, self.device, want_probs=True)
        self.write_predictions(probs)
        last = self.rows[-1] if self.rows else {}
        trainable, non_trainable = count_params(self.model)
        summary = {
            "status": "failed" if failed else "finished",
            "failure": failed,
            "model": cfg.model,
            "variant": self.variant,
            "seed": cfg.seed,
            "recipe": cfg.recipe,
            "dataset": self.data.describe(),
            "device": self.device.type,
            "device_name": device_name(self.device),
            "software": software(),
            "epochs_run": self.epoch,
            "best_epoch": self.early.best_epoch,
            "stopped_early": self.early.stopped,
            "train_loss": last.get("train_loss"),
            "train_accuracy": last.get("train_accuracy"),
            "val_loss": last.get("val_loss"),
            "val_accuracy": last.get("val_accuracy"),
            "restored_val_loss": restored_loss,
            "restored_val_accuracy": restored_acc,
            "params_trainable": trainable,
            "params_non_trainable": non_trainable,
            "wall_seconds": self.wall_before + (time.time() - self.t0),
            "train_seconds": self.train_seconds,
            "train_images_per_second": self.images_seen / self.train_seconds if self.train_seconds else None,
            "regularizers": cfg.regularizers(),
        }
        if self.rows:
            from .report.plots import plot_curves

            plot_curves(self.rows, out / "curves.png", title=f"{self.variant} (seed {cfg.seed})")
        atomic.write_json(out / "summary.json", summary)
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
        pick = np.sort(rng.choice(len(self.data.train.labels), size=min(SAMPLE_IMAGES, len(self.data.train.labels)), replace=False))
        buf = io.BytesIO()
        np.savez(buf, images=self.data.train.images[pick], labels=self.data.train.labels[pick])
        atomic.write_bytes(self.out / "samples.npz", buf.getvalue())


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
        w.writerow({k: (r[k] if k == "epoch" else repr(float(r[k]))) for k in rundir.METRIC_COLUMNS})
    atomic.write_text(path, buf.getvalue())


def _check_same_run(out: Path, cfg: Config) -> None:
    """A last.ckpt copied in from another run must not silently continue as that run's model."""
    try:
        written = yaml.safe_load((out / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return  # no config.yaml yet (killed before writing it): the checkpoint is all we have
    differ = sorted(k for k, v in cfg.to_dict().items() if k in written and written[k] != v)
    if differ:
        k = differ[0]
        raise UserError(
            f"checkpoint {out / 'last.ckpt'} belongs to another model or run ({k}: {cfg.to_dict()[k]!r} in the "
            f"checkpoint, {written[k]!r} in config.yaml); restore the run's own last.ckpt or use --overwrite"
        )


def prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber finished results; an unfinished run needs --resume (or --overwrite)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory; choose another path")
    if resume:
        return
    if out.is_dir() and any(out.iterdir()):
        if overwrite:
            for name in ("summary.json", "metrics.csv", "last.ckpt", "best.safetensors", "curves.png",
                         "predictions.npz", "samples.npz", "config.yaml"):
                with contextlib.suppress(FileNotFoundError):
                    (out / name).unlink()
        elif rundir.is_finished(out):
            raise UserError(f"run folder {out} already holds a finished run; pass --overwrite to replace it or choose another --out")
        elif (out / "last.ckpt").exists():
            raise UserError(f"run folder {out} holds an unfinished run; pass --resume to continue it or --overwrite to start over")
        elif (out / "summary.json").exists() or (out / "config.yaml").exists():
            raise UserError(f"run folder {out} holds a failed run; pass --overwrite to start over or choose another --out")
    atomic.check_writable_dir(out, "run folder")


def train(cfg: Config, out: str | Path, data: Data | None = None, resume: bool = False, overwrite: bool = False,
          variant: str | None = None, quiet: bool = False) -> dict:
    """Train one run into `out` and return its summary (also written to out/summary.json)."""
    out = Path(out)
    if resume and rundir.is_finished(out):
        if not quiet:
            print(f"{out} is already finished; nothing to resume.", flush=True)
        return rundir.load_run(out).summary
    if resume and (out / "last.ckpt").exists():
        saved = load_checkpoint(out / "last.ckpt")
        try:
            cfg = from_dict(saved["config"])  # a resumed run continues with exactly its own config
        except UserError as e:
            raise UserError(f"checkpoint {out / 'last.ckpt'} holds an incompatible config ({e})") from None
        _check_same_run(out, cfg)
    elif resume:
        raise UserError(f"no checkpoint at {out / 'last.ckpt'}; there is nothing to resume (train without --resume)")
    else:
        saved = None
    prepare_run_dir(out, resume, overwrite)
    device = pick_device(cfg.device)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    if data is None:
        data = load_data(cfg.data, cfg.image_size, cfg.on_bad_image, show_progress=not quiet)
        for path, why in data.describe()["skipped"]:
            print(f"skipped {path}: {why}", file=sys.stderr)
    atomic.write_text(out / "config.yaml", dump_yaml(cfg))
    trainer = Trainer(cfg, data, out, device, quiet=quiet)
    trainer.variant = variant or cfg.model
    if saved is not None:
        trainer.load_state(saved, out / "last.ckpt")
        if not quiet:
            print(f"Resuming {out} after epoch {trainer.epoch}.", flush=True)
    return trainer.fit()
