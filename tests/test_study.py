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


# ------------------------------------------------------------------------------------------ lost workers (issue 20)


def test_retries_are_bounded_and_checked():
    from reglab.errors import UserError
    from reglab.executors import Executor

    assert Executor("ray").max_retries == 2 and Executor("local", jobs=2).max_retries == 0
    assert Executor("local", jobs=2, retries=3).max_retries == 3 and Executor("ray", retries=0).max_retries == 0
    for bad in (-1, True, 1.5):
        with pytest.raises(UserError, match="invalid retries"):
            Executor("ray", retries=bad)
    with pytest.raises(UserError, match="--jobs 1"):  # a run in this process cannot outlive its own death
        Executor("local", retries=1)
    assert main(["compare", "--retries", "-1"]) == 2


def test_a_lost_unit_continues_what_its_folders_hold(tmp_path):
    import torch

    from reglab.executors import Job, Unit, _retry

    checkpointed, fresh = tmp_path / "regularized" / "seed-42", tmp_path / "regularized" / "seed-43"
    checkpointed.mkdir(parents=True)
    fresh.mkdir(parents=True)
    torch.save({"epoch": 3}, checkpointed / "last.ckpt")
    unit = Unit((Job("regularized", None, checkpointed), Job("regularized", None, fresh)))
    retry = _retry(unit, "abcd1234 (host)", "NodeDiedError", 1, 2)
    assert [j.resume for j in retry.unit.jobs] == [True, False] and retry.after == {checkpointed: 3, fresh: None}
    assert retry.line("lost its worker on node abcd1234 (host) (NodeDiedError)") == (
        f"reglab: runs {checkpointed.parent} (seeds 42, 43) lost its worker on node abcd1234 (host) (NodeDiedError); "
        "retry 1 of 2, seed 42 resuming after epoch 3, seed 43 starting again (no epoch had finished)")


def test_a_node_that_cannot_see_the_shared_folders_refuses_in_one_line(tmp_path):
    from dataclasses import replace

    from test_cohort import make_colours

    from reglab.data import find_data
    from reglab.errors import UserError
    from reglab.executors import Shared

    data = make_colours(tmp_path / "data", per_class=2, val=1)
    files = find_data(str(data), show_progress=False)
    marker = tmp_path / "study" / "study.json"
    marker.parent.mkdir()
    marker.write_text(json.dumps({"nonce": "cafe"}))
    shared = Shared(marker, "cafe", "colours", data, files.identity())
    assert shared.check("n1").name == "colours"
    for seen, words in ((replace(shared, nonce="beef"), "is not the one the driver just wrote"),
                        (replace(shared, marker=tmp_path / "elsewhere" / "study.json"), "no such file"),
                        (replace(shared, root=tmp_path / "nodata"), f"cannot see the data folder {tmp_path}")):
        with pytest.raises(UserError, match="node n1 cannot see") as e:
            seen.check("n1")
        assert words in str(e.value) and "\n" not in str(e.value)
    (data / "train" / "red" / "0.png").unlink()
    with pytest.raises(UserError, match="node n1 sees other data"):
        shared.check("n1")


def test_report_lists_retried_runs(compared, tmp_path):
    from reglab.executors import Job, Retry, Unit
    from reglab.study import record_retry

    copy = tmp_path / "study"
    shutil.copytree(compared, copy)
    lost = Unit((Job("basic", None, copy / "basic" / "seed-42", resume=True), Job("basic", None, copy / "basic" /
                                                                                  "seed-43", resume=True)))
    # seed 43 had finished when the worker was lost: it is not retried
    record_retry(copy, Retry(lost, "abcd1234 (host)", "NodeDiedError", 1, 2, {copy / "basic" / "seed-42": 2}))
    recorded = json.loads((copy / "study.json").read_text())["retried"]
    assert recorded == {"basic/seed-42": [{"node": "abcd1234 (host)", "reason": "NodeDiedError", "after_epoch": 2}]}
    assert main(["report", str(copy)]) == 0
    md = (copy / "report.md").read_text()
    assert "Retried runs" in md and "`basic/seed-42`: retried 1 time: lost on node abcd1234 (host) (NodeDiedError), " \
        "resumed after epoch 2" in md


def test_a_killed_local_worker_is_retried_from_its_last_epoch(tmp_path):
    """--jobs 2 --retries 1: a worker killed after its second epoch (as by the OOM killer) is sent again and resumes;
    the study finishes with every run. About 80 s on the shared 2-core machine (spawned workers, the report)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from test_cohort import make_colours

    data, out = make_colours(tmp_path / "data"), tmp_path / "study"
    study = subprocess.Popen([sys.executable, "-m", "reglab.cli", "compare", "--data", str(data), "--out", str(out),
                              "--jobs", "2", "--retries", "1", "--image-size", "16", "--epochs", "6", "--patience",
                              "0", "--device", "cpu", "--quiet"], stderr=subprocess.PIPE, text=True)
    try:
        deadline, victim = time.time() + 180, None
        while victim is None and time.time() < deadline:
            victim = next((m.parent for m in out.glob("*/seed-42/metrics.csv") if len(m.read_text().splitlines()) > 2),
                          None)
            time.sleep(0.01)
        assert victim, "no run finished two epochs in time"
        os.kill(json.loads((victim / ".reglab.lock").read_text())["pid"], signal.SIGKILL)
        _, err = study.communicate(timeout=180)
    finally:
        if study.poll() is None:
            study.kill()
            study.communicate()
    assert study.returncode == 0, err
    line = re.search(rf"reglab: run {re.escape(str(victim))} died \(killed by SIGKILL; out of memory\?\); "
                     r"retry 1 of 1, resuming after epoch (\d)\n", err)
    assert line and err.count("died") == 1, err
    epochs = [int(r.split(",")[0]) for r in (victim / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == [1, 2, 3, 4, 5, 6]
    assert json.loads((victim / "summary.json").read_text())["status"] == "finished"
    retried = json.loads((out / "study.json").read_text())["retried"]
    assert retried == {f"{victim.parent.name}/seed-42": [{"node": retried[f"{victim.parent.name}/seed-42"][0]["node"],
                                                          "reason": "killed by SIGKILL",
                                                          "after_epoch": int(line.group(1))}]}
