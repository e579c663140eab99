"""Where a study's runs train: here, in N worker processes, or on Ray, behind one signature.

    lost = execute(units, how, on_result, data=..., on_start=..., quiet=..., verbose=...)

A `Unit` is what trains as one packed network (a cohort of seeds; one run is a cohort of one): typed `Job`s,
each a config into its run folder, new or resumed. `how` (an `Executor`) says where:
  local, jobs 1   in this process, sharing the decoded data the caller prepared (`data`)
  local, jobs N   N spawned worker processes at once (several runs on one GPU, or across CPU cores)
  ray             one Ray task per unit, on the cluster at `address` or on a local instance started here
Every executor calls on_start(unit) as a unit starts and on_result(unit, summaries) as it finishes, and returns
the units it lost: a worker that died (the OOM killer, a crashed node) is named in one line and the others go
on. A UserError in a worker is raised here as one line. A signal, or any error, stops the workers: no process
is left behind. `train_unit` is the one entry point every executor runs a unit through.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

import torch

from . import plugins, run
from .config import Config
from .data import Data
from .errors import UserError
from .rundir import Summary
from .text import say

ExecutorName = Literal["local", "ray"]
EXECUTORS: tuple[str, ...] = get_args(ExecutorName)
RAY_GPUS_PER_RUN = 0.25  # four runs share a GPU unless --gpus-per-run says otherwise


@dataclass(frozen=True)
class Executor:
    """Where units train: `local` (in this process, or `jobs` worker processes) or `ray` (on the cluster at
    `address`, else a local instance; `gpus_per_run` GPUs per task where the cluster has GPUs)."""

    name: ExecutorName = "local"
    jobs: int = 1
    address: str | None = None
    gpus_per_run: float | None = None

    def __post_init__(self):
        if self.name not in EXECUTORS:
            raise UserError(f"unknown executor {self.name!r}; choose one of {', '.join(EXECUTORS)}")
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise UserError(f"invalid jobs {self.jobs!r}; give a positive number of runs at once")
        if self.name == "ray" and self.jobs != 1:
            raise UserError("--jobs applies to the local executor; with --executor ray, Ray schedules the runs")
        if self.gpus_per_run is not None and not 0 < self.gpus_per_run < float("inf"):
            raise UserError(f"invalid gpus_per_run {self.gpus_per_run!r}; give a positive number of GPUs such as "
                            "0.25")

    @property
    def in_process(self) -> bool:
        """Runs train in this process: they share its decoded data and print to its terminal."""
        return self.name == "local" and self.jobs == 1


@dataclass(frozen=True)
class Job:
    """One run: `cfg` trained into `run_dir` as `variant`. resume: continue the folder's last.ckpt with the
    folder's own config (cfg may then be None)."""

    variant: str
    cfg: Config | None
    run_dir: Path
    resume: bool = False


@dataclass(frozen=True)
class Unit:
    """Jobs trained together as one packed network. overwrite: replace the runs in their folders; changes:
    what a resume may change (more epochs, speed settings; run.train_cohort refuses the rest); plugins: the
    regularizer plugins a worker loads first (plugins.specs())."""

    jobs: tuple[Job, ...]
    overwrite: bool = False
    changes: dict = field(default_factory=dict)
    plugins: tuple[str, ...] = ()

    def absolute(self) -> "Unit":
        """The same unit with absolute run folders (a Ray worker's working directory is not ours)."""
        return replace(self, jobs=tuple(replace(j, run_dir=j.run_dir.resolve()) for j in self.jobs))

    def folders(self) -> str:
        return " and ".join(str(j.run_dir) for j in self.jobs)


OnStart = Callable[[Unit], None]
OnResult = Callable[[Unit, list[Summary]], None]


def train_unit(unit: Unit, data: Data | None = None, quiet: bool = True, verbose: bool = False,
               threads: int | None = None) -> list[Summary]:
    """Train one unit (run.train_cohort) and return its summaries in the order of its jobs. A resumed job
    continues with its folder's own config."""
    if threads:
        torch.set_num_threads(threads)
    plugins.load_all(unit.plugins)
    jobs = unit.jobs
    return run.train_cohort([None if j.resume else j.cfg for j in jobs], [j.run_dir for j in jobs], data=data,
                            resume=[j.resume for j in jobs], overwrite=unit.overwrite, changes=unit.changes,
                            variants=[j.variant for j in jobs], quiet=quiet, verbose=verbose)


def execute(units: list[Unit], how: Executor, on_result: OnResult, *, data: Data | None = None,
            on_start: OnStart | None = None, quiet: bool = False, verbose: bool = False) -> list[str]:
    """Train every unit where `how` says; returns one line per unit lost (see the module docstring). `data` is
    used in this process only; workers prepare their own."""
    run_units = _on_ray if how.name == "ray" else _in_process if how.in_process else _in_processes
    units = [replace(unit, plugins=plugins.specs()) for unit in units]  # a worker loads this process's plugins
    return run_units(units, how, on_result, data, on_start or (lambda unit: None), quiet, verbose)


def _in_process(units: list[Unit], how: Executor, on_result: OnResult, data: Data | None, on_start: OnStart,
                quiet: bool, verbose: bool) -> list[str]:
    for unit in units:
        on_start(unit)
        on_result(unit, train_unit(unit, data, quiet, verbose))
    return []


# ------------------------------------------------------------------------------------------ worker processes


def _process_worker(unit: Unit, threads: int, conn) -> None:
    """A spawned worker: trains quietly and answers ("ok", summaries) or ("error", the UserError's line)."""
    try:
        summaries = train_unit(unit, threads=threads)
    except UserError as e:
        conn.send(("error", str(e)))
        return
    conn.send(("ok", summaries))


def _in_processes(units: list[Unit], how: Executor, on_result: OnResult, data: Data | None, on_start: OnStart,
                  quiet: bool, verbose: bool) -> list[str]:
    """`how.jobs` units at once, one spawned process each (CUDA cannot be used in forked children, and fresh
    interpreters keep runs independent); the cores are shared out between them."""
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // how.jobs)
    pending, running, lost = list(units), {}, []
    try:
        while pending or running:
            while pending and len(running) < how.jobs:
                unit = pending.pop(0)
                parent, child = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_process_worker, daemon=True, args=(unit, threads, child))
                on_start(unit)
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
                    on_result(unit, message[1])
                elif message:
                    raise UserError(f"run {unit.jobs[0].run_dir}: {message[1]}")
                else:
                    how_died = (f"killed by {_signal_name(-proc.exitcode)}" if proc.exitcode < 0
                                else f"exit code {proc.exitcode}")
                    lost.append(f"run {unit.folders()} died ({how_died}; out of memory?)")
                    say(f"reglab: {lost[-1]}; the other runs go on")
    finally:
        for proc in running:  # a signal or an error: stop the other workers, leave no process behind
            proc.terminate()
        for proc in running:
            proc.join(timeout=10)
    return lost


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:  # a real-time signal has no name
        return f"signal {n}"


# ------------------------------------------------------------------------------------------ Ray


def _ray_worker(unit: Unit) -> list[Summary]:
    """A Ray task: one thread, quiet; a UserError travels back to the driver as the task's error."""
    return train_unit(unit, threads=1)


def _on_ray(units: list[Unit], how: Executor, on_result: OnResult, data: Data | None, on_start: OnStart,
            quiet: bool, verbose: bool) -> list[str]:
    """One task per unit. Runs write their folders on the shared filesystem; the driver gets the summaries."""
    try:
        import ray  # an optional dependency: reglab[ray]
    except ImportError:
        raise UserError("the ray executor needs Ray; install it with: pip install 'reglab[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=how.address, include_dashboard=False, log_to_driver=not quiet, configure_logging=False)
        except ConnectionError as e:
            raise UserError(f"cannot reach the Ray cluster at {how.address}: {e}; check --address") from None
    refs: dict = {}
    try:
        task = _ray_task(ray, how)
        for unit in units:
            on_start(unit)
            refs[task.remote(unit.absolute())] = unit
        pending, lost = list(refs), []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            unit = refs[done[0]]
            try:
                summaries = ray.get(done[0])
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(getattr(e, "cause", None), Exception) else e
                if isinstance(cause, UserError):
                    raise UserError(str(cause)) from None
                raise
            except ray.exceptions.RayError as e:  # the worker or its node died
                lost.append(f"run {unit.folders()} died ({type(e).__name__})")
                say(f"reglab: {lost[-1]}; the other runs go on")
                continue
            on_result(unit, summaries)
        return lost
    finally:
        for ref in refs:  # a signal or an error: cancel what is still running
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()


def _ray_task(ray, how: Executor):
    """The remote function each unit runs as: one CPU, a share of a GPU where the cluster has GPUs, no retries
    (a rerun of the same command resumes what a lost task left)."""
    gpus = (how.gpus_per_run or RAY_GPUS_PER_RUN) if ray.cluster_resources().get("GPU", 0) > 0 else 0
    return ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_ray_worker)
