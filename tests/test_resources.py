"""Running out of things: disk, permission, numerical sanity, GPU memory.

- an unwritable or full output or cache location is one line (exit 2), and leaves no half-written file;
- a damaged decode cache is detected (length, CRC) and rebuilt on the next load;
- a diverging run (non-finite loss) stops with exit 1 and a summary marked failed, keeping earlier best weights;
- CUDA out of memory is one line with what to do.
"""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import reglab.trainer
from reglab.checkpoint import load_weights
from reglab.cli import main
from reglab.data import load_data
from reglab.data.cache import cache_key, decode_split
from reglab.data.folder import scan
from reglab.errors import UserError
from conftest import one_line_error, make_tree as _make_tree

pytestmark = pytest.mark.usefixtures("no_curve_plots")
SIZE = 32


@pytest.fixture(autouse=True)
def reglab_data(tmp_path, monkeypatch):
    d = tmp_path / "reglab-data"
    monkeypatch.setenv("REGLAB_DATA", str(d))
    return d



def make_tree(root: Path, per_class: int = 3) -> Path:
    return _make_tree(root, per_class=per_class, val=1, shape=(24, 20))


@pytest.fixture
def data(tmp_path) -> Path:
    return make_tree(tmp_path / "data")


def train_cli(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), "--model", "basic", "--image-size", str(SIZE),
                 "--epochs", "1", "--quiet", *extra])



def enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------- unwritable output / cache
def test_out_under_a_regular_file(data, tmp_path, capfd):
    blocker = tmp_path / "a-file"
    blocker.write_text("I am not a folder")
    one_line_error(capfd, train_cli(data, blocker / "run"), str(blocker / "run"))


def test_out_is_a_regular_file(data, tmp_path, capfd):
    blocker = tmp_path / "a-file"
    blocker.write_text("I am not a folder")
    one_line_error(capfd, train_cli(data, blocker), str(blocker), "not a directory")


def test_cache_dir_under_a_regular_file(data, tmp_path, capfd, monkeypatch):
    blocker = tmp_path / "cache-file"
    blocker.write_text("I am not a folder")
    monkeypatch.setenv("REGLAB_DATA", str(blocker / "cache"))
    one_line_error(capfd, train_cli(data, tmp_path / "run"), "cache directory", str(blocker))


@pytest.mark.parametrize("target", ["config.yaml", "last.ckpt", "best.safetensors", "summary.json"])
def test_disk_full_writing_run_outputs(target, data, tmp_path, capfd, monkeypatch):
    """ENOSPC at the rename that commits `target`: one line naming it; no temporary file left behind."""
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).name == target:
            enospc()
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "run"
    one_line_error(capfd, train_cli(data, out), "no space left on device", str(out / target))
    assert leftovers(out) == []
    assert not (out / target).exists()
    assert not (out / "summary.json").exists() or json.loads((out / "summary.json").read_text())["status"] != "finished"


def test_disk_full_at_mkstemp_for_run_outputs(data, tmp_path, capfd, monkeypatch):
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*a, **k):
        if str(k.get("prefix", "")).startswith(".metrics.csv"):
            enospc()
        return real_mkstemp(*a, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    out = tmp_path / "run"
    one_line_error(capfd, train_cli(data, out), "no space left on device", "metrics.csv")
    assert leftovers(out) == []


# ------------------------------------------------------------------------------------ full disk, cache
def cache_folder(reglab_data: Path, data: Path, size: int = SIZE) -> Path:
    """The train split's cache entry (each split has its own key)."""
    folder = reglab_data / "decoded" / cache_key(scan(data)[0], size)
    assert folder.is_dir()
    return folder


def assert_no_half_written_entry(reglab_data: Path, data: Path, size: int = SIZE):
    folder = cache_folder(reglab_data, data, size)
    assert leftovers(folder) == []
    assert not (folder / "train.json").exists()  # the commit marker: without it nothing is trusted


def load(data: Path):
    return load_data(str(data), SIZE, show_progress=False, workers=1)


@pytest.mark.parametrize("where", ["allocate", "rename", "marker"])
def test_disk_full_while_writing_cache(where, data, reglab_data, monkeypatch):
    if where == "allocate":
        if not hasattr(os, "posix_fallocate"):
            pytest.skip("no posix_fallocate on this platform")
        monkeypatch.setattr(os, "posix_fallocate", enospc)
    elif where == "rename":
        real_replace = os.replace
        monkeypatch.setattr(os, "replace", lambda s, d, *a, **k: enospc() if Path(d).name == "train-images.u8"
                            else real_replace(s, d, *a, **k))
    else:
        real_mkstemp = tempfile.mkstemp
        monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: enospc() if str(k.get("prefix", "")).startswith(
            ".train.json") else real_mkstemp(*a, **k))
    with pytest.raises(UserError, match="no space left on device") as info:
        load(data)
    assert "\n" not in str(info.value)
    assert_no_half_written_entry(reglab_data, data)
    monkeypatch.undo()
    monkeypatch.setenv("REGLAB_DATA", str(reglab_data))
    first, second = load(data), load(data)
    assert not first.train.from_cache and second.train.from_cache
    assert np.array_equal(first.train.images, second.train.images)


FULL_DISK_SCRIPT = textwrap.dedent("""
    import sys
    from reglab.data import load_data
    from reglab.errors import UserError
    try:
        load_data(sys.argv[1], 128, show_progress=False, workers=int(sys.argv[2]))
    except UserError as e:
        print("USERERROR", e)
        sys.exit(2)
    print("LOADED")
""")


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 256 KiB filesystem (needs root and mount rights; skipped elsewhere)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    mnt = tmp_path / "full"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_really_full_disk_while_writing_cache(workers, data, tiny_tmpfs):
    """On a real full filesystem a sparse memory-mapped cache file dies of SIGBUS (workers=1: the process;
    workers=2: a BrokenProcessPool traceback). Run in a subprocess so a crash cannot take pytest with it."""
    env = {**os.environ, "REGLAB_DATA": str(tiny_tmpfs / "cache")}
    r = subprocess.run([sys.executable, "-c", FULL_DISK_SCRIPT, str(data), str(workers)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "USERERROR no space left on device" in r.stdout
    assert "Traceback" not in r.stderr
    assert_no_half_written_entry(tiny_tmpfs / "cache", data, 128)


def test_decode_worker_death_is_one_line(data, reglab_data, monkeypatch):
    """A worker killed mid-decode (the OOM killer, a decoder segfault): a UserError, not BrokenProcessPool."""
    import reglab.data.cache

    real = reglab.data.cache.decode_image

    def dying(path, size):
        if path.endswith("1.png"):
            os._exit(137)
        return real(path, size)

    monkeypatch.setattr(reglab.data.cache, "decode_image", dying)
    train, _, _ = scan(data)
    with pytest.raises(UserError, match="decode worker died") as info:
        decode_split(train, SIZE, workers=2, show_progress=False)
    assert "\n" not in str(info.value)
    assert_no_half_written_entry(reglab_data, data)


# ------------------------------------------------------------------------------------ damaged cache
@pytest.mark.parametrize("damage", ["flip-a-byte", "truncate", "extend", "garbage-json", "wrong-count",
                                    "missing-images"])
def test_damaged_cache_is_detected_and_rebuilt(damage, data, reglab_data):
    first = load(data)
    assert not first.train.from_cache
    assert load(data).train.from_cache
    folder = cache_folder(reglab_data, data)
    images, meta = folder / "train-images.u8", folder / "train.json"
    if damage == "flip-a-byte":
        raw = bytearray(images.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        images.write_bytes(bytes(raw))
    elif damage == "truncate":
        images.write_bytes(images.read_bytes()[:-1])
    elif damage == "extend":
        images.write_bytes(images.read_bytes() + b"\0" * SIZE * SIZE * 3)
    elif damage == "garbage-json":
        meta.write_text("{not json")
    elif damage == "wrong-count":
        m = json.loads(meta.read_text())
        m["count"] -= 1
        meta.write_text(json.dumps(m))
    else:
        images.unlink()
    rebuilt = load(data)
    assert not rebuilt.train.from_cache
    assert np.array_equal(rebuilt.train.images, first.train.images)
    assert np.array_equal(rebuilt.train.labels, first.train.labels)
    again = load(data)
    assert again.train.from_cache
    assert np.array_equal(again.train.images, first.train.images)


def test_changed_image_invalidates_cache(data, reglab_data):
    first = load(data)
    p = data / "train" / "a" / "0.png"
    Image.new("RGB", (24, 20), (1, 2, 3)).save(p)
    os.utime(p, ns=(1, 1))  # a new mtime (and maybe size) means a new key
    second = load(data)
    assert not second.train.from_cache
    assert not np.array_equal(first.train.images, second.train.images)


def test_stale_temporary_from_a_killed_run_is_ignored(data, reglab_data):
    first = load(data)
    folder = cache_folder(reglab_data, data)
    (folder / "train.json").unlink()
    (folder / ".train-images.u8.99999.tmp").write_bytes(b"half")
    rebuilt = load(data)
    assert not rebuilt.train.from_cache
    assert np.array_equal(rebuilt.train.images, first.train.images)


def test_decode_split_workers_agree(data, tmp_path):
    """The process pool writes through a memory map into a preallocated file: same bytes as in-process."""
    train, _, _ = scan(data)
    one = decode_split(train, SIZE, workers=1, root=tmp_path / "c1", show_progress=False)
    two = decode_split(train, SIZE, workers=2, root=tmp_path / "c2", show_progress=False)
    assert np.array_equal(one.images, two.images)


# ------------------------------------------------------------------------------------ non-finite loss
def test_diverging_run_fails_with_exit_1(data, tmp_path, capfd):
    out = tmp_path / "run"
    rc = train_cli(data, out, "--lr", "1e30", "--epochs", "3")
    line = one_line_error(capfd, rc, "run failed", "non-finite loss", code=1)
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "failed"
    assert "non-finite loss at epoch 1" in s["failure"]
    assert s["epochs_run"] == 1  # stopped at once, not 3 epochs of NaN
    assert not (out / "best.safetensors").exists()  # no epoch was good: no weights are passed off as best
    assert "resume" not in line


def test_divergence_after_a_good_epoch_keeps_its_best_weights(data, tmp_path, capfd, monkeypatch):
    """Epoch 1 is fine, epoch 2's val loss is NaN: failed, but epoch 1's weights stay as best and are restored."""
    real_evaluate = reglab.trainer.Trainer.evaluate_members
    calls = []

    def evaluate(self, which):
        loss, correct, n = real_evaluate(self, which)
        calls.append(which)
        if len(calls) == 2:  # the second epoch's evaluation
            loss = loss * math.nan
        return loss, correct, n

    monkeypatch.setattr(reglab.trainer.Trainer, "evaluate_members", evaluate)
    out = tmp_path / "run"
    rc = train_cli(data, out, "--epochs", "3")
    one_line_error(capfd, rc, "non-finite loss at epoch 2", code=1)
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "failed" and s["best_epoch"] == 1 and s["epochs_run"] == 2
    best = load_weights(out / "best.safetensors")
    assert all(torch.isfinite(t).all() for t in best.values())
    assert math.isfinite(s["restored_val_loss"])
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + both epochs, the failing one included
    assert math.isclose(s["restored_val_loss"], float(rows[1].split(",")[3]), rel_tol=1e-5)


def test_non_finite_lr_flag_is_refused(data, tmp_path, capfd):
    one_line_error(capfd, train_cli(data, tmp_path / "run", "--lr", "inf"), "lr")


# ------------------------------------------------------------------------------------ CUDA out of memory
def test_cuda_oom_during_training_is_one_line(data, tmp_path, capfd, monkeypatch):
    """Simulated (the allocator's exception raised from a training step), so it runs without a GPU."""
    def oom(self):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(reglab.trainer.Trainer, "train_epoch", oom)
    one_line_error(capfd, train_cli(data, tmp_path / "run", "--batch-size", "16"), "out of memory",
                   "--batch-size 8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a real CUDA out-of-memory needs a CUDA GPU")
def test_real_cuda_oom_is_one_line(tmp_path, capfd):
    data = make_tree(tmp_path / "big", per_class=16)
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(0.002)  # ~160 MB of an 80 GB card
    try:
        rc = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--model", "regularized",
                   "--image-size", "512", "--batch-size", "32", "--epochs", "1", "--quiet", "--device", "cuda"])
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    one_line_error(capfd, rc, "out of memory", "--batch-size 16")
