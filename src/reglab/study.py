"""Studies: many runs (models x variants x seeds) into DIR/<variant>/seed-<seed>/, then a report.

A study is a list of (variant, Config) jobs. Every job is independent and resumable: a finished run folder
is reused (after checking it was trained with the same configuration), an interrupted one resumed from
its last.ckpt, a missing one trained. Executors run the jobs:
  local, --jobs 1   in this process, sharing the decoded data
  local, --jobs N   N worker processes at once (several runs on one GPU, or across CPU cores)
  ray               one Ray task per run on an existing cluster (--address) or a local instance
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import atomic, rundir
from .config import Config, from_dict
from .errors import UserError

FIRST_SEED = 42
DEFAULT_ABLATION = ("full", "no-augment", "no-batchnorm", "no-dropout", "none", "basic")

# Ablation variants: the notebook's three regularizers removed one at a time from `full`, all removed
# (`none`, same depth), the notebook's shallow `basic`; and each beyond-notebook regularizer added to `full`
# at a common default strength (override with name=value, e.g. mixup=0.4).
NOTEBOOK_VARIANTS = {
    "full": {"model": "regularized"},
    "no-augment": {"model": "regularized", "augment": "none"},
    "no-batchnorm": {"model": "regularized", "batchnorm": False},
    "no-dropout": {"model": "regularized", "dropout": 0.0, "dense_dropout": 0.0},
    "none": {"model": "none"},
    "basic": {"model": "basic"},
}
ADDED_REGULARIZERS = {  # variant name -> (config field, default value)
    "smoothing": ("smoothing", 0.1),
    "mixup": ("mixup", 0.2),
    "cutmix": ("cutmix", 1.0),
    "reprob": ("reprob", 0.25),
    "weight-decay": ("weight_decay", 0.05),
    "model-ema": ("model_ema", 0.999),
    "rrc": ("augment", "rrc"),
    "spatial-dropout": ("spatial_dropout", True),
    "drop-path": ("drop_path", 0.1),
}


@dataclass
class Job:
    variant: str
    cfg: Config
    run_dir: Path


def variant_overrides(spec: str) -> tuple[str, dict]:
    """'no-dropout' -> ('no-dropout', {...}); 'mixup=0.4' -> ('mixup-0.4', {model: regularized, mixup: 0.4})."""
    name, _, value = spec.partition("=")
    name = name.strip()
    if name in NOTEBOOK_VARIANTS and not value:
        return name, dict(NOTEBOOK_VARIANTS[name])
    if name in ADDED_REGULARIZERS:
        field, default = ADDED_REGULARIZERS[name]
        if value:
            try:
                v = type(default)(float(value)) if not isinstance(default, (bool, str)) else default
            except ValueError:
                raise UserError(f"invalid value in variant {spec!r}; give a number, e.g. {name}={default}") from None
        else:
            v = default
        return (f"{name}-{value}" if value else name), {"model": "regularized", field: v}
    known = list(NOTEBOOK_VARIANTS) + list(ADDED_REGULARIZERS)
    raise UserError(f"unknown variant {spec!r}; choose from {', '.join(known)} (added regularizers take name=value)")


def plan(args, variants: dict[str, dict], out: Path, seeds: int) -> list[Job]:
    from .cli import config_from_args

    jobs = []
    for variant, overrides in variants.items():
        for seed in range(FIRST_SEED, FIRST_SEED + seeds):
            cfg = config_from_args(args, seed=seed, model=overrides.get("model"))
            cfg = from_dict({**cfg.to_dict(), **{k: v for k, v in overrides.items() if k != "model"}})
            jobs.append(Job(variant, cfg, out / variant / f"seed-{seed}"))
    return jobs


# Fields that change how fast a run goes, not what it computes: a finished run may be reused across them.
_SPEED_ONLY = {"device", "eval_batch_size", "compile", "channels_last"}


def job_state(job: Job) -> str:
    """'finished', 'resume' or 'new'; refuses to reuse a run trained with another configuration."""
    cfg_path = job.run_dir / "config.yaml"
    if not cfg_path.exists():
        return "new" if not (job.run_dir / "last.ckpt").exists() else "resume"
    try:
        saved = yaml.safe_load(cfg_path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        saved = {}
    wanted = job.cfg.to_dict()
    differ = sorted(k for k in wanted if k not in _SPEED_ONLY and saved.get(k) != wanted[k])
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} there, {wanted[k]!r} now" for k in differ[:3])
        raise UserError(
            f"run folder {job.run_dir} was trained with another configuration ({shown}); "
            "use another --out, or delete that folder to retrain it"
        )
    if rundir.is_finished(job.run_dir):
        return "finished"
    if (job.run_dir / "last.ckpt").exists():
        return "resume"
    if (job.run_dir / "summary.json").exists():
        raise UserError(f"run {job.run_dir} failed earlier (see its summary.json); delete that folder to retry it")
    return "new"


def _run_job(cfg_dict: dict, run_dir: str, variant: str, resume: bool, threads: int | None) -> dict:
    """Worker entry point (process pool or Ray task): train one run, quietly, into its run folder."""
    import torch

    from .train import train

    if threads:
        torch.set_num_threads(threads)
    cfg = from_dict(cfg_dict)
    return train(cfg, run_dir, resume=resume, variant=variant, quiet=True)


def _describe(job: Job, s: dict) -> str:
    return (f"{job.variant} seed {job.cfg.seed}: restored val_accuracy {s['restored_val_accuracy']:.4f}, "
            f"{s['epochs_run']} epochs, {s['wall_seconds']:.1f}s")


def run_jobs(jobs: list[Job], executor: str = "local", n_jobs: int = 1, address: str | None = None,
             gpus_per_run: float | None = None, quiet: bool = False) -> None:
    states = {id(j): job_state(j) for j in jobs}
    todo = [j for j in jobs if states[id(j)] != "finished"]
    reused = len(jobs) - len(todo)
    if reused:
        print(f"reusing {reused} finished run(s)", flush=True)
    if not todo:
        return
    # Decode (or validate the cache of) the data once, here, before any worker needs it.
    from .data import load_data

    first = todo[0].cfg
    data = load_data(first.data, first.image_size, first.on_bad_image, show_progress=not quiet)
    for path, why in data.describe()["skipped"]:
        print(f"skipped {path}: {why}", file=sys.stderr)
    if executor == "ray":
        _run_ray(todo, states, address, gpus_per_run, quiet)
    elif n_jobs > 1:
        _run_pool(todo, states, n_jobs, quiet)
    else:
        from .train import train

        for i, job in enumerate(todo, 1):
            if not quiet:
                print(f"[{i}/{len(todo)}] {job.variant} seed {job.cfg.seed} -> {job.run_dir}", flush=True)
            same_data = (job.cfg.data, job.cfg.image_size) == (first.data, first.image_size)
            s = train(job.cfg, job.run_dir, data=data if same_data else None, resume=states[id(job)] == "resume",
                      variant=job.variant, quiet=quiet)
            _check(job, s)


def _check(job: Job, s: dict) -> None:
    if s["status"] != "finished":
        print(f"reglab: run {job.run_dir} failed: {s.get('failure')}", file=sys.stderr)
    else:
        print(_describe(job, s), flush=True)


def _run_pool(todo: list[Job], states: dict, n_jobs: int, quiet: bool) -> None:
    import multiprocessing as mp

    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    # spawn: CUDA cannot be used in forked children, and fresh interpreters keep runs independent.
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
        futures = {
            pool.submit(_run_job, j.cfg.to_dict(), str(j.run_dir), j.variant, states[id(j)] == "resume", threads): j
            for j in todo
        }
        for fut in as_completed(futures):
            _check(futures[fut], fut.result())


def _run_ray(todo: list[Job], states: dict, address: str | None, gpus_per_run: float | None, quiet: bool) -> None:
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
    try:
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        gpus = (gpus_per_run if gpus_per_run is not None else 0.25) if has_gpu else 0
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_run_job)
        # Runs write their folders on the shared filesystem; the driver gets each summary back.
        refs = {remote.remote(j.cfg.to_dict(), str(j.run_dir.resolve()), j.variant, states[id(j)] == "resume", 1): j
                for j in todo}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                summary = ray.get(done[0])
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(getattr(e, "cause", None), Exception) else e
                if isinstance(cause, UserError):
                    raise UserError(str(cause)) from None
                raise
            _check(refs[done[0]], summary)
    finally:
        if started_here:
            ray.shutdown()


def write_study(out: Path, kind: str, jobs: list[Job], seconds: float) -> None:
    path = out / "study.json"
    previous = 0.0
    with contextlib.suppress(OSError, ValueError, KeyError):
        import json

        previous = float(json.loads(path.read_text())["wall_seconds"])
    variants = list(dict.fromkeys(j.variant for j in jobs))
    atomic.write_json(path, {
        "kind": kind, "command": "reglab " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "variants": variants, "seeds": sorted({j.cfg.seed for j in jobs}),
        "wall_seconds": previous + seconds,  # summed over the invocations that built this study
    })


def _study(args, kind: str, variants: dict[str, dict]) -> int:
    from .train import Interrupted

    out = Path(args.out or f"runs/{kind}")
    atomic.check_writable_dir(out, "study folder")
    jobs = plan(args, variants, out, args.seeds)
    t0 = time.time()
    try:
        run_jobs(jobs, args.executor, args.jobs, args.address, args.gpus_per_run, args.quiet)
    except Interrupted as e:
        e.args = (f"interrupted by {signal.Signals(e.signum).name}; finished runs are kept and the interrupted one "
                  f"resumes when you rerun the same command: {shlex.join(['reglab', *sys.argv[1:]])}",)
        raise
    finally:
        write_study(out, kind, jobs, time.time() - t0)
    return render_report(out, kind)


def compare(args) -> int:
    return _study(args, "compare", {"basic": {"model": "basic"}, "regularized": {"model": "regularized"}})


def ablate(args) -> int:
    specs = [s for s in (args.variants.split(",") if args.variants else DEFAULT_ABLATION) if s.strip()]
    variants = dict(variant_overrides(s) for s in specs)
    return _study(args, "ablate", variants)


def render_report(out: Path, kind: str | None = None) -> int:
    import json

    runs = rundir.find_runs(out)
    if not runs:
        raise UserError(f"no finished runs under {out}; run reglab compare or ablate with --out {out} first")
    if kind is None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            kind = json.loads((out / "study.json").read_text())["kind"]
    if kind is None:
        kind = "compare" if {r.variant for r in runs} <= {"basic", "regularized"} else "ablate"
    if kind == "compare":
        from .report.compare import comparison_rows, print_table, render_compare

        md, html = render_compare(out)
        print_table(comparison_rows(runs))
    else:
        from .report.ablation import print_ablation_table, render_ablation

        md, html = render_ablation(out)
        print_ablation_table(out)
    print(f"report: {md} and {html}")
    return 0
