"""The per-pixel MLP head on one contiguous (pixels, features) matrix: oneDNN's fused linear + ReLU
forward, a hand-written backward that writes each layer's input gradient over the activation it no
longer needs, and on CPU the narrow last layer's backward (one output per class) in one C pass
(`mlp_narrow_bwd_f32`) instead of three BLAS calls. `fast_head` is what the models call.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .. import settings
from .bf16 import Bf16Products, bf16_emulated
from .clib import chunks, cpu_kernel, over_batch

_onednn_linear_ok: dict[torch.dtype, bool] = {}


def _onednn_linear_usable(dtype: torch.dtype = torch.float32) -> bool:
    """oneDNN's fused linear (+ bias + ReLU, one pass over the output) for float32 / bfloat16 CPU
    tensors, when this torch and CPU have it and it agrees with addmm to that dtype's rounding
    (checked once per dtype: a CPU without AVX-512 may refuse bf16 primitives)."""
    if dtype not in _onednn_linear_ok:
        tol = 1e-5 if dtype == torch.float32 else 5e-2
        try:
            g = torch.Generator().manual_seed(0)
            x, w, b = (torch.randn(s, generator=g).to(dtype) for s in ((64, 48), (32, 48), (32,)))
            got = torch.ops.mkldnn._linear_pointwise(x, w, b, "relu", [], "")
            want = torch.addmm(b, x, w.t()).relu_()
            _onednn_linear_ok[dtype] = bool(torch.allclose(got.float(), want.float(), rtol=tol, atol=tol))
        except (AttributeError, RuntimeError, TypeError):
            _onednn_linear_ok[dtype] = False
    return _onednn_linear_ok[dtype]


def _linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, relu: bool) -> torch.Tensor:
    if h.device.type == "cpu" and h.dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available() \
            and _onednn_linear_usable(h.dtype):
        return torch.ops.mkldnn._linear_pointwise(h, w.contiguous(), b, "relu" if relu else "none", [], "")
    out = torch.addmm(b, h, w.t())
    return out.relu_() if relu else out


class _PixelMLP(torch.autograd.Function):
    """x (P, F) → (P, N) through Linear, ReLU, …, Linear; params = (w1, b1, w2, b2, …); the products
    in `dtype` (x's own, or bfloat16 with float32 accumulation: what autocast does to Linear layers),
    x, the output and every gradient in their own dtypes.

    Keeps the ReLU outputs (the next layer's inputs and their own masks) and nothing else; the
    backward writes each layer's input gradient over the activation it no longer needs, so the
    whole backward allocates one (P, width) buffer instead of one or two per layer. (A second
    backward through the same graph therefore fails loudly, as autograd sees the saved tensors changed.)
    """

    @staticmethod
    def forward(ctx, x, dtype, *params):
        ws, bs = [w.to(dtype) for w in params[0::2]], [b.to(dtype) for b in params[1::2]]
        h = x.to(dtype)
        acts = [h]
        ctx.products = _products(dtype, x.device.type)
        with ctx.products():
            for i, (w, b) in enumerate(zip(ws, bs)):
                h = _linear(h, w, b, relu=i < len(ws) - 1)
                if i < len(ws) - 1:
                    acts.append(h)
        ctx.save_for_backward(*acts, *ws)
        ctx.dtypes = x.dtype, params[0].dtype
        return h.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        saved = ctx.saved_tensors
        L = len(saved) // 2
        acts, ws = saved[:L], saved[L:]
        x_dtype, p_dtype = ctx.dtypes
        g = g.to(acts[0].dtype).contiguous()
        grads: list[torch.Tensor | None] = [None] * (1 + 2 * L)
        spare: dict[tuple, torch.Tensor] = {}
        with ctx.products():
            for i in reversed(range(L)):
                inp = acts[i]
                grads[2 + 2 * i] = g.sum(0).to(p_dtype)  # ∂b_i
                if i > 0 and (dw := narrow_layer_backward(g, ws[i], inp)) is not None:
                    grads[1 + 2 * i] = dw.to(p_dtype)  # and inp now holds g_{i-1}, as below
                    g = inp
                    continue
                grads[1 + 2 * i] = torch.mm(g.t(), inp).to(p_dtype)  # ∂W_i = gᵀ · input
                if i > 0:
                    buf = spare.pop(inp.shape, None)
                    gp = _input_grad(g, ws[i], buf)
                    # ReLU backward, written over the activation: g_{i-1} = gp ⊙ (input > 0)
                    torch.ops.aten.threshold_backward.grad_input(gp, inp, 0, grad_input=inp)
                    if not _onednn_mm(g):  # BLAS: the next layer's product goes there (oneDNN allocates its own)
                        spare[gp.shape] = gp
                    del gp
                    g = inp
                elif ctx.needs_input_grad[0]:
                    grads[0] = _input_grad(g, ws[0]).to(x_dtype)
        return (grads[0], None, *grads[1:])


def _mm_t(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """a (M, K) · bᵀ, b (N, K) → (M, N): oneDNN's linear on CPU where usable, else BLAS (into `out`
    when given). For the backward's products, where oneDNN beat BLAS on the Zen 3 (2 threads):
    a layer's input gradient at P = 65536, 45 against 67 ms (K = 102) and 128 against 146 ms
    (K = 256); the readout's ∂L/∂y_t for 34 steps of 131072 values, 8.6 against 16.5 ms."""
    if _onednn_mm(a):
        return torch.ops.mkldnn._linear_pointwise(a, b.contiguous(), None, "none", [], "")
    return torch.mm(a, b.t(), out=out) if out is not None else torch.mm(a, b.t())


def _onednn_mm(a: torch.Tensor) -> bool:
    """Whether `_mm_t` takes oneDNN for `a` (and so allocates its result instead of filling `out`)."""
    return (settings.get().onednn_bwd and a.device.type == "cpu" and a.dtype in (torch.float32, torch.bfloat16)
            and torch.backends.mkldnn.is_available() and _onednn_linear_usable(a.dtype))


def _input_grad(g: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """g (P, N) · w (N, K) → (P, K), a layer's input gradient (`_mm_t`)."""
    return _mm_t(g, w.t(), out)


NARROW_MAX = 64  # outputs of a layer whose backward `narrow_layer_backward` takes


def narrow_layer_backward(g: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor | None:
    """The backward of a layer with few outputs (the head's last: one per class) that follows a
    ReLU, in the C kernel's one pass over h (`mlp_narrow_bwd_f32`; BLAS takes ≈ 100 ms for the three
    passes at B = 16 on 2 cores): returns ∂W = gᵀ·h (float64) and overwrites h with (g·W) ⊙ (h > 0).
    g (P, N), w (N, K), h (P, K), float32 on CPU; None (nothing written) where that does not apply."""
    P, N = g.shape
    if not (g.device.type == "cpu" and g.dtype == w.dtype == h.dtype == torch.float32 and N <= NARROW_MAX
            and h.is_contiguous() and h.shape[0] == P and w.shape == (N, h.shape[1])):
        return None
    lib = cpu_kernel()
    if lib is None:
        return None
    K = h.shape[1]
    g, w = g.contiguous(), w.contiguous()
    args = (N, K, g.data_ptr(), w.data_ptr(), h.data_ptr())
    dw = torch.zeros(chunks(P), N, K, dtype=torch.float64)  # ∂W per range of rows, summed below
    over_batch(lib, "mlp_narrow_bwd_f32", P, args, grads=dw)
    return dw.sum(0)


def _products(dtype: torch.dtype, device_type: str):
    """The context `_PixelMLP` computes its products in: bf16 ones emulated where the CPU lacks them."""
    if dtype == torch.bfloat16 and bf16_emulated(device_type):
        return Bf16Products
    return contextlib.nullcontext


def _mlp_layers(mlp: torch.nn.Module) -> list[torch.nn.Linear] | None:
    """The Linear layers of a Linear, ReLU, …, Linear stack (PixelMLP.net), else None."""
    mods = list(getattr(mlp, "net", []))
    lin = mods[0::2]
    ok = (len(mods) % 2 == 1 and all(isinstance(m, torch.nn.Linear) and m.bias is not None for m in lin)
          and all(isinstance(m, torch.nn.ReLU) for m in mods[1::2]))
    return lin if ok and lin else None


def pixel_mlp(x: torch.Tensor, mlp: torch.nn.Module, first_weight: torch.Tensor | None = None,
              bf16: bool = False) -> torch.Tensor:
    """The head's MLP on a (P, F) matrix of per-pixel features → (P, N). `first_weight` replaces
    the first layer's weight (the same weight with its input columns reordered); `bf16` runs the
    matrix products in bfloat16 (float32 in and out)."""
    layers = _mlp_layers(mlp)
    if layers is None:
        assert first_weight is None, "a reordered first weight needs a Linear/ReLU head"
        if bf16:
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return mlp.net(x).to(x.dtype)
        return mlp.net(x)
    ws = [m.weight for m in layers]
    if first_weight is not None:
        ws[0] = first_weight
    if torch.is_autocast_enabled(x.device.type):  # AMP: let autocast pick the matmul precision
        for i, (w, m) in enumerate(zip(ws, layers)):
            x = F.linear(x, w, m.bias)
            x = F.relu(x) if i < len(layers) - 1 else x
        return x
    params = [p for w, m in zip(ws, layers) for p in (w, m.bias)]
    return _PixelMLP.apply(x.contiguous(), torch.bfloat16 if bf16 else x.dtype, *params)


def fast_head(features: torch.Tensor, mlp: torch.nn.Module, bf16: bool = False) -> torch.Tensor:
    """The per-pixel head on readout features → logits (B, N, H, W), a view of (B, H, W, N).

    features: (B, F, H, W), or (B, K', C, H, W) standing for F = K'·C features in the order
    k·C + c, as `Readout.forward` flattens them. When K' is the innermost axis in memory (what
    `nwm_linear_features` and `linear_time_features` return), the rows are built in the order
    c·K' + k — a copy of contiguous runs instead of a gather — and the first layer's weight
    columns are reordered to match. `bf16`: the matrix products in bfloat16 (`pixel_mlp`).
    """
    if features.dim() == 4:
        B, Fe, H, W = features.shape
        x = features.permute(0, 2, 3, 1).reshape(B * H * W, Fe)
        out = pixel_mlp(x, mlp, bf16=bf16)
        return out.view(B, H, W, out.shape[1]).permute(0, 3, 1, 2)
    B, K, C, H, W = features.shape
    layers = _mlp_layers(mlp)
    if features.stride(1) == 1 and layers is not None and C > 1:
        x = features.permute(0, 3, 4, 2, 1).reshape(B * H * W, C * K)  # feature c·K + k
        w1 = layers[0].weight
        w1 = w1.view(w1.shape[0], K, C).transpose(1, 2).reshape(w1.shape[0], C * K)
        out = pixel_mlp(x, mlp, first_weight=w1, bf16=bf16)
    else:
        x = features.permute(0, 3, 4, 1, 2).reshape(B * H * W, K * C)  # feature k·C + c
        out = pixel_mlp(x, mlp, bf16=bf16)
    return out.view(B, H, W, out.shape[1]).permute(0, 3, 1, 2)  # (B, N, H, W)


def linear_time_features(Y: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """`LinearReadout.time_features` as one batched matrix product: Y (B, T, C, H, W), proj (K, T)
    → (B, K, C, H, W), a permuted view of a contiguous (B, C, H, W, K), with no copy of Y."""
    B, T, C, H, W = Y.shape
    f = torch.matmul(Y.reshape(B, T, C * H * W).transpose(1, 2), proj.t())  # (B, C·H·W, K)
    return f.view(B, C, H, W, proj.shape[0]).permute(0, 4, 1, 2, 3)
