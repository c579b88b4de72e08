"""Content augmentations of the real faces, applied before degradation so both classes share them.

They keep the discriminator from scoring identity, skin tone or framing instead of image quality.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_zoom(x: torch.Tensor, boxes: torch.Tensor | None, gen: torch.Generator, max_zoom: float = 1.2,
                max_shift: float = 0.04) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Zoom in by 1..max_zoom and shift by up to ``max_shift`` of the side (reflection padding).

    Args:
        x: (B, 3, H, W). boxes: (B, R, 4) region boxes as fractions, transformed alongside, or None.
    Returns:
        the zoomed images and the transformed boxes (None when ``boxes`` is None).
    """
    b = x.shape[0]
    s = 1 + torch.rand(b, generator=gen) * (max_zoom - 1)
    t = (torch.rand(b, 2, generator=gen) * 2 - 1) * max_shift
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
    theta[:, :, 2] = 2 * t
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if boxes is None:
        return out, None
    # input fraction u maps to output (u - 0.5 - t) * s + 0.5
    st = s[:, None, None].to(boxes)
    shift = t.repeat(1, 2)[:, None, :].to(boxes)
    return out, (boxes - 0.5 - shift) * st + 0.5


def random_color(x: torch.Tensor, gen: torch.Generator, p_gray: float = 0.1) -> torch.Tensor:
    """Brightness x0.8-1.2, contrast x0.8-1.2, saturation x0.6-1.4, gamma 0.8-1.25, some grayscale."""
    b = x.shape[0]

    def u(lo, hi):
        return (lo + torch.rand(b, generator=gen) * (hi - lo)).to(x)[:, None, None, None]

    gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = gray + (x - gray) * u(0.6, 1.4)
    mean = gray.mean(dim=(2, 3), keepdim=True)
    x = mean + (x - mean) * u(0.8, 1.2)
    x = (x * u(0.8, 1.2)).clamp(0, 1)
    x = x.pow(torch.exp(torch.log(u(0.8, 1.25))))
    to_gray = (torch.rand(b, generator=gen) < p_gray).to(x.device)[:, None, None, None]
    g = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return torch.where(to_gray, g.expand_as(x), x).clamp(0, 1)


def random_boxes_mask(b: int, size: int, gen: torch.Generator, device, area: tuple[float, float] = (0.05, 0.3)):
    """(B, 1, size, size) masks, each one random axis-aligned rectangle covering ``area`` of the image."""
    a = area[0] + torch.rand(b, generator=gen) * (area[1] - area[0])
    aspect = torch.exp((torch.rand(b, generator=gen) * 2 - 1) * 0.7)
    w = (a * aspect).sqrt().clamp(max=1)
    h = (a / aspect).sqrt().clamp(max=1)
    x0 = torch.rand(b, generator=gen) * (1 - w)
    y0 = torch.rand(b, generator=gen) * (1 - h)
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    mx = (c[None] >= x0[:, None]) & (c[None] < (x0 + w)[:, None])
    my = (c[None] >= y0[:, None]) & (c[None] < (y0 + h)[:, None])
    return (my[:, :, None] & mx[:, None, :]).float()[:, None].to(device)
