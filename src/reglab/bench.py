"""`reglab bench`: one run that measures the pipeline and prints a table (and JSON with provenance).

Measures, on the chosen device:
  - decode-and-cache of the dataset (cold: an empty cache directory) and the warm cache load;
  - steady-state training throughput (img/s) of basic and regularized at batch 16 and 512, after warm-up
    (compilation time, when --compile is on, is reported separately);
  - the wall time of the notebook's whole experiment (compare: both models, seed recipe, early stopping),
    excluding the one-time decode;
  - a naive baseline in the same run: a Dataset that opens and decodes every image with Pillow on every
    access, per-image CPU augmentation, a DataLoader with workers = cores and pinned memory, training the
    same model at the same batch size; and the ratio of the two.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import atomic
from .config import resolve
from .data import load_data
from .data.augment import augment
from .data.decode import decode_image
from .models import build_model
from .train import Trainer, _autocast, device_name, pick_device, software


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(model_name: str, batch_size: int, data, device, steps: int, image_size: int, recipe: str) -> dict:
    """Steady-state img/s of the real training step (Trainer.train_step) on device-resident data."""
    cfg = resolve(flag_values={"model": model_name, "batch_size": batch_size, "image_size": image_size,
                               "recipe": recipe, "device": device.type})
    with tempfile.TemporaryDirectory(prefix="reglab-bench-") as tmp:
        trainer = Trainer(cfg, data, Path(tmp), device, quiet=True)
    trainer.model.train()

    def batches():
        while True:
            yield from trainer.train_loader.epoch(trainer.order_gen)

    it = batches()
    t0 = time.perf_counter()
    trainer.train_step(*next(it))  # first step: compilation / cuDNN autotuning
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(3):
        trainer.train_step(*next(it))
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(*next(it))
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"model": model_name, "batch_size": batch_size, "img_per_s": steps * batch_size / seconds,
            "first_step_s": first, "compile": cfg.compile}


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


def naive_epoch(model_name: str, batch_size: int, data, device, image_size: int, max_batches: int | None) -> dict:
    cfg = resolve(flag_values={"model": model_name, "batch_size": batch_size, "image_size": image_size})
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
        with _autocast(cfg, device):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        images += x.shape[0]
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"model": model_name, "batch_size": batch_size, "img_per_s": images / seconds, "images": images,
            "seconds": seconds, "workers": workers}


def whole_experiment(data_spec: str, device, image_size: int, epochs: int, recipe: str, data) -> dict:
    """The notebook's experiment (basic then regularized, early stopping), decode excluded."""
    from .train import train

    results = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="reglab-bench-") as tmp:
        for model_name in ("basic", "regularized"):
            cfg = resolve(flag_values={"model": model_name, "data": data_spec, "image_size": image_size,
                                       "epochs": epochs, "recipe": recipe, "device": device.type})
            s = train(cfg, Path(tmp) / model_name, data=data, quiet=True)
            results[model_name] = {k: s[k] for k in ("epochs_run", "best_epoch", "restored_val_accuracy",
                                                       "val_accuracy", "wall_seconds", "train_images_per_second")}
    results["total_seconds"] = time.perf_counter() - t0
    return results


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"reglab bench on {result['device_name']} ({result['data']}, {result['image_size']}px)")
    t.add_column("measurement")
    t.add_column("value", justify="right")
    t.add_row("decode + cache, cold", f"{result['decode_cold_s']:.2f} s ({result['images']} images)")
    t.add_row("cache load, warm", f"{result['cache_warm_s']:.2f} s")
    for r in result["throughput"]:
        t.add_row(f"train {r['model']}, batch {r['batch_size']}", f"{r['img_per_s']:,.0f} img/s")
    t.add_row("naive pipeline, regularized, batch 16", f"{result['naive']['img_per_s']:,.0f} img/s")
    t.add_row("speed-up over naive (batch 16)", f"{result['speedup_vs_naive']:.2f}x")
    if "experiment" in result:
        t.add_row("whole experiment (decode excluded)", f"{result['experiment']['total_seconds']:.1f} s")
    Console().print(t)


def main(args) -> int:
    device = pick_device(args.device)
    size = args.image_size
    result = {"device": device.type, "device_name": device_name(device), "software": software(),
              "commit": git_commit(), "date": time.strftime("%Y-%m-%d"), "data": args.data, "image_size": size}

    with tempfile.TemporaryDirectory(prefix="reglab-bench-cache-") as cold_cache:
        t0 = time.perf_counter()
        load_data(args.data, size, show_progress=False, cache_dir=Path(cold_cache))
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = load_data(args.data, size, show_progress=False, cache_dir=Path(cold_cache))
        warm = time.perf_counter() - t0
    result["decode_cold_s"], result["cache_warm_s"] = cold, warm
    result["images"] = int(len(data.train.labels) + len(data.val.labels))
    print(f"decode+cache (cold): {cold:.2f}s for {result['images']} images; warm load: {warm:.2f}s", flush=True)

    result["throughput"] = []
    for model_name in ("basic", "regularized"):
        for bs in (16, 512):
            r = throughput(model_name, bs, data, device, args.steps, size, args.recipe)
            result["throughput"].append(r)
            print(f"throughput {model_name:12s} batch {bs:4d}: {r['img_per_s']:9.1f} img/s "
                  f"(first step {r['first_step_s']:.2f}s)", flush=True)

    result["naive"] = naive_epoch("regularized", 16, data, device, size, args.naive_batches or None)
    fast16 = next(r for r in result["throughput"] if r["model"] == "regularized" and r["batch_size"] == 16)
    result["speedup_vs_naive"] = fast16["img_per_s"] / result["naive"]["img_per_s"]
    print(f"naive pipeline regularized batch 16: {result['naive']['img_per_s']:.1f} img/s "
          f"({result['naive']['workers']} workers); reglab is {result['speedup_vs_naive']:.2f}x faster", flush=True)

    if not args.skip_experiment:
        result["experiment"] = whole_experiment(args.data, device, size, args.epochs, args.recipe, data)
        e = result["experiment"]
        print(f"whole experiment (basic + regularized, {args.recipe} recipe): {e['total_seconds']:.1f}s; "
              f"basic {e['basic']['restored_val_accuracy']:.4f} in {e['basic']['epochs_run']} epochs, "
              f"regularized {e['regularized']['restored_val_accuracy']:.4f} in {e['regularized']['epochs_run']} epochs",
              flush=True)
    print_table(result)
    if args.json:
        atomic.write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
