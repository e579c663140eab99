"""Cohorts: K members of one architecture (K seeds) packed into one network, trained as one.

`pack(models)` turns K standard networks (models.build_model, identical architecture) into one module whose
every layer holds all K: a Conv2d(c_in, c_out) becomes Conv2d(K*c_in, K*c_out, groups=K) (member k owns
input channels [k*c_in, (k+1)*c_in) and output channels [k*c_out, (k+1)*c_out)); BatchNorm over K*c channels
is then per member; ReLU, max-pooling and dropout act elementwise (or per channel), so each member draws its
own masks; Flatten keeps each member's features apart; a Linear becomes a batched matrix product with a
(K, out, in) weight. Input (B, K*3, H, W): member k's images in channels 3k..3k+2. Output (B, K, classes).

Every packed tensor keeps its members along dim 0: in K equal blocks of rows (convolutions, BatchNorm), or
stacked as dim 0 of size K (the dense layers). `member_view` gives member k's part as a view; `unpack`
gives member k's state_dict under the standard model's names, so run folders hold ordinary weights.
A single run is a cohort of one: K = 1 computes what the standard network computes.
"""

from __future__ import annotations

import torch
from torch import nn

from .models import DropPath, Residual


class PackedLinear(nn.Module):
    """K independent Linear(in, out) layers on input (B, K, in) -> (B, K, out)."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([lin.weight.detach() for lin in layers]).clone())  # (K, out, in)
        self.bias = nn.Parameter(torch.stack([lin.bias.detach() for lin in layers]).clone())  # (K, out)

    def forward(self, x):
        # (K, B, in) @ (K, in, out) -> (K, B, out)
        return torch.baddbmm(self.bias.unsqueeze(1), x.transpose(0, 1), self.weight.transpose(1, 2)).transpose(0, 1)


class PackedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over (B, K, c): per member and feature, as K separate BatchNorm1d(c)."""

    def forward(self, x):
        b, k, c = x.shape
        return super().forward(x.reshape(b, k * c)).reshape(b, k, c)


class PackedFlatten(nn.Module):
    """(B, K*C, h, w) -> (B, K, C*h*w): each member's features flattened in the standard (C, h, w) order."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x):
        return x.reshape(x.shape[0], self.k, -1)


class PackedDropPath(DropPath):
    """Stochastic depth that drops a residual branch per sample AND member."""

    def __init__(self, p: float, k: int):
        super().__init__(p)
        self.k = k

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        b, kc, h, w = x.shape
        keep = torch.rand(b, self.k, 1, 1, 1, device=x.device) >= self.p
        return (x.view(b, self.k, kc // self.k, h, w) * keep.to(x.dtype) / (1.0 - self.p)).view(b, kc, h, w)


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach() for t in tensors]).clone()


def _pack_module(mods: list[nn.Module]) -> nn.Module:
    first, k = mods[0], len(mods)
    if isinstance(first, nn.Conv2d):
        conv = nn.Conv2d(first.in_channels * k, first.out_channels * k, first.kernel_size, padding=first.padding,
                         groups=k, bias=first.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(_cat([m.weight for m in mods]))
            if first.bias is not None:
                conv.bias.copy_(_cat([m.bias for m in mods]))
        return conv
    if isinstance(first, (nn.BatchNorm2d, nn.BatchNorm1d)):
        cls = nn.BatchNorm2d if isinstance(first, nn.BatchNorm2d) else PackedBatchNorm1d
        bn = cls(first.num_features * k, eps=first.eps, momentum=first.momentum)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).copy_(_cat([getattr(m, name) for m in mods]))
            bn.num_batches_tracked.copy_(first.num_batches_tracked)
        return bn
    if isinstance(first, nn.Linear):
        return PackedLinear(mods)
    if isinstance(first, nn.Flatten):
        return PackedFlatten(k)
    if isinstance(first, Residual):
        return Residual(_pack_module([m.branch for m in mods]), PackedDropPath(first.drop_path.p, k))
    if isinstance(first, nn.Sequential):
        packed = nn.Sequential()
        for name, _ in first.named_children():
            packed.add_module(name, _pack_module([getattr(m, name) for m in mods]))
        return packed
    if isinstance(first, (nn.ReLU, nn.MaxPool2d, nn.Dropout, nn.Dropout2d)):
        return first  # elementwise or per channel: each member's units draw their own masks
    raise TypeError(f"cannot pack {type(first).__name__}")


def pack(models: list[nn.Module]) -> nn.Module:
    """One network holding the K members (same architecture, any weights), on the first member's device and
    in its dtype."""
    first = next(models[0].parameters())
    return _pack_module(models).to(device=first.device, dtype=first.dtype)


def stacked_names(packed: nn.Module) -> set[str]:
    """State names whose dim 0 is the member index (the dense layers); every other tensor of 1+ dims holds its
    members in K equal blocks of rows."""
    names = set()
    for prefix, module in packed.named_modules():
        if isinstance(module, PackedLinear):
            names |= {f"{prefix}.weight", f"{prefix}.bias"}
    return names


def member_view(name: str, tensor: torch.Tensor, k: int, size: int, stacked: set[str]) -> torch.Tensor | None:
    """Member k's part of a packed tensor, as a view (None for shared scalars such as num_batches_tracked)."""
    if tensor.dim() == 0:
        return None
    if name in stacked:
        return tensor[k]
    rows = tensor.shape[0] // size
    return tensor[k * rows:(k + 1) * rows]


def unpack(state: dict[str, torch.Tensor], k: int, size: int, stacked: set[str]) -> dict[str, torch.Tensor]:
    """Member k's state_dict under the standard model's names (contiguous copies)."""
    out = {}
    for name, t in state.items():
        view = member_view(name, t, k, size, stacked)
        out[name] = (t if view is None else view).detach().clone().contiguous()
    return out


def load_member(packed: nn.Module, state: dict[str, torch.Tensor], k: int, size: int) -> None:
    """Write a standard state_dict into member k's part of the packed network (resume, restore)."""
    stacked = stacked_names(packed)
    own = packed.state_dict()
    with torch.no_grad():
        for name, t in own.items():
            view = member_view(name, t, k, size, stacked)
            if view is None:
                t.copy_(state[name])
            else:
                view.copy_(state[name].reshape(view.shape))
