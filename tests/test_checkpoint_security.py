"""Checkpoints never run code, and every bad one is one clear line (exit 2), never a traceback.

`reglab train --resume DIR` reads DIR/last.ckpt (torch.load, weights_only=True); the end of a run reads
DIR/best.safetensors. Each test trains a real 1-epoch run at image size 32, then damages, swaps or replaces
what a resume will read.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reglab import checkpoint
from reglab.checkpoint import load_checkpoint, load_weights, save_checkpoint
from reglab.cli import main
from reglab.errors import UserError
from conftest import one_line_error, make_tree as _make_tree

pytestmark = pytest.mark.usefixtures("no_curve_plots")


@pytest.fixture(autouse=True)
def reglab_data(tmp_path, monkeypatch):
    monkeypatch.setenv("REGLAB_DATA", str(tmp_path / "reglab-data"))


def make_tree(root: Path) -> Path:
    return _make_tree(root, per_class=3, val=1, shape=(12, 12))


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """One real 1-epoch run per model, trained once; each test works on its own copy."""
    base = tmp_path_factory.mktemp("templates")
    data = make_tree(base / "data")
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REGLAB_DATA", str(base / "reglab-data"))
        import reglab.curves

        mp.setattr(reglab.curves, "plot_curves", lambda *a, **k: None)
        for model in ("basic", "regularized"):
            out = base / model
            rc = main(["train", "--data", str(data), "--out", str(out), "--model", model, "--image-size", "32",
                       "--epochs", "1", "--quiet", "--keep-last"])
            assert rc == 0
            runs[model] = out
    return runs


@pytest.fixture
def train_run(templates, tmp_path):
    def copy(name: str, model: str) -> Path:
        out = tmp_path / name
        shutil.copytree(templates[model], out)
        return out

    return copy


def interrupted(run: Path) -> Path:
    """A finished run made to look interrupted after its last epoch: resume will read last.ckpt."""
    (run / "summary.json").unlink()
    return run


def resume(run: Path) -> int:
    return main(["train", "--resume", str(run), "--quiet"])



class RunsCode:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ------------------------------------------------------------------------------------ code in a pickle
@pytest.mark.parametrize("how", ["torch.save", "inside a real checkpoint", "bare pickle"])
def test_pickle_that_runs_code_is_refused(train_run, how, tmp_path, capfd):
    run = interrupted(train_run("run", "basic"))
    marker = tmp_path / "marker"
    ckpt = run / "last.ckpt"
    if how == "torch.save":
        torch.save({"format": 1, "config": RunsCode(marker)}, ckpt)
    elif how == "inside a real checkpoint":
        state = load_checkpoint(ckpt)
        state["rows"].append(RunsCode(marker))
        torch.save(state, ckpt)
    else:
        ckpt.write_bytes(pickle.dumps({"format": 1, "config": RunsCode(marker)}))
    capfd.readouterr()
    line = one_line_error(capfd, resume(run), str(ckpt))
    assert not marker.exists(), "unpickling ran the payload"
    if how != "bare pickle":
        assert "refusing" in line and "system" in line
    # the payload is live: an unsafe load runs it, so the refusal above is what kept the marker away
    (torch.load(ckpt, weights_only=False) if how != "bare pickle" else pickle.loads(ckpt.read_bytes()))
    assert marker.exists()


def test_load_checkpoint_refuses_code_directly(tmp_path):
    marker = tmp_path / "marker"
    p = tmp_path / "evil.ckpt"
    torch.save([RunsCode(marker)], p)
    with pytest.raises(UserError, match="refusing"):
        load_checkpoint(p)
    assert not marker.exists()


# ------------------------------------------------------------------------------------ damaged files
@pytest.mark.parametrize("keep", [0, 10, 0.5, 0.9, -1])
def test_truncated_checkpoint_is_one_clear_error(train_run, keep, tmp_path, capfd):
    run = interrupted(train_run("run", "basic"))
    ckpt = run / "last.ckpt"
    data = ckpt.read_bytes()
    n = {0: 0, 10: 10, -1: len(data) - 1}.get(keep, int(len(data) * keep))
    ckpt.write_bytes(data[:n])
    capfd.readouterr()
    one_line_error(capfd, resume(run), str(ckpt), "delete it")


@pytest.mark.parametrize("content", ["random", "zip-of-other-things", "directory"])
def test_garbage_checkpoint_is_one_clear_error(train_run, content, tmp_path, capfd):
    run = interrupted(train_run("run", "basic"))
    ckpt = run / "last.ckpt"
    if content == "random":
        ckpt.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif content == "zip-of-other-things":
        with zipfile.ZipFile(ckpt, "w") as z:
            z.writestr("holiday.txt", "not a checkpoint")
    else:
        ckpt.unlink()
        ckpt.mkdir()
    capfd.readouterr()
    line = one_line_error(capfd, resume(run), str(ckpt))
    assert "refusing" not in line  # damage is reported as damage, not as an attack


@pytest.mark.parametrize("edit", ["format", "not-a-dict", "missing-keys"])
def test_checkpoint_of_another_version_is_one_clear_error(train_run, edit, tmp_path, capfd):
    run = interrupted(train_run("run", "basic"))
    ckpt = run / "last.ckpt"
    state = load_checkpoint(ckpt)
    if edit == "format":
        state.update(format=99, reglab_version="9.9.9")
        torch.save(state, ckpt)
        needles = ("incompatible reglab version", "9.9.9")
    elif edit == "not-a-dict":
        torch.save([1, 2, 3], ckpt)
        needles = ("incompatible",)
    else:
        for key in ("optimizer", "rng"):
            del state[key]
        torch.save(state, ckpt)
        needles = ("incomplete", "optimizer")
    capfd.readouterr()
    one_line_error(capfd, resume(run), str(ckpt), *needles)


# ------------------------------------------------------------------------------------ another model
def test_checkpoint_weights_of_another_model_are_refused(train_run, tmp_path, capfd):
    """last.ckpt whose weights are a basic model's while its config says regularized."""
    basic = train_run("basic", "basic")
    reg = interrupted(train_run("reg", "regularized"))
    theirs, ours = load_checkpoint(basic / "last.ckpt"), load_checkpoint(reg / "last.ckpt")
    ours["model"], ours["optimizer"] = theirs["model"], theirs["optimizer"]
    save_checkpoint(reg / "last.ckpt", {k: v for k, v in ours.items() if k not in ("format", "reglab_version")})
    capfd.readouterr()
    one_line_error(capfd, resume(reg), "belongs to another model", "--model")


def test_last_ckpt_swapped_in_from_another_run(train_run, tmp_path, capfd):
    basic = train_run("basic", "basic")
    reg = interrupted(train_run("reg", "regularized"))
    (reg / "last.ckpt").write_bytes((basic / "last.ckpt").read_bytes())
    capfd.readouterr()
    one_line_error(capfd, resume(reg), "another model")


def test_check_compatible_names_the_difference(tmp_path):
    from reglab.config import resolve
    from reglab.models import build_model

    small = build_model(resolve({}, {"model": "basic", "image_size": 32}), 2)
    wide = build_model(resolve({"dense_width": 64}, {"model": "basic", "image_size": 32}), 2)
    deep = build_model(resolve({}, {"model": "regularized", "image_size": 32}), 2)
    checkpoint.check_compatible(tmp_path / "x", small, small.state_dict())
    with pytest.raises(UserError, match="shapes differ"):
        checkpoint.check_compatible(tmp_path / "x", small, wide.state_dict())
    with pytest.raises(UserError, match="missing"):
        checkpoint.check_compatible(tmp_path / "x", deep, small.state_dict())


# ------------------------------------------------------------------------------------ best.safetensors
def _valid_weights(tmp_path: Path) -> bytes:
    p = tmp_path / "w.safetensors"
    checkpoint.save_weights(p, {"w": torch.arange(12.0).reshape(3, 4), "b": torch.zeros(4)})
    return p.read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "huge-header", "bad-offsets", "json-garbage"])
def test_corrupt_safetensors_is_a_clear_error(damage, tmp_path):
    good = _valid_weights(tmp_path)
    p = tmp_path / "best.safetensors"
    header_len = int.from_bytes(good[:8], "little")
    if damage == "truncated":
        data = good[: len(good) - 7]
    elif damage == "random":
        data = np.random.default_rng(2).integers(0, 256, 300, dtype=np.uint8).tobytes()
    elif damage == "empty":
        data = b""
    elif damage == "huge-header":
        data = (2**62).to_bytes(8, "little") + good[8:]
    elif damage == "bad-offsets":
        header = json.loads(good[8 : 8 + header_len])
        header["w"]["data_offsets"] = [0, 10**9]
        h = json.dumps(header).encode()
        data = len(h).to_bytes(8, "little") + h + good[8 + header_len :]
    else:
        data = good[:8] + b"{" * header_len + good[8 + header_len :]
    p.write_bytes(data)
    with pytest.raises(UserError, match="is corrupt") as info:
        load_weights(p)
    assert "\n" not in str(info.value) and str(p) in str(info.value)


def test_missing_safetensors_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_weights(tmp_path / "nope.safetensors")


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_mutated_safetensors_load_or_user_error(data):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        good = _valid_weights(Path(d))
        buf = bytearray(good)
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] = data.draw(st.integers(0, 255))
        cut = data.draw(st.sampled_from([len(buf), len(buf) - 1, 9, 100]))
        p = Path(d) / "m.safetensors"
        p.write_bytes(bytes(buf[:cut]))
        try:
            out = load_weights(p)
        except UserError as e:
            assert "\n" not in str(e)
        else:
            assert isinstance(out, dict) and all(isinstance(v, torch.Tensor) for v in out.values())


def test_corrupt_best_weights_on_resume_is_one_clear_error(train_run, tmp_path, capfd):
    """A run interrupted after its last epoch, whose best.safetensors got damaged: finishing it must say so."""
    run = interrupted(train_run("run", "basic"))
    best = run / "best.safetensors"
    best.write_bytes(best.read_bytes()[:50])
    capfd.readouterr()
    one_line_error(capfd, resume(run), str(best), "corrupt")


def test_resume_of_intact_run_still_works(train_run, tmp_path, capfd):
    """The checks above refuse damage, not good checkpoints."""
    run = interrupted(train_run("run", "basic"))
    assert resume(run) == 0, capfd.readouterr()
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
