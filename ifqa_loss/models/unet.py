"""Per-pixel U-Net discriminator of IFQA, backbone ``cnn`` (official weights ``IFQA_Metric.pth``).

Paper: Jo, Cho, Park, Hong, "IFQA: Interpretable Face Quality Assessment", WACV 2023.
Official code: github.com/AIM-SKKU/IFQA, ``model.py`` (classes ``ResBlk``, ``UpResBlk``, ``Discriminator``),
run by its ``test.py``. This file follows it block for block, with the same state-dict keys:

- ``ResBlock`` = ``ResBlk`` (from StarGAN v2): pre-activation residual block, InstanceNorm (affine),
  LeakyReLU(0.2), 3x3 convolutions, 1x1 shortcut without bias where the width changes, 2x2 average
  pooling after the first convolution when downsampling, output ``(shortcut + residual) / sqrt(2)``.
- ``UpResBlock`` = ``UpResBlk``: the same with a 2x nearest upsampling before the first convolution and
  on the shortcut (before its 1x1 convolution).
- ``UNetDiscriminator`` = ``Discriminator``: encoder128 .. encoder8 (3 -> 64 -> ... -> 1024, each halving
  the map), 4 bottleneck blocks, decoder16 .. decoder256 back up to 1 channel and a sigmoid. Skips are
  multiplicative: each decoder block after the first takes ``d * e + e``.

Layers run through ``self.conv(layer, x, upsample=...)``, which computes ``layer(upsample(x))`` exactly as
written here, by a faster but equal formulation where one was measured faster (:mod:`._cpu_kernels`;
``use_official_formulation()`` switches them all off). ``widths`` and ``num_bottleneck`` narrower than
the official ones give the ``lite`` backbone.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._cpu_kernels import FastPaths

CNN_WIDTHS = (64, 128, 256, 512, 1024)
CNN_BOTTLENECK = 4
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


class ResBlock(FastPaths, nn.Module):
    """Pre-activation residual block, optionally halving the resolution (official ``ResBlk``)."""

    def __init__(self, c_in: int, c_out: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.norm1 = nn.InstanceNorm2d(c_in, affine=True)
        self.conv1 = nn.Conv2d(c_in, c_in, 3, padding=1)
        self.norm2 = nn.InstanceNorm2d(c_in, affine=True)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv1x1 = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv(self.conv1, F.leaky_relu(self.norm1(x), 0.2))
        if self.downsample:
            r = F.avg_pool2d(r, 2)
        r = self.conv(self.conv2, F.leaky_relu(self.norm2(r), 0.2))
        s = x if self.conv1x1 is None else self.conv1x1(x)
        if self.downsample:
            s = F.avg_pool2d(s, 2)
        return (s + r) * _INV_SQRT2


class UpResBlock(FastPaths, nn.Module):
    """Pre-activation residual block that doubles the resolution, nearest (official ``UpResBlk``)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1 = nn.InstanceNorm2d(c_in, affine=True)
        self.conv1 = nn.Conv2d(c_in, c_in, 3, padding=1)
        self.norm2 = nn.InstanceNorm2d(c_in, affine=True)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv1x1 = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv(self.conv1, F.leaky_relu(self.norm1(x), 0.2), upsample=True)
        r = self.conv(self.conv2, F.leaky_relu(self.norm2(r), 0.2))
        s = self.conv(self.conv1x1, x, upsample=True)  # conv1x1 is None (identity) where the width is kept
        return (s + r) * _INV_SQRT2


def _toggle(attr: str, doc: str) -> property:
    """A model-wide on/off switch for the ``attr`` flag of every block."""
    def get(self) -> bool:
        return all(getattr(m, attr) for m in self.modules() if isinstance(m, FastPaths))

    def set_(self, value: bool) -> None:
        for m in self.modules():
            if isinstance(m, FastPaths):
                setattr(m, attr, bool(value))

    return property(get, set_, doc=doc)


class UNetDiscriminator(nn.Module):
    """U-Net discriminator: (N, 3, 256, 256) in [-1, 1] -> (N, 1, 256, 256) in [0, 1] (official ``Discriminator``).

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

    fused_upsample = _toggle("fused", "Whether the decoder convolves at the low resolution (a transposed convolution).")
    winograd = _toggle("winograd", "Whether wide 3x3 layers on small CPU maps may use Winograd F(2x2, 3x3).")
    narrow_conv = _toggle("narrow", "Whether the 1-channel output layer may use a matrix product + col2im on the CPU.")

    def use_official_formulation(self) -> None:
        """Switch every fast path off: upsample-then-convolve and PyTorch's convolution, as the official code runs."""
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
