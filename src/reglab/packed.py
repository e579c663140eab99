"""Cohorts: K members of one architecture (K seeds) packed into one network, trained as one.

`pack(models)` turns K standard networks (models.build_model, identical architecture) into one module whose
every layer holds all K: a Conv2d(c_in, c_out) becomes Conv2d(K*c_in, K*c_out, groups=K) (member k owns
input channels [k*c_in, (k+1)*c_in) and output channels [k*c_out, (k+1)*c_out)); BatchNorm over K*c channels
is then per member; ReLU, max-pooling and dropout act elementwise (or per channel), so each member draws its
own masks; Flatten keeps each member's features apart; a Linear becomes a batched matrix product with a
(K, out, in) weight. Input (B, K*3, H, W): member k's images in channels 3k..3k+2. Output (B, K, classes).

Every packed tensor keeps its members along dim 0: in K equal blocks of rows (convolutions, BatchNorm), or
stacked as dim 0 of size K (the dense layers). `Cohort` is the one object that knows this layout: it turns a
member-major batch into the packed input (`inputs`) and labels into the output's layout (`targets`), gives
member k's state under the standard model's names (`member_state`, so run folders hold ordinary weights) and
writes one back (`load_member`), gives member k's parameters as views (`member_parameters`, for a plugin's loss
term or weight constraint), keeps a stopped member frozen (`freeze`, `keep_frozen`) and holds the EMA of
the weights. A single run is a cohort of one: K = 1 computes what the standard network computes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .config import Config
from .models import DropPath, Residual, build_model


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
        packed = Residual(_pack_module([m.branch for m in mods]), first.drop_path.p)
        packed.drop_path = PackedDropPath(first.drop_path.p, k)  # per sample and member
        return packed
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


def seeded_models(cfgs: list[Config], num_classes: int) -> list[nn.Module]:
    """One standard model per member, each with its own seed's initial weights (on the CPU). The global generator
    goes on from the last seed's stream: dropout draws from it, so a single run continues its seed's stream."""
    models = []
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)
        models.append(build_model(cfg, num_classes))
    return models


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """`--model-ema DECAY`: an exponential moving average of the weights and BatchNorm statistics (torch's
    AveragedModel), evaluated and checkpointed instead of the raw model."""
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    # AveragedModel's first update copies the model instead of averaging; counting the initial copy as the first
    # average makes every update a lerp from the initial weights (timm's ModelEmaV2 and our earlier EMA did so)
    ema.n_averaged.fill_(1)
    return ema.eval()


class Cohort:
    """K members packed into one network on `device`, with what knows the packed layout.

    `model` is the packed network (trained, checkpointed); `step_model` what a training step calls (the same
    module, compiled when asked: on CUDA, "reduce-overhead" captures the step in CUDA graphs, since at batch 16
    the GPU is launch-bound); `ema` the moving average of the weights (None when off); `eval_model` what is
    evaluated (the EMA when there is one)."""

    def __init__(self, models: list[nn.Module], device: torch.device | None = None, *, channels_last: bool = False,
                 ema_decay: float = 0.0, compile: bool = False):
        self.size = len(models)
        self.num_classes = [m for m in models[0].modules() if isinstance(m, nn.Linear)][-1].out_features
        self.channels_last = channels_last
        self.model = pack(models) if device is None else pack(models).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._stacked = stacked_names(self.model)
        cuda = next(self.model.parameters()).device.type == "cuda"
        self.step_model = torch.compile(self.model, mode="reduce-overhead" if cuda else None) if compile else self.model
        self.ema = make_ema(self.model, ema_decay) if ema_decay > 0 else None
        self._frozen: dict[int, dict] = {}  # member -> its buffers and EMA when it stopped

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    # ---------------------------------------------------------------- batches in and out
    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A member-major batch (K*B, 3, H, W), member k's images in rows k*B..(k+1)*B-1, as the packed model's
        input (B, K*3, H, W): member k's images in channels 3k..3k+2."""
        b, (h, w) = x.shape[0] // self.size, x.shape[-2:]
        x = x.view(self.size, b, 3, h, w).transpose(0, 1).reshape(b, self.size * 3, h, w)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """Member-major labels or soft targets (K*B, ...) in the layout of the model's output: (B, K, ...)."""
        return y.view(self.size, y.shape[0] // self.size, *y.shape[1:]).transpose(0, 1)

    # ---------------------------------------------------------------- one member's state
    def member(self, tensors: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        """Member k's part of packed tensors named as the model's state (its state_dict, parameters, gradients),
        under the standard model's names (contiguous copies)."""
        out = {}
        for name, t in tensors.items():
            view = member_view(name, t, k, self.size, self._stacked)
            out[name] = (t if view is None else view).detach().clone().contiguous()
        return out

    def member_state(self, k: int, ema: bool = False) -> dict[str, torch.Tensor]:
        """Member k's state_dict (of the EMA with `ema`) as an ordinary network's."""
        return self.member((self.ema.module if ema else self.model).state_dict(), k)

    def evaluated_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights as they are evaluated: the EMA's when there is one (best.safetensors)."""
        return self.member_state(k, ema=self.ema is not None)

    def member_parameters(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters under the standard model's names, as views into the packed ones: gradients flow
        through them, and writing into them (without grad) changes member k alone."""
        return {n: member_view(n, p, k, self.size, self._stacked) for n, p in self.model.named_parameters()}

    def load_member(self, k: int, state: dict[str, torch.Tensor], ema: bool = False) -> None:
        """Write an ordinary network's state_dict into member k's part (of the EMA with `ema`): resume, restore."""
        own = (self.ema.module if ema else self.model).state_dict()
        with torch.no_grad():
            for name, t in own.items():
                view = member_view(name, t, k, self.size, self._stacked)
                if view is None:
                    t.copy_(state[name])
                else:
                    view.copy_(state[name].reshape(view.shape))

    # ---------------------------------------------------------------- freezing
    def freeze(self, k: int) -> None:
        """Member k stopped: from now on `keep_frozen` puts its BatchNorm statistics and EMA back after every
        step (its weights stay as they are because its learning rate is zero: optim.PackedOptimizer.freeze)."""
        def snapshot(named) -> dict:
            return {n: member_view(n, t, k, self.size, self._stacked).clone() for n, t in named if t.dim() > 0}

        self._frozen[k] = {"buffers": snapshot(self.model.named_buffers()),
                           "ema": snapshot(self.ema.module.state_dict().items()) if self.ema is not None else {}}

    def training_members(self) -> list[int]:
        """The members not frozen (known on the host: no device sync)."""
        return [k for k in range(self.size) if k not in self._frozen]

    @torch.no_grad()
    def keep_frozen(self) -> None:
        for k, frozen in self._frozen.items():
            for n, t in self.model.named_buffers():
                if n in frozen["buffers"]:
                    member_view(n, t, k, self.size, self._stacked).copy_(frozen["buffers"][n])
            if self.ema is not None:
                for n, t in self.ema.module.state_dict().items():
                    if n in frozen["ema"]:
                        member_view(n, t, k, self.size, self._stacked).copy_(frozen["ema"][n])

    def update_ema(self) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)
