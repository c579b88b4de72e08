"""DSL-FIQA's IQA network (the whole of ``IQA.pt``), assembled from the parts in this package.

Paper: Chen, Krishnan, Gao, Kuo, Ma, Wang, "Assessing Facial Image Quality via Dual-Set Degradation Learning
and Landmark-Guided Transformer", CVPR 2024. Official code: github.com/DSL-FIQA/DSL-FIQA (``models/iqa.py``,
derived from MANIQA). The attribute names are the official ones, so the state dict keys match ``IQA.pt``.

One crop, (B, 3, 384, 384) in [-1, 1]:

1. ``vit``: blocks 6-9 of ViT-B/16-384 -> (B, 576, 3072) (:mod:`.vit`).
2. Stage 1: as (B, 3072, 576) -> two channel-attention blocks (:mod:`.channel_attention`) -> 24x24 map ->
   ``conv1`` (1x1, 3072 -> 768) -> ``swintransformer1`` (:mod:`.swin`).
3. Stage 2: the same at 768 channels -> ``conv2`` (1x1, 768 -> 384) -> ``swintransformer2`` ->
   ``conv_decoder`` (1x1, 384 -> 256) -> (B, 576, 256) tokens, row-major.
4. ``decoder``: three blocks whose queries are the crop's DE tokens (:mod:`.decoder`, :mod:`.degradation`).
5. ``embed_mlp``: the landmark vector -> one scalar per token, appended as channel 256 (:mod:`.landmarks`).
6. ``fc_score`` / ``fc_weight``: the weighted average of token scores (:mod:`.head`).

``testmlp`` is built by the official module (its ``add_mlp`` is False) and only kept for the keys.
"""
from __future__ import annotations

import torch
from torch import nn

from .channel_attention import ChannelAttention
from .decoder import DecoderBlock
from .head import score_mlp, weight_mlp, weighted_average
from .landmarks import encode, landmark_mlp
from .swin import SwinStage
from .vit import FEATURE_BLOCKS, ViTFeatures

GRID = 24
TOKENS = GRID * GRID


class DSLIQANet(nn.Module):
    """(B, 3, 384, 384) crops in [-1, 1], (B, 96, 256) DE tokens, (B, 500) landmark vectors -> (B,) scores."""

    def __init__(self) -> None:
        super().__init__()
        vit_dim = 768
        feat = vit_dim * len(FEATURE_BLOCKS)
        self.vit = ViTFeatures(vit_dim)
        self.tablock1 = nn.ModuleList([ChannelAttention(TOKENS) for _ in range(2)])
        self.conv1 = nn.Conv2d(feat, 768, 1)
        self.swintransformer1 = SwinStage(768)
        self.tablock2 = nn.ModuleList([ChannelAttention(TOKENS) for _ in range(2)])
        self.conv2 = nn.Conv2d(768, 384, 1)
        self.swintransformer2 = SwinStage(384)
        self.decoder = nn.ModuleList([DecoderBlock(256) for _ in range(3)])
        self.conv_decoder = nn.Conv2d(384, 256, 1)
        self.testmlp = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, 256))  # unused
        self.embed_mlp = landmark_mlp(TOKENS)
        self.fc_score = score_mlp(257)
        self.fc_weight = weight_mlp(257)

    def landmark_scalar(self, landmark_vector: torch.Tensor) -> torch.Tensor:
        """(B, 500) -> (B, 576). Independent of the pixels; run in float32 outside autocast (the encoding
        reaches sin(512 l), which bfloat16 cannot resolve, and the branch costs one matrix-vector product)."""
        with torch.autocast(landmark_vector.device.type, enabled=False):
            w = self.embed_mlp[0].weight
            return self.embed_mlp(encode(landmark_vector).to(w.dtype))

    def forward(self, x: torch.Tensor, de_tokens: torch.Tensor, landmark_vector: torch.Tensor,
                intermediates: dict | None = None) -> torch.Tensor:
        """Crop scores (B,); with ``intermediates`` (a dict) also fills it with every stage's output."""
        keep = intermediates if intermediates is not None else {}
        b = x.shape[0]
        feats = self.vit(x)
        keep["vit_features"] = feats
        h = feats.transpose(1, 2)  # (B, 3072, 576)
        for tab in self.tablock1:
            h = tab(h)
        h = self.conv1(h.reshape(b, -1, GRID, GRID))
        keep["stage1_tab_conv1"] = h
        h = self.swintransformer1(h)
        keep["stage1_out"] = h
        h = h.flatten(2)
        for tab in self.tablock2:
            h = tab(h)
        h = self.conv2(h.reshape(b, -1, GRID, GRID))
        keep["stage2_tab_conv2"] = h
        h = self.swintransformer2(h)
        keep["stage2_out"] = h
        h = self.conv_decoder(h)
        keep["conv_decoder_out"] = h
        h = h.flatten(2).transpose(1, 2)  # (B, 576, 256)
        for blk in self.decoder:
            h = blk(h, de_tokens)
        keep["decoder_out"] = h
        lm = self.landmark_scalar(landmark_vector)
        keep["landmark_scalar"] = lm
        h = torch.cat([h, lm.to(h.dtype).unsqueeze(-1)], dim=-1)  # (B, 576, 257)
        f, w = self.fc_score(h), self.fc_weight(h)
        keep["token_score"], keep["token_weight"] = f.squeeze(-1), w.squeeze(-1)
        acc = torch.promote_types(f.dtype, torch.float32)  # bf16 under autocast: average in float32
        score = weighted_average(f.to(acc), w.to(acc))
        keep["crop_score"] = score
        return score
