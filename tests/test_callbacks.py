"""Keras's EarlyStopping and ReduceLROnPlateau semantics, epoch by epoch."""
import math

import pytest

from reglab.callbacks import EarlyStopping, ReduceLROnPlateau, scheduled_lr


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
def test_step_schedules_warm_up_then_decay_to_zero(schedule):
    lrs = [scheduled_lr(schedule, 1.0, s, 100, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] < 0.02 and math.isclose(scheduled_lr("constant", 0.3, 50, 100, 10), 0.3)
