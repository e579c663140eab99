"""Batch-level augmentation on the training device: one independent random draw per image, no host syncs.

All functions take float images in [0, 1], shape (N, C, H, W), and a torch.Generator on the same device,
and return a new batch. Random choices are made with tensor ops and `torch.where`, never with Python
control flow on tensor values, so a CUDA step never waits for the host.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _uniform(n: int, low: float, high: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


def random_flip(x: torch.Tensor, g: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """tf.image.random_flip_left_right: mirror each image horizontally with probability p."""
    flip = torch.rand(x.shape[0], generator=g, device=x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_brightness(x: torch.Tensor, g: torch.Generator, max_delta: float = 0.2) -> torch.Tensor:
    """tf.image.random_brightness: add one delta ~ U[-max_delta, max_delta] per image (on the [0, 1] scale)."""
    delta = _uniform(x.shape[0], -max_delta, max_delta, g, x.device)
    return (x + delta[:, None, None, None]).clamp_(0.0, 1.0)


def random_contrast(x: torch.Tensor, g: torch.Generator, lower: float = 0.8, upper: float = 1.2) -> torch.Tensor:
    """tf.image.random_contrast: (x - mean) * f + mean, mean per image and channel, one f ~ U[lower, upper] per
    image."""
    factor = _uniform(x.shape[0], lower, upper, g, x.device)[:, None, None, None]
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - mean) * factor + mean).clamp_(0.0, 1.0)


def random_rot90(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """tf.image.rot90 with k ~ U{0, 1, 2, 3} per image (counter-clockwise). Square images only."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError("random_rot90 needs square images")
    k = torch.randint(0, 4, (x.shape[0],), generator=g, device=x.device)[:, None, None, None]
    out = x
    for turns in (1, 2, 3):
        out = torch.where(k == turns, torch.rot90(x, turns, dims=(-2, -1)), out)
    return out


def seed_augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The notebook's augment_image, in its order: flip, brightness 0.2, contrast [0.8, 1.2], rot90; clipped."""
    x = random_flip(x, g)
    x = random_brightness(x, g, 0.2)
    x = random_contrast(x, g, 0.8, 1.2)
    return random_rot90(x, g)


def random_resized_crop(
    x: torch.Tensor, g: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> torch.Tensor:
    """The usual ImageNet crop: area fraction ~ U(scale), log-aspect ~ U(log ratio), resized back (bilinear).

    Crops that would not fit are shrunk to fit (torchvision retries instead; the distribution differs only
    for extreme draws). Implemented as one batched affine grid_sample.
    """
    n, _, h, w = x.shape
    area = _uniform(n, scale[0], scale[1], g, x.device)
    log_r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), g, x.device)
    aspect = torch.exp(log_r)
    cw = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width as a fraction of the image width
    ch = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(n, generator=g, device=x.device) * 2 - 1) * (1 - cw)  # centre in [-1, 1] coordinates
    cy = (torch.rand(n, generator=g, device=x.device) * 2 - 1) * (1 - ch)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = cw, cx
    theta[:, 1, 1], theta[:, 1, 2] = ch, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def rrc_augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """`--augment rrc`: random-resized-crop then horizontal flip."""
    return random_flip(random_resized_crop(x, g), g)


def flip_augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return random_flip(x, g)


AUGMENTATIONS = {"seed": seed_augment, "rrc": rrc_augment, "flip": flip_augment}


def augment(name: str, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    if name == "none":
        return x
    return AUGMENTATIONS[name](x, g)


def random_erasing(
    x: torch.Tensor, g: torch.Generator, p: float, area=(0.02, 1 / 3), log_ratio=(math.log(0.3), math.log(1 / 0.3))
) -> torch.Tensor:
    """timm's RandomErasing (`--reprob`), per-pixel mode: with probability p per image, replace one rectangle
    (area fraction ~ U(area), log-aspect ~ U(log_ratio)) with uniform noise in [0, 1]."""
    n, _, h, w = x.shape
    dev = x.device
    frac = _uniform(n, area[0], area[1], g, dev)
    aspect = torch.exp(_uniform(n, log_ratio[0], log_ratio[1], g, dev))
    eh = torch.sqrt(frac * aspect * h * w).clamp(1, h).floor()
    ew = torch.sqrt(frac / aspect * h * w).clamp(1, w).floor()
    top = (torch.rand(n, generator=g, device=dev) * (h - eh + 1)).floor()
    left = (torch.rand(n, generator=g, device=dev) * (w - ew + 1)).floor()
    apply = torch.rand(n, generator=g, device=dev) < p
    rows = torch.arange(h, device=dev)[None, :]
    cols = torch.arange(w, device=dev)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    mask = (in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None])[:, None]
    noise = torch.rand(x.shape, generator=g, device=dev, dtype=x.dtype)
    return torch.where(mask, noise, x)


def mix_batch(
    x: torch.Tensor, y_soft: torch.Tensor, rng: np.random.Generator, mixup: float, cutmix: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """timm's Mixup/CutMix in 'batch' mode: each image is mixed with its partner in the reversed batch.

    The mixing weight lam ~ Beta(alpha, alpha) and the CutMix box are drawn once per batch on the host
    (as timm does), from `rng`, so the device never waits. With both enabled, each batch picks one of the
    two with probability 0.5. Mixup blends whole images; CutMix pastes a box of area (1 - lam) from the
    partner and corrects lam to the box's clipped area. Returns mixed images and mixed soft targets.
    """
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.random() < 0.5)
    lam = float(rng.beta(cutmix, cutmix) if use_cutmix else rng.beta(mixup, mixup))
    partner_x, partner_y = x.flip(0), y_soft.flip(0)
    if use_cutmix:
        h, w = x.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        bh, bw = int(h * cut), int(w * cut)
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - bh // 2, 0), min(cy + bh // 2, h)
        x0, x1 = max(cx - bw // 2, 0), min(cx + bw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = partner_x[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1.0 - lam) * partner_x
    return x, lam * y_soft + (1.0 - lam) * partner_y


def soft_targets(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot targets with label smoothing (timm: off-value smoothing / C, on-value 1 - smoothing + smoothing / C)."""
    off = smoothing / num_classes
    return torch.full((y.shape[0], num_classes), off, device=y.device).scatter_(1, y[:, None], 1.0 - smoothing + off)


def augmented_draws(images: np.ndarray, name: str, draws: int = 4) -> np.ndarray:
    """(n, draws, H, W, 3) uint8: `draws` independent draws of augmentation `name` of each (H, W, 3) uint8 image,
    from a fixed generator of their own (the training generators are not touched): what the run trains with."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    g = torch.Generator().manual_seed(0)
    outs = [augment(name, x, g) for _ in range(draws)]
    as_uint8 = lambda t: (t.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.uint8)  # noqa: E731
    return np.stack([as_uint8(o) for o in outs], axis=1)


def augmentation_grid(images: np.ndarray, name: str, draws: int = 4) -> np.ndarray:
    """(n * (draws + 1), H, W, 3) uint8: each image as stored, then its `draws` augmented versions
    (augmented_draws: the same figure every time)."""
    imgs = np.asarray(images)
    drawn = augmented_draws(imgs, name, draws)
    return np.stack([img for i in range(len(imgs)) for img in [imgs[i], *drawn[i]]])
