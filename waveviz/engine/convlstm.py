"""The ConvLSTM's T steps on CPU in the C kernel (`convlstm_sequence`), with a hand-written adjoint.

`lstm_fwd` runs all T steps of an image in one call (circular 3×3 gate convolution, gates, cell,
the C → M → C input MLP), keeping u_t, h_t, c_t and the gate activations for the adjoint, which
`lstm_bwd` walks back in two passes a step: pointwise (MLP, cell, gates → s), then the gate
convolution's ∂W and its transpose (csrc/convlstm.h). Images are split over threads.
"""
from __future__ import annotations

import math

import torch

from .clib import chunks, cpu_kernel, over_batch
from .head import _mlp_layers


class _ConvLSTMSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u0, h0, c0, wg, bg, w1, b1, w2, b2, T, keep):
        lib = cpu_kernel()
        suf = {torch.float32: "f32", torch.float64: "f64"}[u0.dtype]
        B, C, H, W = u0.shape
        M = w1.shape[0]
        ins = [t.detach().contiguous() for t in (u0, h0, c0, wg, bg, w1, b1, w2, b2)]
        U, Hs, Cs = (u0.new_empty(B, T, C, H, W) for _ in range(3))
        A = u0.new_empty(B, T, 4 * C, H, W) if keep else None
        ptrs = [t.data_ptr() for t in ins] + [U.data_ptr(), Hs.data_ptr(), Cs.data_ptr(), A.data_ptr() if keep else None]
        _lstm_call(lib, "fwd", suf, B, [T, C, M, H, W], ptrs)
        if keep:
            ctx.save_for_backward(*ins, U, Hs, Cs, A)
        ctx.dims = T, C, M, H, W, suf
        return U

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gU):
        u0, h0, c0, wg, bg, w1, b1, w2, b2, U, Hs, Cs, A = ctx.saved_tensors
        T, C, M, H, W, suf = ctx.dims
        B = u0.shape[0]
        gU = gU.to(u0.dtype).contiguous()
        du0, dh0, dc0 = (torch.empty_like(u0) for _ in range(3))
        shapes = [wg.shape, bg.shape, w1.shape, b1.shape, w2.shape, b2.shape]
        npar = sum(math.prod(sh) for sh in shapes)
        dp = torch.zeros(chunks(B), npar, dtype=torch.float64)
        ptrs = [t.data_ptr() for t in (u0, h0, c0, wg, w1, b1, w2, U, Hs, Cs, A, gU, du0, dh0, dc0)]
        _lstm_call(cpu_kernel(), "bwd", suf, B, [T, C, M, H, W], ptrs, dp)
        grads = torch.split(dp.sum(0), [math.prod(sh) for sh in shapes])
        dparams = [g.view(sh).to(wg.dtype) for g, sh in zip(grads, shapes)]
        return du0, dh0, dc0, *dparams, None, None


def _lstm_call(lib, kind: str, suf: str, B: int, dims: list[int], ptrs: list, dp: torch.Tensor | None = None) -> None:
    """Run lstm_fwd / lstm_bwd (`kind`) over the batch (`clib.over_batch`); the adjoint's parameter
    gradients go to row i of dp (`chunks(B)` rows) for the i-th range of images."""
    over_batch(lib, f"lstm_{kind}_{suf}", B, (*dims, *ptrs), grads=dp)


def convlstm_usable(u0: torch.Tensor, gates: torch.nn.Module, mlp: torch.nn.Module) -> bool:
    """Whether `convlstm_sequence` computes this ConvLSTM: float32/float64 CPU tensors outside
    autocast (an --amp model's recurrence runs in bf16, as it trained), the C kernel at hand, a 3×3
    circular gate convolution with bias and a Linear, ReLU, Linear input MLP."""
    lin = _mlp_layers(mlp)
    params = [*gates.parameters(), *mlp.parameters()]
    return (u0.device.type == "cpu" and u0.dtype in (torch.float32, torch.float64)
            and all(p.dtype == u0.dtype and p.device.type == "cpu" for p in params)
            and not torch.is_autocast_enabled("cpu") and lin is not None and len(lin) == 2
            and isinstance(gates, torch.nn.Conv2d) and gates.kernel_size == (3, 3) and gates.bias is not None
            and gates.padding_mode == "circular" and gates.padding == (1, 1) and gates.stride == (1, 1)
            and gates.dilation == (1, 1) and gates.groups == 1 and cpu_kernel() is not None)


def convlstm_sequence(u0: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, gates: torch.nn.Conv2d,
                      mlp: torch.nn.Module, T: int) -> torch.Tensor:
    """The ConvLSTM's T steps (`models.lstm`, SPEC §3) in the C kernel → u_1 … u_T (B, T, C, H, W).

    u0, h0, c0: (B, C, H, W) encoder outputs; `gates`: Conv2d(2C → 4C, 3×3, circular), the gates
    in the order i, f, g, o; `mlp`: PixelMLP C → M → C. Check `convlstm_usable` first."""
    l1, l2 = _mlp_layers(mlp)
    params = [gates.weight, gates.bias, l1.weight, l1.bias, l2.weight, l2.bias]
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in (u0, h0, c0, *params))
    return _ConvLSTMSequence.apply(u0, h0, c0, *params, T, keep)
