"""IFQA++: MAE ViT-H/14 encoder-decoder with a 1-channel per-pixel head.

No masking at inference: the 256 patch tokens keep their order through the
encoder and the decoder, the cls token is dropped after ``decoder_pred``, and
the 256 x 196 outputs are unpatchified to a (1, 224, 224) sigmoid map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sincos_pos_table(dim: int, grid: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sine-cosine position table (MAE), (1, grid*grid [+1], dim)."""
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half // 2, dtype=torch.float64) / (half / 2.0))
    axis = torch.arange(grid, dtype=torch.float64)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")

    def embed(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    table = torch.cat([embed(xs), embed(ys)], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=torch.float64), table], dim=0)
    return table.float().unsqueeze(0)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(n, t, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class MAEViTDiscriminator(nn.Module):
    """MAE ViT: (N, 3, 224, 224) in [-1, 1] -> (N, 1, 224, 224) in [0, 1].

    Defaults are ViT-H/14 with the MAE decoder (512 wide, 8 blocks), as in
    ``IFQA++_Metric.pth``.
    """

    native_size = 224

    def __init__(self, img_size: int = 224, patch: int = 14, dim: int = 1280, depth: int = 32, heads: int = 16,
                 decoder_dim: int = 512, decoder_depth: int = 8, decoder_heads: int = 16,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if img_size % patch:
            raise ValueError(f"img_size {img_size} is not a multiple of patch {patch}")
        self.native_size = img_size
        self.patch = patch
        self.grid = img_size // patch
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(sincos_pos_table(dim, self.grid), requires_grad=False)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))  # unused without masking; kept for the keys
        self.decoder_pos_embed = nn.Parameter(sincos_pos_table(decoder_dim, self.grid), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_dim, decoder_heads, mlp_ratio) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, patch * patch)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        h = torch.cat([cls, tokens], dim=1)
        for blk in self.blocks:
            h = blk(h)
        h = self.decoder_embed(self.norm(h)) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            h = blk(h)
        h = self.decoder_pred(self.decoder_norm(h))[:, 1:]
        return self.unpatchify(h)

    def unpatchify(self, h: torch.Tensor) -> torch.Tensor:
        """(N, grid*grid, patch*patch) -> (N, 1, grid*patch, grid*patch)."""
        n, g, p = h.shape[0], self.grid, self.patch
        h = h.reshape(n, g, g, p, p).permute(0, 1, 3, 2, 4)
        return h.reshape(n, 1, g * p, g * p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


__all__ = ["MAEViTDiscriminator", "sincos_pos_table"]
