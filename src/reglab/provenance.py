"""Where a result came from: the one place that describes the machine, the software and the command, for
every run's summary.json and for bench.json alike."""

from __future__ import annotations

import datetime
import functools
import os
import platform
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from . import __version__


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


_invoked: list[str] | None = None


def invoked_as(argv: list[str]) -> None:
    """Record the reglab command being run (cli.main calls this; the API leaves sys.argv's program)."""
    global _invoked
    _invoked = ["reglab", *argv]


def command_line() -> str:
    """The command as typed (`reglab train ...`), or the Python program that called the API."""
    if _invoked is not None:
        return shlex.join(_invoked)
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if prog in ("reglab", "__main__.py", "cli.py"):
        prog = "reglab"
    return shlex.join([prog, *sys.argv[1:]])


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def cpu_native_bf16() -> bool:
    """True on CPUs that run bf16 matrix maths in hardware (AMX or AVX-512 BF16). Elsewhere bf16 autocast is
    emulated: `reglab bench` measured it 7-11x slower than fp32 on a Zen 3 EPYC (BENCHMARKS.md), while on an
    Intel CPU with AMX it trained about 2x faster."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    try:
        if any(check() for check in checks if check is not None):
            return True
    except RuntimeError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
        return "amx_bf16" in flags or "avx512_bf16" in flags
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def git_state() -> dict | None:
    """The commit of reglab's own source, and whether it had uncommitted changes, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=here, capture_output=True, text=True,
                             timeout=5)
        if top.returncode != 0 or not (Path(top.stdout.strip()) / "src" / "reglab").is_dir():
            return None  # not a checkout of reglab (e.g. installed from a wheel inside someone else's repo)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"CPU ({cpu_model()}, {torch.get_num_threads()} threads)"
    return device.type


def software() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "reglab": __version__}


def environment(device: torch.device, precision: str) -> dict:
    """Everything a reader needs to trust or repeat a measurement on this machine."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_native_bf16": cpu_native_bf16(),
        "gpu": gpu,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": device_name(device),
        "precision": precision,
        "software": software(),
        "git": git_state(),
    }
