"""safe_extract: crafted hostile archives are refused and write nothing outside (or inside) the target."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from reglab.data.extract import safe_extract
from reglab.errors import UserError


def _tar(path: Path, members, mode: str = "w:gz") -> Path:
    """members: (name, kind, payload) with kind file/dir/sym/lnk/chr/fifo; payload = bytes or link target."""
    with tarfile.open(path, mode) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "lnk": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("sym", "lnk"):
                info.linkname = payload
            tar.addfile(info)
    return path


def _zip(path: Path, members) -> Path:
    """members: (name, data, unix_mode or None)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture
def box(tmp_path):
    """target/ to extract into, and outside/ (an existing sibling) that an attack would write into."""
    (tmp_path / "outside").mkdir()
    return tmp_path / "target", tmp_path / "outside"


def _refused(archive: Path, target: Path, member: str) -> str:
    with pytest.raises(UserError) as err:
        safe_extract(archive, target)
    msg = str(err.value)
    assert str(archive) in msg and repr(member) in msg, msg
    return msg


def test_benign_tar_extracts_files_dirs_and_inside_links(tmp_path):
    archive = _tar(tmp_path / "ok.tgz", [
        ("./", "dir", None),
        ("data/train/a", "dir", None),
        ("data/train/a/1.png", "file", b"one"),
        ("data/train/b/2.png", "file", b"two"),  # parent folder not listed: created anyway
        ("data/val/a/1.png", "lnk", "data/train/a/1.png"),  # hard link -> copy
        ("data/alias", "sym", "train/a"),  # relative symlink inside
    ])
    target = tmp_path / "t"
    safe_extract(archive, target)
    assert (target / "data/train/a/1.png").read_bytes() == b"one"
    assert (target / "data/train/b/2.png").read_bytes() == b"two"
    assert (target / "data/val/a/1.png").read_bytes() == b"one"
    assert not (target / "data/val/a/1.png").is_symlink()
    assert (target / "data/alias").is_symlink() and (target / "data/alias/1.png").read_bytes() == b"one"


def test_benign_plain_tar_and_zip(tmp_path):
    plain = _tar(tmp_path / "ok.tar", [("x/y.txt", "file", b"tar")], mode="w")
    safe_extract(plain, tmp_path / "t1")
    assert (tmp_path / "t1/x/y.txt").read_bytes() == b"tar"
    z = _zip(tmp_path / "ok.zip", [("x/", b"", None), ("x/y.txt", b"zip", 0o100644), ("z.txt", b"z", None)])
    safe_extract(z, tmp_path / "t2")
    assert (tmp_path / "t2/x/y.txt").read_bytes() == b"zip"
    assert (tmp_path / "t2/z.txt").read_bytes() == b"z"


def test_absolute_member_refused(box):
    target, outside = box
    evil = outside / "abs.txt"
    archive = _tar(target.parent / "abs.tgz", [("fine.txt", "file", b"ok"), (str(evil), "file", b"pwned")])
    with tarfile.open(archive) as tar:  # the crafted name really is absolute in the archive
        assert tar.getnames()[1].startswith("/")
    _refused(archive, target, str(evil))
    assert not evil.exists()
    assert _listing(target) == []  # validated up front: the benign member before it was not written either


def test_dotdot_member_refused(box):
    target, outside = box
    archive = _tar(target.parent / "dd.tgz", [("a/../../outside/evil.txt", "file", b"pwned")])
    _refused(archive, target, "a/../../outside/evil.txt")
    assert not (outside / "evil.txt").exists()
    assert _listing(target) == []


@pytest.mark.parametrize("link", ["/etc/passwd", "../outside", "a/../../outside", "..\\outside"])
def test_symlink_outside_refused_and_nothing_written_through_it(box, link):
    target, outside = box
    archive = _tar(target.parent / "sym.tgz", [
        ("a", "dir", None),
        ("escape", "sym", link),
        ("escape/pwned.txt", "file", b"pwned"),  # the classic: write through the link just made
    ])
    _refused(archive, target, "escape")
    assert not (outside / "pwned.txt").exists()
    assert not os.path.lexists(target / "escape")


def test_symlink_redirected_by_a_later_link_is_caught(box):
    target, outside = box
    # `e` looks inside lexically ("d/../x" -> "x"), but once `d` -> "." exists it resolves to ../x.
    archive = _tar(target.parent / "chain.tgz", [
        ("e", "sym", "d/../outside/x"),
        ("d", "sym", "."),
        ("keep.txt", "file", b"k"),
    ])
    _refused(archive, target, "e")
    assert not os.path.lexists(target / "e") and not os.path.lexists(target / "d")  # links removed again


@pytest.mark.parametrize("link", ["/etc/passwd", "../outside/secret.txt"])
def test_hardlink_outside_refused(box, link):
    target, outside = box
    (outside / "secret.txt").write_bytes(b"secret")
    archive = _tar(target.parent / "hard.tgz", [("copy.txt", "lnk", link)])
    _refused(archive, target, "copy.txt")
    assert not (target / "copy.txt").exists()
    assert (outside / "secret.txt").read_bytes() == b"secret"


def test_hardlink_to_missing_member_refused(tmp_path):
    archive = _tar(tmp_path / "hard.tgz", [("copy.txt", "lnk", "nothere.txt")])
    _refused(archive, tmp_path / "t", "copy.txt")


@pytest.mark.parametrize("kind", ["chr", "fifo"])
def test_device_and_fifo_refused(tmp_path, kind):
    archive = _tar(tmp_path / "dev.tgz", [("ok.txt", "file", b"ok"), ("dev/thing", kind, None)])
    msg = _refused(archive, tmp_path / "t", "dev/thing")
    assert ("device" in msg) if kind == "chr" else ("FIFO" in msg)
    assert _listing(tmp_path / "t") == []


def test_zip_dotdot_refused(box):
    target, outside = box
    archive = _zip(target.parent / "dd.zip", [("ok.txt", b"ok", None), ("../outside/evil.txt", b"pwned", None)])
    _refused(archive, target, "../outside/evil.txt")
    assert not (outside / "evil.txt").exists()
    assert _listing(target) == []


def test_zip_backslash_dotdot_refused(box):
    target, outside = box
    archive = _zip(target.parent / "bs.zip", [("..\\outside\\evil.txt", b"pwned", None)])
    _refused(archive, target, "..\\outside\\evil.txt")
    assert not (outside / "evil.txt").exists()
    assert _listing(target.parent / "outside") == []


def test_zip_absolute_refused(box):
    target, outside = box
    evil = outside / "abs.txt"
    archive = _zip(target.parent / "abs.zip", [(str(evil), b"pwned", None)])
    with zipfile.ZipFile(archive) as zf:
        assert zf.namelist()[0].startswith("/")
    _refused(archive, target, str(evil))
    assert not evil.exists()


def test_zip_symlink_refused(box):
    target, outside = box
    archive = _zip(target.parent / "sym.zip", [("link", b"/etc/passwd", stat.S_IFLNK | 0o777)])
    msg = _refused(archive, target, "link")
    assert "symlink stored in a zip" in msg
    assert not os.path.lexists(target / "link")


def test_existing_symlink_in_target_is_not_written_through(box):
    target, outside = box
    target.mkdir()
    (target / "sub").symlink_to(outside)  # a pre-existing trap in a reused target
    archive = _tar(target.parent / "trap.tgz", [("sub/evil.txt", "file", b"pwned")])
    _refused(archive, target, "sub/evil.txt")
    assert not (outside / "evil.txt").exists()


def test_corrupt_and_unsupported_archives_give_user_errors(tmp_path):
    good = _tar(tmp_path / "good.tgz", [("a.txt", "file", b"x" * 10_000)])
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(good.read_bytes()[:40])
    with pytest.raises(UserError, match="cut.tgz"):
        safe_extract(cut, tmp_path / "t")
    with pytest.raises(UserError, match="unsupported"):
        safe_extract(tmp_path / "data.rar", tmp_path / "t")
