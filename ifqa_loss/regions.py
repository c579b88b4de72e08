"""Facial primary regions (eyes, nose, mouth) as soft masks, from 68-point landmarks or an FFHQ template.

Regions are ellipses fitted to the landmark groups' bounding boxes, enlarged by ``margin``.
All functions are batched tensor ops on the landmarks' device.
"""
from __future__ import annotations

import torch

#: iBUG 68-point indices of each primary region.
REGION_LANDMARKS: dict[str, tuple[int, ...]] = {
    "left_eye": tuple(range(36, 42)),
    "right_eye": tuple(range(42, 48)),
    "nose": tuple(range(27, 36)),
    "mouth": tuple(range(48, 60)),
}

#: Template boxes (x0, y0, x1, y1), as fractions of the side, for FFHQ-aligned faces: the mean landmark
#: boxes of the 5,489 landmarked faces of the training set (SCUT-FBP5500 re-aligned FFHQ-style).
TEMPLATE_BOXES: dict[str, tuple[float, float, float, float]] = {
    "left_eye": (0.328, 0.455, 0.424, 0.488),
    "right_eye": (0.574, 0.456, 0.670, 0.488),
    "nose": (0.445, 0.468, 0.553, 0.666),
    "mouth": (0.395, 0.711, 0.605, 0.789),
}

#: Extra half-size added around each box, as a fraction of the side, so the masks cover lids and lips.
DEFAULT_MARGIN = 0.03


def boxes_from_landmarks(landmarks: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 68, 2) pixel landmarks (x, y) in a ``size`` x ``size`` image -> (N, 4, 4) boxes as fractions."""
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must have shape (N, 68, 2), got {tuple(landmarks.shape)}")
    lm = landmarks.float() / float(size)
    boxes = [torch.cat([lm[:, list(idx)].amin(1), lm[:, list(idx)].amax(1)], dim=1)
             for idx in REGION_LANDMARKS.values()]
    return torch.stack(boxes, dim=1)


def template_boxes(n: int = 1, device: torch.device | str | None = None) -> torch.Tensor:
    """(n, 4, 4) template boxes for FFHQ-aligned faces."""
    return torch.tensor(list(TEMPLATE_BOXES.values()), device=device).expand(n, -1, -1).clone()


def region_masks(boxes: torch.Tensor, size: int | tuple[int, int], margin: float = DEFAULT_MARGIN,
                 softness: float = 0.0) -> torch.Tensor:
    """Rasterise ellipses inscribed in the enlarged boxes.

    Args:
        boxes: (N, R, 4) boxes (x0, y0, x1, y1) as fractions of the image side.
        size: output side, or (H, W).
        margin: enlargement of each half-axis, as a fraction of the side.
        softness: width of a linear edge ramp, as a fraction of the half-axes (0 = hard mask).
    Returns:
        (N, 1, H, W) float mask in [0, 1], the union of the R regions.
    """
    h, w = (size, size) if isinstance(size, int) else size
    ys = (torch.arange(h, device=boxes.device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=boxes.device, dtype=torch.float32) + 0.5) / w
    cx = (boxes[..., 0] + boxes[..., 2]) / 2
    cy = (boxes[..., 1] + boxes[..., 3]) / 2
    ax = (boxes[..., 2] - boxes[..., 0]) / 2 + margin
    ay = (boxes[..., 3] - boxes[..., 1]) / 2 + margin
    dx = (xs[None, None, None, :] - cx[..., None, None]) / ax[..., None, None]
    dy = (ys[None, None, :, None] - cy[..., None, None]) / ay[..., None, None]
    r = (dx.square() + dy.square()).sqrt()  # (N, R, H, W); 1 on the ellipse
    if softness > 0:
        m = ((1 + softness - r) / softness).clamp(0, 1)
    else:
        m = (r <= 1).float()
    return m.amax(dim=1, keepdim=True)


def primary_region_mask(size: int = 256, landmarks: torch.Tensor | None = None, landmark_size: int | None = None,
                        margin: float = DEFAULT_MARGIN, n: int = 1, device=None) -> torch.Tensor:
    """Eyes + nose + mouth mask (N, 1, size, size): from landmarks (N, 68, 2) in ``landmark_size`` pixels, or the
    FFHQ template when ``landmarks`` is None."""
    if landmarks is None:
        boxes = template_boxes(n, device)
    else:
        boxes = boxes_from_landmarks(landmarks, landmark_size or size)
    return region_masks(boxes, size, margin)


def primary_region_weight_map(size: int = 256, weight: float = 2.0, landmarks: torch.Tensor | None = None,
                              landmark_size: int | None = None, device=None) -> torch.Tensor:
    """Weight map (N, 1, size, size): 1 everywhere, ``1 + weight`` on eyes, nose and mouth.

    Pass it as ``IFQALoss(weight_map=...)`` to push a restoration model hardest where faces look wrong first.
    """
    if weight < 0:
        raise ValueError(f"weight must be >= 0, got {weight}")
    return 1.0 + weight * primary_region_mask(size, landmarks, landmark_size, device=device)
