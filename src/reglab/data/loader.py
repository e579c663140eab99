"""Batches from uint8 tensors that live on the training device.

The whole split is one (N, 3, H, W) uint8 tensor (channels-last in memory: the cache's NHWC layout,
viewed as NCHW, costs no copy). A training epoch (`shuffled_batches`) draws a permutation from a seeded CPU
generator (identical on every device, and its state goes into the checkpoint) and yields index batches that
the step gathers on the device; evaluation (`DeviceLoader`) serves a split, or some of its images, in their
stored order. Batches are converted to float in [0, 1] on the device. The last partial batch is kept, as Keras
does (see batch_bounds).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def to_device_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 numpy -> (N, 3, H, W) uint8 tensor on `device`, channels-last in memory."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).to(device)


class DeviceLoader:
    """A split on the device, in batches of `batch_size` in a fixed order: all its images, or those at `index`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 index: torch.Tensor | None = None):
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.device = images.device
        self.index = torch.arange(images.shape[0], device=self.device) if index is None else index

    @classmethod
    def upload(cls, images: np.ndarray, labels: np.ndarray, device: torch.device, batch_size: int) -> DeviceLoader:
        return cls(to_device_tensor(images, device), torch.from_numpy(labels).to(device), batch_size)

    def subset(self, index: np.ndarray) -> DeviceLoader:
        """The images at `index`, in that order, from the tensors already on the device (nothing is copied)."""
        return DeviceLoader(self.images, self.labels, self.batch_size,
                            torch.from_numpy(index).to(self.device, non_blocking=True))

    def __len__(self) -> int:
        return len(batch_bounds(self.num_images, self.batch_size))

    @property
    def num_images(self) -> int:
        return self.index.shape[0]

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) batches in the loader's order."""
        for start, end in batch_bounds(self.num_images, self.batch_size):
            idx = self.index[start:end]
            yield self.images.index_select(0, idx), self.labels.index_select(0, idx)


def shuffled_batches(indices: np.ndarray, generator: torch.Generator, device: torch.device,
                     batch_size: int) -> Iterator[torch.Tensor]:
    """One training epoch over `indices`: device index batches in an order drawn from `generator` (CPU)."""
    order = torch.from_numpy(indices)[torch.randperm(len(indices), generator=generator)]
    order = order.to(device, non_blocking=True)
    for start, end in batch_bounds(len(order), batch_size):
        yield order[start:end]


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, end) of each batch. The last partial batch is kept (as Keras does), but a last batch of one image
    joins the one before: BatchNorm cannot normalise a single dense-layer sample in training mode."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return list(zip(starts, starts[1:] + [n]))


def to_float(batch_u8: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = batch_u8.float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
