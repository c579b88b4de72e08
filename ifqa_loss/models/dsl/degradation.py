"""DSL-FIQA's degradation encoder (the whole of ``DE.pt``: keys ``E.*`` and ``mlp.*``).

Six 3x3 convolutions (padding 1, bias), each followed by BatchNorm2d (running statistics: the module is only
ever used in eval mode) and LeakyReLU(0.1): 3 -> 64 -> 64 -> 128 (stride 2) -> 128 -> 256 (stride 2) -> 256.
A 384x384 crop gives a 256 x 96 x 96 map, average-pooled to 8 rows x 12 columns (exact 12 x 8 pixel bins)
and read channel-last, row-major: 96 "DE tokens" of width 256, the queries of the IQA net's decoder.

The encoder was trained beforehand with a contrastive objective (not released); ``mlp`` is its projection
head for that training, kept for the keys and never run at test time.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: (rows, columns) of the DE token grid
TOKEN_GRID = (8, 12)


def _conv_bn(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.1)]


class DegradationEncoder(nn.Module):
    """(B, 3, 384, 384) normalised crops -> (B, 96, 256) DE tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.E = nn.Sequential(*_conv_bn(3, 64, 1), *_conv_bn(64, 64, 1), *_conv_bn(64, 128, 2),
                               *_conv_bn(128, 128, 1), *_conv_bn(128, 256, 2), *_conv_bn(256, 256, 1))
        self.mlp = nn.Sequential(nn.Linear(256, 256), nn.LeakyReLU(0.1), nn.Linear(256, 256))  # training only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(self.E(x), TOKEN_GRID)  # (B, 256, 8, 12)
        return pooled.permute(0, 2, 3, 1).reshape(x.shape[0], -1, pooled.shape[1])
