"""Fast paths for the U-Net's convolutions (private; the architecture is in :mod:`.unet`).

Every path computes the same map as the official upsample-then-convolve, direct-convolution network, to
float rounding (tested in float64, values and gradients, in ``tests/test_cpu_kernels.py``). Which path
a layer takes is decided in one place, :func:`fast_path`; the blocks reach this module only through
:meth:`FastPaths.conv`. The measurements behind each rule are in ``docs/speed.md``.

- ``fused_upsample`` (any device): ``conv3x3(nearest_upsample_2x(x))`` as one stride-2 transposed
  convolution at the resolution of ``x`` (4/9 of the FLOPs; the upsampled tensor is never built), and the
  1x1 shortcut convolution before the upsampling instead of after it (they commute).
- ``winograd`` (CPU): Winograd's minimal filtering F(2x2, 3x3), 16 multiply-adds per 2x2 output tile
  instead of 36, for wide layers on small maps, where the tile transforms cost less than they save.
- ``narrow`` (CPU): a 3x3 layer with one output channel as one matrix product and a col2im sum; oneDNN
  runs that shape far below the CPU's peak.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class CpuRule(NamedTuple):
    """Where the CPU kernels were measured faster than PyTorch's convolution, for one ISA and precision."""

    winograd_max_side: int  #: largest map side (H and W) for Winograd; 0 = never
    winograd_with_grad: bool  #: also when the layer's output needs a gradient (the loss), not only scoring
    narrow_min_in_channels: int  #: fewest input channels of a 1-output layer for the narrow kernel; 0 = never


class IsaRules(NamedTuple):
    """One ISA's rules: ``fp32`` for float32/float64 maps, ``bf16`` under ``torch.autocast("cpu", torch.bfloat16)``
    (or a model cast to bfloat16), where oneDNN runs other kernels (AMX tiles where the CPU has them)."""

    fp32: CpuRule
    bf16: CpuRule


_NEVER = CpuRule(0, False, 0)

#: Keyed by ``torch.backends.cpu.get_cpu_capability()``: the vector ISA PyTorch's CPU kernels, oneDNN's
#: included, were built for on this machine. Only ISAs benchmarks/speed.py was run on have an entry; any
#: other CPU (ARM, a future ISA) runs PyTorch's own convolution everywhere. The wider AVX-512 convolution
#: kernels leave Winograd a win only on 8x8 maps and only without a backward pass. Under bf16 on AVX-512
#: (AMX tiles), oneDNN's convolution beats Winograd on every layer, and the narrow kernel only on cnn's
#: 64 -> 1 layer. AVX2 has no bf16 entry: bf16 is emulated there and was not measured.
CPU_RULES = {
    "AVX2": IsaRules(fp32=CpuRule(winograd_max_side=16, winograd_with_grad=True, narrow_min_in_channels=16),
                     bf16=_NEVER),
    "AVX512": IsaRules(fp32=CpuRule(winograd_max_side=8, winograd_with_grad=False, narrow_min_in_channels=8),
                       bf16=CpuRule(winograd_max_side=0, winograd_with_grad=False, narrow_min_in_channels=64)),
}
#: Winograd only for layers at least this wide (input and output channels): narrower ones lost on every CPU.
WINOGRAD_MIN_CHANNELS = 256

_NO_RULE = IsaRules(_NEVER, _NEVER)
#: Read once at import (a constant for torch.compile, which does not trace the query itself).
CPU_CAPABILITY = torch.backends.cpu.get_cpu_capability()


def cpu_rule(bf16: bool = False) -> CpuRule:
    """The fast-path rule for this machine's CPU (see :data:`CPU_RULES`), for fp32 or bf16 maps."""
    rules = CPU_RULES.get(CPU_CAPABILITY, _NO_RULE)
    return rules.bf16 if bf16 else rules.fp32


def cpu_precision(x: torch.Tensor) -> str | None:
    """Which rule covers a layer on CPU input ``x``: "fp32", "bf16", or None (float16 and other dtypes or
    autocast modes: PyTorch's convolution)."""
    if torch.is_autocast_enabled("cpu"):
        return "bf16" if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None
    if x.dtype in (torch.float32, torch.float64):
        return "fp32"
    return "bf16" if x.dtype == torch.bfloat16 else None


def fast_path(block: FastPaths, conv: nn.Conv2d, x: torch.Tensor, upsample: bool) -> str | None:
    """Which kernel computes ``conv(upsample(x) if upsample else x)`` in ``block``; None = ``conv`` itself.

    The rule, first match wins:

    1. ``"fused_upsample"``: the input is upsampled, ``block.fused`` is on, and the layer is 3x3 or 1x1.
       Any device and dtype.
    2. Nothing else for upsampled inputs, inputs not on the CPU, or precisions without a rule
       (:func:`cpu_precision`: float16, CPU autocast to float16).
    3. ``"narrow"``: a 3x3 layer with 1 output channel and at least ``narrow_min_in_channels`` inputs
       (``block.narrow`` on).
    4. ``"winograd"``: a 3x3 layer with at least :data:`WINOGRAD_MIN_CHANNELS` input and output channels
       on a map with even sides of at most ``winograd_max_side``, when no gradient will flow through it or
       the rule allows one (``block.winograd`` on).

    The numbers in 3 and 4 come from :func:`cpu_rule` for this machine's ISA and the precision: fp32, or
    bf16 under ``torch.autocast("cpu", dtype=torch.bfloat16)``.
    """
    three = conv.kernel_size == (3, 3)
    if upsample:
        return "fused_upsample" if block.fused and (three or conv.kernel_size == (1, 1)) else None
    if x.device.type != "cpu" or not three:
        return None
    precision = cpu_precision(x)
    if precision is None:
        return None
    rule = cpu_rule(precision == "bf16")
    if block.narrow and conv.out_channels == 1 and 0 < rule.narrow_min_in_channels <= conv.in_channels:
        return "narrow"
    h, w = x.shape[-2:]
    if (block.winograd and max(h, w) <= rule.winograd_max_side and h % 2 == 0 and w % 2 == 0
            and min(conv.in_channels, conv.out_channels) >= WINOGRAD_MIN_CHANNELS
            and (rule.winograd_with_grad or not _needs_grad(conv, x))):
        return "winograd"
    return None


def _needs_grad(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad)


# --- fused upsample: conv3x3(nearest_upsample_2x(x)) as a transposed convolution ------------------------

def upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv3x3(nearest_upsample_2x(x))`` with zero padding 1, computed at the resolution of ``x``.

    Each pixel of the upsampled grid sees a 2x2 neighbourhood of ``x`` whose taps are sums of the 3x3
    weights (rows (w0, w1+w2) for even outputs, (w0+w1, w2) for odd ones; columns alike): one stride-2
    transposed convolution with the kernel of :func:`transposed_kernel`.

    Args:
        x: (N, C_in, h, w). weight: (C_out, C_in, 3, 3). bias: (C_out,) or None.
    Returns:
        (N, C_out, 2h, 2w).
    """
    return F.conv_transpose2d(x, transposed_kernel(weight), bias, stride=2, padding=1)


def transposed_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 3, 3) -> the (C_in, C_out, 4, 4) kernel of :func:`upsample_conv3x3`."""
    def spread(w: torch.Tensor, dim: int) -> torch.Tensor:  # 3 taps -> 4: (w2, w1+w2, w0+w1, w0)
        w0, w1, w2 = w.unbind(dim)
        return torch.stack([w2, w1 + w2, w0 + w1, w0], dim)

    return spread(spread(weight, 2), 3).transpose(0, 1)


# --- Winograd F(2x2, 3x3) ---------------------------------------------------------------------------------

_WINOGRAD_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def winograd_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 3, 3) -> (16, C_out, C_in): the F(2x2, 3x3) transformed kernel G w G^T."""
    g = torch.tensor(_WINOGRAD_G, dtype=weight.dtype, device=weight.device)
    return torch.einsum("ai,oxij,bj->abox", g, weight, g).reshape(16, weight.shape[0], weight.shape[1])


def _input_transform(d: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """B^T applied along a split axis of 4: (d0 - d2, d1 + d2, d2 - d1, d1 - d3)."""
    d0, d1, d2, d3 = d
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


def winograd_conv3x3(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """3x3 convolution, stride 1, zero padding 1, by Winograd's minimal filtering F(2x2, 3x3).

    The 16 products per tile are batched as 16 matrix products; the transforms are additions only.
    Differentiable with respect to ``x`` and the kernel.

    Args:
        x: (N, C_in, H, W), H and W even. kernel: (16, C_out, C_in) from :func:`winograd_kernel`.
        bias: (C_out,) or None.
    Returns:
        (N, C_out, H, W), contiguous.
    """
    n, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"winograd_conv3x3 needs even height and width, got {h}x{w}")
    th, tw = h // 2, w // 2
    # overlapping 4x4 input tiles with stride 2, as a view: (4 rows, 4 cols, C_in, N, th, tw)
    tiles = F.pad(x, (1, 1, 1, 1)).unfold(2, 4, 2).unfold(3, 4, 2).permute(4, 5, 1, 0, 2, 3)
    v = torch.stack([torch.stack(_input_transform(r.unbind(0))) for r in _input_transform(tiles.unbind(0))])
    m = torch.bmm(kernel, v.reshape(16, c, n * th * tw)).view(4, 4, -1, n, th, tw)
    rows = (m[0] + m[1] + m[2], m[1] - m[2] - m[3])  # A^T along the tile rows
    y = torch.stack([torch.stack((r[0] + r[1] + r[2], r[1] - r[2] - r[3])) for r in rows])  # (2, 2, C_out, N, th, tw)
    y = y.permute(3, 2, 4, 0, 5, 1).contiguous().view(n, -1, h, w)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


# --- narrow output layer: matrix product + col2im -------------------------------------------------------

def narrow_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 3, 3) -> (C_out * 9, C_in): the flipped taps, in the channel order ``F.fold`` sums."""
    return weight.flip(2, 3).permute(0, 2, 3, 1).reshape(-1, weight.shape[1])


def narrow_conv3x3(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """3x3 convolution, stride 1, zero padding 1, for layers with few output channels (the final 64 -> 1).

    One matrix product gives each output channel's 9 per-tap maps; ``F.fold`` (col2im) adds them up at
    their shifted positions. Same FLOPs as the direct convolution.

    Args:
        x: (N, C_in, H, W), contiguous or channels_last. kernel: (C_out * 9, C_in) from :func:`narrow_kernel`.
        bias: (C_out,) or None.
    Returns:
        (N, C_out, H, W).
    """
    n, c, h, w = x.shape
    if x.is_contiguous():
        taps = kernel @ x.reshape(n, c, h * w)
    else:  # channels_last: (N, H*W, C_in) is the contiguous view
        taps = (x.permute(0, 2, 3, 1).reshape(n, h * w, c) @ kernel.t()).transpose(1, 2)
    y = F.fold(taps, (h, w), 3, padding=1)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


# --- the blocks' entry point ------------------------------------------------------------------------------

def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def _cpu_bf16_autocast(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def _bf16(build):
    """``build``, then cast to bfloat16: a kernel is built at the weight's precision and rounded once."""
    return lambda w: build(w).to(torch.bfloat16)


def _identity(w: torch.Tensor) -> torch.Tensor:
    return w


class FastPaths:
    """Mixin for the U-Net blocks: :meth:`conv` runs a layer through the path :func:`fast_path` picks.

    The flags switch a path off for one block (``UNetDiscriminator`` sets them model-wide). Kernels derived
    from a frozen weight are built once and reused until the weight changes (in place or replaced).

    ``bf16_weights`` (off by default): under ``torch.autocast("cpu", dtype=torch.bfloat16)``, keep bfloat16
    copies of the frozen weights and derived kernels instead of letting autocast cast them on every call.
    It was measured within noise of autocast's own casts (``docs/speed.md``), so it stays opt-in.
    """

    fused: bool = True
    winograd: bool = True
    narrow: bool = True
    bf16_weights: bool = False

    def conv(self, conv: nn.Conv2d | None, x: torch.Tensor, upsample: bool = False) -> torch.Tensor:
        """``conv(nearest_upsample_2x(x) if upsample else x)``; ``conv=None`` is the identity."""
        if conv is None:
            return _upsample(x) if upsample else x
        path = fast_path(self, conv, x, upsample)
        low = self.bf16_weights and _cpu_bf16_autocast(x)
        bias = conv.bias
        if low and bias is not None:
            bias = self._derived_kernel(conv, "bias_bf16", _bf16(_identity), conv.bias)
        if path is None:
            inp = _upsample(x) if upsample else x
            if not low:
                return conv(inp)
            return conv._conv_forward(inp, self._derived_kernel(conv, "bf16", _bf16(_identity)), bias)
        if path == "fused_upsample":
            if conv.kernel_size == (1, 1):
                return _upsample(self.conv(conv, x))
            return F.conv_transpose2d(x, self._kernel(conv, path, transposed_kernel, low), bias, stride=2, padding=1)
        if path == "narrow":
            return narrow_conv3x3(x, self._kernel(conv, path, narrow_kernel, low), bias)
        return winograd_conv3x3(x, self._kernel(conv, path, winograd_kernel, low), bias)

    def _kernel(self, conv: nn.Conv2d, path: str, build, low: bool) -> torch.Tensor:
        """The derived kernel of ``path``, as a bfloat16 copy when ``low`` (under CPU bf16 autocast)."""
        if low:
            return self._derived_kernel(conv, path + "_bf16", _bf16(build))
        return self._derived_kernel(conv, path, build)

    def _derived_kernel(self, conv: nn.Conv2d, kind: str, build, w: torch.Tensor | None = None) -> torch.Tensor:
        w = conv.weight if w is None else w
        if (w.requires_grad and torch.is_grad_enabled()) or torch.compiler.is_compiling():
            with torch.autocast("cpu", enabled=False):  # built at the weight's precision, as below
                return build(w)  # trained, or traced into a compiled graph: no Python-side cache
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        cache = self.__dict__.setdefault("_kernel_cache", {})
        hit = cache.get((id(conv), kind))
        if hit is None or hit[0] != key:
            # a normal tensor, usable with autograd later; autocast off so that Winograd's einsum stays exact
            with torch.inference_mode(False), torch.no_grad(), torch.autocast("cpu", enabled=False):
                hit = (key, build(w).contiguous())
            cache[(id(conv), kind)] = hit
        return hit[1]
