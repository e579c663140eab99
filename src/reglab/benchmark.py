"""`reglab bench`: one run that measures the pipeline and prints a table (and JSON with provenance).

Measures, on the chosen device (each section is added to the JSON as soon as it is measured, so a bench stopped
part way keeps what it measured; `complete` says whether it ran to the end):
  - decode-and-cache of the dataset (cold: an empty cache directory) and the warm cache load;
  - steady-state training throughput (img/s) of basic and regularized at each batch size and precision asked,
    after warm-up (every measurement says its precision; bf16 is emulated, and slow, on CPUs without AMX or
    AVX-512 BF16), and bf16 over fp32 where both were measured;
  - the cohort curve: for each model and each cohort size K (K = 1, one run, always), the packed step of K
    seeds at batch 16 in the device's own precision against one run's step, img/s per member, and one
    evaluation of every member on val/ (what each epoch end costs);
  - what a member writes at an epoch end that improved: a checkpoint of its size (weights and Adam's two
    moments, torch.save) and its best weights (safetensors), each fsynced as a run writes them;
  - with `profile`: a torch.profiler table of one batch-16 step of regularized (the top kernels by device time,
    on a CPU the top operators by CPU time) and the CPU time spent launching kernels;
  - a naive baseline in the same run: a Dataset that opens and decodes every image with Pillow on every
    access, per-image CPU augmentation, a DataLoader with workers = cores and pinned memory, training the
    same model at the same batch size; and the ratio of the two;
  - the wall time of the notebook's whole experiment (compare: both models, seed recipe, early stopping),
    excluding the one-time decode.

Every training measurement runs the real step (step.train_step) with the batches gathered on the device as the
trainer gathers them, from a cohort built by step.setup; no run folder is involved.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import atomic
from .checkpoint import save_checkpoint, save_weights
from .config import Config
from .data import load_data
from .data.augment import augment
from .data.decode import decode_image
from .data.loader import DeviceLoader, batch_bounds, shuffled_batches
from .device import autocast, pick_device, pick_precision
from .evaluate import evaluate_cohort
from .models import build_model
from .packed import seeded_models
from .progress import echo
from .provenance import environment, utc_now
from .step import setup, train_step

MODELS = ("basic", "regularized")
PRECISIONS = ("fp32", "bf16")  # what a throughput measurement may be asked for
COHORT_BATCH = 16  # the notebook's batch, where a GPU is launch-bound and packing seeds should pay
WARMUP_STEPS = 3
LAUNCH_CALLS = ("cudaLaunch", "cuLaunch", "cudaGraphLaunch")  # CPU-side runtime calls that start GPU work


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _member_batches(indices: np.ndarray, cfgs: list[Config], device, batch_size: int) -> Iterator[torch.Tensor]:
    """Member-major index batches, every member in its own seeded order, epoch after epoch (as the trainer)."""
    orders = [torch.Generator().manual_seed(c.seed) for c in cfgs]
    while True:
        for batches in zip(*(shuffled_batches(indices, g, device, batch_size) for g in orders)):
            yield torch.cat(batches)


class Stepper:
    """A cohort of `members` seeds of one model (one member: a single run) ready to take real training steps on
    the device-resident training set, and to evaluate every member on val/ as an epoch end does."""

    def __init__(self, model_name: str, batch_size: int, data, device, image_size: int, recipe: str,
                 precision: str, members: int = 1):
        cfgs = [Config(model=model_name, batch_size=batch_size, image_size=image_size, recipe=recipe,
                       device=str(device), precision=precision, seed=42 + k) for k in range(members)]
        self.cfg, self.device, self.data = cfgs[0], device, data
        self.precision = pick_precision(precision, device)
        everything = np.arange(len(data.train.labels))
        self.steps_per_epoch = len(batch_bounds(len(everything), batch_size))
        self.cohort, self.optimizer, self.scheduler, self.gens = setup(
            cfgs, seeded_models(cfgs, len(data.classes)), device, self.steps_per_epoch)
        self.train = DeviceLoader.upload(data.train.images, data.train.labels, device, batch_size)
        self._batches = _member_batches(everything, cfgs, device, batch_size)  # holds no reference to self

    def step(self) -> None:
        idx = next(self._batches)
        train_step(self.cohort, self.optimizer, self.scheduler, self.train.images.index_select(0, idx),
                   self.train.labels.index_select(0, idx), self.gens, self.cfg, self.precision)

    def timed_steps(self, n: int) -> float:
        """Seconds for n steps, the device synchronised before and after."""
        self.cohort.model.train()
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in range(n):
            self.step()
        _sync(self.device)
        return time.perf_counter() - t0

    def evaluation_seconds(self) -> float:
        """Seconds for one evaluation of every member on val/, at the recipe's evaluation batch size."""
        val = DeviceLoader.upload(self.data.val.images, self.data.val.labels, self.device, self.cfg.eval_batch_size)
        _sync(self.device)
        t0 = time.perf_counter()
        evaluate_cohort(self.cohort, val, None, self.precision, "bench")
        _sync(self.device)
        return time.perf_counter() - t0


def throughput(model_name: str, batch_size: int, data, device, steps: int, image_size: int, recipe: str,
               precision: str, members: int = 1) -> dict:
    """Steady-state img/s of the real training step on device-resident data; with members > 1, of a cohort of
    that many seeds (img/s counts every member's images). No run folder is involved."""
    s = Stepper(model_name, batch_size, data, device, image_size, recipe, precision, members)
    first = s.timed_steps(1)  # compilation / cuDNN autotuning
    s.timed_steps(WARMUP_STEPS)
    seconds = s.timed_steps(steps)
    return {"model": model_name, "batch_size": batch_size, "precision": s.precision, "members": members,
            "img_per_s": steps * batch_size * members / seconds, "step_s": seconds / steps, "first_step_s": first,
            "compile": s.cfg.compile}


def cohort_curve(model_name: str, sizes: list[int], data, device, steps: int, image_size: int,
                 recipe: str) -> list[dict]:
    """For K in sizes (and 1, the reference): a cohort of K seeds at batch 16 in the device's own precision,
    its step against one run's step, img/s per member, and one evaluation of its members on val/."""
    points = []
    for k in sorted(set(sizes) | {1}):
        s = Stepper(model_name, COHORT_BATCH, data, device, image_size, recipe, "auto", k)
        first = s.timed_steps(1)
        s.timed_steps(WARMUP_STEPS)
        step_s = s.timed_steps(steps) / steps
        points.append({"model": model_name, "members": k, "batch_size": COHORT_BATCH, "precision": s.precision,
                       "step_s": step_s, "first_step_s": first, "img_per_s": k * COHORT_BATCH / step_s,
                       "img_per_s_per_member": COHORT_BATCH / step_s, "steps_per_epoch": s.steps_per_epoch,
                       "eval_s": s.evaluation_seconds()})
        del s  # its device copy of the training set goes before the next cohort uploads its own
    one = points[0]["step_s"]
    for p in points:
        p["cost_vs_one_run"] = p["step_s"] / one
        p["speedup_vs_sequential_runs"] = p["members"] * one / p["step_s"]
    return points


def checkpoint_write(model_name: str, num_classes: int, image_size: int) -> dict:
    """Seconds to write what one member writes at an epoch end that improved: a checkpoint of its size (weights
    and Adam's two moments) and its best weights, fsynced, into a temporary folder."""
    torch.manual_seed(0)
    weights = build_model(Config(model=model_name, image_size=image_size), num_classes).state_dict()
    exp_avg, exp_avg_sq = ({name: t.clone() for name, t in weights.items()} for _ in range(2))  # own storage each
    with tempfile.TemporaryDirectory(prefix="reglab-bench-ckpt-") as tmp:
        t0 = time.perf_counter()
        save_checkpoint(Path(tmp) / "last.ckpt", {"model": weights, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq})
        save_weights(Path(tmp) / "best.safetensors", weights)
        seconds = time.perf_counter() - t0
        written = sum(p.stat().st_size for p in Path(tmp).iterdir())
    return {"model": model_name, "seconds": seconds, "bytes": written}


def profile_step(data, device, image_size: int, recipe: str, path: str | Path) -> dict:
    """A torch.profiler record of one batch-16 step of regularized (after warm-up) in the device's own
    precision: its table goes to `path`; returns the summary (top kernels, or operators on a CPU, and the CPU
    time spent in kernel-launch calls)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    s = Stepper("regularized", COHORT_BATCH, data, device, image_size, recipe, "auto")
    s.timed_steps(1 + WARMUP_STEPS)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        wall = s.timed_steps(1)
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    launches = [e for e in events if e.key.startswith(LAUNCH_CALLS)]
    if kernels:
        top = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:10]
        ranked, what = [(e.key, e.self_device_time_total / 1e6, e.count) for e in top], "kernels by device time"
    else:
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
        ranked, what = [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in top], "operators by self CPU time"
    summary = {"model": "regularized", "batch_size": COHORT_BATCH, "precision": s.precision, "step_wall_s": wall,
               "cpu_time_s": sum(e.self_cpu_time_total for e in events) / 1e6,
               "device_time_s": sum(e.self_device_time_total for e in kernels) / 1e6,
               "kernels": sum(e.count for e in kernels), "launch_calls": sum(e.count for e in launches),
               "launch_cpu_s": sum(e.self_cpu_time_total for e in launches) / 1e6,
               "top": {"what": what, "rows": [{"name": n, "seconds": t, "calls": c} for n, t, c in ranked]}}
    head = (f"torch.profiler: one training step of regularized, batch {COHORT_BATCH}, {s.precision}, on "
            f"{device} (after {1 + WARMUP_STEPS} warm-up steps)\n"
            f"step wall time {wall * 1e3:.2f} ms; CPU time in operators {summary['cpu_time_s'] * 1e3:.2f} ms; "
            f"device time in {summary['kernels']} kernels {summary['device_time_s'] * 1e3:.2f} ms; "
            f"{summary['launch_calls']} kernel-launch calls took {summary['launch_cpu_s'] * 1e3:.2f} ms of CPU\n\n")
    sort = "self_device_time_total" if kernels else "self_cpu_time_total"
    atomic.write_text(path, head + events.table(sort_by=sort, row_limit=30, max_name_column_width=70) + "\n")
    return summary


class NaiveDataset(torch.utils.data.Dataset):
    """The usual PyTorch pipeline: open and decode each file with Pillow on every access, augment on the CPU."""

    def __init__(self, paths, labels, size, augment_name):
        self.paths, self.labels, self.size, self.augment_name = paths, labels, size, augment_name

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = torch.from_numpy(decode_image(self.paths[i], self.size)).permute(2, 0, 1).float().div_(255)
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,))))
        return augment(self.augment_name, img[None], g)[0], int(self.labels[i])


def naive_epoch(model_name: str, batch_size: int, data, device, image_size: int, max_batches: int | None,
                precision: str) -> dict:
    cfg = Config(model=model_name, batch_size=batch_size, image_size=image_size)
    torch.manual_seed(0)
    model = build_model(cfg, len(data.classes)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
    ds = NaiveDataset(data.train.paths, data.train.labels, image_size, cfg.augment)
    workers = os.cpu_count() or 1
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                     pin_memory=device.type == "cuda", persistent_workers=False)
    model.train()
    images = 0
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(dl):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(precision, device):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        images += x.shape[0]
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"model": model_name, "batch_size": batch_size, "precision": precision, "img_per_s": images / seconds,
            "images": images, "seconds": seconds, "workers": workers}


def whole_experiment(data_spec: str, device, image_size: int, epochs: int, recipe: str, data) -> dict:
    """The notebook's experiment (basic then regularized, early stopping), decode excluded."""
    from .run import train

    results = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="reglab-bench-") as tmp:
        for model_name in MODELS:
            cfg = Config(model=model_name, data=data_spec, image_size=image_size, epochs=epochs, recipe=recipe,
                         device=str(device))
            s = train(cfg, Path(tmp) / model_name, data=data, quiet=True)
            results[model_name] = {k: getattr(s, k) for k in ("epochs_run", "best_epoch", "restored_val_accuracy",
                                                                "val_accuracy", "wall_seconds",
                                                                "train_images_per_second")}
    results["total_seconds"] = time.perf_counter() - t0
    return results


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    where = f"{result['provenance']['device_name']} ({result['data']}, {result['image_size']}px)"
    t = Table(title=f"reglab bench on {where}")
    t.add_column("measurement")
    t.add_column("value", justify="right")
    t.add_row("decode + cache, cold", f"{result['decode_cold_s']:.2f} s ({result['images']} images)")
    t.add_row("cache load, warm", f"{result['cache_warm_s']:.2f} s")
    for r in result["throughput"]:
        t.add_row(f"train {r['model']}, batch {r['batch_size']}, {r['precision']}", f"{r['img_per_s']:,.1f} img/s")
    for r in result["bf16_over_fp32"]:
        t.add_row(f"bf16 / fp32, {r['model']}, batch {r['batch_size']}", f"{r['ratio']:.2f}x")
    for c in result["cohorts"]:
        t.add_row(f"cohort of {c['members']} {c['model']}, batch {c['batch_size']}, {c['precision']}: step / one "
                  "run's step", f"{c['cost_vs_one_run']:.2f}x ({c['img_per_s_per_member']:,.1f} img/s a member)")
    for w in result["checkpoint_write"]:
        t.add_row(f"epoch-end writes of one {w['model']} member", f"{w['seconds']:.2f} s ({w['bytes'] / 1e6:.0f} MB)")
    if "profile" in result:
        p = result["profile"]
        t.add_row(f"one batch-{p['batch_size']} step, profiled: device time / launch CPU time",
                  f"{p['device_time_s'] * 1e3:.2f} / {p['launch_cpu_s'] * 1e3:.2f} ms")
    n = result["naive"]
    t.add_row(f"naive pipeline, regularized, batch 16, {n['precision']}", f"{n['img_per_s']:,.1f} img/s")
    t.add_row("speed-up over naive (batch 16, same precision)", f"{result['speedup_vs_naive']:.2f}x")
    if "experiment" in result:
        t.add_row("whole experiment (decode excluded)", f"{result['experiment']['total_seconds']:.1f} s")
    Console().print(t)


def main(*, data: str, device: str, json_path: str | Path | None, image_size: int, steps: int, epochs: int,
         skip_experiment: bool, naive_batches: int, recipe: str, batch_sizes: list[int], precisions: list[str],
         cohorts: list[int], profile_path: str | Path | None, quiet: bool) -> dict:
    """Every measurement of the module docstring, in that order; returns the result (also written to json_path
    after each section)."""
    dev = pick_device(device)
    chosen = pick_precision("auto", dev)
    result = {"device": dev.type, "data": data, "image_size": image_size, "date": time.strftime("%Y-%m-%d"),
              "complete": False, "provenance": {"started": utc_now(), **environment(dev, chosen)}}

    def measured(**section) -> None:
        result.update(section)
        if json_path:
            atomic.write_json(json_path, result)

    with tempfile.TemporaryDirectory(prefix="reglab-bench-cache-") as cold_cache:
        t0 = time.perf_counter()
        load_data(data, image_size, show_progress=False, cache_dir=Path(cold_cache))
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded = load_data(data, image_size, show_progress=False, cache_dir=Path(cold_cache))
        warm = time.perf_counter() - t0
    measured(decode_cold_s=cold, cache_warm_s=warm, images=int(len(loaded.train.labels) + len(loaded.val.labels)),
             train_images=int(len(loaded.train.labels)), val_images=int(len(loaded.val.labels)))
    echo(f"decode+cache (cold): {cold:.2f}s for {result['images']} images; warm load: {warm:.2f}s", quiet)

    rows, ratios = [], []
    for model_name in MODELS:
        for bs in batch_sizes:
            pair = {}
            for precision in precisions:
                r = throughput(model_name, bs, loaded, dev, steps, image_size, recipe, precision)
                rows.append(r)
                pair[precision] = r["img_per_s"]
                echo(f"throughput {model_name:12s} batch {bs:4d} {precision}: {r['img_per_s']:9.1f} img/s "
                     f"(first step {r['first_step_s']:.2f}s)", quiet)
            if len(pair) == 2:
                ratios.append({"model": model_name, "batch_size": bs, "ratio": pair["bf16"] / pair["fp32"]})
            measured(throughput=rows, bf16_over_fp32=ratios)

    curve = []
    for model_name in MODELS:
        curve += cohort_curve(model_name, cohorts, loaded, dev, steps, image_size, recipe)
        measured(cohorts=curve)
    for c in curve:
        echo(f"cohort of {c['members']:2d} {c['model']:12s} (batch {c['batch_size']}, {c['precision']}): a step costs "
             f"{c['cost_vs_one_run']:.2f}x one run's, {c['speedup_vs_sequential_runs']:.2f}x faster than one after "
             f"another; evaluating val/ {c['eval_s']:.2f}s", quiet)

    writes = [checkpoint_write(m, len(loaded.classes), image_size) for m in MODELS]
    measured(checkpoint_write=writes)
    echo("epoch-end writes of one member: " + ", ".join(f"{w['model']} {w['seconds']:.2f}s" for w in writes), quiet)

    if profile_path:
        measured(profile=profile_step(loaded, dev, image_size, recipe, profile_path))
        echo(f"profile of one step: {result['profile']['device_time_s'] * 1e3:.2f} ms on the device, "
             f"{result['profile']['launch_cpu_s'] * 1e3:.2f} ms of CPU launching kernels -> {profile_path}", quiet)

    naive = naive_epoch("regularized", COHORT_BATCH, loaded, dev, image_size, naive_batches or None, chosen)
    reglab16 = next(c for c in curve if (c["model"], c["members"]) == ("regularized", 1))
    measured(naive=naive, speedup_vs_naive=reglab16["img_per_s"] / naive["img_per_s"])
    echo(f"naive pipeline regularized batch 16 ({chosen}): {naive['img_per_s']:.1f} img/s "
         f"({naive['workers']} workers); reglab is {result['speedup_vs_naive']:.2f}x faster", quiet)

    if not skip_experiment:
        measured(experiment=whole_experiment(data, dev, image_size, epochs, recipe, loaded))
        e = result["experiment"]
        echo(f"whole experiment (basic + regularized, {recipe} recipe, {chosen}): {e['total_seconds']:.1f}s; "
             f"basic {e['basic']['restored_val_accuracy']:.4f} in {e['basic']['epochs_run']} epochs, "
             f"regularized {e['regularized']['restored_val_accuracy']:.4f} in {e['regularized']['epochs_run']} "
             "epochs", quiet)
    measured(complete=True)
    if not quiet:
        print_table(result)
    if json_path:
        echo(f"wrote {json_path}", quiet)
    return result
