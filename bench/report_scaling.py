"""What `reglab report` costs as a study grows (issue 20 §4): its time, peak memory and file reads on studies of
10, 50 and 200 real runs, each judged on a val set of full imagenette2 size (3,925 images).

    PYTHONPATH=src python bench/report_scaling.py [--runs 10,50,200] [--val 3925] [--work DIR]

The runs are real: a synthetic 10-class ImageFolder (16 px noise, 2 training images a class, `--val` val images)
trained by `reglab.compare` (basic and regularized, runs/2 seeds each, 1 epoch, seeds packed 10 to a network).
Each report is then rendered again in a fresh process, which measures its own wall time and peak RSS and counts
how often each file under the study is opened (a file read twice is a cost that grows with the study). Prints a
Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import reglab

MEASURE = r"""
import builtins, collections, io, json, os, resource, sys, time
study = os.path.realpath(sys.argv[1])
opened = collections.Counter()
def counted(real):
    def wrapper(file, *a, **k):
        if isinstance(file, (str, bytes, os.PathLike)):
            path = os.path.realpath(os.fsdecode(file))
            mode = a[0] if a else k.get("mode", "r")
            if path.startswith(study) and "r" in mode and "+" not in mode:
                opened[path] += 1
        return real(file, *a, **k)
    return wrapper
builtins.open = counted(builtins.open)
io.open = builtins.open
t0 = time.perf_counter()
import reglab
reglab.report(study, quiet=True)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "files_read": len(opened), "reads": sum(opened.values()),
                  "read_twice": sorted(p for p, n in opened.items() if n > 1)[:5]}))
"""


def make_data(root: Path, val: int, classes: int = 10) -> Path:
    rng = np.random.default_rng(0)
    val_per_class = [val // classes + (c < val % classes) for c in range(classes)]
    for split, per in (("train", [2] * classes), ("val", val_per_class)):
        for c, n in enumerate(per):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def measure(study: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(study)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="10,50,200", help="study sizes in runs (even numbers)")
    ap.add_argument("--val", type=int, default=3925, help="val images (imagenette2 has 3,925)")
    ap.add_argument("--work", default=None, help="where the data and studies go (default: a temporary folder)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="reglab-report-scaling-"))
    os.environ.setdefault("REGLAB_CACHE", str(work / "cache"))
    data = make_data(work / "data", args.val)
    rows = []
    for n in (int(x) for x in args.runs.split(",")):
        study = work / f"study-{n}"
        t0 = time.perf_counter()
        if not (study / "report.md").exists():
            reglab.compare(seeds=n // 2, out=study, data=str(data), image_size=16, epochs=1, device="cpu",
                           pack=min(10, n // 2), quiet=True)
        trained = time.perf_counter() - t0
        m = measure(study)
        rows.append((n, trained, m))
        print(f"{n} runs: report {m['seconds']:.1f} s, peak {m['peak_mib']:.0f} MiB, {m['files_read']} files "
              f"read {m['reads']} times (twice: {m['read_twice']}); training took {trained:.0f} s", flush=True)
    cpu = platform.processor() or platform.machine()
    print(f"\n{platform.node()} ({cpu}, {os.cpu_count()} cores), Python {platform.python_version()}, "
          f"reglab {reglab.__version__}, val images {args.val}\n")
    print("| runs | report time | peak memory | files read | reads | per run |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n, _, m in rows:
        print(f"| {n} | {m['seconds']:.1f} s | {m['peak_mib']:.0f} MiB | {m['files_read']} | {m['reads']} | "
              f"{m['seconds'] / n * 1000:.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
