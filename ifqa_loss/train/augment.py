"""Content augmentations of the real faces, applied before degradation so both classes share them.

They keep the discriminator from scoring identity, skin tone or framing instead of image quality.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .degradations import gaussian_blur


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


def face_ellipse_weight(boxes: torch.Tensor, size: int, inner: float = 1.0, outer: float = 1.6) -> torch.Tensor:
    """How far each pixel lies outside the face: 0 on the face, rising to 1 at ``outer`` face radii.

    The face is an ellipse placed by the eye and mouth boxes: centred a third of the way from the eyes' centre to
    the mouth's, half-axes 1.1 (across) and 1.3 (down) eye-to-mouth distances, which covers the brows, the chin and
    the cheeks of FFHQ-aligned faces. The weight ramps linearly from ``inner`` to ``outer`` elliptical radii.

    Args:
        boxes: (B, 4, 4) region boxes (left eye, right eye, nose, mouth) as fractions of the side.
    Returns:
        (B, 1, size, size) weights in [0, 1].
    """
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2  # (B, 4, 2)
    eyes = centres[:, :2].mean(1)
    mouth = centres[:, 3]
    d = (mouth - eyes).norm(dim=-1).clamp(min=1e-3)
    c = eyes + (mouth - eyes) / 3
    coords = (torch.arange(size, device=boxes.device, dtype=torch.float32) + 0.5) / size
    dx = (coords[None, None, :] - c[:, 0, None, None]) / (1.1 * d[:, None, None])
    dy = (coords[None, :, None] - c[:, 1, None, None]) / (1.3 * d[:, None, None])
    r = (dx.square() + dy.square()).sqrt()
    return ((r - inner) / (outer - inner)).clamp(0, 1)[:, None]



def random_background(x: torch.Tensor, boxes: torch.Tensor, gen: torch.Generator, p: float,
                      max_sigma: float = 6.0) -> torch.Tensor:
    """Give a share ``p`` of the faces other surroundings: their own defocused, or another scene, sharp or not.

    Portraits are shot against every kind of background, often out of focus; the training faces have plain
    studio ones. For each chosen face, the surroundings are taken from the face itself (half of them) or from a
    random square of another face of the batch, zoomed in 1-3x, then blurred with a Gaussian of sigma
    0..``max_sigma`` pixels at 256 px (scaled with the side; under 0.3 means no blur), and blended in beyond the
    face along :func:`face_ellipse_weight` (from 1.15 to 1.6 face radii). The face stays as it was, and a real face
    stays real: the discriminator learns to judge the face, not the scene around it.

    Args:
        x: (B, 3, S, S) in [0, 1]. boxes: (B, 4, 4) region boxes as fractions of the side.
    Returns:
        (B, 3, S, S), the unchosen faces unchanged.
    """
    b, size = x.shape[0], x.shape[-1]
    chosen = torch.rand(b, generator=gen) < p
    own = torch.rand(b, generator=gen) < 0.5
    sigma = torch.rand(b, generator=gen) * max_sigma * size / 256
    zoom = 1 + 2 * torch.rand(b, generator=gen)
    corner = torch.rand(b, 2, generator=gen)
    donor = (torch.arange(b) + 1 + torch.randint(0, max(b - 1, 1), (b,), generator=gen)) % b
    if not chosen.any():
        return x
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    theta[:, :, 2] = (corner * 2 - 1) * (1 - 1 / zoom)[:, None]  # the zoomed square stays inside the image
    grid = F.affine_grid(theta.to(x), [b, 3, size, size], align_corners=False)
    scene = F.grid_sample(x[donor.to(x.device)], grid, mode="bilinear", padding_mode="reflection",
                          align_corners=False)
    scene = torch.where(own.to(x.device)[:, None, None, None], x, scene)
    blur = sigma >= 0.3
    if blur.any():
        scene[blur.to(x.device)] = gaussian_blur(scene[blur.to(x.device)], sigma[blur].to(x))
    w = face_ellipse_weight(boxes, size, inner=1.15, outer=1.6) * chosen.to(x)[:, None, None, None]
    return x + (scene - x) * w


def random_framing(x: torch.Tensor, gen: torch.Generator, shift: float = 0.02, zoom: float = 0.03,
                   rotate: float = 2.0) -> torch.Tensor:
    """Re-frame each face a little, as aligning it again from other landmarks would.

    A random shift of up to ``shift`` of the side in each axis, a zoom of 1/(1 + ``zoom``)..1 + ``zoom`` and a
    rotation of up to ``rotate`` degrees about the centre, resampled bicubically (reflection padding) and clamped
    to [0, 1].

    Args:
        x: (B, 3, H, W) in [0, 1].
    Returns:
        (B, 3, H, W).
    """
    b = x.shape[0]
    s = torch.exp((torch.rand(b, generator=gen) * 2 - 1) * math.log1p(zoom))
    a = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(rotate)
    t = (torch.rand(b, 2, generator=gen) * 2 - 1) * shift
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a) / s, -torch.sin(a) / s
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a) / s, torch.cos(a) / s
    theta[:, :, 2] = 2 * t
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bicubic", padding_mode="reflection", align_corners=False).clamp(0, 1)
