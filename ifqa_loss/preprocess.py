"""Input checks, the official preprocessing as tensor ops, and image-file decoding.

Tensor functions are pure, batched, differentiable, and run on the input's device.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

MIN_SIDE = 16
#: Values may leave ``input_range`` by this fraction of its span (one 8-bit level) before the metric rejects them.
RANGE_TOLERANCE = 1.0 / 255.0


def check_input_range(input_range: Sequence[float]) -> tuple[float, float]:
    """Validate ``(low, high)`` and return it as floats."""
    try:
        lo, hi = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise ValueError(f"input_range must be a pair (low, high) of numbers, got {input_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise ValueError(f"input_range must be finite with low < high, got ({lo}, {hi})")
    if not 1e-6 <= hi - lo <= 1e12 or max(abs(lo), abs(hi)) > 1e12:
        raise ValueError(f"input_range ({lo:g}, {hi:g}) is outside what float32 images can use: the span must be "
                         "between 1e-6 and 1e12 and the bounds within +-1e12")
    return lo, hi


def check_images(x: torch.Tensor, name: str = "input", check_finite: bool = True) -> None:
    """Raise a clear ``TypeError``/``ValueError`` unless ``x`` is a float (N, 3, H, W) batch, N >= 1, H, W >= 16.

    ``check_finite`` also counts NaN/Inf values (one host sync).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 3, H, W), got {type(x).__name__}")
    if x.layout != torch.strided or x.is_meta:
        raise TypeError(f"{name} must be a dense tensor with data, got layout {x.layout} on device {x.device}")
    if not x.is_floating_point():
        hint = " (for uint8 images use x.float() / 255 with input_range=(0, 1))" if x.dtype == torch.uint8 else ""
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}{hint}")
    if x.ndim != 4:
        extra = " (add a batch dimension with x.unsqueeze(0))" if x.ndim == 3 else ""
        raise ValueError(f"{name} must have shape (N, 3, H, W), got {tuple(x.shape)}{extra}")
    n, c, h, w = x.shape
    if c != 3:
        raise ValueError(f"{name} must have 3 (RGB) channels in dim 1, got shape {tuple(x.shape)}")
    if n == 0:
        raise ValueError(f"{name} is an empty batch (N = 0)")
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"{name} is {h}x{w}; images must be at least {MIN_SIDE}x{MIN_SIDE} pixels")
    if check_finite:
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            nan = int(torch.isnan(x).sum())
            raise ValueError(f"{name} contains {bad} non-finite values ({nan} NaN, {bad - nan} Inf) out of {x.numel()}")


def check_values_in_range(x: torch.Tensor, input_range: tuple[float, float], name: str = "input") -> None:
    """Raise ``ValueError`` naming the observed range if ``x`` leaves ``input_range`` beyond the tolerance."""
    lo, hi = input_range
    tol = RANGE_TOLERANCE * (hi - lo)
    x_min, x_max = torch.aminmax(x.detach())
    x_min, x_max = float(x_min), float(x_max)
    if x_min < lo - tol or x_max > hi + tol:
        raise ValueError(
            f"{name} values lie in [{x_min:.6g}, {x_max:.6g}] but input_range is ({lo:g}, {hi:g}); "
            f"pass the right input_range (e.g. (-1, 1) for tanh outputs, (0, 255) for 8-bit values) or clamp the images"
        )


def to_model_input(x: torch.Tensor, backbone: str, input_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Official preprocessing: images in ``input_range`` -> network input in [-1, 1] at native size.

    ``cnn``/``lite``: bilinear resize to 256x256 (half-pixel centres, no antialias), then normalise.
    ``vit``: normalise, then bicubic resize (a = -0.75) to 224x224.

    Args:
        x: (N, 3, H, W) float.
        backbone: "cnn", "lite" or "vit".
        input_range: the value range that maps to [0, 1] (black to white).
    Returns:
        (N, 3, S, S) with S = 256 or 224, same dtype and device.
    """
    lo, hi = input_range
    scale, shift = 2.0 / (hi - lo), -2.0 * lo / (hi - lo) - 1.0
    if backbone == "vit":
        x = x * scale + shift if (scale, shift) != (1.0, 0.0) else x
        return _resize(x, 224, "bicubic")
    if backbone not in ("cnn", "lite"):
        raise ValueError(f"unknown backbone {backbone!r}")
    x = _resize(x, 256, "bilinear")  # linear, so resizing before normalising is exact and cheaper for big inputs
    return x * scale + shift if (scale, shift) != (1.0, 0.0) else x


def _resize(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=False)


# ---------------------------------------------------------------- file decoding


class ImageDecodeError(ValueError):
    """A file that could not be decoded as an image; the message names the file and the reason."""


def load_image(path: str | os.PathLike, apply_exif: bool = False) -> torch.Tensor:
    """Decode an image file as the official script does: 8-bit RGB, (3, H, W) uint8.

    Grayscale is replicated, alpha is dropped without compositing, 16-bit values are scaled
    to 8 bits. EXIF orientation is ignored by default, like the official script (so scores
    match it); pass ``apply_exif=True`` to rotate camera photos upright first.
    """
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # > ~89 Mpx: refuse, don't decode
            img = Image.open(path)
        with img:
            img.load()
            if apply_exif:
                img = ImageOps.exif_transpose(img)
            arr = _to_rgb8(img)
    except FileNotFoundError:
        raise ImageDecodeError(f"{os.fspath(path)}: no such file") from None
    except IsADirectoryError:
        raise ImageDecodeError(f"{os.fspath(path)}: is a directory") from None
    except PermissionError:
        raise ImageDecodeError(f"{os.fspath(path)}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{os.fspath(path)}: not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"{os.fspath(path)}: refused, too many pixels ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ImageDecodeError(f"{os.fspath(path)}: corrupt or truncated image ({e})") from None
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageDecodeError(f"{os.fspath(path)}: empty image")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _to_rgb8(img) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(np.round(a * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode == "F":
        a = np.clip(np.round(np.asarray(img, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")  # L/LA/P/RGBA/CMYK...: alpha dropped, not composited
    return np.asarray(img, dtype=np.uint8)


def image_to_float(img: torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    return img.unsqueeze(0).float().div_(255.0)
