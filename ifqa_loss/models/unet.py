"""Per-pixel U-Net discriminator of IFQA (Jo et al., WACV 2023).

Residual blocks follow StarGAN v2; skips are multiplicative (``d * e + e``), and
the output is a sigmoid map at the input resolution: 1 = looks like a real
high-quality face.  ``widths=(64, 128, 256, 512, 1024), num_bottleneck=4`` is the
official ``IFQA_Metric.pth`` (backbone ``cnn``); narrower settings give ``lite``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CNN_WIDTHS = (64, 128, 256, 512, 1024)
CNN_BOTTLENECK = 4
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv3x3(nearest_upsample_2x(x))`` with zero padding 1, computed at the resolution of ``x``.

    Exact reformulation as one stride-2 transposed convolution: each output pixel of the upsampled grid
    sees a 2x2 neighbourhood of ``x`` whose taps are sums of the 3x3 weights (rows (w0, w1+w2) for even
    outputs, (w0+w1, w2) for odd ones; columns alike). 4/9 of the FLOPs, and the upsampled tensor is
    never built.

    Args:
        x: (N, C_in, h, w). weight: (C_out, C_in, 3, 3). bias: (C_out,) or None.
    Returns:
        (N, C_out, 2h, 2w).
    """
    return F.conv_transpose2d(x, _transposed_kernel(weight), bias, stride=2, padding=1)


def _transposed_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 3, 3) -> the (C_in, C_out, 4, 4) kernel of :func:`upsample_conv3x3`."""
    def spread(w: torch.Tensor, dim: int) -> torch.Tensor:  # 3 taps -> 4: (w2, w1+w2, w0+w1, w0)
        w0, w1, w2 = w.unbind(dim)
        return torch.stack([w2, w1 + w2, w0 + w1, w0], dim)

    return spread(spread(weight, 2), 3).transpose(0, 1)


#: Winograd convolution is used on the CPU for 3x3 layers at most this wide and high, with at least
#: this many input and output channels: where benchmarks/speed.py measured it faster than oneDNN.
WINOGRAD_MAX_SIDE = 16
WINOGRAD_MIN_CHANNELS = 256
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

    Each 2x2 output tile costs 16 multiply-adds per channel pair instead of 36, batched as 16 matrix
    products; the transforms are additions only. Equal to ``F.conv2d(x, w, bias, padding=1)`` up to float
    rounding (relative error ~1e-6 in fp32), differentiable with respect to ``x`` and the kernel.

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


#: 3x3 layers with one output channel and at least this many inputs run on the CPU as :func:`narrow_conv3x3`:
#: where it was measured faster than oneDNN (2.8x at 64 inputs, 1.3x at 16; slower at 8, or with 4 outputs).
NARROW_MIN_IN_CHANNELS = 16


def narrow_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 3, 3) -> (C_out * 9, C_in): the flipped taps, in the channel order ``F.fold`` sums."""
    return weight.flip(2, 3).permute(0, 2, 3, 1).reshape(-1, weight.shape[1])


def narrow_conv3x3(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """3x3 convolution, stride 1, zero padding 1, for layers with few output channels (the final 64 -> 1).

    One matrix product gives each output channel's 9 per-tap maps; ``F.fold`` (col2im) adds them up at
    their shifted positions. Same FLOPs as the direct convolution, which runs such shapes far below the
    CPU's peak: measured 4.3x faster forward and 2.3x forward+backward for 64 -> 1 at 256x256, batch 8.

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


class _CachedKernels:
    """Kernels derived from a frozen conv weight, built once and reused until the weight changes."""

    winograd: bool = True
    narrow: bool = True

    def _derived_kernel(self, conv: nn.Conv2d, kind: str, build) -> torch.Tensor:
        w = conv.weight
        if (w.requires_grad and torch.is_grad_enabled()) or torch.compiler.is_compiling():
            return build(w)  # traced into the compiled graph: no Python-side cache there
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        cache = self.__dict__.setdefault("_kernel_cache", {})
        hit = cache.get((id(conv), kind))
        if hit is None or hit[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # a normal tensor, usable with autograd later
                hit = (key, build(w).contiguous())
            cache[(id(conv), kind)] = hit
        return hit[1]

    def _conv3x3(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """``conv(x)``, on the CPU by :func:`narrow_conv3x3` or :func:`winograd_conv3x3` where those were
        measured faster (few output channels; small maps with wide layers)."""
        if (self.narrow and x.device.type == "cpu" and conv.out_channels == 1
                and conv.in_channels >= NARROW_MIN_IN_CHANNELS and not torch.is_autocast_enabled("cpu")):
            return narrow_conv3x3(x, self._derived_kernel(conv, "narrow", narrow_kernel), conv.bias)
        if (self.winograd and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
                and max(x.shape[-2:]) <= WINOGRAD_MAX_SIDE and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0
                and min(conv.in_channels, conv.out_channels) >= WINOGRAD_MIN_CHANNELS
                and not torch.is_autocast_enabled("cpu")):
            return winograd_conv3x3(x, self._derived_kernel(conv, "winograd", winograd_kernel), conv.bias)
        return conv(x)


class ResBlock(_CachedKernels, nn.Module):
    """Pre-activation residual block, optionally halving the resolution."""

    def __init__(self, c_in: int, c_out: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.norm1 = nn.InstanceNorm2d(c_in, affine=True)
        self.conv1 = nn.Conv2d(c_in, c_in, 3, padding=1)
        self.norm2 = nn.InstanceNorm2d(c_in, affine=True)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv1x1 = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self._conv3x3(self.conv1, F.leaky_relu(self.norm1(x), 0.2))
        if self.downsample:
            r = F.avg_pool2d(r, 2)
        r = self._conv3x3(self.conv2, F.leaky_relu(self.norm2(r), 0.2))
        s = x if self.conv1x1 is None else self.conv1x1(x)
        if self.downsample:
            s = F.avg_pool2d(s, 2)
        return (s + r) * _INV_SQRT2


class UpResBlock(_CachedKernels, nn.Module):
    """Pre-activation residual block that doubles the resolution (nearest).

    ``fused`` (default) computes the convolutions that follow the upsampling at the low resolution
    (:func:`upsample_conv3x3`; the 1x1 skip commutes with it): same result, fewer FLOPs. ``fused=False``
    is the literal upsample-then-convolve of the official code.
    """

    fused: bool = True

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1 = nn.InstanceNorm2d(c_in, affine=True)
        self.conv1 = nn.Conv2d(c_in, c_in, 3, padding=1)
        self.norm2 = nn.InstanceNorm2d(c_in, affine=True)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv1x1 = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.leaky_relu(self.norm1(x), 0.2)
        if self.fused:
            r = F.conv_transpose2d(a, self._derived_kernel(self.conv1, "upsample", _transposed_kernel), self.conv1.bias,
                                   stride=2, padding=1)
            s = x if self.conv1x1 is None else self.conv1x1(x)
            s = F.interpolate(s, scale_factor=2.0, mode="nearest")
        else:
            r = self.conv1(F.interpolate(a, scale_factor=2.0, mode="nearest"))
            s = F.interpolate(x, scale_factor=2.0, mode="nearest")
            if self.conv1x1 is not None:
                s = self.conv1x1(s)
        r = self._conv3x3(self.conv2, F.leaky_relu(self.norm2(r), 0.2))
        return (s + r) * _INV_SQRT2


def _toggle(block: type, attr: str, doc: str) -> property:
    """A model-wide on/off switch for the ``attr`` flag of every ``block`` submodule."""
    def get(self) -> bool:
        return all(getattr(m, attr) for m in self.modules() if isinstance(m, block))

    def set_(self, value: bool) -> None:
        for m in self.modules():
            if isinstance(m, block):
                setattr(m, attr, bool(value))

    return property(get, set_, doc=doc)


class UNetDiscriminator(nn.Module):
    """U-Net discriminator: (N, 3, 256, 256) in [-1, 1] -> (N, 1, 256, 256) in [0, 1].

    Args:
        widths: channels after encoder128, encoder64, encoder32, encoder16, encoder8.
        num_bottleneck: residual blocks at 1/32 resolution.
    """

    native_size = 256

    def __init__(self, widths: tuple[int, ...] = CNN_WIDTHS, num_bottleneck: int = CNN_BOTTLENECK) -> None:
        super().__init__()
        if len(widths) != 5 or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths must be 5 positive channel counts, got {widths!r}")
        if num_bottleneck < 0:
            raise ValueError(f"num_bottleneck must be >= 0, got {num_bottleneck}")
        w1, w2, w3, w4, w5 = (int(w) for w in widths)
        self.widths = (w1, w2, w3, w4, w5)
        self.num_bottleneck = int(num_bottleneck)
        self.encoder128 = ResBlock(3, w1, True)
        self.encoder64 = ResBlock(w1, w2, True)
        self.encoder32 = ResBlock(w2, w3, True)
        self.encoder16 = ResBlock(w3, w4, True)
        self.encoder8 = ResBlock(w4, w5, True)
        self.btn = nn.Sequential(*[ResBlock(w5, w5, False) for _ in range(num_bottleneck)])
        self.decoder16 = UpResBlock(w5, w4)
        self.decoder32 = UpResBlock(w4, w3)
        self.decoder64 = UpResBlock(w3, w2)
        self.decoder128 = UpResBlock(w2, w1)
        self.decoder256 = nn.Sequential(UpResBlock(w1, 1), nn.Sigmoid())

    fused_upsample = _toggle(UpResBlock, "fused", "Whether the decoder convolves at the low resolution (see :func:`upsample_conv3x3`).")
    winograd = _toggle(_CachedKernels, "winograd",
                       "Whether wide 3x3 layers on small CPU maps use :func:`winograd_conv3x3` (same result, fewer FLOPs).")
    narrow_conv = _toggle(_CachedKernels, "narrow", "Whether the 1-channel output layer uses :func:`narrow_conv3x3` on the CPU.")

    def use_official_formulation(self) -> None:
        """Switch every fast path off: upsample-then-convolve and direct convolution, as the official code runs."""
        self.fused_upsample = self.winograd = self.narrow_conv = False

    @property
    def is_official_cnn(self) -> bool:
        return self.widths == CNN_WIDTHS and self.num_bottleneck == CNN_BOTTLENECK

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid map, (N, 1, H, W); H and W must be multiples of 32."""
        e128 = self.encoder128(x)
        e64 = self.encoder64(e128)
        e32 = self.encoder32(e64)
        e16 = self.encoder16(e32)
        d = self.decoder16(self.btn(self.encoder8(e16)))
        d = self.decoder32(d * e16 + e16)
        d = self.decoder64(d * e32 + e32)
        d = self.decoder128(d * e64 + e64)
        return self.decoder256[0](d * e128 + e128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))
