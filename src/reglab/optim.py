"""Adam, AdamW and SGD for a packed cohort: one step updates K members, each at its own learning rate, and a
member that has stopped (early stopping) is frozen: its weights and optimizer state no longer change.

torch.optim keeps one learning rate per parameter group and a packed tensor holds all K members, so the
per-member learning rate (each member's own ReduceLROnPlateau) and the freezing need this step. The
arithmetic is torch's (Adam: bias-corrected moments, eps added to sqrt(v_hat); AdamW: decoupled decay
p *= 1 - lr*wd first; SGD: Nesterov momentum); tests/test_cohort.py checks it against torch.optim member by
member. Each member counts its own steps, so its bias correction follows its own updates. The per-member
vectors live on the device: a step never waits for the host.
"""

from __future__ import annotations

import torch

from .config import Config
from .packed import member_view, stacked_names


def optimizer_kind(cfg: Config) -> str:
    if cfg.optimizer == "sgd":
        return "sgd"
    return "adamw" if cfg.optimizer == "adamw" or cfg.weight_decay > 0 else "adam"  # decoupled decay: AdamW


class PackedOptimizer(torch.optim.Optimizer):
    """A torch Optimizer (so torch.optim.lr_scheduler drives its one param group's lr, shared by all members);
    member k's learning rate is that lr times `scale[k]` (its own plateau reductions), zero once frozen."""

    def __init__(self, packed: torch.nn.Module, size: int, kind: str, lr: float, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.9, betas=(0.9, 0.999)):
        named = [(n, p) for n, p in packed.named_parameters() if p.requires_grad]
        super().__init__([p for _, p in named], {"lr": float(lr)})
        self.kind, self.size, self.eps, self.weight_decay, self.momentum, self.betas = \
            kind, size, eps, weight_decay, momentum, betas
        self.names, self.params = [n for n, _ in named], [p for _, p in named]
        self.stacked = stacked_names(packed)
        device, dtype = self.params[0].device, self.params[0].dtype
        self.scale = torch.ones(size, device=device, dtype=dtype)
        self.active = torch.ones(size, device=device, dtype=dtype)
        self.steps = torch.zeros(size, device=device, dtype=dtype)
        # member index of every row of every parameter: a (K,) vector becomes a broadcastable per-row factor
        self._rows = []
        for name, p in named:
            if name in self.stacked:
                self._rows.append(None)
            else:
                self._rows.append(torch.arange(size, device=device).repeat_interleave(p.shape[0] // size))
        self.moments = [self._zeros(p) for p in self.params]

    @classmethod
    def for_config(cls, packed: torch.nn.Module, size: int, cfg: Config) -> "PackedOptimizer":
        """The optimizer a recipe asks for (Adam, AdamW when it decays weights, or SGD), at its lr."""
        return cls(packed, size, optimizer_kind(cfg), cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay,
                   momentum=cfg.momentum)

    def _zeros(self, p):
        if self.kind == "sgd":
            return {"momentum_buffer": torch.zeros_like(p)}
        return {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}

    def _per_param(self, vec: torch.Tensor, i: int) -> torch.Tensor:
        rows, dims = self._rows[i], self.params[i].dim()
        return (vec if rows is None else vec[rows]).view(-1, *([1] * (dims - 1)))

    def set_lr(self, k: int, lr: float) -> None:
        """Member k's own learning rate (ReduceLROnPlateau), relative to the group's."""
        self.scale[k] = lr / self.param_groups[0]["lr"]

    def freeze(self, k: int) -> None:
        self.active[k] = 0.0

    @torch.no_grad()
    def step(self, closure=None):
        self.steps += self.active
        lr = self.scale * self.active * self.param_groups[0]["lr"]
        if self.kind == "sgd":
            mu = self.momentum
            keep = 1.0 - (1.0 - mu) * self.active  # an active member's buffer: mu * b + g; a frozen one's: b
            for i, (p, st) in enumerate(zip(self.params, self.moments)):
                if p.grad is None:
                    continue
                g = p.grad * self._per_param(self.active, i)
                buf = st["momentum_buffer"].mul_(self._per_param(keep, i)).add_(g)
                p.sub_(self._per_param(lr, i) * (g + mu * buf))
            return
        b1, b2 = self.betas
        steps = self.steps.clamp(min=1.0)
        step_size = lr / (1 - b1 ** steps)
        bc2_sqrt = torch.sqrt(1 - b2 ** steps)
        decay = 1 - lr * self.weight_decay if self.kind == "adamw" else None
        for i, (p, st) in enumerate(zip(self.params, self.moments)):
            if p.grad is None:
                continue
            a = self._per_param(self.active, i)
            if decay is not None:
                p.mul_(self._per_param(decay, i))
            st["exp_avg"].lerp_(p.grad, a * (1 - b1))
            st["exp_avg_sq"].lerp_(p.grad * p.grad, a * (1 - b2))
            denom = st["exp_avg_sq"].sqrt().div_(self._per_param(bc2_sqrt, i)).add_(self.eps)
            p.sub_(self._per_param(step_size, i) * st["exp_avg"] / denom)

    # ------------------------------------------------------------------ one member's state, for its checkpoint
    def member_state(self, k: int) -> dict:
        return {"kind": self.kind, "scale": float(self.scale[k]), "steps": int(self.steps[k]),
                "active": bool(self.active[k]),
                "state": {name: {key: member_view(name, t, k, self.size, self.stacked).detach().clone().contiguous()
                                 for key, t in st.items()} for name, st in zip(self.names, self.moments)}}

    def load_member_state(self, k: int, saved: dict) -> None:
        if saved.get("kind") != self.kind:
            raise ValueError(f"optimizer state of {saved.get('kind')!r}, not {self.kind!r}")
        # (whether it is still training is the trainer's decision: an extended run trains again)
        self.scale[k], self.steps[k] = saved["scale"], saved["steps"]
        with torch.no_grad():
            for name, st in zip(self.names, self.moments):
                for key, t in st.items():
                    view = member_view(name, t, k, self.size, self.stacked)
                    view.copy_(saved["state"][name][key].reshape(view.shape))
