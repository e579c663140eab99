"""Batches from uint8 tensors that live on the training device.

The whole split is one (N, 3, H, W) uint8 tensor (channels-last in memory: the cache's NHWC layout,
viewed as NCHW, costs no copy). Each epoch draws a permutation from a seeded CPU generator (identical on
every device, and its state goes into the checkpoint), gathers batches on the device and converts them to
float in [0, 1]. The last partial batch is kept, as Keras does (see batch_bounds).
"""

from __future__ import annotations

import numpy as np
import torch


def to_device_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 numpy -> (N, 3, H, W) uint8 tensor on `device`, channels-last in memory."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).to(device)


class DeviceLoader:
    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device, batch_size: int):
        self.images = to_device_tensor(images, device)
        self.labels = torch.from_numpy(labels).to(device)
        self.device = device
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(batch_bounds(self.num_images, self.batch_size))

    @property
    def num_images(self) -> int:
        return self.images.shape[0]

    def epoch(self, generator: torch.Generator | None, shuffle: bool = True):
        """Yield (uint8 images, labels) batches; the order comes from `generator` (CPU) when shuffling."""
        n = self.num_images
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order.to(self.device, non_blocking=True)
        for start, end in batch_bounds(n, self.batch_size):
            idx = order[start:end]
            yield self.images.index_select(0, idx), self.labels.index_select(0, idx)


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
