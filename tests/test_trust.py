"""A result is never silently wrong, never silently lost, and every phase stops cleanly (issue 9).

Each test names the guarantee it checks; each fails without the mechanism behind it. Tiny synthetic trees,
image size 16, one or two epochs: the suite stays fast.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from reglab import lock
from reglab.cli import main
from reglab.data import load_data
from conftest import make_tree, one_line_error

pytestmark = pytest.mark.usefixtures("no_curve_plots")
TINY = ["--image-size", "16", "--epochs", "1", "--device", "cpu", "--quiet"]


@pytest.fixture
def data(tmp_path) -> Path:
    return make_tree(tmp_path / "data")


def train(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), "--model", "basic", *TINY, *extra])


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*args, env=None, **kw) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "reglab.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env, **kw)


# ------------------------------------------------------------------------------ 1. check first, touch last


@pytest.mark.parametrize("bad", [["--data", "/no/such/data"], ["--device", "cuda:7"], ["--image-size", "20"],
                                 ["--seed", "-1"], ["--config", "/no/such.yaml"]])
def test_overwrite_with_a_bad_input_leaves_the_finished_run_intact(data, tmp_path, capfd, bad):
    out = tmp_path / "run"
    assert train(data, out) == 0
    before = snapshot(out)
    capfd.readouterr()
    one_line_error(capfd, train(data, out, "--overwrite", *bad))
    assert snapshot(out) == before


@pytest.mark.parametrize("flags,needle", [
    (["--seed", "4294967296"], "seed"),
    (["--image-size", "2048"], "image_size"),
    (["--image-size", "4"], "multiple of 8"),
    (["--optimizer", "sgd", "--weight-decay", "0.1"], "weight_decay"),
    (["--warmup-epochs", "2"], "warmup_epochs"),
    (["--model", "basic", "--drop-path", "0.1"], "drop_path"),
    (["--dropout", "0", "--spatial-dropout"], "spatial_dropout"),
    (["--batch-size", "1"], "batch_size"),
    (["--device", "gpu"], "device"),
    (["--selection-split", "0.9"], "selection_split"),
])
def test_values_are_range_checked_before_anything(data, tmp_path, capfd, flags, needle):
    out = tmp_path / "run"
    one_line_error(capfd, main(["train", "--data", str(data), "--out", str(out), "--image-size", "16", *flags]),
                   needle)
    assert not out.exists()


def test_an_image_size_memory_cannot_hold_is_refused_before_decoding(tmp_path, capfd, monkeypatch):
    import reglab.device

    data = make_tree(tmp_path / "data")
    monkeypatch.setattr(reglab.device, "_available_bytes", lambda device: 10 * 2**20)  # a 10 MiB machine
    one_line_error(capfd, main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--image-size",
                                "512", "--quiet"]), "needs at least", "GiB")
    assert not (tmp_path / "run").exists()
    assert not list(Path(os.environ["REGLAB_DATA"]).rglob("*.u8"))  # nothing decoded either


@pytest.mark.parametrize("spec,needle", [("spatial-dropout=0", "takes no value"), ("mixup=0", "must be > 0"),
                                         ("full=1", "takes no value"), ("mixup=-1", "must be > 0"),
                                         ("full,full", "twice")])
def test_variant_values_cannot_turn_a_regularizer_on_by_accident(data, tmp_path, capfd, spec, needle):
    one_line_error(capfd, main(["ablate", "--data", str(data), "--variants", spec, "--out", str(tmp_path / "s"),
                                *TINY]), needle)
    assert not (tmp_path / "s").exists()


def test_a_single_class_dataset_is_refused(tmp_path, capfd):
    data = make_tree(tmp_path / "one", classes=("only",))
    one_line_error(capfd, train(data, tmp_path / "run"), "at least two")


def test_every_message_has_one_prefix(capfd):
    for argv in (["trian"], ["train", "--sed", "3"], ["compare", "--see", "7"]):
        line = one_line_error(capfd, main(argv))
        assert not line.startswith("reglab: reglab"), line
        assert "did you mean" in line, line


def test_a_last_batch_of_one_image_trains_with_batchnorm(tmp_path):
    data = make_tree(tmp_path / "data", per_class=5)  # 10 images at batch 3: batches 3, 3, 4 (not 3, 3, 3, 1)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--model", "regularized",
                 "--batch-size", "3", *TINY]) == 0


# ----------------------------------------------------------------------------------------- 2. data identity


def test_identity_is_recorded_in_summary_and_checkpoint(data, tmp_path):
    import torch

    out = tmp_path / "run"
    assert train(data, out, "--keep-last") == 0
    summary = json.loads((out / "summary.json").read_text())
    ident = summary["dataset"]["identity"]
    assert ident["classes"] == ["a", "b"] and ident["counts"] == {"train": {"a": 4, "b": 4}, "val": {"a": 2, "b": 2}}
    assert len(ident["fingerprint"]) == 16
    assert torch.load(out / "last.ckpt", weights_only=True)["data_identity"] == ident
    assert yaml.safe_load((out / "config.yaml").read_text())["data"] == str(data.resolve())  # absolute


@pytest.mark.parametrize("change,needle", [
    ("rename", "class folders changed"), ("add", "had 4 images, now 5"), ("touch", "modified")])
def test_resume_refuses_changed_data_saying_what_changed(data, tmp_path, capfd, change, needle):
    out = tmp_path / "run"
    assert train(data, out, "--keep-last") == 0
    if change == "rename":
        (data / "train" / "a").rename(data / "train" / "c")
        (data / "val" / "a").rename(data / "val" / "c")
    elif change == "add":
        shutil.copy(data / "train" / "a" / "0.png", data / "train" / "a" / "new.png")
    else:
        os.utime(data / "train" / "b" / "1.png", ns=(1, 1))
    capfd.readouterr()
    one_line_error(capfd, main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]), needle,
                   "not what this run was trained on")


def test_a_study_rerun_refuses_runs_trained_on_other_data(data, tmp_path, capfd):
    out = tmp_path / "study"
    args = ["compare", "--data", str(data), "--out", str(out), *TINY]
    assert main(args) == 0
    shutil.copy(data / "val" / "b" / "0.png", data / "val" / "b" / "extra.png")
    capfd.readouterr()
    one_line_error(capfd, main(args), "trained on other data", "val/b had 2 images, now 3")


def test_a_run_resumes_from_another_working_directory(data, tmp_path, monkeypatch):
    monkeypatch.chdir(data.parent)
    out = tmp_path / "run"
    assert main(["train", "--data", data.name, "--out", str(out), "--model", "basic", *TINY, "--keep-last"]) == 0
    monkeypatch.chdir(tmp_path.parent)
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 2


def test_resume_refuses_flags_that_change_the_run_but_extends_epochs(data, tmp_path, capfd):
    out = tmp_path / "run"
    assert train(data, out, "--keep-last") == 0
    one_line_error(capfd, main(["train", "--resume", str(out), "--lr", "0.1", "--dropout", "0.3", "--quiet"]),
                   "lr (0.001 in the run, 0.1 asked)", "dropout")
    # the same values are not changes: --image-size 16 is what the run has
    assert main(["train", "--resume", str(out), "--epochs", "3", "--image-size", "16", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 3 and summary["extensions"] == [{"from": 1, "to": 3, "at_epoch": 1}]
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 3


def test_extending_a_finished_run_without_its_checkpoint_says_how(data, tmp_path, capfd):
    out = tmp_path / "run"
    assert train(data, out) == 0
    one_line_error(capfd, main(["train", "--resume", str(out), "--epochs", "5", "--quiet"]), "--keep-last")


# ------------------------------------------------------------------------- 3. the cache and folder cannot lie


def test_edited_cache_metadata_is_rebuilt_never_relabelled(data, tmp_path):
    first = load_data(str(data), 16, show_progress=False, workers=1)
    entry = next(Path(os.environ["REGLAB_DATA"]).rglob("train.json"))
    meta = json.loads(entry.read_text())
    meta["paths"] = list(reversed(meta["paths"]))  # the same files, in another order: labels would shift
    entry.write_text(json.dumps(meta))
    again = load_data(str(data), 16, show_progress=False, workers=1)
    assert not again.train.from_cache
    assert (again.train.labels == first.train.labels).all() and (again.train.images == first.train.images).all()
    entry.write_text("{not json")
    assert not load_data(str(data), 16, show_progress=False, workers=1).train.from_cache


def test_a_second_process_on_the_same_folder_is_refused(data, tmp_path, capfd):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from reglab import lock\n"
                               f"with lock.hold({str(out)!r}, 'run folder'):\n"
                               "    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        one_line_error(capfd, train(data, out), "in use by PID", str(holder.pid))
    finally:
        holder.kill()
        holder.wait()
    assert train(data, out) == 0  # the holder is dead: its lock is taken over


def test_a_stale_lock_file_of_a_dead_process_is_taken_over(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / lock.NAME).write_text(json.dumps({"host": "elsewhere", "pid": 999999, "command": "reglab train"}))
    assert train(data, out) == 0
    assert not (out / lock.NAME).exists()


@pytest.mark.parametrize("via_symlink", [False, True])
def test_a_foreign_folder_is_never_written_into(data, tmp_path, capfd, via_symlink):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("years of work")
    out = mine
    if via_symlink:
        out = tmp_path / "link"
        out.symlink_to(mine)
    for argv in (["train", "--data", str(data), "--out", str(out), *TINY],
                 ["compare", "--data", str(data), "--out", str(out), *TINY],
                 ["train", "--data", str(data), "--out", str(out), "--overwrite", *TINY]):
        one_line_error(capfd, main(argv), "not empty", "chapter1.tex")
    assert [p.name for p in mine.iterdir()] == ["chapter1.tex"]


def test_a_report_reglab_did_not_write_is_never_replaced(data, tmp_path, capfd):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "report.md").write_text("my own report")
    one_line_error(capfd, main(["compare", "--data", str(data), "--out", str(out), *TINY]), "not empty")
    assert (out / "report.md").read_text() == "my own report"


def test_a_study_run_killed_before_its_first_checkpoint_restarts(data, tmp_path):
    out = tmp_path / "study"
    assert main(["compare", "--data", str(data), "--out", str(out), *TINY]) == 0
    victim = out / "basic" / "seed-42"
    for name in ("last.ckpt", "best.safetensors", "metrics.csv", "predictions.npz"):
        (victim / name).unlink(missing_ok=True)
    (victim / "summary.json").write_text(json.dumps({"status": "running"}))
    (victim / ".summary.json.x1y2.tmp").write_text("half a file")
    assert main(["compare", "--data", str(data), "--out", str(out), *TINY]) == 0
    assert json.loads((victim / "summary.json").read_text())["status"] == "finished"
    assert not list(out.rglob("*.tmp"))


# ---------------------------------------------------------------------------- 4. every phase stops cleanly


def _alive(pid: int) -> bool:
    """Running, not a zombie (a process that exits while we look is not alive)."""
    try:
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except OSError:
        return False


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


@pytest.mark.parametrize("phase,command,sig", [
    ("scan", "train", signal.SIGINT), ("decode", "train", signal.SIGTERM), ("decode", "train", signal.SIGHUP),
    ("train", "train", signal.SIGINT), ("train", "train", signal.SIGTERM), ("train", "train", signal.SIGHUP),
    ("evaluate", "train", signal.SIGTERM), ("report", "compare", signal.SIGHUP)])
def test_every_phase_stops_on_a_signal_with_one_line(tmp_path, phase, command, sig):
    data = make_tree(tmp_path / "data", per_class=70)  # 140 images: the decode pool has work for its workers
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    args = [command, "--data", str(data), "--out", str(out), "--image-size", "16", "--epochs", "1", "--device",
            "cpu"]
    proc = cli(*args, env={"REGLAB_TEST_PAUSE_AT": phase, "REGLAB_DATA": str(cache)})
    line = ""
    deadline = time.time() + 120
    while "paused at" not in line and time.time() < deadline:
        line = proc.stderr.readline()
        assert line or proc.poll() is None, proc.stderr.read()
    kids = children_of(proc.pid)
    t0 = time.time()
    proc.send_signal(sig)
    code = proc.wait(timeout=30)
    assert time.time() - t0 < 20  # seconds, not the minutes a run would take (generous: CI's CPU is shared)
    err = proc.stderr.read().strip().splitlines()
    assert code == 128 + sig, err
    assert len(err) == 1 and err[0].startswith("reglab: ") and signal.Signals(sig).name in err[0], err
    if phase in ("train", "evaluate"):
        assert "reglab train --resume" in err[0]
    time.sleep(0.5)
    assert not [k for k in kids if _alive(k)], "a child process was left behind"
    assert not [p for p in list(cache.rglob("*")) + list(out.rglob("*")) if p.name.endswith(".tmp")]


def test_a_study_worker_that_dies_is_named_and_the_rest_are_kept(data, tmp_path):
    out = tmp_path / "study"
    proc = cli("ablate", "--data", str(data), "--out", str(out), "--variants", "full,none", "--seeds", "2",
               "--jobs", "2", "--image-size", "16", "--epochs", "150", "--patience", "0", "--device", "cpu", "--quiet",
               env={"REGLAB_DATA": str(tmp_path / "cache")})
    victim_dir = out / "full" / "seed-42"
    deadline = time.time() + 120
    victim = None
    while victim is None and time.time() < deadline:
        for kid in children_of(proc.pid):
            try:
                cmd = open(f"/proc/{kid}/cmdline").read()
            except OSError:  # a child that exited between pgrep and here (a finished run's worker)
                continue
            if "spawn" in cmd and (victim_dir / "metrics.csv").exists():
                info = (victim_dir / lock.NAME)
                if info.exists() and str(kid) in info.read_text():
                    victim = kid
        time.sleep(0.05)
    assert victim, "no worker found for the first run"
    os.kill(victim, signal.SIGKILL)
    code = proc.wait(timeout=300)
    err = proc.stderr.read()
    assert code == 2, err
    assert f"run {victim_dir} died (killed by SIGKILL" in err, err
    finished = sorted(p.parent.relative_to(out).as_posix() for p in out.glob("*/seed-*/summary.json")
                      if json.loads(p.read_text())["status"] == "finished")
    assert len(finished) == 3 and "full/seed-42" not in finished
    assert main(["ablate", "--data", str(data), "--out", str(out), "--variants", "full,none", "--seeds", "2",
                 "--image-size", "16", "--epochs", "150", "--patience", "0", "--device", "cpu", "--quiet"]) == 0
    assert json.loads((victim_dir / "summary.json").read_text())["status"] == "finished"
