"""One parametrised CNN builder; the notebook's `basic` and `regularized` models are configurations of it.

    [ (Conv3x3 same + ReLU [+ BatchNorm]) x convs_per_block, MaxPool 2, [Dropout] ] x len(widths)
    Flatten, Dense(dense_width) + ReLU [+ BatchNorm] [+ Dropout], Dense(num_classes)

The network outputs logits; the notebook's softmax + categorical cross-entropy is the same function as
PyTorch's cross_entropy on logits. Flatten uses PyTorch's NCHW order (Keras flattens NHWC): a fixed
permutation of the dense layer's inputs, so parameter counts and what the model can learn are identical.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .config import Config


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for a whole sample with probability p (scaled at train time)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class Residual(nn.Module):
    """x + drop_path(branch(x)): used only when drop_path > 0, around a block's extra convolutions."""

    def __init__(self, branch: nn.Sequential, p: float):
        super().__init__()
        self.branch = branch
        self.drop_path = DropPath(p)

    def forward(self, x):
        return x + self.drop_path(self.branch(x))


def _conv_unit(c_in: int, c_out: int, batchnorm: bool, bn_kwargs: dict) -> list[tuple[str, nn.Module]]:
    layers = [("conv", nn.Conv2d(c_in, c_out, 3, padding=1)), ("relu", nn.ReLU(inplace=True))]
    if batchnorm:
        layers.append(("bn", nn.BatchNorm2d(c_out, **bn_kwargs)))
    return layers


def build_model(cfg: Config, num_classes: int = 10, in_channels: int = 3) -> nn.Sequential:
    bn_kwargs = dict(momentum=cfg.bn_momentum, eps=1e-3 if cfg.keras_init else 1e-5)
    blocks: list[tuple[str, nn.Module]] = []
    c_in = in_channels
    for b, width in enumerate(cfg.widths, start=1):
        layers: list[tuple[str, nn.Module]] = []
        for i in range(cfg.convs_per_block):
            unit = [(f"{name}{i + 1}", m) for name, m in _conv_unit(c_in, width, cfg.batchnorm, bn_kwargs)]
            c_in = width
            if i > 0 and cfg.drop_path > 0:
                layers.append((f"res{i + 1}", Residual(nn.Sequential(OrderedDict(unit)), cfg.drop_path)))
            else:
                layers.extend(unit)
        layers.append(("pool", nn.MaxPool2d(2)))
        if cfg.dropout > 0:
            layers.append(("dropout", (nn.Dropout2d if cfg.spatial_dropout else nn.Dropout)(cfg.dropout)))
        blocks.append((f"block{b}", nn.Sequential(OrderedDict(layers))))

    side = cfg.image_size // (2 ** len(cfg.widths))
    head: list[tuple[str, nn.Module]] = [
        ("flatten", nn.Flatten()),
        ("dense1", nn.Linear(c_in * side * side, cfg.dense_width)),
        ("relu", nn.ReLU(inplace=True)),
    ]
    if cfg.batchnorm:
        head.append(("bn", nn.BatchNorm1d(cfg.dense_width, **bn_kwargs)))
    if cfg.dense_dropout > 0:
        head.append(("dropout", nn.Dropout(cfg.dense_dropout)))
    head.append(("dense2", nn.Linear(cfg.dense_width, num_classes)))
    model = nn.Sequential(OrderedDict(blocks + [("head", nn.Sequential(OrderedDict(head)))]))
    if cfg.keras_init:
        keras_init_(model)
    return model


def keras_init_(model: nn.Module) -> None:
    """Keras defaults: Glorot-uniform kernels and zero biases (BatchNorm: gamma 1, beta 0, as PyTorch)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, non-trainable) as Keras counts them: BatchNorm running mean/var are non-trainable."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    non_trainable = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    statistics = ("running_mean", "running_var")
    non_trainable += sum(b.numel() for name, b in model.named_buffers() if name.endswith(statistics))
    return trainable, non_trainable


_KERAS_NAMES = {
    nn.Conv2d: "Conv2D",
    nn.BatchNorm2d: "BatchNormalization",
    nn.BatchNorm1d: "BatchNormalization",
    nn.MaxPool2d: "MaxPooling2D",
    nn.Dropout: "Dropout",
    nn.Dropout2d: "SpatialDropout2D",
    nn.Flatten: "Flatten",
    nn.Linear: "Dense",
}


def layer_table(model: nn.Module, image_size: int, in_channels: int = 3) -> list[dict]:
    """One row per layer: name, Keras-style type, output shape (None, H, W, C), parameter count.

    ReLUs are folded into the layer before them (Keras writes them as activation="relu").
    """
    rows: list[dict] = []
    hooks = []
    for name, module in model.named_modules():
        kind = _KERAS_NAMES.get(type(module))
        if kind is None:
            continue

        def hook(mod, inputs, output, name=name, kind=kind):
            shape = tuple(output.shape[1:])
            if len(shape) == 3:  # report channels-last, as Keras does
                shape = (shape[1], shape[2], shape[0])
            params = sum(p.numel() for p in mod.parameters())
            buffers = sum(b.numel() for n, b in mod.named_buffers() if n.endswith(("running_mean", "running_var")))
            rows.append(dict(name=name, type=kind, output_shape=(None, *shape), params=params + buffers,
                             relu=kind in ("Conv2D", "Dense") and name.rsplit(".", 1)[-1] != "dense2"))

        hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return rows


def summary_text(model: nn.Module, image_size: int, title: str = "") -> str:
    rows = layer_table(model, image_size)
    trainable, non_trainable = count_params(model)
    header = ("Layer (type)", "Output Shape", "Param #")
    lines = [f'Model: "{title}"' if title else "Model"]
    table = [header] + [
        (f"{r['name']} ({r['type']})", str(r["output_shape"]), f"{r['params']:,}") for r in rows
    ]
    w0 = max(len(t[0]) for t in table) + 2
    w1 = max(len(t[1]) for t in table) + 2
    rule = "-" * (w0 + w1 + 12)
    lines.append(rule)
    for i, (a, b, c) in enumerate(table):
        lines.append(f"{a:<{w0}}{b:<{w1}}{c:>10}")
        if i == 0:
            lines.append("=" * len(rule))
    lines.append("=" * len(rule))
    lines.append(f"Total params: {trainable + non_trainable:,}")
    lines.append(f"Trainable params: {trainable:,}")
    lines.append(f"Non-trainable params: {non_trainable:,}")
    return "\n".join(lines)


def mermaid(rows: list[dict], image_size: int, in_channels: int = 3) -> str:
    """A Mermaid flowchart of a layer table (`layer_table`'s rows, or those a run recorded at training time);
    the notebook draws the regularized model by hand."""
    lines = ["flowchart TD", '    subgraph "Input"',
             f"        input[Input Image {image_size}×{image_size}×{in_channels}]", "    end"]
    groups: OrderedDict[str, list[dict]] = OrderedDict()
    for r in rows:
        groups.setdefault(r["name"].split(".")[0], []).append(r)
    chain = ["input"]
    for group, members in groups.items():
        title = "Fully Connected" if group == "head" else group.replace("block", "Block ")
        lines.append(f'    subgraph "{title}"')
        for r in members:
            node = r["name"].replace(".", "_")
            lines.append(f"        {node}[{layer_label(r)}]")
            chain.append(node)
        lines.append("    end")
    lines.append("    " + " --> ".join(chain))
    return "\n".join(lines)


def layer_label(r: dict) -> str:
    """A layer row in a few words, as the diagrams write it: 'Conv2D 3×3, 32, ReLU', 'Dense 10', 'MaxPool 2×2'."""
    shape = r["output_shape"]
    if r["type"] == "Conv2D":
        return f"Conv2D 3×3, {shape[-1]}, ReLU"
    if r["type"] == "Dense":
        return f"Dense {shape[-1]}" + (", ReLU" if r.get("relu") else "")
    if r["type"] == "MaxPooling2D":
        return "MaxPool 2×2"
    return str(r["type"])
