"""Readouts: from a hidden sequence Y (B, T, C, H, W) to per-pixel features (B, F, H, W).

Each readout is a module that takes tensors, never the model. `features(T, C)` gives F.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import Registry

READOUTS: Registry[type["Readout"]] = Registry("readout")


def num_freqs(T: int) -> int:
    """K = T // 2 + 1, the number of rfft bins (and of the linear readout's outputs)."""
    return T // 2 + 1


class Readout(nn.Module):
    def __init__(self, T: int, C: int):
        super().__init__()
        self.T, self.C = T, C

    @staticmethod
    def features(T: int, C: int) -> int:
        raise NotImplementedError

    def time_features(self, Y: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) → (B, K', C, H, W): what the readout sees per pixel and channel."""
        raise NotImplementedError

    def forward(self, Y: torch.Tensor) -> torch.Tensor:
        B, T, C, H, W = Y.shape
        f = self.time_features(Y)  # (B, K', C, H, W)
        return f.reshape(B, -1, H, W)  # (B, K'·C, H, W)


@READOUTS.register("last")
class LastReadout(Readout):
    """y_T: the final hidden state."""

    @staticmethod
    def features(T, C):
        return C

    def time_features(self, Y):
        return Y[:, -1:]


@READOUTS.register("mean")
class MeanReadout(Readout):
    @staticmethod
    def features(T, C):
        return C

    def time_features(self, Y):
        return Y.mean(dim=1, keepdim=True)


@READOUTS.register("max")
class MaxReadout(Readout):
    @staticmethod
    def features(T, C):
        return C

    def time_features(self, Y):
        return Y.amax(dim=1, keepdim=True)


@READOUTS.register("fft")
class FFTReadout(Readout):
    """|rfft(Y)| along time: K = T // 2 + 1 magnitudes per channel."""

    @staticmethod
    def features(T, C):
        return num_freqs(T) * C

    def time_features(self, Y):
        return torch.fft.rfft(Y, dim=1).abs()


@READOUTS.register("linear")
class LinearReadout(Readout):
    """A learned Linear(T → K, bias=False) applied to every pixel's and channel's time series."""

    def __init__(self, T: int, C: int):
        super().__init__(T, C)
        self.proj = nn.Linear(T, num_freqs(T), bias=False)

    @staticmethod
    def features(T, C):
        return num_freqs(T) * C

    @torch.no_grad()
    def fourier_init_(self) -> "LinearReadout":
        """Rows as the lowest real Fourier basis over the T steps, each of unit norm: row 0 the mean,
        then cos and sin of 1, 2, … cycles per window, alternating (K = T//2 + 1 rows cover frequencies
        0 … T//4). A choice the paper leaves open (it trains the map from PyTorch's default uniform
        init): the head sees each pixel's low-frequency content from the first step."""
        T, K = self.proj.in_features, self.proj.out_features
        t = torch.arange(T, dtype=torch.float64)
        rows = [torch.ones(T, dtype=torch.float64)]
        k = 1
        while len(rows) < K:
            rows.append(torch.cos(2 * torch.pi * k * t / T))
            if len(rows) < K:
                rows.append(torch.sin(2 * torch.pi * k * t / T))
            k += 1
        w = torch.stack(rows)
        self.proj.weight.copy_(w / w.norm(dim=1, keepdim=True))
        return self

    def time_features(self, Y):
        # out[b, k, c, h, w] = Σ_t proj.weight[k, t] · Y[b, t, c, h, w]
        return torch.einsum("btchw,kt->bkchw", Y, self.proj.weight)


def create_readout(name: str, T: int, C: int) -> Readout:
    return READOUTS.get(name)(T, C)
