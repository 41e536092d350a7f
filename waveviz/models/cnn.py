"""CNN-L baseline: a purely local feed-forward model with receptive field 2L + 1 (SPEC §5).

L 3×3 convolutions (16 channels, ReLU between; the last gives C = 2 channels), a 1×1 convolution
to 98 = 2·49 channels, then the per-pixel MLP head.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..validate import Checked, Range
from .base import SHARED_RANGES, Segmenter
from .layers import PixelMLP, conv_stack


@dataclass
class CNNConfig(Checked):
    in_channels: int = 3
    num_classes: int = 6
    image_size: int = 64
    L: int = 8  # conv layers
    C: int = 2  # channels out of the last conv layer
    width: int = 16
    proj: int = 98  # channels of the 1×1 projection
    head: tuple[int, ...] = (256, 256, 256)

    RANGES: ClassVar[dict] = {**SHARED_RANGES, "L": Range(1, 1024), "proj": Range(1, 65_536)}

    @property
    def receptive_field(self) -> int:
        return 2 * self.L + 1


class CNN(Segmenter):
    family = "cnn"

    def __init__(self, config: CNNConfig):
        super().__init__(config)
        c = config
        self.features = conv_stack(c.in_channels, c.C, layers=c.L, hidden=c.width)
        self.proj = nn.Conv2d(c.C, c.proj, 1)
        self.head = PixelMLP(c.proj, c.num_classes, c.head)

    def forward(self, x):
        return self.head(self.proj(self.features(x)))
