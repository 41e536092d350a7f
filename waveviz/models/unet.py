"""U-Net(c): the non-local upper bound (SPEC §5). Channels c → 2c → 4c → 8c → 16c and back."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..validate import Checked, Range
from .base import SHARED_RANGES, Segmenter


def double_conv(a: int, b: int) -> nn.Sequential:
    """[3×3 conv (no bias), BatchNorm, ReLU] × 2: (B, a, H, W) → (B, b, H, W)."""
    return nn.Sequential(
        nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True),
        nn.Conv2d(b, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True),
    )


class Up(nn.Module):
    """2×2 stride-2 transposed conv halving channels, concatenate the skip, DoubleConv."""

    def __init__(self, a: int, b: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(a, a // 2, 2, stride=2)
        self.conv = double_conv(a, b)

    def forward(self, x, skip):
        x = self.up(x)
        dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        x = F.pad(x, (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2))  # odd sizes
        return self.conv(torch.cat([skip, x], dim=1))


@dataclass
class UNetConfig(Checked):
    in_channels: int = 1
    num_classes: int = 11
    image_size: int = 128
    c: int = 3  # stem channels; the bottleneck has 16c

    # four 2×2 poolings need images of at least 16 pixels a side
    RANGES: ClassVar[dict] = {**SHARED_RANGES, "image_size": Range(16, 4096), "c": Range(1, 256)}


class UNet(Segmenter):
    family = "unet"

    def __init__(self, config: UNetConfig):
        super().__init__(config)
        c = config.c
        widths = [c, 2 * c, 4 * c, 8 * c, 16 * c]
        self.stem = double_conv(config.in_channels, c)
        self.downs = nn.ModuleList(double_conv(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.ups = nn.ModuleList(Up(a, b) for a, b in zip(widths[:0:-1], widths[-2::-1]))
        self.out = nn.Conv2d(c, config.num_classes, 1)

    def forward(self, x):
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.out(x)
