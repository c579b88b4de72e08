"""Model architectures: one file each.  ``build_model`` maps a backbone name to a module."""
from __future__ import annotations

from torch import nn

from .unet import CNN_BOTTLENECK, CNN_WIDTHS, UNetDiscriminator
from .vit import MAEViTDiscriminator

BACKBONES = ("lite", "cnn", "vit")

#: ``lite``: the official U-Net topology at 1/8 width with 2 bottleneck blocks (see ``docs/bundled-model.md``).
LITE_WIDTHS = (8, 16, 32, 64, 128)
LITE_BOTTLENECK = 2


def build_model(backbone: str, **config) -> nn.Module:
    """Build an uninitialised discriminator for ``backbone`` ("lite", "cnn" or "vit").

    ``config`` overrides the architecture (``widths``/``num_bottleneck`` for U-Nets).
    """
    if backbone == "cnn":
        return UNetDiscriminator(config.get("widths", CNN_WIDTHS), config.get("num_bottleneck", CNN_BOTTLENECK))
    if backbone == "lite":
        return UNetDiscriminator(config.get("widths", LITE_WIDTHS), config.get("num_bottleneck", LITE_BOTTLENECK))
    if backbone == "vit":
        return MAEViTDiscriminator(**config)
    raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")


__all__ = ["BACKBONES", "CNN_WIDTHS", "LITE_WIDTHS", "MAEViTDiscriminator", "UNetDiscriminator", "build_model"]
