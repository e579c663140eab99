"""The notebook's Keras callbacks, with Keras's exact semantics, as small state machines.

Their state is plain numbers so a checkpoint can hold it and a resumed run continues exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


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


def scheduled_lr(schedule: str, base_lr: float, step: int, total_steps: int, warmup_steps: int) -> float:
    """Per-step learning rate for the step-based schedules (onecycle: linear warm-up then linear decay to 0;
    cosine: linear warm-up then cosine decay to 0; constant)."""
    if schedule == "constant":
        return base_lr
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "onecycle":
        return base_lr * (1.0 - progress)
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(schedule)
