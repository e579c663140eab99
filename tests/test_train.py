"""`reglab train` end to end on the real mini dataset (tiny image size, few epochs, CPU)."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from reglab.cli import main
from reglab.data import load_data

RUN_FILES = ["config.yaml", "metrics.csv", "summary.json", "curves.png", "best.safetensors", "predictions.npz",
             "samples.npz", "train.log"]


def train_args(mini, out, *extra):
    return ["train", "--data", str(mini), "--image-size", "32", "--epochs", "2", "--device", "cpu", "--out", str(out),
            *extra]


def test_train_writes_every_file_of_the_run_folder(mini, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(mini, out, "--model", "regularized")) == 0
    printed = capsys.readouterr().out
    assert "Epoch 1/2" in printed and "val_accuracy" in printed
    for name in RUN_FILES:
        assert (out / name).stat().st_size > 0, name
    assert not (out / "last.ckpt").exists()  # a finished run keeps its weights, not the optimizer state
    summary = json.loads((out / "summary.json").read_text())
    for key in ["model", "seed", "dataset", "device", "epochs_run", "best_epoch", "train_loss", "train_accuracy",
                "val_loss", "val_accuracy", "restored_val_loss", "restored_val_accuracy", "params_trainable",
                "params_non_trainable", "wall_seconds", "train_images_per_second"]:
        assert summary[key] is not None, key
    assert summary["status"] == "finished" and summary["epochs_run"] == 2
    assert summary["dataset"]["train_size"] == 120 and summary["dataset"]["val_size"] == 60
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "select_loss",
                             "select_accuracy", "lr", "seconds"]
    assert rows[0]["select_loss"] == "" and rows[0]["val_loss"] != ""  # no selection split: val/ chooses
    assert float(rows[-1]["val_accuracy"]) == pytest.approx(summary["val_accuracy"])
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["image_size"] == 32 and cfg["augment"] == "seed" and cfg["batch_size"] == 16 and cfg["adam_eps"] == 1e-7
    weights = load_file(out / "best.safetensors")
    assert "head.dense2.weight" in weights
    with np.load(out / "samples.npz") as z:  # the run's own augmentation of its samples, drawn when it trained
        images, augmented = z["images"], z["augmented"]
    assert augmented.dtype == np.uint8 and augmented.shape == (len(images), 4, 32, 32, 3)
    from reglab.data.augment import augmented_draws
    from reglab.rundir import load_run

    assert np.array_equal(augmented, augmented_draws(images, "seed"))
    assert np.array_equal(load_run(out).samples()["augmented"], augmented)


def test_basic_trains_without_augmentation_by_default(mini, tmp_path):
    out = tmp_path / "basic"
    assert main(train_args(mini, out, "--model", "basic")) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["augment"] == "none" and cfg["batchnorm"] is False and cfg["convs_per_block"] == 1
    with np.load(out / "samples.npz") as z:
        assert sorted(z.files) == ["images", "labels"]  # nothing augmented to record


def test_flags_override_config_file_which_overrides_preset(mini, tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("model: basic\naugment: seed\nepochs: 1\nbatch_size: 8\n")
    out = tmp_path / "run"
    assert main(train_args(mini, out, "--config", str(conf), "--batch-size", "32")) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (cfg["model"], cfg["augment"], cfg["epochs"], cfg["batch_size"]) == ("basic", "seed", 2, 32)


def test_same_seed_same_result_on_cpu(mini, tmp_path):
    for name in ("a", "b"):
        assert main(train_args(mini, tmp_path / name, "--epochs", "1")) == 0
    a, b = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("a", "b"))
    assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]


def test_finished_run_is_not_overwritten_without_flag(mini, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(mini, out, "--epochs", "1")) == 0
    before = (out / "summary.json").read_bytes()
    capsys.readouterr()
    assert main(train_args(mini, out, "--epochs", "1")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert (out / "summary.json").read_bytes() == before
    assert main(train_args(mini, out, "--epochs", "1", "--overwrite", "--seed", "7")) == 0
    assert json.loads((out / "summary.json").read_text())["seed"] == 7


def test_decode_cache_is_reused_and_invalidated(mini, tmp_path):
    first = load_data(str(mini), 32, show_progress=False)
    assert not first.train.from_cache
    second = load_data(str(mini), 32, show_progress=False)
    assert second.train.from_cache and second.val.from_cache
    assert (first.train.images == second.train.images).all()
    assert not load_data(str(mini), 48, show_progress=False).train.from_cache  # size is part of the key
    # a changed file invalidates: copy the tree, touch one file
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(mini, copy)
    assert not load_data(str(copy), 32, show_progress=False).train.from_cache
    assert load_data(str(copy), 32, show_progress=False).train.from_cache
    victim = next((copy / "train").rglob("*.JPEG"))
    os.utime(victim, ns=(1, 1))
    assert not load_data(str(copy), 32, show_progress=False).train.from_cache


def test_decoded_pixels_match_a_direct_decode(mini):
    from PIL import Image

    data = load_data(str(mini), 224, show_progress=False)  # the mini images are 224x224: no resize
    path = data.train.paths[5]
    expected = Image.open(path).convert("RGB")
    assert (data.train.images[5] == np.asarray(expected)).all()


def _cli(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.Popen([sys.executable, "-m", "reglab.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _metric_rows(path: Path):
    rows = list(csv.DictReader(open(path)))
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_kill_and_resume_gives_the_same_run(mini, tmp_path):
    """SIGTERM mid-run, then --resume: the same metrics and final weights as an uninterrupted run."""
    common = ["--data", str(mini), "--image-size", "64", "--epochs", "6", "--device", "cpu", "--patience", "0",
              "--keep-last"]
    full = _cli("train", *common, "--out", str(tmp_path / "full"))
    assert full.wait(timeout=300) == 0, full.stderr.read()

    out = tmp_path / "cut"
    proc = _cli("train", *common, "--out", str(out))
    deadline = time.time() + 240
    while time.time() < deadline:
        if (out / "metrics.csv").exists() and len(_metric_rows(out / "metrics.csv")) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    err = proc.stderr.read()
    assert code == 128 + signal.SIGTERM, err
    assert "reglab train --resume" in err and err.count("\n") == 1
    done = len(_metric_rows(out / "metrics.csv"))
    assert 2 <= done < 6 and json.loads((out / "summary.json").read_text())["status"] == "interrupted"

    resumed = _cli("train", "--resume", str(out))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert _metric_rows(out / "metrics.csv") == _metric_rows(tmp_path / "full" / "metrics.csv")
    for name in ("best.safetensors",):
        a, b = load_file(out / name), load_file(tmp_path / "full" / name)
        assert all(torch.equal(a[k], b[k]) for k in a)
    last_a = torch.load(out / "last.ckpt", weights_only=True)["model"]
    last_b = torch.load(tmp_path / "full" / "last.ckpt", weights_only=True)["model"]
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)


def test_bad_inputs_give_one_line_and_exit_2(mini, tmp_path, capsys):
    cases = [
        ["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
        ["train", "--data", "no-such-dataset", "--out", str(tmp_path / "o")],
        ["train", "--model", "resnet", "--out", str(tmp_path / "o")],
        ["train", "--data", str(mini), "--image-size", "30", "--out", str(tmp_path / "o")],
        ["train", "--data", str(mini), "--augment", "wild", "--out", str(tmp_path / "o")],
        ["train", "--resume", str(tmp_path / "nothing")],
        ["train", "--data", str(mini), "--out", "/proc/reglab-cannot-write/run", "--image-size", "32"],
    ]
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    cases.append(["train", "--data", str(empty), "--out", str(tmp_path / "o")])
    for argv in cases:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert err.startswith("reglab: ") and err.count("\n") == 1 and "Traceback" not in err, (argv, err)


def test_torch_averaged_model_ema_equals_the_hand_written_one():
    """The EMA moved to torch.optim.swa_utils.AveragedModel; after N real optimizer steps its weights and
    BatchNorm statistics equal the hand-written lerp it replaced."""

    from reglab.config import Config
    from reglab.models import build_model
    from reglab.packed import make_ema

    torch.manual_seed(0)
    net = build_model(Config(model="regularized", image_size=32))
    decay = 0.9
    ours = {k: v.clone() for k, v in net.state_dict().items()}  # the hand-written EMA's state, by hand
    ema = make_ema(net, decay)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(5):
        loss = net(torch.rand(8, 3, 32, 32)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update_parameters(net)
        for k, v in net.state_dict().items():
            ours[k] = ours[k].lerp(v, 1 - decay) if v.dtype.is_floating_point else v.clone()
    got = ema.module.state_dict()
    for k, v in ours.items():
        if v.dtype.is_floating_point:
            assert torch.allclose(got[k], v, rtol=1e-5, atol=1e-6), k
    assert not torch.allclose(got["head.dense2.weight"], net.state_dict()["head.dense2.weight"])


def test_step_schedule_logs_the_lr_actually_used(mini, tmp_path):
    out = tmp_path / "fast"
    assert main(train_args(mini, out, "--recipe", "fast", "--epochs", "4", "--quiet")) == 0
    lrs = [float(r["lr"]) for r in csv.DictReader(open(out / "metrics.csv"))]
    # 120 images at batch 128: one step per epoch; 2 warm-up steps, then linear decay to 0
    assert lrs == pytest.approx([1e-3, 2e-3, 2e-3, 1e-3])


def test_selection_split_chooses_and_val_is_evaluated_once(mini, tmp_path):
    out = tmp_path / "sel"
    assert main(train_args(mini, out, "--selection-split", "0.25", "--quiet")) == 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert all(r["val_loss"] == "" and r["select_loss"] != "" for r in rows)  # val/ never chose
    s = json.loads((out / "summary.json").read_text())
    assert s["chosen_on"] == "selection split" and s["dataset"]["selection_size"] == 30  # 3 of 12 per class
    assert s["dataset"]["train_used"] == 90 and s["restored_val_correct"] == round(s["restored_val_accuracy"] * 60)
    assert yaml.safe_load((out / "config.yaml").read_text())["selection_split"] == 0.25


def test_split_selection_is_stratified_seeded_and_disjoint():
    from reglab.evaluate import split_selection, stratified_sample

    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    train_idx, select_idx = split_selection(labels, 0.1, seed=3)
    assert np.bincount(labels[select_idx]).tolist() == [1, 2, 3, 4]
    assert not set(train_idx) & set(select_idx) and len(train_idx) + len(select_idx) == 100
    assert np.array_equal(split_selection(labels, 0.1, seed=3)[1], select_idx)
    assert not np.array_equal(split_selection(labels, 0.1, seed=4)[1], select_idx)
    sample = stratified_sample(train_idx, labels, 45, seed=3)
    assert np.bincount(labels[sample]).tolist() == [4, 9, 14, 18] and set(sample) <= set(train_idx)


def test_clean_train_accuracy_is_measured_in_eval_mode_without_augmentation(mini, tmp_path, monkeypatch):
    """The gap's train side is the restored model on un-augmented training images, not the running accuracy."""
    import reglab.evaluate

    calls = []
    real = reglab.evaluate.evaluate

    def spy(model, loader, *a, **k):
        result = real(model, loader, *a, **k)
        calls.append((k.get("label") or a[-1], model.training, loader.num_images, result))
        return result

    monkeypatch.setattr(reglab.evaluate, "evaluate", spy)
    out = tmp_path / "clean"
    assert main(train_args(mini, out, "--quiet", "--epochs", "1")) == 0
    s = json.loads((out / "summary.json").read_text())
    clean = [c for c in calls if "clean" in c[0]]
    assert len(clean) == 1 and clean[0][2] == 120 == s["clean_train_images"]
    assert clean[0][1] is False  # eval mode: no dropout, BatchNorm on its running statistics
    # the summary's figure is that evaluation's count (not the running training accuracy, which may coincide)
    assert s["clean_train_accuracy"] == clean[0][3][1] / 120


def test_training_never_imports_the_report_layer(mini, tmp_path):
    """A whole run (curves.png and the TensorBoard augmentation grid included) uses nothing of reglab.reports;
    importing the training modules does not import matplotlib either (only drawing curves.png does)."""
    code = ("import sys\n"
            "import reglab.benchmark, reglab.run\n"
            "print(sorted(m for m in sys.modules if m.startswith('matplotlib')))\n"
            "from reglab.config import Config\n"
            f"reglab.run.train(Config(data={str(mini)!r}, image_size=16, epochs=1, device='cpu'), "
            f"{str(tmp_path / 'run')!r},"
            " quiet=True)\n"
            "print(sorted(m for m in sys.modules if m.startswith('reglab.reports')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "[]"]
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0


def test_curves_png_is_the_notebook_figure_for_either_design(tmp_path):
    from PIL import Image

    from reglab.curves import plot_curves

    rows = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.5, "val_loss": 1.2 / e, "val_accuracy": 0.4,
             "select_loss": None, "select_accuracy": None, "lr": 1e-3, "seconds": 1.0} for e in (1, 2, 3)]
    select = [{**r, "val_loss": None, "val_accuracy": None, "select_loss": 1.1, "select_accuracy": 0.45} for r in rows]
    for name, design in (("val.png", rows), ("select.png", select)):
        plot_curves(design, tmp_path / name, title="regularized (seed $42)")
        assert Image.open(tmp_path / name).size == (1200, 400)  # 12x4 inches at 100 dpi, as plot_metrics
    assert (tmp_path / "val.png").read_bytes() != (tmp_path / "select.png").read_bytes()


def test_the_pause_hook_reads_its_environment_once(monkeypatch):
    """A pause point sits inside the training loop: it compares, it never looks the environment up per step."""
    from reglab import signals

    looked_up = []

    class Environ(dict):
        def get(self, key, default=None):
            looked_up.append(key)
            return super().get(key, default)

    monkeypatch.setattr(signals.os, "environ", Environ(os.environ))
    for _ in range(100):
        signals.pause_point("train")
    assert looked_up == []


def test_an_evaluation_subset_indexes_the_images_already_on_the_device():
    from reglab.data.loader import DeviceLoader

    images = np.arange(10 * 4 * 4 * 3, dtype=np.uint8).reshape(10, 4, 4, 3)
    split = DeviceLoader.upload(images, np.arange(10), torch.device("cpu"), batch_size=2)
    subset = split.subset(np.array([7, 2, 5]))
    assert subset.images.data_ptr() == split.images.data_ptr() and subset.num_images == 3 and len(subset) == 1
    (x, y), = subset.epoch()
    assert y.tolist() == [7, 2, 5] and torch.equal(x, torch.from_numpy(images[[7, 2, 5]]).permute(0, 3, 1, 2))
