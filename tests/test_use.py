"""Use what you trained (issue 10): predict, the Python API, TensorBoard logs and train.log, the precision
choice. One real run on the mini set (32 px, 3 epochs) is trained once for the module."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import reglab
from reglab.cli import main
from conftest import one_line_error


@pytest.fixture(scope="module")
def run(mini, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("use") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REGLAB_DATA", str(out.parent / "cache"))
        assert main(["train", "--data", str(mini), "--out", str(out), "--model", "basic", "--image-size", "32",
                     "--epochs", "3", "--device", "cpu", "--quiet"]) == 0
    return out


# ------------------------------------------------------------------------------------------ predict


def test_predict_on_its_own_val_folder_reproduces_its_accuracy(run, mini, tmp_path):
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), str(mini / "val"), "--out", str(out), "--top-k", "3", "--batch-size", "7",
                 "--quiet"]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 60
    assert list(rows[0])[:4] == ["path", "predicted_class", "predicted_name", "probability"]
    assert {"class_3", "prob_3"} <= set(rows[0])
    correct = sum(Path(r["path"]).parent.name == r["predicted_class"] for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert correct == summary["restored_val_correct"]
    assert correct / len(rows) == pytest.approx(summary["restored_val_accuracy"], abs=0)
    for r in rows:
        probs = [float(r[f"prob_{k}"]) for k in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and r["class_1"] == r["predicted_class"]


def test_predict_names_and_skips_an_unreadable_image(run, mini, tmp_path, capfd):
    folder = tmp_path / "in"
    shutil.copytree(mini / "val" / "n01440764", folder)
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), str(folder), "--out", str(out), "--quiet"]) == 0
    err = capfd.readouterr().err
    assert "broken.jpg" in err and "skipped" in err
    assert len(list(csv.DictReader(open(out)))) == 6


@pytest.mark.parametrize("make", ["not a run", "unfinished"])
def test_predict_refuses_what_is_not_a_finished_run(run, mini, tmp_path, capfd, make):
    target = tmp_path / "x"
    if make == "not a run":
        target.mkdir()
        (target / "notes.txt").write_text("hello")
    else:
        shutil.copytree(run, target)
        s = json.loads((target / "summary.json").read_text())
        (target / "summary.json").write_text(json.dumps({**s, "status": "interrupted"}))
    one_line_error(capfd, main(["predict", str(target), str(mini / "val"), "--out", str(tmp_path / "p.csv")]),
                   str(target))
    assert not (tmp_path / "p.csv").exists()


# ------------------------------------------------------------------------------------------ the API


def test_config_by_hand_builds_the_model_it_names():
    basic = reglab.Config(model="basic")
    assert (basic.convs_per_block, basic.batchnorm, basic.dropout, basic.augment) == (1, False, 0.0, "none")
    assert reglab.Config.preset("basic", epochs=5).epochs == 5
    fast = reglab.Config(recipe="fast")
    assert (fast.batch_size, fast.schedule, fast.smoothing) == (128, "onecycle", 0.1)
    assert reglab.Config(model="regularized", batchnorm=False).batchnorm is False  # explicit values win
    with pytest.raises(reglab.UserError, match="unknown key"):
        reglab.Config(modle="basic")


def test_the_readme_notebook_example_runs(mini, tmp_path, monkeypatch):
    """The README's API example, with the mini data and tiny sizes substituted."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("<!-- api-example -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    code = code.replace("imagenette2-160", str(mini)).replace("epochs=5", "epochs=1, image_size=32, device='cpu'")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README api example", "exec"), namespace)
    assert (tmp_path / "runs" / "api-basic" / "summary.json").exists()


def test_load_run_gives_model_classes_history_and_predict(run, mini):
    trained = reglab.load_run(run)
    assert trained.classes == sorted(p.name for p in (mini / "train").iterdir())
    assert [r["epoch"] for r in trained.history] == [1, 2, 3]
    images = sorted((mini / "val" / "n03888257").iterdir())[:3]
    from PIL import Image

    from_paths = trained.predict(images)
    from_pil = trained.predict([Image.open(p) for p in images])
    assert from_paths.shape == (3, 10) and np.allclose(from_paths.sum(1), 1, atol=1e-5)
    assert np.array_equal(from_paths, from_pil)


def test_commands_take_configs_not_argparse_namespaces():
    """The one import cycle (study -> cli) is gone: nothing below the CLI imports it."""
    src = Path(reglab.__file__).parent
    for py in src.rglob("*.py"):
        if py.name != "cli.py":
            assert "from .cli" not in py.read_text() and "from ..cli" not in py.read_text(), py


# ------------------------------------------------------------------------------------------ logs


def test_tensorboard_events_and_train_log(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"loss/train", "loss/val", "accuracy/val", "lr", "epoch_seconds"} <= set(tags)
    assert [e.step for e in acc.Scalars("accuracy/val")] == [1, 2, 3]
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [round(e.value, 5) for e in acc.Scalars("accuracy/val")] == [round(float(r["val_accuracy"]), 5)
                                                                       for r in rows]
    log = (run / "train.log").read_text()
    assert log.count("Epoch ") >= 3 and "val_accuracy:" in log


def test_augmentation_grid_is_logged_once(mini, tmp_path):
    out = tmp_path / "reg"
    assert main(["train", "--data", str(mini), "--out", str(out), "--image-size", "16", "--epochs", "1",
                 "--device", "cpu", "--quiet"]) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out))
    acc.Reload()
    assert acc.Tags()["images"] == ["augmentation (seed)"]


def test_training_goes_on_without_tensorboard(mini, tmp_path, monkeypatch, capfd):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *a, **k):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real_import(name, *a, **k)

    import reglab.runlog

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    monkeypatch.setattr(reglab.runlog, "_warned_no_tensorboard", False)
    out = tmp_path / "run"
    assert main(["train", "--data", str(mini), "--out", str(out), "--image-size", "16", "--epochs", "1",
                 "--device", "cpu"]) == 0
    assert "tensorboard package is not installed" in capfd.readouterr().err
    assert not list(out.glob("events.out.tfevents.*")) and (out / "metrics.csv").exists()


# ------------------------------------------------------------------------------------------ precision


def test_precision_auto_follows_the_hardware(monkeypatch):
    import torch

    import reglab.device

    cpu = torch.device("cpu")
    monkeypatch.setattr(reglab.device, "cpu_native_bf16", lambda: True)
    assert reglab.device.pick_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(reglab.device, "cpu_native_bf16", lambda: False)
    assert reglab.device.pick_precision("auto", cpu) == "fp32"
    assert reglab.device.pick_precision("bf16", cpu) == "bf16"


def test_the_run_records_the_precision_it_used(run):
    from reglab.provenance import cpu_native_bf16

    s = json.loads((run / "summary.json").read_text())
    assert s["precision"] == ("bf16" if cpu_native_bf16() else "fp32")


def test_device_accepts_what_torch_accepts(capfd, tmp_path, mini):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    one_line_error(capfd, main(["train", "--data", str(mini), "--out", str(tmp_path / "r"), "--device", "cuda:1"]),
                   "cuda:1", "no CUDA GPU")
    one_line_error(capfd, main(["train", "--data", str(mini), "--out", str(tmp_path / "r"), "--device", "mps"]),
                   "mps")
