"""Studies: many runs (variants x seeds) into DIR/<variant>/seed-<seed>/, then a report.

A study is a list of (variant, Config) jobs. Every job is independent and resumable: a finished run folder
is reused (after checking it was trained with the same configuration and the same data), an interrupted one
resumed from its last.ckpt, a missing one (or one killed before its first checkpoint) trained. Everything is
checked before the first run starts. Executors run the jobs:
  local, jobs 1   in this process, sharing the decoded data
  local, jobs N   N worker processes at once (several runs on one GPU, or across CPU cores)
  ray             one Ray task per run on an existing cluster (address) or a local instance

Commands take explicit settings (the config keys a user set, as a dict) and plain arguments; the CLI and the
Python API (reglab.compare, reglab.ablate) both call `run_study`.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import __version__, atomic, lock, rundir, signals, stats
from .config import NON_RESULT_FIELDS, Config
from .errors import UserError
from .progress import echo, progress
from .provenance import command_line
from .text import say

FIRST_SEED = 42
DEFAULT_ABLATION = ("full", "no-augment", "no-batchnorm", "no-dropout", "none", "basic")
COMPARE_VARIANTS = {"basic": {"model": "basic"}, "regularized": {"model": "regularized"}}

# Ablation variants: the notebook's three regularizers removed one at a time from `full`, all removed
# (`none`, same depth), the notebook's shallow `basic`; and each beyond-notebook regularizer added to `full`
# at a common default strength (override with name=value, e.g. mixup=0.4).
NOTEBOOK_VARIANTS = {
    "full": ({"model": "regularized"}, "the notebook's regularized model: batch norm, dropout, augmentation"),
    "no-augment": ({"model": "regularized", "augment": "none"}, "full without data augmentation"),
    "no-batchnorm": ({"model": "regularized", "batchnorm": False}, "full without batch normalization"),
    "no-dropout": ({"model": "regularized", "dropout": 0.0, "dense_dropout": 0.0}, "full without dropout"),
    "none": ({"model": "none"}, "the same 6-conv network with all three removed (depth without regularization)"),
    "basic": ({"model": "basic"}, "the notebook's shallow plain CNN (3 convs, no regularizer)"),
}
ADDED_REGULARIZERS = {  # variant name -> (config field, default value, what it adds to full)
    "smoothing": ("smoothing", 0.1, "label smoothing"),
    "mixup": ("mixup", 0.2, "mixup with Beta(a, a)"),
    "cutmix": ("cutmix", 1.0, "CutMix with Beta(a, a)"),
    "reprob": ("reprob", 0.25, "random erasing with this probability"),
    "weight-decay": ("weight_decay", 0.05, "decoupled weight decay (AdamW)"),
    "model-ema": ("model_ema", 0.999, "an EMA of the weights with this decay"),
    "rrc": ("augment", "rrc", "random-resized-crop + flip instead of the notebook's augmentation"),
    "spatial-dropout": ("spatial_dropout", True, "conv-block dropout drops whole channels"),
    "drop-path": ("drop_path", 0.1, "stochastic depth with this rate"),
}


def variant_catalogue() -> list[tuple[str, str]]:
    """(name, what it changes) for every variant `ablate --variants` accepts."""
    out = [(name, about) for name, (_, about) in NOTEBOOK_VARIANTS.items()]
    for name, (fieldname, default, about) in ADDED_REGULARIZERS.items():
        value = "" if isinstance(default, (bool, str)) else f"[=VALUE] (default {default:g})"
        out.append((f"{name}{value}", f"full + {about}"))
    return out


@dataclass
class Job:
    variant: str
    cfg: Config
    run_dir: Path


def variant_overrides(spec: str) -> tuple[str, dict]:
    """'no-dropout' -> ('no-dropout', {...}); 'mixup=0.4' -> ('mixup-0.4', {model: regularized, mixup: 0.4})."""
    name, has_value, value = (part.strip() for part in spec.partition("="))
    if name in NOTEBOOK_VARIANTS:
        if has_value:
            raise UserError(f"variant {name!r} takes no value (got {spec!r}); see reglab ablate --list-variants")
        return name, dict(NOTEBOOK_VARIANTS[name][0])
    if name in ADDED_REGULARIZERS:
        fieldname, default, _ = ADDED_REGULARIZERS[name]
        if not has_value:
            return name, {"model": "regularized", fieldname: default}
        if isinstance(default, (bool, str)):
            raise UserError(f"variant {name!r} is on or off and takes no value (got {spec!r}); list it to add it")
        try:
            v = float(value)
        except ValueError:
            raise UserError(f"invalid value in variant {spec!r}; give a number, e.g. {name}={default}") from None
        if v <= 0:
            raise UserError(f"variant {spec!r} would not add {name} (its value must be > 0); leave it out, or use "
                            f"`full` for the model without it")
        return f"{name}-{value}", {"model": "regularized", fieldname: v}
    known = list(NOTEBOOK_VARIANTS) + list(ADDED_REGULARIZERS)
    raise UserError(f"unknown variant {spec!r}; choose from {', '.join(known)} (added regularizers take "
                    "name=value; see reglab ablate --list-variants)")


def parse_variants(specs: list[str] | str | None) -> dict[str, dict]:
    if isinstance(specs, str):
        specs = specs.split(",")
    specs = [s for s in (specs or DEFAULT_ABLATION) if s.strip()]
    out: dict[str, dict] = {}
    for spec in specs:
        name, overrides = variant_overrides(spec)
        if name in out:
            raise UserError(f"variant {name!r} is listed twice in --variants")
        out[name] = overrides
    return out


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
    return jobs


def job_state(job: Job) -> str:
    """'finished', 'failed', 'resume' or 'new'; refuses a folder trained with another configuration."""
    kind = rundir.classify(job.run_dir)
    if kind in ("absent", "empty"):
        return "new"
    if kind != "run":
        raise UserError(f"{job.run_dir} is not a run folder (it holds {rundir.contents(job.run_dir)}); move it away "
                        "or choose another --out")
    saved = {}
    with contextlib.suppress(OSError, yaml.YAMLError):
        saved = yaml.safe_load((job.run_dir / "config.yaml").read_text()) or {}
    wanted = job.cfg.to_dict()
    differ = job.cfg.differences(saved if isinstance(saved, dict) else {})
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


# ------------------------------------------------------------------------------------------ executors


def _worker(cfg_dicts: list[dict], run_dirs: list[str], variants: list[str], resume: list[bool],
            threads: int | None, conn=None) -> list[dict]:
    """Worker entry point (a process or a Ray task): train one unit (a run, or a cohort of seeds) quietly."""
    import torch

    from .config import from_dict
    from .run import train_cohort

    if threads:
        torch.set_num_threads(threads)
    try:
        summaries = train_cohort([from_dict(c) for c in cfg_dicts], run_dirs, resume=resume, variants=variants,
                                 quiet=True)
    except UserError as e:
        if conn is None:
            raise
        conn.send(("error", str(e)))
        return []
    if conn is not None:
        conn.send(("ok", summaries))
    return summaries


def _describe(job: Job, s: rundir.Summary) -> str:
    return (f"{job.variant} seed {job.cfg.seed}: restored val_accuracy {s.restored_val_accuracy:.4f}, "
            f"{s.epochs_run} epochs, {s.wall_seconds:.1f}s")


def _report(unit: list[Job], summaries: list[rundir.Summary], quiet: bool) -> None:
    for job, s in zip(unit, summaries):
        if not s.finished:
            say(f"reglab: run {job.run_dir} failed: {s.failure}")
        else:
            echo(_describe(job, s), quiet)


def _unit_args(unit: list[Job], states: dict) -> tuple:
    return ([j.cfg.to_dict() for j in unit], [str(j.run_dir) for j in unit], [j.variant for j in unit],
            [states[id(j)] == "resume" for j in unit])


def units_of(todo: list[Job], pack: int) -> list[list[Job]]:
    """The jobs to run together. A run that resumes goes with the cohort it was trained in (its summary.json
    names it): a cohort's members share their augmentation draws, so only the same cohort resumes exactly.
    The new runs of each variant go in cohorts of at most `pack` (1: one run each)."""
    units = []
    for variant in dict.fromkeys(j.variant for j in todo):
        jobs = [j for j in todo if j.variant == variant]
        cohorts: dict[tuple, list[Job]] = {}
        fresh = []
        for j in jobs:
            seeds = recorded_cohort(j.run_dir) if (j.run_dir / "last.ckpt").exists() else None
            if seeds is None:
                fresh.append(j)
            else:
                cohorts.setdefault(seeds, []).append(j)
        units += list(cohorts.values())
        units += [fresh[i:i + pack] for i in range(0, len(fresh), pack)]
    return units


def recorded_cohort(run_dir: Path) -> tuple | None:
    """The seeds of the cohort a run was trained in, as its summary.json records them (None: not recorded)."""
    try:
        seeds = rundir.read_summary(run_dir).cohort
    except UserError:
        return None
    return tuple(seeds) or None


def _run_local(units: list[list[Job]], states: dict, data, quiet: bool, verbose: bool, bar, task) -> list[str]:
    from .run import train_cohort

    done = 0
    for unit in units:
        seeds = ", ".join(str(j.cfg.seed) for j in unit)
        where = unit[0].run_dir if len(unit) == 1 else unit[0].run_dir.parent
        echo(f"[{done + 1}/{sum(map(len, units))}] {unit[0].variant} seed{'s' if len(unit) > 1 else ''} {seeds}"
             f"{' (one cohort)' if len(unit) > 1 else ''} -> {where}", quiet)
        summaries = train_cohort([j.cfg for j in unit], [j.run_dir for j in unit], data=data,
                                 resume=[states[id(j)] == "resume" for j in unit], variants=[j.variant for j in unit],
                                 quiet=quiet, verbose=verbose)
        _report(unit, summaries, quiet)
        done += len(unit)
        bar.advance(task, len(unit))
    return []


def _run_processes(units: list[list[Job]], states: dict, n_jobs: int, quiet: bool, bar, task) -> list[str]:
    """N units at once, one spawned process each (CUDA cannot be used in forked children, and fresh interpreters
    keep runs independent). A worker that dies (e.g. the OOM killer) is named; the others go on."""
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    pending, running, lost = list(units), {}, []
    try:
        while pending or running:
            while pending and len(running) < n_jobs:
                unit = pending.pop(0)
                parent, child = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, daemon=True, args=(*_unit_args(unit, states), threads, child))
                proc.start()
                child.close()
                running[proc] = (unit, parent)
            for proc in list(running):
                proc.join(timeout=0.1)
                if proc.exitcode is None:
                    continue
                unit, conn = running.pop(proc)
                try:
                    message = conn.recv() if conn.poll() else None
                except EOFError:  # the worker died before it could answer
                    message = None
                conn.close()
                if message and message[0] == "ok":
                    _report(unit, message[1], quiet)
                elif message:
                    raise UserError(f"run {unit[0].run_dir}: {message[1]}")
                else:
                    how = (f"killed by {_signal_name(-proc.exitcode)}" if proc.exitcode < 0
                           else f"exit code {proc.exitcode}")
                    names = " and ".join(str(j.run_dir) for j in unit)
                    lost.append(f"run {names} died ({how}; out of memory?)")
                    say(f"reglab: {lost[-1]}; the other runs go on")
                bar.advance(task, len(unit))
    finally:
        for proc in running:  # a signal or an error: stop the other workers, leave no process behind
            proc.terminate()
        for proc in running:
            proc.join(timeout=10)
    return lost


def _signal_name(n: int) -> str:
    import signal

    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def _run_ray(units: list[list[Job]], states: dict, address: str | None, gpus_per_run: float | None,
             quiet: bool, bar, task) -> list[str]:
    try:
        import ray
    except ImportError:
        raise UserError("the ray executor needs Ray; install it with: pip install 'reglab[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=not quiet, configure_logging=False)
        except ConnectionError as e:
            raise UserError(f"cannot reach the Ray cluster at {address}: {e}; check --address") from None
    refs = {}
    try:
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        gpus = (gpus_per_run if gpus_per_run is not None else 0.25) if has_gpu else 0
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_worker)
        # Runs write their folders on the shared filesystem; the driver gets each summary back.
        refs = {}
        for unit in units:
            cfgs, dirs, variants, resume = _unit_args(unit, states)
            refs[remote.remote(cfgs, [str(Path(d).resolve()) for d in dirs], variants, resume, 1)] = unit
        pending, lost = list(refs), []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            unit = refs[done[0]]
            try:
                _report(unit, ray.get(done[0]), quiet)
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(getattr(e, "cause", None), Exception) else e
                if isinstance(cause, UserError):
                    raise UserError(str(cause)) from None
                raise
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayError) as e:
                lost.append(f"run {' and '.join(str(j.run_dir) for j in unit)} died ({type(e).__name__})")
                say(f"reglab: {lost[-1]}; the other runs go on")
            bar.advance(task, len(unit))
        return lost
    finally:
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()


# ------------------------------------------------------------------------------------------- a study


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
        lock.check_free(out, what)


def write_study(out: Path, kind: str, jobs: list[Job], seconds: float, margin: float | None = None) -> None:
    path = out / "study.json"
    previous = {}
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads(path.read_text())
    if not isinstance(previous, dict):
        previous = {}
    wall = previous.get("wall_seconds", 0.0)
    atomic.write_json(path, {
        "kind": kind, "reglab": __version__, "command": command_line(),
        "variants": list(dict.fromkeys(j.variant for j in jobs)), "seeds": sorted({j.cfg.seed for j in jobs}),
        # summed over the invocations that built this study
        "wall_seconds": (wall if isinstance(wall, (int, float)) else 0.0) + seconds,
        "margin": margin if margin is not None else previous.get("margin", stats.DEFAULT_MARGIN),
    })


def run_study(kind: str, settings: dict, variants: dict[str, dict], seeds: list[int], out: str | Path,
              executor: str = "local", jobs: int = 1, address: str | None = None,
              gpus_per_run: float | None = None, quiet: bool = False, verbose: bool = False,
              pack: int | str = "auto", margin: float | None = None) -> Path:
    """Check everything, run what is missing, render the report. Returns the study folder."""
    from .device import pick_device
    from .prepare import check_trained_on, find, prepare_data
    from .run import Interrupted

    out = Path(out)
    check_out(out)
    todo_jobs = plan(settings, variants, seeds, out)
    states = {id(j): job_state(j) for j in todo_jobs}
    first = todo_jobs[0].cfg
    if executor == "local":
        pick_device(first.device)  # a missing GPU is one line now, not one per worker later
    files = find(first, quiet)
    # the runs kept as they are (finished, failed) must have been trained on this data; a resumed run checks its own
    check_trained_on(files.identity(), {j.run_dir: _trained_on(j) for j in todo_jobs
                                        if states[id(j)] in ("finished", "failed")}, first.data,
                     "use another --out for this data")
    todo = [j for j in todo_jobs if states[id(j)] in ("new", "resume")]
    failed = [j for j in todo_jobs if states[id(j)] == "failed"]
    reused = sum(states[id(j)] == "finished" for j in todo_jobs)
    data = None
    device = pick_device(first.device) if executor == "local" else pick_device("cpu")
    size = pack_size(pack, first, device, files, len(seeds))
    if todo:
        data = prepare_data(first, device, files, members=size, quiet=quiet)
    # Everything is checked: take the study folder and run.
    with lock.hold(out, "study folder"):
        rundir.sweep_temporaries(out)
        if reused:
            echo(f"reusing {reused} finished run(s)", quiet)
        for job in failed:
            say(f"reglab: run {job.run_dir} failed earlier (see its summary.json); kept as failed and "
                          "counted in the report: delete its folder to retry it")
        t0 = time.time()
        write_study(out, kind, todo_jobs, 0.0, margin)
        lost = []
        try:
            with progress(not quiet) as bar, signals.phase(f"running the {kind} study in {out}"):
                task = bar.add_task(f"{kind}: runs", total=len(todo), info="")
                units = units_of(todo, size)
                if executor == "ray":
                    lost = _run_ray(units, states, address, gpus_per_run, quiet, bar, task)
                elif jobs > 1:
                    lost = _run_processes(units, states, jobs, quiet, bar, task)
                else:
                    lost = _run_local(units, states, data, quiet, verbose, bar, task)
        except Interrupted as e:
            e.args = (f"interrupted by {_signal_name(e.signum)}; finished runs are kept and the interrupted one "
                      f"resumes when you rerun the same command: {rerun_command()}",)
            raise
        finally:
            write_study(out, kind, todo_jobs, time.time() - t0, margin)
        from .reports.render import render_report

        render_report(out, kind, quiet=quiet, locked=True, margin=margin)
    if lost:
        raise UserError(f"{len(lost)} run(s) died ({lost[0]}{'; ...' if len(lost) > 1 else ''}); the report covers "
                        f"the others: rerun the same command to train the missing ones")
    return out


def pack_size(pack: int | str, cfg: Config, device, files, seeds: int) -> int:
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
    import torch

    from .device import minimum_bytes

    free = torch.cuda.mem_get_info(device)[0] * 0.8
    per = minimum_bytes(cfg, 0, len(files.classes))
    images = files.num_files * cfg.image_size ** 2 * 3
    return max(1, min(seeds, int((free - images) // (3 * (per["weights"] + per["activations"])))))


def train_seeds(cfg: Config, seeds: list[int], out: str | Path, pack: int | str = "auto", overwrite: bool = False,
                quiet: bool = False, verbose: bool = False) -> list[dict]:
    """`reglab train --seeds`: the seeds of one config into OUT/<model>/seed-<seed>/, packed into cohorts. The
    plan (config, seeds, cohort size) goes into OUT/study.json first, so `train --resume OUT` finishes every
    planned seed, also those an interruption kept from starting."""
    from .device import pick_device
    from .prepare import find, prepare_data

    out = Path(out)
    check_out(out)
    jobs = plan({**cfg.to_dict()}, {cfg.model: {"model": cfg.model}}, seeds, out)
    for job in jobs:
        if rundir.classify(job.run_dir) not in ("absent", "empty") and not overwrite:
            raise UserError(f"{job.run_dir} already holds a run; use --resume {out} to continue these seeds, "
                            "--overwrite to replace them, or another --out")
    device = pick_device(cfg.device)
    files = find(cfg, quiet)
    size = pack_size(pack, cfg, device, files, len(seeds))
    data = prepare_data(cfg, device, files, members=size, quiet=quiet)
    with lock.hold(out, "study folder"):
        write_seeds_plan(out, cfg, seeds, size)
        return _train_units(out, [[(j, False) for j in unit] for unit in units_of(jobs, size)], data, overwrite,
                            None, quiet, verbose)


def write_seeds_plan(out: Path, cfg: Config, seeds: list[int], pack: int) -> None:
    atomic.write_json(out / "study.json", {
        "kind": "train", "reglab": __version__, "command": command_line(), "variants": [cfg.model],
        "seeds": list(seeds), "pack": pack, "config": {k: v for k, v in cfg.to_dict().items() if k != "seed"}})


def _train_units(out: Path, units: list[list[tuple[Job, bool]]], data, overwrite: bool, changes: dict | None,
                 quiet: bool, verbose: bool) -> list[dict]:
    """Train (job, resume) units one after another; an interruption names the one command that continues all
    of them (a cohort's own message would name only its own runs)."""
    from .run import Interrupted, train_cohort

    summaries = []
    try:
        for unit in units:
            summaries += train_cohort([None if resume else j.cfg for j, resume in unit],
                                      [j.run_dir for j, _ in unit], data=data, overwrite=overwrite,
                                      resume=[resume for _, resume in unit], changes=changes, quiet=quiet,
                                      verbose=verbose)
    except Interrupted as e:
        e.args = (f"interrupted by {_signal_name(e.signum)} after epoch {e.epoch}; resume every seed with: "
                  f"reglab train --resume {out}",)
        raise
    except signals.Stopped as e:  # between two cohorts: nothing is lost either, and the same command continues
        stopped = Interrupted(e.signum, 0, out)
        stopped.args = (f"interrupted by {_signal_name(e.signum)}{' while ' + e.phase if e.phase else ''}; resume "
                        f"every seed with: reglab train --resume {out}",)
        raise stopped from None
    return summaries


def read_seeds_plan(folder: Path) -> tuple[Config, list[int], int] | None:
    """(config, seeds, cohort size) that `train --seeds` recorded in FOLDER/study.json; None for a folder
    written before plans were recorded."""
    from .config import from_dict

    try:
        meta = json.loads((folder / "study.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{folder / 'study.json'} is damaged ({type(e).__name__}); it records which seeds to "
                        "train: restore it, or train the seeds again into a new --out") from None
    if not isinstance(meta, dict) or meta.get("kind") != "train":
        return None
    try:
        seeds = [int(s) for s in meta["seeds"]]
        cfg = from_dict({**meta["config"], "seed": seeds[0]})
        pack = max(1, int(meta.get("pack", 1)))
    except (KeyError, TypeError, ValueError, IndexError, UserError) as e:
        raise UserError(f"{folder / 'study.json'} is damaged ({type(e).__name__}: {e}); restore it, or train the "
                        "seeds again into a new --out") from None
    return cfg, seeds, pack


def resume_folder(folder: str | Path, changes: dict, quiet: bool = False, verbose: bool = False):
    """`reglab train --resume DIR` where DIR holds several seeds (train --seeds): every planned seed that is not
    finished (or every finished one, when --epochs extends them), each in the cohort it was trained in; seeds
    that never started are trained. Returns (run folders, summaries)."""
    folder = Path(folder)
    recorded = read_seeds_plan(folder)
    if recorded is None:  # older folders: the seed folders that exist are the plan
        runs = [p for p in sorted(folder.glob("*/seed-*")) if p.is_dir()]
        jobs = [Job(p.parent.name, None, p) for p in runs]
        pack = 1
    else:
        cfg, seeds, pack = recorded
        jobs = plan(cfg.to_dict(), {cfg.model: {"model": cfg.model}}, seeds, folder)
    extend = "epochs" in changes
    pending = [j for j in jobs if extend or not rundir.is_finished(j.run_dir)]
    if not pending:
        raise UserError(f"every run under {folder} is finished; there is nothing to resume")
    started = [j for j in pending if rundir.classify(j.run_dir) == "run" and
               ((j.run_dir / "last.ckpt").exists() or rundir.is_finished(j.run_dir))]
    fresh = [j for j in pending if j not in started]
    if any(j.cfg is None for j in fresh):
        raise UserError(f"{folder} holds seed folders that never started and no study.json plan to train them "
                        "from; train them again into a new --out")
    units = [[(j, True) for j in unit] for unit in units_of(started, len(started) or 1)]
    units += [[(j, False) for j in unit] for unit in units_of(fresh, pack)]
    fresh_changes = {k: v for k, v in changes.items() if k in NON_RESULT_FIELDS | {"epochs"}}
    for unit in units:  # the seeds that never started get what an extension or a faster setting asks too
        for j, resume in unit:
            if not resume and fresh_changes:
                j.cfg = j.cfg.replace(**fresh_changes)
    with lock.hold(folder, "study folder"):
        summaries = _train_units(folder, units, None, False, changes, quiet, verbose)
    return [j.run_dir for unit in units for j, _ in unit], summaries


def rerun_command() -> str:
    return command_line()


def compare(settings: dict, seeds: list[int], out: str | Path = "runs/compare", **kw) -> Path:
    """The notebook's experiment: `basic` and `regularized`, each over `seeds`, and its report."""
    return run_study("compare", settings, COMPARE_VARIANTS, seeds, out, **kw)


def ablate(settings: dict, seeds: list[int], variants: list[str] | str | None = None,
           out: str | Path = "runs/ablate", **kw) -> Path:
    """Every regularizer ablated (or added) over `seeds`, and its report."""
    return run_study("ablate", settings, parse_variants(variants), seeds, out, **kw)
