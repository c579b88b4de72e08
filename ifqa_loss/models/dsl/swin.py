"""DSL-FIQA's windowed transformer stages (keys ``swintransformer{1,2}.*`` of ``IQA.pt``).

A stage is two layers on the 24x24 token map; each layer is two Swin blocks (4x4 windows, 4 heads, the
second shifted by 2) then a 3x3 convolution and a ReLU, and the stage adds it back as
``x = 0.13 * layer(x) + x``. The 0.13 is hard-coded in the official code (its config's ``scale`` 0.8 is passed
but unused). The stage's ``downsample`` convolution is built and saved but never called; it is kept for the keys.

Blocks follow Swin Transformer (Liu et al. 2021): LayerNorm eps 1e-5, q scaled by head_dim^-0.5 before
q @ k^T, a learned relative position bias (49 x heads table, index (dy + 3) * 7 + (dx + 3)), and in the shifted
block the standard mask (-100 between tokens from different regions of the rolled map). Both index and mask
are buffers in the official file, and the loaded values are the ones used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: the residual scale of each layer in the official SwinTransformer stage
LAYER_SCALE = 0.13


def relative_position_index(window: int) -> torch.Tensor:
    """(window^2, window^2) int64: (dy + window - 1) * (2 window - 1) + (dx + window - 1), query minus key."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, window^2), row-major inside the window
    rel = coords[:, :, None] - coords[:, None, :]
    return (rel[0] + window - 1) * (2 * window - 1) + (rel[1] + window - 1)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, window^2, C), windows row-major, tokens row-major inside each."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, window^2, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shifted_window_mask(size: int, window: int, shift: int) -> torch.Tensor:
    """(nW, window^2, window^2) float32: 0 within a region of the rolled map, -100 across regions."""
    regions = torch.zeros(1, size, size, 1)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in bounds:
        for ws in bounds:
            regions[:, hs, ws, :] = label
            label += 1
    ids = window_partition(regions, window).squeeze(-1)  # (nW, window^2)
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # Swin scales q first (unlike the other blocks here)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attn = attn + bias.reshape(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(bw // nw, nw, self.heads, n, n) + mask[None, :, None]).view(bw, self.heads, n, n)
        x = (torch.softmax(attn, dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(x)


class SwinMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """(B, H*W, C) tokens, row-major -> same; windowed attention then MLP, each pre-norm with a residual."""

    def __init__(self, dim: int, heads: int, size: int, window: int, shift: int, hidden: int) -> None:
        super().__init__()
        self.size, self.window, self.shift = size, window, shift
        if shift:
            self.register_buffer("attn_mask", shifted_window_mask(size, window, shift))
        else:
            self.attn_mask = None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinMlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        s = self.size
        h = self.norm1(x).view(b, s, s, c)
        if self.shift:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(1, 2))
        h = window_reverse(self.attn(window_partition(h, self.window), self.attn_mask), self.window, s, s)
        if self.shift:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + h.reshape(b, n, c)
        return x + self.mlp(self.norm2(x))


class SwinLayer(nn.Module):
    """Two Swin blocks (plain, shifted), then a 3x3 convolution and ReLU on the token map."""

    def __init__(self, dim: int, heads: int, size: int, window: int, hidden: int, depth: int = 2) -> None:
        super().__init__()
        self.size = size
        self.blocks = nn.ModuleList([SwinBlock(dim, heads, size, window, 0 if i % 2 == 0 else window // 2, hidden)
                                     for i in range(depth)])
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        b, n, c = x.shape
        x = F.relu(self.conv(x.transpose(1, 2).reshape(b, c, self.size, self.size)))
        return x.flatten(2).transpose(1, 2)


class SwinStage(nn.Module):
    """(B, C, 24, 24) -> same: ``x = 0.13 * layer(x) + x`` for each of the layers, on row-major tokens."""

    def __init__(self, dim: int, heads: int = 4, size: int = 24, window: int = 4, hidden: int = 768,
                 layers: int = 2) -> None:
        super().__init__()
        self.size = size
        self.dropout = nn.Dropout(0.1)  # inactive in eval
        self.layers = nn.ModuleList([SwinLayer(dim, heads, size, window, hidden) for _ in range(layers)])
        self.downsample = nn.Conv2d(dim, dim, 3, padding=1)  # kept for the keys: never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = self.dropout(x).flatten(2).transpose(1, 2)
        for layer in self.layers:
            x = LAYER_SCALE * layer(x) + x
        return x.transpose(1, 2).reshape(b, c, h, w)
