"""Files reglab wrote are input too (issue 20 §2): every file it reads back, damaged in every way an adversary or a
broken disk can, is refused by every command that reads it in one line naming the file, exit 2, no traceback, and
nothing in the folder written or deleted. A damaged decode cache is rebuilt, with one note line."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tree, one_line_error
from reglab.cli import main

FAST = ["--image-size", "16", "--epochs", "1", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One trained run folder (last.ckpt kept, so it can be resumed) and one compare study, made once."""
    root = tmp_path_factory.mktemp("own-files")
    data = make_tree(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REGLAB_DATA", str(root / "cache"))
        mp.setattr("reglab.curves.plot_curves", lambda *a, **k: None)
        assert main(["train", "--data", str(data), "--out", str(root / "run"), "--model", "basic", "--keep-last",
                     *FAST]) == 0
        assert main(["compare", "--data", str(data), "--seeds", "1", "--out", str(root / "study"), *FAST]) == 0
    return root


# ------------------------------------------------------------------------------------------ the damage


def _rewrite(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def _json_edit(path: Path, key: str, value) -> bytes:
    doc = json.loads(path.read_text())
    doc[key] = value
    return json.dumps(doc).encode()


WRONG_TYPES = {  # a value of the wrong type where the reader expects its schema
    "config.yaml": lambda p: b"- a list\n- not settings\n",
    "summary.json": lambda p: _json_edit(p, "epochs_run", "three"),
    "metrics.csv": lambda p: p.read_bytes().replace(b"\n1,", b"\none,", 1),
    "predictions.npz": lambda p: _npz(labels=np.zeros(3, np.float32), probs=np.zeros((3, 2), np.float32)),
    "last.ckpt": lambda p: _ckpt_edit(p, "early", [1, 2, 3]),
    "best.safetensors": lambda p: b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1} ",
    "study.json": lambda p: _json_edit(p, "variants", 5),
}
HUGE_VALUES = {  # a value no run can have
    "config.yaml": lambda p: p.read_bytes() + b"extra: " + b"[" * 1500 + b"]" * 1500 + b"\n",
    "summary.json": lambda p: p.read_bytes().replace(b'"epochs_run": 1', b'"epochs_run": 1e999', 1),
    "metrics.csv": lambda p: p.read_bytes() + b"2" + b"9" * 5000 + b",1,1,1,1,,,0.1,1\n",
    "predictions.npz": lambda p: _npz(labels=np.array([5, 10 ** 9]), probs=np.zeros((2, 2), np.float32)),
    "last.ckpt": lambda p: _ckpt_edit(p, "epoch", 10 ** 30),
    "best.safetensors": lambda p: b"\xff" * 8 + b"{}",
    "study.json": lambda p: _json_edit(p, "wall_seconds", -1e300),
}


def _npz(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _torch(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _ckpt_edit(path: Path, key: str, value) -> bytes:
    state = torch.load(path, weights_only=True)
    state[key] = value
    return _torch(state)


def _sparse(path: Path, size: int) -> None:
    path.unlink()
    with open(path, "wb") as f:
        f.truncate(size)


def damage(path: Path, how: str) -> None:
    if how == "not-utf8":
        _rewrite(path, b"\xff\xfe\x00garbage " + path.read_bytes()[:40])
    elif how == "truncated":
        _rewrite(path, path.read_bytes()[: path.stat().st_size // 2])
    elif how == "wrong-types":
        _rewrite(path, WRONG_TYPES[path.name](path))
    elif how == "huge-values":
        _rewrite(path, HUGE_VALUES[path.name](path))
    elif how == "huge-file":
        _sparse(path, 9 << 30)  # past every reader's bound; sparse: nothing is written
    elif how == "empty":
        _rewrite(path, b"")
    elif how == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif how == "dev-zero":
        path.unlink()
        path.symlink_to("/dev/zero")
    elif how == "folder":
        path.unlink()
        path.mkdir()
    else:
        raise AssertionError(how)


DAMAGE = ("not-utf8", "truncated", "wrong-types", "huge-values", "huge-file", "empty", "fifo", "dev-zero", "folder")


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


# ------------------------------------------------------------------------------------------ the commands


def command(name: str, root: Path, target: Path, tmp: Path) -> list[str]:
    data = root / "data"
    return {
        "resume": ["train", "--resume", str(target), "--quiet"],
        "report": ["report", str(target), "--quiet"],
        "predict": ["predict", str(target), str(data / "val"), "--out", str(tmp / "p.csv"), "--quiet"],
        "export": ["export", str(target), "--format", "torchscript", "--out", str(tmp / "m.pt"), "--quiet"],
        "rerun": ["compare", "--data", str(data), "--seeds", "1", "--out", str(target), *FAST],
        "plan": ["plan", str(target), "--quiet"],
    }[name]


# (file, what folder it lives in, the commands that read it)
READERS = [
    ("config.yaml", "run", ("resume", "report", "predict", "export")),
    ("config.yaml", "study-run", ("rerun",)),
    ("summary.json", "run", ("resume", "report", "predict", "export")),
    ("summary.json", "study-run", ("rerun",)),
    ("metrics.csv", "run", ("report", "predict", "export")),
    ("last.ckpt", "run", ("resume",)),
    ("best.safetensors", "run", ("predict", "export")),
    ("study.json", "study", ("rerun", "report", "plan")),
]
CASES = [pytest.param(file, where, cmd, how, id=f"{file}-{where}-{cmd}-{how}")
         for file, where, cmds in READERS for cmd in cmds for how in DAMAGE]


@pytest.mark.parametrize("file,where,cmd,how", CASES)
def test_every_damaged_file_is_one_line_in_every_command_that_reads_it(made, tmp_path, capfd, monkeypatch, file,
                                                                      where, cmd, how):
    monkeypatch.setenv("REGLAB_DATA", str(made / "cache"))
    folder = tmp_path / "copy"
    shutil.copytree(made / ("run" if where == "run" else "study"), folder, symlinks=True)
    target = folder / ("basic/seed-42" if where == "study-run" else "")
    damage(target / file, how)
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(folder)
    capfd.readouterr()
    rc = main(command(cmd, made, folder, out))
    one_line_error(capfd, rc, file)
    assert snapshot(folder) == before
    assert not any(out.iterdir())


@pytest.mark.parametrize("how", ("fifo", "dev-zero", "folder"))
def test_a_lock_file_that_is_no_file_is_one_line(made, tmp_path, capfd, how):
    folder = tmp_path / "copy"
    shutil.copytree(made / "run", folder)
    lock = folder / ".reglab.lock"
    lock.write_text("{}")
    damage(lock, how)
    before = snapshot(folder)
    rc = main(["report", str(folder), "--quiet"])
    one_line_error(capfd, rc, ".reglab.lock", "delete it")
    assert snapshot(folder) == before


@pytest.mark.parametrize("how", ("not-utf8", "truncated", "empty", "fifo", "dev-zero", "folder", "huge-file"))
def test_a_damaged_decode_cache_is_rebuilt_with_one_note(made, tmp_path, capfd, monkeypatch, how):
    cache = tmp_path / "cache"
    shutil.copytree(made / "cache", cache)
    monkeypatch.setenv("REGLAB_DATA", str(cache))
    monkeypatch.setattr("reglab.curves.plot_curves", lambda *a, **k: None)
    meta = next(cache.glob("decoded/*/train.json"))
    damage(meta, how)
    capfd.readouterr()
    rc = main(["train", "--data", str(made / "data"), "--out", str(tmp_path / "run"), "--model", "basic", *FAST])
    _, err = capfd.readouterr()
    assert rc == 0, err
    notes = [line for line in err.splitlines() if "train.json" in line]
    assert len(notes) == 1 and "rebuilt automatically" in notes[0], err
    assert "Traceback" not in err
    assert meta.is_file() and json.loads(meta.read_text())["format"]  # rebuilt in place


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_predictions_file_is_named_in_the_report_and_on_stderr(made, tmp_path, capfd, how):
    """The documented exception: a report shows what a run folder holds, and names the damaged predictions.npz
    (README: When things go wrong) in one stderr line instead of refusing the whole report."""
    folder = tmp_path / "copy"
    shutil.copytree(made / "run", folder)
    damage(folder / "predictions.npz", how)
    capfd.readouterr()
    rc = main(["report", str(folder), "--quiet"])
    out, err = capfd.readouterr()
    assert rc == 0 and "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if "predictions.npz" in line]
    assert len(lines) == 1 and "is damaged" in lines[0], err


def test_an_exported_models_metadata_nested_past_the_parser_is_one_line(tmp_path):
    """The metadata reglab export writes into a model file is read back by `read_metadata` (and `predict` on the
    export): JSON nested deeper than Python's parser recurses is the same one-line refusal, not a RecursionError."""
    from reglab.errors import UserError
    from reglab.exported import _parse

    with pytest.raises(UserError, match="not a JSON object"):
        _parse("[" * 100_000, tmp_path / "model.onnx")
