"""DSL-FIQA's landmark branch: the 500-long landmark vector of a crop and its network (``embed_mlp.*``).

The vector says only which of the 68 landmarks fall inside the crop, never where (the rules of the official
``test.py``; :func:`landmark_vector`). The branch encodes it with sines and cosines at 10 octaves, then
Linear(10500, 10500) -> ReLU -> Dropout -> Linear(10500, 576) -> Sigmoid gives one scalar per image token,
which the head appends to each token as a 257th channel.

The official ``freq`` config value (500) is passed but unused; the octaves are 2^0 .. 2^9.
"""
from __future__ import annotations

import torch
from torch import nn

NUM_LANDMARKS = 68
VECTOR_LENGTH = 500
#: the padding index: number of landmarks + 1 (68 itself never occurs)
PAD_INDEX = NUM_LANDMARKS + 1
OCTAVES = 10
ENCODED_LENGTH = VECTOR_LENGTH * (1 + 2 * OCTAVES)


def landmark_vector(landmarks: torch.Tensor, top: int, left: int, crop: int = 384) -> torch.Tensor:
    """The official landmark vector of the crop at (``top``, ``left``): (..., 68, 2) (x, y) -> (..., 500) float32.

    1. inside: the landmark indices, ascending, with ``top <= y <= top + crop`` and ``left <= x <= left + crop``
       (both bounds inclusive: a point one pixel past the crop counts).
    2. those indices followed by 69 up to length 500.
    3. ``((p - min p) / (max p - min p + 1e-6)) * 2 - 1`` in float64, then float32. ``min p`` is the smallest
       inside index, so the code of an index depends on the crop; with nothing inside every entry is -1.

    No gradient flows through it (it is made of comparisons). Computed in float64 on the landmarks' device.
    """
    lm = landmarks.detach().to(torch.float64)
    x, y = lm[..., 0], lm[..., 1]
    inside = (y >= top) & (y <= top + crop) & (x >= left) & (x <= left + crop)  # (..., 68)
    idx = torch.arange(NUM_LANDMARKS, device=lm.device, dtype=torch.float64).expand_as(x)
    # inside indices first, ascending, then the pad value: sort by (outside, index)
    key = torch.where(inside, idx, idx + 2 * PAD_INDEX)
    ordered = torch.sort(key, dim=-1).values
    padded = torch.where(ordered < 2 * PAD_INDEX, ordered, torch.full_like(ordered, PAD_INDEX))
    p = torch.cat([padded, padded.new_full((*padded.shape[:-1], VECTOR_LENGTH - NUM_LANDMARKS), PAD_INDEX)], -1)
    lo = p.min(dim=-1, keepdim=True).values
    hi = p.max(dim=-1, keepdim=True).values
    return (((p - lo) / (hi - lo + 1e-6)) * 2 - 1).to(torch.float32)


def encode(vector: torch.Tensor) -> torch.Tensor:
    """(..., 500) -> (..., 10500): [l, sin(l), cos(l), sin(2 l), cos(2 l), ..., sin(512 l), cos(512 l)], float32."""
    v = vector.float()
    freqs = 2.0 ** torch.linspace(0.0, OCTAVES - 1, OCTAVES, device=v.device)
    parts = [v]
    for f in freqs:
        parts += [torch.sin(v * f), torch.cos(v * f)]
    return torch.cat(parts, dim=-1)


def landmark_mlp(tokens: int = 576) -> nn.Sequential:
    """``embed_mlp``: the encoded vector -> one scalar in (0, 1) per image token."""
    return nn.Sequential(nn.Linear(ENCODED_LENGTH, ENCODED_LENGTH), nn.ReLU(), nn.Dropout(0.1),
                         nn.Linear(ENCODED_LENGTH, tokens), nn.Sigmoid())
