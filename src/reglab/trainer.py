"""The training loop, top to bottom: K members (seeds) of one recipe trained as one packed network. A single
run is a cohort of one, on this same path.

Per step, for every member: its own seeded batch order -> uint8 images gathered on the device -> float [0, 1]
-> augmentation (one draw per image) -> (random erasing, mixup/cutmix) -> the members' batches side by side
in channels -> the packed model (bf16 autocast where native) -> each member's loss -> one optimizer step at
each member's own learning rate. Losses and accuracies accumulate on the device; the host reads them about
once a second for the progress bar and once per epoch, so nothing inside an epoch waits for the GPU.

At each epoch end, for every member still training: evaluate the split that chooses (val/, or its held-out
selection split), run its Keras callbacks, append to its metrics.csv, save its best weights when its loss
improves and its last.ckpt (its own slice of everything: a member's folder is an ordinary run folder). A
member that stops (early stopping, its epoch cap, a non-finite loss) is frozen: its weights, optimizer state,
BatchNorm statistics and EMA no longer change. At the end each member is restored to its best weights as an
ordinary network and evaluated on val/ and on a clean sample of its training images.
"""

from __future__ import annotations

import csv
import io
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import atomic, rundir, signals
from .callbacks import EarlyStopping, ReduceLROnPlateau, step_schedule
from .checkpoint import check_compatible, load_weights, save_checkpoint, save_weights
from .config import Config
from .data import Data
from .data.augment import augment, mix_batch, random_erasing, soft_targets
from .data.loader import DeviceLoader, batch_bounds, to_device_tensor, to_float
from .device import autocast, pick_precision
from .errors import UserError
from .models import build_model, count_params, layer_table
from .optim import PackedOptimizer
from .packed import load_member, member_view, pack, stacked_names, unpack
from .progress import progress
from .provenance import command_line, environment, utc_now
from .runlog import RunLog

WORST_IMAGES = 16
SAMPLE_IMAGES = 8
BAR_REFRESH_S = 1.0  # the epoch bar's live loss/accuracy cost one host read per refresh


class Interrupted(UserError):
    """A signal arrived; every member's last.ckpt holds its last finished epoch. Exit code 128 + signal number."""

    def __init__(self, signum: int, epoch: int, out: Path):
        self.signum, self.epoch, self.out = signum, epoch, out
        self.exit_code = 128 + signum
        super().__init__(
            f"interrupted by {signal.Signals(signum).name} after epoch {epoch}; "
            f"resume with: reglab train --resume {out}"
        )


def optimizer_kind(cfg: Config) -> str:
    if cfg.optimizer == "sgd":
        return "sgd"
    return "adamw" if cfg.optimizer == "adamw" or cfg.weight_decay > 0 else "adam"  # decoupled decay: AdamW


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
    """One ordinary network: (mean loss, correct count[, probs]) over a split in large batches, in its stored
    order. A signal (inside signals.graceful()) ends it early: the caller checks `signals.requested`."""
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


# ------------------------------------------------------------------------------------------ a member


@dataclass
class Member:
    """Everything that is per run: a member's config, folder, images, generators, callbacks and history."""

    cfg: Config
    out: Path
    variant: str
    train_idx: np.ndarray
    select_idx: np.ndarray
    clean_idx: np.ndarray
    order_gen: torch.Generator
    mix_rng: np.random.Generator
    early: EarlyStopping
    plateau: ReduceLROnPlateau
    lr: float
    epoch: int = 0
    step: int = 0
    rows: list = field(default_factory=list)
    extensions: list = field(default_factory=list)  # --resume --epochs N: when the run was extended
    train_seconds: float = 0.0
    wall_before: float = 0.0  # wall time of earlier sessions of this run (resume)
    images_seen: int = 0
    started: str = ""
    failure: str | None = None
    done: bool = False
    frozen: dict | None = None  # its buffers (and EMA) when it stopped: restored after every later step
    log: RunLog | None = None

    @property
    def chooser(self) -> str:
        """The split that chooses: 'select' (held out from train) or 'val' (the notebook's way)."""
        return "select" if len(self.select_idx) else "val"


class Trainer:
    def __init__(self, cfgs: list[Config], data: Data, outs: list[Path], device: torch.device, quiet: bool = False,
                 verbose: bool = False, variants: list[str] | None = None):
        base = cfgs[0]
        for cfg in cfgs[1:]:
            differ = cfg.differences(base, ignore={"seed", "epochs"})
            if differ:
                raise ValueError(f"cohort members must differ only in seed; they differ in {differ}")
        self.cfg, self.data, self.device = base, data, device
        self.t0 = time.time()  # reset when training starts
        self.quiet, self.verbose = quiet, verbose
        self.size = len(cfgs)
        self.precision = pick_precision(base.precision, device)
        self.num_classes = len(data.classes)
        singles = []
        for cfg in cfgs:
            torch.manual_seed(cfg.seed)  # each member's initial weights come from its own seed
            singles.append(build_model(cfg, self.num_classes))
        self.param_counts = count_params(singles[0])
        self.layers = layer_table(singles[0], base.image_size)  # recorded, so reports never rebuild the model
        # dropout draws from the global generator; a single run continues its seed's stream, as it always did
        self.model = pack(singles).to(device)
        if base.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.stacked = stacked_names(self.model)
        # On CUDA, "reduce-overhead" captures the step in CUDA graphs: at batch 16 the GPU is launch-bound.
        mode = "reduce-overhead" if device.type == "cuda" else None
        self.step_model = torch.compile(self.model, mode=mode) if base.compile else self.model
        self.optimizer = PackedOptimizer(self.model, self.size, optimizer_kind(base), base.lr, eps=base.adam_eps,
                                         weight_decay=base.weight_decay, momentum=base.momentum)
        self.ema = make_ema(self.model, base.model_ema) if base.model_ema > 0 else None
        self.train_images = to_device_tensor(data.train.images, device)
        self.train_labels = torch.from_numpy(data.train.labels).to(device)
        self.val_loader = DeviceLoader(data.val.images, data.val.labels, device, base.eval_batch_size)
        self.aug_gen = torch.Generator(device=device).manual_seed(base.seed + 1)  # one draw per image, all members
        labels = data.train.labels
        self.members = []
        for k, (cfg, out) in enumerate(zip(cfgs, outs)):
            train_idx, select_idx = split_selection(labels, cfg.selection_split, cfg.seed)
            self.members.append(Member(
                cfg=cfg, out=Path(out), variant=(variants or [cfg.model] * self.size)[k], train_idx=train_idx,
                select_idx=select_idx, clean_idx=stratified_sample(train_idx, labels, cfg.clean_train_sample, cfg.seed),
                order_gen=torch.Generator().manual_seed(cfg.seed), mix_rng=np.random.default_rng(cfg.seed + 2),
                early=EarlyStopping(cfg.early_stopping_patience),
                plateau=ReduceLROnPlateau(cfg.plateau_factor, cfg.plateau_patience, cfg.plateau_min_delta, cfg.min_lr),
                lr=cfg.lr, started=utc_now()))
        # members hold equally many images (the selection split is stratified the same way for every seed)
        self.steps_per_epoch = len(batch_bounds(len(self.members[0].train_idx), base.batch_size))
        self.scheduler = step_schedule(self.optimizer, base.schedule, base.epochs * self.steps_per_epoch,
                                       int(base.warmup_epochs * self.steps_per_epoch))

    # ---------------------------------------------------------------- one member's view of the packed state
    def eval_model(self):
        return self.ema.module if self.ema else self.model

    def member_weights(self, k: int, model=None) -> dict:
        return unpack((model or self.eval_model()).state_dict(), k, self.size, self.stacked)

    def state(self, k: int) -> dict:
        m = self.members[k]
        s = {
            "config": m.cfg.to_dict(), "epoch": m.epoch, "step": m.step, "lr": m.lr,
            "model": unpack(self.model.state_dict(), k, self.size, self.stacked),
            "optimizer": self.optimizer.member_state(k),
            "early": m.early.state(), "plateau": m.plateau.state(), "rows": m.rows,
            "train_seconds": m.train_seconds, "wall_seconds": m.wall_before + (time.time() - self.t0),
            "images_seen": m.images_seen, "data_identity": self.data.identity, "extensions": m.extensions,
            "started": m.started, "done": m.done, "failure": m.failure,
            "cohort": {"seeds": [x.cfg.seed for x in self.members], "index": k},
            "rng": {
                "torch": torch.get_rng_state(), "order": m.order_gen.get_state(),
                "aug": self.aug_gen.get_state(), "mix": _np_state_to_tensors(m.mix_rng),
            },
        }
        if self.device.type == "cuda":
            s["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.ema:
            s["ema"] = unpack(self.ema.module.state_dict(), k, self.size, self.stacked)
        if self.scheduler:
            s["scheduler"] = self.scheduler.state_dict()
        return s

    def load_state(self, k: int, s: dict, path: Path, shared: bool):
        """Member k continues from its checkpoint; `shared`: also restore what the cohort shares (the global
        and augmentation generators, the schedule) from it."""
        m = self.members[k]
        with torch.device("meta"):  # shapes only: building a real model would draw from the global RNG
            check_compatible(path, build_model(m.cfg, self.num_classes), s["model"])
        load_member(self.model, s["model"], k, self.size)
        self.optimizer.load_member_state(k, s["optimizer"])
        if self.ema and "ema" in s:
            load_member(self.ema.module, s["ema"], k, self.size)
        m.epoch, m.step, m.lr = s["epoch"], s["step"], s["lr"]
        m.early = EarlyStopping(**s["early"])
        m.plateau = ReduceLROnPlateau(**s["plateau"])
        m.rows = [{c: r.get(c) for c in rundir.METRIC_COLUMNS} for r in s["rows"]]
        m.extensions = list(s.get("extensions", []))
        m.started = s.get("started", m.started)
        m.train_seconds, m.wall_before, m.images_seen = s["train_seconds"], s["wall_seconds"], s["images_seen"]
        m.order_gen.set_state(s["rng"]["order"])
        m.mix_rng.bit_generator.state = _np_state_from_tensors(s["rng"]["mix"])
        m.failure = s.get("failure")
        if m.failure or m.early.stopped or m.epoch >= m.cfg.epochs:  # (an extended run goes on)
            self._stop(k)
        if shared:
            torch.set_rng_state(s["rng"]["torch"])
            self.aug_gen.set_state(s["rng"]["aug"])
            if "cuda" in s["rng"] and self.device.type == "cuda":
                torch.cuda.set_rng_state(s["rng"]["cuda"], self.device)
            if self.scheduler and "scheduler" in s:
                self.scheduler.load_state_dict(s["scheduler"])  # the optimizer's lr follows at its next step
                for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
                    group["lr"] = lr

    def _stop(self, k: int) -> None:
        """Freeze member k: no more updates; its buffers and EMA are restored after every later step."""
        m = self.members[k]
        m.done = True
        self.optimizer.freeze(k)
        buffers = {n: member_view(n, t, k, self.size, self.stacked).clone()
                   for n, t in self.model.named_buffers() if t.dim() > 0}
        ema = ({n: member_view(n, t, k, self.size, self.stacked).clone()
                for n, t in self.ema.module.state_dict().items() if t.dim() > 0} if self.ema else {})
        m.frozen = {"buffers": buffers, "ema": ema}

    @torch.no_grad()
    def _keep_frozen(self) -> None:
        for k, m in enumerate(self.members):
            if m.frozen is None:
                continue
            for n, t in self.model.named_buffers():
                if n in m.frozen["buffers"]:
                    member_view(n, t, k, self.size, self.stacked).copy_(m.frozen["buffers"][n])
            if self.ema:
                for n, t in self.ema.module.state_dict().items():
                    if n in m.frozen["ema"]:
                        member_view(n, t, k, self.size, self.stacked).copy_(m.frozen["ema"][n])

    # ---------------------------------------------------------------- loop
    def member_batches(self, k: int):
        """Member k's epoch: (images, labels) index batches of its training images in its own seeded order."""
        m = self.members[k]
        order = torch.from_numpy(m.train_idx)[torch.randperm(len(m.train_idx), generator=m.order_gen)]
        order = order.to(self.device, non_blocking=True)
        for start, end in batch_bounds(len(order), self.cfg.batch_size):
            yield order[start:end]

    def train_step(self, idx: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step: member k trains on train images idx[k]. Returns per-member (loss (K,), correct
        (K,), batch size), still on the device: nothing here waits for the GPU."""
        cfg, size = self.cfg, self.size
        b = idx[0].shape[0]
        u8 = self.train_images.index_select(0, torch.cat(idx))  # (K*B, 3, H, W): member-major
        y = self.train_labels.index_select(0, torch.cat(idx)).view(size, b).t()  # (B, K)
        x = augment(cfg.augment, to_float(u8, cfg.channels_last), self.aug_gen)
        if cfg.reprob > 0:
            x = random_erasing(x, self.aug_gen, cfg.reprob)
        mixing = cfg.mixup > 0 or cfg.cutmix > 0
        if mixing:
            parts, targets = [], []
            for k, m in enumerate(self.members):
                xk, tk = mix_batch(x[k * b:(k + 1) * b], soft_targets(y[:, k], self.num_classes, cfg.smoothing),
                                   m.mix_rng, cfg.mixup, cfg.cutmix)
                parts.append(xk)
                targets.append(tk)
            x, target = torch.cat(parts), torch.stack(targets, 1)  # (B, K, C)
        h, w = x.shape[-2:]
        # (K*B, 3, H, W) -> (B, K*3, H, W): member k's images in channels 3k..3k+2
        x = x.view(size, b, 3, h, w).transpose(0, 1).reshape(b, size * 3, h, w)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.precision, self.device):
            logits = self.step_model(x).float()  # (B, K, C)
        if mixing:
            losses = torch.sum(-target * F.log_softmax(logits, dim=2), dim=2).mean(0)
        else:
            losses = F.cross_entropy(logits.permute(0, 2, 1), y, label_smoothing=cfg.smoothing,
                                     reduction="none").mean(0)
        self.optimizer.zero_grad(set_to_none=True)
        (losses * self.optimizer.active).sum().backward()
        self.optimizer.step()
        if self.scheduler:
            self.scheduler.step()
        if self.ema:
            self.ema.update_parameters(self.model)
        if any(m.done for m in self.members):
            self._keep_frozen()
        correct = (logits.detach().argmax(2) == y).sum(0)
        return losses.detach(), correct, b

    def train_epoch(self) -> tuple[np.ndarray, np.ndarray]:
        """One epoch of every member: (mean running loss (K,), running accuracy (K,)), Keras's train values."""
        dev = self.device
        self.model.train()
        loss_sum = torch.zeros(self.size, device=dev)
        correct = torch.zeros(self.size, device=dev, dtype=torch.long)
        seen, shown = 0, time.monotonic()
        lead = next(m for m in self.members if not m.done)
        with progress(not self.quiet) as bar:
            task = bar.add_task(f"epoch {lead.epoch + 1}/{lead.cfg.epochs}", total=self.steps_per_epoch, info="")
            for idx in zip(*(self.member_batches(k) for k in range(self.size))):
                signals.pause_point("train")
                if signals.requested:
                    raise Interrupted(signals.requested, lead.epoch, self._resume_target())
                for m in self.members:
                    m.lr = m.lr if self.scheduler is None else self.optimizer.param_groups[0]["lr"]
                losses, right, b = self.train_step(list(idx))
                loss_sum += losses * b
                correct += right
                seen += b
                for m in self.members:
                    if not m.done:
                        m.step += 1
                bar.advance(task)
                if not self.quiet and time.monotonic() - shown > BAR_REFRESH_S:
                    shown = time.monotonic()
                    k = self.members.index(lead)
                    bar.update(task, info=f"loss {loss_sum[k].item() / seen:.4f} acc {correct[k].item() / seen:.4f}")
        return (loss_sum / seen).cpu().numpy(), (correct.double() / seen).cpu().numpy()

    @torch.no_grad()
    def evaluate_members(self, which: str) -> tuple[np.ndarray, np.ndarray, int]:
        """The packed eval model on each member's own images of a split ('select': its selection images; 'val':
        val/ for all): (mean loss (K,), correct (K,), images per member)."""
        model, cfg, size = self.eval_model(), self.cfg, self.size
        model.eval()
        if which == "val":
            images, labels = self.val_loader.images, self.val_loader.labels
            n = labels.shape[0]
            index = torch.arange(n, device=self.device).repeat(size, 1)
        else:
            images, labels = self.train_images, self.train_labels
            index = torch.stack([torch.from_numpy(m.select_idx) for m in self.members]).to(self.device)
            n = index.shape[1]
        loss_sum = torch.zeros(size, device=self.device)
        correct = torch.zeros(size, device=self.device, dtype=torch.long)
        with progress(not self.quiet) as bar, signals.phase(f"evaluating {which}"):
            signals.pause_point("evaluate")
            bounds = batch_bounds(n, cfg.eval_batch_size)
            task = bar.add_task(f"evaluating {which}", total=len(bounds), info="")
            for start, end in bounds:
                if signals.requested:
                    break
                idx = index[:, start:end]  # (K, b)
                x = to_float(images.index_select(0, idx.reshape(-1)), False)
                b = end - start
                x = x.view(size, b, 3, *x.shape[-2:]).transpose(0, 1).reshape(b, size * 3, *x.shape[-2:])
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = labels.index_select(0, idx.reshape(-1)).view(size, b).t()
                with autocast(self.precision, self.device):
                    logits = model(x).float()
                loss_sum += F.cross_entropy(logits.permute(0, 2, 1), y, reduction="none").sum(0)
                correct += (logits.argmax(2) == y).sum(0)
                bar.advance(task)
        if signals.requested:
            raise Interrupted(signals.requested, max(m.epoch for m in self.members), self._resume_target())
        return (loss_sum / n).cpu().numpy(), correct.cpu().numpy(), n

    def _resume_target(self) -> Path:
        """What `reglab train --resume` takes to continue: the run folder, or a cohort's parent folder."""
        if self.size == 1:
            return self.members[0].out
        return self.members[0].out.parent.parent

    def fit(self) -> list[dict]:
        self.t0 = time.time()
        for m in self.members:
            m.log = RunLog(m.out, self.quiet, self.verbose, first_epoch=m.epoch)
        try:
            for k, m in enumerate(self.members):
                if m.epoch == 0 and not m.done:
                    save_checkpoint(m.out / "last.ckpt", self.state(k))  # so even an epoch-1 interrupt can resume
                    self._log_samples(m)
            with signals.graceful(), signals.phase(f"training {self._resume_target()}"):
                self._epochs()
            return self.finish()
        except Interrupted:
            for m in self.members:
                self.write_summary(m, "interrupted")
            raise
        except UserError as e:
            for m in self.members:
                self.write_summary(m, "failed", str(e))
            raise
        finally:
            for m in self.members:
                if m.log:
                    m.log.close()

    def _epochs(self) -> None:
        cfg = self.cfg
        while not all(m.done for m in self.members):
            t_epoch = time.perf_counter()
            try:
                train_loss, train_acc = self.train_epoch()
            except torch.cuda.OutOfMemoryError:
                raise UserError(
                    f"CUDA out of memory at batch size {cfg.batch_size} (image size {cfg.image_size}"
                    + (f", a cohort of {self.size}" if self.size > 1 else "") + "); try --batch-size "
                    f"{max(2, cfg.batch_size // 2)}, a smaller --image-size" + (" or --pack off" if self.size > 1
                                                                              else "")) from None
            t_train = time.perf_counter() - t_epoch
            which = self.members[0].chooser
            try:
                choose_loss, choose_correct, n = self.evaluate_members(which)
            except torch.cuda.OutOfMemoryError:
                raise UserError(
                    f"CUDA out of memory while evaluating at batch size {cfg.eval_batch_size}; "
                    f"try --eval-batch-size {max(1, cfg.eval_batch_size // 4)}"
                ) from None
            seconds = time.perf_counter() - t_epoch
            for k, m in enumerate(self.members):
                if not m.done:
                    self._end_epoch(k, float(train_loss[k]), float(train_acc[k]), float(choose_loss[k]),
                                    int(choose_correct[k]) / n, t_train, seconds)
            if signals.requested:
                raise Interrupted(signals.requested, max(m.epoch for m in self.members), self._resume_target())

    def _end_epoch(self, k: int, train_loss: float, train_acc: float, choose_loss: float, choose_acc: float,
                   t_train: float, seconds: float) -> None:
        m, c = self.members[k], self.members[k].chooser
        m.epoch += 1
        m.train_seconds += t_train
        m.images_seen += len(m.train_idx)
        row = dict.fromkeys(rundir.METRIC_COLUMNS)
        row.update(epoch=m.epoch, train_loss=train_loss, train_accuracy=train_acc, lr=m.lr, seconds=seconds)
        row[f"{c}_loss"], row[f"{c}_accuracy"] = choose_loss, choose_acc
        m.rows.append(row)
        self.log_epoch(m, row)
        if not all(math.isfinite(v) for v in (train_loss, choose_loss)):
            m.failure = f"non-finite loss at epoch {m.epoch} (train {train_loss}, {c} {choose_loss})"
            write_metrics(m.out / "metrics.csv", m.rows)
            self._stop(k)
            return
        best_before = m.early.best
        if m.early.update(m.epoch, choose_loss):
            save_weights(m.out / "best.safetensors", self.member_weights(k))
            m.log.line(f"Epoch {m.epoch}: {c}_loss improved from {best_before:.5f} to {choose_loss:.5f}, saving "
                       f"model to {m.out / 'best.safetensors'}", detail=True)
        if m.cfg.schedule == "plateau":
            new_lr = m.plateau.update(choose_loss, m.lr)
            if new_lr != m.lr:
                m.log.line(f"Epoch {m.epoch}: ReduceLROnPlateau reducing learning rate to {new_lr:.4e}.")
            m.lr = new_lr
            self.optimizer.set_lr(k, m.lr)
        if m.early.stopped:
            m.log.line(f"Epoch {m.epoch}: early stopping; best epoch {m.early.best_epoch} "
                       f"({c}_loss {m.early.best:.4f}).")
        if m.early.stopped or m.epoch >= m.cfg.epochs:
            self._stop(k)
        write_metrics(m.out / "metrics.csv", m.rows)
        save_checkpoint(m.out / "last.ckpt", self.state(k))

    def log_epoch(self, m: Member, r: dict):
        c = m.chooser
        prefix = f"[seed {m.cfg.seed}] " if self.size > 1 else ""
        m.log.line(
            f"{prefix}Epoch {r['epoch']}/{m.cfg.epochs} - {r['seconds']:.1f}s - loss: {r['train_loss']:.4f} - "
            f"accuracy: {r['train_accuracy']:.4f} - {c}_loss: {r[f'{c}_loss']:.4f} - "
            f"{c}_accuracy: {r[f'{c}_accuracy']:.4f} - lr: {r['lr']:.4e}"
        )
        m.log.scalars(r["epoch"], {
            "loss/train": r["train_loss"], f"loss/{c}": r[f"{c}_loss"], "accuracy/train (running)": r["train_accuracy"],
            f"accuracy/{c}": r[f"{c}_accuracy"], "lr": r["lr"], "epoch_seconds": r["seconds"],
        })

    def _log_samples(self, m: Member):
        """The augmentation the run trains with, drawn once on a few training images, for TensorBoard."""
        if m.log.tb is None or m.cfg.augment == "none":
            return
        from .reports.plots import augmentation_grid

        pick = m.train_idx[: min(4, len(m.train_idx))]
        m.log.images(f"augmentation ({m.cfg.augment})", augmentation_grid(self.data.train.images[pick],
                                                                          m.cfg.augment, draws=3))

    # ---------------------------------------------------------------- results
    def finish(self) -> list[dict]:
        """Every member restored to its best weights as an ordinary network, evaluated, written out."""
        summaries = []
        with signals.graceful():
            for k, m in enumerate(self.members):
                summaries.append(self._finish_member(k))
        for m, s in zip(self.members, summaries):
            if s.finished and not m.cfg.keep_last:
                (m.out / "last.ckpt").unlink(missing_ok=True)  # the optimizer state is only needed to continue
        return summaries

    def _finish_member(self, k: int) -> dict:
        m, cfg = self.members[k], self.members[k].cfg
        model = build_model(cfg, self.num_classes).to(self.device)
        best_path = m.out / "best.safetensors"
        if cfg.restore_best and best_path.exists():
            weights = load_weights(best_path)
            check_compatible(best_path, model, weights)
        else:
            weights = self.member_weights(k)
            if not m.failure:
                save_weights(best_path, weights)
        model.load_state_dict(weights)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        images, labels = self.data.train.images, self.data.train.labels
        val_loss, val_correct, probs = self._evaluate(model, self.val_loader, "evaluating val", want_probs=True)
        clean = DeviceLoader(images[m.clean_idx], labels[m.clean_idx], self.device, cfg.eval_batch_size)
        _, clean_correct = self._evaluate(model, clean, "evaluating clean train sample")
        results = {
            "restored_val_loss": val_loss, "restored_val_accuracy": val_correct / self.val_loader.num_images,
            "restored_val_correct": val_correct,
            "clean_train_accuracy": clean_correct / len(m.clean_idx), "clean_train_images": int(len(m.clean_idx)),
        }
        if len(m.select_idx):
            select = DeviceLoader(images[m.select_idx], labels[m.select_idx], self.device, cfg.eval_batch_size)
            s_loss, s_correct = self._evaluate(model, select, "evaluating select")
            results.update(restored_select_loss=s_loss, restored_select_accuracy=s_correct / len(m.select_idx))
        self.write_predictions(m, probs)
        if m.rows:
            from .reports.plots import plot_curves

            plot_curves(m.rows, m.out / "curves.png", title=f"{m.variant} (seed {cfg.seed})")
        return self.write_summary(m, "failed" if m.failure else "finished", m.failure, results)

    def _evaluate(self, model, loader: DeviceLoader, label: str, want_probs: bool = False):
        with signals.phase(label):
            signals.pause_point("evaluate")
            out = evaluate(model, loader, self.precision, self.cfg.channels_last, self.device, want_probs,
                           label=label, quiet=self.quiet)
        if signals.requested:
            raise Interrupted(signals.requested, max(m.epoch for m in self.members), self._resume_target())
        return out

    def write_summary(self, m: Member, status: str, failure: str | None = None,
                      results: dict | None = None) -> rundir.Summary:
        cfg = m.cfg
        last = m.rows[-1] if m.rows else {}
        trainable, non_trainable = self.param_counts  # (building a model here would draw from the RNG)
        env = environment_cache(self.device, self.precision)
        summary = rundir.Summary(
            status=status, failure=failure, model=cfg.model, variant=m.variant, seed=cfg.seed, recipe=cfg.recipe,
            chosen_on="selection split" if m.chooser == "select" else "val",
            dataset=rundir.DatasetInfo(**self.data.describe(), selection_size=int(len(m.select_idx)),
                                       train_used=int(len(m.train_idx))),
            device=self.device.type, device_name=env["device_name"], precision=self.precision,
            cohort=[x.cfg.seed for x in self.members], epochs_max=cfg.epochs, epochs_run=m.epoch,
            best_epoch=m.early.best_epoch, stopped_early=m.early.stopped, extensions=m.extensions,
            **{k: last.get(k) for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "select_loss",
                                        "select_accuracy")},
            **(results or {}),
            params_trainable=trainable, params_non_trainable=non_trainable, layers=self.layers,
            # a cohort's members share the machine: each one's wall time is the cohort's
            wall_seconds=m.wall_before + (time.time() - self.t0), train_seconds=m.train_seconds,
            train_images_per_second=m.images_seen / m.train_seconds if m.train_seconds else None,
            regularizers=cfg.regularizers(),
            provenance=rundir.Provenance(started=m.started, ended=utc_now() if status != "running" else None,
                                         command=command_line(), **env))
        atomic.write_json(m.out / "summary.json", summary.to_json())
        return summary

    def write_predictions(self, m: Member, probs: np.ndarray):
        labels = self.data.val.labels
        pred = probs.argmax(1)
        wrong = np.flatnonzero(pred != labels)
        worst = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:WORST_IMAGES]
        buf = io.BytesIO()
        np.savez(buf, labels=labels, probs=probs.astype(np.float32), worst_index=worst,
                 worst_images=self.data.val.images[worst])
        atomic.write_bytes(m.out / "predictions.npz", buf.getvalue())
        rng = np.random.default_rng(m.cfg.seed)
        pick = np.sort(rng.choice(m.train_idx, size=min(SAMPLE_IMAGES, len(m.train_idx)), replace=False))
        buf = io.BytesIO()
        np.savez(buf, images=self.data.train.images[pick], labels=self.data.train.labels[pick])
        atomic.write_bytes(m.out / "samples.npz", buf.getvalue())


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
