"""bench/gpu_check.sh, the one-call GPU check, run whole on the CPU (--cpu-smoke) so it cannot reach a GPU with a
bug in it; its budget and its compare-sizing rule checked without timing anything."""
import importlib.util
import json
import os
import re
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
FILES = {"summary.json", "smoke.json", "bench.json", "profile.txt", "compare.json", "report.md", "gpu_check.log"}
SMOKE_CHECKS = ["train fp32", "train --seeds 3 --pack 3 fp32", "train bf16", "train --seeds 3 --pack 3 bf16",
                "resume: uninterrupted reference", "resume: SIGTERM stops the run", "resume: --resume finishes",
                "resume: same result as uninterrupted", "ablate --jobs 2", "predict", "export onnx",
                "onnx matches predict", "report", "report renders", "train --compile"]


def _driver():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(out: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *flags], env={**os.environ, "OUT": str(out)}, capture_output=True,
                          text=True, timeout=1800)


def test_cpu_smoke_runs_every_stage_and_leaves_well_formed_files(mini, tmp_path):
    """The whole script at 32 px: every stage ok, at most 8 files with names a device machine sends back, each
    well-formed. The budget is far larger than the work, so no outcome depends on how fast this machine is."""
    out = tmp_path / "out"
    done = _check(out, "--cpu-smoke", "--data", str(mini), "--budget", "1500")
    assert done.returncode == 0, done.stderr
    names = {p.name for p in out.iterdir()}
    assert names == FILES and len(names) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "cpu-smoke" and summary["budget_s"] == 1500 and summary["environment"]["torch"]
    assert [(s["stage"], s["status"]) for s in summary["stages"]] == [("smoke", "ok"), ("bench", "ok"),
                                                                      ("compare", "ok")]

    smoke = json.loads((out / "smoke.json").read_text())
    checks = {c["check"]: c for c in smoke["checks"]}
    assert list(checks) == SMOKE_CHECKS and smoke["passed"] is True
    skipped = {name for name, c in checks.items() if c["status"] == "skipped"}
    assert skipped == {"train bf16", "train --seeds 3 --pack 3 bf16", "train --compile"}  # --cpu-smoke: fp32
    assert all(checks[name]["reason"] for name in skipped)
    assert all(c["status"] == "pass" for name, c in checks.items() if name not in skipped)
    same = checks["resume: same result as uninterrupted"]
    assert same["identical"] is True and same["best_weights_max_abs_diff"] == 0  # exact resume on CPU
    onnx = checks["onnx matches predict"]
    assert onnx["images"] == 60 and onnx["max_abs_diff"] <= onnx["tolerance"] and onnx["same_top_class_share"] >= .98

    bench = json.loads((out / "bench.json").read_text())
    assert bench["complete"] is True and bench["image_size"] == 32
    assert {(c["model"], c["members"]) for c in bench["cohorts"]} == {(m, k) for m in ("basic", "regularized")
                                                                      for k in (1, 2)}
    assert (out / "profile.txt").read_text().startswith("torch.profiler")

    compare = json.loads((out / "compare.json").read_text())
    assert compare["status"] == "done" and compare["rc"] == 0 and "early stopping" in compare["rule"]
    plan = compare["plan"]
    assert (plan["seeds"], plan["epochs"], plan["capped"]) == (2, 2, False)  # --cpu-smoke's most, which fit
    for model in ("basic", "regularized"):
        m = compare["models"][model]
        assert m["finished"] == 2 and len(m["epochs_run"]) == 2 and all(1 <= e <= 2 for e in m["epochs_run"])
        ci = m["restored_best_accuracy"]
        assert ci["n"] == 2 and 0 <= ci["lo"] <= ci["mean"] <= ci["hi"] <= 1
    assert (out / "report.md").read_text().strip()
    log = (out / "gpu_check.log").read_text()
    assert "smoke: ok" in log and "compare: ok" in log


def test_a_budget_too_small_for_any_stage_runs_none(mini, tmp_path):
    """Every stage that cannot fit its minimum is recorded as skipped, and nothing of it runs or is written."""
    out = tmp_path / "out"
    done = _check(out, "--cpu-smoke", "--data", str(mini), "--budget", "5")
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == {"summary.json", "gpu_check.log"}
    stages = json.loads((out / "summary.json").read_text())["stages"]
    assert [(s["stage"], s["status"]) for s in stages] == [("smoke", "skipped"), ("bench", "skipped"),
                                                           ("compare", "skipped")]
    assert all("needs at least" in s["reason"] for s in stages)


def test_compare_that_cannot_fit_is_skipped_not_run(mini, tmp_path):
    """With a measured epoch far longer than the time left, compare says why in compare.json and trains nothing."""
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    point = {"step_s": 10.0, "steps_per_epoch": 8, "eval_s": 1.0}
    cohorts = [{"model": m, "members": k, **point} for m in ("basic", "regularized") for k in (1, 2)]
    (out / "bench.json").write_text(json.dumps({"cohorts": cohorts}))
    code = _driver().main(["compare", "--out", str(out), "--work", str(work), "--data", str(mini), "--size", "32",
                           "--device", "cpu", "--until", str(time.time() + 60), "--min-epochs", "1"])
    assert code == 3 and not work.exists()
    compare = json.loads((out / "compare.json").read_text())
    assert compare["status"] == "skipped" and compare["plan"]["seeds"] == 0 and "rule" in compare


def test_plan_compare_prefers_seeds_then_caps_epochs():
    plan = _driver().plan_compare
    per_epoch = lambda n: 2.0 * n  # noqa: E731  (seconds for one epoch of n seeds of both models)
    whole = plan(1000, per_epoch, overhead_s=0, min_epochs=10)  # 5 seeds cost 12.5 s an epoch with the margin
    assert (whole["seeds"], whole["epochs"], whole["capped"]) == (5, 50, False)
    capped = plan(300, per_epoch, overhead_s=0, min_epochs=10)
    assert (capped["seeds"], capped["epochs"], capped["capped"]) == (5, 24, True)
    fewer = plan(100, per_epoch, overhead_s=0, min_epochs=10)  # 5 seeds fit 8 epochs: 4 seeds fit 10
    assert (fewer["seeds"], fewer["epochs"]) == (4, 10)
    assert plan(100, per_epoch, overhead_s=95, min_epochs=10)["seeds"] == 0


def test_epoch_estimate_never_takes_a_smaller_cohort_than_asked():
    """Packed, n seeds cost what the smallest measured cohort of at least n costs (a cohort costs more as it
    grows), the largest scaled up beyond it; unpacked, n single runs; a bench stopped before its cohort curve
    still sizes compare from its batch-16 step."""
    seconds = _driver().epoch_seconds
    curve = [{"model": "basic", "members": k, "step_s": 0.01 * (1 + k / 10), "steps_per_epoch": 100, "eval_s": 0.5}
             for k in (1, 2, 5, 10)]
    bench = {"cohorts": curve}
    epoch = {k: c["step_s"] * 100 + 0.5 for k, c in zip((1, 2, 5, 10), curve)}
    assert seconds(bench, "basic", 5, packed=True) == epoch[5]
    assert seconds(bench, "basic", 4, packed=True) == epoch[5]
    assert seconds(bench, "basic", 20, packed=True) == 2 * epoch[10]
    assert seconds(bench, "basic", 3, packed=False) == 3 * epoch[1]
    cut = {"train_images": 120, "throughput": [{"model": "basic", "batch_size": 16, "step_s": 0.5}]}
    assert seconds(cut, "basic", 2, packed=True) == 2 * 0.5 * 8


def test_bad_input_stops_the_script_before_anything_is_written(mini, tmp_path):
    for flags in (["--budget", "soon"], ["--data", str(tmp_path / "missing")], ["--fast"]):
        out = tmp_path / "out"
        done = _check(out, "--cpu-smoke", "--data", str(mini), *flags)
        assert done.returncode == 2 and done.stderr.startswith("gpu_check.sh: ") and not out.exists(), flags
