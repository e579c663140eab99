"""The driver of bench/gpu_check.sh: one subcommand per stage, each writing its results into OUT as it goes.

    python bench/gpu_check.py env     --out OUT --mode MODE --budget S          summary.json: the machine
    python bench/gpu_check.py record  --out OUT --stage NAME --status S ...     summary.json: one stage's outcome
    python bench/gpu_check.py smoke   --out OUT --work DIR --data D --size PX --device DEV --until T
    python bench/gpu_check.py bench   --out OUT --data D --size PX --device DEV --batch-sizes .. --cohorts ..
    python bench/gpu_check.py compare --out OUT --work DIR --data D --size PX --device DEV --until T

Every reglab command runs as its own process (`python -m reglab.cli`), so a crash is one failed check, not the end
of the call. `--until` is the stage's deadline (Unix seconds): the driver fits its work before it, and the
script's `timeout` is the backstop. Files in OUT (at most 8 come back from a device machine): summary.json,
smoke.json, bench.json, profile.txt, compare.json, report.md (and the script's gpu_check.log).

compare sizes itself by one stated rule (`plan_compare`, written into compare.json with the estimate behind it).
Exit codes: 0 every check passed / the stage ran, 1 a check or the stage failed, 3 compare cannot fit (recorded as
skipped), 124 compare ran out of its time.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from reglab import atomic  # light: `record` runs between stages and must not wait for torch to import

MODELS = ("basic", "regularized")
COHORT_BATCH = 16  # the batch of the bench's cohort curve and of the seed recipe
RECIPE_EPOCHS = 50  # the seed recipe's maximum; its early stopping usually ends a run well before
SAFETY = 1.25  # estimated seconds are multiplied by this before a plan is accepted
CANNOT_FIT = 3
TIMED_OUT = 124  # as `timeout` itself exits: the script records the stage as timed out
# the reference runs this experiment is compared with (README.md): restored-best val accuracy, and Keras 3 + JAX
REFERENCE = {"regularized": "79.2-79.8%", "basic": "61.6-64.9%", "keras_jax_h100_one_seed_s": 168}
GRACE_S = 3  # between SIGTERM and SIGKILL for a command past its time
ONNX_TOLERANCE = 5e-3  # probabilities: ONNX Runtime on the CPU against reglab predict on the device, fp32


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def reglab(*args: str) -> list[str]:
    return [sys.executable, "-m", "reglab.cli", *args]


def run_command(cmd: list[str], seconds: float) -> dict:
    """Run one command with a time limit; what it did, for a check (its stderr's tail says why it failed). Past
    the limit it gets SIGTERM (reglab then stops cleanly, its worker pools with it) and GRACE_S later SIGKILL."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        err, rc = proc.communicate(timeout=max(seconds, 1))[1], proc.returncode
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            err = proc.communicate(timeout=GRACE_S)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            err = proc.communicate()[1]
        rc = "timeout"
    return {"command": "reglab " + " ".join(cmd[3:]), "rc": rc, "seconds": round(time.monotonic() - t0, 2),
            "stderr_tail": err[-1500:]}


# ------------------------------------------------------------------------------------------ summary.json


def _update_summary(out: Path, **changes) -> dict:
    path = out / "summary.json"
    doc = json.loads(path.read_text()) if path.exists() else {"stages": []}
    doc.update(changes)
    atomic.write_json(path, doc)
    return doc


def cmd_env(a) -> int:
    import torch

    smi = shutil.which("nvidia-smi")
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cuda_available": torch.cuda.is_available(), "host": platform.node(), "cpus": os.cpu_count(),
           "nvidia_smi": subprocess.run([smi], capture_output=True, text=True).stdout if smi else None,
           "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    _update_summary(a.out, mode=a.mode, budget_s=a.budget, started=utc_now(), environment=env, stages=[])
    return 0


def cmd_record(a) -> int:
    stage = {"stage": a.stage, "status": a.status, "rc": a.rc, "seconds": a.seconds, "limit_s": a.limit,
             "reason": a.reason}
    path = a.out / "summary.json"
    stages = json.loads(path.read_text())["stages"] if path.exists() else []  # a failed `env` wrote nothing
    _update_summary(a.out, stages=stages + [stage], finished=utc_now())
    return 0


# ------------------------------------------------------------------------------------------ stage 1: smoke


class Checks:
    """smoke.json: one entry per check, rewritten after each, so a stage stopped part way keeps what it ran."""

    def __init__(self, out: Path, until: float, device: str):
        self.path, self.until, self.device, self.items = out / "smoke.json", until, device, []

    def left(self) -> float:
        return self.until - time.time()

    def add(self, name: str, passed: bool | None, **detail) -> bool:
        status = "skipped" if passed is None else "pass" if passed else "fail"
        self.items.append({"check": name, "status": status, **detail})
        atomic.write_json(self.path, {"device": self.device, "checks": self.items,
                                      "passed": all(c["status"] != "fail" for c in self.items)})
        return bool(passed)

    def command(self, name: str, cmd: list[str]) -> bool:
        if self.left() < GRACE_S + 3:
            return self.add(name, None, reason="no time left in the stage")
        r = run_command(cmd, self.left() - GRACE_S - 1)
        return self.add(name, r["rc"] == 0, **r)


def _metric_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def _weights_difference(a: Path, b: Path) -> float | None:
    """The largest absolute difference between two weight files (None: they hold different tensors)."""
    from safetensors.torch import load_file

    x, y = load_file(a), load_file(b)
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x) if set(x) == set(y) else None


def interrupted_then_resumed(checks: Checks, common: list[str], work: Path) -> None:
    """SIGTERM at the first epoch end (the test pause point holds the run there until the signal comes), then
    --resume; the result against an uninterrupted run of the same config."""
    full, cut = work / "resume-full", work / "resume-cut"
    if not checks.command("resume: uninterrupted reference", reglab("train", *common, "--out", str(full))):
        return
    if checks.left() < 5:
        checks.add("resume: SIGTERM stops the run", None, reason="no time left in the stage")
        return
    env = {**os.environ, "REGLAB_TEST_PAUSE_AT": "evaluate"}
    proc = subprocess.Popen(reglab("train", *common, "--out", str(cut)), stderr=subprocess.PIPE, text=True, env=env)
    said = []
    while not (said and said[-1].startswith("reglab-test: paused")) and (line := proc.stderr.readline()):
        said.append(line)  # until "reglab-test: paused at evaluate" (epoch 1 trained), or the run ended
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=max(checks.left() - 1, 1))
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = "timeout"
    err = "".join(said) + proc.stderr.read()
    if not checks.add("resume: SIGTERM stops the run", rc == 128 + signal.SIGTERM, rc=rc, stderr_tail=err[-1500:]):
        return
    if not checks.command("resume: --resume finishes", reglab("train", "--resume", str(cut), "--quiet")):
        return
    same_metrics = _metric_rows(cut / "metrics.csv") == _metric_rows(full / "metrics.csv")
    diff = _weights_difference(cut / "best.safetensors", full / "best.safetensors")
    # exact resume is a promise on CPU; on CUDA the check records how close it came
    checks.add("resume: same result as uninterrupted", (same_metrics and diff == 0) or checks.device != "cpu",
               metrics_equal=same_metrics, best_weights_max_abs_diff=diff, identical=same_metrics and diff == 0)


def onnx_against_predict(checks: Checks, run: Path, images: Path, work: Path) -> None:
    """`reglab predict`'s CSV against the exported ONNX model run by ONNX Runtime on the same images."""
    csv_path, onnx_path = work / "predict.csv", work / "model.onnx"
    if not checks.command("predict", reglab("predict", str(run), str(images), "--out", str(csv_path), "--quiet")):
        return
    if not checks.command("export onnx", reglab("export", str(run), "--format", "onnx", "--out", str(onnx_path),
                                                "--quiet")):
        return
    try:
        checks.add("onnx matches predict", **_onnx_against_csv(onnx_path, csv_path))
    except Exception as e:  # a bug or a missing package here is one failed check, not the end of the stage
        checks.add("onnx matches predict", False, error=f"{type(e).__name__}: {e}")


def _onnx_against_csv(onnx_path: Path, csv_path: Path) -> dict:
    import numpy as np
    import onnxruntime as ort

    from reglab.data.decode import decode_image
    from reglab.exported import read_metadata

    meta = read_metadata(onnx_path)
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = np.stack([decode_image(r["path"], int(meta["image_size"])) for r in rows])
    probs = session.run(None, {session.get_inputs()[0].name: batch})[0]
    folders = meta["class_folders"]  # what the CSV's class_k columns name
    index = {c: i for i, c in enumerate(folders)}
    ranks = sorted(int(k.split("_")[1]) for k in rows[0] if k.startswith("prob_"))
    diff = max(abs(float(r[f"prob_{k}"]) - float(p[index[r[f"class_{k}"]]])) for r, p in zip(rows, probs)
               for k in ranks)
    same_top = float(np.mean([folders[int(p.argmax())] == r["class_1"] for r, p in zip(rows, probs)]))
    return {"passed": diff <= ONNX_TOLERANCE and same_top >= 0.98, "images": len(rows), "max_abs_diff": diff,
            "same_top_class_share": same_top, "tolerance": ONNX_TOLERANCE}


def cmd_smoke(a) -> int:
    """Every CUDA path at tiny sizes: train single and packed in fp32 and bf16, SIGTERM and --resume, ablate
    --jobs 2, predict, export to ONNX checked with ONNX Runtime, report, --compile."""
    checks = Checks(a.out, a.until, a.device)
    tiny = ["--data", str(a.data), "--image-size", str(a.size), "--device", a.device, "--quiet"]
    one = [*tiny, "--epochs", str(a.epochs)]
    for precision in ("fp32", "bf16"):
        single, packed = f"train {precision}", f"train --seeds 3 --pack 3 {precision}"
        if precision not in a.precisions.split(","):
            for name in (single, packed):
                checks.add(name, None, reason=f"{precision} not asked for (--precisions {a.precisions})")
            continue
        checks.command(single, reglab("train", *one, "--precision", precision,
                                      "--out", str(a.work / f"train-{precision}")))
        checks.command(packed, reglab("train", *one, "--precision", precision, "--seeds", "3", "--pack", "3",
                                      "--out", str(a.work / f"pack-{precision}")))
    interrupted_then_resumed(checks, [*tiny, "--epochs", str(max(a.epochs, 2)), "--patience", "0"], a.work)
    checks.command("ablate --jobs 2", reglab("ablate", *one, "--variants", "full,basic", "--seeds", "1", "--jobs",
                                             "2", "--out", str(a.work / "ablate")))
    if (a.work / "train-fp32" / "summary.json").exists():
        onnx_against_predict(checks, a.work / "train-fp32", a.data / "val", a.work)
    else:
        checks.add("onnx matches predict", None, reason="train fp32 left no run to predict with")
    if checks.command("report", reglab("report", str(a.work / "ablate"), "--quiet")):
        report = a.work / "ablate" / "report.md"
        checks.add("report renders", report.exists() and report.stat().st_size > 0,
                   bytes=report.stat().st_size if report.exists() else 0)
    # last: compiling takes longest, and --compile is an option, not the default path
    if a.device == "cpu":
        checks.add("train --compile", None, reason="not on a CPU: torch.compile's C++ build takes minutes there")
    else:
        checks.command("train --compile", reglab("train", *one, "--compile", "--out", str(a.work / "compile")))
    return 0 if all(c["status"] != "fail" for c in checks.items) else 1


# ------------------------------------------------------------------------------------------ stage 2: bench


def cmd_bench(a) -> int:
    cmd = reglab("bench", "--data", str(a.data), "--image-size", str(a.size), "--device", a.device,
                 "--steps", str(a.steps), "--batch-sizes", a.batch_sizes, "--precisions", a.precisions,
                 "--cohorts", a.cohorts, "--naive-batches", str(a.naive_batches), "--skip-experiment",
                 "--profile", str(a.out / "profile.txt"), "--json", str(a.out / "bench.json"), "--quiet")
    return subprocess.run(cmd).returncode


# ------------------------------------------------------------------------------------------ stage 3: compare


def epoch_seconds(bench: dict, model: str, seeds: int, packed: bool) -> float:
    """Seconds for one epoch of `seeds` seeds of `model` (training steps and the val/ evaluation), from the
    cohort curve at batch 16. Packed: the smallest measured cohort at least that large (a cohort costs more as it
    grows), else the largest scaled up in proportion (packing never costs more than that); not packed: `seeds`
    single runs one after another. A bench stopped before its cohort curve: its batch-16 throughput, one seed
    after another, without the evaluation."""
    points = {p["members"]: p for p in bench.get("cohorts", []) if p["model"] == model}
    if not points:
        row = next(r for r in bench["throughput"] if (r["model"], r["batch_size"]) == (model, COHORT_BATCH))
        return seeds * row["step_s"] * math.ceil(bench["train_images"] / COHORT_BATCH)
    if not packed:
        one = points[1]
        return seeds * (one["step_s"] * one["steps_per_epoch"] + one["eval_s"])
    k = min((k for k in points if k >= seeds), default=max(points))
    p = points[k]
    return max(seeds / k, 1) * (p["step_s"] * p["steps_per_epoch"] + p["eval_s"])


def plan_compare(available_s: float, per_epoch, overhead_s: float, min_epochs: int, seeds: int = 5,
                 max_epochs: int = RECIPE_EPOCHS) -> dict:
    """The rule: the most seeds (from `seeds` down to 1) for which at least `min_epochs` epochs fit; with them,
    the recipe's own maximum and early stopping if every run reaching that maximum fits, else epochs capped at
    what fits. per_epoch(n) is the estimated seconds of one epoch of n seeds of both models; it is multiplied by
    SAFETY and `overhead_s` (start-up, data, final evaluation) is set aside. seeds 0: nothing fits."""
    for n in range(seeds, 0, -1):
        cost = SAFETY * per_epoch(n)
        epochs = min(max_epochs, int((available_s - overhead_s) // cost)) if cost > 0 else max_epochs
        if epochs >= min_epochs:
            return {"seeds": n, "epochs": epochs, "capped": epochs < max_epochs, "epoch_s_estimate": cost,
                    "estimate_s": overhead_s + epochs * cost}
    return {"seeds": 0, "epochs": 0, "capped": True, "epoch_s_estimate": SAFETY * per_epoch(1), "estimate_s": None}


def rule(seeds: int, min_epochs: int, max_epochs: int) -> str:
    """plan_compare's rule in words, with this call's numbers (compare.json states it)."""
    return (f"the most seeds ({seeds} down to 1) for which at least {min_epochs} epochs fit the time left; with them "
            f"{max_epochs} epochs (the recipe's maximum is {RECIPE_EPOCHS}) and the recipe's own early stopping if "
            f"every run reaching {max_epochs} epochs fits, else epochs capped at what fits. One epoch is estimated "
            "from bench.json's cohort curve at batch 16 (training steps and the val/ evaluation; a variant's seeds "
            f"packed on CUDA, one after another elsewhere) times {SAFETY}, plus a fixed overhead. Nothing fits: "
            "skipped, not run")


def summarise_study(folder: Path) -> dict:
    from reglab.rundir import read_summary
    from reglab.stats import mean_ci

    models = {}
    for model in MODELS:
        runs = [read_summary(p.parent) for p in sorted((folder / model).glob("seed-*/summary.json"))]
        done = [s for s in runs if s.finished]
        acc = [s.restored_val_accuracy for s in done]
        models[model] = {"runs": len(runs), "finished": len(done),
                         # mean and 95% Student t interval over seeds (one seed: its value, no interval)
                         "restored_best_accuracy": mean_ci(acc, bounds=(0, 1)) if len(acc) > 1 else
                         {"mean": acc[0] if acc else None, "n": len(acc)},
                         "accuracy_by_seed": {s.seed: s.restored_val_accuracy for s in done},
                         "epochs_run": [s.epochs_run for s in done], "best_epoch": [s.best_epoch for s in done],
                         "stopped_early": [s.stopped_early for s in done],
                         "wall_seconds": [s.wall_seconds for s in done], "cohort": [s.cohort for s in done]}
    return models


def cmd_compare(a) -> int:
    bench = json.loads((a.out / "bench.json").read_text()) if (a.out / "bench.json").exists() else {}
    path = a.out / "compare.json"
    doc = {"rule": rule(a.seeds, a.min_epochs, a.max_epochs), "reference": REFERENCE, "overhead_s": a.overhead}
    measured = {(r["model"], r["batch_size"]) for r in bench.get("throughput", [])}
    if not bench.get("cohorts") and not all((m, COHORT_BATCH) in measured for m in MODELS):
        atomic.write_json(path, {**doc, "status": "skipped", "reason": "bench.json has no batch-16 step time to "
                                                                        "size the experiment from"})
        return CANNOT_FIT
    packed = a.device != "cpu"  # --pack auto packs a variant's seeds on CUDA only
    available = a.until - time.time()
    plan = plan_compare(available, lambda n: sum(epoch_seconds(bench, m, n, packed) for m in MODELS), a.overhead,
                        a.min_epochs, a.seeds, a.max_epochs)
    doc.update(available_s=available, packed=packed, plan=plan)
    if plan["seeds"] == 0:
        atomic.write_json(path, {**doc, "status": "skipped", "reason": f"not even one seed of {a.min_epochs} epochs "
                                                                        "fits the time left"})
        return CANNOT_FIT
    study = a.work / "compare"
    cmd = reglab("compare", "--data", str(a.data), "--image-size", str(a.size), "--device", a.device, "--seeds",
                 str(plan["seeds"]), "--epochs", str(plan["epochs"]), "--recipe", "seed", "--selection-split", "0",
                 "--pack", "auto", "--out", str(study), "--quiet")
    atomic.write_json(path, {**doc, "status": "running", "command": "reglab " + " ".join(cmd[3:])})
    r = run_command(cmd, a.until - time.time() - GRACE_S)
    doc.update(status={0: "done", "timeout": "timeout"}.get(r["rc"], "failed"), **r)
    if study.exists():
        doc["models"] = summarise_study(study)
    atomic.write_json(path, doc)
    if (study / "report.md").exists():
        shutil.copyfile(study / "report.md", a.out / "report.md")
    return {0: 0, "timeout": TIMED_OUT}.get(r["rc"], 1)


# ------------------------------------------------------------------------------------------ command line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("env", "record", "smoke", "bench", "compare"):
        s = sub.add_parser(name)
        s.add_argument("--out", type=Path, required=True)
        if name == "env":
            s.add_argument("--mode", required=True)
            s.add_argument("--budget", type=float, required=True)
        elif name == "record":
            s.add_argument("--stage", required=True)
            s.add_argument("--status", required=True, choices=("ok", "failed", "timeout", "skipped"))
            s.add_argument("--rc", type=int)
            s.add_argument("--seconds", type=float)
            s.add_argument("--limit", type=float)
            s.add_argument("--reason")
        else:
            s.add_argument("--data", type=Path, required=True)
            s.add_argument("--size", type=int, required=True)
            s.add_argument("--device", required=True)
            s.add_argument("--work", type=Path)
            s.add_argument("--until", type=float)
            s.add_argument("--epochs", type=int, default=1)  # smoke
            s.add_argument("--precisions", default="fp32,bf16")  # smoke and bench
            s.add_argument("--steps", type=int, default=20)  # bench
            s.add_argument("--batch-sizes", default="16,128,512")
            s.add_argument("--cohorts", default="1,2,5,10,20")
            s.add_argument("--naive-batches", type=int, default=20)
            s.add_argument("--min-epochs", type=int, default=10)  # compare
            s.add_argument("--max-epochs", type=int, default=RECIPE_EPOCHS)
            s.add_argument("--seeds", type=int, default=5)
            s.add_argument("--overhead", type=float, default=30)
    a = p.parse_args(argv)
    return {"env": cmd_env, "record": cmd_record, "smoke": cmd_smoke, "bench": cmd_bench,
            "compare": cmd_compare}[a.command](a)


if __name__ == "__main__":
    sys.exit(main())
