"""What a run evaluates, and how.

Which images: `split_selection` holds out a stratified, seeded fraction of the training images to choose (early
stopping, LR on plateau, the best checkpoint); `stratified_sample` picks the clean-train sample that measures the
generalization gap; `sample_images` the few training images a run folder keeps as an illustration.

How: in eval mode, in large batches, from uint8 images already on the device, losses and counts accumulated on
the device and read once. `evaluate_cohort` evaluates every member of a packed cohort at once on its own images
(each epoch end); `evaluate` one ordinary network, and `evaluate_restored` the restored best weights at the end
on everything the summary reports. `precise_bn` ("precise BN", --precise-bn) re-estimates a restored network's
BatchNorm statistics from its weights before that final evaluation (not before each epoch's, which chooses with
the statistics training kept, as Keras does). A signal (inside signals.graceful()) ends any of them early: the
caller checks `signals.requested`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import signals
from .checkpoint import save_weights
from .config import Config
from .data.loader import DeviceLoader, batch_bounds, to_float
from .device import autocast
from .errors import UserError
from .packed import Cohort
from .progress import progress

SAMPLE_IMAGES = 8


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
    if not len(select):  # asked to hold images out: never fall back to choosing on val/ in silence
        raise UserError(f"--selection-split {fraction} holds out no training image: every class keeps one to train "
                        f"on, and the largest has {np.bincount(labels).max()}; give more training images per class, "
                        "or --selection-split 0 (val/ chooses)")
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


def sample_images(indices: np.ndarray, seed: int) -> np.ndarray:
    """A few of the training images `indices` (seeded, sorted): samples.npz's illustration."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(indices, size=min(SAMPLE_IMAGES, len(indices)), replace=False))


# -------------------------------------------------------------------------------------------- how


@torch.no_grad()
def evaluate(model, loader: DeviceLoader, precision: str, channels_last: bool, want_probs: bool = False,
             label: str = "evaluating", quiet: bool = True):
    """One ordinary network: (mean loss, correct count[, probs]) over a loader's images, in its order."""
    model.eval()
    device = loader.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    probs = []
    with progress(not quiet) as bar, signals.phase(label):
        signals.pause_point("evaluate")
        task = bar.add_task(label, total=len(loader), info="")
        for xb, yb in loader.epoch():
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
    if not want_probs:
        return out
    return (*out, torch.cat(probs).cpu().numpy() if probs else None)  # none: a signal stopped it at once


@torch.no_grad()
def evaluate_cohort(cohort: Cohort, split: DeviceLoader, own: list[np.ndarray] | None, precision: str, label: str,
                    quiet: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """The cohort's evaluated model (its EMA when there is one) on a split: every member on all of its images
    (`own` None), or member k on the images at own[k] (as many for every member). Returns (mean loss (K,),
    correct count (K,), images per member)."""
    model, device = cohort.eval_model, split.device
    model.eval()
    if own is None:
        index = split.index.repeat(cohort.size, 1)
    else:
        index = torch.stack([torch.from_numpy(i) for i in own]).to(device)
    n = index.shape[1]
    loss_sum = torch.zeros(cohort.size, device=device)
    correct = torch.zeros(cohort.size, device=device, dtype=torch.long)
    with progress(not quiet) as bar, signals.phase(label):
        signals.pause_point("evaluate")
        bounds = batch_bounds(n, split.batch_size)
        task = bar.add_task(label, total=len(bounds), info="")
        for start, end in bounds:
            if signals.requested:
                break
            idx = index[:, start:end].reshape(-1)  # member-major
            x = cohort.inputs(to_float(split.images.index_select(0, idx), False))
            y = cohort.targets(split.labels.index_select(0, idx))
            with autocast(precision, device):
                logits = model(x).float()
            loss_sum += F.cross_entropy(logits.permute(0, 2, 1), y, reduction="none").sum(0)
            correct += (logits.argmax(2) == y).sum(0)
            bar.advance(task)
    return (loss_sum / n).cpu().numpy(), correct.cpu().numpy(), n


@torch.no_grad()
def precise_bn(model: nn.Module, images: DeviceLoader, cfg: Config, precision: str, best: Path) -> nn.Module:
    """With cfg.precise_bn, `model`'s BatchNorm running statistics recomputed from its weights: the equal-weight
    average over the batches of `images` (a run's clean training sample: no augmentation) in a seeded order, in
    batches of the training batch size, every other layer in eval mode (dropout off), so that nothing depends on
    the statistics training left (with the notebook's momentum, a small budget leaves much of their initial value)
    nor on any random state: a resumed run gets the same numbers. The statistics are saved into `best` when that
    file exists (predict and export use them). Returns `model`, in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not cfg.precise_bn or not norms:
        return model
    model.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average: every batch counts once
        bn.train()
    order = images.index[torch.from_numpy(np.random.default_rng([cfg.seed, 3]).permutation(images.num_images))
                         .to(images.device)]
    for start, end in batch_bounds(images.num_images, cfg.batch_size):
        if end - start >= 2:  # a batch of one has no variance (BatchNorm refuses it, as in training)
            x = to_float(images.images.index_select(0, order[start:end]), cfg.channels_last)
            with autocast(precision, images.device):
                model(x)
    for bn in norms:
        bn.momentum = cfg.bn_momentum
    model.eval()
    if best.exists():
        save_weights(best, model.state_dict())
    return model


def evaluate_restored(model, val: DeviceLoader, clean: DeviceLoader, select: DeviceLoader | None, precision: str,
                      channels_last: bool, quiet: bool = True) -> tuple[dict, np.ndarray]:
    """An ordinary network with a run's restored best weights on val/, on its clean training sample and on its
    selection split (when it has one): (the summary's restored_* and clean_train_* results, val probabilities)."""
    def run(loader: DeviceLoader, label: str, want_probs: bool = False):
        return evaluate(model, loader, precision, channels_last, want_probs, label=label, quiet=quiet)

    val_loss, val_correct, probs = run(val, "evaluating val", want_probs=True)
    _, clean_correct = run(clean, "evaluating clean train sample")
    results = {"restored_val_loss": val_loss, "restored_val_accuracy": val_correct / val.num_images,
               "restored_val_correct": val_correct, "clean_train_accuracy": clean_correct / clean.num_images,
               "clean_train_images": clean.num_images}
    if select is not None:
        s_loss, s_correct = run(select, "evaluating select")
        results.update(restored_select_loss=s_loss, restored_select_accuracy=s_correct / select.num_images)
    return results, probs
