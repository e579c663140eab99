"""One training step of a cohort (K seeds as one packed network; a single run is a cohort of one), as plain
PyTorch: no run folders, no signals, no host sync.

`train_step` takes one batch per member stacked member-major (uint8 images (K*B, 3, H, W) and labels (K*B,),
already on the device) and returns each member's mean loss and correct count, (K,) tensors still on the device.
Its stages, in order, are where the regularizers act:

  input batch   float [0, 1] -> augmentation (one draw per image) -> random erasing
  targets       label smoothing: soft targets where mixing needs them, otherwise inside the loss
  mixing        mixup/cutmix of images and targets together, within each member's own batch
  loss          cross-entropy of each member on the packed model's (B, K, classes) logits
  update        one optimizer step, each member at its own learning rate (zero once stopped), then the schedule
  after         the EMA of the weights; stopped members' BatchNorm statistics and EMA are put back
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from .callbacks import step_schedule
from .config import Config
from .data.augment import augment, mix_batch, random_erasing, soft_targets
from .data.loader import to_float
from .device import autocast
from .optim import PackedOptimizer
from .packed import Cohort


@dataclass
class Generators:
    """The step's random streams. `aug`: augmentation and random erasing, one stream for the whole cohort on the
    device (one draw per image); `mix`: mixup/cutmix, each member's own host generator (one draw per batch)."""

    aug: torch.Generator
    mix: list[np.random.Generator]

    @classmethod
    def seeded(cls, cfgs: list[Config], device: torch.device) -> Generators:
        return cls(torch.Generator(device=device).manual_seed(cfgs[0].seed + 1),
                   [np.random.default_rng(cfg.seed + 2) for cfg in cfgs])


def setup(cfgs: list[Config], models: list[nn.Module], device: torch.device,
          steps_per_epoch: int) -> tuple[Cohort, PackedOptimizer, LRScheduler | None, Generators]:
    """(cohort, optimizer, schedule or None, generators): what train_step runs with, for members `cfgs` (one
    recipe, their own seeds) starting from `models` (packed.seeded_models)."""
    cfg = cfgs[0]
    cohort = Cohort(models, device, channels_last=cfg.channels_last, ema_decay=cfg.model_ema, compile=cfg.compile)
    optimizer = PackedOptimizer.for_config(cohort.model, cohort.size, cfg)
    scheduler = step_schedule(optimizer, cfg.schedule, cfg.epochs * steps_per_epoch,
                              int(cfg.warmup_epochs * steps_per_epoch))
    return cohort, optimizer, scheduler, Generators.seeded(cfgs, device)


def train_step(cohort: Cohort, optimizer: PackedOptimizer, scheduler: LRScheduler | None, images: torch.Tensor,
               labels: torch.Tensor, gens: Generators, cfg: Config,
               precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step of every member on its own batch: (mean loss (K,), correct count (K,)) on the device."""
    # input batch: augmentation, random erasing
    x = to_float(images, cfg.channels_last)
    x = augment(cfg.augment, x, gens.aug)
    if cfg.reprob > 0:
        x = random_erasing(x, gens.aug, cfg.reprob)
    # targets: smoothed, as soft targets where mixing needs them (otherwise the loss smooths the labels itself)
    mixing = cfg.mixup > 0 or cfg.cutmix > 0
    soft = soft_targets(labels, cohort.num_classes, cfg.smoothing) if mixing else None
    # images and targets together: mixup / cutmix within each member's own batch
    if mixing:
        x, soft = mix_members(x, soft, gens.mix, cfg.mixup, cfg.cutmix)
    # forward: the members side by side
    with autocast(precision, x.device):
        logits = cohort.step_model(cohort.inputs(x)).float()  # (B, K, classes)
    # loss: each member's own
    y = cohort.targets(labels)  # (B, K)
    if mixing:
        losses = torch.sum(-cohort.targets(soft) * F.log_softmax(logits, dim=2), dim=2).mean(0)
    else:
        losses = F.cross_entropy(logits.permute(0, 2, 1), y, label_smoothing=cfg.smoothing, reduction="none").mean(0)
    # update: a stopped member's loss counts zero, so its gradients are zero
    optimizer.zero_grad(set_to_none=True)
    (losses * optimizer.active).sum().backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    # after the update: the EMA of the weights; stopped members' BatchNorm statistics and EMA put back
    cohort.update_ema()
    cohort.keep_frozen()
    correct = (logits.detach().argmax(2) == y).sum(0)
    return losses.detach(), correct


def mix_members(x: torch.Tensor, soft: torch.Tensor, rngs: list[np.random.Generator], mixup: float,
                cutmix: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup/CutMix (data.augment.mix_batch) within each member's own batch of member-major images (K*B, 3, H, W)
    and soft targets (K*B, classes), member k drawing from rngs[k]: the mixed images and targets, as given."""
    k = len(rngs)
    mixed = [mix_batch(xk, tk, rng, mixup, cutmix) for xk, tk, rng in zip(x.chunk(k), soft.chunk(k), rngs)]
    return torch.cat([xk for xk, _ in mixed]), torch.cat([tk for _, tk in mixed])
