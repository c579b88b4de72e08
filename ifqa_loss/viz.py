"""Heatmaps of quality maps: a perceptual colour map and an overlay on the (resized) input."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Anchor colours of a blue -> cyan -> yellow -> red ramp (low quality = red, high = blue would be ambiguous,
# so we follow the common "hot = suspicious" convention: 0 (looks fake) is red, 1 (looks real) is blue).
_ANCHORS = torch.tensor([
    [0.70, 0.02, 0.02],
    [0.97, 0.45, 0.10],
    [0.99, 0.90, 0.35],
    [0.55, 0.85, 0.85],
    [0.10, 0.35, 0.80],
])


def colorize(qmap: torch.Tensor) -> torch.Tensor:
    """(N, 1, h, w) map in [0, 1] -> (N, 3, h, w) RGB in [0, 1]: red = looks wrong, blue = looks real."""
    v = qmap.clamp(0, 1) * (len(_ANCHORS) - 1)
    lo = v.floor().long().clamp(max=len(_ANCHORS) - 2)
    t = v - lo
    anchors = _ANCHORS.to(qmap.device, qmap.dtype)
    c0 = anchors[lo[:, 0]].permute(0, 3, 1, 2)
    c1 = anchors[lo[:, 0] + 1].permute(0, 3, 1, 2)
    return c0 + (c1 - c0) * t


def overlay(image: torch.Tensor, qmap: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Blend the coloured map over ``image`` (N, 3, H, W) in [0, 1], resized to the map's size."""
    if image.shape[-2:] != qmap.shape[-2:]:
        image = F.interpolate(image, size=qmap.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    return (1 - alpha) * image.clamp(0, 1) + alpha * colorize(qmap)


def to_uint8_hwc(x: torch.Tensor):
    """(3, H, W) float in [0, 1] -> numpy (H, W, 3) uint8."""
    return (x.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
