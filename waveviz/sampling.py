"""Point-sampled training: the per-pixel head and the cross-entropy on a random subset of each
image's pixels (as Mask2Former trains its masks on sampled points). The recurrence still runs on
every pixel; only the head's cost — most of an NWM's FLOPs — shrinks with the share of points.

The estimate of the full loss is unbiased: uniform points without replacement weigh 1; with
`fg_weight` > 1, foreground pixels are drawn `fg_weight` times as often (with replacement) and
each drawn point weighs 1 / (H·W·q), q its probability, so E[loss] is the full mean cross-entropy.
With `weights="equal"` every drawn point weighs 1 instead: the loss then weighs foreground
`fg_weight` times more than the full loss does (an option, measured in docs/training.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# How a drawn point weighs, from (the probability q (B, P) it was drawn with, H·W) → weights (B, P).
POINT_WEIGHTS = {
    "unbiased": lambda q, n: 1.0 / (n * q),  # importance weights: E[loss] = the full loss
    "equal": lambda q, n: torch.ones_like(q),  # every drawn point alike: foreground weighs fg_weight× more
}


def sample_points(y: torch.Tensor, n_points: int, *, fg_weight: float = 1.0, weights: str = "unbiased",
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Points of each image to train on: y (B, H, W) labels → idx (B, P) flat pixel indices h·W + w
    and weights (B, P) for `sampled_cross_entropy` (`POINT_WEIGHTS[weights]`; "unbiased" makes it an
    unbiased estimate of the full loss)."""
    B, H, W = y.shape
    n = H * W
    assert 1 <= n_points <= n, f"n_points must lie in 1..{n}, got {n_points}"
    weigh = POINT_WEIGHTS[weights]
    if fg_weight == 1.0:  # uniform, without replacement: every point weighs 1 under both rules
        keys = torch.rand(B, n, generator=generator, device=y.device)
        idx = keys.topk(n_points, dim=1).indices  # (B, P)
        return idx, torch.ones(B, n_points, device=y.device)
    q = 1.0 + (fg_weight - 1.0) * (y.reshape(B, n) > 0).float()  # (B, H·W)
    q = q / q.sum(dim=1, keepdim=True)
    idx = torch.multinomial(q, n_points, replacement=True, generator=generator)  # (B, P)
    return idx, weigh(q.gather(1, idx), n)


def gather_points(f: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """f (B, ..., H, W) → (B, ..., P, 1): the values at flat pixel indices idx (B, P)."""
    B, P = idx.shape
    flat = f.flatten(-2)  # (B, ..., H·W)
    index = idx.view(B, *([1] * (flat.dim() - 2)), P).expand(*flat.shape[:-1], P)
    return flat.gather(-1, index).unsqueeze(-1)


def sampled_cross_entropy(logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """logits (B, N, P, 1) at the points idx (B, P) of labels y (B, H, W) → the weighted mean
    cross-entropy, an unbiased estimate of `F.cross_entropy` over all pixels."""
    target = y.flatten(1).gather(1, idx)  # (B, P)
    ce = F.cross_entropy(logits[..., 0].float(), target, reduction="none")  # (B, P)
    return (ce * weight).mean()


class PointSampled(nn.Module):
    """What trains under point sampling: `forward(x, idx)` → the model's logits at idx (B, N, P, 1)
    (`forward_points`, or the full logits gathered for models without it); `forward(x)` → all of
    them. A module of its own so that DistributedDataParallel sees the call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        if idx is None:
            return self.model(x)
        if hasattr(self.model, "forward_points"):
            return self.model.forward_points(x, idx)
        return gather_points(self.model(x), idx)
