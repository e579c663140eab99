"""Property-based fuzzing of the parsers of user input: the YAML config loader, the ImageFolder scanner and the
ablation's --variants.

Whatever the input, each returns a well-formed result or raises UserError (one line), never another exception;
and where an independent model of the rules can say what the answer must be, the result matches it.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reglab.config import FIELD_NAMES, MODEL_PRESETS, Config, load_config_file, resolve
from reglab.data.folder import image_extensions, scan
from reglab.errors import UserError
from reglab.variants import parse_variants, variant_names

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def reglab_data(tmp_path, monkeypatch):
    monkeypatch.setenv("REGLAB_DATA", str(tmp_path / "reglab-data"))


def one_line(e: UserError) -> str:
    msg = str(e)
    assert msg and "\n" not in msg and "\r" not in msg, msg
    return msg


def load_text(text: str | bytes):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "cfg.yaml"
        p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        return load_config_file(p)


# ----------------------------------------------------------------------------------------- config loader
YAML_BITS = st.sampled_from([
    "lr", "epochs", "widths", "model", "augment", ":", ": ", "- ", "\n", "  ", "[", "]", "{", "}", ",", "&a ", "*a",
    "!!python/object/apply:os.system ['true']", "!!binary ", "!!set ", "? ", "---\n", "...\n", "#", "'", '"', "|",
    ">", ".nan", ".inf", "-.inf", "1e3", "0x1F", "0o17", "~", "null", "yes", "no", "on", "2001-12-14", "<<: ",
    "\t", "%YAML 1.1\n", "!tag ", "\x00", "\ufeff", "1.5", "-3", "[32, 64]", "true", "regularized",
])


@FUZZ
@given(st.one_of(st.text(max_size=120), st.lists(YAML_BITS, max_size=25).map("".join)))
def test_config_loader_arbitrary_text_gives_dict_or_user_error(text):
    try:
        out = load_text(text)
    except UserError as e:
        one_line(e)
        return
    assert isinstance(out, dict)
    assert set(out) <= set(FIELD_NAMES)


@FUZZ
@given(st.binary(max_size=80))
def test_config_loader_arbitrary_bytes_gives_dict_or_user_error(data):
    try:
        out = load_text(data)
    except UserError as e:
        one_line(e)
        return
    assert isinstance(out, dict)


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=8)
KEYS = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=15), st.integers(), st.booleans())


@FUZZ
@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_config_loader_arbitrary_dicts(d):
    text = yaml.safe_dump(d, allow_unicode=True)
    unknown = [k for k in d if k not in FIELD_NAMES]
    try:
        out = load_text(text)
    except UserError as e:
        msg = one_line(e)
        if unknown:
            assert msg.startswith("unknown key(s)")
            assert msg.endswith("valid keys: " + ", ".join(FIELD_NAMES))  # says what is allowed
        else:
            assert msg.startswith("invalid value for ")
        return
    assert not unknown
    assert set(out) == set(d)
    _resolves_or_user_error(out)


def _typed_value(name: str):
    default = getattr(Config(), name)
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(-3, 600)
    if isinstance(default, float):
        return st.one_of(st.floats(-2, 2), st.sampled_from([0.0, 1.0, 1e-3, float("nan"), float("inf"), -float("inf")]))
    if isinstance(default, list):
        return st.lists(st.integers(-2, 300), max_size=5)
    return st.one_of(st.sampled_from(["regularized", "basic", "none", "seed", "fast", "adam", "sgd", "plateau",
                                      "cpu", "auto", "error", "skip", "flip", "rrc", "bf16", "../recipes/seed",
                                      "", "nope"]), st.text(max_size=8))


@FUZZ
@given(st.fixed_dictionaries({}, optional={f: _typed_value(f) for f in FIELD_NAMES}))
def test_config_typed_values_resolve_or_user_error(d):
    """Values of the right type (in and out of range, NaN and inf among them) through the whole resolve."""
    try:
        out = load_text(yaml.safe_dump(d))
    except UserError as e:
        assert one_line(e).startswith("invalid value for ")
        return
    _resolves_or_user_error(out)


def _resolves_or_user_error(values: dict):
    try:
        cfg = resolve(values, {})
    except UserError as e:
        one_line(e)
        return
    assert isinstance(cfg, Config)
    cfg.validate()  # idempotent: what resolve returns is valid
    for name in FIELD_NAMES:
        v = getattr(cfg, name)
        if isinstance(v, float):
            assert math.isfinite(v), (name, v)  # .nan slips through every `x <= 0` range check


def test_config_non_finite_floats_are_refused():
    for text in ("lr: .nan", "lr: .inf", "weight_decay: .nan", "min_lr: .nan", "plateau_min_delta: -.inf"):
        with pytest.raises(UserError, match="invalid value for"):
            load_text(text)


def test_config_unknown_key_lists_valid_keys():
    with pytest.raises(UserError) as info:
        load_text("lr: 0.1\nlearning_rate: 0.1\n")
    msg = one_line(info.value)
    assert "learning_rate" in msg
    assert all(name in msg for name in FIELD_NAMES)


def test_config_unknown_key_with_newline_stays_one_line():
    with pytest.raises(UserError) as info:
        load_text('"bad\\nkey": 1\n')
    assert "bad\\nkey" in one_line(info.value)


PAYLOADS = [
    "!!python/object/apply:os.system ['touch {m}']",
    "lr: !!python/object/apply:os.system ['touch {m}']",
    "epochs: !!python/object/apply:subprocess.call [['touch', '{m}']]",
    "model: !!python/object/new:os.system ['touch {m}']",
    "!!python/object:reglab.config.Config {{lr: 1}}",
    "lr: !!python/name:os.system",
    "widths: [!!python/object/apply:os.system ['touch {m}']]",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_config_python_tags_are_refused_never_run(payload, tmp_path):
    marker = tmp_path / "marker"
    text = payload.format(m=marker)
    with pytest.raises(UserError, match="not valid YAML"):
        load_text(text)
    assert not marker.exists()


def test_config_python_tag_payload_is_live(tmp_path):
    """The payloads above really run code under an unsafe loader: the refusal is not vacuous."""
    marker = tmp_path / "marker"
    yaml.unsafe_load(PAYLOADS[1].format(m=marker))
    assert marker.exists()


def laughs(key: str, levels: int = 9) -> str:
    """A 'billion laughs' value: nine levels of aliases, each nine times the last (~4e9 leaves if expanded)."""
    anchors = ["&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        anchors.append(f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return f"{key}: [" + ", ".join(anchors) + "]\n"


@pytest.mark.parametrize("key", ["widths", "lr", "model", "surprise"])
def test_config_alias_bomb_is_refused_cheaply(key):
    """safe_load shares aliased nodes, so loading is cheap; the error message must not expand them either."""
    t = time.perf_counter()
    with pytest.raises(UserError) as info:
        load_text(laughs(key))
    assert len(one_line(info.value)) < 2000
    assert time.perf_counter() - t < 5


def test_config_recipe_must_be_a_recipe_name(tmp_path):
    """`recipe:` names a bundled recipe; it is not a path to any YAML file on disk."""
    (tmp_path / "elsewhere.yaml").write_text("5\n")
    for name in (str(tmp_path / "elsewhere"), "../recipes/seed", ""):
        with pytest.raises(UserError, match="unknown recipe"):
            resolve({"recipe": name}, {})


# ----------------------------------------------------------------------------------------- folder scanner
# A tree is a dict name -> node; a node is ("file",), ("loop",) (a symlink to itself) or ("dir", tree).
IMAGE_EXTS = [".jpg", ".JPEG", ".png", ".Png"]
OTHER_EXTS = ["", ".txt", ".md", ".json"]
STEM = st.text(alphabet=list("ab_- 9\u00e9\udcff."), min_size=1, max_size=5)
NAME = st.builds(lambda hidden, stem, ext: ("." if hidden else "") + stem + ext,
                 st.sampled_from([False] * 4 + [True]), STEM, st.sampled_from(IMAGE_EXTS * 2 + OTHER_EXTS)).filter(
    lambda n: n not in (".", ".."))
LEAF = st.sampled_from([("file",)] * 6 + [("loop",)])
TREE = st.recursive(LEAF, lambda kids: st.dictionaries(NAME, kids, max_size=4).map(lambda d: ("dir", d)),
                    max_leaves=10)


@st.composite
def class_dirs(draw):
    tree = draw(st.dictionaries(NAME, TREE, max_size=3))
    if draw(st.integers(0, 9)) < 8:  # most classes hold at least one image, so many trees scan successfully
        tree["sure.jpg"] = ("file",)
    return ("dir", tree)


SPLIT_LEVEL = st.dictionaries(
    st.one_of(st.sampled_from(["n01", "n02", "cat", ".git", "dog.jpg"]), NAME),
    st.integers(0, 5).flatmap(lambda i: LEAF if i == 0 else class_dirs()),
    max_size=4,
)


@st.composite
def image_folders(draw):
    train_kind = draw(st.sampled_from(["dir"] * 12 + ["missing", "file", "loop"]))
    val_kind = draw(st.sampled_from(["same-classes"] * 10 + ["dir", "missing", "file"]))
    train = draw(SPLIT_LEVEL) if train_kind == "dir" else train_kind
    if val_kind == "same-classes" and isinstance(train, dict):
        val = {name: (draw(class_dirs()) if node[0] == "dir" else node) for name, node in train.items()}
    elif val_kind in ("dir", "same-classes"):
        val = draw(SPLIT_LEVEL)
    else:
        val = val_kind
    return {"train": train, "val": val}


def materialize(path: Path, node) -> None:
    if node == "missing":
        return
    if node in ("file", ("file",)):
        path.write_bytes(b"")
    elif node in ("loop", ("loop",)):
        os.symlink(path.name, path)  # a link to itself: ELOOP on stat
    else:
        tree = node if isinstance(node, dict) else node[1]
        path.mkdir()
        for name, child in tree.items():
            materialize(path / name, child)


def expected_scan(root: Path, spec: dict):
    """An independent model of scan's rules: 'error', or (files per split as {path: label}, unreadable paths)."""
    def visible(name):
        return not name.startswith(".")

    splits = {}
    for split in ("train", "val"):
        if not isinstance(spec[split], dict):
            return "error"
        entries = {n: node for n, node in spec[split].items() if visible(n)}
        if any(node == ("loop",) for node in entries.values()):
            return "error"  # a visible class-level entry that cannot even be stat'ed
        splits[split] = sorted(n for n, node in entries.items() if node[0] == "dir")
    if len(splits["train"]) < 2 or splits["train"] != splits["val"]:
        return "error"  # a classifier needs two classes, the same in both splits
    classes = splits["train"]
    files, unreadable = {"train": {}, "val": {}}, set()

    def walk(path: Path, tree: dict, label: int, split: str, found: list):
        for name, node in tree.items():
            if not visible(name):
                continue
            if node[0] == "dir":
                walk(path / name, node[1], label, split, found)
            elif os.path.splitext(name)[1].lower() in {e.lower() for e in IMAGE_EXTS}:
                found.append((str(path / name), node[0]))

    for split in ("train", "val"):
        for label, cls in enumerate(classes):
            found = []
            walk(root / split / cls, spec[split][cls][1], label, split, found)
            if not found:
                return "error"
            for p, kind in found:
                if kind == "file":
                    files[split][p] = label
                else:
                    unreadable.add(p)
    return files, unreadable


def test_scan_oracle_extensions_agree_with_pillow():
    exts = image_extensions()
    assert {e.lower() for e in IMAGE_EXTS} <= exts
    assert not {e.lower() for e in OTHER_EXTS} & exts


@FUZZ
@given(image_folders())
def test_scan_random_trees(spec):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "data"
        root.mkdir()
        for split in ("train", "val"):
            materialize(root / split, spec[split])
        want = expected_scan(root, spec)
        event("error" if want == "error" else f"ok, {len(want[1])} unreadable")
        try:
            train, val, unreadable = scan(root)
        except UserError as e:
            one_line(e)
            assert want == "error", (spec, str(e))
            return
        assert want != "error", spec
        files, bad = want
        assert train.classes == val.classes == sorted(train.classes)
        for split, got in (("train", train), ("val", val)):
            assert {f.path: f.label for f in got.files} == files[split]
            assert all(f.size == 0 and os.path.isabs(f.path) for f in got.files)
        assert {p for p, _ in unreadable} == bad
        assert all(isinstance(why, str) and why for _, why in unreadable)


@FUZZ
@given(st.sampled_from(["", "nope", "a/b", "~", ".", "train", "\udcff"]))
def test_scan_odd_roots(name):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / name if name else Path(d)
        try:
            scan(root)
        except UserError as e:
            one_line(e)
        else:
            pytest.fail(f"scan({root}) of a folder without train/ and val/ returned")


# ----------------------------------------------------------------------------------------- --variants
VARIANT_BITS = st.sampled_from([*variant_names(), "=", ",", " ", "0.4", "0", "-1", "nan", "inf", "1e999", "1_0", "x",
                                "/", "..", "\n", "\x00", "=="])


@FUZZ
@given(st.one_of(st.text(max_size=40), st.lists(VARIANT_BITS, max_size=12).map("".join)))
def test_variants_parse_into_configs_or_one_line_error(spec):
    """Whatever --variants holds: variants whose names are safe folder names and whose settings build a Config (or
    refuse in one line, e.g. mixup=inf), or one UserError line."""
    try:
        variants = parse_variants(spec)
    except UserError as e:
        one_line(e)
        return
    assert variants
    for name, overrides in variants.items():
        assert name and "/" not in name and name not in (".", "..") and name.isprintable(), name
        assert overrides["model"] in MODEL_PRESETS
        try:
            Config(**overrides)
        except UserError as e:
            one_line(e)
