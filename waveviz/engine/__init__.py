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
  Under point-sampled training (`nwm_point_features`) both products run on the sampled pixels' rows
  alone, and the features come out in the head's row layout (no gather, no scatter of a dense copy).
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

and ∂y_0 = ȳ after the first step. `tests/engine/test_engine.py` checks every fast path against the
reference in float64 (to 1e-9) and float32 (to 1e-5) over a grid of shapes.

Where things are
----------------
- `selection`: `ENGINES`, `default_engine`, the `EngineSelectable` model mixin.
- `bf16`: whether this CPU has bfloat16, and its products emulated where not; `cpu`: /proc/cpuinfo
  (`cpu_model`).
- `allocator`: glibc's malloc told to keep freed memory (`retain_freed_memory`).
- `csrc/`: the C kernels (`waveviz_cpu.c` and the files it includes); `clib`: their build, cache
  and loader, and the thread pool that calls them.
- `backends`: C, Triton and torch-op backends of the recurrence, `resolve_backend`;
  `triton_kernels`: the Triton kernels (imported only where triton is installed).
- `recurrence`: the NWM autograd function and its segment driver; `convlstm`: the ConvLSTM's;
  `head`: the per-pixel MLP head.
- Switches (`WAVEVIZ_CPU_KERNEL`, `WAVEVIZ_CACHE`, …): `waveviz.settings`.
"""
from __future__ import annotations

# The engine's interface; the parts below it (the autograd Function, the backends, the bf16 mode,
# the narrow-layer backward) are public too, for its tests and for whoever extends it.
from .allocator import retain_freed_memory
from .backends import BACKENDS, TritonBackend, load_triton_kernels, resolve_backend, tf32_off, triton_usable
from .bf16 import Bf16Products, bf16_autocast, bf16_emulated, bf16_products, cpu_bf16_native
from .clib import cpu_kernel, cpu_kernel_status, cpu_sigmoid, cpu_tanh, torch_openmp
from .convlstm import convlstm_sequence, convlstm_usable
from .cpu import cpu_model, usable_cores
from .head import NARROW_MAX, fast_head, linear_time_features, narrow_layer_backward, pixel_mlp
from .recurrence import (CPU_KEEP_STATES_BYTES, CPU_MAX_SEGMENTS, SEGMENT_BUFFER_BYTES, WaveFunction, auto_segment, nwm_linear_features,
                         nwm_point_features, nwm_recurrence)
from .selection import ENGINES, EngineSelectable, check_engine, default_engine

__all__ = [
    "BACKENDS", "CPU_KEEP_STATES_BYTES", "CPU_MAX_SEGMENTS", "ENGINES", "NARROW_MAX", "SEGMENT_BUFFER_BYTES", "Bf16Products", "EngineSelectable",
    "TritonBackend", "WaveFunction", "load_triton_kernels", "narrow_layer_backward", "torch_openmp",
    "auto_segment", "bf16_autocast", "bf16_emulated", "bf16_products", "check_engine", "convlstm_sequence",
    "convlstm_usable", "cpu_bf16_native", "cpu_kernel", "cpu_kernel_status", "cpu_sigmoid", "cpu_tanh",
    "default_engine", "fast_head", "linear_time_features", "nwm_linear_features", "nwm_point_features",
    "nwm_recurrence", "pixel_mlp", "resolve_backend", "retain_freed_memory", "tf32_off", "triton_usable", "cpu_model", "usable_cores",
]
