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
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import __version__, atomic, lock, rundir, signals
from .config import NON_RESULT_FIELDS, Config
from .errors import UserError
from .progress import echo, progress
from .provenance import command_line

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
    differ = sorted(k for k in wanted if k not in NON_RESULT_FIELDS and k in saved and saved.get(k) != wanted[k])
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
        return (rundir.read_summary(job.run_dir).get("dataset") or {}).get("identity")
    except UserError:
        return None


# ------------------------------------------------------------------------------------------ executors


def _worker(cfg_dict: dict, run_dir: str, variant: str, resume: bool, threads: int | None, conn=None) -> dict:
    """Worker entry point (a process or a Ray task): train one run, quietly, into its run folder."""
    import torch

    from .config import from_dict
    from .train import train

    if threads:
        torch.set_num_threads(threads)
    try:
        summary = train(from_dict(cfg_dict), run_dir, resume=resume, variant=variant, quiet=True)
    except UserError as e:
        if conn is None:
            raise
        conn.send(("error", str(e)))
        return {}
    if conn is not None:
        conn.send(("ok", summary))
    return summary


def _describe(job: Job, s: dict) -> str:
    return (f"{job.variant} seed {job.cfg.seed}: restored val_accuracy {s['restored_val_accuracy']:.4f}, "
            f"{s['epochs_run']} epochs, {s['wall_seconds']:.1f}s")


def _report(job: Job, s: dict, quiet: bool) -> None:
    if s.get("status") != "finished":
        print(f"reglab: run {job.run_dir} failed: {s.get('failure')}", file=sys.stderr)
    else:
        echo(_describe(job, s), quiet)


def _run_local(todo: list[Job], states: dict, data, quiet: bool, verbose: bool, bar, task) -> list[str]:
    from .train import train

    for i, job in enumerate(todo, 1):
        echo(f"[{i}/{len(todo)}] {job.variant} seed {job.cfg.seed} -> {job.run_dir}", quiet)
        s = train(job.cfg, job.run_dir, data=data, resume=states[id(job)] == "resume", variant=job.variant,
                  quiet=quiet, verbose=verbose)
        _report(job, s, quiet)
        bar.advance(task)
    return []


def _run_processes(todo: list[Job], states: dict, n_jobs: int, quiet: bool, bar, task) -> list[str]:
    """N runs at once, one spawned process each (CUDA cannot be used in forked children, and fresh interpreters
    keep runs independent). A worker that dies (e.g. the OOM killer) is named; the others go on."""
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    pending, running, lost = list(todo), {}, []
    try:
        while pending or running:
            while pending and len(running) < n_jobs:
                job = pending.pop(0)
                parent, child = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, daemon=True, args=(
                    job.cfg.to_dict(), str(job.run_dir), job.variant, states[id(job)] == "resume", threads, child))
                proc.start()
                child.close()
                running[proc] = (job, parent)
            for proc in list(running):
                proc.join(timeout=0.1)
                if proc.exitcode is None:
                    continue
                job, conn = running.pop(proc)
                message = conn.recv() if conn.poll() else None
                conn.close()
                if message and message[0] == "ok":
                    _report(job, message[1], quiet)
                elif message:
                    raise UserError(f"run {job.run_dir}: {message[1]}")
                else:
                    how = (f"killed by {_signal_name(-proc.exitcode)}" if proc.exitcode < 0
                           else f"exit code {proc.exitcode}")
                    lost.append(f"run {job.run_dir} died ({how}; out of memory?)")
                    print(f"reglab: {lost[-1]}; the other runs go on", file=sys.stderr)
                bar.advance(task)
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


def _run_ray(todo: list[Job], states: dict, address: str | None, gpus_per_run: float | None, quiet: bool,
             bar, task) -> list[str]:
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
        refs = {remote.remote(j.cfg.to_dict(), str(j.run_dir.resolve()), j.variant, states[id(j)] == "resume", 1): j
                for j in todo}
        pending, lost = list(refs), []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            job = refs[done[0]]
            try:
                _report(job, ray.get(done[0]), quiet)
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(getattr(e, "cause", None), Exception) else e
                if isinstance(cause, UserError):
                    raise UserError(str(cause)) from None
                raise
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayError) as e:
                lost.append(f"run {job.run_dir} died ({type(e).__name__})")
                print(f"reglab: {lost[-1]}; the other runs go on", file=sys.stderr)
            bar.advance(task)
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


def write_study(out: Path, kind: str, jobs: list[Job], seconds: float) -> None:
    path = out / "study.json"
    previous = 0.0
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        previous = float(json.loads(path.read_text())["wall_seconds"])
    atomic.write_json(path, {
        "kind": kind, "reglab": __version__, "command": command_line(),
        "variants": list(dict.fromkeys(j.variant for j in jobs)), "seeds": sorted({j.cfg.seed for j in jobs}),
        "wall_seconds": previous + seconds,  # summed over the invocations that built this study
    })


def run_study(kind: str, settings: dict, variants: dict[str, dict], seeds: list[int], out: str | Path,
              executor: str = "local", jobs: int = 1, address: str | None = None,
              gpus_per_run: float | None = None, quiet: bool = False, verbose: bool = False) -> Path:
    """Check everything, run what is missing, render the report. Returns the study folder."""
    from .data import decode, find_data
    from .data.identity import describe_change
    from .device import check_fits, pick_device
    from .train import Interrupted

    out = Path(out)
    check_out(out)
    todo_jobs = plan(settings, variants, seeds, out)
    states = {id(j): job_state(j) for j in todo_jobs}
    first = todo_jobs[0].cfg
    if executor == "local":
        pick_device(first.device)  # a missing GPU is one line now, not one per worker later
    files = find_data(first.data, show_progress=not quiet)
    identity = files.identity()
    for job in todo_jobs:
        if states[id(job)] in ("finished", "failed"):
            change = describe_change(_trained_on(job) or {}, identity)
            if change:
                raise UserError(f"run {job.run_dir} was trained on other data than {first.data} holds now: {change}; "
                                "use another --out for this data")
    todo = [j for j in todo_jobs if states[id(j)] in ("new", "resume")]
    failed = [j for j in todo_jobs if states[id(j)] == "failed"]
    reused = sum(states[id(j)] == "finished" for j in todo_jobs)
    data = None
    if todo:
        check_fits(first, pick_device(first.device) if executor == "local" else pick_device("cpu"),
                   files.num_files, len(files.classes))
        data = decode(files, first.image_size, first.on_bad_image, show_progress=not quiet)
        for path, why in data.describe()["skipped"]:
            print(f"skipped {path}: {why}", file=sys.stderr)
    # Everything is checked: take the study folder and run.
    with lock.hold(out, "study folder"):
        rundir.sweep_temporaries(out)
        if reused:
            echo(f"reusing {reused} finished run(s)", quiet)
        for job in failed:
            print(f"reglab: run {job.run_dir} failed earlier (see its summary.json); kept as failed and counted in "
                  "the report: delete its folder to retry it", file=sys.stderr)
        t0 = time.time()
        write_study(out, kind, todo_jobs, 0.0)
        lost = []
        try:
            with progress(not quiet) as bar, signals.phase(f"running the {kind} study in {out}"):
                task = bar.add_task(f"{kind}: runs", total=len(todo), info="")
                if executor == "ray":
                    lost = _run_ray(todo, states, address, gpus_per_run, quiet, bar, task)
                elif jobs > 1:
                    lost = _run_processes(todo, states, jobs, quiet, bar, task)
                else:
                    lost = _run_local(todo, states, data, quiet, verbose, bar, task)
        except Interrupted as e:
            e.args = (f"interrupted by {_signal_name(e.signum)}; finished runs are kept and the interrupted one "
                      f"resumes when you rerun the same command: {rerun_command()}",)
            raise
        finally:
            write_study(out, kind, todo_jobs, time.time() - t0)
        render_report(out, kind, quiet=quiet, locked=True)
    if lost:
        raise UserError(f"{len(lost)} run(s) died ({lost[0]}{'; ...' if len(lost) > 1 else ''}); the report covers "
                        f"the others: rerun the same command to train the missing ones")
    return out


def rerun_command() -> str:
    return command_line()


def compare(settings: dict, seeds: list[int], out: str | Path = "runs/compare", **kw) -> Path:
    """The notebook's experiment: `basic` and `regularized`, each over `seeds`, and its report."""
    return run_study("compare", settings, COMPARE_VARIANTS, seeds, out, **kw)


def ablate(settings: dict, seeds: list[int], variants: list[str] | str | None = None,
           out: str | Path = "runs/ablate", **kw) -> Path:
    """Every regularizer ablated (or added) over `seeds`, and its report."""
    return run_study("ablate", settings, parse_variants(variants), seeds, out, **kw)


def render_report(out: str | Path, kind: str | None = None, quiet: bool = False, locked: bool = False) -> tuple:
    """Re-render a study's (or a single run's) report from its run folders alone. Returns (md, html)."""
    out = Path(out)
    what = rundir.classify(out)
    if what == "run":
        from .report.single import render_single

        with (contextlib.nullcontext() if locked else lock.hold(out, "run folder")):
            md, html = render_single(out)
        echo(f"report: {md} and {html}", quiet)
        return md, html
    if what != "study":
        raise UserError(f"{out} is not a study or run folder; give the --out folder of a compare, ablate or train")
    if kind is None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            kind = json.loads((out / "study.json").read_text())["kind"]
    runs = rundir.find_runs(out)
    if not runs:
        raise UserError(f"no finished runs under {out}; run reglab compare or ablate with --out {out} first")
    if kind is None:
        kind = "compare" if {r.variant for r in runs} <= set(COMPARE_VARIANTS) else "ablate"
    with (contextlib.nullcontext() if locked else lock.hold(out, "study folder")), \
            signals.phase(f"writing the report in {out}", "report"):
        if kind == "compare":
            from .report.compare import render_compare, terminal_table
        else:
            from .report.ablation import render_ablation as render_compare, terminal_table
        md, html = render_compare(out)
        if not quiet:
            terminal_table(out)
    echo(f"report: {md} and {html}", quiet)
    return md, html
