"""Which device and precision a run uses, and whether it fits there: checked before anything is written."""

from __future__ import annotations

import contextlib
import os

import torch

from .config import Config
from .errors import UserError
from .provenance import cpu_native_bf16


def pick_device(name: str) -> torch.device:
    """`auto`: cuda, then mps, then cpu. Otherwise what torch accepts (cpu, cuda, cuda:N, mps), if present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} requested but no CUDA GPU is available; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name} requested but this machine has {torch.cuda.device_count()} CUDA "
                            f"GPU(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if device.type == "mps" and not _mps_available():
        raise UserError(f"--device {name} requested but MPS (Apple GPU) is not available; use --device cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name} is not supported; choose auto, cpu, cuda, cuda:N or mps")
    return device


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def pick_precision(name: str, device: torch.device) -> str:
    """`auto`: bf16 where the hardware runs it natively (CUDA GPUs with bf16, CPUs with AMX or AVX-512 BF16),
    fp32 elsewhere (on a CPU without them bf16 is emulated and several times slower)."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_native_bf16() else "fp32"
    return "fp32"


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------------------------------------- memory


def _available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def minimum_bytes(cfg: Config, num_images: int, num_classes: int, members: int = 1) -> dict[str, int]:
    """A lower bound of the memory a run (or a cohort of `members` runs) needs, so a refusal is never a false
    alarm: the decoded images (shared), the weights with their gradients and Adam's two moments, and one copy
    of every convolution's output for a training batch."""
    from .models import build_model

    with torch.device("meta"):
        params = sum(p.numel() for p in build_model(cfg, num_classes).parameters())
    activations, side = 0, cfg.image_size
    for width in cfg.widths:
        activations += cfg.convs_per_block * width * side * side
        side //= 2
    return {"images": num_images * cfg.image_size ** 2 * 3, "weights": params * 4 * 4 * members,
            "activations": activations * 4 * cfg.batch_size * members}


def check_fits(cfg: Config, device: torch.device, num_images: int, num_classes: int, members: int = 1) -> None:
    available = _available_bytes(device)
    if available is None:
        return
    need = minimum_bytes(cfg, num_images, num_classes, members)
    if sum(need.values()) > available:
        gib = lambda b: f"{b / 2**30:.1f} GiB"  # noqa: E731
        parts = ", ".join(f"{k} {gib(v)}" for k, v in need.items())
        cohort = f" for a cohort of {members}" if members > 1 else ""
        raise UserError(f"image size {cfg.image_size} at batch size {cfg.batch_size}{cohort} needs at least "
                        f"{gib(sum(need.values()))} ({parts}) but {device.type} has {gib(available)} available; "
                        f"choose a smaller --image-size or --batch-size" + (" or --pack" if members > 1 else ""))
