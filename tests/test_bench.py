"""The bench is smoke-tested on CPU with tiny sizes; its timings are never asserted."""
import json

from reglab.cli import main


def test_bench_runs_end_to_end_and_writes_json(mini, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--data", str(mini), "--device", "cpu", "--image-size", "32", "--steps", "2",
                 "--epochs", "1", "--naive-batches", "2", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["images"] == 180
    assert {(r["model"], r["batch_size"], r["precision"]) for r in result["throughput"]} == {
        (m, b, p) for m in ("basic", "regularized") for b in (16, 512) for p in ("fp32", "bf16")}
    assert len(result["bf16_over_fp32"]) == 4 and all(r["ratio"] > 0 for r in result["bf16_over_fp32"])
    assert all(r["img_per_s"] > 0 for r in result["throughput"])
    assert result["naive"]["images"] == 32 and result["speedup_vs_naive"] > 0
    assert result["experiment"]["basic"]["epochs_run"] == 1 and result["experiment"]["total_seconds"] > 0
    assert "torch" in result["provenance"]["software"] and result["naive"]["precision"] in ("fp32", "bf16")
    assert "speed-up over naive" in capsys.readouterr().out


def test_throughput_times_the_step_without_run_folders(mini, monkeypatch):
    """bench.throughput builds a cohort and its optimizer and times step.train_step: no Trainer, no folders."""
    import tempfile

    import torch

    from reglab import benchmark as bench
    from reglab.data import load_data

    data = load_data(str(mini), 16, show_progress=False)

    def no_folders(*a, **k):
        raise AssertionError("throughput made a temporary folder")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", no_folders)
    monkeypatch.setattr(tempfile, "mkdtemp", no_folders)
    r = bench.throughput("regularized", 8, data, torch.device("cpu"), 2, 16, "seed", "fp32", members=2)
    assert r["members"] == 2 and r["precision"] == "fp32" and r["img_per_s"] > 0 and r["step_s"] > 0


def test_bench_lists_the_cohort_curve_and_a_profile(mini, tmp_path):
    """--batch-sizes, --precisions, --cohorts and --profile: exactly the measurements asked for, and the JSON says
    the bench is complete (it is rewritten after every section, `complete` last)."""
    out, table = tmp_path / "bench.json", tmp_path / "profile.txt"
    assert main(["bench", "--data", str(mini), "--device", "cpu", "--image-size", "16", "--steps", "1",
                 "--batch-sizes", "8", "--precisions", "fp32", "--cohorts", "2", "--profile", str(table),
                 "--skip-experiment", "--naive-batches", "1", "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["complete"] is True and "experiment" not in result and result["bf16_over_fp32"] == []
    assert {(r["model"], r["batch_size"], r["precision"]) for r in result["throughput"]} == {
        ("basic", 8, "fp32"), ("regularized", 8, "fp32")}
    assert [(c["model"], c["members"]) for c in result["cohorts"]] == [
        ("basic", 1), ("basic", 2), ("regularized", 1), ("regularized", 2)]
    for c in result["cohorts"]:
        assert c["batch_size"] == 16 and c["img_per_s"] == c["members"] * c["img_per_s_per_member"]
        assert c["eval_s"] > 0 and c["steps_per_epoch"] == 8  # 120 training images
        assert c["cost_vs_one_run"] == 1.0 if c["members"] == 1 else c["cost_vs_one_run"] > 0
    assert {w["model"] for w in result["checkpoint_write"]} == {"basic", "regularized"}
    assert all(w["bytes"] > 0 for w in result["checkpoint_write"])
    p = result["profile"]
    assert p["batch_size"] == 16 and p["top"]["rows"] and p["cpu_time_s"] > 0
    assert table.read_text().startswith("torch.profiler: one training step of regularized")


def test_bench_refuses_bad_lists_before_any_work(tmp_path, capsys):
    for flags in (["--precisions", "fp16"], ["--batch-sizes", "16,0"], ["--cohorts", "x"]):
        out = tmp_path / "bench.json"
        try:
            code = main(["bench", "--data", str(tmp_path / "missing"), *flags, "--json", str(out)])
        except SystemExit as e:  # argparse refuses a malformed list itself
            code = e.code
        assert code == 2 and not out.exists(), flags
        assert capsys.readouterr().err.strip().count("\n") <= 1
