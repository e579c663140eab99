"""Checkpoints that execute nothing when loaded.

- best.safetensors: weights only (safetensors: a header and raw tensors, no code).
- last.ckpt: everything needed to resume, saved with torch.save and loaded with
  torch.load(weights_only=True), which refuses any pickle that would construct arbitrary objects.
Both are written atomically (temporary file, fsync, rename).

What a member's last.ckpt holds is built (`member_state`) and read back (`restore_member`, `restore_shared`)
here and nowhere else: its config, progress, callbacks and history, its own slice of the packed weights, EMA and
optimizer state (a cohort member's folder is an ordinary run folder), the schedule, and every generator (a plugin
transform's own generator of the member included), so a resumed run continues exactly.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__, atomic
from .callbacks import EarlyStopping, ReduceLROnPlateau
from .config import Config
from .errors import UserError
from .models import build_model
from .readfile import damaged, read_own_bytes, regular_file_error
from .rundir import METRIC_COLUMNS

CKPT_FORMAT = 2  # 2 (reglab 0.2): a cohort member's own slice; the optimizer state is optim.PackedOptimizer's
# top-level keys of member_state(); a checkpoint without them cannot be resumed
RESUME_KEYS = ("config", "epoch", "step", "lr", "model", "optimizer", "early", "plateau", "rows",
               "train_seconds", "wall_seconds", "images_seen", "rng")


# what a resume reads from them before restoring anything
RESUME_TYPES = {"config": dict, "epoch": int, "step": int, "lr": (int, float), "model": dict, "optimizer": dict,
                "early": dict, "plateau": dict, "rows": list, "rng": dict}


def save_weights(path: Path, state_dict: dict) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    atomic.write_bytes(path, st_save(tensors, metadata={"reglab_version": __version__}))


# the bound of a checkpoint read back: far above the largest network reglab builds (with its optimizer state)
CHECKPOINT_BYTES = 8 << 30
WEIGHTS_TODO = "retrain or restore it from a backup"
CHECKPOINT_TODO = "delete it and train again"


def load_weights(path: Path) -> dict:
    try:
        data = read_own_bytes(path, CHECKPOINT_BYTES, WEIGHTS_TODO)
    except FileNotFoundError:
        raise UserError(f"weights file {path} not found") from None
    try:
        return st_load(data)
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"weights file {path} is corrupt ({e}); {WEIGHTS_TODO}") from None


def save_checkpoint(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save({"format": CKPT_FORMAT, "reglab_version": __version__, **state}, buf)
    atomic.write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    try:
        data = read_own_bytes(path, CHECKPOINT_BYTES, CHECKPOINT_TODO)
    except FileNotFoundError:
        raise UserError(f"no checkpoint at {path}; there is nothing to resume (train without --resume)") from None
    if not zipfile.is_zipfile(io.BytesIO(data)):
        # torch.save always writes a zip archive; anything else (truncated, random bytes, a bare pickle) is
        # refused before any unpickler sees it
        raise UserError(
            f"checkpoint {path} is corrupt, truncated or not a reglab checkpoint (not a torch zip archive); "
            "delete it and train again"
        )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(
            f"refusing to load {path}: it holds more than tensors and plain containers, so it is damaged or "
            f"crafted to run code when unpickled ({_unpickling_reason(e)}); delete it and train again"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, MemoryError) as e:
        raise UserError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}); delete it and train "
                        "again") from None
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        found = state.get("reglab_version", "unknown") if isinstance(state, dict) else "unknown"
        raise UserError(
            f"checkpoint {path} was written by an incompatible reglab version ({found}, format "
            f"{state.get('format') if isinstance(state, dict) else '?'}; this is {__version__}, format {CKPT_FORMAT}); "
            "it cannot be resumed: train the run again (train --overwrite, or delete its folder in a study)"
        )
    missing = [k for k in RESUME_KEYS if k not in state]
    wrong = [k for k, kind in RESUME_TYPES.items() if k in state and not isinstance(state[k], kind)]
    if wrong or any(isinstance(state.get(k), bool) or state.get(k, 0) < 0 for k in ("epoch", "step")):
        raise damaged(path, f"{', '.join(wrong) or 'epoch or step'} of the wrong type or out of range",
                      CHECKPOINT_TODO)
    if "rows" in state and state.get("epoch") != len(state["rows"]):  # a metrics row per finished epoch
        raise damaged(path, f"epoch {state.get('epoch')} with {len(state['rows'])} rows of metrics", CHECKPOINT_TODO)
    if missing or not isinstance(state["config"], dict) or not isinstance(state["model"], dict):
        raise UserError(
            f"checkpoint {path} is incomplete (missing {', '.join(missing) or 'a valid config or model'}); "
            "delete it and train again"
        )
    return state


def checkpoint_epoch(path: Path) -> int | None:
    """The last finished epoch a last.ckpt holds, read without loading its tensors (mmap); None when it is not a
    regular file or unreadable (a resume then names the problem through load_checkpoint)."""
    if regular_file_error(path) is not None:
        return None  # mmap of a FIFO would wait for a writer
    try:
        epoch = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"]
        return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, EOFError, pickle.UnpicklingError,
            zipfile.BadZipFile):
        return None


def _unpickling_reason(e: Exception) -> str:
    """The informative line of torch's long weights_only message (e.g. 'unsupported GLOBAL posix.system')."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for line in lines:
        if "unsupported" in line.lower():
            return line.removeprefix("WeightsUnpickler error: ").rstrip(".")
    return lines[-1] if lines else type(e).__name__


def best_model(path: Path, cfg: Config, num_classes: int, device: torch.device, current: dict,
               save: bool) -> torch.nn.Module:
    """A run as the ordinary network it ends with: its best.safetensors at `path` (checked against the
    architecture) when it restores its best and has one; otherwise its `current` weights, then saved as its best
    unless `save` is False (a failed run passes no weights off as best)."""
    model = build_model(cfg, num_classes).to(device)
    if cfg.restore_best and Path(path).exists():
        weights = load_weights(path)
        check_compatible(path, model, weights)
    else:
        weights = current
        if save:
            save_weights(path, weights)
    model.load_state_dict(weights)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def check_compatible(path: Path, model: torch.nn.Module, saved: dict) -> None:
    """Refuse weights of another architecture with one line instead of a shape-mismatch traceback."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in saved.items()}
    if own != theirs:
        missing = sorted(set(own) - set(theirs))[:3]
        differ = [k for k in own if k in theirs and own[k] != theirs[k]][:3]
        detail = f"missing {missing}" if missing else f"shapes differ at {differ}" if differ else "extra tensors"
        raise UserError(f"checkpoint {path} belongs to another model ({detail}); check --model and --config, or use "
                        "--overwrite")


# ------------------------------------------------------------------------------------ what last.ckpt holds


def member_state(m, k: int, cohort, optimizer, scheduler, gens, seeds: list[int], data_identity: dict,
                 wall_seconds: float) -> dict:
    """Member k's last.ckpt. `m`: its bookkeeping (trainer.Member); `cohort`, `optimizer`, `scheduler` and
    `gens` are what step.train_step runs with; `seeds`: the cohort's."""
    device = next(cohort.model.parameters()).device
    s = {
        "config": m.cfg.to_dict(), "epoch": m.epoch, "step": m.step, "lr": m.lr,
        "model": cohort.member_state(k), "optimizer": optimizer.member_state(k),
        "early": m.early.state(), "plateau": m.plateau.state(), "rows": m.rows,
        "train_seconds": m.train_seconds, "wall_seconds": wall_seconds, "images_seen": m.images_seen,
        "data_identity": data_identity, "extensions": m.extensions, "started": m.started, "done": m.done,
        "failure": m.failure, "cohort": {"seeds": list(seeds), "index": k},
        "rng": {"torch": torch.get_rng_state(), "order": m.order_gen.get_state(), "aug": gens.aug.get_state(),
                "mix": _np_state_to_tensors(gens.mix[k]),
                "plugins": {name: g.get_state() for name, g in gens.plugins[k].items()}},
    }
    if device.type == "cuda":
        s["rng"]["cuda"] = torch.cuda.get_rng_state(device)
    if cohort.ema is not None:
        s["ema"] = cohort.member_state(k, ema=True)
    if scheduler is not None:
        s["scheduler"] = scheduler.state_dict()
    return s


def restore_member(m, k: int, s: dict, path: Path, cohort, optimizer, gens) -> None:
    """Member k continues from its checkpoint `s` (read from `path`): weights, EMA, optimizer state, callbacks,
    history and its own generators. Refuses another architecture's weights (one line)."""
    with torch.device("meta"):  # shapes only: building a real model would draw from the global RNG
        check_compatible(path, build_model(m.cfg, cohort.num_classes), s["model"])
    cohort.load_member(k, s["model"])
    optimizer.load_member_state(k, s["optimizer"])
    if cohort.ema is not None and "ema" in s:
        cohort.load_member(k, s["ema"], ema=True)
    m.epoch, m.step, m.lr = s["epoch"], s["step"], s["lr"]
    m.early = EarlyStopping(**s["early"])
    m.plateau = ReduceLROnPlateau(**s["plateau"])
    m.rows = [{c: r.get(c) for c in METRIC_COLUMNS} for r in s["rows"]]
    m.extensions = list(s.get("extensions", []))
    m.started = s.get("started", m.started)
    m.train_seconds, m.wall_before, m.images_seen = s["train_seconds"], s["wall_seconds"], s["images_seen"]
    m.order_gen.set_state(s["rng"]["order"])
    gens.mix[k].bit_generator.state = _np_state_from_tensors(s["rng"]["mix"])
    for name, state in s["rng"].get("plugins", {}).items():  # (the same config: the same plugins)
        gens.plugins[k][name].set_state(state)
    m.failure = s.get("failure")


def restore_shared(s: dict, optimizer, scheduler, gens, device: torch.device) -> None:
    """What the members of a cohort share, from one member's checkpoint `s`: the global and augmentation
    generators and the schedule."""
    torch.set_rng_state(s["rng"]["torch"])
    gens.aug.set_state(s["rng"]["aug"])
    if "cuda" in s["rng"] and device.type == "cuda":
        torch.cuda.set_rng_state(s["rng"]["cuda"], device)
    if scheduler is not None and "scheduler" in s:
        scheduler.load_state_dict(s["scheduler"])  # the optimizer's lr follows at its next step
        for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr


def _np_state_to_tensors(rng: np.random.Generator) -> dict:
    """numpy's PCG64 state as plain ints/strings (torch.load(weights_only=True) accepts those)."""
    st = rng.bit_generator.state
    return {"bit_generator": st["bit_generator"], "state": str(st["state"]["state"]), "inc": str(st["state"]["inc"]),
            "has_uint32": st["has_uint32"], "uinteger": st["uinteger"]}


def _np_state_from_tensors(d: dict) -> dict:
    return {"bit_generator": d["bit_generator"], "state": {"state": int(d["state"]), "inc": int(d["inc"])},
            "has_uint32": d["has_uint32"], "uinteger": d["uinteger"]}
