"""`reglab bench`: one run that measures the pipeline and prints a table (and JSON with provenance).

Measures, on the chosen device:
  - decode-and-cache of the dataset (cold: an empty cache directory) and the warm cache load;
  - steady-state training throughput (img/s) of basic and regularized at batch 16 and 512, after warm-up,
    in fp32 and in bf16 autocast (every measurement says its precision; bf16 is emulated, and slow, on CPUs
    without AMX or AVX-512 BF16);
  - the wall time of the notebook's whole experiment (compare: both models, seed recipe, early stopping),
    excluding the one-time decode;
  - a naive baseline in the same run: a Dataset that opens and decodes every image with Pillow on every
    access, per-image CPU augmentation, a DataLoader with workers = cores and pinned memory, training the
    same model at the same batch size; and the ratio of the two.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import atomic
from .config import Config
from .data import load_data
from .data.augment import augment
from .data.decode import decode_image
from .data.loader import DeviceLoader, batch_bounds, shuffled_batches
from .device import autocast, pick_device, pick_precision
from .models import build_model
from .packed import seeded_models
from .progress import echo
from .provenance import environment, utc_now
from .step import setup, train_step


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(model_name: str, batch_size: int, data, device, steps: int, image_size: int, recipe: str,
               precision: str, members: int = 1) -> dict:
    """Steady-state img/s of the real training step (step.train_step, with the batches gathered on the device as
    the trainer gathers them) on device-resident data; with members > 1, of a cohort of that many seeds (img/s
    counts every member's images). No run folder is involved."""
    cfgs = [Config(model=model_name, batch_size=batch_size, image_size=image_size, recipe=recipe,
                   device=str(device), precision=precision, seed=42 + k) for k in range(members)]
    cfg, precision = cfgs[0], pick_precision(precision, device)
    everything = np.arange(len(data.train.labels))
    cohort, optimizer, scheduler, gens = setup(cfgs, seeded_models(cfgs, len(data.classes)), device,
                                               len(batch_bounds(len(everything), batch_size)))
    train = DeviceLoader.upload(data.train.images, data.train.labels, device, batch_size)
    orders = [torch.Generator().manual_seed(c.seed) for c in cfgs]
    cohort.model.train()

    def batches():
        while True:
            yield from zip(*(shuffled_batches(everything, g, device, batch_size) for g in orders))

    def step(idx):
        idx = torch.cat(idx)
        train_step(cohort, optimizer, scheduler, train.images.index_select(0, idx), train.labels.index_select(0, idx),
                   gens, cfg, precision)

    it = batches()
    t0 = time.perf_counter()
    step(next(it))  # first step: compilation / cuDNN autotuning
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(3):
        step(next(it))
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(next(it))
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"model": model_name, "batch_size": batch_size, "precision": precision, "members": members,
            "img_per_s": steps * batch_size * members / seconds, "step_s": seconds / steps, "first_step_s": first,
            "compile": cfg.compile}


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
        for model_name in ("basic", "regularized"):
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
    n = result["naive"]
    t.add_row(f"naive pipeline, regularized, batch 16, {n['precision']}", f"{n['img_per_s']:,.1f} img/s")
    t.add_row("speed-up over naive (batch 16, same precision)", f"{result['speedup_vs_naive']:.2f}x")
    if "cohort" in result:
        c = result["cohort"]
        t.add_row(f"cohort of {c['members']} seeds, one step / one run's step", f"{c['cost_vs_one_run']:.2f}x")
        t.add_row(f"cohort of {c['members']} vs {c['members']} runs one after another",
                  f"{c['speedup_vs_sequential_runs']:.2f}x faster")
    if "experiment" in result:
        t.add_row("whole experiment (decode excluded)", f"{result['experiment']['total_seconds']:.1f} s")
    Console().print(t)


def main(args) -> int:
    device = pick_device(args.device)
    size = args.image_size
    quiet = getattr(args, "quiet", False)
    chosen = pick_precision("auto", device)
    result = {"device": device.type, "data": args.data, "image_size": size, "date": time.strftime("%Y-%m-%d"),
              "provenance": {"started": utc_now(), **environment(device, chosen)}}

    with tempfile.TemporaryDirectory(prefix="reglab-bench-cache-") as cold_cache:
        t0 = time.perf_counter()
        load_data(args.data, size, show_progress=False, cache_dir=Path(cold_cache))
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = load_data(args.data, size, show_progress=False, cache_dir=Path(cold_cache))
        warm = time.perf_counter() - t0
    result["decode_cold_s"], result["cache_warm_s"] = cold, warm
    result["images"] = int(len(data.train.labels) + len(data.val.labels))
    echo(f"decode+cache (cold): {cold:.2f}s for {result['images']} images; warm load: {warm:.2f}s", quiet)

    result["throughput"], result["bf16_over_fp32"] = [], []
    for model_name in ("basic", "regularized"):
        for bs in (16, 512):
            pair = {}
            for precision in ("fp32", "bf16"):
                r = throughput(model_name, bs, data, device, args.steps, size, args.recipe, precision)
                result["throughput"].append(r)
                pair[precision] = r["img_per_s"]
                echo(f"throughput {model_name:12s} batch {bs:4d} {precision}: {r['img_per_s']:9.1f} img/s "
                     f"(first step {r['first_step_s']:.2f}s)", quiet)
            result["bf16_over_fp32"].append({"model": model_name, "batch_size": bs,
                                             "ratio": pair["bf16"] / pair["fp32"]})

    if args.cohort > 1:  # a cohort of K seeds against K single runs doing the same work, batch 16
        one = next(r for r in result["throughput"]
                   if (r["model"], r["batch_size"], r["precision"]) == ("regularized", 16, chosen))
        packed = throughput("regularized", 16, data, device, args.steps, size, args.recipe, chosen, args.cohort)
        result["cohort"] = {**packed, "single_step_s": one["step_s"],
                            "cost_vs_one_run": packed["step_s"] / one["step_s"],
                            "speedup_vs_sequential_runs": args.cohort * one["step_s"] / packed["step_s"]}
        echo(f"cohort of {args.cohort} (regularized, batch 16, {chosen}): a step costs "
             f"{result['cohort']['cost_vs_one_run']:.2f}x one run's; {args.cohort} seeds train "
             f"{result['cohort']['speedup_vs_sequential_runs']:.2f}x faster than one after another", quiet)

    result["naive"] = naive_epoch("regularized", 16, data, device, size, args.naive_batches or None, chosen)
    fast16 = next(r for r in result["throughput"]
                  if (r["model"], r["batch_size"], r["precision"]) == ("regularized", 16, chosen))
    result["speedup_vs_naive"] = fast16["img_per_s"] / result["naive"]["img_per_s"]
    echo(f"naive pipeline regularized batch 16 ({chosen}): {result['naive']['img_per_s']:.1f} img/s "
         f"({result['naive']['workers']} workers); reglab is {result['speedup_vs_naive']:.2f}x faster", quiet)

    if not args.skip_experiment:
        result["experiment"] = whole_experiment(args.data, device, size, args.epochs, args.recipe, data)
        e = result["experiment"]
        echo(f"whole experiment (basic + regularized, {args.recipe} recipe, {chosen}): {e['total_seconds']:.1f}s; "
             f"basic {e['basic']['restored_val_accuracy']:.4f} in {e['basic']['epochs_run']} epochs, "
             f"regularized {e['regularized']['restored_val_accuracy']:.4f} in {e['regularized']['epochs_run']} "
             "epochs", quiet)
    if not quiet:
        print_table(result)
    if args.json:
        atomic.write_json(args.json, result)
        echo(f"wrote {args.json}", quiet)
    return 0
