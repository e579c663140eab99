"""Cutout (DeVries & Taylor 2017, "Improved Regularization of Convolutional Neural Networks with Cutout") as a
reglab regularizer plugin: a batch transform that blanks one square hole per training image.

    reglab train --plugin examples/cutout.py --cutout 48 --out runs/cutout        (or --set cutout=48)
    reglab ablate --plugin examples/cutout.py --variants full,cutout --seeds 5    (full vs full + Cutout)

Each image gets its own hole: a square of side `size` pixels centred on a pixel drawn uniformly over the image, so
near a border it is clipped and covers less (as in the paper, whose code also lets the centre fall anywhere). The
paper fills the hole with zeros after normalising the images, that is with the dataset's mean colour; reglab feeds
the network images in [0, 1] without normalisation, so the hole is filled with each image's own mean colour. The
targets are left as they are: Cutout hides part of the image, it does not relabel it.

The side is the strength: 0 (neutral) turns it off. The ablation variant `cutout` uses 48 px, about a third of
reglab's 160 px images, the fraction the paper used for STL-10 (a 32 px hole in 96 px images).
"""

import torch

import reglab


@reglab.register_regularizer(
    "cutout", stage="input", ablation=48, about="Cutout: one square hole per image (DeVries & Taylor 2017)",
    setting=reglab.Setting("cutout", int, 0, "[0, 1024]", metavar="PX",
                           help="Cutout: blank one square hole of this side (pixels) per training image"))
def cutout(images: torch.Tensor, targets: torch.Tensor, size: int, generator: torch.Generator):
    """images (B, 3, H, W) in [0, 1], targets (B, classes): one hole of side `size` per image, centred on a pixel
    drawn from `generator` (this member's own stream); the targets unchanged."""
    n, _, h, w = images.shape
    dev = images.device
    top = torch.randint(0, h, (n,), generator=generator, device=dev) - size // 2
    left = torch.randint(0, w, (n,), generator=generator, device=dev) - size // 2
    rows = torch.arange(h, device=dev)[None, :]
    cols = torch.arange(w, device=dev)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + size)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + size)[:, None])
    hole = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (B, 1, H, W)
    return torch.where(hole, images.mean(dim=(2, 3), keepdim=True), images), targets
