"""Channel attention (MANIQA's transposed-attention block, "TAB"), keys ``tablock{1,2}.{0,1}.*`` of ``IQA.pt``.

Input X is (B, C, N): C channels, each a row of N = 576 token values. Linear(N, N) layers act on each
channel's row, so the C x C attention lets channels attend to channels. The official block then transposes
the result to (B, N, C) and reshapes that memory straight back to (B, C, N) without transposing back;
that scrambling is part of the trained function and is reproduced exactly here.
"""
from __future__ import annotations

import torch
from torch import nn


class ChannelAttention(nn.Module):
    """out = scramble(softmax(Q K^T / sqrt(N)) V) + X, with Q, K, V = Linear(N, N) of X's rows."""

    def __init__(self, tokens: int = 576) -> None:
        super().__init__()
        self.c_q = nn.Linear(tokens, tokens)
        self.c_k = nn.Linear(tokens, tokens)
        self.c_v = nn.Linear(tokens, tokens)
        self.scale = tokens ** -0.5
        self.proj_drop = nn.Dropout(0.1)  # no parameters; inactive in eval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n = x.shape
        q, k, v = self.c_q(x), self.c_k(x), self.c_v(x)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)  # scaled after the product, as trained
        y = (attn @ v).transpose(1, 2).reshape(b, c, n)  # the official reshape: (N, C) memory read as (C, N)
        return self.proj_drop(y) + x
