"""A plain restoration U-Net: degraded face -> restored face (the fake class of IFQA training)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))


class RestorationUNet(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, 3, H, W) in [0, 1]; predicts a residual. H, W multiples of 2**depth.

    Args:
        width: channels at full resolution, doubled at each of ``depth`` downsamplings.
    """

    def __init__(self, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        chans = [width * 2 ** i for i in range(depth + 1)]
        self.inc = _conv_block(3, chans[0])
        self.downs = nn.ModuleList([_conv_block(chans[i], chans[i + 1]) for i in range(depth)])
        self.ups = nn.ModuleList([_conv_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth))])
        self.out = nn.Conv2d(chans[0], 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x * 2 - 1)]
        for down in self.downs:
            skips.append(down(F.avg_pool2d(skips[-1], 2)))
        h = skips.pop()
        for up in self.ups:
            skip = skips.pop()
            h = up(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        return (x + self.out(h)).clamp(0, 1)
