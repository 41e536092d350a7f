"""Blocks shared by the model families: conv encoders and the per-pixel MLP head."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "none": nn.Identity}


def conv_stack(
    in_ch: int,
    out_ch: int,
    *,
    layers: int,
    hidden: int = 16,
    final: str = "none",
    padding_mode: str = "zeros",
) -> nn.Sequential:
    """`layers` 3×3 convolutions in_ch → hidden → … → out_ch, ReLU between, `final` after the last.

    (B, in_ch, H, W) → (B, out_ch, H, W); the paper's encoders f_y, f_ω, f_α, f_u, f_h, f_c.
    """
    assert layers >= 1, "a conv stack needs at least one layer"
    chans = [in_ch] + [hidden] * (layers - 1) + [out_ch]
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
        mods.append(nn.Conv2d(a, b, 3, padding=1, padding_mode=padding_mode))
        mods.append(nn.ReLU() if i < layers - 1 else ACTIVATIONS[final]())
    return nn.Sequential(*mods)


class PixelMLP(nn.Module):
    """The same MLP applied to every pixel: (B, F, H, W) → (B, N, H, W).

    `hidden=(256, 256, 256)` gives the paper's in → 256 → 256 → 256 → N head; ReLU between layers.
    Implemented as Linear layers on a channels-last view (one matmul per layer).
    """

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int]):
        super().__init__()
        dims = [in_features, *hidden, out_features]
        mods: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            mods.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                mods.append(nn.ReLU())
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, F)
        x = self.net(x)  # (B, H, W, N)
        return x.permute(0, 3, 1, 2)  # (B, N, H, W)


def laplacian_kernel_(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Initialise a (C, C, 3, 3) kernel to scale × the 5-point Laplacian on each channel, 0 across channels."""
    C = weight.shape[0]
    assert weight.shape == (C, C, 3, 3), f"expected a (C, C, 3, 3) kernel, got {tuple(weight.shape)}"
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    with torch.no_grad():
        weight.zero_()
        for c in range(C):
            weight[c, c] = scale * lap
    return weight
