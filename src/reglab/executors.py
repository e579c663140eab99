"""Where a study's runs train: here, in N worker processes, or on Ray, behind one signature.

    lost = execute(units, how, on_result, data=..., on_start=..., on_retry=..., shared=..., quiet=..., verbose=...)

A `Unit` is what trains as one packed network (a cohort of seeds; one run is a cohort of one): typed `Job`s,
each a config into its run folder, new or resumed. `how` (an `Executor`) says where:
  local, jobs 1   in this process, sharing the decoded data the caller prepared (`data`)
  local, jobs N   N spawned worker processes at once (several runs on one GPU, or across CPU cores)
  ray             one Ray task per unit, on the cluster at `address` or on a local instance started here
Every executor calls on_start(unit) as a unit starts and on_result(unit, summaries) as it finishes, and returns
the units it lost. A unit whose worker dies (the OOM killer, a crashed or pre-empted node) is sent again, up to
`how.max_retries` times, continuing what its run folders hold (a run with last.ckpt resumes exactly, one that
never checkpointed starts again, a finished one is kept): one line per event, and on_retry(Retry) so the
study can record it. A unit out of retries is named in one line and the others go on. A UserError in a worker
(bad input, a refused resume) is its run's own failure, never retried: it is raised here as one line. A
signal, or any error, stops the workers: no process is left behind. `train_unit` is the one entry point every
executor runs a unit through.

On Ray, run folders and data live on a filesystem every node mounts at the same path (`Shared`): before any
work every node that can take a task checks that it sees both as the driver does, and every task checks again
before it trains (a node may join later); a node that does not is one line naming it and the path.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

import torch

from . import lock, plugins, run, rundir
from .config import Config
from .checkpoint import checkpoint_epoch
from .data import Data, DataFiles, find_data
from .data.identity import describe_change
from .errors import UserError
from .readfile import read_own_text
from .rundir import Summary
from .text import say

ExecutorName = Literal["local", "ray"]
EXECUTORS: tuple[str, ...] = get_args(ExecutorName)
RAY_GPUS_PER_RUN = 0.25  # four runs share a GPU unless --gpus-per-run says otherwise
RAY_RETRIES = 2  # retries of a lost unit with --executor ray unless --retries says otherwise (local: none)
NODE_CHECK_S = 300  # how long the check before a study waits for a node's answer (a busy node starts a worker)
# A lost node's flock on a run folder outlives it until the shared filesystem notices (NFSv4: when its lease
# expires, 90 s by default): a retry waits up to this long for it.
LOCK_WAIT_S = 240


@dataclass(frozen=True)
class Executor:
    """Where units train: `local` (in this process, or `jobs` worker processes) or `ray` (on the cluster at
    `address`, else a local instance; `gpus_per_run` GPUs per task where the cluster has GPUs). retries: how
    many times a unit whose worker died is sent again (None: 2 on Ray, 0 with local worker processes)."""

    name: ExecutorName = "local"
    jobs: int = 1
    address: str | None = None
    gpus_per_run: float | None = None
    retries: int | None = None

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
        if self.retries is not None and (isinstance(self.retries, bool) or not isinstance(self.retries, int)
                                         or self.retries < 0):
            raise UserError(f"invalid retries {self.retries!r}; give how many times a lost run is retried (0: "
                            "never)")
        if self.in_process and self.retries:
            raise UserError("--retries applies to runs in worker processes (--jobs N or --executor ray); with "
                            "--jobs 1 a run trains in this process, which cannot outlive its own death")

    @property
    def in_process(self) -> bool:
        """Runs train in this process: they share its decoded data and print to its terminal."""
        return self.name == "local" and self.jobs == 1

    @property
    def max_retries(self) -> int:
        """How many times a lost unit is sent again: bounded, so a run the OOM killer takes every time ends."""
        if self.retries is not None:
            return self.retries
        return RAY_RETRIES if self.name == "ray" else 0


@dataclass(frozen=True)
class Job:
    """One run: `cfg` trained into `run_dir` as `variant`. resume: continue the folder's last.ckpt with the
    folder's own config (cfg may then be None)."""

    variant: str
    cfg: Config | None
    run_dir: Path
    resume: bool = False

    @property
    def seed(self) -> str:
        return str(self.cfg.seed) if self.cfg else self.run_dir.name.removeprefix("seed-")


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

    def named(self) -> str:
        """`run DIR` (its folder names its seed), or for a cohort `runs VARIANT_DIR (seeds 42, 43)`: what a line
        says was lost."""
        if len(self.jobs) == 1:
            return f"run {self.jobs[0].run_dir}"
        return f"runs {self.jobs[0].run_dir.parent} (seeds {', '.join(j.seed for j in self.jobs)})"

    def continued(self) -> "Unit":
        """The same unit after its worker was lost, from what its folders hold: a run with last.ckpt resumes
        exactly (as `--resume`), a finished one is kept as it is, one that never checkpointed starts again. Never
        an overwrite: what the folders hold now is this unit's own work."""
        return replace(self, overwrite=False, jobs=tuple(replace(j, resume=(j.run_dir / "last.ckpt").exists()
                                                                 or rundir.is_finished(j.run_dir)) for j in self.jobs))


@dataclass(frozen=True)
class Retry:
    """A lost unit sent again: `unit` (continued), where and why it was lost, which retry of how many, and the
    last finished epoch of each run that trains on (None: it starts again, or its checkpoint is unreadable)."""

    unit: Unit
    node: str
    reason: str
    attempt: int
    retries: int
    after: dict[Path, int | None]

    def line(self, lost: str) -> str:
        """`reglab: <unit> <lost>; retry k of N, resuming after epoch 3`, `lost` saying what happened."""
        return f"reglab: {self.unit.named()} {lost}; retry {self.attempt} of {self.retries}, {self._continues()}"

    def _continues(self) -> str:
        says = {j.seed: self._continues_job(j) for j in self.unit.jobs if j.run_dir in self.after}
        if not says:
            return "every run had finished"
        if len(set(says.values())) == 1:
            return next(iter(says.values()))
        return ", ".join(f"seed {seed} {words}" for seed, words in says.items())

    def _continues_job(self, job: Job) -> str:
        if not job.resume:
            return "starting again (no epoch had finished)"
        epoch = self.after[job.run_dir]
        return f"resuming after epoch {epoch}" if epoch is not None else "resuming from its last checkpoint"


def _retry(unit: Unit, node: str, reason: str, attempt: int, retries: int) -> Retry:
    again = unit.continued()
    after = {j.run_dir: checkpoint_epoch(j.run_dir / "last.ckpt") if j.resume else None for j in again.jobs
             if not rundir.is_finished(j.run_dir)}
    return Retry(again, node, reason, attempt, retries, after)


@dataclass(frozen=True)
class Shared:
    """What every Ray node must see as the driver does before it trains: the study folder, whose `marker` file
    holds this invocation's `nonce`, and the data folder `root` (scanned as `name`, with the driver's identity)."""

    marker: Path
    nonce: str
    name: str
    root: Path
    identity: dict

    def check(self, node: str) -> DataFiles:
        """The data files as this node sees them, or UserError naming the node and the path it cannot see."""
        try:
            seen = self.nonce in read_own_text(self.marker, rundir.TEXT_BYTES, "")
            why = "" if seen else f"its {self.marker} is not the one the driver just wrote"
        except FileNotFoundError:
            why = f"{self.marker}: no such file"
        except UserError as e:  # not a regular file, or unreadable: the reason, without the empty what-to-do
            why = str(e).removesuffix("; ")
        if why:
            raise UserError(f"node {node} cannot see the study folder {self.marker.parent} as the driver does "
                            f"({why}); put --out on a filesystem every node mounts at the same path (README: "
                            "Studies on a cluster)")
        try:
            files = find_data(str(self.root), show_progress=False)
        except UserError as e:
            raise UserError(f"node {node} cannot see the data folder {self.root} ({e}); put --data on a filesystem "
                            "every node mounts at the same path (README: Studies on a cluster)") from None
        change = describe_change(self.identity, files.identity())
        if change:
            raise UserError(f"node {node} sees other data at {self.root} than the driver ({change}); every node "
                            "must mount the same data folder at the same path")
        return replace(files, name=self.name)


OnStart = Callable[[Unit], None]
OnResult = Callable[[Unit, list[Summary]], None]
OnRetry = Callable[[Retry], None]


def train_unit(unit: Unit, data: Data | DataFiles | None = None, quiet: bool = True, verbose: bool = False,
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
            on_start: OnStart | None = None, on_retry: OnRetry | None = None, shared: Shared | None = None,
            quiet: bool = False, verbose: bool = False) -> list[str]:
    """Train every unit where `how` says; returns one line per unit lost (see the module docstring). `data` is
    used in this process only; workers prepare their own. `shared`: what every Ray node must see (None: no
    check)."""
    on_start, on_retry = on_start or (lambda unit: None), on_retry or (lambda retry: None)
    units = [replace(unit, plugins=plugins.specs()) for unit in units]  # a worker loads this process's plugins
    if how.name == "ray":
        return _on_ray(units, how, on_result, on_start, on_retry, shared, quiet)
    if how.in_process:
        return _in_process(units, on_result, data, on_start, quiet, verbose)
    return _in_processes(units, how, on_result, on_start, on_retry)


def _in_process(units: list[Unit], on_result: OnResult, data: Data | None, on_start: OnStart, quiet: bool,
                verbose: bool) -> list[str]:
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


def _in_processes(units: list[Unit], how: Executor, on_result: OnResult, on_start: OnStart,
                  on_retry: OnRetry) -> list[str]:
    """`how.jobs` units at once, one spawned process each (CUDA cannot be used in forked children, and fresh
    interpreters keep runs independent); the cores are shared out between them. A unit whose process was killed
    (the OOM killer) is sent again first, up to how.max_retries times; one that exited with an error is not."""
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // how.jobs)
    pending, running, lost = [(unit, 0) for unit in units], {}, []
    try:
        while pending or running:
            while pending and len(running) < how.jobs:
                unit, attempt = pending.pop(0)
                parent, child = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_process_worker, daemon=True, args=(unit, threads, child))
                if not attempt:
                    on_start(unit)
                proc.start()
                child.close()
                running[proc] = (unit, attempt, parent)
            for proc in list(running):
                proc.join(timeout=0.1)
                if proc.exitcode is None:
                    continue
                unit, attempt, conn = running.pop(proc)
                try:
                    message = conn.recv() if conn.poll() else None
                except EOFError:  # the worker died before it could answer
                    message = None
                conn.close()
                if message and message[0] == "ok":
                    on_result(unit, message[1])
                    continue
                if message:
                    raise UserError(f"run {unit.jobs[0].run_dir}: {message[1]}")
                if proc.exitcode >= 0:  # it ended by itself, without an answer (an error: its traceback is above)
                    lost.append(f"{unit.named()} failed (exit code {proc.exitcode})")
                    say(f"reglab: {lost[-1]}; the other runs go on")
                    continue
                how_died = f"killed by {_signal_name(-proc.exitcode)}"
                if attempt < how.max_retries:
                    retry = _retry(unit, socket.gethostname(), how_died, attempt + 1, how.max_retries)
                    say(retry.line(f"died ({how_died}; out of memory?)"))
                    on_retry(retry)
                    pending.insert(0, (retry.unit, retry.attempt))
                    continue
                lost.append(f"{unit.named()} died ({how_died}; out of memory?)")
                say(f"reglab: {lost[-1]}{_no_retries_left(how)}; the other runs go on")
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


def _no_retries_left(how: Executor) -> str:
    return f" and no retries are left (--retries {how.max_retries})" if how.max_retries else ""


# ------------------------------------------------------------------------------------------ Ray


class WorkerStopped(Exception):
    """A Ray worker stopped by a signal (a pre-empted node sends SIGTERM first): a lost worker, not its run's
    failure. A plain message, so it survives the trip back to the driver (run.Interrupted does not)."""


def _ray_worker(unit: Unit, shared: Shared | None):
    """A Ray task, as a generator: first the node it runs on, once it has checked that it sees the study and
    the data as the driver does; then the unit's summaries. One thread, quiet; a UserError travels back to
    the driver as the task's error."""
    node = _this_node()
    files = shared.check(node) if shared else None
    yield node
    _wait_for_locks(unit)
    try:
        yield train_unit(unit, files, threads=1)
    except run.Interrupted as e:
        raise WorkerStopped(f"interrupted by {_signal_name(e.signum)}") from None


def _this_node() -> str:
    """This Ray node as the lines name it: the start of its node id (hostnames repeat: several nodes may share a
    machine) and its host."""
    import ray

    return f"{ray.get_runtime_context().get_node_id()[:8]} ({socket.gethostname()})"


def _check_node(shared: Shared) -> None:
    shared.check(_this_node())


def _wait_for_locks(unit: Unit) -> None:
    """Before a unit trains: wait (up to LOCK_WAIT_S) until no lost worker holds its run folders (a retry, or a
    rerun after the driver died: the driver holds the study folder, so no live reglab can); the run itself then
    refuses a folder still held, naming the holder."""
    deadline = time.monotonic() + LOCK_WAIT_S
    for job in unit.jobs:
        while time.monotonic() < deadline:
            try:
                lock.check_free(job.run_dir, "run folder")
                break
            except UserError:
                time.sleep(1)


def _on_ray(units: list[Unit], how: Executor, on_result: OnResult, on_start: OnStart, on_retry: OnRetry,
            shared: Shared | None, quiet: bool) -> list[str]:
    """One task per unit, after every node has checked that it sees the shared folders. Runs write their folders
    on the shared filesystem; the driver gets each task's node, then its summaries, and sends a unit whose
    worker or node was lost again (retries in the driver, not Ray's max_retries: a retry must resume from the
    run folders, and the driver says so)."""
    try:
        import ray  # an optional dependency: reglab[ray]
    except ImportError:
        raise UserError("the ray executor needs Ray; install it with: pip install 'reglab[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(include_dashboard=False, log_to_driver=not quiet, configure_logging=False,
                     **_cluster(how.address))
        except ConnectionError as e:
            raise UserError(f"cannot reach the Ray cluster at {how.address}: {e}; check --address") from None
    running: dict = {}  # a task (its generator) -> [unit, attempt, node once it said]
    try:
        task, gpus = _ray_task(ray, how)
        if shared:
            _check_nodes(ray, shared, gpus)

        def submit(unit: Unit, attempt: int) -> None:
            running[task.remote(unit.absolute(), shared)] = [unit, attempt, None]

        for unit in units:
            on_start(unit)
            submit(unit, 0)
        lost = []
        while running:
            [gen], _ = ray.wait(list(running), num_returns=1)
            unit, attempt, node = running[gen]
            try:
                answer = ray.get(next(gen))
            except ray.exceptions.RayError as e:
                del running[gen]
                reason = _lost_worker(ray, e)  # raises a run's own failure
                node = node or _node_in(e)
                if reason and attempt < how.max_retries:
                    retry = _retry(unit, node, reason, attempt + 1, how.max_retries)
                    say(retry.line(f"lost its worker on node {node} ({reason})"))
                    on_retry(retry)
                    submit(retry.unit, retry.attempt)
                    continue
                lost.append(f"{unit.named()} lost its worker on node {node} ({reason or type(e).__name__})")
                say(f"reglab: {lost[-1]}{_no_retries_left(how) if reason else ''}; the other runs go on")
                continue
            if node is None:  # the first answer: where it runs
                running[gen][2] = answer
                continue
            del running[gen]
            on_result(unit, answer)
        return lost
    finally:
        for gen in running:  # a signal or an error: cancel what is still running
            with contextlib.suppress(Exception):
                ray.cancel(gen, force=True)
        if started_here:
            ray.shutdown()


def _cluster(address: str | None) -> dict:
    """Which Ray instance to use: the cluster at `address` (or at RAY_ADDRESS), else a new local instance on the
    loopback address. Never Ray's own default for no address, which joins whatever /tmp/ray/ray_current_cluster
    names: a cluster long gone left ray.init retrying for minutes. Give `--address auto` to join the cluster
    `ray start` began on this machine."""
    if address is not None or os.environ.get("RAY_ADDRESS"):
        return {"address": address}
    return {"address": "local", "_node_ip_address": "127.0.0.1"}


def _lost_worker(ray, e: Exception) -> str | None:
    """Why a task's worker was lost (its node died, its process crashed or was killed, it was stopped by a
    signal): retried. None for another Ray failure (cancelled, unserializable): lost without a retry. A run's
    own failure is raised: a UserError as its one line, anything else as it is."""
    if isinstance(e, ray.exceptions.RayTaskError):
        cause = e.cause if isinstance(getattr(e, "cause", None), Exception) else e
        if isinstance(cause, WorkerStopped):
            return str(cause)
        if isinstance(cause, UserError):
            raise UserError(str(cause)) from None
        raise e
    system = tuple(getattr(ray.exceptions, name) for name in SYSTEM_FAILURES if hasattr(ray.exceptions, name))
    return type(e).__name__ if isinstance(e, system) else None


# Ray's errors for a worker or node that went away (ObjectLostError: its result went with its node).
SYSTEM_FAILURES = ("NodeDiedError", "WorkerCrashedError", "LocalRayletDiedError", "RayActorError", "ObjectLostError",
                   "RaySystemError", "OutOfMemoryError")


def _node_in(e: Exception) -> str:
    """The node a task died on, when it died before saying: NodeDiedError's message names it."""
    found = re.search(r"node ID: ([0-9a-f]{8})", str(e))
    return found.group(1) if found else "unknown (it died before it started)"


def _check_nodes(ray, shared: Shared, gpus: float) -> None:
    """Before any work: a tiny task on every live node that can take a unit checks that it sees the study folder
    and the data as the driver does (one line naming the node and the path if not, exit 2). A node that dies
    meanwhile is left out: nothing will run there."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check = ray.remote(num_cpus=0, max_retries=0)(_check_node)  # no CPU: it runs beside a node's busy tasks
    nodes = {n["NodeID"]: f"{n['NodeID'][:8]} ({n.get('NodeManagerHostname', '?')})" for n in ray.nodes()
             if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1 and n["Resources"].get("GPU", 0) >= gpus}
    refs = {check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(shared):
            node_id for node_id in nodes}
    if not refs:  # no node can take a unit yet (an autoscaling cluster): each task checks as it starts
        return
    ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=NODE_CHECK_S)
    for ref in ready:
        try:
            ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            if isinstance(getattr(e, "cause", None), UserError):
                raise UserError(str(e.cause)) from None
            raise
        except ray.exceptions.RayError:
            continue
    if late:
        raise UserError(f"node {nodes[refs[late[0]]]} did not answer reglab's check of the shared folders within "
                        f"{NODE_CHECK_S} s; check that it can import reglab, or remove it from the cluster")


def _ray_task(ray, how: Executor):
    """The remote function each unit runs as, and its share of a GPU: one CPU, a share of a GPU where the cluster
    has GPUs, no retries by Ray (the driver retries, resuming from the run folders)."""
    gpus = (how.gpus_per_run or RAY_GPUS_PER_RUN) if ray.cluster_resources().get("GPU", 0) > 0 else 0
    return ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_ray_worker), gpus
