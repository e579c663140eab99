"""resolve_data / download against a real HTTP server on 127.0.0.1: verify, cache, refuse, clean up."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import tarfile
import threading
from pathlib import Path

import pytest
from PIL import Image

from reglab.data import sources
from reglab.data.sources import SOURCES, Source, download, resolve_data
from reglab.errors import UserError

NAME = "imagenette2-160"  # the default name, redirected to the local server by `entry`


def _tiny_imagefolder_tgz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for split in ("train", "val"):
            for label, colour in (("n01440764", (200, 30, 30)), ("n02102040", (30, 30, 200))):
                for i in range(3 if split == "train" else 1):
                    png = io.BytesIO()
                    Image.new("RGB", (8, 8), colour).save(png, format="PNG")
                    info = tarfile.TarInfo(f"tiny/{split}/{label}/{i}.png")
                    info.size = png.tell()
                    tar.addfile(info, io.BytesIO(png.getvalue()))
    return buf.getvalue()


BODY = _tiny_imagefolder_tgz()
SHA = hashlib.sha256(BODY).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # close after each response, so a short body really ends short
    hits: list[str]

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.hits.append(self.path)
        if self.path == "/missing.tgz":
            self.send_error(404)
            return
        body, length = BODY, len(BODY)
        if self.path == "/short.tgz":  # promises more than it sends
            body = BODY[: len(BODY) // 2]
        self.send_response(200)
        if self.path != "/nolength.tgz":
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    hits: list[str] = []
    handler = type("Handler", (_Handler,), {"hits": hits})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def entry(monkeypatch, server):
    """Point the default dataset name at the local server; http allowed as for a test server."""
    base, _ = server
    monkeypatch.setenv("REGLAB_ALLOW_HTTP", "1")
    src = Source(url=f"{base}/data.tgz", size=len(BODY), sha256=SHA, subdir="tiny")
    monkeypatch.setitem(SOURCES, NAME, src)
    return src


def _leftovers(cache: Path) -> list[str]:
    """Everything in the cache except the lock file (permanent by design) and the datasets/ container."""
    if not cache.exists():
        return []
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if not p.name.endswith(".lock") and p != cache / "datasets")


def test_download_verify_extract_then_reuse_without_network(tmp_path, server, entry):
    _, hits = server
    root = resolve_data(NAME, cache_dir=tmp_path, progress=False)
    assert (root / "train" / "n01440764" / "0.png").is_file()
    assert sorted(p.name for p in (root / "val").iterdir()) == ["n01440764", "n02102040"]
    with Image.open(root / "val" / "n02102040" / "0.png") as im:
        assert im.size == (8, 8)
    assert hits == ["/data.tgz"]
    assert not list(tmp_path.rglob("*.tgz"))  # archive removed after a good extraction
    assert resolve_data(NAME, cache_dir=tmp_path, progress=False) == root
    assert hits == ["/data.tgz"]  # second call: no request at all


def test_cache_dir_defaults_to_reglab_data_env(tmp_path, monkeypatch, server, entry):
    monkeypatch.setenv("REGLAB_DATA", str(tmp_path / "envcache"))
    root = resolve_data(NAME, progress=False)
    assert (tmp_path / "envcache") in root.parents and (root / "train").is_dir()


def test_progress_bar_path_works(tmp_path, server, entry, capsys):
    root = resolve_data(NAME, cache_dir=tmp_path, progress=True)
    assert (root / "train").is_dir()
    assert "downloading" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["short_body", "size_expected_larger", "no_length_short", "bad_sha256", "http_404"])
def test_failed_transfer_leaves_nothing(tmp_path, server, entry, case):
    base, hits = server
    if case == "short_body":
        entry.url = f"{base}/short.tgz"
    elif case == "size_expected_larger":
        entry.size = len(BODY) + 10
    elif case == "no_length_short":  # no Content-Length: only the expected size can tell
        entry.url, entry.size, entry.sha256 = f"{base}/nolength.tgz", len(BODY) + 10, None
    elif case == "bad_sha256":
        entry.sha256 = "0" * 64
    else:
        entry.url = f"{base}/missing.tgz"
    with pytest.raises(UserError) as err:
        resolve_data(NAME, cache_dir=tmp_path, progress=False)
    assert len(hits) == 1 and "--data" in str(err.value)
    assert _leftovers(tmp_path) == []  # no temp file, no archive, no extracted or partial directory
    if case == "bad_sha256":
        assert "sha256" in str(err.value)


def test_download_writes_dest_only_when_verified(tmp_path, server):
    base, _ = server
    dest = tmp_path / "d" / "file.tgz"
    download(f"{base}/data.tgz", dest, sha256=SHA, size=len(BODY), progress=False, allow_http=True)
    assert dest.read_bytes() == BODY
    with pytest.raises(UserError, match="cut short"):
        download(f"{base}/short.tgz", tmp_path / "e" / "file.tgz", progress=False, allow_http=True)
    assert _leftovers(tmp_path / "e") == []


def test_keyboard_interrupt_mid_transfer_cleans_up(tmp_path, monkeypatch):
    class Response(io.BytesIO):
        headers = {"Content-Length": "100"}

        def read(self, n=-1):
            raise KeyboardInterrupt

    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda *a, **k: Response())
    with pytest.raises(UserError, match="interrupted"):
        download("https://example.invalid/x.tgz", tmp_path / "x.tgz", progress=False)
    assert _leftovers(tmp_path) == []


def test_no_network_names_url_and_suggests_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("REGLAB_ALLOW_HTTP", "1")
    with socket.socket() as s:  # a port that was free a moment ago: nobody listens, connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/imagenette2-160.tgz"
    monkeypatch.setitem(SOURCES, NAME, Source(url=url, size=None, sha256=None, subdir="tiny"))
    with pytest.raises(UserError) as err:
        resolve_data(NAME, cache_dir=tmp_path, progress=False)
    assert url in str(err.value) and "--data" in str(err.value)
    assert _leftovers(tmp_path) == []


def test_plain_http_refused_unless_allowed(tmp_path, server, monkeypatch):
    base, hits = server
    monkeypatch.delenv("REGLAB_ALLOW_HTTP", raising=False)
    with pytest.raises(UserError, match="https"):
        download(f"{base}/data.tgz", tmp_path / "x.tgz", progress=False)
    with pytest.raises(UserError, match="https"):
        download("file:///etc/passwd", tmp_path / "x.tgz", progress=False)
    assert hits == [] and _leftovers(tmp_path) == []
    monkeypatch.setenv("REGLAB_ALLOW_HTTP", "1")
    download(f"{base}/data.tgz", tmp_path / "x.tgz", progress=False)
    assert hits == ["/data.tgz"]


def test_unknown_name_lists_known_names(tmp_path):
    with pytest.raises(UserError) as err:
        resolve_data("imagenet-9000", cache_dir=tmp_path)
    msg = str(err.value)
    assert all(name in msg for name in SOURCES) and "directory" in msg


def test_directory_specs(tmp_path, monkeypatch):
    (tmp_path / "mine" / "train").mkdir(parents=True)
    assert resolve_data(str(tmp_path / "mine")) == tmp_path / "mine"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data("~/mine") == tmp_path / "mine"
    monkeypatch.chdir(tmp_path)
    assert resolve_data("mine") == Path("mine")  # an existing directory wins over the name lookup
    with pytest.raises(UserError, match="does not exist"):
        resolve_data("./nope")
    with pytest.raises(UserError, match="does not exist"):
        resolve_data(str(tmp_path / "nope" / "deeper"))


def test_unmarked_directory_is_not_trusted_or_deleted(tmp_path, server, entry):
    _, hits = server
    foreign = tmp_path / "datasets" / NAME / "tiny"
    (foreign / "train").mkdir(parents=True)
    (foreign / "val").mkdir()
    with pytest.raises(UserError, match="not a complete reglab download"):
        resolve_data(NAME, cache_dir=tmp_path, progress=False)
    assert foreign.is_dir() and hits == []


def test_interrupted_extraction_is_cleaned_and_redone(tmp_path, server, entry, monkeypatch):
    _, hits = server
    real_extract = sources.safe_extract

    def dies_halfway(archive, target):
        real_extract(archive, target)
        raise KeyboardInterrupt

    monkeypatch.setattr(sources, "safe_extract", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        resolve_data(NAME, cache_dir=tmp_path, progress=False)
    cache = tmp_path / "datasets"
    assert not (cache / NAME).exists()
    assert not list(cache.glob("*.partial"))
    assert (cache / "data.tgz").is_file()  # the verified archive is kept for the retry
    # A partial directory left by a process killed outright is swept on the next run.
    (cache / f".{NAME}.killed.partial" / "junk").mkdir(parents=True)
    monkeypatch.setattr(sources, "safe_extract", real_extract)
    root = resolve_data(NAME, cache_dir=tmp_path, progress=False)
    assert (root / "train").is_dir() and hits == ["/data.tgz"]  # archive reused, not downloaded again
    assert _leftovers(cache) == sorted([NAME, *(str(p.relative_to(cache)) for p in (cache / NAME).rglob("*"))])


def test_archive_without_train_val_is_refused(tmp_path, server, entry):
    entry.subdir = "elsewhere"
    with pytest.raises(UserError, match="does not contain"):
        resolve_data(NAME, cache_dir=tmp_path, progress=False)
    assert not (tmp_path / "datasets" / NAME).exists()
    assert not list((tmp_path / "datasets").glob("*.partial"))


def test_registry_entries_are_pinned_https_tarballs():
    assert sources.DEFAULT in SOURCES
    assert {"imagenette2-160", "imagenette2-320", "imagewoof2-160", "imagenette-160"} <= set(SOURCES)
    for name, src in SOURCES.items():
        assert src.url.startswith("https://s3.amazonaws.com/fast-ai-imageclas/") and src.url.endswith(".tgz")
        assert src.subdir == name
        assert src.size is not None and src.size > 50_000_000
        assert src.sha256 is None or (len(src.sha256) == 64 and int(src.sha256, 16) >= 0)
