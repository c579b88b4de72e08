"""DSL-FIQA's feature extractor: ViT-B/16 at 384 px (keys ``vit.*`` of ``IQA.pt``), read at blocks 6-9.

The official code runs timm 0.5.5's ``vit_base_patch16_384`` with forward hooks on every block and keeps the
outputs of blocks 6, 7, 8 and 9 (0-based, after both residual additions, before the final norm). Here the
blocks run in a loop and those four outputs are returned directly: no hooks, so no shared list that could
hold stale entries. Blocks 10 and 11, the final norm and the classifier head exist only so that the official
state dict loads strictly; they never change a score and are not run.

The transformer blocks are the library's own ViT blocks (:mod:`ifqa_loss.models.vit`): pre-norm, LayerNorm
eps 1e-6, qkv with bias, exact-erf GELU, the same key names as timm.
"""
from __future__ import annotations

import torch
from torch import nn

from ..vit import Block, PatchEmbed

#: Blocks whose outputs DSL-FIQA reads, concatenated on the channel axis in this order.
FEATURE_BLOCKS = (6, 7, 8, 9)


class ViTFeatures(nn.Module):
    """ViT-B/16-384: (B, 3, 384, 384) normalised crops -> (B, 576, 3072) tokens x [b6 | b7 | b8 | b9] channels."""

    img_size = 384
    patch = 16

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, num_classes: int = 1000) -> None:
        super().__init__()
        self.grid = self.img_size // self.patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, dim))
        self.patch_embed = PatchEmbed(self.patch, dim)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)  # kept for the keys: the features are read before it
        self.head = nn.Linear(dim, num_classes)  # kept for the keys: never computed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"the DSL-FIQA ViT takes {self.img_size}x{self.img_size} crops, got "
                             f"{tuple(x.shape[-2:])}")
        tokens = self.patch_embed(x)  # row-major over the 24x24 grid
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        kept = []
        for i, blk in enumerate(self.blocks[:max(FEATURE_BLOCKS) + 1]):
            h = blk(h)
            if i in FEATURE_BLOCKS:
                kept.append(h[:, 1:])  # the cls token is dropped
        return torch.cat(kept, dim=-1)
