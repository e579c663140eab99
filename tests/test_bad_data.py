"""Bad and unusual data, end to end, on a corpus the tests build themselves.

Each test builds a small ImageFolder tree (2 classes, a few good images) in tmp_path and plants one bad or
merely unusual file. Through the real CLI (`reglab train`):
- unusual but valid images (alpha, 16-bit, palette, CMYK, greyscale, 1x1, odd names) train (exit 0);
- bad ones exit 2 with exactly one stderr line that names the file or folder, and no traceback;
- with `--on-bad-image skip` the bad file is listed as skipped and training proceeds.
decode_image is also checked mode by mode: the pixels it returns, not just that it returns.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import PIL.Image
from reglab.cli import main
from reglab.data import load_data
from reglab.data.decode import MAX_PIXELS, DecodeError, decode_image
from reglab.data.folder import scan, show
from reglab.errors import UserError
from conftest import one_line_error

pytestmark = pytest.mark.usefixtures("no_curve_plots")
SIZE = 32
CLASSES = {"a": (220, 40, 40), "b": (40, 40, 220)}
GOOD = {"train": 2, "val": 1}  # good images per class
GOOD_TRAIN = GOOD["train"] * len(CLASSES)


@pytest.fixture(autouse=True)
def reglab_data(tmp_path, monkeypatch):
    """Every test gets its own decode cache (and dataset cache) under tmp_path."""
    d = tmp_path / "reglab-data"
    monkeypatch.setenv("REGLAB_DATA", str(d))
    return d



# ----------------------------------------------------------------------------------------------- corpus
def make_tree(root: Path) -> Path:
    for split, n in GOOD.items():
        for cls, colour in CLASSES.items():
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (20, 16), colour).save(d / f"good{i}.jpg", quality=95)
    return root


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def crafted_png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes | None = None) -> bytes:
    """A PNG written by hand: lets the header declare any size (bombs) or 16-bit RGB that Pillow cannot save."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(rows if rows is not None else b"\0")
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def rgb16_png(pixels: np.ndarray) -> bytes:
    """16-bit-per-channel RGB PNG (colour type 2, depth 16) from a (h, w, 3) uint16 array."""
    h, w, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(h))
    return crafted_png(w, h, 16, 2, rows)


def palette_image(transparency=None) -> tuple[Image.Image, dict]:
    p = Image.new("P", (4, 4), 0)
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    p.putpixel((0, 0), 1)
    kw = {} if transparency is None else {"transparency": transparency}
    return p, kw


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"


def _write(path: Path, data: bytes) -> list[Path]:
    path.write_bytes(data)
    return [path]


def _symlink_loop(d: Path) -> list[Path]:
    a, b = d / "loop_a.jpg", d / "loop_b.jpg"
    os.symlink(b, a)
    os.symlink(a, b)
    return [a, b]


def _fifo(d: Path) -> list[Path]:
    p = d / "pipe.jpg"
    os.mkfifo(p)
    return [p]


def _dangling(d: Path) -> list[Path]:
    p = d / "dangling.png"
    os.symlink(d / "does-not-exist.png", p)
    return [p]


def _big_jpeg() -> bytes:
    return encoded(Image.fromarray(noise(64, 64)), "JPEG", quality=95)


def _big_png() -> bytes:
    return encoded(Image.fromarray(noise(64, 64)), "PNG")


# name -> (planter(class_dir) -> planted paths, words the error reason must contain)
BAD = {
    "truncated_jpeg": (lambda d: _write(d / "truncated.jpg", _big_jpeg()[: len(_big_jpeg()) // 2]), "truncated"),
    "truncated_png": (lambda d: _write(d / "truncated.png", _big_png()[: len(_big_png()) // 2]), "truncated"),
    "zero_bytes": (lambda d: _write(d / "empty.jpg", b""), "not an image"),
    "text_as_jpg": (lambda d: _write(d / "notes.jpg", b"these are my notes, not a picture\n"), "not an image"),
    "bomb_100000x100000": (lambda d: _write(d / "bomb.png", crafted_png(100_000, 100_000, 8, 2)), "bomb"),
    "bomb_pillow_warning": (lambda d: _write(d / "bomb.png", crafted_png(10_000, 10_000, 8, 2)), "bomb"),
    "bomb_over_our_limit": (lambda d: _write(d / "bomb.png", crafted_png(8_500, 8_500, 8, 2)), "bomb"),
    "non_utf8_name": (lambda d: _write(d / os.fsdecode(b"bad\xff.jpg"), b"garbage"), "not an image"),
    "symlink_loop": (_symlink_loop, "symbolic links"),
    "dangling_symlink": (_dangling, "No such file"),
    "fifo": (_fifo, "not a regular file"),
    "eps_as_jpg": (lambda d: _write(d / "vector.jpg", EPS), "not an image"),
}


def train_cli(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), "--model", "basic", "--image-size", str(SIZE),
                 "--epochs", "1", "--quiet", *extra])



def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


# ------------------------------------------------------------------------------------------- bad files
@pytest.mark.parametrize("kind", list(BAD))
def test_bad_file_is_one_line_error_naming_it(kind, tmp_path, capfd):
    root = make_tree(tmp_path / "data")
    planter, why = BAD[kind]
    planted = planter(root / "train" / "a")
    rc = train_cli(root, tmp_path / "run")
    line = one_line_error(capfd, rc, show(planted[0]), why)
    assert "--on-bad-image skip" in line  # says what to do
    assert not (tmp_path / "run" / "summary.json").exists()


def test_every_bad_file_is_skipped_with_skip_policy(tmp_path, capfd):
    """All bad kinds at once (one per folder, both splits): listed as skipped, and the good images train."""
    root = make_tree(tmp_path / "data")
    planted = []
    for i, (planter, _) in enumerate(BAD.values()):
        d = root / ("train", "val")[i % 2] / ("a", "b")[(i // 2) % 2] / f"k{i}"
        d.mkdir()
        planted += planter(d)
    rc = train_cli(root, tmp_path / "run", "--on-bad-image", "skip")
    out, err = capfd.readouterr()
    assert rc == 0, (out, err)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert all(line.startswith("skipped ") for line in lines), err
    assert len(lines) == len(planted)
    for p in planted:
        assert sum(show(p) + ":" in line for line in lines) == 1, (p, err)
    s = summary(tmp_path / "run")
    assert s["status"] == "finished"
    assert s["dataset"]["train_size"] == GOOD_TRAIN
    assert s["dataset"]["val_size"] == GOOD["val"] * len(CLASSES)
    assert sorted(p for p, _ in s["dataset"]["skipped"]) == sorted(show(p) for p in planted)


def test_bad_file_in_val_split_is_named(tmp_path, capfd):
    root = make_tree(tmp_path / "data")
    bad = _write(root / "val" / "b" / "broken.png", _big_png()[:100])[0]
    one_line_error(capfd, train_cli(root, tmp_path / "run"), show(bad), "val" + os.sep + "b")


def test_a_bad_file_named_with_control_characters_is_one_escaped_line(tmp_path, capfd):
    """A file name may hold a newline and a terminal escape: the error stays one line and shows, never obeys, them."""
    root = make_tree(tmp_path / "data")
    bad = _write(root / "train" / "b" / "evil\n\x1b[2Jname.png", b"not an image")[0]
    line = one_line_error(capfd, train_cli(root, tmp_path / "run"), "evil\\n\\x1b[2Jname.png")
    assert "\x1b" not in line and str(bad.parent) in line


def test_skipped_file_in_cache_still_errors_without_skip(tmp_path, capfd):
    """The decode cache remembers skipped files; a later run with the default policy must not train silently."""
    root = make_tree(tmp_path / "data")
    bad = _write(root / "train" / "b" / "zero.png", b"")[0]
    assert train_cli(root, tmp_path / "run1", "--on-bad-image", "skip") == 0
    capfd.readouterr()
    one_line_error(capfd, train_cli(root, tmp_path / "run2"), show(bad))


def test_permission_denied_names_the_file(tmp_path, capfd, monkeypatch):
    """Tests run as root, where chmod 000 does not stop reads: simulate EACCES at open."""
    root = make_tree(tmp_path / "data")
    locked = root / "train" / "a" / "locked.jpg"
    shutil.copy(root / "train" / "a" / "good0.jpg", locked)
    real_open = PIL.Image.open

    def guarded_open(fp, *args, **kwargs):
        if str(fp) == str(locked):
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", guarded_open)
    with pytest.raises(DecodeError, match="permission denied"):
        decode_image(str(locked), SIZE)
    one_line_error(capfd, train_cli(root, tmp_path / "run"), show(locked), "permission denied")
    assert train_cli(root, tmp_path / "run2", "--on-bad-image", "skip") == 0
    assert show(locked) in capfd.readouterr().err
    assert summary(tmp_path / "run2")["dataset"]["train_size"] == GOOD_TRAIN


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_chmod_000_file_names_the_file(tmp_path, capfd):
    root = make_tree(tmp_path / "data")
    locked = root / "train" / "a" / "locked.jpg"
    shutil.copy(root / "train" / "a" / "good0.jpg", locked)
    locked.chmod(0)
    try:
        one_line_error(capfd, train_cli(root, tmp_path / "run"), show(locked), "permission denied")
    finally:
        locked.chmod(0o644)


def test_fifo_is_not_handed_to_the_decoder(tmp_path):
    """Opening a FIFO blocks until a writer appears: the scan must flag it instead of returning it as an image
    (checked here without decoding, so a regression fails instead of hanging)."""
    root = make_tree(tmp_path / "data")
    (fifo,) = _fifo(root / "train" / "a")
    train, _, unreadable = scan(root)
    assert str(fifo) not in [f.path for f in train.files]
    assert [p for p, _ in unreadable] == [str(fifo)]


# ------------------------------------------------------------------------------- unusual but valid files
def _grey16(d: Path) -> Path:
    a = np.full((6, 6), 32768, np.uint16)
    a[0] = 1000
    p = d / "grey16.png"
    Image.fromarray(a).save(p)
    return p


VALID = {
    "rgba_png": lambda d: Image.new("RGBA", (9, 7), (10, 200, 30, 0)).save(d / "alpha.png"),
    "la_png": lambda d: Image.new("LA", (9, 7), (90, 128)).save(d / "la.png"),
    "grey16_png": _grey16,
    "rgb16_png": lambda d: _write(d / "rgb16.png", rgb16_png(np.full((5, 5, 3), 40000, np.uint16))),
    "palette_png": lambda d: palette_image()[0].save(d / "palette.png"),
    "palette_transparent_png": lambda d: palette_image(0)[0].save(d / "ptrans.png", transparency=0),
    "palette_alpha_bytes_png": lambda d: palette_image()[0].save(d / "ptrans2.png", transparency=bytes([0, 128])),
    "palette_transparent_gif": lambda d: palette_image()[0].save(d / "ptrans.gif", transparency=0),
    "cmyk_jpeg": lambda d: Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(d / "cmyk.jpg", quality=95),
    "greyscale_jpeg": lambda d: Image.new("L", (16, 16), 77).save(d / "grey.jpg"),
    "bilevel_png": lambda d: Image.new("1", (16, 16), 1).save(d / "bilevel.png"),
    "one_pixel": lambda d: Image.new("RGB", (1, 1), (1, 2, 3)).save(d / "dot.png"),
    "tall_thin": lambda d: Image.new("RGB", (1, 300), (9, 9, 9)).save(d / "thin.png"),
    "png_named_jpg": lambda d: Image.new("RGB", (8, 8), (5, 6, 7)).save(d / "really-a-png.jpg", format="PNG"),
    "upper_case_ext": lambda d: Image.new("RGB", (8, 8), (5, 6, 7)).save(d / "LOUD.JPEG", format="JPEG"),
    "non_utf8_name": lambda d: Image.new("RGB", (8, 8), (5, 6, 7)).save(d / os.fsdecode(b"caf\xe9.png")),
    "float_tiff": lambda d: Image.fromarray(np.array([[0.0, 0.5], [1.0, np.nan]], np.float32)).save(d / "f.tif"),
}


@pytest.mark.parametrize("kind", list(VALID))
def test_unusual_but_valid_image_is_decoded(kind, tmp_path):
    root = make_tree(tmp_path / "data")
    VALID[kind](root / "train" / "a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a Pillow warning would reach the user's terminal
        data = load_data(str(root), SIZE, show_progress=False, workers=1)
    assert data.train.skipped == []
    assert len(data.train.labels) == GOOD_TRAIN + 1
    assert data.train.images.shape == (GOOD_TRAIN + 1, SIZE, SIZE, 3)


def test_unusual_but_valid_images_train(tmp_path, capfd):
    """All the unusual-but-valid kinds in one tree, through the CLI and its decode worker pool."""
    root = make_tree(tmp_path / "data")
    for i, plant in enumerate(VALID.values()):
        d = root / "train" / ("a", "b")[i % 2] / f"k{i}"
        d.mkdir()
        plant(d)
    rc = train_cli(root, tmp_path / "run")
    out, err = capfd.readouterr()
    assert rc == 0, (out, err)
    assert err == ""
    s = summary(tmp_path / "run")
    assert s["dataset"]["train_size"] == GOOD_TRAIN + len(VALID)
    assert s["dataset"]["skipped"] == []


def test_non_utf8_class_folder_trains(tmp_path, capfd):
    root = make_tree(tmp_path / "data")
    odd = os.fsdecode(b"cl\xe4ss")
    for split in GOOD:
        (root / split / "b").rename(root / split / odd)
    assert train_cli(root, tmp_path / "run") == 0, capfd.readouterr()
    assert summary(tmp_path / "run")["dataset"]["classes"] == ["a", odd]


# ------------------------------------------------------------------------------------- folder structure
def test_class_folder_without_images_is_named(tmp_path, capfd):
    root = make_tree(tmp_path / "data")
    empty = root / "train" / "c"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (empty / "README.txt").write_text("no pictures here")
    shutil.copytree(root / "val" / "a", root / "val" / "c")
    one_line_error(capfd, train_cli(root, tmp_path / "run"), show(empty), "no images")


def test_val_class_missing_from_train_is_named(tmp_path, capfd):
    root = make_tree(tmp_path / "data")
    shutil.copytree(root / "val" / "a", root / "val" / "zebra")
    one_line_error(capfd, train_cli(root, tmp_path / "run"), "only in val: zebra")


def test_train_class_missing_from_val_is_named(tmp_path, capfd):
    root = make_tree(tmp_path / "data")
    shutil.copytree(root / "train" / "a", root / "train" / "yak")
    one_line_error(capfd, train_cli(root, tmp_path / "run"), "only in train: yak")


@pytest.mark.parametrize("split", ["train", "val"])
def test_missing_split_is_named(split, tmp_path, capfd):
    root = make_tree(tmp_path / "data")
    shutil.rmtree(root / split)
    one_line_error(capfd, train_cli(root, tmp_path / "run"), f"no {split}/ folder")


def test_symlink_loop_as_class_folder_is_named(tmp_path, capfd):
    root = make_tree(tmp_path / "data")
    a, b = root / "train" / "loopy", root / "train" / "loopier"
    os.symlink(b, a)
    os.symlink(a, b)
    line = one_line_error(capfd, train_cli(root, tmp_path / "run"))
    assert show(a) in line or show(b) in line, line


def test_hidden_files_and_folders_are_ignored(tmp_path, capfd):
    root = make_tree(tmp_path / "data")
    for d in (root / "train", root / "train" / "a", root / "val" / "b"):
        (d / ".DS_Store").write_bytes(b"\0\0\0\1Bud1\0garbage")
    (root / "train" / "a" / "._good0.jpg").write_bytes(b"\0\5\26\7AppleDouble resource fork")
    (root / "train" / "a" / ".ipynb_checkpoints").mkdir()
    (root / "train" / "a" / ".ipynb_checkpoints" / "good0-checkpoint.jpg").write_bytes(b"not a jpeg")
    (root / "train" / ".hidden-class").mkdir()  # only in train, but hidden: no class mismatch
    (root / "train" / ".hidden-class" / "x.jpg").write_bytes(b"not a jpeg")
    (root / "train" / "b" / "labels.csv").write_text("file,label\n")  # not an image extension
    rc = train_cli(root, tmp_path / "run")
    out, err = capfd.readouterr()
    assert rc == 0, (out, err)
    assert err == ""
    s = summary(tmp_path / "run")
    assert s["dataset"]["classes"] == ["a", "b"]
    assert s["dataset"]["train_size"] == GOOD_TRAIN
    assert s["dataset"]["val_size"] == GOOD["val"] * len(CLASSES)


def test_nested_subfolders_in_a_class_are_found(tmp_path):
    root = make_tree(tmp_path / "data")
    deep = root / "train" / "a" / "2019" / "june"
    deep.mkdir(parents=True)
    shutil.copy(root / "train" / "a" / "good0.jpg", deep / "nested.jpg")
    data = load_data(str(root), SIZE, show_progress=False, workers=1)
    assert len(data.train.labels) == GOOD_TRAIN + 1
    assert str(deep / "nested.jpg") in data.train.paths


# ---------------------------------------------------------------------------- decode_image, mode by mode
@pytest.fixture
def strict_warnings():
    """Pillow warnings (e.g. palette transparency) would go to stderr: a valid image must decode silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def decode(path: Path, size: int = 4) -> np.ndarray:
    out = decode_image(str(path), size)
    assert out.dtype == np.uint8 and out.shape == (size, size, 3)
    return out


def test_decode_rgba_drops_alpha_without_compositing(tmp_path, strict_warnings):
    p = tmp_path / "a.png"
    Image.new("RGBA", (4, 4), (10, 200, 30, 0)).save(p)  # fully transparent: colour must survive
    assert (decode(p) == [10, 200, 30]).all()


def test_decode_la_replicates_grey(tmp_path, strict_warnings):
    p = tmp_path / "la.png"
    Image.new("LA", (4, 4), (90, 0)).save(p)
    assert (decode(p) == 90).all()


def test_decode_16bit_grey_is_scaled_not_clipped(tmp_path, strict_warnings):
    a = np.array([[0, 256, 32768, 65535]] * 4, np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    with Image.open(p) as im:
        assert im.mode.startswith("I")  # the case convert("RGB") would clip to white
    out = decode(p)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_decode_16bit_rgb_keeps_the_high_byte(tmp_path, strict_warnings):
    px = np.zeros((4, 4, 3), np.uint16)
    px[...] = (0x8000, 0x4000, 0xFFFF)
    p = tmp_path / "rgb16.png"
    p.write_bytes(rgb16_png(px))
    assert decode(p)[0, 0].tolist() == [128, 64, 255]


@pytest.mark.parametrize("how", ["none", "index", "alpha-bytes", "gif"])
def test_decode_palette(how, tmp_path, strict_warnings):
    img, _ = palette_image()
    p = tmp_path / ("p.gif" if how == "gif" else "p.png")
    kw = {"none": {}, "index": {"transparency": 0}, "alpha-bytes": {"transparency": bytes([0, 128])},
          "gif": {"transparency": 0}}[how]
    img.save(p, **kw)
    out = decode(p)
    assert out[0, 0].tolist() == [200, 100, 50]  # palette entry 1
    assert out[3, 3].tolist() == [10, 20, 30]  # entry 0: transparent in three variants, colour kept


def test_decode_cmyk_jpeg(tmp_path, strict_warnings):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(p, quality=95)  # pure cyan
    with Image.open(p) as im:
        assert im.mode == "CMYK"
    r, g, b = decode(p)[0, 0].astype(int)
    assert r < 20 and g > 235 and b > 235


def test_decode_greyscale_and_bilevel(tmp_path, strict_warnings):
    Image.new("L", (8, 8), 77).save(tmp_path / "l.png")
    Image.new("1", (8, 8), 1).save(tmp_path / "b.png")
    assert (decode(tmp_path / "l.png") == 77).all()
    assert (decode(tmp_path / "b.png") == 255).all()


def test_decode_one_pixel_fills_the_output(tmp_path, strict_warnings):
    Image.new("RGB", (1, 1), (1, 2, 3)).save(tmp_path / "dot.png")
    out = decode(tmp_path / "dot.png", SIZE)
    assert (out == [1, 2, 3]).all()


def test_decode_float_tiff_with_nan_is_defined(tmp_path, strict_warnings):
    a = np.array([[0.0, 0.5], [1.0, np.nan]], np.float32)
    Image.fromarray(a).save(tmp_path / "f.tif")
    out = decode(tmp_path / "f.tif", 2)[..., 0]
    assert out.tolist() == [[0, 128], [255, 0]]  # scaled to the finite range; NaN is black, not garbage
    Image.fromarray(np.full((2, 2), np.nan, np.float32)).save(tmp_path / "allnan.tif")
    assert (decode(tmp_path / "allnan.tif", 2) == 0).all()


def test_decode_non_square_is_resized_to_a_square(tmp_path, strict_warnings):
    Image.new("RGB", (40, 10), (50, 60, 70)).save(tmp_path / "wide.png")
    assert (decode(tmp_path / "wide.png", 8) == [50, 60, 70]).all()


@pytest.mark.parametrize("kind", [k for k in BAD if k.startswith(("truncated", "zero", "text", "bomb", "eps"))])
def test_decode_bad_files_raise_decode_error(kind, tmp_path):
    (path,) = BAD[kind][0](tmp_path)
    t = time.perf_counter()
    with pytest.raises(DecodeError, match=BAD[kind][1]):
        decode_image(str(path), SIZE)
    assert time.perf_counter() - t < 2.0  # a bomb is refused from its header, never allocated


def test_decode_bomb_limit_is_ours_below_pillows(tmp_path):
    """Between MAX_PIXELS and Pillow's own warning threshold only our check stands."""
    side = int(MAX_PIXELS**0.5) + 100
    assert side * side < PIL.Image.MAX_IMAGE_PIXELS
    p = tmp_path / "big.png"
    p.write_bytes(crafted_png(side, side, 8, 2))
    with pytest.raises(DecodeError, match="declared size"):
        decode_image(str(p), SIZE)


def test_eps_never_reaches_ghostscript(tmp_path, monkeypatch):
    """Pillow sniffs EPS by content (any extension) and renders it by running Ghostscript on the file."""
    from PIL import EpsImagePlugin

    calls = []

    def fake_ghostscript(*args, **kwargs):
        calls.append(args)
        raise OSError("ghostscript would have run here")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", fake_ghostscript)
    for name in ("vector.eps", "vector.jpg"):
        (tmp_path / name).write_bytes(EPS)
        with pytest.raises(DecodeError):
            decode_image(str(tmp_path / name), SIZE)
    assert calls == []


def test_load_data_with_user_error_for_all_bad(tmp_path):
    """Every image of a split undecodable under skip: one clear UserError, not an empty training set."""
    root = make_tree(tmp_path / "data")
    for p in (root / "train").rglob("*.jpg"):
        p.write_bytes(b"")
    with pytest.raises(UserError, match="no decodable images"):
        load_data(str(root), SIZE, on_bad_image="skip", show_progress=False, workers=1)
