"""Studies: many runs (variants x seeds) into DIR/<variant>/seed-<seed>/, then a report; and `train --seeds`.

A study plans one job per (variant, seed). Every job is independent and resumable: a finished run folder is
reused (after checking it was trained with the same configuration and the same data), an interrupted one resumed
from its last.ckpt, a missing one (or one killed before its first checkpoint) trained. Everything is checked
before the first run starts; then the study folder is locked, the jobs to train are grouped into units (cohorts
of at most `pack` seeds of a variant; a run that resumes goes with the cohort it was trained in) and run where
the Executor says (executors.py), and the caller's `report` renders the report under the same lock.

study.json records the study (kind, command, variants, seeds, wall time summed over the invocations that built
it, the verdicts' margin, and `retried`: each run whose worker was lost and sent again, which the report lists; a
sweep adds `sweep`: the swept settings and their doses, [{"setting": NAME, "values": [...]}, ...]).
It also holds a fresh `nonce` per invocation: on Ray every node checks, before it trains, that it reads this
nonce in the study folder and scans the same data as the driver (executors.Shared). For `train --seeds` (kind
`train`) it is also the plan: config, seeds and cohort size, which `train --resume DIR` finishes, seeds an
interruption kept from starting included.
"""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal

import torch

from . import __version__, atomic, lock, rundir, signals, stats
from .config import NON_RESULT_FIELDS, Config, from_dict
from .data import Data, DataFiles
from .device import minimum_bytes, pick_device
from .errors import UserError
from .executors import Executor, Job, OnStart, Retry, Shared, Unit, execute
from .prepare import check_trained_on, find, prepare_data
from .progress import echo, progress
from .provenance import command_line
from .run import Interrupted
from .text import say

StudyKind = Literal["compare", "ablate", "sweep", "train"]
JobState = Literal["new", "resume", "finished", "failed"]


# ------------------------------------------------------------------------------------------ the plan


def plan(settings: dict, variants: dict[str, dict], seeds: list[int], out: Path) -> list[Job]:
    """One job per (variant, seed): the user's settings on top of the variant's model preset, then the
    variant's own overrides (which are the point of the variant, so they win)."""
    jobs = []
    for variant, overrides in variants.items():
        for seed in seeds:
            cfg = Config(**{**settings, "model": overrides.get("model", settings.get("model", "regularized")),
                            "seed": seed})
            cfg = cfg.replace(**{k: v for k, v in overrides.items() if k != "model"})
            jobs.append(Job(variant, cfg, out / variant / f"seed-{seed}"))
    refuse_twins([j for j in jobs if j.cfg.seed == seeds[0]])
    return jobs


def refuse_twins(jobs: list[Job]) -> None:
    """Two variants that resolve to one configuration (mixup=0.2 and mixup=0.20; full and dropout=0.25) would train
    it twice under two names and compare it with itself: refused, naming both. The preset's name is no difference:
    the network is built from the settings it resolves to."""
    for i, job in enumerate(jobs):
        twin = next((other for other in jobs[:i] if not job.cfg.differences(other.cfg, ignore=("model",))), None)
        if twin is not None:
            raise UserError(f"variants {twin.variant!r} and {job.variant!r} train the same configuration (the "
                            "settings given leave nothing that tells them apart); list one of them, or leave out the "
                            "settings (--config, flags) that make them equal")


def job_state(job: Job) -> JobState:
    """What the job's run folder asks for; refuses a folder trained with another configuration."""
    kind = rundir.classify(job.run_dir)
    if kind in ("absent", "empty"):
        return "new"
    if kind != "run":
        raise UserError(f"{job.run_dir} is not a run folder (it holds {rundir.contents(job.run_dir)}); move it away "
                        "or choose another --out")
    todo = "delete that run folder to train it again"
    saved = rundir.read_config(job.run_dir, todo) or {}
    try:  # what it holds must make a run (a cut-off file's last key has no value), as a resume would need
        from_dict(saved)
    except UserError as e:
        raise rundir.damaged(job.run_dir / "config.yaml", str(e), todo) from None
    wanted = job.cfg.to_dict()
    differ = job.cfg.differences(saved)
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} there, {wanted[k]!r} now" for k in differ[:3])
        raise UserError(
            f"run folder {job.run_dir} was trained with another configuration ({shown}); "
            "use another --out, or delete that folder to retrain it"
        )
    status = rundir.status(job.run_dir)
    if status == "finished":
        return "finished"
    if (job.run_dir / "last.ckpt").exists():
        return "resume"
    if status == "failed":
        return "failed"
    return "new"  # killed before its first checkpoint: nothing to lose, start it again


def _trained_on(job: Job) -> dict | None:
    """The data identity a finished or failed run recorded (None for older runs that did not record one)."""
    try:
        return rundir.read_summary(job.run_dir).dataset.identity
    except UserError:
        return None


def units_of(jobs: list[Job], pack: int, overwrite: bool = False, changes: dict | None = None) -> list[Unit]:
    """The jobs to train together. A run that resumes goes with the cohort it was trained in (its summary.json
    names it): a cohort's members share their augmentation draws, so only the same cohort resumes exactly.
    The new runs of each variant go in cohorts of at most `pack` (1: one run each)."""
    groups: list[list[Job]] = []
    for variant in dict.fromkeys(j.variant for j in jobs):
        cohorts: dict[tuple, list[Job]] = {}
        fresh = []
        for j in (j for j in jobs if j.variant == variant):
            seeds = recorded_cohort(j.run_dir) if (j.run_dir / "last.ckpt").exists() else None
            if seeds is None:
                fresh.append(j)
            else:
                cohorts.setdefault(seeds, []).append(j)
        groups += list(cohorts.values())
        groups += [fresh[i:i + pack] for i in range(0, len(fresh), pack)]
    return [Unit(tuple(group), overwrite, changes or {}) for group in groups]


def recorded_cohort(run_dir: Path) -> tuple | None:
    """The seeds of the cohort a run was trained in, as its summary.json records them (None: not recorded)."""
    try:
        seeds = rundir.read_summary(run_dir).cohort
    except UserError:
        return None
    return tuple(seeds) or None


def pack_size(pack: int | str, cfg: Config, device: torch.device, files: DataFiles, seeds: int) -> int:
    """How many seeds of a variant train as one cohort. `off`: 1. A number: that many. `auto`: on CUDA, the most
    seeds whose estimated memory (3x the lower bound of device.minimum_bytes, for activations and workspace)
    fits in 80% of the free GPU memory; elsewhere 1 (on a CPU a cohort does the same arithmetic as its runs
    one after another, and ran at 0.68x their speed on 2 cores: BENCHMARKS.md)."""
    if pack == "off":
        return 1
    if pack != "auto":
        return max(1, min(int(pack), seeds))
    if device.type != "cuda":
        return 1
    free = torch.cuda.mem_get_info(device)[0] * 0.8
    per = minimum_bytes(cfg, 0, len(files.classes))
    images = files.num_files * cfg.image_size ** 2 * 3
    return max(1, min(seeds, int((free - images) // (3 * (per["weights"] + per["activations"])))))


# ------------------------------------------------------------------------------------------ the study folder


def check_out(out: Path, what: str = "study folder") -> None:
    kind = rundir.classify(out)
    if kind == "file":
        raise UserError(f"--out {out} exists and is not a directory; choose another path")
    atomic.check_can_create(out, what)
    if kind == "run":
        raise UserError(f"--out {out} holds a single run, not a study; choose an empty or new folder")
    if kind == "foreign":
        raise UserError(f"--out {out} is not empty and is not a reglab study folder (it holds "
                        f"{rundir.contents(out)}); choose an empty or new folder")
    if kind == "study":
        read_study(out)  # a damaged study.json is refused now, not after the runs
        lock.check_free(out, what)


def write_study(out: Path, kind: StudyKind, jobs: list[Job], seconds: float, margin: float | None = None,
                nonce: str | None = None, record: dict | None = None) -> None:
    previous = read_study(out)
    wall = previous.get("wall_seconds", 0.0)
    atomic.write_json(out / "study.json", {
        "kind": kind, "reglab": __version__, "command": command_line(),
        "variants": list(dict.fromkeys(j.variant for j in jobs)), "seeds": sorted({j.cfg.seed for j in jobs}),
        # summed over the invocations that built this study
        "wall_seconds": (wall if isinstance(wall, (int, float)) else 0.0) + seconds,
        "margin": margin if margin is not None else previous.get("margin", stats.DEFAULT_MARGIN),
        "nonce": nonce,
        **(record or {}),
        **_retried_runs(out, previous),
    })


STUDY_TODO = "delete it: rerunning the study writes it again from its runs, which are kept"


def read_study(out: Path) -> dict:
    """study.json as written, or {} when absent (it is written from the plan); damage is one line."""
    return rundir.read_study_file(out, STUDY_TODO) or {}


def _retried_runs(out: Path, meta: dict) -> dict:
    """{"retried": ...} as study.json holds it, without the runs whose folders are gone (retrained from
    scratch, they were never retried); {} when none is left."""
    retried = meta.get("retried")
    kept = {run: events for run, events in retried.items() if (out / run).is_dir()} if isinstance(retried, dict) else {}
    return {"retried": kept} if kept else {}


def record_retry(out: Path, retry: Retry) -> None:
    """Add a retry to study.json at once (the driver itself may die next): `retried` maps each run folder that
    trains on (relative to the study, variant/seed-N) to its events: the node and why its worker was lost, and
    the epoch it resumed after (null: it started again)."""
    meta = read_study(out)
    retried = _retried_runs(out, meta).get("retried", {})
    for job in retry.unit.jobs:
        if job.run_dir in retry.after:
            run = job.run_dir.relative_to(out).as_posix()
            retried.setdefault(run, []).append({"node": retry.node, "reason": retry.reason,
                                                "after_epoch": retry.after[job.run_dir] if job.resume else None})
    atomic.write_json(out / "study.json", {**meta, "retried": retried})


# ------------------------------------------------------------------------------------------ a study


def run_study(kind: StudyKind, settings: dict, variants: dict[str, dict], seeds: list[int], out: str | Path,
              how: Executor = Executor(), *, pack: int | str = "auto", margin: float | None = None,
              quiet: bool = False, verbose: bool = False, report: Callable[[Path], object] | None = None,
              record: dict | None = None) -> Path:
    """Check everything, train what is missing, then `report(out)` (the API passes the report renderer: studies
    sit below the reports). `settings`: checked config values; margin: a fraction; `record`: what study.json holds
    beside the plan for this kind (a sweep's settings and doses). Returns the study folder."""
    out = Path(out)
    check_out(out)
    jobs = plan(settings, variants, seeds, out)
    states = {j.run_dir: job_state(j) for j in jobs}
    first = jobs[0].cfg
    if how.name == "local":
        pick_device(first.device)  # a missing GPU is one line now, not one per worker later
    files = find(first, quiet)
    identity = files.identity()
    # the runs kept as they are (finished, failed) must have been trained on this data; a resumed run checks its own
    check_trained_on(identity, {j.run_dir: _trained_on(j) for j in jobs
                                        if states[j.run_dir] in ("finished", "failed")}, first.data,
                     "use another --out for this data")
    todo = [replace(j, resume=states[j.run_dir] == "resume") for j in jobs if states[j.run_dir] in ("new", "resume")]
    failed = [j for j in jobs if states[j.run_dir] == "failed"]
    reused = sum(states[j.run_dir] == "finished" for j in jobs)
    device = pick_device(first.device) if how.name == "local" else pick_device("cpu")
    size = pack_size(pack, first, device, files, len(seeds))
    data = prepare_data(first, device, files, members=size, quiet=quiet) if todo else None
    # Everything is checked: take the study folder and run.
    with lock.hold(out, "study folder"):
        rundir.sweep_temporaries(out)
        if reused:
            echo(f"reusing {reused} finished run(s)", quiet)
        for job in failed:
            say(f"reglab: run {job.run_dir} failed earlier (see its summary.json); kept as failed and "
                "counted in the report: delete its folder to retry it")
        t0, nonce = time.time(), secrets.token_hex(8)
        write_study(out, kind, jobs, 0.0, margin, nonce, record)
        # what every Ray node must see as this driver does: this study.json, and the data it scanned
        shared = Shared((out / "study.json").absolute(), nonce, files.name, files.root.absolute(), identity)
        try:
            with progress(not quiet) as bar, signals.phase(f"running the {kind} study in {out}"):
                task = bar.add_task(f"{kind}: runs", total=len(todo), info="")

                def finished(unit: Unit, summaries: list[rundir.Summary]) -> None:
                    _say_results(unit, summaries, quiet)
                    bar.advance(task, len(unit.jobs))

                # a worker's runs are quiet: a header line would introduce nothing
                announce = _announcer(len(todo), quiet) if how.in_process else None
                lost = execute(units_of(todo, size), how, finished, data=data, on_start=announce,
                               on_retry=lambda retry: record_retry(out, retry), shared=shared, quiet=quiet,
                               verbose=verbose)
        except Interrupted as e:
            e.args = (f"interrupted by {signal.Signals(e.signum).name}; finished runs are kept and the interrupted "
                      f"one resumes when you rerun the same command: {command_line()}",)
            raise
        finally:
            write_study(out, kind, jobs, time.time() - t0, margin, nonce, record)
        if report is not None:
            report(out)
    if lost:
        raise UserError(f"{len(lost)} run(s) died ({lost[0]}{'; ...' if len(lost) > 1 else ''}); the report covers "
                        f"the others: rerun the same command to train the missing ones")
    return out


def _announcer(total: int, quiet: bool) -> OnStart:
    """The line above each unit's epoch lines: [runs started/total] variant, seeds -> folder."""
    started = 0

    def announce(unit: Unit) -> None:
        nonlocal started
        jobs = unit.jobs
        seeds = ", ".join(str(j.cfg.seed) for j in jobs)
        where = jobs[0].run_dir if len(jobs) == 1 else jobs[0].run_dir.parent
        echo(f"[{started + 1}/{total}] {jobs[0].variant} seed{'s' if len(jobs) > 1 else ''} {seeds}"
             f"{' (one cohort)' if len(jobs) > 1 else ''} -> {where}", quiet)
        started += len(jobs)

    return announce


def _say_results(unit: Unit, summaries: list[rundir.Summary], quiet: bool) -> None:
    for job, s in zip(unit.jobs, summaries):
        if not s.finished:
            say(f"reglab: run {job.run_dir} failed: {s.failure}")
        else:
            echo(f"{job.variant} seed {job.cfg.seed}: restored val_accuracy {s.restored_val_accuracy:.4f}, "
                 f"{s.epochs_run} epochs, {s.wall_seconds:.1f}s", quiet)


# ------------------------------------------------------------------------------------------ train --seeds


def train_seeds(cfg: Config, seeds: list[int], out: str | Path, pack: int | str = "auto", overwrite: bool = False,
                quiet: bool = False, verbose: bool = False, variant: str | None = None) -> dict[Path, rundir.Summary]:
    """`reglab train --seeds`: the seeds of one config into OUT/<model>/seed-<seed>/, packed into cohorts. The
    plan (config, seeds, cohort size) goes into OUT/study.json first, so `train --resume OUT` finishes every
    planned seed, also those an interruption kept from starting. Returns {run folder: summary}."""
    out = Path(out)
    check_out(out)
    jobs = plan(cfg.to_dict(), {variant or cfg.model: {"model": cfg.model}}, seeds, out)
    for job in jobs:
        if rundir.classify(job.run_dir) not in ("absent", "empty") and not overwrite:
            raise UserError(f"{job.run_dir} already holds a run; use --resume {out} to continue these seeds, "
                            "--overwrite to replace them, or another --out")
    device = pick_device(cfg.device)
    files = find(cfg, quiet)
    size = pack_size(pack, cfg, device, files, len(seeds))
    data = prepare_data(cfg, device, files, members=size, quiet=quiet)
    with lock.hold(out, "study folder"):
        write_seeds_plan(out, cfg, seeds, size, variant or cfg.model)
        return _train_here(out, units_of(jobs, size, overwrite=overwrite), data, quiet, verbose)


def write_seeds_plan(out: Path, cfg: Config, seeds: list[int], pack: int, variant: str) -> None:
    atomic.write_json(out / "study.json", {
        "kind": "train", "reglab": __version__, "command": command_line(), "variants": [variant],
        "seeds": list(seeds), "pack": pack, "config": {k: v for k, v in cfg.to_dict().items() if k != "seed"}})


def read_seeds_plan(folder: Path) -> tuple[Config, list[int], int, str] | None:
    """(config, seeds, cohort size, variant) that `train --seeds` recorded in FOLDER/study.json; None for a folder
    written before plans were recorded."""
    meta = rundir.read_study_file(folder, "it records which seeds to train: restore it, or train the seeds again "
                                          "into a new --out")
    if meta is None or meta.get("kind") != "train":
        return None
    try:
        seeds = [int(s) for s in meta["seeds"]]
        cfg = from_dict({**meta["config"], "seed": seeds[0]})
        pack = max(1, int(meta.get("pack", 1)))
        variant = str(meta.get("variants", [cfg.model])[0])
    except (KeyError, TypeError, ValueError, IndexError, UserError) as e:
        raise UserError(f"{folder / 'study.json'} is damaged ({type(e).__name__}: {e}); restore it, or train the "
                        "seeds again into a new --out") from None
    return cfg, seeds, pack, variant


def resume_folder(folder: str | Path, changes: dict, quiet: bool = False,
                  verbose: bool = False) -> dict[Path, rundir.Summary]:
    """`reglab train --resume DIR` where DIR holds several seeds (train --seeds): every planned seed that is not
    finished (or every finished one, when --epochs extends them), each in the cohort it was trained in; seeds
    that never started are trained. Returns {run folder: summary}."""
    folder = Path(folder)
    recorded = read_seeds_plan(folder)
    if recorded is None:  # older folders: the seed folders that exist are the plan
        jobs = [Job(p.parent.name, None, p) for p in sorted(folder.glob("*/seed-*")) if p.is_dir()]
        pack = 1
    else:
        cfg, seeds, pack, variant = recorded
        jobs = plan(cfg.to_dict(), {variant: {"model": cfg.model}}, seeds, folder)
    extend = "epochs" in changes
    pending = [j for j in jobs if extend or not rundir.is_finished(j.run_dir)]
    if not pending:
        raise UserError(f"every run under {folder} is finished; there is nothing to resume")

    def started(j: Job) -> bool:
        return rundir.classify(j.run_dir) == "run" and ((j.run_dir / "last.ckpt").exists()
                                                        or rundir.is_finished(j.run_dir))

    resumed = [replace(j, resume=True) for j in pending if started(j)]
    fresh = [j for j in pending if not started(j)]
    if any(j.cfg is None for j in fresh):
        raise UserError(f"{folder} holds seed folders that never started and no study.json plan to train them "
                        "from; train them again into a new --out")
    # the seeds that never started get what an extension or a faster setting asks too
    fresh_changes = {k: v for k, v in changes.items() if k in NON_RESULT_FIELDS | {"epochs"}}
    fresh = [replace(j, cfg=j.cfg.replace(**fresh_changes)) for j in fresh] if fresh_changes else fresh
    units = units_of(resumed, len(resumed) or 1, changes=changes) + units_of(fresh, pack)
    with lock.hold(folder, "study folder"):
        return _train_here(folder, units, None, quiet, verbose)


def _train_here(out: Path, units: list[Unit], data: Data | None, quiet: bool,
                verbose: bool) -> dict[Path, rundir.Summary]:
    """Train the units one after another in this process; an interruption names the one command that continues
    all of them (a cohort's own message would name only its own runs)."""
    results: dict[Path, rundir.Summary] = {}

    def keep(unit: Unit, summaries: list[rundir.Summary]) -> None:
        results.update(zip((j.run_dir for j in unit.jobs), summaries))

    try:
        execute(units, Executor(), keep, data=data, quiet=quiet, verbose=verbose)
    except Interrupted as e:
        e.args = (f"interrupted by {signal.Signals(e.signum).name} after epoch {e.epoch}; resume every seed with: "
                  f"reglab train --resume {out}",)
        raise
    except signals.Stopped as e:  # between two cohorts: nothing is lost either, and the same command continues
        stopped = Interrupted(e.signum, 0, out)
        stopped.args = (f"interrupted by {signal.Signals(e.signum).name}"
                        f"{' while ' + e.phase if e.phase else ''}; resume every seed with: "
                        f"reglab train --resume {out}",)
        raise stopped from None
    return results
