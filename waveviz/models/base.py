"""What every segmentation model shares: logits from `forward`, everything from `run`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
from torch import nn

from .. import engine as fast
from ..readouts import READOUTS, LinearReadout, create_readout, num_freqs
from ..sampling import gather_points

from ..validate import Checked, Range
from .layers import PixelMLP


# what every model config allows for the fields they share (`waveviz.validate`)
READOUT_INITS = ("uniform", "fourier")  # the linear readout's initialisation (LinearReadout.fourier_init_)
SHARED_RANGES = {"readout_init": READOUT_INITS, "in_channels": Range(1, 16), "num_classes": Range(1, 256), "image_size": Range(1, 4096),
                 "C": Range(1, 1024), "T": Range(1, 10_000), "width": Range(1, 4096), "head": Range(1, 65_536)}


@dataclass
class SequenceConfig(Checked):
    """The fields both recurrent families (NWM, ConvLSTM) share: the encoders' in/out, the recurrence's
    size, the readout over its T steps and the per-pixel head. A family's config adds its own fields
    (and its own T default)."""

    in_channels: int = 3  # 1 grey, 3 RGB
    num_classes: int = 6  # N, class 0 is background
    image_size: int = 64  # the size it is trained on; the model itself is fully convolutional
    C: int = 2  # hidden (oscillator) channels
    T: int = 100  # time steps
    width: int = 16  # middle channels of the encoders
    readout: str = "linear"  # last | mean | max | fft | linear
    head: tuple[int, ...] = (256, 256, 256)  # hidden widths of the per-pixel MLP
    paper_unused_linear: bool = False  # keep the authors' unused Linear(T → K) for non-linear readouts
    readout_init: str = "uniform"  # linear readout: uniform (PyTorch's default, as the paper) | fourier

    RANGES: ClassVar[dict] = {**SHARED_RANGES, "readout": READOUTS}

    @property
    def K(self) -> int:
        """Frequencies of a T-step series (rfft bins): the linear and fft readouts' K."""
        return num_freqs(self.T)


@dataclass
class ModelOutput:
    """logits (B, N, H, W); hidden (B, T, C, H, W) for recurrent models; extras such as
    the NWM's omega and alpha maps, each (B, C, H, W)."""

    logits: torch.Tensor
    hidden: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Segmenter(nn.Module):
    """Base class: `forward(x)` → logits (B, N, H, W) for images x (B, in_channels, H, W) in [0, 1]."""

    family: str = ""

    def __init__(self, config):
        config.validate()
        super().__init__()
        self.config = config

    def run(self, x: torch.Tensor) -> ModelOutput:
        return ModelOutput(logits=self(x))

    def config_dict(self) -> dict:
        return asdict(self.config)


class SequenceSegmenter(Segmenter):
    """Encoders → local recurrence → readout over time → per-pixel MLP head (timm-style split)."""

    readout: nn.Module
    head: nn.Module
    # families with a fast engine mix in `engine.EngineSelectable`, whose properties come first
    uses_fast_engine: bool = False
    bf16_head: bool = False

    def add_readout_and_head(self, c) -> None:
        """The readout over c.T steps of c.C channels and the per-pixel MLP head on its features (both
        families' configs share these fields; registered last, so parameter order is unchanged)."""
        self.readout = create_readout(c.readout, c.T, c.C)
        if c.readout_init == "fourier" and isinstance(self.readout, LinearReadout):
            self.readout.fourier_init_()
        if c.paper_unused_linear and not isinstance(self.readout, LinearReadout):
            self.unused_proj = nn.Linear(c.T, c.K, bias=False)  # parameter-count parity only
        self.head = PixelMLP(READOUTS.get(c.readout).features(c.T, c.C), c.num_classes, c.head)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B, in, H, W) → hidden sequence Y (B, T, C, H, W) and extra maps."""
        raise NotImplementedError

    def forward_head(self, Y: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) → logits (B, N, H, W)."""
        if self.uses_fast_engine:
            return fast.fast_head(self.readout_features(Y), self.head, bf16=self.bf16_head)
        return self.head(self.readout(Y))

    def readout_features(self, Y: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) → the readout's per-pixel features (B, K', C, H, W); under the fast engine
        the linear readout is one batched matrix product (`engine.linear_time_features`)."""
        if self.uses_fast_engine and isinstance(self.readout, LinearReadout):
            return fast.linear_time_features(Y, self.readout.proj.weight)
        return self.readout.time_features(Y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Y, _ = self.forward_features(x)
        return self.forward_head(Y)

    def time_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, H, W) → the readout's per-pixel features (B, K', C, H, W), before the head."""
        Y, _ = self.forward_features(x)
        return self.readout_features(Y)

    def forward_points(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The logits at flat pixel indices idx (B, P) only → (B, N, P, 1); the head runs on those
        points alone (point-sampled training, `waveviz.sampling`). Equals gathering `forward(x)`.
        Every readout acts on each pixel's time series alone, so Y is gathered first and the readout
        (an FFT over T = 500 on Polygons) runs on the points' series only."""
        Y, _ = self.forward_features(x)
        f = self.readout_features(gather_points(Y, idx))  # Y at the points (B, T, C, P, 1) → (B, K', C, P, 1)
        if self.uses_fast_engine:
            return fast.fast_head(f, self.head, bf16=self.bf16_head)
        B, K, C, P, _ = f.shape
        return self.head(f.reshape(B, K * C, P, 1))

    def run(self, x: torch.Tensor) -> ModelOutput:
        Y, extras = self.forward_features(x)
        return ModelOutput(logits=self.forward_head(Y), hidden=Y, extras=extras)
