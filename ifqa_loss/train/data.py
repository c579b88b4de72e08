"""Aligned face images with optional 68-point landmarks, held in memory as uint8."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io import ImageDecodeError, list_images, load_image, to_float, to_uint8
from ..preprocess import resize_to
from ..regions import boxes_from_landmarks, template_boxes


class FaceSet:
    """All images of a folder resized to ``size``, with region boxes from landmarks (or the template).

    Args:
        root: folder of aligned faces.
        landmarks: ``.npz`` with ``names`` and ``landmarks`` (N, 68, 2) in the images' pixel coordinates.
        exclude / include: file names to leave out / to keep (e.g. the validation list).
        limit: keep at most this many images (first in sorted order).
    """

    def __init__(self, root: str | Path, landmarks: str | Path | None = None, exclude: set[str] | None = None,
                 include: set[str] | None = None, size: int = 256, limit: int | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"training data folder {root} does not exist")
        names = [p.name for p in list_images(root)]
        if include is not None:
            names = [n for n in names if n in include]
        if exclude:
            names = [n for n in names if n not in exclude]
        if limit is not None:
            names = names[:limit]
        lm_table: dict[str, np.ndarray] = {}
        if landmarks is not None:
            with np.load(landmarks) as z:
                lm_names, lm_points = z["names"], z["landmarks"]
            lm_table = {str(n): lm_points[i] for i, n in enumerate(lm_names)}
        images, boxes, kept = [], [], []
        for name in names:
            try:
                img = load_image(root / name)
            except ImageDecodeError:
                continue
            h, w = img.shape[-2:]
            if (h, w) != (size, size):  # the library's resize policy, so training sees what scoring sees
                img = to_uint8(resize_to(to_float(img), size))[0]
            images.append(img)
            if name in lm_table:
                boxes.append(boxes_from_landmarks(torch.from_numpy(lm_table[name].astype(np.float32))[None], w)[0])
            else:
                boxes.append(template_boxes(1)[0])
            kept.append(name)
        if not images:
            raise ValueError(f"no decodable images found in {root}")
        self.names = kept
        self.images = torch.stack(images)  # (N, 3, S, S) uint8
        self.boxes = torch.stack(boxes)  # (N, 4, 4) fractions
        self.with_landmarks = sum(n in lm_table for n in kept)

    def __len__(self) -> int:
        return len(self.names)

    def batch(self, idx: torch.Tensor, device: torch.device, flip: torch.Tensor | None = None):
        """Images (B, 3, S, S) float in [0, 1] and boxes (B, 4, 4); ``flip`` (B,) mirrors horizontally."""
        x = to_float(self.images[idx].to(device))
        b = self.boxes[idx].clone()
        if flip is not None and flip.any():
            x[flip.to(device)] = x[flip.to(device)].flip(-1)
            fb = b[flip]
            b[flip] = torch.stack([1 - fb[..., 2], fb[..., 1], 1 - fb[..., 0], fb[..., 3]], dim=-1)
        return x, b.to(device)


def read_name_list(path: str | Path | None) -> set[str]:
    if path is None:
        return set()
    return {line.strip() for line in Path(path).read_text().splitlines() if line.strip()}
