"""DSL-FIQA (CVPR 2024) as PyTorch modules: one file per part, the official state-dict keys.

- :mod:`.degradation`: the degradation encoder (``DE.pt``).
- :mod:`.iqa`: the IQA network (``IQA.pt``), built from :mod:`.vit` (ViT-B/16-384 features),
  :mod:`.channel_attention`, :mod:`.swin`, :mod:`.decoder`, :mod:`.landmarks` and :mod:`.head`.

:class:`DSLFIQANet` joins the two: normalised crops and landmark vectors in, crop scores out. The image-level
API (crops, landmarks, loading the official files) is :mod:`ifqa_loss.dsl`.
"""
from __future__ import annotations

import torch
from torch import nn

from .degradation import DegradationEncoder
from .iqa import DSLIQANet
from .landmarks import landmark_vector

CROP = 384


class DSLFIQANet(nn.Module):
    """``de`` (DE.pt) + ``iqa`` (IQA.pt): (B, 3, 384, 384) crops in [-1, 1], (B, 500) landmark vectors -> (B,)."""

    crop = CROP

    def __init__(self) -> None:
        super().__init__()
        self.de = DegradationEncoder()
        self.iqa = DSLIQANet()

    def forward(self, x: torch.Tensor, landmark_vectors: torch.Tensor, intermediates: dict | None = None
                ) -> torch.Tensor:
        de_tokens = self.de(x)
        if intermediates is not None:
            intermediates["de_tokens"] = de_tokens
        return self.iqa(x, de_tokens, landmark_vectors, intermediates)


__all__ = ["CROP", "DSLFIQANet", "DSLIQANet", "DegradationEncoder", "landmark_vector"]
