"""Files that are not what their name says (issue 20 §3): a FIFO, a device, a file too large to be what it
claims, an output place that cannot be written. Each is one line and exit 2, before any work, and never a hang.

A FIFO here is fed by a thread after a delay: code that opened it blind would block, then read what the thread
writes and go on (the test fails on its result), instead of hanging the suite."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from reglab.cli import main
from reglab.errors import UserError
from reglab.readfile import read_bytes, read_text
from conftest import make_tree, one_line_error


def _fifo_fed_later(path: Path, text: str, delay: float = 3.0) -> Path:
    """A FIFO at `path` whose writer appears after `delay` seconds (and gives up after 20 s without a reader)."""
    os.mkfifo(path)

    def feed():
        time.sleep(delay)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while nobody reads: never blocks
            except OSError:
                time.sleep(0.05)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(text)
            return

    threading.Thread(target=feed, daemon=True).start()
    return path


def test_the_reader_takes_only_regular_files_up_to_their_bound(tmp_path):
    good = tmp_path / "a.yaml"
    good.write_text("epochs: 2\n")
    assert read_text(good, 100, "config file") == "epochs: 2\n"
    with pytest.raises(UserError, match="more than a config file can be"):
        read_bytes(good, 5, "config file")
    with pytest.raises(UserError, match="a device, not a file"):
        read_bytes("/dev/zero", 100, "config file")
    with pytest.raises(UserError, match="a folder, not a file"):
        read_bytes(tmp_path, 100, "config file")
    with pytest.raises(UserError, match="not found"):
        read_bytes(tmp_path / "missing", 100, "config file")
    (tmp_path / "latin1.yaml").write_bytes(b"epochs: 2 # caf\xe9\n")
    with pytest.raises(UserError, match="not UTF-8 text"):
        read_text(tmp_path / "latin1.yaml", 100, "config file")
    fifo = _fifo_fed_later(tmp_path / "pipe.yaml", "epochs: 2\n")
    with pytest.raises(UserError, match="a FIFO"):
        read_bytes(fifo, 100, "config file")


@pytest.mark.parametrize("kind", ["fifo", "device", "huge"])
def test_a_config_that_is_not_a_config_file_is_one_line(tmp_path, capfd, kind):
    if kind == "fifo":
        path, needle = _fifo_fed_later(tmp_path / "c.yaml", "epochs: 1\n"), "FIFO"
    elif kind == "device":
        path, needle = Path("/dev/zero"), "a device"
    else:
        path, needle = tmp_path / "c.yaml", "more than a config file can be"
        path.write_text("# padding\n" * 200_000)  # 2 MB of valid YAML
    data = make_tree(tmp_path / "data")
    out = tmp_path / "run"
    rc = main(["train", "--config", str(path), "--data", str(data), "--out", str(out), "--epochs", "1",
               "--image-size", "16", "--device", "cpu", "--quiet"])
    one_line_error(capfd, rc, str(path.name), needle)
    assert not out.exists()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("special")
    data = make_tree(root / "data")
    out = root / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REGLAB_DATA", str(root / "cache"))
        assert main(["train", "--data", str(data), "--out", str(out), "--model", "basic", "--image-size", "16",
                     "--epochs", "1", "--device", "cpu", "--quiet"]) == 0
    return out


def test_predict_skips_a_fifo_in_a_folder_and_refuses_one_named(run, tmp_path, capfd):
    images = tmp_path / "images"
    make_tree(images)
    _fifo_fed_later(images / "val" / "a" / "pipe.png", "not an image")
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), str(images / "val"), "--out", str(out), "--quiet"]) == 0
    _, err = capfd.readouterr()
    assert "pipe.png: a FIFO (named pipe), not an image file" in err
    assert "pipe.png" not in out.read_text()
    rc = main(["predict", str(run), str(images / "val" / "a" / "pipe.png"), "--out", str(out), "--quiet"])
    one_line_error(capfd, rc, "pipe.png", "FIFO")


def _work_must_not_start(monkeypatch, target: str, name: str):
    import importlib

    def refuse(*a, **k):
        raise AssertionError(f"{name} ran before --out was checked")

    monkeypatch.setattr(importlib.import_module(target), name, refuse)


def test_predict_and_export_check_the_output_place_before_the_work(run, tmp_path, capfd, monkeypatch):
    images = tmp_path / "images"
    make_tree(images)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    _work_must_not_start(monkeypatch, "reglab.trained", "decode_image")
    rc = main(["predict", str(run), str(images / "val"), "--out", str(blocker / "p.csv"), "--quiet"])
    one_line_error(capfd, rc, "--out", "is a file, not a folder")
    rc = main(["predict", str(run), str(images / "val"), "--out", str(tmp_path), "--quiet"])
    one_line_error(capfd, rc, "--out", "is a folder")
    _work_must_not_start(monkeypatch, "reglab.exported", "export_model")
    rc = main(["export", str(run), "--format", "torchscript", "--out", str(blocker / "m.pt")])
    one_line_error(capfd, rc, "export output", "is a file, not a folder")
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("setting,needle", [
    ("widths: [100000000]", "widths"), ("widths: [8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]", "at most 10 blocks"),
    ("dense_width: 1000000000000", "dense_width"), ("convs_per_block: 100000", "convs_per_block"),
    ("batch_size: 10000000000", "batch_size"), ("epochs: 1000000000", "epochs")])
def test_sizes_are_bounded_before_anything_is_built(tmp_path, capfd, setting, needle):
    """Each of these once built layers for minutes or asked the allocator for terabytes (a traceback)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(setting + "\n")
    one_line_error(capfd, main(["summary", "regularized", "--config", str(cfg)]), needle, "at most")
    one_line_error(capfd, main(["summary", "basic", "--num-classes", "1000000000"]), "num_classes", "at most")


def test_the_largest_allowed_model_is_described_without_allocating_and_refused_for_training(tmp_path, capfd):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("widths: [16384, 16384, 16384, 16384, 16384]\nconvs_per_block: 16\nimage_size: 1024\n")
    assert main(["summary", "regularized", "--config", str(cfg)]) == 0  # ~195 billion parameters, on meta
    out, _ = capfd.readouterr()
    assert "Total params: " in out
    data, run = make_tree(tmp_path / "data"), tmp_path / "run"
    rc = main(["train", "--config", str(cfg), "--data", str(data), "--out", str(run), "--device", "cpu"])
    one_line_error(capfd, rc, "needs at least", "GiB")
    assert not run.exists()


def test_a_selection_split_that_holds_out_nothing_is_refused_not_replaced_by_val(tmp_path, capfd):
    """One training image a class: nothing can be held out, and choosing on val/ instead was silent (issue 20 §3)."""
    data, out = make_tree(tmp_path / "data", per_class=1), tmp_path / "run"
    rc = main(["train", "--data", str(data), "--out", str(out), "--selection-split", "0.2", "--epochs", "1",
               "--image-size", "16", "--device", "cpu", "--quiet"])
    one_line_error(capfd, rc, "--selection-split 0.2", "holds out no training image")
    assert not out.exists()
