"""Checkpoints that execute nothing when loaded.

- best.safetensors: weights only (safetensors: a header and raw tensors, no code).
- last.ckpt: everything needed to resume, saved with torch.save and loaded with
  torch.load(weights_only=True), which refuses any pickle that would construct arbitrary objects.
Both are written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__, atomic
from .errors import UserError

CKPT_FORMAT = 2  # 2 (reglab 0.2): a cohort member's own slice; the optimizer state is optim.PackedOptimizer's
# top-level keys of train.Trainer.state(); a checkpoint without them cannot be resumed
RESUME_KEYS = ("config", "epoch", "step", "lr", "model", "optimizer", "early", "plateau", "rows",
               "train_seconds", "wall_seconds", "images_seen", "rng")


def save_weights(path: Path, state_dict: dict) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    atomic.write_bytes(path, st_save(tensors, metadata={"reglab_version": __version__}))


def load_weights(path: Path) -> dict:
    try:
        return st_load(Path(path).read_bytes())
    except FileNotFoundError:
        raise UserError(f"weights file {path} not found") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"weights file {path} is corrupt ({e}); retrain or restore it from a backup") from None


def save_checkpoint(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save({"format": CKPT_FORMAT, "reglab_version": __version__, **state}, buf)
    atomic.write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"no checkpoint at {path}; there is nothing to resume (train without --resume)")
    if not zipfile.is_zipfile(path):
        # torch.save always writes a zip archive; anything else (truncated, random bytes, a bare pickle) is
        # refused before any unpickler sees it
        raise UserError(
            f"checkpoint {path} is corrupt, truncated or not a reglab checkpoint (not a torch zip archive); "
            "delete it and train again"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(
            f"refusing to load {path}: it holds more than tensors and plain containers, so it is damaged or "
            f"crafted to run code when unpickled ({_unpickling_reason(e)}); delete it and train again"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise UserError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}); delete it and train again") from None
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        found = state.get("reglab_version", "unknown") if isinstance(state, dict) else "unknown"
        raise UserError(
            f"checkpoint {path} was written by an incompatible reglab version ({found}, format "
            f"{state.get('format') if isinstance(state, dict) else '?'}; this is {__version__}, format {CKPT_FORMAT}); "
            "it cannot be resumed: train the run again (train --overwrite, or delete its folder in a study)"
        )
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing or not isinstance(state["config"], dict) or not isinstance(state["model"], dict):
        raise UserError(
            f"checkpoint {path} is incomplete (missing {', '.join(missing) or 'a valid config or model'}); "
            "delete it and train again"
        )
    return state


def _unpickling_reason(e: Exception) -> str:
    """The informative line of torch's long weights_only message (e.g. 'unsupported GLOBAL posix.system')."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for line in lines:
        if "unsupported" in line.lower():
            return line.removeprefix("WeightsUnpickler error: ").rstrip(".")
    return lines[-1] if lines else type(e).__name__


def check_compatible(path: Path, model: torch.nn.Module, saved: dict) -> None:
    """Refuse weights of another architecture with one line instead of a shape-mismatch traceback."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in saved.items()}
    if own != theirs:
        missing = sorted(set(own) - set(theirs))[:3]
        differ = [k for k in own if k in theirs and own[k] != theirs[k]][:3]
        detail = f"missing {missing}" if missing else f"shapes differ at {differ}" if differ else "extra tensors"
        raise UserError(f"checkpoint {path} belongs to another model ({detail}); check --model and --config, or use --overwrite")
