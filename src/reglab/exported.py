"""A trained model with its preprocessing inside, as one file that runs without reglab.

    export_model(model, 32, class_names, "onnx", Path("model.onnx"), metadata={"model": "regularized"})
    read_metadata("model.onnx")["class_names"]

The exported graph takes exactly what reglab's own predict feeds its model: a batch of decoded images,
uint8 RGB (N, H, W, 3) at the run's image size (data/decode.py: bilinear, half-pixel centres, no
antialiasing), and returns softmax probabilities (N, classes) float32. N is dynamic (any N >= 1).

Formats:
  onnx         torch.onnx.export's default (torch.export-based) exporter; needs the `onnx` and `onnxscript`
               packages (the legacy dynamo=False exporter is deprecated and needs `onnx` as well). Metadata
               goes into ModelProto.metadata_props: "reglab" (the whole document as JSON), plus readable keys
               "class_names" (JSON list), "image_size", "input", "output" and the caller's metadata.
  torchscript  torch.jit.script + torch.jit.save, metadata in the archive's extra file "reglab.json"
               (torch.jit.load(path, _extra_files={"reglab.json": ""}) reads it back). torch >= 2.13 marks
               torch.jit as deprecated; the files still load with torch alone.

Files are written atomically (temporary sibling, then rename).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import logging
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from . import atomic
from .errors import UserError

FORMATS = ("onnx", "torchscript")
EXTRA_FILE = "reglab.json"
ONNX_KEY = "reglab"
FORMAT_VERSION = 1
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
PREPROCESSING = ("decode to RGB (alpha dropped, greyscale replicated), resize to image_size x image_size "
                 "(aspect ratio not kept) bilinear with half-pixel centres and no antialiasing, round to uint8")


class Preprocessed(nn.Module):
    """uint8 RGB images (N, H, W, 3) -> softmax probabilities (N, classes) float32.

    Does inside the graph what reglab's predict does around the model: NHWC -> NCHW, float, / 255, the model,
    softmax. The wrapped model is put in eval mode (BatchNorm running statistics, no dropout).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        return self.model(x).float().softmax(1)


def export_model(model: nn.Module, image_size: int, class_names: list[str], fmt: str, out: Path,
                 metadata: dict | None = None) -> Path:
    """Write `model` (logits for float NCHW in [0, 1]) with its preprocessing inside to `out` as `fmt`.

    `metadata` (JSON-serialisable: run, model name, seed, ...) is stored in the file next to the class names,
    the image size and a description of the input; read it back with read_metadata. Returns `out`.
    """
    fmt = (fmt or "").lower()
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt == "onnx":
        _require("onnx", "onnxscript", what="exporting to ONNX")
    out = Path(out)
    if out.is_dir():
        raise UserError(f"export output {out} is a folder; give a file name (e.g. {out / _default_name(fmt)})")
    class_names = [str(c) for c in class_names]
    doc = _document(image_size, class_names, metadata)

    wrapped = Preprocessed(_cpu_copy(model))
    example = torch.zeros(2, image_size, image_size, 3, dtype=torch.uint8)  # 2: a batch of 1 would be specialised
    with torch.no_grad():
        n_out = wrapped(example).shape[1]
    if n_out != len(class_names):
        raise UserError(f"the model has {n_out} outputs but {len(class_names)} class names were given; "
                        "pass one name per class")

    data = _onnx_bytes(wrapped, example, doc) if fmt == "onnx" else _torchscript_bytes(wrapped, doc)
    atomic.write_bytes(out, data)
    return out


def read_metadata(path: str | Path) -> dict:
    """The reglab document stored in an exported file (either format): class_names, image_size, input, ..."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist or is not a file; give a file written by reglab export")
    if zipfile.is_zipfile(path):  # TorchScript archives are zip files; ONNX files are protobuf
        return _read_torchscript_metadata(path)
    return _read_onnx_metadata(path)


# --- writing -------------------------------------------------------------------------------------------------


def _default_name(fmt: str) -> str:
    return "model.onnx" if fmt == "onnx" else "model.pt"


def _require(*modules: str, what: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"{what} needs the Python package(s) {', '.join(missing)}, which are not installed; "
                        f"install them with: pip install {' '.join(modules)}")


def _cpu_copy(model: nn.Module) -> nn.Module:
    """A float32, CPU, contiguous-format, eval-mode copy: the caller's model is left as it was."""
    m = copy.deepcopy(model).to(device="cpu", dtype=torch.float32, memory_format=torch.contiguous_format)
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()


def _document(image_size: int, class_names: list[str], metadata: dict | None) -> dict:
    from . import __version__

    doc = dict(metadata or {})
    doc.setdefault("reglab_version", __version__)
    core = {
        "format": "reglab-export",
        "format_version": FORMAT_VERSION,
        "class_names": class_names,
        "num_classes": len(class_names),
        "image_size": int(image_size),
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": ["N", int(image_size), int(image_size), 3],
                  "layout": "NHWC, RGB, 0-255", "preprocessing": PREPROCESSING},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["N", len(class_names)],
                   "meaning": "softmax probabilities, columns in class_names order"},
    }
    clash = sorted(set(doc) & set(core))
    if clash:
        raise ValueError(f"export metadata may not set {', '.join(clash)}: reglab writes these keys itself")
    doc.update(core)
    try:
        json.dumps(doc)
    except (TypeError, ValueError) as e:
        raise ValueError(f"export metadata must be JSON-serialisable: {e}") from None
    return doc


@contextlib.contextmanager
def _quiet():
    """Exporter chatter the user cannot act on: deprecations inside torch/onnxscript, missing torchvision ops."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        log.setLevel(level)


def _onnx_bytes(wrapped: nn.Module, example: torch.Tensor, doc: dict) -> bytes:
    with _quiet():
        program = torch.onnx.export(
            wrapped, (example,), dynamo=True, verbose=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
        )
    proto = program.model_proto
    proto.doc_string = "reglab export: uint8 RGB images (N, H, W, 3) -> softmax probabilities (N, classes)"
    props = {
        ONNX_KEY: json.dumps(doc),
        "class_names": json.dumps(doc["class_names"]),
        "image_size": str(doc["image_size"]),
        "input": f"{INPUT_NAME}: uint8 (N, {doc['image_size']}, {doc['image_size']}, 3), NHWC RGB 0-255; "
                 + PREPROCESSING,
        "output": f"{OUTPUT_NAME}: float32 (N, {doc['num_classes']}) softmax probabilities in class_names order",
    }
    for k, v in doc.items():
        props.setdefault(k, v if isinstance(v, str) else json.dumps(v))
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    return proto.SerializeToString()


def _torchscript_bytes(wrapped: nn.Module, doc: dict) -> bytes:
    buf = io.BytesIO()
    with _quiet():
        scripted = torch.jit.script(wrapped)
        torch.jit.save(scripted, buf, _extra_files={EXTRA_FILE: json.dumps(doc, indent=2)})
    return buf.getvalue()


# --- reading -------------------------------------------------------------------------------------------------


def _read_torchscript_metadata(path: Path) -> dict:
    """Read the extra file straight from the zip archive: no model is loaded."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith(f"/extra/{EXTRA_FILE}")]
            if not names:
                raise UserError(f"{path} holds no {EXTRA_FILE}: not a TorchScript file written by reglab export")
            return _parse(z.read(names[0]), path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"cannot read {path} ({e}); give a file written by reglab export") from None


def _read_onnx_metadata(path: Path) -> dict:
    props = None
    if importlib.util.find_spec("onnx") is not None:
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # protobuf's DecodeError and friends
            raise UserError(f"{path} is neither a TorchScript nor an ONNX file ({type(e).__name__}); "
                            "give a file written by reglab export") from None
        props = {p.key: p.value for p in model.metadata_props}
    elif importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        try:
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise UserError(f"{path} is neither a TorchScript nor an ONNX file ({type(e).__name__}); "
                            "give a file written by reglab export") from None
        props = dict(session.get_modelmeta().custom_metadata_map)
    else:
        _require("onnx", what=f"reading the metadata of the ONNX file {path}")
    if ONNX_KEY not in props:
        raise UserError(f"{path} has no '{ONNX_KEY}' metadata: not an ONNX file written by reglab export")
    return _parse(props[ONNX_KEY], path)


def _parse(raw: bytes | str, path: Path) -> dict:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: brackets nested thousands deep
        doc = None
    if not isinstance(doc, dict):
        raise UserError(f"the reglab metadata in {path} is not a JSON object; re-export the run")
    return doc
