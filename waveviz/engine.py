"""The fast wave engine: the NWM recurrence, its linear time readout and the per-pixel MLP head,
computing exactly what the plain reference (`waveviz.models.nwm.nwm_recurrence_ref` and the
`nn.Module` head) computes, in fewer kernels, less memory and less time.

What is fast, and why
---------------------
- **Recurrence** (SPEC §2): one custom `torch.autograd.Function` runs the whole T-step IMEX loop
  and its hand-written adjoint (below). Only (y, z) at the start of each time segment are kept;
  the backward recomputes one segment at a time (time-segment checkpointing), so autograd never
  records 100 × 10 small ops and their saved tensors.
- **Backends** of that function, chosen per device (`resolve_backend`): on CPU a small C kernel
  (compiled once with the system C compiler, cached, called through `ctypes` with the batch split
  over threads) fuses the whole step — circular 3×3 stencil, tanh, both updates — in one pass over
  each image; on CUDA a Triton kernel does the same, one program per image carrying its state
  through a whole segment when the image is small; anywhere else (or without a C compiler or
  triton) the same algorithm in a handful of torch ops per step.
- **Linear readout fused with the recurrence**: `feat_k = Σ_t P[k, t] · y_t` is accumulated one
  segment at a time with a matrix product, so training never materialises Y (B, T, C, H, W);
  its gradient `dL/dy_t = Σ_k P[k, t] · dL/dfeat_k` is formed one segment at a time in the backward.
- **Head**: the per-pixel MLP on one contiguous (pixels, features) matrix, with in-place ReLUs and
  a hand-written backward (no permuted views, no autograd bookkeeping per layer); on CPU the
  backward of its narrow last layer (one output per class) is one C pass instead of three BLAS calls.
- **ConvLSTM** (SPEC §3), on CPU: its T steps in the same C library, one call for the whole
  sequence, with a hand-written adjoint (`convlstm_sequence`).
- **bf16 without native bf16**: autocast's products emulated in float32 on the bf16 values
  (`bf16_autocast`), instead of torch's slow bf16 kernels on such CPUs.

The adjoint of the IMEX step
----------------------------
Forward, for t = 1 … T, with a_t = W ⊛ y_{t-1} (circular 3×3 convolution):

    z_t = z_{t-1} + Δt · (tanh(a_t) − ω ⊙ y_{t-1} − α ⊙ z_{t-1}),    y_t = y_{t-1} + Δt · z_t

Backward, with ȳ, z̄ the gradients of the loss w.r.t. (y_t, z_t) from later steps and G_t = ∂L/∂y_t
from the readout: ŷ = ȳ + G_t, ẑ = z̄ + Δt·ŷ, u = Δt·ẑ, s = u ⊙ (1 − tanh²(a_t)), then

    ∂ω += −u ⊙ y_{t-1},  ∂α += −u ⊙ z_{t-1},  ∂W += s ⋆ y_{t-1}  (correlation, circular),
    z̄ ← ẑ − u ⊙ α,       ȳ ← ŷ − u ⊙ ω + Wᵀ ⊛ s  (transposed circular convolution),

and ∂y_0 = ȳ after the first step. `tests/test_engine.py` checks every fast path against the
reference in float64 (to 1e-9) and float32 (to 1e-5) over a grid of shapes.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

ENGINES = ("auto", "fast", "fast-bf16", "reference")
BACKENDS = ("auto", "c", "triton", "torch")


def default_engine() -> str:
    """The engine new models start with: `WAVEVIZ_ENGINE` (auto | fast | reference), else "auto"."""
    return check_engine(os.environ.get("WAVEVIZ_ENGINE", "auto") or "auto")


def check_engine(name: str) -> str:
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; valid: {', '.join(ENGINES)}")
    return name


class EngineSelectable:
    """Mixin for models with a fast and a reference engine: `model.engine` = auto | fast | fast-bf16 | reference.

    auto and fast compute the reference's function in float32 (to rounding); fast-bf16 is the fast
    engine with the per-pixel head's matrix products in bfloat16 (float32 accumulation; encoders,
    recurrence and readout stay float32) — about 85 % of an NWM's FLOPs, products ≈ 2.5× faster on CPUs with
    AVX-512 BF16 / AMX (`cpu_bf16_native`; elsewhere oneDNN emulates bf16, slower than float32) and
    on tensor-core GPUs, and it keeps accuracy (README, "Speed").
    The choice is a plain attribute, not a config field, so checkpoints are unaffected; new models
    start with `default_engine()`.
    """

    _engine: str = "auto"

    @property
    def engine(self) -> str:
        """auto | fast | reference: how the model is computed (the function is the same)."""
        return self._engine

    @engine.setter
    def engine(self, name: str) -> None:
        self._engine = check_engine(name)

    @property
    def uses_fast_engine(self) -> bool:
        return self._engine != "reference"

    @property
    def bf16_head(self) -> bool:
        """Whether the head's matrix products run in bfloat16 (engine fast-bf16)."""
        return self._engine == "fast-bf16"

    def engine_input(self, x: torch.Tensor) -> torch.Tensor:
        """Images as the encoders like them: channels-last on CPU under the fast engine (oneDNN's
        own layout; about 1.6× faster encoders, same result)."""
        if self.uses_fast_engine and x.device.type == "cpu" and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x


def cpu_bf16_native() -> bool | None:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX), which is where
    fast-bf16 pays on CPU (elsewhere oneDNN emulates it, slower than float32); None where unknown."""
    line = next((ln for ln in _cpu_signature().splitlines() if ln.startswith("flags")), None)
    return None if line is None else bool({"avx512_bf16", "amx_bf16"} & set(line.split(":", 1)[-1].split()))


def bf16_emulated(device_type: str = "cpu") -> bool:
    """Whether bfloat16 products on `device_type` are emulated (`bf16_products`): on a CPU without
    native bf16 (`cpu_bf16_native` False or unknown), where torch's own bf16 matrix products and
    convolutions are 5–40× slower than float32 (seen on a Zen 3 with AVX2: a 65536×256×256 product
    1.1 GFLOP/s in bf16, 48 in float32). `WAVEVIZ_BF16=native` or `=emulate` decides instead."""
    if device_type != "cpu":
        return False
    forced = os.environ.get("WAVEVIZ_BF16", "")
    if forced in ("native", "emulate"):
        return forced == "emulate"
    return not cpu_bf16_native()


class _Bf16Products(TorchDispatchMode):
    """Runs the bfloat16 matrix products and convolutions inside it in float32 on the same bf16
    values and rounds the result to bf16 again: exact products, float32 sums, one rounding — what
    native bf16 kernels (AVX-512 BF16, AMX, tensor cores) compute, up to the order of the sums.
    Every other op, and every call without a bf16 tensor, runs as it is."""

    OPS = {getattr(torch.ops.aten, n) for n in (
        "linear", "addmm", "mm", "bmm", "baddbmm", "addbmm", "matmul",
        "conv2d", "conv_transpose2d", "convolution", "_convolution", "convolution_backward")}
    try:  # oneDNN's fused linear (the fast head's), where this torch has it
        OPS.add(torch.ops.mkldnn._linear_pointwise)
    except (AttributeError, RuntimeError):
        pass

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func.overloadpacket not in self.OPS or not any(
                isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16 for t in tree_leaves((args, kwargs))):
            return func(*args, **kwargs)
        up = lambda t: t.float() if isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16 else t  # noqa: E731
        down = lambda t: t.to(torch.bfloat16) if isinstance(t, torch.Tensor) and t.dtype == torch.float32 else t  # noqa: E731
        out = kwargs.pop("out", None)
        if out is not None:  # an out= overload: compute, then write into the caller's tensor
            func = func.overloadpacket.default
        res = tree_map(down, func(*tree_map(up, args), **tree_map(up, kwargs)))
        return res if out is None else out.copy_(res)


def bf16_products(device_type: str = "cpu"):
    """A context in which bf16 products are emulated where `bf16_emulated(device_type)`, else nothing.
    Wrap a backward in it too: autograd runs the saved bf16 products outside any autocast block."""
    return _Bf16Products() if bf16_emulated(device_type) else contextlib.nullcontext()


def bf16_autocast(device_type: str, enabled: bool = True) -> contextlib.ExitStack:
    """`torch.autocast(device_type, bfloat16)`, with its products emulated on a CPU without native
    bf16 (`bf16_products`): the same numbers as there, at about float32 speed instead of 5–40× slower
    (the app's one-image Multi-MNIST run under autocast, Zen 3: 9.8 s → 0.64 s). Off: no-op."""
    stack = contextlib.ExitStack()
    if enabled:
        stack.enter_context(torch.autocast(device_type, dtype=torch.bfloat16))
        stack.enter_context(bf16_products(device_type))
    return stack


_allocator: str | None = None


def retain_freed_memory() -> str:
    """Let glibc's malloc keep freed memory for reuse instead of unmapping it (CPU training speed).

    By default glibc serves every block over 32 MB (and many smaller ones) with a fresh mmap and
    unmaps it on free, so a train step's large activations are page-faulted in and zeroed by the
    kernel again on every step. This sets `M_MMAP_MAX = 0` and a 2 GB trim threshold (the reuse that
    jemalloc / tcmalloc give, which PyTorch's CPU tuning guide recommends preloading). Measured on
    2 cores, NWM Tetrominoes B = 16: a train step 10–20 % faster (fast-bf16 ≈ 435 → 372 ms, fast
    ≈ 725 → 605 ms), at a price in resident memory: the freed blocks stay, with some fragmentation
    (≈ 535 → 920 MB after 90 fast steps, flat from there). Called by the trainer and `waveviz bench`
    on CPU, never on import; skipped where the user set any `MALLOC_*` variable or `WAVEVIZ_MALLOC=0`,
    and off glibc. Returns what the allocator does now (for reports), the same on every later call.
    """
    global _allocator
    if _allocator is None:
        _allocator = "system default"
        user = sorted(k for k in os.environ if k.startswith("MALLOC_"))
        if user:
            _allocator = f"glibc, as set by {', '.join(user)}"
        elif os.environ.get("WAVEVIZ_MALLOC", "1") != "0" and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(None)
                M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
                if libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1:
                    _allocator = "glibc, freed memory kept for reuse (M_MMAP_MAX 0, M_TRIM_THRESHOLD 2 GB)"
            except (OSError, AttributeError):
                pass
    return _allocator


# ====================================================================== the CPU kernel (C)
#
# One template, instantiated for float (SUF=f32) and double (SUF=f64). Per image and step it pads
# y_{t-1} circularly once, then walks the image row by row: the 3×3 stencil for every output
# channel into a row buffer, then tanh and both IMEX updates on that row. The backward walks a
# segment in reverse doing the same plus the adjoint updates; ∂W is accumulated in double.
# The float tanh is a vectorisable Cephes-style approximation (max error ≈ 2 ulp, tested);
# NaN stays NaN so a diverging run is still caught.

_C_PRELUDE = r"""
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float wv_expf(float x) {           /* 0 ≤ x ≤ 88; Cephes expf, ≈ 1 ulp */
    int32_t k = (int32_t)(x * 1.44269504088896341f + 0.5f);   /* floor, as x ≥ 0 */
    float n = (float)k;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float r2 = r * r;
    float p = (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f) * r2 + r + 1.0f;
    int32_t bits = (k + 127) << 23;              /* 2^k */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* Branch-free (selects as arithmetic blends) so that GCC and clang vectorise the loops calling it. */
static inline float wv_tanhf(float x) {
    float ax = fabsf(x);
    float big = (float)(ax > 44.0f);             /* tanh(44) is 1 in float */
    ax = ax - big * ax + big * 44.0f;
    float xc = copysignf(ax, x);
    float s = xc * xc;                           /* |x| < 0.625: odd polynomial (Cephes tanhf) */
    float p = ((((-5.70498872745e-3f * s + 2.06390887954e-2f) * s - 5.37397155531e-2f) * s
                + 1.33314422036e-1f) * s - 3.33332819422e-1f) * s * xc + xc;
    float e = wv_expf(2.0f * ax);                /* else 1 − 2 / (exp(2|x|) + 1) */
    float q = copysignf(1.0f - 2.0f / (e + 1.0f), x);
    float m = (float)(ax < 0.625f);
    return (m * p + (1.0f - m) * q) + (x - x);   /* x − x: NaN in, NaN out */
}

static inline double wv_tanh(double x) { return tanh(x); }

static inline float wv_sigmf(float x) {          /* 1 / (1 + e^{−x}) from e^{−|x|}, branch-free */
    float ax = fabsf(x);
    float big = (float)(ax > 88.0f);             /* (not fminf: GCC does not vectorise it) */
    float e = 1.0f / wv_expf(ax - big * ax + big * 88.0f);
    float r = 1.0f / (1.0f + e);
    float pos = (float)(x >= 0.0f);
    return (pos * r + (1.0f - pos) * e * r) + (x - x);
}

static inline double wv_sigm(double x) { return 1.0 / (1.0 + exp(-x)); }

void wv_sigm_f32(const float* x, float* y, int64_t n) {   /* exported for the accuracy test */
    for (int64_t i = 0; i < n; ++i) y[i] = wv_sigmf(x[i]);
}

void wv_tanh_f32(const float* x, float* y, int64_t n) {   /* exported for the accuracy test */
    for (int64_t i = 0; i < n; ++i) y[i] = wv_tanhf(x[i]);
}

/* The backward of a narrow layer out = h·Wᵀ + b (N ≤ 64 outputs, K inputs) that follows a ReLU,
   for rows p0 … p1-1, in one pass over h instead of three (BLAS is slow at N ≈ 6: the head's
   last layer): dw (N, K) += gᵀ·h, summed in float over blocks of 256 rows and in double across
   them; h ← (g·W) ⊙ (h > 0), in place — the gradient at the ReLU's input. rc: 1 on no memory. */
int mlp_narrow_bwd_f32(int64_t p0, int64_t p1, int N, int K, const float* g, const float* w, float* h, double* dw) {
    float* acc = (float*)malloc(sizeof(float) * (int64_t)K * (N + 1));
    if (!acc) return 1;
    float* part = acc + K;
    for (int64_t b0 = p0; b0 < p1; b0 += 256) {
        const int64_t b1 = b0 + 256 < p1 ? b0 + 256 : p1;
        memset(part, 0, sizeof(float) * (int64_t)K * N);
        for (int64_t p = b0; p < b1; ++p) {
            const float* gp = g + p * N;
            float* hp = h + p * K;
            for (int j = 0; j < K; ++j) acc[j] = 0.0f;
            for (int n = 0; n < N; ++n) {
                const float gn = gp[n];
                const float* wn = w + (int64_t)n * K;
                float* pn = part + (int64_t)n * K;
                #pragma omp simd
                for (int j = 0; j < K; ++j) { acc[j] += gn * wn[j]; pn[j] += gn * hp[j]; }
            }
            #pragma omp simd
            for (int j = 0; j < K; ++j) hp[j] = hp[j] > 0.0f ? acc[j] : 0.0f;
        }
        for (int64_t i = 0; i < (int64_t)K * N; ++i) dw[i] += part[i];
    }
    free(acc);
    return 0;
}

#ifdef _OPENMP
/* The same on torch's OpenMP team: thread t takes a contiguous range of rows and its own dw
   block dw + t·N·K (the caller sums the nt blocks). */
void mlp_narrow_bwd_omp_f32(int64_t P, int nt, int* rc, int N, int K, const float* g, const float* w, float* h, double* dw) {
    #pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), T = omp_get_num_threads();
        rc[t] = mlp_narrow_bwd_f32(P * t / T, P * (t + 1) / T, N, K, g, w, h, dw + (int64_t)t * N * K);
    }
}
#endif
"""

_C_TEMPLATE = r"""
/* y (C, H, W) → rows r0 … r1-1 of p (C, H+2, W+2), circular (padded row r holds row r − 1 mod H) */
static void pad_rows_SUF(const REAL* y, REAL* p, int C, int H, int W, int r0, int r1) {
    const int Wp = W + 2;
    for (int c = 0; c < C; ++c)
        for (int h = r0 - 1; h < r1 - 1; ++h) {
            const REAL* src = y + ((int64_t)c * H + (h + H) % H) * W;
            REAL* dst = p + ((int64_t)c * (H + 2) + h + 1) * Wp;
            dst[0] = src[W - 1];
            memcpy(dst + 1, src, sizeof(REAL) * W);
            dst[W + 1] = src[0];
        }
}

static void pad_SUF(const REAL* y, REAL* p, int C, int H, int W) { pad_rows_SUF(y, p, C, H, W, 0, H + 2); }

/* row h of output channel co of the circular 3×3 convolution W ⊛ y, from the padded p */
static inline void conv_row_SUF(const REAL* p, const REAL* w, REAL* row, int co, int h, int C, int H, int W) {
    const int Wp = W + 2;
    const int64_t PHW = (int64_t)(H + 2) * Wp;
    for (int x = 0; x < W; ++x) row[x] = 0;
    for (int ci = 0; ci < C; ++ci)
        for (int dy = 0; dy < 3; ++dy) {
            const REAL* pr = p + ci * PHW + (int64_t)(h + dy) * Wp;
            const REAL* k = w + ((co * C + ci) * 3 + dy) * 3;
            const REAL k0 = k[0], k1 = k[1], k2 = k[2];
            for (int x = 0; x < W; ++x) row[x] += k0 * pr[x] + k1 * pr[x + 1] + k2 * pr[x + 2];
        }
}

/* row h of input channel k of the transposed circular convolution Wᵀ ⊛ s for a (Co, Ci, 3, 3) W */
static inline void convT_rect_row_SUF(const REAL* sp, const REAL* w, REAL* row, int k, int h, int Co, int Ci, int H, int W) {
    const int Wp = W + 2;
    const int64_t PHW = (int64_t)(H + 2) * Wp;
    for (int x = 0; x < W; ++x) row[x] = 0;
    for (int o = 0; o < Co; ++o)
        for (int dy = 0; dy < 3; ++dy) {
            const REAL* pr = sp + o * PHW + (int64_t)(h + 2 - dy) * Wp;
            const REAL* q = w + ((o * Ci + k) * 3 + dy) * 3;
            const REAL q0 = q[0], q1 = q[1], q2 = q[2];
            for (int x = 0; x < W; ++x) row[x] += q2 * pr[x] + q1 * pr[x + 1] + q0 * pr[x + 2];
        }
}

static inline void convT_row_SUF(const REAL* sp, const REAL* w, REAL* row, int ci, int h, int C, int H, int W) {
    convT_rect_row_SUF(sp, w, row, ci, h, C, C, H, W);
}

/* one IMEX step on rows h0 … h1-1 of one image, from y_{t-1} padded into p */
static inline void fwd_rows_SUF(const REAL* p, const REAL* w, REAL* row, const REAL* yp, const REAL* zp,
                                const REAL* omb, const REAL* alb, REAL* yn, REAL* zn, REAL dt,
                                int C, int H, int W, int h0, int h1) {
    const int64_t HW = (int64_t)H * W;
    for (int co = 0; co < C; ++co)
        for (int h = h0; h < h1; ++h) {
            conv_row_SUF(p, w, row, co, h, C, H, W);
            const int64_t o = co * HW + (int64_t)h * W;
            #pragma omp simd                        /* the reference's order of operations */
            for (int x = 0; x < W; ++x) {
                const REAL yv = yp[o + x], zv = zp[o + x];
                const REAL znew = zv + dt * ((TANH(row[x]) - omb[o + x] * yv) - alb[o + x] * zv);
                zn[o + x] = znew;
                yn[o + x] = yv + dt * znew;
            }
        }
}

/* n IMEX steps for images b0 … b1-1. y_in, z_in, om, al: (B, C, H, W) contiguous (z_in NULL = 0).
   Step j of image b is written to Y + b*ysb + j*ysj and Z + b*zsb + j*zsj (each C*H*W contiguous). */
int nwm_fwd_SUF(int b0, int b1, int n, int C, int H, int W, REAL dt,
                const REAL* y_in, const REAL* z_in, const REAL* om, const REAL* al, const REAL* w,
                REAL* Y, int64_t ysb, int64_t ysj, REAL* Z, int64_t zsb, int64_t zsj) {
    const int64_t HW = (int64_t)H * W, CHW = C * HW;
    REAL* p = (REAL*)calloc((int64_t)C * (H + 2) * (W + 2) + W + CHW, sizeof(REAL));
    if (!p) return 1;
    REAL* row = p + (int64_t)C * (H + 2) * (W + 2);
    const REAL* zeros = row + W;                 /* z_0 when z_in is NULL */
    for (int b = b0; b < b1; ++b) {
        const REAL* omb = om + b * CHW;
        const REAL* alb = al + b * CHW;
        for (int j = 0; j < n; ++j) {
            const REAL* yp = j ? Y + b * ysb + (j - 1) * ysj : y_in + b * CHW;
            const REAL* zp = j ? Z + b * zsb + (j - 1) * zsj : (z_in ? z_in + b * CHW : zeros);
            REAL* yn = Y + b * ysb + j * ysj;
            REAL* zn = Z + b * zsb + j * zsj;
            pad_SUF(yp, p, C, H, W);
            fwd_rows_SUF(p, w, row, yp, zp, omb, alb, yn, zn, dt, C, H, W, 0, H);
        }
    }
    free(p);
    return 0;
}

/* The adjoint of n steps (in reverse) for images b0 … b1-1, given the states the forward wrote
   (Y, Z: strides ysb, ysj and zsb, zsj) and the direct gradients G (strides gsb, gsj). Updates ybar, zbar in place
   (in: gradients w.r.t. the last state of the segment; out: w.r.t. its start state), adds into
   dom, dal (B, C, H, W) and dw (C*C*9 doubles, this call's share of ∂W). */
int nwm_bwd_SUF(int b0, int b1, int n, int C, int H, int W, REAL dt,
                const REAL* y_in, const REAL* z_in, const REAL* om, const REAL* al, const REAL* w,
                const REAL* Y, int64_t ysb, int64_t ysj, const REAL* Z, int64_t zsb, int64_t zsj, const REAL* G, int64_t gsb, int64_t gsj,
                REAL* ybar, REAL* zbar, REAL* dom, REAL* dal, double* dw) {
    const int64_t HW = (int64_t)H * W, CHW = C * HW;
    const int Wp = W + 2;
    const int64_t PHW = (int64_t)(H + 2) * Wp;
    REAL* p = (REAL*)calloc(2 * C * PHW + 2 * CHW + W, sizeof(REAL));
    if (!p) return 1;
    REAL* sp = p + C * PHW;                     /* s, circularly padded */
    REAL* s = sp + C * PHW;                     /* s (C, H, W) */
    const REAL* zeros = s + CHW;                /* z_0 when z_in is NULL */
    REAL* row = s + 2 * CHW;
    for (int b = b0; b < b1; ++b) {
        const REAL* omb = om + b * CHW;
        const REAL* alb = al + b * CHW;
        REAL* yb = ybar + b * CHW;
        REAL* zb = zbar + b * CHW;
        REAL* domb = dom + b * CHW;
        REAL* dalb = dal + b * CHW;
        for (int j = n - 1; j >= 0; --j) {
            const REAL* yp = j ? Y + b * ysb + (j - 1) * ysj : y_in + b * CHW;
            const REAL* zp = j ? Z + b * zsb + (j - 1) * zsj : (z_in ? z_in + b * CHW : zeros);
            const REAL* g = G + b * gsb + j * gsj;
            pad_SUF(yp, p, C, H, W);
            for (int co = 0; co < C; ++co)
                for (int h = 0; h < H; ++h) {
                    conv_row_SUF(p, w, row, co, h, C, H, W);
                    const int64_t o = co * HW + (int64_t)h * W;
                    const REAL *gr = g + o, *ypr = yp + o, *zpr = zp + o, *omr = omb + o, *alr = alb + o;
                    REAL *ybr = yb + o, *zbr = zb + o, *sr = s + o, *domr = domb + o, *dalr = dalb + o;
                    #pragma omp simd                /* the rows never overlap */
                    for (int x = 0; x < W; ++x) {
                        const REAL yhat = ybr[x] + gr[x];
                        const REAL zhat = zbr[x] + dt * yhat;
                        const REAL u = dt * zhat;
                        const REAL th = TANH(row[x]);
                        sr[x] = u * (1 - th * th);
                        domr[x] += -u * ypr[x];
                        dalr[x] += -u * zpr[x];
                        zbr[x] = zhat + -u * alr[x];
                        ybr[x] = yhat + -u * omr[x];
                    }
                }
            pad_SUF(s, sp, C, H, W);
            /* ∂W[co, ci, dy, dx] += Σ_{h, x} s[co, h, x] · p[ci, h + dy, x + dx] */
            for (int co = 0; co < C; ++co)
                for (int ci = 0; ci < C; ++ci)
                    for (int dy = 0; dy < 3; ++dy) {
                        double a0 = 0, a1 = 0, a2 = 0;
                        for (int h = 0; h < H; ++h) {
                            const REAL* sr = s + co * HW + (int64_t)h * W;
                            const REAL* pr = p + ci * PHW + (int64_t)(h + dy) * Wp;
                            REAL r0 = 0, r1 = 0, r2 = 0;
                            #pragma omp simd reduction(+:r0, r1, r2)
                            for (int x = 0; x < W; ++x) {
                                r0 += sr[x] * pr[x];
                                r1 += sr[x] * pr[x + 1];
                                r2 += sr[x] * pr[x + 2];
                            }
                            a0 += r0; a1 += r1; a2 += r2;
                        }
                        double* d = dw + ((co * C + ci) * 3 + dy) * 3;
                        d[0] += a0; d[1] += a1; d[2] += a2;
                    }
            /* ȳ += Wᵀ ⊛ s */
            for (int ci = 0; ci < C; ++ci)
                for (int h = 0; h < H; ++h) {
                    convT_row_SUF(sp, w, row, ci, h, C, H, W);
                    REAL* yr = yb + ci * HW + (int64_t)h * W;
                    for (int x = 0; x < W; ++x) yr[x] += row[x];
                }
        }
    }
    free(p);
    return 0;
}

#ifdef _OPENMP
/* The same, on torch's own OpenMP thread team (the kernel is linked against the libgomp torch has
   loaded): nt threads, each a contiguous range of images; with fewer images than threads, the
   threads share each image's rows instead, meeting at a barrier twice per step. rc: nt ints. */
void nwm_fwd_omp_SUF(int B, int nt, int* rc, int n, int C, int H, int W, REAL dt,
                     const REAL* y_in, const REAL* z_in, const REAL* om, const REAL* al, const REAL* w,
                     REAL* Y, int64_t ysb, int64_t ysj, REAL* Z, int64_t zsb, int64_t zsj) {
    const int64_t HW = (int64_t)H * W, CHW = C * HW;
    if (B >= nt || H < 2 * nt) {
        #pragma omp parallel num_threads(nt)
        {
            const int t = omp_get_thread_num(), T = omp_get_num_threads();
            rc[t] = nwm_fwd_SUF((int)((int64_t)B * t / T), (int)((int64_t)B * (t + 1) / T), n, C, H, W, dt,
                                y_in, z_in, om, al, w, Y, ysb, ysj, Z, zsb, zsj);
        }
        return;
    }
    REAL* p = (REAL*)calloc((int64_t)C * (H + 2) * (W + 2) + CHW, sizeof(REAL));   /* shared: padded y, zeros */
    if (!p) { rc[0] = 1; return; }
    const REAL* zeros = p + (int64_t)C * (H + 2) * (W + 2);
    #pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), T = omp_get_num_threads();
        const int h0 = H * t / T, h1 = H * (t + 1) / T;
        const int r0 = (H + 2) * t / T, r1 = (H + 2) * (t + 1) / T;
        REAL* row = (REAL*)malloc(sizeof(REAL) * W);
        rc[t] = row == NULL;
        #pragma omp barrier
        int ok = 1;
        for (int i = 0; i < T; ++i) ok &= !rc[i];
        for (int b = 0; ok && b < B; ++b) {
            const REAL* omb = om + b * CHW;
            const REAL* alb = al + b * CHW;
            for (int j = 0; j < n; ++j) {
                const REAL* yp = j ? Y + b * ysb + (j - 1) * ysj : y_in + b * CHW;
                const REAL* zp = j ? Z + b * zsb + (j - 1) * zsj : (z_in ? z_in + b * CHW : zeros);
                pad_rows_SUF(yp, p, C, H, W, r0, r1);
                #pragma omp barrier
                fwd_rows_SUF(p, w, row, yp, zp, omb, alb, Y + b * ysb + j * ysj, Z + b * zsb + j * zsj,
                             dt, C, H, W, h0, h1);
                #pragma omp barrier
            }
        }
        free(row);
    }
    free(p);
}

/* The adjoint on the thread team, a contiguous range of images per thread; thread t adds its ∂W
   share into dw + b0 * C*C*9, b0 its first image (so dw holds B rows, summed by the caller). */
void nwm_bwd_omp_SUF(int B, int nt, int* rc, int n, int C, int H, int W, REAL dt,
                     const REAL* y_in, const REAL* z_in, const REAL* om, const REAL* al, const REAL* w,
                     const REAL* Y, int64_t ysb, int64_t ysj, const REAL* Z, int64_t zsb, int64_t zsj,
                     const REAL* G, int64_t gsb, int64_t gsj,
                     REAL* ybar, REAL* zbar, REAL* dom, REAL* dal, double* dw) {
    #pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), T = omp_get_num_threads();
        const int b0 = (int)((int64_t)B * t / T), b1 = (int)((int64_t)B * (t + 1) / T);
        rc[t] = b1 > b0 ? nwm_bwd_SUF(b0, b1, n, C, H, W, dt, y_in, z_in, om, al, w, Y, ysb, ysj, Z, zsb, zsj,
                                      G, gsb, gsj, ybar, zbar, dom, dal, dw + (int64_t)b0 * C * C * 9) : 0;
    }
}
#endif
"""


_C_LSTM_TEMPLATE = r"""
/* ---- the ConvLSTM (SPEC §3), C hidden channels, an input MLP C → M → C ---------------------- */

static inline REAL sigm_SUF(REAL x) { return SIGM(x); }

/* T steps for images b0 … b1-1. u0, h0, c0: (B, C, H, W); wg (4C, 2C, 3, 3), bg (4C) with the gates
   in the order i, f, g, o; w1 (M, C), b1 (M), w2 (C, M), b2 (C). Writes U, Hs, Cs (B, T, C, H, W):
   u_t, h_t, c_t for t = 1 … T, and, unless A is NULL, A (B, T, 4C, H, W): σ(i), σ(f), tanh(g), σ(o). */
int lstm_fwd_SUF(int b0, int b1, int T, int C, int M, int H, int W,
                 const REAL* u0, const REAL* h0, const REAL* c0, const REAL* wg, const REAL* bg,
                 const REAL* w1, const REAL* b1w, const REAL* w2, const REAL* b2,
                 REAL* U, REAL* Hs, REAL* Cs, REAL* A) {
    const int64_t HW = (int64_t)H * W, CHW = C * HW;
    const int C2 = 2 * C, C4 = 4 * C;
    const int64_t PHW = (int64_t)(H + 2) * (W + 2);
    REAL* xp = (REAL*)malloc(sizeof(REAL) * (C2 * PHW + (int64_t)C4 * W + (int64_t)M * W));
    if (!xp) return 1;
    REAL* acc = xp + C2 * PHW;                   /* (4C, W): one row of every gate */
    REAL* m = acc + (int64_t)C4 * W;
    for (int b = b0; b < b1; ++b) {
        for (int t = 0; t < T; ++t) {
            const int64_t cur = ((int64_t)b * T + t) * CHW, prev = cur - CHW;
            const REAL* up = t ? U + prev : u0 + b * CHW;
            const REAL* hp = t ? Hs + prev : h0 + b * CHW;
            const REAL* cp = t ? Cs + prev : c0 + b * CHW;
            pad_SUF(up, xp, C, H, W);
            pad_SUF(hp, xp + C * PHW, C, H, W);
            for (int y = 0; y < H; ++y) {
                for (int o = 0; o < C4; ++o) {
                    REAL* r = acc + (int64_t)o * W;
                    conv_row_SUF(xp, wg, r, o, y, C2, H, W);
                    for (int x = 0; x < W; ++x) r[x] += bg[o];
                }
                const int64_t r0 = (int64_t)y * W;
                for (int o = 0; o < C4; ++o) {             /* the gates' activations, in place */
                    REAL* r = acc + (int64_t)o * W;
                    if (o >= 2 * C && o < 3 * C) {
                        #pragma omp simd
                        for (int x = 0; x < W; ++x) r[x] = TANH(r[x]);
                    } else {
                        #pragma omp simd
                        for (int x = 0; x < W; ++x) r[x] = sigm_SUF(r[x]);
                    }
                    if (A) memcpy(A + ((int64_t)b * T + t) * C4 * HW + o * HW + r0, r, sizeof(REAL) * W);
                }
                for (int c = 0; c < C; ++c) {
                    const REAL* ai = acc + (int64_t)c * W;
                    const REAL* af = acc + (int64_t)(C + c) * W;
                    const REAL* ag = acc + (int64_t)(2 * C + c) * W;
                    const REAL* ao = acc + (int64_t)(3 * C + c) * W;
                    const REAL* cpr = cp + c * HW + r0;
                    REAL* cn = Cs + cur + c * HW + r0;
                    REAL* hn = Hs + cur + c * HW + r0;
                    #pragma omp simd
                    for (int x = 0; x < W; ++x) {
                        const REAL cv = af[x] * cpr[x] + ai[x] * ag[x];
                        cn[x] = cv;
                        hn[x] = ao[x] * TANH(cv);
                    }
                }
                for (int j = 0; j < M; ++j) {              /* the input MLP, C → M → C, per pixel */
                    REAL* mj = m + (int64_t)j * W;
                    for (int x = 0; x < W; ++x) mj[x] = b1w[j];
                    for (int c = 0; c < C; ++c) {
                        const REAL q = w1[j * C + c];
                        const REAL* hn = Hs + cur + c * HW + r0;
                        #pragma omp simd
                        for (int x = 0; x < W; ++x) mj[x] += q * hn[x];
                    }
                    for (int x = 0; x < W; ++x) mj[x] = mj[x] > 0 ? mj[x] : 0;
                }
                for (int c = 0; c < C; ++c) {
                    REAL* un = U + cur + c * HW + r0;
                    for (int x = 0; x < W; ++x) un[x] = b2[c];
                    for (int j = 0; j < M; ++j) {
                        const REAL q = w2[c * M + j];
                        const REAL* mj = m + (int64_t)j * W;
                        #pragma omp simd
                        for (int x = 0; x < W; ++x) un[x] += q * mj[x];
                    }
                }
            }
        }
    }
    free(xp);
    return 0;
}

/* The adjoint for images b0 … b1-1, from what lstm_fwd wrote (with A) and G = ∂L/∂U (B, T, C, H, W).
   Writes du0, dh0, dc0 (B, C, H, W): the gradients at the initial states; adds this call's share of
   the parameters' gradients into dp (doubles): wg, bg, w1, b1, w2, b2, flattened in that order. */
int lstm_bwd_SUF(int b0, int b1, int T, int C, int M, int H, int W,
                 const REAL* u0, const REAL* h0, const REAL* c0, const REAL* wg,
                 const REAL* w1, const REAL* b1w, const REAL* w2,
                 const REAL* U, const REAL* Hs, const REAL* Cs, const REAL* A, const REAL* G,
                 REAL* du0, REAL* dh0, REAL* dc0, double* dp) {
    const int64_t HW = (int64_t)H * W, CHW = C * HW;
    const int C2 = 2 * C, C4 = 4 * C;
    const int Wp = W + 2;
    const int64_t PHW = (int64_t)(H + 2) * Wp;
    const int64_t np = (int64_t)C4 * C2 * 9 + C4 + 2 * (int64_t)M * C + M + C;   /* wg, bg, w1, b1, w2, b2 */
    /* padded x_{t-1} and s, s itself, a row, the MLP's hidden values, and per-image sums of dp in REAL */
    REAL* xp = (REAL*)malloc(sizeof(REAL) * (C2 * PHW + C4 * PHW + (int64_t)C4 * HW + W + 2 * M * HW + CHW + np));
    if (!xp) return 1;
    REAL* sp = xp + C2 * PHW;
    REAL* s = sp + C4 * PHW;
    REAL* row = s + (int64_t)C4 * HW;
    REAL* m = row + W;                           /* (M, H, W): the MLP's hidden values, and their gradient */
    REAL* dm = m + (int64_t)M * HW;
    REAL* gu = dm + (int64_t)M * HW;             /* (C, H, W) */
    REAL* step = gu + CHW;                       /* this step's parameter gradients (REAL), then added to dp */
    for (int b = b0; b < b1; ++b) {
        REAL* du = du0 + b * CHW;                /* carried: ∂L/∂u_t, ∂L/∂h_t, ∂L/∂c_t from later steps */
        REAL* dh = dh0 + b * CHW;
        REAL* dc = dc0 + b * CHW;
        memset(du, 0, sizeof(REAL) * CHW);
        memset(dh, 0, sizeof(REAL) * CHW);
        memset(dc, 0, sizeof(REAL) * CHW);
        for (int t = T - 1; t >= 0; --t) {
            const int64_t cur = ((int64_t)b * T + t) * CHW, prev = cur - CHW;
            const REAL* up = t ? U + prev : u0 + b * CHW;
            const REAL* hp = t ? Hs + prev : h0 + b * CHW;
            const REAL* cp = t ? Cs + prev : c0 + b * CHW;
            const REAL* a = A + ((int64_t)b * T + t) * C4 * HW;
            memset(step, 0, sizeof(REAL) * np);
            REAL* sw1 = step + (int64_t)C4 * C2 * 9 + C4;
            REAL* sb1 = sw1 + (int64_t)M * C;
            REAL* sw2 = sb1 + M;
            REAL* sb2 = sw2 + (int64_t)C * M;
            const REAL* hn = Hs + cur;              /* h_t */
            for (int j = 0; j < M; ++j) {            /* the MLP again: m = relu(w1 h_t + b1) */
                REAL* mj = m + j * HW;
                for (int64_t px = 0; px < HW; ++px) mj[px] = b1w[j];
                for (int c = 0; c < C; ++c) {
                    const REAL q = w1[j * C + c];
                    #pragma omp simd
                    for (int64_t px = 0; px < HW; ++px) mj[px] += q * hn[c * HW + px];
                }
                for (int64_t px = 0; px < HW; ++px) { mj[px] = mj[px] > 0 ? mj[px] : 0; dm[j * HW + px] = 0; }
            }
            for (int c = 0; c < C; ++c) {            /* ĝ = ∂L/∂u_t (direct + through step t+1) */
                REAL* gc = gu + c * HW;
                const REAL* Gc = G + cur + c * HW;
                const REAL* dc_ = du + c * HW;
                REAL sg = 0;
                #pragma omp simd reduction(+:sg)
                for (int64_t px = 0; px < HW; ++px) { gc[px] = Gc[px] + dc_[px]; sg += gc[px]; }
                sb2[c] += sg;
                for (int j = 0; j < M; ++j) {
                    const REAL q = w2[c * M + j];
                    const REAL* mj = m + j * HW;
                    REAL* dmj = dm + j * HW;
                    REAL sw = 0;
                    #pragma omp simd reduction(+:sw)
                    for (int64_t px = 0; px < HW; ++px) { sw += gc[px] * mj[px]; dmj[px] += q * gc[px]; }
                    sw2[c * M + j] += sw;
                }
            }
            for (int j = 0; j < M; ++j) {            /* through the ReLU; ∂w1, ∂b1 */
                REAL* dmj = dm + j * HW;
                const REAL* mj = m + j * HW;
                REAL sb = 0;
                #pragma omp simd reduction(+:sb)
                for (int64_t px = 0; px < HW; ++px) { dmj[px] = mj[px] > 0 ? dmj[px] : 0; sb += dmj[px]; }
                sb1[j] += sb;
                for (int c = 0; c < C; ++c) {
                    const REAL* hc = hn + c * HW;
                    REAL sw = 0;
                    #pragma omp simd reduction(+:sw)
                    for (int64_t px = 0; px < HW; ++px) sw += dmj[px] * hc[px];
                    sw1[j * C + c] += sw;
                }
            }
            for (int c = 0; c < C; ++c) {            /* ∂h_t, the cell, the gates → s (pre-activation) */
                REAL* dhv = gu + c * HW;             /* ĝ is no longer needed: reuse its memory */
                const REAL* dhc = dh + c * HW;
                for (int64_t px = 0; px < HW; ++px) dhv[px] = dhc[px];
                for (int j = 0; j < M; ++j) {
                    const REAL q = w1[j * C + c];
                    const REAL* dmj = dm + j * HW;
                    #pragma omp simd
                    for (int64_t px = 0; px < HW; ++px) dhv[px] += q * dmj[px];
                }
                const REAL *ai = a + c * HW, *af = a + (C + c) * HW, *ag = a + (2 * C + c) * HW, *ao = a + (3 * C + c) * HW;
                const REAL* cc = Cs + cur + c * HW;
                const REAL* cpc = cp + c * HW;
                REAL* dcc = dc + c * HW;
                REAL *si = s + c * HW, *sf = s + (C + c) * HW, *sg = s + (2 * C + c) * HW, *so = s + (3 * C + c) * HW;
                #pragma omp simd
                for (int64_t px = 0; px < HW; ++px) {
                    const REAL gi = ai[px], gf = af[px], gg = ag[px], go = ao[px];
                    const REAL tc = TANH(cc[px]);
                    const REAL dct = dcc[px] + dhv[px] * go * (1 - tc * tc);
                    si[px] = dct * gg * gi * (1 - gi);
                    sf[px] = dct * cpc[px] * gf * (1 - gf);
                    sg[px] = dct * gi * (1 - gg * gg);
                    so[px] = dhv[px] * tc * go * (1 - go);
                    dcc[px] = dct * gf;
                }
            }
            pad_SUF(up, xp, C, H, W);
            pad_SUF(hp, xp + C * PHW, C, H, W);
            pad_SUF(s, sp, C4, H, W);
            for (int o = 0; o < C4; ++o) {                 /* ∂bg, ∂wg += s ⋆ x_{t-1} */
                const REAL* so = s + (int64_t)o * HW;
                REAL sb = 0;
                for (int64_t px = 0; px < HW; ++px) sb += so[px];
                step[(int64_t)C4 * C2 * 9 + o] += sb;
                for (int k = 0; k < C2; ++k)
                    for (int dy = 0; dy < 3; ++dy) {
                        REAL q0 = 0, q1 = 0, q2 = 0;
                        for (int y = 0; y < H; ++y) {
                            const REAL* sr = so + (int64_t)y * W;
                            const REAL* xr = xp + k * PHW + (int64_t)(y + dy) * Wp;
                            for (int x = 0; x < W; ++x) { q0 += sr[x] * xr[x]; q1 += sr[x] * xr[x + 1]; q2 += sr[x] * xr[x + 2]; }
                        }
                        REAL* q = step + ((o * C2 + k) * 3 + dy) * 3;
                        q[0] += q0; q[1] += q1; q[2] += q2;
                    }
            }
            for (int k = 0; k < C2; ++k) {                 /* (∂u, ∂h) of step t-1 = Wᵀ ⊛ s */
                REAL* d = k < C ? du + (int64_t)k * HW : dh + (int64_t)(k - C) * HW;
                for (int y = 0; y < H; ++y) {
                    convT_rect_row_SUF(sp, wg, row, k, y, C4, C2, H, W);
                    memcpy(d + (int64_t)y * W, row, sizeof(REAL) * W);
                }
            }
            for (int64_t i = 0; i < np; ++i) dp[i] += step[i];
        }
    }
    free(xp);
    return 0;
}

#ifdef _OPENMP
/* Both on torch's OpenMP team, a contiguous range of images per thread; for the adjoint, thread t
   adds into dp + t·np (np doubles per thread, summed by the caller). */
void lstm_fwd_omp_SUF(int B, int nt, int* rc, int T, int C, int M, int H, int W,
                      const REAL* u0, const REAL* h0, const REAL* c0, const REAL* wg, const REAL* bg,
                      const REAL* w1, const REAL* b1w, const REAL* w2, const REAL* b2,
                      REAL* U, REAL* Hs, REAL* Cs, REAL* A) {
    #pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        rc[t] = lstm_fwd_SUF((int)((int64_t)B * t / n), (int)((int64_t)B * (t + 1) / n), T, C, M, H, W,
                             u0, h0, c0, wg, bg, w1, b1w, w2, b2, U, Hs, Cs, A);
    }
}

void lstm_bwd_omp_SUF(int B, int nt, int* rc, int T, int C, int M, int H, int W,
                      const REAL* u0, const REAL* h0, const REAL* c0, const REAL* wg,
                      const REAL* w1, const REAL* b1w, const REAL* w2,
                      const REAL* U, const REAL* Hs, const REAL* Cs, const REAL* A, const REAL* G,
                      REAL* du0, REAL* dh0, REAL* dc0, double* dp) {
    const int64_t np = (int64_t)16 * C * C * 9 / 2 + 4 * C + 2 * (int64_t)M * C + M + C;
    #pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        rc[t] = lstm_bwd_SUF((int)((int64_t)B * t / n), (int)((int64_t)B * (t + 1) / n), T, C, M, H, W,
                             u0, h0, c0, wg, w1, b1w, w2, U, Hs, Cs, A, G, du0, dh0, dc0, dp + t * np);
    }
}
#endif
"""


def _c_source() -> str:
    parts = [_C_PRELUDE]
    for real, suf, tanh, sigm in (("float", "f32", "wv_tanhf", "wv_sigmf"), ("double", "f64", "wv_tanh", "wv_sigm")):
        for template in (_C_TEMPLATE, _C_LSTM_TEMPLATE):
            parts.append(template.replace("REAL", real).replace("SUF", suf).replace("TANH", tanh).replace("SIGM", sigm))
    return "\n".join(parts)


CPU_KERNEL_SOURCE = _c_source()

_lib_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_lib_error: str | None = None


def _cache_dir() -> str:
    root = os.environ.get("WAVEVIZ_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "waveviz")
    return os.path.join(root, "kernels")


@functools.lru_cache(maxsize=1)
def _cpu_signature() -> str:
    """What a `-march=native` binary depends on: machine, CPU model and feature flags (read once)."""
    sig = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features")):
                    sig.append(line.strip())
                if len(sig) >= 4:
                    break
    except OSError:
        sig.append(platform.processor())
    return "\n".join(sig)


def _torch_openmp() -> bool:
    """Whether the kernel may join torch's OpenMP thread team: torch's ATen backend is OpenMP and the
    GNU runtime (libgomp.so.1, which a `-fopenmp` library links to by that name) is already loaded
    in this process, so the kernel binds to the very same runtime and threads. Off with
    `WAVEVIZ_CPU_OPENMP=0` (the kernel then runs its own Python thread pool)."""
    if os.environ.get("WAVEVIZ_CPU_OPENMP", "1") == "0" or "OpenMP" not in torch.__config__.parallel_info():
        return False
    try:
        with open("/proc/self/maps") as f:
            return any("libgomp.so.1" in line for line in f)
    except OSError:
        return False


def _compiler_id(cc: str) -> str:
    """The first line of `cc --version`, lower case ("" if it will not say)."""
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return (out.splitlines() or [""])[0].lower()


def _build(path: str, openmp: bool) -> None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
        src, out = os.path.join(tmp, "nwm_cpu.c"), os.path.join(tmp, "nwm_cpu.so")
        with open(src, "w") as f:
            f.write(CPU_KERNEL_SOURCE)
        base = [cc, "-O3", "-std=c99", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", src, "-o", out, "-lm"]
        errors = []
        # native first; plain if the compiler refuses it; OpenMP first when wanted, else without.
        # GNU's runtime by name (clang's plain -fopenmp would bring LLVM's libomp, a second pool)
        omp = "-fopenmp=libgomp" if "clang" in _compiler_id(cc) else "-fopenmp"
        variants = [["-march=native", omp], [omp]] if openmp else []
        for arch in variants + [["-march=native"], []]:
            r = subprocess.run(base[:1] + arch + base[1:], capture_output=True, text=True)
            if r.returncode == 0:
                os.replace(out, path)  # atomic: concurrent builders leave one good file
                return
            lines = r.stderr.strip().splitlines()
            errors.append(next((ln for ln in lines if "error" in ln), lines[-1] if lines else "?").strip())
        raise RuntimeError(f"{cc} failed: {errors[-1][:300]}")


def cpu_kernel() -> ctypes.CDLL | None:
    """The compiled CPU kernel, building it on first use; None when it cannot be built.

    Disabled by `WAVEVIZ_CPU_KERNEL=0`. The library is cached under `$WAVEVIZ_CACHE/kernels`
    (default `~/.cache/waveviz/kernels`), keyed by the source, the compiler and the CPU.
    """
    global _lib, _lib_error
    if os.environ.get("WAVEVIZ_CPU_KERNEL", "1") == "0":
        return None
    if _lib is not None or _lib_error is not None:
        return _lib
    with _lib_lock:
        if _lib is not None or _lib_error is not None:
            return _lib
        openmp = _torch_openmp()
        key = hashlib.sha256((CPU_KERNEL_SOURCE + _cpu_signature() + os.environ.get("CC", "") + f"omp={openmp}")
                             .encode()).hexdigest()[:16]
        path = os.path.join(_cache_dir(), f"nwm_cpu_{key}.so")
        try:
            if not os.path.exists(path):
                _build(path, openmp)
            lib = ctypes.CDLL(path)
        except (OSError, RuntimeError) as e:
            _lib_error = f"{type(e).__name__}: {e}"
            warnings.warn(f"waveviz: the CPU wave kernel is unavailable ({_lib_error}); using the torch-op fast path",
                          RuntimeWarning, stacklevel=2)
            return None
        P, I, L = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
        for suf, R in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
            fwd, bwd = getattr(lib, f"nwm_fwd_{suf}"), getattr(lib, f"nwm_bwd_{suf}")
            fwd.argtypes = [I, I, I, I, I, I, R, P, P, P, P, P, P, L, L, P, L, L]
            bwd.argtypes = [I, I, I, I, I, I, R, P, P, P, P, P, P, L, L, P, L, L, P, L, L, P, P, P, P, P]
            fwd.restype = bwd.restype = I
            if hasattr(lib, f"nwm_fwd_omp_{suf}"):
                fo, bo = getattr(lib, f"nwm_fwd_omp_{suf}"), getattr(lib, f"nwm_bwd_omp_{suf}")
                fo.argtypes, bo.argtypes = [I, I, P] + fwd.argtypes[2:], [I, I, P] + bwd.argtypes[2:]
                fo.restype = bo.restype = None
        lib.wv_tanh_f32.argtypes, lib.wv_tanh_f32.restype = [P, P, L], None
        lib.wv_sigm_f32.argtypes, lib.wv_sigm_f32.restype = [P, P, L], None
        for suf in ("f32", "f64"):
            fwd, bwd = getattr(lib, f"lstm_fwd_{suf}"), getattr(lib, f"lstm_bwd_{suf}")
            fwd.argtypes, fwd.restype = [I] * 7 + [P] * 13, I
            bwd.argtypes, bwd.restype = [I] * 7 + [P] * 16, I
            if hasattr(lib, f"lstm_fwd_omp_{suf}"):
                fo, bo = getattr(lib, f"lstm_fwd_omp_{suf}"), getattr(lib, f"lstm_bwd_omp_{suf}")
                fo.argtypes, bo.argtypes = [I, I, P] + fwd.argtypes[2:], [I, I, P] + bwd.argtypes[2:]
                fo.restype = bo.restype = None
        lib.mlp_narrow_bwd_f32.argtypes, lib.mlp_narrow_bwd_f32.restype = [L, L, I, I, P, P, P, P], I
        if hasattr(lib, "mlp_narrow_bwd_omp_f32"):
            lib.mlp_narrow_bwd_omp_f32.argtypes, lib.mlp_narrow_bwd_omp_f32.restype = [L, I, P, I, I, P, P, P, P], None
        _lib = lib
        return _lib


def cpu_tanh(x: torch.Tensor) -> torch.Tensor:
    """The C kernel's float32 tanh on a CPU tensor (for tests of its accuracy)."""
    lib = cpu_kernel()
    assert lib is not None, "the CPU kernel is unavailable"
    x = x.detach().to(torch.float32).contiguous()
    y = torch.empty_like(x)
    lib.wv_tanh_f32(x.data_ptr(), y.data_ptr(), x.numel())
    return y


def cpu_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """The C kernel's float32 logistic sigmoid on a CPU tensor (for tests of its accuracy)."""
    lib = cpu_kernel()
    assert lib is not None, "the CPU kernel is unavailable"
    x = x.detach().to(torch.float32).contiguous()
    y = torch.empty_like(x)
    lib.wv_sigm_f32(x.data_ptr(), y.data_ptr(), x.numel())
    return y


def cpu_kernel_status() -> str:
    """One line for benchmark reports: whether the C kernel is in use, or why not."""
    if os.environ.get("WAVEVIZ_CPU_KERNEL", "1") == "0":
        return "disabled (WAVEVIZ_CPU_KERNEL=0)"
    lib = cpu_kernel()
    if lib is None:
        return f"unavailable ({_lib_error})"
    return "compiled C kernel" + (" on torch's OpenMP threads" if hasattr(lib, "nwm_fwd_omp_f32") else "")


# ====================================================================== backends of the recurrence
#
# Each backend (C, Triton, torch ops) advances the state n steps, writing y_t and z_t into
# (B, n, C, H, W) views whose (C, H, W) blocks are contiguous, and walks n steps of the adjoint
# backwards. `z is None` means z = 0.

_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _forget_pool() -> None:
    """A forked child inherits the pool object but not its threads: start a new one there."""
    global _pool, _pool_size
    _pool, _pool_size = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _parallel(fn, B: int) -> list:
    """fn(b0, b1) over contiguous chunks of the batch, one per torch thread (ctypes releases the GIL)."""
    global _pool, _pool_size
    n = max(1, min(torch.get_num_threads(), B))
    bounds = [(B * i // n, B * (i + 1) // n) for i in range(n)]
    if n == 1:
        return [fn(0, B)]
    if _pool is None or _pool_size < n:
        _pool, _pool_size = ThreadPoolExecutor(max_workers=n, thread_name_prefix="waveviz"), n
    return list(_pool.map(lambda b: fn(*b), bounds))


def _check_rc(rcs) -> None:
    if any(rcs):
        raise MemoryError("the CPU wave kernel could not allocate its scratch memory")


class _CBackend:
    name = "c"

    def __init__(self, lib: ctypes.CDLL, dtype: torch.dtype):
        suf = {torch.float32: "f32", torch.float64: "f64"}[dtype]
        self.fwd, self.bwd = getattr(lib, f"nwm_fwd_{suf}"), getattr(lib, f"nwm_bwd_{suf}")
        # on torch's OpenMP team when built so: no second pool competing with torch's spinning threads
        self.fwd_omp, self.bwd_omp = getattr(lib, f"nwm_fwd_omp_{suf}", None), getattr(lib, f"nwm_bwd_omp_{suf}", None)

    @staticmethod
    def _omp(fn, B: int, *args) -> None:
        nt = max(1, torch.get_num_threads())
        rc = (ctypes.c_int * nt)()
        fn(B, nt, rc, *args)
        _check_rc(list(rc))

    @staticmethod
    def _p(t: torch.Tensor | None):
        if t is None:
            return None
        assert t.is_contiguous(), "per-image tensors must be contiguous (B, C, H, W)"
        return t.data_ptr()

    @staticmethod
    def _seq(t: torch.Tensor) -> tuple[int, int, int]:
        """A (B, n, C, H, W) view with contiguous (C, H, W) blocks → (pointer, image stride, step stride)."""
        B, n, C, H, W = t.shape
        assert t.stride()[2:] == (H * W, W, 1), f"(C, H, W) blocks must be contiguous, got strides {t.stride()}"
        return t.data_ptr(), t.stride(0), t.stride(1)

    def forward(self, y, z, om, al, w, dt, Yv, Zv):
        B, n, C, H, W = Yv.shape
        args = (n, C, H, W, dt, self._p(y), self._p(z), self._p(om), self._p(al), self._p(w),
                *self._seq(Yv), *self._seq(Zv))
        if self.fwd_omp is not None:
            return self._omp(self.fwd_omp, B, *args)
        _check_rc(_parallel(lambda b0, b1: self.fwd(b0, b1, *args), B))

    def adjoint(self, y, z, om, al, w, dt, Yv, Zv, Gv, ybar, zbar, dom, dal, dW):
        B, n, C, H, W = Yv.shape
        parts = torch.zeros(B, C * C * 9, dtype=torch.float64)  # ∂W per image range, summed below
        args = (n, C, H, W, dt, self._p(y), self._p(z), self._p(om), self._p(al), self._p(w),
                *self._seq(Yv), *self._seq(Zv), *self._seq(Gv),
                self._p(ybar), self._p(zbar), self._p(dom), self._p(dal))
        if self.bwd_omp is not None:
            self._omp(self.bwd_omp, B, *args, parts.data_ptr())
        else:
            _check_rc(_parallel(lambda b0, b1: self.bwd(b0, b1, *args, parts[b0].data_ptr()), B))
        dW += parts.sum(0).view(dW.shape)
        return ybar, zbar


def _circular(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 1, 1, 1), mode="circular")


class _TorchBackend:
    """The same algorithm in a handful of torch ops per step: any device, any floating dtype."""

    name = "torch"

    def forward(self, y, z, om, al, w, dt, Yv, Zv):
        for j in range(Yv.shape[1]):
            a = torch.tanh_(F.conv2d(_circular(y), w))
            a.addcmul_(om, y, value=-1)
            zn, yn = Zv[:, j], Yv[:, j]
            if z is None:  # z_0 = 0: z_1 = Δt · (tanh(a) − ω y), exactly as the reference computes it
                torch.mul(a, dt, out=zn)
            else:
                a.addcmul_(al, z, value=-1)
                torch.add(z, a, alpha=dt, out=zn)
            torch.add(y, zn, alpha=dt, out=yn)
            y, z = yn, zn

    def adjoint(self, y, z, om, al, w, dt, Yv, Zv, Gv, ybar, zbar, dom, dal, dW):
        B, n, C, H, W = Yv.shape
        S = torch.empty(B, n, C, H, W, dtype=Yv.dtype, device=Yv.device)
        wT = w.transpose(0, 1).flip(2, 3)  # Wᵀ ⊛ s as a plain convolution of the padded s
        for j in reversed(range(n)):
            yp, zp = (Yv[:, j - 1], Zv[:, j - 1]) if j else (y, z)
            yhat = ybar + Gv[:, j]
            zhat = torch.add(zbar, yhat, alpha=dt)
            u = zhat * dt
            th = torch.tanh_(F.conv2d(_circular(yp), w))
            s = torch.ops.aten.tanh_backward(u, th)  # u ⊙ (1 − th²)
            S[:, j] = s
            dom.addcmul_(u, yp, value=-1)
            if zp is not None:
                dal.addcmul_(u, zp, value=-1)
            zbar = zhat.addcmul_(u, al, value=-1)
            ybar = yhat.addcmul_(u, om, value=-1).add_(F.conv2d(_circular(s), wT))
        prev = torch.cat([y.unsqueeze(1), Yv[:, : n - 1]], dim=1).reshape(B * n, C, H, W)  # y_{t-1} per step
        dW += torch.nn.grad.conv2d_weight(_circular(prev), w.shape, S.reshape(B * n, C, H, W)).to(dW.dtype)
        return ybar, zbar


# ---------------------------------------------------------------------- Triton (CUDA)
#
# A program owns a block of pixels of one image across all C channels: a (CP, BP) tile, CP = C
# rounded up to a power of two. The 3×3 coupling accumulates outer products W[:, ci, dy, dx] ⊗
# y[ci, shifted pixels], so each input is loaded once per tap, not once per output channel.
# Small images (C·H·W ≤ PERSISTENT_MAX) run "persistent": one program per image walks every step
# of a segment with a barrier between steps, so the state stays in the SM's caches and a segment is
# one launch. Larger images launch one grid of (image, pixel block) programs per step. float32 only;
# the backward writes s_t for the segment and leaves ∂W to one cuDNN weight-gradient call.

_triton_kernels_cache: tuple | None = None


def _triton_kernels():
    """(forward kernel, adjoint kernel), compiled lazily; ImportError without triton."""
    global _triton_kernels_cache
    if _triton_kernels_cache is not None:
        return _triton_kernels_cache
    import triton
    import triton.language as tl

    # Triton resolves the helpers a kernel calls among the module's globals, so they are put there.
    @triton.jit
    def _tri_tanh(x):  # the C kernel's formula: odd polynomial near 0, 1 − 2/(e^{2|x|} + 1) elsewhere
        ax = tl.minimum(tl.abs(x), 44.0)
        xc = tl.where(x < 0, -ax, ax)
        s = xc * xc
        p = ((((-5.70498872745e-3 * s + 2.06390887954e-2) * s - 5.37397155531e-2) * s
              + 1.33314422036e-1) * s - 3.33332819422e-1) * s * xc + xc
        q = 1.0 - 2.0 / (tl.exp(2.0 * ax) + 1.0)
        r = tl.where(ax < 0.625, p, tl.where(x < 0, -q, q))
        return tl.where(x != x, x, r)

    @triton.jit
    def _tri_conv(src, Wr, rows, cm, pix, pm, C, H, W, TRANSPOSED: tl.constexpr, CP: tl.constexpr, BP: tl.constexpr):
        """(CP, BP) tile of W ⊛ src (rows = output channels) or, TRANSPOSED, of Wᵀ ⊛ src (rows =
        input channels of W), circular, at pixels `pix` of one image; src is (C, H, W).
        With 16 or more channels each tap is a (CP × CP)·(CP × BP) product on the tensor cores in
        3×TF32 (float32 accuracy); below that, outer products on the CUDA cores."""
        h, x = pix // W, pix % W
        acc = tl.zeros([CP, BP], dtype=tl.float32)
        # One branch is compiled (CP is a constexpr); no early return, which Triton cannot compile
        # when the code after it re-assigns a name with another shape.
        if CP >= 16:
            ks = tl.arange(0, CP)  # the summed channel
            km = ks < C
            for dy in tl.static_range(3):
                if TRANSPOSED:
                    hh = (h - dy + H + 1) % H
                else:
                    hh = (h + dy + H - 1) % H
                for dx in tl.static_range(3):
                    if TRANSPOSED:
                        xx = (x - dx + W + 1) % W
                        wt = tl.load(Wr + ((ks[None, :] * C + rows[:, None]) * 3 + dy) * 3 + dx,
                                     mask=cm[:, None] & km[None, :], other=0.0)
                    else:
                        xx = (x + dx + W - 1) % W
                        wt = tl.load(Wr + ((rows[:, None] * C + ks[None, :]) * 3 + dy) * 3 + dx,
                                     mask=cm[:, None] & km[None, :], other=0.0)
                    tile = tl.load(src + ks[:, None] * H * W + (hh * W + xx)[None, :], mask=km[:, None] & pm[None, :], other=0.0)
                    acc = tl.dot(wt, tile, acc, input_precision="tf32x3")
        else:
            for k in range(C):
                for dy in tl.static_range(3):
                    if TRANSPOSED:
                        hh = (h - dy + H + 1) % H
                    else:
                        hh = (h + dy + H - 1) % H
                    for dx in tl.static_range(3):
                        if TRANSPOSED:
                            xx = (x - dx + W + 1) % W
                            wv = tl.load(Wr + ((k * C + rows) * 3 + dy) * 3 + dx, mask=cm, other=0.0)
                        else:
                            xx = (x + dx + W - 1) % W
                            wv = tl.load(Wr + ((rows * C + k) * 3 + dy) * 3 + dx, mask=cm, other=0.0)
                        v = tl.load(src + k * H * W + hh * W + xx, mask=pm, other=0.0)
                        acc += wv[:, None] * v[None, :]
        return acc

    @triton.jit
    def fwd(Yin, Zin, OM, AL, Wr, Y, Z, dt, n, j0, tiles, ysb, ysj, zsb, zsj, C, H, W,
            CP: tl.constexpr, BP: tl.constexpr):
        """Steps j0 … j0+n-1 of the segment for image program_id(0), pixel blocks program_id(1)·tiles …"""
        b = tl.program_id(0).to(tl.int64)
        HW = H * W
        CHW = C * HW
        rows = tl.arange(0, CP)
        cm = rows < C
        for jj in range(n):
            j = j0 + jj
            if j == 0:
                yp = Yin + b * CHW
                zp = Zin + b * CHW
            else:
                yp = Y + b * ysb + (j - 1) * ysj
                zp = Z + b * zsb + (j - 1) * zsj
            for t in range(tiles):
                pix = (tl.program_id(1) * tiles + t) * BP + tl.arange(0, BP)
                pm = pix < HW
                o = rows[:, None] * HW + pix[None, :]
                m = cm[:, None] & pm[None, :]
                th = _tri_tanh(_tri_conv(yp, Wr, rows, cm, pix, pm, C, H, W, False, CP, BP))
                yv = tl.load(yp + o, mask=m, other=0.0)
                zv = tl.load(zp + o, mask=m, other=0.0)
                om = tl.load(OM + b * CHW + o, mask=m, other=0.0)
                al = tl.load(AL + b * CHW + o, mask=m, other=0.0)
                znew = zv + dt * ((th - om * yv) - al * zv)
                tl.store(Z + b * zsb + j * zsj + o, znew, mask=m)
                tl.store(Y + b * ysb + j * ysj + o, yv + dt * znew, mask=m)
            tl.debug_barrier()  # (persistent) step j is written before step j + 1 reads neighbours

    @triton.jit
    def bwd(Yin, Zin, OM, AL, Wr, Y, Z, G, S, YB, ZB, DOM, DAL, dt, n, jtop, tiles,
            ysb, ysj, zsb, zsj, gsb, gsj, ssb, ssj, C, H, W, PHASE: tl.constexpr, CP: tl.constexpr, BP: tl.constexpr):
        """Adjoint steps jtop, jtop-1, … (n of them). PHASE 0 does both halves of each step with
        barriers (persistent); 1 only the pointwise half (s_t, ∂ω, ∂α, z̄, ȳ); 2 only ȳ += Wᵀ ⊛ s_t."""
        b = tl.program_id(0).to(tl.int64)
        HW = H * W
        CHW = C * HW
        rows = tl.arange(0, CP)
        cm = rows < C
        for jj in range(n):
            j = jtop - jj
            if j == 0:
                yp = Yin + b * CHW
                zp = Zin + b * CHW
            else:
                yp = Y + b * ysb + (j - 1) * ysj
                zp = Z + b * zsb + (j - 1) * zsj
            sp = S + b * ssb + j * ssj
            if PHASE != 2:
                for t in range(tiles):
                    pix = (tl.program_id(1) * tiles + t) * BP + tl.arange(0, BP)
                    pm = pix < HW
                    o = rows[:, None] * HW + pix[None, :]
                    m = cm[:, None] & pm[None, :]
                    th = _tri_tanh(_tri_conv(yp, Wr, rows, cm, pix, pm, C, H, W, False, CP, BP))
                    i = b * CHW + o
                    yhat = tl.load(YB + i, mask=m, other=0.0) + tl.load(G + b * gsb + j * gsj + o, mask=m, other=0.0)
                    zhat = tl.load(ZB + i, mask=m, other=0.0) + dt * yhat
                    u = dt * zhat
                    tl.store(sp + o, u * (1.0 - th * th), mask=m)
                    yv = tl.load(yp + o, mask=m, other=0.0)
                    zv = tl.load(zp + o, mask=m, other=0.0)
                    tl.store(DOM + i, tl.load(DOM + i, mask=m, other=0.0) + -u * yv, mask=m)
                    tl.store(DAL + i, tl.load(DAL + i, mask=m, other=0.0) + -u * zv, mask=m)
                    tl.store(ZB + i, zhat + -u * tl.load(AL + i, mask=m, other=0.0), mask=m)
                    tl.store(YB + i, yhat + -u * tl.load(OM + i, mask=m, other=0.0), mask=m)
                tl.debug_barrier()  # (persistent) all of s_t is written before Wᵀ ⊛ s_t reads it
            if PHASE != 1:
                for t in range(tiles):
                    pix = (tl.program_id(1) * tiles + t) * BP + tl.arange(0, BP)
                    pm = pix < HW
                    i = b * CHW + rows[:, None] * HW + pix[None, :]
                    m = cm[:, None] & pm[None, :]
                    acc = _tri_conv(sp, Wr, rows, cm, pix, pm, C, H, W, True, CP, BP)
                    tl.store(YB + i, tl.load(YB + i, mask=m, other=0.0) + acc, mask=m)
                tl.debug_barrier()  # (persistent) ȳ is final before the previous step reads it

    globals().update(_tri_tanh=_tri_tanh, _tri_conv=_tri_conv)
    _triton_kernels_cache = (fwd, bwd)
    return _triton_kernels_cache


class _TritonBackend(_TorchBackend):
    name = "triton"
    PERSISTENT_MAX = 32 * 1024  # C·H·W of an image that one program carries through a whole segment
    TILE = 2048  # CP · BP elements per program tile

    def _plan(self, C: int, H: int, W: int) -> tuple[int, int, int, bool]:
        """(CP, BP, blocks per image, persistent)."""
        CP = 1 << max(0, (C - 1).bit_length())
        BP = max(16, min(self.TILE // CP, 1 << max(0, (H * W - 1).bit_length())))
        blocks = -(-H * W // BP)
        return CP, BP, blocks, C * H * W <= self.PERSISTENT_MAX

    @staticmethod
    def _seq(t: torch.Tensor) -> tuple:
        B, n, C, H, W = t.shape
        assert t.stride()[2:] == (H * W, W, 1), f"(C, H, W) blocks must be contiguous, got strides {t.stride()}"
        return t, t.stride(0), t.stride(1)

    def forward(self, y, z, om, al, w, dt, Yv, Zv):
        fwd, _ = _triton_kernels()
        B, n, C, H, W = Yv.shape
        z = torch.zeros_like(y) if z is None else z
        CP, BP, blocks, persistent = self._plan(C, H, W)
        args = (*self._seq(Yv), *self._seq(Zv))
        Y, ysb, ysj, Z, zsb, zsj = args
        with torch.cuda.device(y.device) if y.is_cuda else _nullcontext():
            if persistent:
                fwd[(B, 1)](y, z, om, al, w, Y, Z, dt, n, 0, blocks, ysb, ysj, zsb, zsj, C, H, W, CP=CP, BP=BP, num_warps=8)
            else:
                for j in range(n):
                    fwd[(B, blocks)](y, z, om, al, w, Y, Z, dt, 1, j, 1, ysb, ysj, zsb, zsj, C, H, W, CP=CP, BP=BP, num_warps=8)

    def adjoint(self, y, z, om, al, w, dt, Yv, Zv, Gv, ybar, zbar, dom, dal, dW):
        _, bwd = _triton_kernels()
        B, n, C, H, W = Yv.shape
        z = torch.zeros_like(y) if z is None else z
        S = torch.empty(B, n, C, H, W, dtype=Yv.dtype, device=Yv.device)
        CP, BP, blocks, persistent = self._plan(C, H, W)
        Y, ysb, ysj = self._seq(Yv)
        Z, zsb, zsj = self._seq(Zv)
        G, gsb, gsj = self._seq(Gv)
        common = (y, z, om, al, w, Y, Z, G, S, ybar, zbar, dom, dal, dt)
        strides = (ysb, ysj, zsb, zsj, gsb, gsj, S.stride(0), S.stride(1), C, H, W)
        with torch.cuda.device(y.device) if y.is_cuda else _nullcontext():
            if persistent:
                bwd[(B, 1)](*common, n, n - 1, blocks, *strides, PHASE=0, CP=CP, BP=BP, num_warps=8)
            else:
                for j in reversed(range(n)):
                    for phase in (1, 2):
                        bwd[(B, blocks)](*common, 1, j, 1, *strides, PHASE=phase, CP=CP, BP=BP, num_warps=8)
        prev = torch.cat([y.unsqueeze(1), Yv[:, : n - 1]], dim=1).reshape(B * n, C, H, W)  # y_{t-1} per step
        dW += torch.nn.grad.conv2d_weight(_circular(prev), w.shape, S.reshape(B * n, C, H, W)).to(dW.dtype)
        return ybar, zbar


class _exact_cuda:
    """TF32 off for cuDNN and matmul inside the block (the torch backend's convolutions)."""

    def __enter__(self):
        self.saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved
        return False


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_triton_checked: dict[str, bool] = {}


def triton_usable(device: torch.device) -> bool:
    """Whether the Triton backend imports, compiles and agrees with the torch backend on `device`
    (checked once per device on a small random problem; a failure warns and falls back)."""
    key = str(device)
    if key not in _triton_checked:
        ok, why = False, ""
        if os.environ.get("WAVEVIZ_TRITON", "1") == "0":
            why = "disabled (WAVEVIZ_TRITON=0)"
        else:
            try:
                _triton_kernels()
                g = torch.Generator().manual_seed(0)
                err = 0.0
                for C in (3, 16):  # both ways of computing the coupling
                    with torch.inference_mode(False):
                        ins = [torch.randn(2, C, 5, 7, generator=g).tanh(), torch.rand(2, C, 5, 7, generator=g),
                               torch.rand(2, C, 5, 7, generator=g) * 0.3, torch.randn(C, C, 3, 3, generator=g) * 0.3 / C]
                        ins = [t.to(device).requires_grad_() for t in ins]
                    outs = []
                    # whatever mode the first caller is in (no_grad, inference, autocast): check in plain fp32
                    with torch.inference_mode(False), torch.enable_grad(), \
                            torch.autocast(device.type, enabled=False), _exact_cuda():
                        for be in ("triton", "torch"):
                            f = _Wave.apply(*ins, None, 0.1, 6, 4, be)
                            outs.append([f.detach(), *torch.autograd.grad(f.square().sum(), ins)])
                    err = max(err, *(((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item() for a, b in zip(*outs)))
                ok, why = err < 1e-4, f"it disagrees with the torch backend (relative error {err:.1e})"
            except Exception as e:  # a compiler or driver problem: use the torch backend instead
                why = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        if not ok and why and not why.startswith("disabled"):
            warnings.warn(f"waveviz: the Triton wave kernel is not used on {device} ({why}); using torch ops",
                          RuntimeWarning, stacklevel=3)
        _triton_checked[key] = ok
    return _triton_checked[key]


def resolve_backend(name: str, like: torch.Tensor) -> str:
    """"auto" → the C kernel for float32/float64 CPU tensors when it can be built; the Triton
    kernel for float32 CUDA tensors when triton is installed and passes its check; else torch ops."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    cpu_ok = like.device.type == "cpu" and like.dtype in (torch.float32, torch.float64)
    if name == "auto":
        if cpu_ok and cpu_kernel() is not None:
            return "c"
        if like.device.type == "cuda" and like.dtype == torch.float32 and triton_usable(like.device):
            return "triton"
        return "torch"
    if name == "triton":
        if like.dtype != torch.float32:
            raise ValueError(f"the Triton backend needs float32 tensors, got {like.dtype}")
        _triton_kernels()  # ImportError without triton
        return name
    if name == "c":
        if not cpu_ok:
            raise ValueError(f"the C backend needs float32/float64 CPU tensors, got {like.dtype} on {like.device}")
        if cpu_kernel() is None:
            raise RuntimeError(f"the C backend is unavailable: {cpu_kernel_status()}")
    return name


def _backend(name: str, like: torch.Tensor):
    if name == "c":
        return _CBackend(cpu_kernel(), like.dtype)
    return _TritonBackend() if name == "triton" else _TorchBackend()


# ====================================================================== segment driver

# One (segment, B, C, H, W) buffer at most: on CPU under glibc's 32 MB mmap threshold, so that
# the buffers are recycled by malloc instead of being mapped and page-faulted afresh on every call;
# on GPUs the caching allocator recycles them anyway and only memory matters.
SEGMENT_BUFFER_BYTES = {"cpu": 24 * 2**20, "other": 512 * 2**20}
# On CPU never more segments than this, whatever the batch: each segment's backward reads all of
# ∂L/∂feat (B·C·H·W × K) twice, so more, shorter segments cost memory traffic (2 cores, B = 64:
# 12-step segments 1.71 s a fast-bf16 step, 34-step ones 1.46 s), and CPU memory is plentiful.
CPU_MAX_SEGMENTS = 3


def auto_segment(T: int, state_numel: int, itemsize: int, device_type: str = "cpu") -> int:
    """Steps per time segment: as many as fit `SEGMENT_BUFFER_BYTES` per buffer (y, z, ∂L/∂y over
    the segment), but never fewer than √(2T/3), which minimises checkpoints (2T/S states) plus
    scratch (3S states) when states are large, nor on CPU than T / CPU_MAX_SEGMENTS. T is split
    into equal segments."""
    cpu = device_type == "cpu"
    budget = SEGMENT_BUFFER_BYTES["cpu" if cpu else "other"]
    fit = budget // max(1, state_numel * itemsize)
    longest = max(fit, math.ceil(math.sqrt(2 * T / 3)), math.ceil(T / CPU_MAX_SEGMENTS) if cpu else 1, 1)
    n = math.ceil(T / longest)
    return math.ceil(T / n)


def _segments(T: int, seg: int) -> list[tuple[int, int]]:
    return [(t0, min(seg, T - t0)) for t0 in range(0, T, seg)]


def _scratch(seg: int, like: torch.Tensor) -> torch.Tensor:
    """(seg, B, C, H, W): step j of all images is contiguous; used as a (B, seg, C, H, W) view."""
    return torch.empty((seg, *like.shape), dtype=like.dtype, device=like.device)


def _run_forward(be, y0, om, al, w, dt, T, seg, *, Y=None, proj=None, keep=False):
    """T steps from (y0, z = 0). Writes y_t into Y (B, T, C, H, W) when given; else accumulates
    feat (B·C·H·W, K) = Σ_t y_t ⊗ proj[:, t] (time features last, so that the head's per-pixel
    rows are a cheap copy away). Returns feat and, when `keep`, the (y, z) state at the start of
    every segment (the first is (None, None): y0 itself, z = 0) and the scratch (Ys, Zs), which
    holds the last segment's states, so that the backward starts there without recomputing them —
    on CPU with the fused readout only ((None, None) otherwise: on GPUs the 2 × 512 MB would count
    against the memory the engine saves, and without the readout Ys is not even scratch)."""
    Zs = _scratch(seg, y0)
    Ys = _scratch(seg, y0) if Y is None else None
    feat = y0.new_empty(y0.numel(), proj.shape[0]) if proj is not None else None
    if y0.numel() == 0:  # an empty batch (e.g. a data-parallel rank without images)
        return feat, ([(None, None)] * len(_segments(T, seg)), (None, None)) if keep else None
    y, z, ckpts = y0, None, []
    segments = _segments(T, seg)
    for i, (t0, n) in enumerate(segments):
        if keep:
            ckpts.append((None, None) if t0 == 0 else (y, z))
        Yv = Y[:, t0:t0 + n] if Y is not None else Ys[:n].transpose(0, 1)
        Zv = Zs[:n].transpose(0, 1)
        be.forward(y, z, om, al, w, dt, Yv, Zv)
        if proj is not None:  # the first product writes feat (no zero fill), the others add to it
            torch.addmm(feat, Ys[:n].view(n, -1).t(), proj[:, t0:t0 + n].t(), beta=1 if i else 0, out=feat)
        if i < len(segments) - 1:
            y, z = Yv[:, n - 1].clone(), Zv[:, n - 1].clone()  # the scratch is reused by the next segment
    kept = (Ys, Zs) if proj is not None and y0.device.type == "cpu" else (None, None)
    return feat, (ckpts, kept) if keep else None


def _run_backward(be, y0, om, al, w, dt, T, seg, saved, *, gY=None, dfeat=None, proj=None):
    """The adjoint, one segment at a time from the last: recompute the segment's states from its
    checkpoint (not the last segment's when the forward kept its scratch), form its ∂L/∂y_t, walk
    it backwards. Returns ∂y0, ∂ω, ∂α, ∂W, ∂proj."""
    ckpts, (Ys, Zs) = saved
    kept = Zs is not None
    ybar, zbar = torch.zeros_like(y0), torch.zeros_like(y0)
    dom, dal = torch.zeros_like(om), torch.zeros_like(al)
    dW = torch.zeros(w.shape, dtype=torch.float64 if be.name == "c" else w.dtype, device=w.device)
    dproj = torch.zeros_like(proj) if proj is not None else None
    if y0.numel() == 0:
        return ybar, dom, dal, dW.to(w.dtype), dproj
    Ys = _scratch(seg, y0) if Ys is None else Ys
    Zs = _scratch(seg, y0) if Zs is None else Zs
    segments = _segments(T, seg)
    for i, ((t0, n), (yc, zc)) in reversed(list(enumerate(zip(segments, ckpts)))):
        yc = y0 if yc is None else yc
        Yv, Zv = Ys[:n].transpose(0, 1), Zs[:n].transpose(0, 1)
        if not (kept and i == len(segments) - 1):  # else: the states the forward left in its scratch
            be.forward(yc, zc, om, al, w, dt, Yv, Zv)
        if proj is not None:
            G = _mm_t(proj[:, t0:t0 + n].t().contiguous(), dfeat)  # (n, B·C·H·W): ∂L/∂y_t = Σ_k P[k, t] ∂L/∂feat_k
            Gv = G.view(n, *y0.shape).transpose(0, 1)
            dproj[:, t0:t0 + n] = torch.mm(dfeat.t(), Ys[:n].view(n, -1).t())
        else:
            Gv = gY[:, t0:t0 + n]
        ybar, zbar = be.adjoint(yc, zc, om, al, w, dt, Yv, Zv, Gv, ybar, zbar, dom, dal, dW)
    return ybar, dom, dal, dW.to(w.dtype), dproj


class _Wave(torch.autograd.Function):
    """(y0, ω, α, W[, P]) → Y (B, T, C, H, W), or with P (K, T) the fused feat (B·C·H·W, K)."""

    @staticmethod
    def forward(ctx, y0, omega, alpha, weight, proj, dt, T, seg, backend):
        be = _backend(backend, y0)
        y0, omega, alpha, weight = (t.contiguous() for t in (y0, omega, alpha, weight))
        Y = None if proj is not None else y0.new_empty(y0.shape[0], T, *y0.shape[1:])
        keep = any(ctx.needs_input_grad)
        feat, saved = _run_forward(be, y0, omega, alpha, weight, dt, T, seg, Y=Y, proj=proj, keep=keep)
        if keep:
            ctx.save_for_backward(y0, omega, alpha, weight, proj)
            ctx.saved, ctx.dt, ctx.T, ctx.seg, ctx.backend = saved, dt, T, seg, backend
        return Y if proj is None else feat

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        y0, omega, alpha, weight, proj = ctx.saved_tensors
        be = _backend(ctx.backend, y0)
        grad = grad.contiguous()
        kw = dict(gY=grad) if proj is None else dict(dfeat=grad.contiguous(), proj=proj)
        dy0, dom, dal, dW, dproj = _run_backward(be, y0, omega, alpha, weight, ctx.dt, ctx.T, ctx.seg, ctx.saved, **kw)
        ctx.saved = None
        return dy0, dom, dal, dW, dproj, None, None, None, None


def _prepare(y0, omega, alpha, weight, dt, T, backend, segment):
    assert y0.dim() == 4 and omega.shape == y0.shape and alpha.shape == y0.shape, \
        f"y0, omega, alpha must be (B, C, H, W) alike, got {tuple(y0.shape)}, {tuple(omega.shape)}, {tuple(alpha.shape)}"
    C = y0.shape[1]
    assert weight.shape == (C, C, 3, 3), f"weight must be ({C}, {C}, 3, 3), got {tuple(weight.shape)}"
    assert T >= 1 and dt > 0, f"need T ≥ 1 and dt > 0, got T={T}, dt={dt}"
    low = (torch.float16, torch.bfloat16)
    if y0.dtype in low or omega.dtype in low or alpha.dtype in low:  # autocast: the recurrence stays in float32
        y0, omega, alpha = y0.float(), omega.float(), alpha.float()
    weight = weight.to(y0.dtype)
    name = resolve_backend(backend, y0)
    seg = segment or auto_segment(T, y0.numel(), y0.element_size(), y0.device.type)
    return y0, omega, alpha, weight, name, max(1, min(int(seg), T))


def nwm_recurrence(y0: torch.Tensor, omega: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor, dt: float,
                   T: int, *, backend: str = "auto", segment: int | None = None) -> torch.Tensor:
    """Fast `nwm_recurrence_ref`: y0, ω, α (B, C, H, W), W (C, C, 3, 3) → Y (B, T, C, H, W), contiguous.

    Differentiable in all four inputs; the backward recomputes the states segment by segment.
    `backend`: auto | c | triton | torch (`resolve_backend`); `segment`: steps per checkpointed
    segment (default: `auto_segment`).
    """
    y0, omega, alpha, weight, name, seg = _prepare(y0, omega, alpha, weight, dt, T, backend, segment)
    with torch.autocast(y0.device.type, enabled=False):
        return _Wave.apply(y0, omega, alpha, weight, None, float(dt), int(T), seg, name)


def nwm_linear_features(y0: torch.Tensor, omega: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor, dt: float,
                        T: int, proj: torch.Tensor, *, backend: str = "auto", segment: int | None = None) -> torch.Tensor:
    """The recurrence fused with the linear time readout: → (B, K, C, H, W) with
    out[:, k] = Σ_t proj[k, t] · y_t, i.e. `LinearReadout.time_features(nwm_recurrence(...))`,
    without ever holding Y (B, T, C, H, W). proj: (K, T), the readout's `Linear(T → K)` weight.
    The result is a permuted view of a contiguous (B, C, H, W, K) tensor.
    """
    y0, omega, alpha, weight, name, seg = _prepare(y0, omega, alpha, weight, dt, T, backend, segment)
    assert proj.dim() == 2 and proj.shape[1] == T, f"proj must be (K, {T}), got {tuple(proj.shape)}"
    with torch.autocast(y0.device.type, enabled=False):
        feat = _Wave.apply(y0, omega, alpha, weight, proj.to(y0.dtype), float(dt), int(T), seg, name)
    K, (B, C, H, W) = proj.shape[0], y0.shape
    return feat.view(B, C, H, W, K).permute(0, 4, 1, 2, 3)  # (B, K, C, H, W)


def linear_time_features(Y: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """`LinearReadout.time_features` as one batched matrix product: Y (B, T, C, H, W), proj (K, T)
    → (B, K, C, H, W), a permuted view of a contiguous (B, C, H, W, K), with no copy of Y."""
    B, T, C, H, W = Y.shape
    f = torch.matmul(Y.reshape(B, T, C * H * W).transpose(1, 2), proj.t())  # (B, C·H·W, K)
    return f.view(B, C, H, W, proj.shape[0]).permute(0, 4, 1, 2, 3)


# ====================================================================== the per-pixel MLP head


_onednn_linear_ok: dict[torch.dtype, bool] = {}


# ====================================================================== the ConvLSTM recurrence (CPU)
#
# `lstm_fwd` runs all T steps of an image in one call (circular 3×3 gate convolution, gates, cell,
# the C → M → C input MLP), keeping u_t, h_t, c_t and the gate activations for the adjoint, which
# `lstm_bwd` walks back in two passes a step: pointwise (MLP, cell, gates → s), then the gate
# convolution's ∂W and its transpose. Images are split over threads.

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
        parts = max(1, min(torch.get_num_threads(), B))
        dp = torch.zeros(parts, npar, dtype=torch.float64)
        ptrs = [t.data_ptr() for t in (u0, h0, c0, wg, w1, b1, w2, U, Hs, Cs, A, gU, du0, dh0, dc0)]
        _lstm_call(cpu_kernel(), "bwd", suf, B, [T, C, M, H, W], ptrs, dp)
        grads = torch.split(dp.sum(0), [math.prod(sh) for sh in shapes])
        dparams = [g.view(sh).to(wg.dtype) for g, sh in zip(grads, shapes)]
        return du0, dh0, dc0, *dparams, None, None


def _lstm_call(lib, kind: str, suf: str, B: int, dims: list[int], ptrs: list, dp: torch.Tensor | None = None) -> None:
    """Run lstm_fwd / lstm_bwd (`kind`) over the batch: on torch's OpenMP team when built so, else
    the pool; the adjoint's parameter gradients go to row i of dp for the i-th range of images."""
    omp = getattr(lib, f"lstm_{kind}_omp_{suf}", None)
    extra = [] if dp is None else [dp]
    if omp is not None:
        nt = max(1, min(torch.get_num_threads(), B))
        rc = (ctypes.c_int * nt)()
        omp(B, nt, rc, *dims, *ptrs, *(d.data_ptr() for d in extra))
        _check_rc(list(rc))
        return
    fn = getattr(lib, f"lstm_{kind}_{suf}")
    n = max(1, min(torch.get_num_threads(), B))
    slot = {B * i // n: i for i in range(n)}  # _parallel's ranges, in its order
    _check_rc(_parallel(lambda b0, b1: fn(b0, b1, *dims, *ptrs, *(d[slot[b0]].data_ptr() for d in extra)), B))


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
                if i > 0 and (dw := _narrow_layer_backward(g, ws[i], inp)) is not None:
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


_ONEDNN_BWD = os.environ.get("WAVEVIZ_ONEDNN_BWD", "1") != "0"


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
    return (_ONEDNN_BWD and a.device.type == "cpu" and a.dtype in (torch.float32, torch.bfloat16)
            and torch.backends.mkldnn.is_available() and _onednn_linear_usable(a.dtype))


def _input_grad(g: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """g (P, N) · w (N, K) → (P, K), a layer's input gradient (`_mm_t`)."""
    return _mm_t(g, w.t(), out)


NARROW_MAX = 64  # outputs of a layer whose backward `_narrow_layer_backward` takes


def _narrow_layer_backward(g: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor | None:
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
    if hasattr(lib, "mlp_narrow_bwd_omp_f32"):
        nt = max(1, min(torch.get_num_threads(), P))
        dw = torch.zeros(nt, N, K, dtype=torch.float64)
        rc = (ctypes.c_int * nt)()
        lib.mlp_narrow_bwd_omp_f32(P, nt, rc, *args, dw.data_ptr())
        _check_rc(list(rc))
        return dw.sum(0)

    def rows(p0: int, p1: int):
        d = torch.zeros(N, K, dtype=torch.float64)
        return lib.mlp_narrow_bwd_f32(p0, p1, *args, d.data_ptr()), d

    parts = _parallel(rows, P)
    _check_rc([rc for rc, _ in parts])
    return sum(d for _, d in parts)


def _products(dtype: torch.dtype, device_type: str):
    """The context `_PixelMLP` computes its products in: bf16 ones emulated where the CPU lacks them."""
    if dtype == torch.bfloat16 and bf16_emulated(device_type):
        return _Bf16Products
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


def forward_head(readout: torch.nn.Module, mlp: torch.nn.Module, Y: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """Fast `SequenceSegmenter.forward_head`: Y (B, T, C, H, W) → logits (B, N, H, W)."""
    from .readouts import LinearReadout

    if isinstance(readout, LinearReadout):
        f = linear_time_features(Y, readout.proj.weight)
    else:
        f = readout.time_features(Y)  # (B, K', C, H, W)
    return fast_head(f, mlp, bf16=bf16)
