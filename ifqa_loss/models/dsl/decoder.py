"""DSL-FIQA's decoder (keys ``decoder.{0,1,2}.*`` of ``IQA.pt``): image tokens attended by DE-token queries.

Each of the three blocks (width 256, LayerNorm eps 1e-6) computes ``x = x + Attn(LN1(x), de)`` then
``x = x + MLP(LN2(x))``. The queries are the 96 DE tokens, raw (no norm), through ``q``; keys and values are
the 576 image tokens through ``kv`` (the first 256 outputs are k, the last 256 v; 8 heads of 32). The official
code stretches the 96 query rows to 576 with ``F.interpolate``'s default nearest mode, so image token n is
answered by the query of DE token n // 6 (not the spatially co-located one: that is what was trained).
The MLP is fc1 -> depthwise 3x3 convolution on the 24x24 map -> exact GELU -> fc2.

``attn.task_query`` is a parameter of the official module that inference never uses; it is kept for the keys.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DETokenAttention(nn.Module):
    def __init__(self, dim: int = 256, heads: int = 8) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.task_query = nn.Parameter(torch.zeros(1, 1, dim))  # unused at inference
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, de_tokens: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        d = c // self.heads
        q = self.q(de_tokens)  # (B, 96, C)
        # nearest stretch 96 -> N rows (n // 6 for N = 576), as F.interpolate(..., size=N) does
        q = q.repeat_interleave(n // q.shape[1], dim=1) if n % q.shape[1] == 0 else \
            F.interpolate(q.transpose(1, 2), size=n).transpose(1, 2)
        q = q.reshape(b, n, self.heads, d).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class DepthwiseConv(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, size: int) -> torch.Tensor:
        b, n, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(b, c, size, size)).flatten(2).transpose(1, 2)


class DecoderMlp(nn.Module):
    def __init__(self, dim: int = 256, hidden: int = 1024) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DepthwiseConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, size: int) -> torch.Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), size)))  # no activation between fc1 and the dwconv


class DecoderBlock(nn.Module):
    """(B, 576, 256) image tokens, (B, 96, 256) DE tokens -> (B, 576, 256)."""

    def __init__(self, dim: int = 256, heads: int = 8, hidden: int = 1024, size: int = 24) -> None:
        super().__init__()
        self.size = size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = DETokenAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = DecoderMlp(dim, hidden)

    def forward(self, x: torch.Tensor, de_tokens: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), de_tokens)
        return x + self.mlp(self.norm2(x), self.size)
