"""Neural Wave Machine: a convolutional field of locally coupled, input-tuned oscillators (SPEC §2).

    z_t = z_{t-1} + Δt · ( tanh(W_rec * y_{t-1}) − ω ⊙ y_{t-1} − α ⊙ z_{t-1} )
    y_t = y_{t-1} + Δt · z_t

y_0 = f_y(x), ω = f_ω(x), α = f_α(x), z_0 = 0; W_rec is a circular 3×3 convolution initialised
with the Laplacian stencil, so the untrained network already propagates waves.

Two engines compute the same function (`model.engine`, not part of the config or the checkpoint):
"reference" runs `nwm_recurrence_ref` and the head's modules under plain autograd; "auto" (the
default) or "fast" runs `waveviz.engine`: a fused recurrence with a hand-written adjoint (a C
kernel on CPU, a Triton kernel on CUDA, torch ops elsewhere), the linear readout fused into it,
and a fused head; "fast-bf16" is "fast" with the head's matrix products in bfloat16 (an option that
keeps accuracy, not the same function to float32 rounding). `WAVEVIZ_ENGINE` sets the default for new models.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import engine as fast
from ..readouts import LinearReadout
from ..validate import Range
from .base import SequenceConfig, SequenceSegmenter
from .layers import conv_stack, laplacian_kernel_


@dataclass
class NWMConfig(SequenceConfig):
    T: int = 100  # time steps (500 for Polygons)
    dt: float = 0.1  # Δt of the IMEX step
    omega_identity_init: bool = False  # the paper's text: f_ω starts as identity, f_α at zero
    gate_bias_init: float | None = None  # the last biases of f_ω and f_α start at this (ReLUs alive
    #   everywhere); None: PyTorch's default init, as the authors' code
    coupling_init: float = 1.0  # W_rec starts as this × the Laplacian stencil: waves start at √(it) pixels
    #   per unit time (1: the paper); how far a pixel hears in T steps at the start of training
    gate_act: str = "relu"  # the last activation of f_ω and f_α, both ≥ 0: relu (the paper; a channel
    #   that falls below 0 everywhere is dead for good) | softplus (never dead: its gradient never vanishes)

    RANGES: ClassVar[dict] = {**SequenceConfig.RANGES, "dt": Range(0, 1, lo_open=True),
                              "gate_bias_init": Range(0, 100, lo_open=True),
                              "coupling_init": Range(0, 50, lo_open=True), "gate_act": ("relu", "softplus")}


def nwm_recurrence_ref(
    y0: torch.Tensor, omega: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor, dt: float, T: int
) -> torch.Tensor:
    """The plain IMEX loop, written from the equations; the oracle for every fast path.

    y0, omega, alpha: (B, C, H, W); weight: (C, C, 3, 3) → Y (B, T, C, H, W) = (y_1 … y_T).
    """
    y, z = y0, torch.zeros_like(y0)
    ys = []
    for _ in range(T):
        coupling = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="circular"), weight)
        z = z + dt * (torch.tanh(coupling) - omega * y - alpha * z)
        y = y + dt * z
        ys.append(y)
    return torch.stack(ys, dim=1)


class NWM(fast.EngineSelectable, SequenceSegmenter):
    family = "nwm"

    def __init__(self, config: NWMConfig):
        super().__init__(config)  # (EngineSelectable: model.engine = default_engine())
        c = config
        self.f_y = conv_stack(c.in_channels, c.C, layers=4, hidden=c.width, final="tanh")
        self.f_omega = conv_stack(c.in_channels, c.C, layers=3, hidden=c.width, final=c.gate_act)
        self.f_alpha = conv_stack(c.in_channels, c.C, layers=3, hidden=c.width, final=c.gate_act)
        self.rec = nn.Conv2d(c.C, c.C, 3, padding=1, padding_mode="circular", bias=False)
        laplacian_kernel_(self.rec.weight, scale=c.coupling_init)
        self.add_readout_and_head(c)
        if c.omega_identity_init:
            self._identity_init()
        if c.gate_bias_init is not None:
            with torch.no_grad():
                for enc in (self.f_omega, self.f_alpha):
                    [m for m in enc if isinstance(m, nn.Conv2d)][-1].bias.fill_(c.gate_bias_init)

    def coupling_parameters(self) -> list[nn.Parameter]:
        """The recurrent coupling W_rec (`TrainConfig.coupling_lr`)."""
        return [self.rec.weight]

    @torch.no_grad()
    def _identity_init(self) -> None:
        """f_ω as identity (Dirac kernels, zero bias) and f_α at zero, as the paper's text says."""
        for m in self.f_omega:
            if isinstance(m, nn.Conv2d):
                nn.init.dirac_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.f_alpha:
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def fuses_readout(self) -> bool:
        """Whether the fast recurrence computes the linear readout itself (Y never materialised)."""
        return self.uses_fast_engine and isinstance(self.readout, LinearReadout)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, in, H, W) → y_0, ω, α, each (B, C, H, W)."""
        x = self.engine_input(x)
        maps = self.f_y(x), self.f_omega(x), self.f_alpha(x)
        return tuple(m.contiguous() for m in maps) if self.uses_fast_engine else maps

    def forward_features(self, x):
        y0, omega, alpha = self.encode(x)
        recurrence = fast.nwm_recurrence if self.uses_fast_engine else nwm_recurrence_ref
        Y = recurrence(y0, omega, alpha, self.rec.weight, self.config.dt, self.config.T)
        return Y, {"y0": y0, "omega": omega, "alpha": alpha}

    def time_features(self, x):
        """(B, in, H, W) → (B, K', C, H, W); the fast linear readout fused into the recurrence."""
        if not self.fuses_readout:
            return super().time_features(x)
        y0, omega, alpha = self.encode(x)
        c = self.config
        return fast.nwm_linear_features(y0, omega, alpha, self.rec.weight, c.dt, c.T, self.readout.proj.weight)

    def forward_points(self, x, idx):
        """(B, in, H, W), idx (B, P) → the logits at those pixels (B, N, P, 1) (`Segmenter.forward_points`);
        the fast linear readout computes its features at the points alone (`nwm_point_features`)."""
        if not self.fuses_readout:
            return super().forward_points(x, idx)
        y0, omega, alpha = self.encode(x)
        c = self.config
        f = fast.nwm_point_features(y0, omega, alpha, self.rec.weight, c.dt, c.T, self.readout.proj.weight, idx)
        return fast.fast_head(f, self.head, bf16=self.bf16_head)

    def forward(self, x):
        """(B, in, H, W) → logits (B, N, H, W). The fast engine never materialises Y here when the
        readout is linear: the readout is accumulated inside the recurrence."""
        if not self.fuses_readout:
            return super().forward(x)
        return fast.fast_head(self.time_features(x), self.head, bf16=self.bf16_head)  # features (B, K, C, H, W)
