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
from reglab.cli import build_parser, config_flags, main
from conftest import make_tree, one_line_error

TINY = dict(image_size=16, epochs=1, device="cpu")


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


def test_predict_computes_at_the_precision_asked(run, mini, tmp_path):
    """The default is the run's own precision (fp32 here); --precision bf16 computes in bf16 autocast, which rounds
    the probabilities differently; --precision fp32 is what the export computes (issue 23 item 6)."""
    from reglab.trained import load_run

    assert load_run(run, "cpu").precision == "fp32" and load_run(run, "cpu", "bf16").precision == "bf16"
    folder = mini / "val" / "n01440764"
    csvs = {}
    for flag in ([], ["--precision", "fp32"], ["--precision", "bf16"]):
        out = tmp_path / f"p{len(csvs)}.csv"
        assert main(["predict", str(run), str(folder), "--out", str(out), "--quiet", *flag]) == 0
        csvs[" ".join(flag)] = [(r["path"], r["prob_1"], r["prob_2"]) for r in csv.DictReader(open(out))]
    assert csvs[""] == csvs["--precision fp32"]
    assert [r[0] for r in csvs["--precision bf16"]] == [r[0] for r in csvs[""]]
    assert csvs["--precision bf16"] != csvs[""]


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


# Each command's API function(s); a flag named differently in the API: (command, flag dest) -> parameter.
API_OF = {"train": (reglab.train, reglab.resume), "compare": (reglab.compare,), "ablate": (reglab.ablate,),
          "sweep": (reglab.sweep,),
          "report": (reglab.report,), "summary": (reglab.summary,), "predict": (reglab.predict,),
          "export": (reglab.export,), "bench": (reglab.bench,), "plan": (reglab.plan,)}
RENAMED = {("train", "resume"): "folder", ("compare", "seed"): "first_seed", ("ablate", "seed"): "first_seed",
           ("sweep", "seed"): "first_seed",
           ("report", "dir"): "folder", ("summary", "name"): "model", ("bench", "json"): "json_path",
           ("plan", "dir"): "folder"}
# Output flags with nothing to act on in the API: -v adds the checkpoint messages of training (these commands
# train nothing, or bench, quietly); summary and export return their result, so there is no line to silence.
NOTHING_TO_DO = {("report", "verbose"), ("summary", "verbose"), ("predict", "verbose"), ("export", "verbose"),
                 ("bench", "verbose"), ("summary", "quiet"), ("export", "quiet"), ("plan", "verbose")}


def test_every_cli_option_is_an_api_option():
    """The API is the one front door: each flag of each command is a parameter of its API function, or a config
    setting (a Config field, which its function takes as a Config or as keywords)."""
    import inspect

    for command, sub in build_parser().get_default("subcommands").items():
        params = {}
        for fn in API_OF[command]:
            params.update(inspect.signature(fn).parameters)
        takes_settings = any(p.kind is p.VAR_KEYWORD or p.annotation == "Config" for p in params.values())
        for action in sub._actions:
            if action.dest == "help" or (command, action.dest) in NOTHING_TO_DO:
                continue
            name = RENAMED.get((command, action.dest), action.dest)
            if name in params:
                continue
            if command == "ablate" and name == "list_variants":
                assert callable(reglab.list_variants)
            else:  # --config FILE.yaml is a file of settings, --set NAME=VALUE sets any of them
                assert (name in config_flags() or name in ("config", "set")) and takes_settings, (command, action.dest)


def test_api_functions_keep_their_names_after_every_submodule_is_imported():
    """No submodule is named like an API function: importing every module (as the CLI, the API and the tests do)
    must not replace a function, as reglab.report once was by the report package."""
    import importlib

    import reglab.api

    for module in ("benchmark", "exported", "trained", "reports.render", "study", "executors", "variants"):
        importlib.import_module(f"reglab.{module}")
    for name in reglab.__all__:
        if name[0].islower() and name != "__version__":
            assert getattr(reglab, name) is getattr(reglab.api, name), name


def test_the_readme_lists_every_api_function():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### The Python API", 1)[1].split("\n## ", 1)[0]
    functions = [name for name in reglab.__all__ if callable(getattr(reglab, name)) and name[0].islower()]
    assert functions and all(f"`reglab.{name}(" in section for name in functions), functions


def test_the_api_compare_packs_seeds_and_keeps_its_options(tmp_path):
    data = make_tree(tmp_path / "data")
    out = reglab.compare(data=str(data), seeds=[3, 5], pack=2, margin=2.5, out=tmp_path / "study", quiet=True,
                         **TINY)
    for variant in ("basic", "regularized"):
        for seed in (3, 5):
            s = json.loads((out / variant / f"seed-{seed}" / "summary.json").read_text())
            assert s["status"] == "finished" and s["cohort"] == {"size": 2, "seeds": [3, 5]}
    study = json.loads((out / "study.json").read_text())
    assert study["margin"] == pytest.approx(0.025) and study["seeds"] == [3, 5]
    assert (out / "report.md").exists() and (out / "report.html").exists()


def test_the_api_trains_seeds_resumes_them_and_reports_in_one_process(tmp_path):
    data = make_tree(tmp_path / "data")
    cfg = reglab.Config.preset("basic", data=str(data), keep_last=True, **TINY)
    one = reglab.train(cfg, tmp_path / "one", quiet=True)
    assert one.finished
    md, html = reglab.report(tmp_path / "one", quiet=True)  # the function, not a package of the same name
    assert Path(md).exists() and Path(html).exists()
    runs = reglab.train(cfg, tmp_path / "seeds", seeds=2, pack=2, quiet=True)
    assert list(runs) == [tmp_path / "seeds" / "basic" / f"seed-{s}" for s in (42, 43)]
    assert all(s.finished and s.cohort == [42, 43] for s in runs.values())
    extended = reglab.resume(tmp_path / "seeds", epochs=2, quiet=True)
    assert list(extended) == list(runs) and [s.epochs_run for s in extended.values()] == [2, 2]
    assert Path(reglab.report(tmp_path / "seeds", margin=2, quiet=True)[0]).exists()


def test_the_api_refuses_what_would_change_or_replace_a_run(tmp_path):
    data = make_tree(tmp_path / "data")
    cfg = reglab.Config.preset("basic", data=str(data), **TINY)
    out = tmp_path / "run"
    reglab.train(cfg, out, quiet=True)
    with pytest.raises(reglab.UserError, match="--overwrite"):
        reglab.train(cfg, out, quiet=True)
    with pytest.raises(reglab.UserError, match="would change it: lr"):
        reglab.resume(out, lr=0.1, quiet=True)
    before = (out / "summary.json").read_text()
    assert reglab.train(cfg.replace(seed=7), out, overwrite=True, quiet=True).seed == 7
    assert (out / "summary.json").read_text() != before


@pytest.mark.parametrize("call,needle", [
    (lambda d, o: reglab.compare(data=d, out=o, pack=0), "invalid pack"),
    (lambda d, o: reglab.compare(data=d, out=o, pack="two"), "invalid pack"),
    (lambda d, o: reglab.compare(data=d, out=o, jobs=2, executor="ray"), "--jobs applies to the local executor"),
    (lambda d, o: reglab.compare(data=d, out=o, executor="dask"), "unknown executor"),
    (lambda d, o: reglab.compare(data=d, out=o, jobs=0), "invalid jobs"),
    (lambda d, o: reglab.compare(data=d, out=o, gpus_per_run=0), "invalid gpus_per_run"),
    (lambda d, o: reglab.compare(data=d, out=o, margin=-1), "invalid margin"),
    (lambda d, o: reglab.compare(data=d, out=o, seeds=0), "invalid seeds"),
    (lambda d, o: reglab.compare(data=d, out=o, seeds=[1, 1]), "invalid seeds"),
    (lambda d, o: reglab.compare(data=d, out=o, seed=3), "not seed="),
    (lambda d, o: reglab.compare(data=d, out=o, modle="basic"), "unknown setting(s) modle"),
    (lambda d, o: reglab.compare(data=d, out=o, epochs=0), "invalid epochs"),
    (lambda d, o: reglab.ablate(data=d, out=o, variants="full,nope"), "unknown variant 'nope'"),
    (lambda d, o: reglab.train(reglab.Config(data=d), o, seeds=[1, -1]), "invalid seeds"),
    (lambda d, o: reglab.resume(o, modle="basic"), "unknown key(s) modle"),
    (lambda d, o: reglab.report(o, margin=float("nan")), "invalid margin"),
    (lambda d, o: reglab.plan(o, power=1.5), "invalid power"),
    (lambda d, o: reglab.plan(o, margin=-1), "invalid margin"),
    (lambda d, o: reglab.plan(o), "is not a study folder"),
])
def test_the_api_checks_its_options_before_any_work(tmp_path, call, needle):
    data = make_tree(tmp_path / "data")
    out = tmp_path / "out"
    with pytest.raises(reglab.UserError) as info:
        call(str(data), out)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert not out.exists()


def test_the_api_predicts_exports_and_summarises(run, mini, tmp_path):
    result = reglab.predict(run, mini / "val" / "n01440764", out=tmp_path / "p.csv", top_k=2, quiet=True)
    assert result["rows"] == len(list(csv.DictReader(open(tmp_path / "p.csv")))) == 6
    assert reglab.export(run, format="torchscript", out=tmp_path / "m.pt") == tmp_path / "m.pt"
    assert (tmp_path / "m.pt").stat().st_size > 0
    assert "Total params: 13,203,274" in reglab.summary("basic")
    assert "Total params: 13,203,274" not in reglab.summary("basic", image_size=64)


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
