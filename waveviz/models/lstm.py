"""Convolutional LSTM whose input at each step is an MLP of its own previous output (SPEC §3).

    [i, f, g, o] = W * concat(u_{t-1}, h_{t-1}) + b        (3×3, circular padding)
    c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)
    h_t = σ(o) ⊙ tanh(c_t)
    u_t = MLP(h_t)                                          (per pixel: C → 2C → C)

`model.engine` (auto | fast | fast-bf16 | reference, as for the NWM): the fast engine computes the same
function with channels-last encoders, `waveviz.engine`'s readout and fused head, and on CPU the
20-step loop in the C kernel (`engine.convlstm_sequence`: one call for all steps, a hand-written
adjoint); under autocast (an --amp model) the loop stays as written, in bf16 as it trained.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import engine as fast
from .base import SequenceConfig, SequenceSegmenter
from .layers import PixelMLP, conv_stack


@dataclass
class ConvLSTMConfig(SequenceConfig):
    T: int = 20  # time steps


def convlstm_sequence_ref(u: torch.Tensor, h: torch.Tensor, cell: torch.Tensor, gates: nn.Conv2d, mlp: nn.Module,
                          T: int) -> torch.Tensor:
    """The T steps as the equations above read (the oracle of `engine.convlstm_sequence`):
    u, h, cell (B, C, H, W) → u_1 … u_T (B, T, C, H, W)."""
    us = []
    for _ in range(T):
        i, f, g, o = gates(torch.cat([u, h], dim=1)).chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(cell)
        u = mlp(h)
        us.append(u)
    return torch.stack(us, dim=1)


class ConvLSTM(fast.EngineSelectable, SequenceSegmenter):
    family = "lstm"

    def __init__(self, config: ConvLSTMConfig):
        super().__init__(config)  # (EngineSelectable: model.engine = default_engine())
        c = config
        self.f_u = conv_stack(c.in_channels, c.C, layers=4, hidden=c.width, final="tanh")
        self.f_h = conv_stack(c.in_channels, c.C, layers=3, hidden=c.width)
        self.f_c = conv_stack(c.in_channels, c.C, layers=3, hidden=c.width)
        self.gates = nn.Conv2d(2 * c.C, 4 * c.C, 3, padding=1, padding_mode="circular")
        self.input_mlp = PixelMLP(c.C, c.C, (2 * c.C,))
        self.add_readout_and_head(c)

    def coupling_parameters(self) -> list[nn.Parameter]:
        """The recurrent coupling: the gate convolution's weight (`TrainConfig.coupling_lr`)."""
        return [self.gates.weight]

    def forward_features(self, x):
        x = self.engine_input(x)
        u, h, cell = (m(x).contiguous() for m in (self.f_u, self.f_h, self.f_c))  # each (B, C, H, W)
        in_c = self.uses_fast_engine and fast.convlstm_usable(u, self.gates, self.input_mlp)
        steps = fast.convlstm_sequence if in_c else convlstm_sequence_ref
        return steps(u, h, cell, self.gates, self.input_mlp, self.config.T), {}  # (B, T, C, H, W)
