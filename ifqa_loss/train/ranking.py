"""Ranking terms for the discriminator: worse images must score lower.

Per-pixel BCE pushes every fake towards 0 but never says that a q18 JPEG is worse than a q85 one, so a
metric can separate real from fake and still rank severities poorly. Two optional pairwise hinge terms
add that order on the image score (the mean of the map):

* severity pairs: one face degraded by the same kind at a milder and a harsher level (or left clean);
  the harsher twin must score lower by ``margin * (level gap)``;
* region pairs: the same degradation pasted into the primary regions (eyes, nose, mouth) or into an
  equal-shaped area moved elsewhere; the primary-region version must score lower by ``margin``.

Severity is a number in [0, 1] per kind (:data:`SEVERITY_RANGES`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .augment import random_zoom
from .degradations import down_up, gaussian_blur, gaussian_noise, jpeg_on_grid, jpeg_pil, unsharp_mask

#: What severity 0 and 1 mean for each kind (JPEG quality, Gaussian sigma in px, noise sigma in 8-bit
#: levels, down-up factor, unsharp-mask amount, the level of ``degrade``'s "mixed" kind; the factor is
#: interpolated log-linearly). The mixed range puts ``degrade``'s levels 1 and 5 at severities 0.13 and 0.89,
#: where the single kinds' benchmark levels 1 and 5 fall (``degradations.SWEEP_LEVELS``).
SEVERITY_RANGES = {"jpeg": (95, 15), "blur": (0.3, 4.0), "noise": (1.0, 25.0), "downup": (1.1, 8.0),
                   "sharpen": (0.3, 4.0), "mixed": (0.32, 5.58)}
#: Unsharp-mask radius (Gaussian sigma, px) of the "sharpen" kind, drawn per sample.
SHARPEN_SIGMA = (0.8, 2.5)


def check_kinds(kinds: list[str]) -> None:
    """Raise ``ValueError`` naming the first entry of ``kinds`` that is not in :data:`SEVERITY_RANGES`."""
    if not kinds:
        raise ValueError(f"no degradation kinds given; expected some of {sorted(SEVERITY_RANGES)}")
    for k in kinds:
        if k not in SEVERITY_RANGES:
            raise ValueError(f"unknown degradation kind {k!r}; expected one of {sorted(SEVERITY_RANGES)}")


def severity_value(kind: str, severity: torch.Tensor) -> torch.Tensor:
    """The kind's own value (JPEG quality, sigma, factor, amount, mixed level) at each severity in [0, 1]: linear
    between the ends of :data:`SEVERITY_RANGES` (log-linear for the down-up factor; JPEG quality is not rounded)."""
    check_kinds([kind])
    lo, hi = SEVERITY_RANGES[kind]
    u = severity.to(torch.float32)
    return lo * (hi / lo) ** u if kind == "downup" else lo + u * (hi - lo)


def degrade_at(x: torch.Tensor, kind: str, severity: torch.Tensor, gen: torch.Generator,
               random_grid: bool = False) -> torch.Tensor:
    """Degrade each sample by ``kind`` at its own severity; ``random_grid`` puts the JPEG blocks (of the "jpeg"
    and "mixed" kinds) at a random offset (:func:`~ifqa_loss.train.degradations.jpeg_off_grid`).

    Args:
        x: (N, 3, H, W) in [0, 1]. severity: (N,) in [0, 1].
    Returns:
        (N, 3, H, W) in [0, 1].
    """
    value = severity_value(kind, severity)
    if kind == "jpeg":
        return jpeg_on_grid(jpeg_pil, x, value.round().int(), gen, random_grid)
    if kind == "blur":
        return gaussian_blur(x, value.to(x.device))
    if kind == "noise":
        return gaussian_noise(x, value.to(x.device), gen)
    if kind == "sharpen":
        sigma = SHARPEN_SIGMA[0] + torch.rand(x.shape[0], generator=gen) * (SHARPEN_SIGMA[1] - SHARPEN_SIGMA[0])
        return unsharp_mask(x, sigma, value)
    if kind == "mixed":
        return mixed_at(x, value, gen, random_grid)
    return down_up(x, value, ["bicubic"] * x.shape[0])  # "downup"


def mixed_at(x: torch.Tensor, level: torch.Tensor, gen: torch.Generator, random_grid: bool = False) -> torch.Tensor:
    """``degrade(x, "mixed", level)`` with a level per sample: blur, down-up, noise and JPEG, all scaled by it
    (the JPEG blocks at a random offset with ``random_grid``).

    Args:
        x: (N, 3, H, W) in [0, 1]. level: (N,) levels of ``degrade``'s "mixed" kind (1 mild ... 5 harsh).
    Returns:
        (N, 3, H, W) in [0, 1].
    """
    level = level.to(torch.float32)
    y = gaussian_blur(x, (0.4 * level).clamp_min(1e-3).to(x.device))
    y = down_up(y, 1.0 + 0.5 * level, ["bicubic"] * x.shape[0])
    y = gaussian_noise(y, 2.5 * level, gen, p_gray=0.0)
    return jpeg_on_grid(jpeg_pil, y, (95 - 12 * level).round().int(), gen, random_grid)


def ranking_faces(hq: torch.Tensor, gen: torch.Generator, zoom: float = 1.0, soften: float = 0.0) -> torch.Tensor:
    """The faces that severity pairs start from: ``hq`` zoomed in by 1..``zoom``, a ``soften`` share blurred.

    Zooming covers framings tighter than the training crops (a face filling more of the frame shows JPEG blocks
    on more skin). Softening (Gaussian sigma 0.4-1.2, shared by both twins) teaches the order on slightly soft
    faces too, as real restorations are. With ``zoom=1`` and ``soften=0`` this returns ``hq`` and draws nothing.

    Args:
        hq: (N, 3, H, W) in [0, 1].
    Returns:
        (N, 3, H, W) in [0, 1].
    """
    if zoom > 1:
        hq, _ = random_zoom(hq, None, gen, max_zoom=zoom)
    if soften > 0:
        soft = (torch.rand(hq.shape[0], generator=gen) < soften).to(hq.device)
        sigma = 0.4 + 0.8 * torch.rand(hq.shape[0], generator=gen)
        hq = torch.where(soft[:, None, None, None], gaussian_blur(hq, sigma.to(hq.device)), hq)
    return hq


def severity_pairs(hq: torch.Tensor, kinds: list[str], gen: torch.Generator, p_clean: float = 0.25,
                   random_grid: bool = False):
    """Milder and harsher twins of each face, one kind per sample drawn uniformly from ``kinds``.

    Repeating a kind in ``kinds`` draws it more often. With probability ``p_clean`` the milder twin is the
    clean face itself. ``random_grid``: as in :func:`degrade_at`.

    Returns:
        milder (N, 3, H, W), harsher (N, 3, H, W), gap (N,): harsher minus milder severity, in (0, 1].
    """
    check_kinds(kinds)
    n = hq.shape[0]
    pick = torch.randint(0, len(kinds), (n,), generator=gen)
    u = torch.rand(n, 2, generator=gen).sort(dim=1).values
    clean = torch.rand(n, generator=gen) < p_clean
    u[clean, 0] = 0.0
    milder, harsher = hq.clone(), hq.clone()
    for kind in dict.fromkeys(kinds):
        sel = torch.tensor([kinds[int(i)] == kind for i in pick])
        mild = sel & ~clean
        if sel.any():
            harsher[sel.to(hq.device)] = degrade_at(hq[sel.to(hq.device)], kind, u[sel, 1], gen, random_grid)
        if mild.any():
            milder[mild.to(hq.device)] = degrade_at(hq[mild.to(hq.device)], kind, u[mild, 0], gen, random_grid)
    return milder, harsher, (u[:, 1] - u[:, 0]).clamp_min(1e-3).to(hq.device)


def moved_masks(masks: torch.Tensor, gen: torch.Generator, distance: tuple[float, float] = (0.15, 0.3)) -> torch.Tensor:
    """Each mask shifted in a random direction by ``distance`` of the side, minus the original regions.

    Args:
        masks: (N, 1, H, W) primary-region masks.
    Returns:
        (N, 1, H, W) control masks of (at most) the same shape, disjoint from ``masks``.
    """
    out = torch.empty_like(masks)
    side = masks.shape[-1]
    for i in range(masks.shape[0]):
        angle = float(torch.rand((), generator=gen)) * 2 * math.pi
        r = (distance[0] + (distance[1] - distance[0]) * float(torch.rand((), generator=gen))) * side
        out[i] = masks[i].roll((round(r * math.sin(angle)), round(r * math.cos(angle))), dims=(-2, -1))
    return out * (1 - masks)


def region_pairs(hq: torch.Tensor, lq: torch.Tensor, masks: torch.Tensor, gen: torch.Generator):
    """``lq`` pasted into the primary regions of ``hq``, and into an equal-shaped area elsewhere.

    Returns:
        in_primary (N, 3, H, W), elsewhere (N, 3, H, W).
    """
    control = moved_masks(masks, gen)
    return hq * (1 - masks) + lq * masks, hq * (1 - control) + lq * control


def ranking_hinge(better: torch.Tensor, worse: torch.Tensor, margin: torch.Tensor | float) -> torch.Tensor:
    """Mean of ``relu(margin - (better - worse))``: zero once ``better`` leads by the margin. Shapes (N,)."""
    return F.relu(margin - (better - worse)).mean()
