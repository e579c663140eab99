"""The notebook's augmentation, with tf.image semantics, per image, on whole batches."""
import numpy as np
import torch

from reglab.data import augment as A


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def batch(n=2000, size=8, seed=1):
    return torch.rand(n, 3, size, size, generator=gen(seed)) * 0.6 + 0.2  # away from the clip edges


def test_flip_rate_and_semantics():
    x = batch()
    y = A.random_flip(x, gen())
    flipped = torch.all(y == x.flip(-1), dim=(1, 2, 3))
    unchanged = torch.all(y == x, dim=(1, 2, 3))
    assert torch.all(flipped | unchanged)
    assert 0.45 < flipped.float().mean() < 0.55


def test_brightness_adds_one_delta_per_image_within_range():
    x = batch()
    delta = A.random_brightness(x, gen(), 0.2) - x
    per_image = delta.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-6)  # one delta per image
    d = per_image[:, 0]
    assert d.min() >= -0.2 - 1e-6 and d.max() <= 0.2 + 1e-6
    assert d.min() < -0.18 and d.max() > 0.18 and abs(float(d.mean())) < 0.02  # uniform over the whole range
    assert A.random_brightness(torch.ones(4, 3, 2, 2), gen(), 0.2).max() <= 1.0  # clipped


def test_contrast_keeps_each_channel_mean_and_scales_deviation():
    x = batch()
    y = A.random_contrast(x, gen(), 0.8, 1.2)
    assert torch.allclose(y.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)), atol=1e-5)  # mean preserved
    dev_x = x - x.mean(dim=(-2, -1), keepdim=True)
    dev_y = y - y.mean(dim=(-2, -1), keepdim=True)
    factor = (dev_y.flatten(1) / dev_x.flatten(1)).median(dim=1).values
    assert factor.min() >= 0.8 - 1e-4 and factor.max() <= 1.2 + 1e-4
    assert factor.min() < 0.82 and factor.max() > 1.18
    # one factor per image, shared by its channels
    ratio = dev_y / dev_x
    assert torch.allclose(ratio[:, 0].flatten(1).median(1).values, ratio[:, 2].flatten(1).median(1).values, atol=1e-3)


def test_rot90_all_four_rotations_occur_and_are_exact():
    x = batch(400)
    y = A.random_rot90(x, gen())
    seen = torch.zeros(4)
    for i in range(x.shape[0]):
        matches = [k for k in range(4) if torch.equal(y[i], torch.rot90(x[i], k, dims=(-2, -1)))]
        assert matches, "output is not a rotation of the input"
        seen[matches[0]] += 1
    assert torch.all(seen > 70)  # each of the four about 100 times


def test_seed_augment_is_per_image_and_clipped():
    x = torch.rand(64, 3, 16, 16, generator=gen(3))
    y = A.seed_augment(x, gen())
    assert y.min() >= 0 and y.max() <= 1
    assert y.shape == x.shape
    # identical inputs get different draws
    same = x[:1].expand(32, -1, -1, -1).contiguous()
    out = A.seed_augment(same, gen())
    assert len({tuple(o.flatten()[:8].tolist()) for o in out}) > 16


def test_seed_augment_is_reproducible_from_the_generator():
    x = torch.rand(8, 3, 16, 16, generator=gen(3))
    assert torch.equal(A.seed_augment(x, gen(5)), A.seed_augment(x, gen(5)))


def test_random_erasing_rate_and_area():
    x = torch.full((1000, 3, 32, 32), 0.5)
    y = A.random_erasing(x, gen(), p=0.3)
    changed = (y != x).flatten(1).any(1)
    assert 0.25 < changed.float().mean() < 0.35
    frac = (y != x)[:, 0].flatten(1).float().mean(1)[changed]
    assert frac.max() <= 1 / 3 + 0.05 and frac.min() > 0.005


def test_rrc_keeps_shape_and_range():
    x = torch.rand(16, 3, 32, 32)
    y = A.rrc_augment(x, gen())
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 and not torch.allclose(x, y)


def test_mixup_and_cutmix_keep_targets_normalised_and_mix_partners():
    x = torch.rand(8, 3, 16, 16)
    y = A.soft_targets(torch.arange(8) % 4, 4, 0.0)
    rng = np.random.default_rng(0)
    mx, my = A.mix_batch(x, y, rng, mixup=0.4, cutmix=0.0)
    assert torch.allclose(my.sum(1), torch.ones(8))
    lam = float(my[0, 0])  # image 0 is class 0 and mixes with image 7 (class 3)
    assert torch.allclose(mx[0], lam * x[0] + (1 - lam) * x[7], atol=1e-6)
    cx, cy = A.mix_batch(x, y, np.random.default_rng(1), mixup=0.0, cutmix=1.0)
    pasted = (cx[0] != x[0]).any(0).float().mean()
    assert torch.isclose(cy[0, 0], 1 - pasted, atol=1e-6)  # lam corrected to the true box area


def test_label_smoothing_targets_match_timm():
    t = A.soft_targets(torch.tensor([2]), 5, 0.1)
    assert torch.allclose(t, torch.tensor([[0.02, 0.02, 0.92, 0.02, 0.02]]))
