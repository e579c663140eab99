"""Decode one image file to a uint8 (size, size, 3) RGB array, as the notebook's pipeline sees it.

tf.image.decode_* gives RGB (alpha dropped, greyscale replicated); tf.image.resize is bilinear with
half-pixel centres and no antialiasing, aspect ratio not kept. F.interpolate(bilinear, align_corners=False,
antialias=False) computes the same function; we do it in numpy (decode workers must not touch torch's
thread pools after a fork) and round to uint8 for the cache.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..readfile import regular_file_error

# Refuse decompression bombs early: a larger declared size is an error, not a warning.
MAX_PIXELS = 64_000_000
# Pillow identifies a file by its content, whatever its extension, and renders EPS by running Ghostscript
# (an interpreter) on it: a dataset file must never reach that.
REFUSED_FORMATS = frozenset({"EPS"})


@functools.lru_cache(maxsize=1)
def _formats() -> tuple[str, ...]:
    Image.init()
    return tuple(f for f in Image.ID if f not in REFUSED_FORMATS)


class DecodeError(Exception):
    """An image that cannot be decoded; the message says why (the caller adds the path)."""


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: PIL's convert("RGB") would clip at 255 (a white image); scale instead.
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() <= 65535 else float(a.max())
        grey = np.clip(np.rint(a / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        finite = np.isfinite(a)  # NaN/inf pixels become black; casting them to uint8 is undefined
        lo, hi = (float(a[finite].min()), float(a[finite].max())) if finite.any() else (0.0, 0.0)
        a = np.where(finite, a, lo)
        grey = np.zeros(a.shape, np.uint8) if hi <= lo else np.rint((a - lo) / (hi - lo) * 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    # RGBA/LA: alpha dropped as tf.image.decode_png(channels=3) does; CMYK, L, 1, P, YCbCr: to RGB.
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights for one axis: half-pixel centres, edge-clamped, no antialiasing."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.maximum(src, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo)


def resize_bilinear(rgb: np.ndarray, size: int) -> np.ndarray:
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return np.ascontiguousarray(rgb)
    y0, y1, wy = _axis_weights(rgb.shape[0], size)
    x0, x1, wx = _axis_weights(rgb.shape[1], size)
    a = rgb.astype(np.float32)
    top = a[y0] * (1 - wy)[:, None, None] + a[y1] * wy[:, None, None]
    out = top[:, x0] * (1 - wx)[None, :, None] + top[:, x1] * wx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def decode_image(path: str, size: int) -> np.ndarray:
    not_a_file = regular_file_error(path)  # a FIFO would block Pillow's open forever, a device never end
    if not_a_file:
        raise DecodeError(f"{not_a_file}, not an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=_formats()) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise DecodeError(f"declared size {w}x{h} exceeds {MAX_PIXELS:,} pixels (decompression bomb?)")
                img.load()
                rgb = _to_rgb_array(img)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecodeError(f"decompression bomb refused ({e})") from None
    except UnidentifiedImageError:
        raise DecodeError("not an image Pillow can read (wrong extension or corrupt header)") from None
    except PermissionError:
        raise DecodeError("permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DecodeError(f"corrupt or truncated image ({e})") from None
    if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise DecodeError(f"unexpected decoded shape {rgb.shape}")
    return resize_bilinear(rgb, size)
