"""One training step of a cohort (K seeds as one packed network; a single run is a cohort of one), as plain
PyTorch: no run folders, no signals, no host sync.

`train_step` takes one batch per member stacked member-major (uint8 images (K*B, 3, H, W) and labels (K*B,),
already on the device) and returns each member's mean loss and correct count, (K,) tensors still on the device.
Its stages, in order, are where the regularizers act (regularizers.py names each one's stage; the model stage is
the network models.py built from the config):

  input batch   float [0, 1] -> augmentation (one draw per image) -> random erasing
  targets       label smoothing: soft targets where mixing or a plugin's transform may change them, otherwise
                inside the loss
  mixing        mixup/cutmix of images and targets together, within each member's own batch; then each active
                plugin transform, member by member, each with the member's own generator for it
  loss          cross-entropy of each member on the packed model's (B, K, classes) logits, plus each active
                plugin loss term on that member's logits, targets and parameters
  update        one optimizer step, each member at its own learning rate (zero once stopped), then the schedule
  after         each active plugin hook on each training member's parameters; the EMA of the weights; stopped
                members' BatchNorm statistics and EMA are put back
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

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
from .errors import UserError
from .optim import PackedOptimizer
from .packed import Cohort
from .regularizers import Regularizer, list_regularizers


@dataclass
class Generators:
    """The step's random streams. `aug`: augmentation and random erasing, one stream for the whole cohort on the
    device (one draw per image); `mix`: mixup/cutmix, each member's own host generator (one draw per batch);
    `plugins`: per member, {plugin regularizer: its own generator on the device} for each active plugin transform,
    seeded from the member's seed and the regularizer's name (so adding one plugin never moves another's draws)."""

    aug: torch.Generator
    mix: list[np.random.Generator]
    plugins: list[dict[str, torch.Generator]] = field(default_factory=list)

    @classmethod
    def seeded(cls, cfgs: list[Config], device: torch.device) -> Generators:
        return cls(torch.Generator(device=device).manual_seed(cfgs[0].seed + 1),
                   [np.random.default_rng(cfg.seed + 2) for cfg in cfgs],
                   [{r.name: torch.Generator(device=device).manual_seed(plugin_seed(cfg.seed, r.name))
                     for r in plugins_at(cfg, "input")} for cfg in cfgs])


def plugin_seed(seed: int, name: str) -> int:
    """A plugin's seed for a member: a hash of (the member's seed, the regularizer's name), stable everywhere."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little") >> 1


def plugins_at(cfg: Config, stage: str) -> list[Regularizer]:
    """The plugin regularizers active under `cfg` that act at `stage` (input, loss or after_step), in order."""
    return [r for r in list_regularizers() if r.plugin and r.stage == stage and r.active(cfg)]


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
    transforms, terms, hooks = (plugins_at(cfg, stage) for stage in ("input", "loss", "after_step"))
    # input batch: augmentation, random erasing
    x = to_float(images, cfg.channels_last)
    x = augment(cfg.augment, x, gens.aug)
    if cfg.reprob > 0:
        x = random_erasing(x, gens.aug, cfg.reprob)
    # targets: smoothed, as soft targets where mixing or a plugin transform may change them (otherwise the loss
    # smooths the labels itself)
    mixing = cfg.mixup > 0 or cfg.cutmix > 0
    soft = soft_targets(labels, cohort.num_classes, cfg.smoothing) if mixing or transforms else None
    # images and targets together: mixup / cutmix, then each plugin transform, within each member's own batch
    if mixing:
        x, soft = mix_members(x, soft, gens.mix, cfg.mixup, cfg.cutmix)
    for reg in transforms:
        x, soft = transform_members(reg, x, soft, [g[reg.name] for g in gens.plugins], reg.strength(cfg))
    # forward: the members side by side
    with autocast(precision, x.device):
        logits = cohort.step_model(cohort.inputs(x)).float()  # (B, K, classes)
    # loss: each member's own, plus each plugin loss term
    y = cohort.targets(labels)  # (B, K)
    if soft is not None:
        losses = torch.sum(-cohort.targets(soft) * F.log_softmax(logits, dim=2), dim=2).mean(0)
    else:
        losses = F.cross_entropy(logits.permute(0, 2, 1), y, label_smoothing=cfg.smoothing, reduction="none").mean(0)
    if terms:
        targets = soft if soft is not None else soft_targets(labels, cohort.num_classes, cfg.smoothing)
        losses = losses + loss_terms(terms, logits, cohort.targets(targets), cohort, cfg)
    # update: a stopped member's loss counts zero, so its gradients are zero
    optimizer.zero_grad(set_to_none=True)
    (losses * optimizer.active).sum().backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    # after the update: plugin hooks on the training members' weights, the EMA of the weights; stopped members'
    # BatchNorm statistics and EMA put back
    if hooks:
        after_step_hooks(hooks, cohort, cfg)
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


def transform_members(reg: Regularizer, x: torch.Tensor, soft: torch.Tensor, gens: list[torch.Generator],
                      strength) -> tuple[torch.Tensor, torch.Tensor]:
    """A plugin's batch transform applied to each member's own batch of member-major images (K*B, 3, H, W) and soft
    targets (K*B, classes), member k drawing from gens[k]: the transformed images and targets, as given."""
    k = len(gens)
    out = [reg.apply(xk, tk, strength, g) for xk, tk, g in zip(x.chunk(k), soft.chunk(k), gens)]
    for (xk, tk), given in zip(zip(x.chunk(k), soft.chunk(k)), out):
        if not (isinstance(given, tuple) and len(given) == 2 and all(isinstance(t, torch.Tensor) for t in given)
                and given[0].shape == xk.shape and given[1].shape == tk.shape):
            raise UserError(f"regularizer {reg.name!r} ({reg.origin.module}) must return (images, targets) shaped as "
                            f"given, {tuple(xk.shape)} and {tuple(tk.shape)}; it returned {_shapes(given)}")
    return torch.cat([xk for xk, _ in out]), torch.cat([tk for _, tk in out])


def loss_terms(terms: list[Regularizer], logits: torch.Tensor, targets: torch.Tensor, cohort: Cohort,
               cfg: Config) -> torch.Tensor:
    """(K,): each member's sum of the plugin loss terms on its own logits (B, classes), soft targets and
    parameters."""
    per_member = []
    for k in range(cohort.size):
        params = cohort.member_parameters(k)
        total = 0.0
        for reg in terms:
            term = reg.apply(logits[:, k], targets[:, k], reg.strength(cfg), params)
            if not (isinstance(term, torch.Tensor) and term.dim() == 0):
                raise UserError(f"regularizer {reg.name!r} ({reg.origin.module}) must return a scalar tensor from its "
                                f"loss term; it returned {_shapes(term)}")
            total = total + term.float()
        per_member.append(total)
    return torch.stack(per_member)


@torch.no_grad()
def after_step_hooks(hooks: list[Regularizer], cohort: Cohort, cfg: Config) -> None:
    """Each plugin hook on each training member's parameters (views: what it writes changes that member alone); a
    stopped member is never touched."""
    for k in cohort.training_members():
        params = cohort.member_parameters(k)
        for reg in hooks:
            reg.apply(params, reg.strength(cfg))


def _shapes(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_shapes(v) for v in value) + ")"
    return type(value).__name__
