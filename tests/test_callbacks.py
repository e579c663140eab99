"""Keras's EarlyStopping and ReduceLROnPlateau semantics, epoch by epoch."""
import math

import pytest

from reglab.callbacks import EarlyStopping, ReduceLROnPlateau, step_schedule


def test_early_stopping_patience_and_best_epoch():
    es = EarlyStopping(patience=4)
    losses = [1.0, 0.8, 0.9, 0.85, 0.81, 0.7, 0.75, 0.75, 0.76, 0.77, 0.5]
    stopped_at = None
    for epoch, loss in enumerate(losses, 1):
        es.update(epoch, loss)
        if es.stopped:
            stopped_at = epoch
            break
    assert es.best_epoch == 6 and es.best == 0.7
    assert stopped_at == 10  # 4 epochs without a strictly lower val_loss after epoch 6


def test_early_stopping_equal_loss_is_not_an_improvement():
    es = EarlyStopping(patience=1)
    es.update(1, 1.0)
    assert not es.update(2, 1.0) and es.stopped


def test_early_stopping_disabled_still_tracks_best():
    es = EarlyStopping(patience=0)
    for epoch, loss in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 1):
        es.update(epoch, loss)
    assert not es.stopped and es.best_epoch == 1


def test_plateau_reduces_after_patience_with_absolute_min_delta():
    cb = ReduceLROnPlateau(factor=0.5, patience=3, min_delta=1e-4, min_lr=1e-5)
    lr = 1e-3
    lrs = []
    # epoch 2-4 improve by less than min_delta: they do not count as improvements
    for loss in [1.0, 0.99995, 0.99992, 0.99991, 0.5]:
        lr = cb.update(loss, lr)
        lrs.append(lr)
    assert lrs == [1e-3, 1e-3, 1e-3, 5e-4, 5e-4]


def test_plateau_respects_min_lr():
    cb = ReduceLROnPlateau(factor=0.5, patience=1, min_delta=0.0, min_lr=1e-5)
    lr = 1.5e-5
    lr = cb.update(1.0, lr)
    lr = cb.update(1.0, lr)
    assert lr == pytest.approx(1e-5)
    assert cb.update(1.0, lr) == pytest.approx(1e-5)


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def hand_written_lr(schedule: str, base_lr: float, step: int, total_steps: int, warmup_steps: int) -> float:
    """reglab's own step schedules before they moved to torch.optim.lr_scheduler (kept as the reference)."""
    if schedule == "constant":
        return base_lr
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(max((step - warmup_steps) / max(1, total_steps - warmup_steps), 0.0), 1.0)
    if schedule == "onecycle":
        return base_lr * (1.0 - progress)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
@pytest.mark.parametrize("total,warmup", [(100, 10), (50, 0), (7, 2), (3, 3), (296, 1)])
def test_torch_schedules_give_the_hand_written_learning_rates(schedule, total, warmup):
    import torch

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=0.002)
    sched = step_schedule(opt, schedule, total, warmup)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [hand_written_lr(schedule, 0.002, s, total, warmup) for s in range(total)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert max(lrs) == pytest.approx(0.002) and step_schedule(opt, "plateau", total, warmup) is None
