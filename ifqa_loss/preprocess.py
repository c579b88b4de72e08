"""Input checks and the official preprocessing, as tensor ops.

Functions are pure, batched, differentiable, and run on the input's device. Decoding files is in
:mod:`ifqa_loss.io`.

Resize policy: inputs of any size go to the native size with the official script's non-antialiased
resize (bilinear to 256 for ``cnn``/``lite``, bicubic to 224 for ``vit``; half-pixel centres), so the
official weights reproduce the official scores on any input. Up to 2x the native size this is a proper
filter (exactly 2x: a 2x2 box average); beyond that it skips pixels and aliases, so for inputs much larger
than 512 px downscale with antialiasing first if the official scores do not matter to you.
"""
from __future__ import annotations

import math
from typing import Sequence

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
    if backbone == "vit":  # the official order: normalise, then resize
        x = x * scale + shift if (scale, shift) != (1.0, 0.0) else x
        return resize_to_native(x, backbone)
    x = resize_to_native(x, backbone)  # linear, so resizing first is exact and cheaper for big inputs
    return x * scale + shift if (scale, shift) != (1.0, 0.0) else x


#: Native input side and resize mode of each backbone.
NATIVE = {"cnn": (256, "bilinear"), "lite": (256, "bilinear"), "vit": (224, "bicubic")}


def resize_to(x: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """The library's resize policy: ``size`` x ``size``, half-pixel centres, no antialiasing (the official one).

    Args:
        x: (N, C, H, W) float. mode: "bilinear" or "bicubic" (a = -0.75).
    Returns:
        (N, C, size, size); ``x`` itself when it already has that size.
    """
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=False)


def resize_to_native(x: torch.Tensor, backbone: str) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 3, S, S) at the backbone's native size, values unchanged in range.

    Resizing is linear, so resizing before or after :func:`to_model_input`'s normalisation gives the same
    result up to float rounding.
    """
    if backbone not in NATIVE:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {sorted(NATIVE)}")
    size, mode = NATIVE[backbone]
    return resize_to(x, size, mode)


_MOVED_TO_IO = {"load_image": "load_image", "ImageDecodeError": "ImageDecodeError", "image_to_float": "to_float"}


def __getattr__(name: str):
    """File decoding moved to :mod:`ifqa_loss.io`; the old names still import from here, with a warning."""
    if name in _MOVED_TO_IO:
        import warnings

        from . import io

        new = _MOVED_TO_IO[name]
        warnings.warn(f"ifqa_loss.preprocess.{name} moved to ifqa_loss.io.{new}", DeprecationWarning, stacklevel=2)
        return getattr(io, new)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
