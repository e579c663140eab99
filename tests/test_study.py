"""compare and ablate end to end on the mini dataset (CPU, tiny images, 2 epochs, 2 seeds)."""
import json
import re
import shutil

import pytest

from reglab.cli import main
from reglab.reports.common import PCT
from reglab.rundir import find_runs

TINY = ["--image-size", "32", "--epochs", "2", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def compared(mini, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    assert main(["compare", "--data", str(mini), "--seeds", "2", "--out", str(out), *TINY]) == 0
    return out


def test_compare_writes_runs_and_both_reports(compared):
    runs = find_runs(compared)
    assert sorted((r.variant, r.seed) for r in runs) == [("basic", 42), ("basic", 43), ("regularized", 42),
                                                         ("regularized", 43)]
    md = (compared / "report.md").read_text()
    html = (compared / "report.html").read_text()
    for img in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (compared / img).exists(), img
    assert "data:image/png;base64," in html and "<table" in html
    # every restored val accuracy in the report comes from the run folders' summary.json
    for r in runs:
        assert PCT(r.summary.restored_val_accuracy) in md


def test_compare_rerun_reuses_finished_runs(compared, mini, capsys):
    before = {p: p.stat().st_mtime_ns for p in compared.glob("*/seed-*/summary.json")}
    loud = [a for a in TINY if a != "--quiet"]
    assert main(["compare", "--data", str(mini), "--seeds", "2", "--out", str(compared), *loud]) == 0
    assert "reusing 4 finished run(s)" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in compared.glob("*/seed-*/summary.json")}


def test_compare_refuses_a_changed_configuration(compared, mini, capsys):
    assert main(["compare", "--data", str(mini), "--seeds", "1", "--out", str(compared),
                 "--image-size", "32", "--epochs", "3", "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "another configuration" in err and err.count("\n") == 1


def test_compare_resumes_an_interrupted_run(compared, mini, tmp_path, capsys):
    copy = tmp_path / "study"
    shutil.copytree(compared, copy)
    victim = copy / "regularized" / "seed-43"
    (victim / "summary.json").unlink()  # as if killed after its last epoch's checkpoint
    assert main(["compare", "--data", str(mini), "--seeds", "2", "--out", str(copy), *TINY]) == 0
    assert json.loads((victim / "summary.json").read_text())["status"] == "finished"


def test_report_rerenders_from_run_folders_alone(compared, tmp_path, capsys):
    copy = tmp_path / "copied"
    shutil.copytree(compared, copy)
    (copy / "report.md").unlink()
    (copy / "report.html").unlink()
    assert main(["report", str(copy)]) == 0
    assert (copy / "report.md").read_text() == (compared / "report.md").read_text()


@pytest.mark.parametrize("executor,jobs", [("local", 2), ("ray", 1)])
def test_ablate_with_both_executors(mini, tmp_path, executor, jobs):
    out = tmp_path / executor
    variants = "full,no-dropout,none,smoothing"
    assert main(["ablate", "--data", str(mini), "--seeds", "2", "--out", str(out), "--variants", variants,
                 "--executor", executor, "--jobs", str(jobs), *TINY]) == 0
    runs = find_runs(out)
    assert sorted({r.variant for r in runs}) == ["full", "no-dropout", "none", "smoothing"]
    assert len(runs) == 8
    smooth = next(r for r in runs if r.variant == "smoothing")
    assert smooth.config["smoothing"] == 0.1 and smooth.config["batchnorm"] is True
    md = (out / "report.md").read_text()
    assert "no-dropout" in md and "Holm" in md


def test_interrupted_study_says_to_rerun_the_same_command(mini, tmp_path, monkeypatch, capsys):
    import signal

    import reglab.run
    from reglab.run import Interrupted

    def killed(cfgs, outs, **kw):
        raise Interrupted(signal.SIGTERM, 1, outs[0])

    monkeypatch.setattr(reglab.run, "train_cohort", killed)
    code = main(["compare", "--data", str(mini), "--out", str(tmp_path / "s"), *TINY])
    err = capsys.readouterr().err
    assert code == 128 + signal.SIGTERM
    assert err.count("\n") == 1 and "rerun the same command" in err and "reglab" in err


def test_the_ray_executor_never_joins_a_cluster_it_was_not_given(monkeypatch):
    """Ray's own default for no address joins whatever /tmp/ray/ray_current_cluster names, which a cluster long
    gone leaves behind (CI waited 14 minutes on one): with no address reglab starts a new local instance."""
    from reglab.executors import _cluster
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert _cluster(None) == {"address": "local", "_node_ip_address": "127.0.0.1"}
    assert _cluster("10.0.0.5:6379") == {"address": "10.0.0.5:6379"}
    assert _cluster("auto") == {"address": "auto"}
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.7:6379")
    assert _cluster(None) == {"address": None}  # Ray reads RAY_ADDRESS itself
