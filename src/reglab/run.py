"""`train()`: one run, or a cohort of runs trained as one packed network, into ordinary run folders.

Check first, touch last: every folder, the resume request, the device, the data and its identity, memory and
the model are checked before any folder is locked or written. A typo never costs a finished run. The loop
itself is trainer.py.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import torch

from . import atomic, lock, rundir
from .checkpoint import load_checkpoint
from .config import NON_RESULT_FIELDS, Config, from_dict
from .data import Data, DataFiles
from .device import pick_device
from .errors import UserError
from .prepare import prepare_data
from .trainer import Interrupted, Trainer, TrainJob  # noqa: F401  (Interrupted: part of this module's interface)


# ------------------------------------------------------------------------------------ check, then touch


def _check_same_run(out: Path, cfg: Config) -> None:
    """A last.ckpt copied in from another run must not silently continue as that run's model."""
    written = rundir.read_config(out, "delete it to resume from last.ckpt alone, or train again with --overwrite")
    if written is None:
        return  # no config.yaml yet (killed before writing it): the checkpoint is all we have
    differ = cfg.differences(written, ignore={"epochs"})
    if differ:
        k = differ[0]
        raise UserError(
            f"checkpoint {out / 'last.ckpt'} belongs to another model or run ({k}: {cfg.to_dict()[k]!r} in the "
            f"checkpoint, {written[k]!r} in config.yaml); restore the run's own last.ckpt or use --overwrite"
        )


def _check_new(out: Path, kind: str, overwrite: bool) -> None:
    """A new run may go into an absent or empty folder, or over a reglab run folder with --overwrite. A folder
    whose run never reached its first checkpoint holds nothing to lose: it is started again."""
    if kind == "file":
        raise UserError(f"--out {out} exists and is not a directory; choose another path")
    atomic.check_can_create(out, "run folder")
    if kind in ("study", "foreign"):
        what = "a study folder" if kind == "study" else f"files reglab did not write ({rundir.contents(out)})"
        raise UserError(f"--out {out} is not empty and is not a run folder (it holds {what}); "
                        "choose an empty or new folder")
    if kind != "run" or overwrite:
        return
    state = rundir.status(out)
    if state == "finished":
        raise UserError(f"run folder {out} already holds a finished run; pass --overwrite to replace it or choose "
                        "another --out")
    if (out / "last.ckpt").exists():
        raise UserError(f"run folder {out} holds an unfinished run; pass --resume to continue it or --overwrite to "
                        "start over")
    if state == "failed":
        raise UserError(f"run folder {out} holds a failed run; pass --overwrite to start over or choose another --out")


def _resume_plan(out: Path, kind: str, changes: dict) -> tuple[Config, dict | None, list[dict]]:
    """(config, checkpoint or None, extensions) for --resume; refuses changes that would alter the run."""
    if kind in ("absent", "empty"):
        raise UserError(f"no run at {out}; there is nothing to resume (train without --resume)")
    if kind != "run":
        raise UserError(f"{out} is not a run folder; there is nothing to resume (train without --resume)")
    finished = rundir.is_finished(out)
    saved = load_checkpoint(out / "last.ckpt") if (out / "last.ckpt").exists() else None
    if saved is not None:
        try:
            cfg = from_dict(saved["config"])  # a resumed run continues with exactly its own config
        except UserError as e:
            raise UserError(f"checkpoint {out / 'last.ckpt'} holds an incompatible config ({e})") from None
        _check_same_run(out, cfg)
    else:
        todo = "train it again with --overwrite"
        written = rundir.read_config(out, todo)
        if written is None:
            raise UserError(f"no checkpoint and no config.yaml in {out}; there is nothing to resume ({todo})")
        try:
            cfg = from_dict(written)
        except UserError as e:
            raise UserError(f"{out / 'config.yaml'} is damaged ({e}); {todo}") from None
    current = cfg.to_dict()
    refused = cfg.differences(changes, ignore={"epochs"})
    if refused:
        shown = ", ".join(f"{k} ({current[k]!r} in the run, {changes[k]!r} asked)" for k in refused[:3])
        raise UserError(f"--resume continues a run exactly as it was configured; these would change it: {shown}. "
                        "Drop them, or start a new run with --out")
    new_epochs = changes.get("epochs", cfg.epochs)
    if new_epochs < cfg.epochs:
        raise UserError(f"--epochs {new_epochs} is fewer than the run's {cfg.epochs}; --resume can only extend a run")
    extensions = []
    if new_epochs > cfg.epochs:
        if cfg.schedule != "plateau":
            raise UserError(f"this run's {cfg.schedule} schedule is laid out over its {cfg.epochs} epochs; extending "
                            "it would change its learning rates: train a new run with --epochs "
                            f"{new_epochs} instead")
        if finished and saved is None:
            raise UserError(f"run {out} finished and its last.ckpt was removed to save space; a finished run can be "
                            f"extended only when it was trained with --keep-last (train it again with --keep-last, "
                            f"or start a new run with --epochs {new_epochs})")
        if saved is not None and saved["early"].get("stopped"):
            raise UserError(f"run {out} stopped early at epoch {saved['epoch']} (no improvement for "
                            f"{cfg.early_stopping_patience} epochs); more epochs would not change it")
        extensions.append({"from": cfg.epochs, "to": new_epochs})
    elif finished:
        return cfg, None, []  # nothing to do: train() reports the finished run
    cfg = cfg.replace(**{k: v for k, v in changes.items() if k in NON_RESULT_FIELDS | {"epochs"}})
    return cfg, saved, extensions


def train(cfg: Config | None, out: str | Path, data: Data | DataFiles | None = None, resume: bool = False,
          overwrite: bool = False, changes: dict | None = None, variant: str | None = None, quiet: bool = False,
          verbose: bool = False) -> rundir.Summary:
    """Train one run into `out` and return its summary (also written to out/summary.json).

    resume: continue the run in `out` (its own config; `changes` may only raise epochs or change how fast it
    runs). overwrite: replace the run in `out`, once the new one has its data and model. `data`: decoded data
    (or scanned files) to share between runs of a study.
    """
    return train_cohort([cfg], [out], data, [resume], overwrite, changes, [variant], quiet, verbose)[0]


def _recorded_variant(out: Path) -> str | None:
    """The variant a run folder recorded (train(variant=...)): a resumed run stays what it was. None when it has
    no readable summary (its checkpoint still resumes it)."""
    try:
        return rundir.read_summary(out).variant
    except UserError:
        return None


def train_cohort(cfgs: list[Config | None], outs: list[str | Path], data: Data | DataFiles | None = None,
                 resume: list[bool] | None = None, overwrite: bool = False, changes: dict | None = None,
                 variants: list[str | None] | None = None, quiet: bool = False,
                 verbose: bool = False) -> list[rundir.Summary]:
    """Train several seeds of one recipe as one packed network (a cohort), each into its own run folder.
    Returns the summaries in the order given; a finished run that is asked to resume is returned as it is."""
    outs = [Path(o) for o in outs]
    resume = resume or [False] * len(outs)
    variants = list(variants or [None] * len(outs))
    summaries: list[rundir.Summary | None] = [None] * len(outs)
    todo: dict[int, TrainJob] = {}  # position -> its job
    for i, (cfg, out) in enumerate(zip(cfgs, outs)):
        kind = rundir.classify(out)
        if kind not in ("absent", "file"):
            lock.check_free(out, "run folder")
        saved, extensions = None, []
        if resume[i]:
            cfg, saved, extensions = _resume_plan(out, kind, changes or {})
            variants[i] = variants[i] or _recorded_variant(out)
            if rundir.is_finished(out) and not extensions:
                if not quiet:
                    print(f"{out} is already finished; nothing to resume.", flush=True)
                summaries[i] = rundir.read_summary(out)
                continue
        else:
            _check_new(out, kind, overwrite)
        todo[i] = TrainJob(cfg, out, variants[i] or cfg.model, saved, extensions)
    if not todo:
        return summaries
    jobs = list(todo.values())
    device = pick_device(jobs[0].cfg.device)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    data = prepare_data(jobs[0].cfg, device, data, members=len(jobs), quiet=quiet,
                        trained_on={j.out: j.checkpoint["data_identity"] for j in jobs
                                    if j.checkpoint and "data_identity" in j.checkpoint})
    trainer = Trainer(jobs, data, device, quiet=quiet, verbose=verbose)  # also checks every checkpoint
    # Everything is checked: now take the folders and write.
    with contextlib.ExitStack() as stack:
        for job in jobs:
            stack.enter_context(lock.hold(job.out, "run folder"))
        for job in jobs:
            _make_ready(job)
            if job.checkpoint is not None and not quiet:
                print(f"Resuming {job.out} after epoch {job.checkpoint['epoch']}"
                      + (f", extended to {job.cfg.epochs} epochs." if job.extensions else "."), flush=True)
        for i, summary in zip(todo, trainer.fit()):
            summaries[i] = summary
    return summaries


def _make_ready(job: TrainJob) -> None:
    """A locked run folder, made ready: no temporary files of a killed process; a run that starts over
    (--overwrite, or one that never reached its first checkpoint) starts from a clean folder."""
    rundir.sweep_temporaries(job.out)
    if job.checkpoint is None and rundir.classify(job.out) == "run":
        for p in job.out.iterdir():
            if rundir.is_run_file(p.name) and not p.name.startswith("."):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    atomic.check_writable_dir(job.out, "run folder")
