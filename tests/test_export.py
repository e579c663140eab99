"""Export (reglab.exported): a model with its preprocessing inside gives, in its own runtime (onnxruntime,
torch.jit), the probabilities reglab's own predict path gives, for any batch size, and carries its class names.

One seeded `regularized` model at 32 px (BatchNorm statistics moved off their defaults) is exported once per
format for the module; ten real images (one per class) come from the mini val set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reglab.config import resolve
from reglab.data.decode import decode_image
from reglab.data.loader import to_float
from reglab.errors import UserError
from reglab.exported import Preprocessed, export_model, read_metadata
from reglab.models import build_model

SIZE = 32
TOL = 1e-4
META = {"model": "regularized", "seed": 7, "run": "runs/x/seed-7", "restored_val_accuracy": 0.5}


def _onnx_packages():
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name)


@pytest.fixture(scope="module")
def cfg():
    return resolve(flag_values={"model": "regularized", "image_size": SIZE})


@pytest.fixture(scope="module")
def model(cfg):
    """Seeded, eval mode, BatchNorm running statistics set (exactly) from one train-mode pass on random images:
    far from their (0, 1) defaults, so the export must carry them, and the outputs differ between images."""
    torch.manual_seed(0)
    m = build_model(cfg, 10)
    bns = [b for b in m.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for b in bns:  # momentum None: the running stats become this pass's exact batch statistics
            b.momentum = None
            b.reset_running_stats()
        m.train()(torch.rand(32, 3, SIZE, SIZE, generator=g))
        for b in bns:
            b.momentum = cfg.bn_momentum
    m.eval()
    assert all(not torch.allclose(b.running_var, torch.ones_like(b.running_var)) for b in bns)
    if cfg.channels_last:  # as predict.load_run does
        m = m.to(memory_format=torch.channels_last)
    return m


@pytest.fixture(scope="module")
def classes(mini) -> list[str]:
    return sorted(p.name for p in (mini / "val").iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def images(mini, classes) -> np.ndarray:
    """(10, 32, 32, 3) uint8: the first val image of each class, decoded exactly as training decodes."""
    paths = [sorted((mini / "val" / c).iterdir())[0] for c in classes]
    return np.stack([decode_image(str(p), SIZE) for p in paths])


@pytest.fixture(scope="module")
def reference(model, cfg, images) -> np.ndarray:
    """reglab's own path (predict.TrainedRun.predict_batch): NCHW uint8 -> to_float -> model -> softmax."""
    with torch.no_grad():
        x = to_float(torch.from_numpy(images).permute(0, 3, 1, 2), cfg.channels_last)
        probs = model(x).float().softmax(1).numpy()
    # non-trivial outputs, or a wrong export could still match
    assert probs.std(axis=1).mean() > 1e-3, probs
    assert len(set(probs.argmax(1))) > 1, probs.argmax(1)
    return probs


@pytest.fixture(scope="module")
def onnx_file(model, classes, tmp_path_factory) -> Path:
    _onnx_packages()
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert export_model(model, SIZE, classes, "onnx", out, metadata=META) == out
    return out


@pytest.fixture(scope="module")
def ts_file(model, classes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ts") / "model.pt"
    assert export_model(model, SIZE, classes, "torchscript", out, metadata=META) == out
    return out


def test_preprocessed_module_matches_reglab_path(model, images, reference):
    wrapped = Preprocessed(model)
    with torch.no_grad():
        got = wrapped(torch.from_numpy(images))
    assert got.dtype == torch.float32 and got.shape == (10, 10)
    assert np.abs(got.numpy() - reference).max() <= TOL


@pytest.mark.parametrize("n", [1, 10])
def test_onnx_runtime_matches_reglab(onnx_file, images, reference, n):
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.type == "tensor(uint8)" and inp.shape[1:] == [SIZE, SIZE, 3]
    assert not isinstance(inp.shape[0], int)  # a named dynamic batch dimension
    (probs,) = session.run(None, {inp.name: images[:n]})
    assert probs.dtype == np.float32 and probs.shape == (n, 10)
    assert np.abs(probs - reference[:n]).max() <= TOL


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch >= 2.13 deprecates torch.jit
@pytest.mark.parametrize("n", [1, 10])
def test_torchscript_matches_reglab(ts_file, images, reference, n):
    loaded = torch.jit.load(str(ts_file))
    with torch.no_grad():
        probs = loaded(torch.from_numpy(images[:n])).numpy()
    assert probs.dtype == np.float32 and probs.shape == (n, 10)
    assert np.abs(probs - reference[:n]).max() <= TOL


def test_torchscript_runs_without_reglab(ts_file, images, reference, tmp_path):
    np.save(tmp_path / "images.npy", images)
    snippet = (
        "import json, sys\n"
        "sys.modules['reglab'] = None  # any import of reglab now fails\n"
        "import numpy as np, torch\n"
        "extra = {'reglab.json': ''}\n"
        f"m = torch.jit.load({str(ts_file)!r}, _extra_files=extra)\n"
        "meta = json.loads(extra['reglab.json'])\n"
        "with torch.no_grad():\n"
        "    p = m(torch.from_numpy(np.load('images.npy'))).numpy()\n"
        "assert not any(k.startswith('reglab') for k, v in sys.modules.items() if v is not None)\n"
        "print(json.dumps({'top1': p.argmax(1).tolist(), 'probs': p.tolist(), 'classes': meta['class_names']}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    r = subprocess.run([sys.executable, "-I", "-W", "ignore::DeprecationWarning", "-c", snippet],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["top1"] == reference.argmax(1).tolist()
    assert np.abs(np.array(got["probs"]) - reference).max() <= TOL
    assert len(got["classes"]) == 10


def test_metadata_round_trips_in_both_formats(onnx_file, ts_file, classes):
    for path in (onnx_file, ts_file):
        meta = read_metadata(path)
        assert meta["class_names"] == classes, path
        assert meta["image_size"] == SIZE and meta["num_classes"] == 10
        assert meta["input"]["dtype"] == "uint8" and meta["input"]["shape"] == ["N", SIZE, SIZE, 3]
        assert {k: meta[k] for k in META} == META
        assert meta["reglab_version"]


def test_onnx_metadata_props_are_readable_by_onnx_tools(onnx_file, classes):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert json.loads(props["class_names"]) == classes
    assert props["image_size"] == str(SIZE)
    assert "uint8" in props["input"] and "NHWC" in props["input"]
    assert props["model"] == "regularized" and props["seed"] == "7"


def test_unknown_format_is_a_user_error(model, classes, tmp_path):
    with pytest.raises(UserError, match="unknown export format 'keras'.*onnx, torchscript"):
        export_model(model, SIZE, classes, "keras", tmp_path / "m.keras")
    assert list(tmp_path.iterdir()) == []


def test_missing_onnx_package_is_a_user_error(model, classes, tmp_path, monkeypatch):
    import importlib.util

    export_module = importlib.import_module("reglab.exported")

    real = importlib.util.find_spec
    monkeypatch.setattr(export_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(UserError, match="needs the Python package.*onnxscript.*pip install onnx onnxscript"):
        export_model(model, SIZE, classes, "onnx", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_class_count_mismatch_is_a_user_error(model, tmp_path):
    with pytest.raises(UserError, match="10 outputs but 3 class names"):
        export_model(model, SIZE, ["a", "b", "c"], "torchscript", tmp_path / "m.pt")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_export_leaves_the_callers_model_alone_and_no_temp_files(cfg, classes, tmp_path):
    torch.manual_seed(3)
    m = build_model(cfg, 10).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    out = export_model(m, SIZE, classes, "torchscript", tmp_path / "sub" / "m.pt")
    assert m.training and all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.pt"]


def test_read_metadata_of_a_foreign_file_is_a_user_error(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model\xff" * 10)
    with pytest.raises(UserError):
        read_metadata(junk)
    with pytest.raises(UserError, match="does not exist"):
        read_metadata(tmp_path / "missing.pt")
