"""How the learning rate and the stopping are decided.

The notebook's Keras callbacks stay hand-written, on purpose: their exact Keras semantics (strictly lower is
better, absolute min_delta, patience counting) are the point, and their state is plain numbers so a checkpoint
holds it and a resumed run continues exactly. The per-step schedules of the fast recipe are torch's own.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR


@dataclass
class EarlyStopping:
    """keras.callbacks.EarlyStopping(monitor="val_loss", patience, min_delta=0, restore_best_weights=True).

    Keras 3 semantics: wait counts epochs since the last improvement (strictly lower val_loss); training
    stops when wait >= patience (never after the first epoch). patience 0 disables stopping, but the best
    epoch is still tracked (it is also the best checkpoint, as ModelCheckpoint(save_best_only) keeps it).
    """

    patience: int
    best: float = math.inf
    best_epoch: int = 0
    wait: int = 0
    stopped: bool = False

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record epoch (1-based); returns True when this epoch is the new best."""
        self.wait += 1
        if val_loss < self.best:
            self.best, self.best_epoch, self.wait = val_loss, epoch, 0
            return True
        if self.patience > 0 and self.wait >= self.patience and epoch > 1:
            self.stopped = True
        return False

    def state(self) -> dict:
        return asdict(self)


@dataclass
class ReduceLROnPlateau:
    """keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor, patience, min_delta (absolute), min_lr),
    cooldown 0: after `patience` epochs without val_loss < best - min_delta, lr = max(lr * factor, min_lr)."""

    factor: float
    patience: int
    min_delta: float
    min_lr: float
    best: float = math.inf
    wait: int = 0

    def update(self, val_loss: float, lr: float) -> float:
        if val_loss < self.best - self.min_delta:
            self.best, self.wait = val_loss, 0
            return lr
        self.wait += 1
        if self.wait >= self.patience and lr > self.min_lr * (1 + 1e-6):
            self.wait = 0
            return max(lr * self.factor, self.min_lr)
        return lr

    def state(self) -> dict:
        return asdict(self)


def step_schedule(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, warmup_steps: int):
    """The per-step schedules, from torch.optim.lr_scheduler (stepped after every optimizer step): linear
    warm-up from lr/warmup_steps to lr, then onecycle: linear decay to 0; cosine: cosine decay to 0.
    None for `plateau` (ReduceLROnPlateau above, per epoch) and `constant`."""
    if schedule in ("plateau", "constant"):
        return None
    decay_steps = max(total_steps - warmup_steps, 1)
    if schedule == "onecycle":
        decay = LinearLR(optimizer, start_factor=1.0, end_factor=0.0, total_iters=decay_steps)
    elif schedule == "cosine":
        decay = CosineAnnealingLR(optimizer, T_max=decay_steps, eta_min=0.0)
    else:
        raise ValueError(schedule)
    if warmup_steps <= 0:
        return decay
    warmup = LinearLR(optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0,
                      total_iters=max(warmup_steps - 1, 1))
    return SequentialLR(optimizer, [warmup, decay], milestones=[warmup_steps])
