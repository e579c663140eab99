"""The training loop, top to bottom: K members (seeds) of one recipe trained as one packed network. A single
run is a cohort of one, on this same path.

Per step, the members' own seeded batches are gathered on the device and step.train_step runs. Losses and
accuracies accumulate on the device; the host reads them about once a second for the progress bar and once per
epoch, so nothing inside an epoch waits for the GPU. At each epoch end, for every member still training:
evaluate the split that chooses (val/, or its held-out selection split), run its Keras callbacks, write its
metrics row, its best weights when its loss improves and its last.ckpt. A member that stops (early stopping,
its epoch cap, a non-finite loss) is frozen: its weights, optimizer state, BatchNorm statistics and EMA no
longer change. At the end each member is restored to its best weights as an ordinary network (with --precise-bn,
its BatchNorm statistics re-estimated) and evaluated on val/ and on a clean sample of its training images.

The packed layout is packed.Cohort's, what last.ckpt holds checkpoint.py's, the other files of a run folder
rundir.RunWriter's, and the evaluations evaluate.py's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, regularizers, rundir, signals
from .callbacks import EarlyStopping, ReduceLROnPlateau
from .config import Config
from .data import Data
from .data.augment import augmented_draws
from .data.loader import DeviceLoader, batch_bounds, shuffled_batches
from .device import pick_precision
from .errors import UserError
from .evaluate import evaluate_cohort, evaluate_restored, precise_bn, sample_images, split_selection, stratified_sample
from .models import count_params, layer_table
from .packed import seeded_models
from .progress import progress
from .provenance import command_line, environment, utc_now
from .runlog import RunLog
from .step import setup, train_step

BAR_REFRESH_S = 1.0  # the epoch bar's live loss/accuracy cost one host read per refresh


class Interrupted(UserError):
    """A signal arrived; every member's last.ckpt holds its last finished epoch. Exit code 128 + signal number."""

    def __init__(self, signum: int, epoch: int, out: Path):
        self.signum, self.epoch, self.out, self.exit_code = signum, epoch, out, 128 + signum
        super().__init__(f"interrupted by {signals.signal_name(signum)} after epoch {epoch}; "
                         f"resume with: reglab train --resume {out}")


@dataclass
class TrainJob:
    """One member to train: its config and run folder, its variant's name, and when it resumes, its checkpoint
    (checkpoint.load_checkpoint) and how the run is extended ([{from, to}] for --resume --epochs N)."""

    cfg: Config
    out: Path
    variant: str
    checkpoint: dict | None = None
    extensions: list[dict] = field(default_factory=list)


@dataclass
class Member:
    """Everything that is per run: a member's config, folder, images, batch order, callbacks and history."""

    cfg: Config
    out: Path
    variant: str
    writer: rundir.RunWriter
    train_idx: np.ndarray
    select_idx: np.ndarray
    clean_idx: np.ndarray
    order_gen: torch.Generator
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
    log: RunLog | None = None

    @property
    def chooser(self) -> str:
        """The split that chooses: 'select' (held out from train) or 'val' (the notebook's way)."""
        return "select" if len(self.select_idx) else "val"

    @classmethod
    def of(cls, job: TrainJob, labels: np.ndarray) -> Member:
        cfg = job.cfg
        train_idx, select_idx = split_selection(labels, cfg.selection_split, cfg.seed)
        return cls(cfg=cfg, out=Path(job.out), variant=job.variant, writer=rundir.RunWriter(job.out),
                   train_idx=train_idx, select_idx=select_idx,
                   clean_idx=stratified_sample(train_idx, labels, cfg.clean_train_sample, cfg.seed),
                   order_gen=torch.Generator().manual_seed(cfg.seed), early=EarlyStopping(cfg.early_stopping_patience),
                   plateau=ReduceLROnPlateau(cfg.plateau_factor, cfg.plateau_patience, cfg.plateau_min_delta,
                                             cfg.min_lr), lr=cfg.lr, started=utc_now())


class Trainer:
    """Built from the jobs (checked: the members' configs, the model, every checkpoint) before any folder is
    touched; `fit()` then trains and writes the run folders and returns their summaries."""

    def __init__(self, jobs: list[TrainJob], data: Data, device: torch.device, quiet: bool = False,
                 verbose: bool = False):
        base = jobs[0].cfg
        regularizers.check_plugins_loaded(base, jobs[0].out)
        for job in jobs[1:]:
            differ = job.cfg.differences(base, ignore={"seed", "epochs"})
            if differ:
                raise ValueError(f"cohort members must differ only in seed; they differ in {differ}")
        self.cfg, self.data, self.device, self.quiet, self.verbose = base, data, device, quiet, verbose
        self.precision = pick_precision(base.precision, device)
        self.members = [Member.of(job, data.train.labels) for job in jobs]
        models = seeded_models([job.cfg for job in jobs], len(data.classes))
        self.env = environment(device, self.precision)
        trainable, non_trainable = count_params(models[0])  # (building a model later would draw from the RNG)
        self.facts = dict(device=device.type, device_name=self.env["device_name"], precision=self.precision,
                          cohort=[job.cfg.seed for job in jobs], params_trainable=trainable,
                          params_non_trainable=non_trainable,
                          layers=layer_table(models[0], base.image_size))  # recorded: no reader rebuilds the model
        # members hold equally many images (the selection split is stratified the same way for every seed)
        self.steps_per_epoch = len(batch_bounds(len(self.members[0].train_idx), base.batch_size))
        self.cohort, self.optimizer, self.scheduler, self.gens = setup([j.cfg for j in jobs], models, device,
                                                                       self.steps_per_epoch)
        self.train = DeviceLoader.upload(data.train.images, data.train.labels, device, base.eval_batch_size)
        self.val = DeviceLoader.upload(data.val.images, data.val.labels, device, base.eval_batch_size)
        self._resume(jobs)

    def _resume(self, jobs: list[TrainJob]) -> None:
        """Members that resume continue from their checkpoints; the newest one also restores what the cohort
        shares (the global and augmentation generators, the schedule)."""
        latest = max((j.checkpoint["epoch"] for j in jobs if j.checkpoint), default=None)
        shared_done = False
        for k, (job, m) in enumerate(zip(jobs, self.members)):
            if job.checkpoint is None:
                continue
            checkpoint.restore_member(m, k, job.checkpoint, m.out / "last.ckpt", self.cohort, self.optimizer, self.gens)
            if m.failure or m.early.stopped or m.epoch >= m.cfg.epochs:  # (an extended run goes on)
                self._stop(k)
            if not shared_done and job.checkpoint["epoch"] == latest:
                checkpoint.restore_shared(job.checkpoint, self.optimizer, self.scheduler, self.gens, self.device)
                shared_done = True
            m.extensions += [{**e, "at_epoch": m.epoch} for e in job.extensions]

    def _stop(self, k: int) -> None:
        """Freeze member k: no more updates; its buffers and EMA are put back after every later step."""
        self.members[k].done = True
        self.optimizer.freeze(k)
        self.cohort.freeze(k)

    def _state(self, k: int) -> dict:
        m = self.members[k]
        return checkpoint.member_state(m, k, self.cohort, self.optimizer, self.scheduler, self.gens,
                                       [x.cfg.seed for x in self.members], self.data.identity,
                                       m.wall_before + (time.time() - self.t0))

    def _resume_target(self) -> Path:
        """What `reglab train --resume` takes to continue: the run folder, or a cohort's parent folder."""
        return self.members[0].out if len(self.members) == 1 else self.members[0].out.parent.parent

    def _stop_if_asked(self, signum: int = 0) -> None:
        if signum or signals.requested:
            raise Interrupted(signum or signals.requested, max(m.epoch for m in self.members), self._resume_target())

    # ---------------------------------------------------------------- loop
    def fit(self) -> list[rundir.Summary]:
        """Train until every member has stopped, then restore, evaluate and write out each: their summaries."""
        self.t0 = time.time()
        try:  # from the first write on: a signal at any point leaves every member's summary saying interrupted
            for m in self.members:
                m.writer.config(m.cfg)
                m.writer.summary(self._summary(m, "running"))
                m.log = RunLog(m.out, self.quiet, self.verbose, first_epoch=m.epoch, cfg=m.cfg)
            for k, m in enumerate(self.members):
                if m.epoch == 0 and not m.done:
                    checkpoint.save_checkpoint(m.out / "last.ckpt", self._state(k))  # an epoch-1 interrupt resumes
                    m.log.augmentation(self.data.train.images[m.train_idx[:4]], m.cfg.augment)
            with signals.graceful(), signals.phase(f"training {self._resume_target()}"):
                self._epochs()
            return self.finish()
        except (UserError, signals.Stopped) as e:  # an interruption, or a failure every member shares
            status, why = ("interrupted", None) if isinstance(e, (Interrupted, signals.Stopped)) else ("failed", str(e))
            with signals.held(honour_at_end=False):  # a second signal must not leave them saying "running"
                for m in self.members:
                    m.writer.summary(self._summary(m, status, why))
            self._stop_if_asked(e.signum if isinstance(e, signals.Stopped) else 0)  # as resumable as a first signal
            raise
        finally:
            for m in self.members:
                if m.log:
                    m.log.close()

    def _epochs(self) -> None:
        cfg, size = self.cfg, len(self.members)
        while not all(m.done for m in self.members):
            t_epoch = time.perf_counter()
            try:
                train_loss, train_acc = self.train_epoch()
            except torch.cuda.OutOfMemoryError:
                raise UserError(f"CUDA out of memory at batch size {cfg.batch_size} (image size {cfg.image_size}"
                                f"{f', a cohort of {size}' if size > 1 else ''}); try --batch-size "
                                f"{max(2, cfg.batch_size // 2)}, a smaller --image-size"
                                f"{' or --pack off' if size > 1 else ''}") from None
            t_train = time.perf_counter() - t_epoch
            which = self.members[0].chooser
            try:
                choose_loss, choose_correct, n = self.evaluate_members(which)
            except torch.cuda.OutOfMemoryError:
                raise UserError(f"CUDA out of memory while evaluating at batch size {cfg.eval_batch_size}; "
                                f"try --eval-batch-size {max(1, cfg.eval_batch_size // 4)}") from None
            seconds = time.perf_counter() - t_epoch
            for k, m in enumerate(self.members):
                if not m.done:
                    self._end_epoch(k, float(train_loss[k]), float(train_acc[k]), float(choose_loss[k]),
                                    int(choose_correct[k]) / n, t_train, seconds)
            self._stop_if_asked()

    def train_epoch(self) -> tuple[np.ndarray, np.ndarray]:
        """One epoch of every member: (mean running loss (K,), running accuracy (K,)), Keras's train values."""
        size, dev = len(self.members), self.device
        self.cohort.model.train()
        loss_sum = torch.zeros(size, device=dev)
        correct = torch.zeros(size, device=dev, dtype=torch.long)
        seen, shown = 0, time.monotonic()
        lead = next(m for m in self.members if not m.done)
        orders = [shuffled_batches(m.train_idx, m.order_gen, dev, self.cfg.batch_size) for m in self.members]
        with progress(not self.quiet) as bar:
            task = bar.add_task(f"epoch {lead.epoch + 1}/{lead.cfg.epochs}", total=self.steps_per_epoch, info="")
            for batches in zip(*orders):
                signals.pause_point("train")
                self._stop_if_asked()
                for m in self.members:
                    m.lr = m.lr if self.scheduler is None else self.optimizer.param_groups[0]["lr"]
                idx = torch.cat(batches)  # member-major: member k's batch is the k-th block
                losses, right = train_step(self.cohort, self.optimizer, self.scheduler,
                                           self.train.images.index_select(0, idx),
                                           self.train.labels.index_select(0, idx), self.gens, self.cfg, self.precision)
                b = batches[0].shape[0]
                loss_sum += losses * b
                correct += right
                seen += b
                for m in self.members:
                    m.step += 0 if m.done else 1
                bar.advance(task)
                if not self.quiet and time.monotonic() - shown > BAR_REFRESH_S:
                    shown = time.monotonic()
                    k = self.members.index(lead)
                    bar.update(task, info=f"loss {loss_sum[k].item() / seen:.4f} acc {correct[k].item() / seen:.4f}")
        return (loss_sum / seen).cpu().numpy(), (correct.double() / seen).cpu().numpy()

    def evaluate_members(self, which: str) -> tuple[np.ndarray, np.ndarray, int]:
        """Each member's evaluated model on its own images of a split ('select': its selection images; 'val':
        val/ for all): (mean loss (K,), correct (K,), images per member)."""
        split, own = (self.val, None) if which == "val" else (self.train, [m.select_idx for m in self.members])
        loss, correct, n = evaluate_cohort(self.cohort, split, own, self.precision, f"evaluating {which}", self.quiet)
        self._stop_if_asked()
        return loss, correct, n

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
        m.log.epoch(row, c, m.cfg.epochs, prefix=f"[seed {m.cfg.seed}] " if len(self.members) > 1 else "")
        if not all(math.isfinite(v) for v in (train_loss, choose_loss)):
            m.failure = f"non-finite loss at epoch {m.epoch} (train {train_loss}, {c} {choose_loss})"
            m.writer.epoch_ended(m.rows)
            self._stop(k)
            return
        best_before = m.early.best
        if m.early.update(m.epoch, choose_loss):
            checkpoint.save_weights(m.out / "best.safetensors", self.cohort.evaluated_state(k))
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
        m.writer.epoch_ended(m.rows)
        checkpoint.save_checkpoint(m.out / "last.ckpt", self._state(k))

    # ---------------------------------------------------------------- results
    def finish(self) -> list[rundir.Summary]:
        """Every member restored to its best weights as an ordinary network, evaluated, written out."""
        with signals.held(honour_at_end=False):  # the final files are written together
            summaries = [self._finish_member(k) for k in range(len(self.members))]
            self._stop_if_asked()  # a signal during them stops the run resumable: every last.ckpt is still there
            for m, s in zip(self.members, summaries):
                if s.finished and not m.cfg.keep_last:
                    (m.out / "last.ckpt").unlink(missing_ok=True)  # the optimizer state is only needed to continue
        return summaries

    def _finish_member(self, k: int) -> rundir.Summary:
        m, cfg = self.members[k], self.members[k].cfg
        model = precise_bn(checkpoint.best_model(m.out / "best.safetensors", cfg, len(self.data.classes), self.device,
                                                 self.cohort.evaluated_state(k), save=not m.failure),
                           self.train.subset(m.clean_idx), cfg, self.precision, m.out / "best.safetensors")
        results, probs = evaluate_restored(model, self.val, self.train.subset(m.clean_idx),
                                           self.train.subset(m.select_idx) if len(m.select_idx) else None,
                                           self.precision, cfg.channels_last, self.quiet)
        self._stop_if_asked()
        summary = self._summary(m, "failed" if m.failure else "finished", m.failure, results)
        pick = sample_images(m.train_idx, cfg.seed)
        images = self.data.train.images[pick]
        augmented = None if cfg.augment == "none" else augmented_draws(images, cfg.augment)
        m.writer.finished(summary, m.rows,
                          predictions=dict(labels=self.data.val.labels, probs=probs, images=self.data.val.images),
                          samples=dict(images=images, labels=self.data.train.labels[pick], augmented=augmented))
        return summary

    def _summary(self, m: Member, status: str, failure: str | None = None,
                 results: dict | None = None) -> rundir.Summary:
        cfg, last = m.cfg, (m.rows[-1] if m.rows else {})
        return rundir.Summary(
            status=status, failure=failure, model=cfg.model, variant=m.variant, seed=cfg.seed, recipe=cfg.recipe,
            chosen_on="selection split" if m.chooser == "select" else "val", **self.facts,
            dataset=rundir.DatasetInfo(**self.data.describe(), selection_size=len(m.select_idx),
                                       train_used=len(m.train_idx)),
            epochs_max=cfg.epochs, epochs_run=m.epoch, best_epoch=m.early.best_epoch, stopped_early=m.early.stopped,
            extensions=m.extensions, **{k: last.get(k) for k in rundir.LAST_ROW}, **(results or {}),
            # a cohort's members share the machine: each one's wall time is the cohort's
            wall_seconds=m.wall_before + (time.time() - self.t0), train_seconds=m.train_seconds,
            train_images_per_second=m.images_seen / m.train_seconds if m.train_seconds else None,
            regularizers=cfg.regularizers(), plugins=rundir.plugins_used(cfg),
            provenance=rundir.Provenance(started=m.started, ended=utc_now() if status != "running" else None,
                                         command=command_line(), **self.env))
