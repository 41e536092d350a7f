"""The NWM recurrence as one autograd Function (`WaveFunction`) over a backend, with time-segment
checkpointing and the linear time readout fused in: `nwm_recurrence`, `nwm_linear_features`, and
`nwm_point_features` (the readout at sampled pixels only, for point-sampled training).
(The adjoint's equations: the package docstring.)
"""
from __future__ import annotations

import math

import torch

from .backends import _backend, resolve_backend
from .head import _mm_t

# One (segment, B, C, H, W) buffer at most: on CPU under glibc's 32 MB mmap threshold, so that
# the buffers are recycled by malloc instead of being mapped and page-faulted afresh on every call;
# on GPUs the caching allocator recycles them anyway and only memory matters.
SEGMENT_BUFFER_BYTES = {"cpu": 24 * 2**20, "other": 512 * 2**20}
# On CPU never more segments than this, whatever the batch: each segment's backward reads all of
# ∂L/∂feat (B·C·H·W × K) twice, so more, shorter segments cost memory traffic (2 cores, B = 64:
# 12-step segments 1.71 s a fast-bf16 step, 34-step ones 1.46 s), and CPU memory is plentiful.
CPU_MAX_SEGMENTS = 3
# On CPU with the fused readout, the forward keeps every segment's states for the backward (instead
# of recomputing all but the last segment's there) while they take at most this much memory:
# B = 16 Tetrominoes, 105 MB, saves ≈ 2/3 of a forward pass per training step.
CPU_KEEP_STATES_BYTES = 1 * 2**30


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


# Zeroed (seg, B·C·H·W) buffers for ∂L/∂y under point sampling, kept between backward passes (a
# backward zeroes what it wrote before it returns one): a fresh one is a page-faulting zero fill of
# up to 24 MB on every step (≈ 25 ms of a 0.5-s step on one core). Taken out while in use, so two
# threads never share one; one that an exception left dirty is never put back.
_ZERO_BUFFERS: dict[tuple, torch.Tensor] = {}


def _zero_buffer(shape: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    buf = _ZERO_BUFFERS.pop((shape, like.dtype, like.device), None)
    return like.new_zeros(shape) if buf is None else buf


def _give_back(buf: torch.Tensor) -> None:
    if buf.device.type == "cpu" and buf.numel() * buf.element_size() <= SEGMENT_BUFFER_BYTES["cpu"]:
        _ZERO_BUFFERS[(tuple(buf.shape), buf.dtype, buf.device)] = buf


def _segments(T: int, seg: int) -> list[tuple[int, int]]:
    return [(t0, min(seg, T - t0)) for t0 in range(0, T, seg)]


def _scratch(seg: int, like: torch.Tensor) -> torch.Tensor:
    """(seg, B, C, H, W): step j of all images is contiguous; used as a (B, seg, C, H, W) view."""
    return torch.empty((seg, *like.shape), dtype=like.dtype, device=like.device)


def _run_forward(be, y0, om, al, w, dt, T, seg, *, Y=None, proj=None, rows=None, keep=False):
    """T steps from (y0, z = 0). Writes y_t into Y (B, T, C, H, W) when given; else accumulates
    feat (B·C·H·W, K) = Σ_t y_t ⊗ proj[:, t] (time features last, so that the head's per-pixel
    rows are a cheap copy away), or with `rows` (R,), flat indices into B·C·H·W, only those rows
    of it: feat (R, K) (point-sampled training: the readout's products shrink with the points).

    Returns feat and, when `keep`, the (y, z) state at the start of every segment (the first is
    (None, None): y0 itself, z = 0) and, per segment, the scratch (Ys, Zs) that holds its states
    when the forward kept them, so that the backward walks them without recomputing: on CPU with
    the fused readout, every segment's while they take at most `CPU_KEEP_STATES_BYTES`, else the
    last one's; (None, None) elsewhere (on GPUs the 2 × 512 MB would count against the memory the
    engine saves, and without the readout Ys is not even scratch)."""
    segments = _segments(T, seg)
    cpu_fused = keep and proj is not None and y0.device.type == "cpu"
    keep_all = cpu_fused and 2 * T * y0.numel() * y0.element_size() <= CPU_KEEP_STATES_BYTES
    Zs = _scratch(seg, y0)
    Ys = _scratch(seg, y0) if Y is None else None
    feat = y0.new_empty(y0.numel() if rows is None else rows.numel(), proj.shape[0]) if proj is not None else None
    kept = [(None, None)] * len(segments)
    if y0.numel() == 0:  # an empty batch (e.g. a data-parallel rank without images)
        return feat, ([(None, None)] * len(segments), kept) if keep else None
    y, z, ckpts = y0, None, []
    for i, (t0, n) in enumerate(segments):
        if keep:
            ckpts.append((None, None) if t0 == 0 else (y, z))
        if keep_all and i > 0:  # each segment its own scratch, kept for the backward
            Ys, Zs = _scratch(seg, y0), _scratch(seg, y0)
        Yv = Y[:, t0:t0 + n] if Y is not None else Ys[:n].transpose(0, 1)
        Zv = Zs[:n].transpose(0, 1)
        be.forward(y, z, om, al, w, dt, Yv, Zv)
        if proj is not None:  # the first product writes feat (no zero fill), the others add to it
            Ysel = Ys[:n].view(n, -1) if rows is None else Ys[:n].view(n, -1).index_select(1, rows)  # (n, R)
            torch.addmm(feat, Ysel.t(), proj[:, t0:t0 + n].t(), beta=1 if i else 0, out=feat)
        if keep_all or (cpu_fused and i == len(segments) - 1):
            kept[i] = (Ys, Zs)
        if i < len(segments) - 1:
            y, z = Yv[:, n - 1], Zv[:, n - 1]
            if not keep_all:  # the scratch is reused by the next segment
                y, z = y.clone(), z.clone()
    return feat, (ckpts, kept) if keep else None


def _run_backward(be, y0, om, al, w, dt, T, seg, saved, *, gY=None, dfeat=None, proj=None, rows=None):
    """The adjoint, one segment at a time from the last: recompute the segment's states from its
    checkpoint (unless the forward kept them), form its ∂L/∂y_t, walk it backwards. Returns ∂y0, ∂ω, ∂α, ∂W, ∂proj. With `rows`, ∂L/∂y_t is zero off those rows:
    one zeroed (seg, B·C·H·W) buffer takes each segment's values at the rows and is zeroed there
    again after it."""
    ckpts, kept = saved
    ybar, zbar = torch.zeros_like(y0), torch.zeros_like(y0)
    dom, dal = torch.zeros_like(om), torch.zeros_like(al)
    dW = torch.zeros(w.shape, dtype=torch.float64 if be.name == "c" else w.dtype, device=w.device)
    dproj = torch.zeros_like(proj) if proj is not None else None
    if y0.numel() == 0:
        return ybar, dom, dal, dW.to(w.dtype), dproj
    segments = _segments(T, seg)
    Ys = Zs = None  # scratch for the segments the forward did not keep, made when first needed
    Gbuf = _zero_buffer((seg, y0.numel()), y0) if rows is not None else None
    for i, ((t0, n), (yc, zc)) in reversed(list(enumerate(zip(segments, ckpts)))):
        yc = y0 if yc is None else yc
        if kept[i][0] is not None:  # the states the forward left in its scratch
            Yi, Zi = kept[i]
        else:
            if Ys is None:
                Ys, Zs = _scratch(seg, y0), _scratch(seg, y0)
            Yi, Zi = Ys, Zs
        Yv, Zv = Yi[:n].transpose(0, 1), Zi[:n].transpose(0, 1)
        if kept[i][0] is None:
            be.forward(yc, zc, om, al, w, dt, Yv, Zv)
        if proj is not None and rows is not None:
            G = Gbuf[:n]
            G.index_add_(1, rows, torch.mm(proj[:, t0:t0 + n].t(), dfeat.t()))  # (n, R) at the rows (repeats add up)
            Gv = G.view(n, *y0.shape).transpose(0, 1)
            dproj[:, t0:t0 + n] = torch.mm(dfeat.t(), Yi[:n].view(n, -1).index_select(1, rows).t())
        elif proj is not None:
            G = _mm_t(proj[:, t0:t0 + n].t().contiguous(), dfeat)  # (n, B·C·H·W): ∂L/∂y_t = Σ_k P[k, t] ∂L/∂feat_k
            Gv = G.view(n, *y0.shape).transpose(0, 1)
            dproj[:, t0:t0 + n] = torch.mm(dfeat.t(), Yi[:n].view(n, -1).t())
        else:
            Gv = gY[:, t0:t0 + n]
        ybar, zbar = be.adjoint(yc, zc, om, al, w, dt, Yv, Zv, Gv, ybar, zbar, dom, dal, dW)
        kept[i] = (None, None)  # its memory can go
        if Gbuf is not None:
            G.index_fill_(1, rows, 0.0)  # zero again where this segment wrote (the adjoint only reads G)
    if Gbuf is not None:
        _give_back(Gbuf)
    return ybar, dom, dal, dW.to(w.dtype), dproj


class WaveFunction(torch.autograd.Function):
    """(y0, ω, α, W[, P[, rows]]) → Y (B, T, C, H, W), or with P (K, T) the fused feat (B·C·H·W, K),
    or with rows (R,) (flat indices into B·C·H·W) only those rows of it, (R, K)."""

    @staticmethod
    def forward(ctx, y0, omega, alpha, weight, proj, dt, T, seg, backend, rows=None):
        be = _backend(backend, y0)
        y0, omega, alpha, weight = (t.contiguous() for t in (y0, omega, alpha, weight))
        Y = None if proj is not None else y0.new_empty(y0.shape[0], T, *y0.shape[1:])
        keep = any(ctx.needs_input_grad)
        feat, saved = _run_forward(be, y0, omega, alpha, weight, dt, T, seg, Y=Y, proj=proj, rows=rows, keep=keep)
        if keep:
            ctx.save_for_backward(y0, omega, alpha, weight, proj, rows)
            ctx.saved, ctx.dt, ctx.T, ctx.seg, ctx.backend = saved, dt, T, seg, backend
        return Y if proj is None else feat

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        y0, omega, alpha, weight, proj, rows = ctx.saved_tensors
        be = _backend(ctx.backend, y0)
        grad = grad.contiguous()
        kw = dict(gY=grad) if proj is None else dict(dfeat=grad.contiguous(), proj=proj, rows=rows)
        dy0, dom, dal, dW, dproj = _run_backward(be, y0, omega, alpha, weight, ctx.dt, ctx.T, ctx.seg, ctx.saved, **kw)
        ctx.saved = None
        return dy0, dom, dal, dW, dproj, None, None, None, None, None


def _prepare(y0, omega, alpha, weight, dt, T, backend, segment):
    assert y0.dim() == 4 and omega.shape == y0.shape and alpha.shape == y0.shape, \
        f"y0, omega, alpha must be (B, C, H, W) alike, got {tuple(y0.shape)}, {tuple(omega.shape)}, {tuple(alpha.shape)}"
    C = y0.shape[1]
    assert weight.shape == (C, C, 3, 3), f"weight must be ({C}, {C}, 3, 3), got {tuple(weight.shape)}"
    assert T >= 1 and dt > 0, f"need T ≥ 1 and dt > 0, got T={T}, dt={dt}"
    low = (torch.float16, torch.bfloat16)
    if y0.dtype in low or omega.dtype in low or alpha.dtype in low:  # autocast: the recurrence stays in float32
        y0, omega, alpha = y0.float(), omega.float(), alpha.float()
    assert omega.dtype == alpha.dtype == y0.dtype, \
        f"y0, omega, alpha must share a dtype, got {y0.dtype}, {omega.dtype}, {alpha.dtype}"  # (the kernels read raw buffers)
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
        return WaveFunction.apply(y0, omega, alpha, weight, None, float(dt), int(T), seg, name)


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
        feat = WaveFunction.apply(y0, omega, alpha, weight, proj.to(y0.dtype), float(dt), int(T), seg, name)
    K, (B, C, H, W) = proj.shape[0], y0.shape
    return feat.view(B, C, H, W, K).permute(0, 4, 1, 2, 3)  # (B, K, C, H, W)



def nwm_point_features(y0: torch.Tensor, omega: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor, dt: float,
                       T: int, proj: torch.Tensor, idx: torch.Tensor, *, backend: str = "auto",
                       segment: int | None = None) -> torch.Tensor:
    """`nwm_linear_features` at flat pixel indices idx (B, P) only (point-sampled training): →
    (B, K, C, P, 1), what `gather_points(nwm_linear_features(...), idx)` gives, a permuted view of
    a contiguous (B, P, C, K). The recurrence runs on every pixel; the readout's products (forward
    and backward) and its gradient's scatter touch the B·P·C sampled rows alone.
    """
    y0, omega, alpha, weight, name, seg = _prepare(y0, omega, alpha, weight, dt, T, backend, segment)
    assert proj.dim() == 2 and proj.shape[1] == T, f"proj must be (K, {T}), got {tuple(proj.shape)}"
    B, C, H, W = y0.shape
    assert idx.dim() == 2 and idx.shape[0] == B, f"idx must be ({B}, P), got {tuple(idx.shape)}"
    P, K = idx.shape[1], proj.shape[0]
    base = (torch.arange(B, device=idx.device).view(B, 1, 1) * C + torch.arange(C, device=idx.device).view(1, 1, C)) * (H * W)
    rows = (base + idx.view(B, P, 1)).reshape(-1)  # (B·P·C,): row (b, p, c) = (b·C + c)·H·W + idx[b, p]
    with torch.autocast(y0.device.type, enabled=False):
        feat = WaveFunction.apply(y0, omega, alpha, weight, proj.to(y0.dtype), float(dt), int(T), seg, name, rows)
    return feat.view(B, P, C, K).permute(0, 3, 2, 1).unsqueeze(-1)  # (B, K, C, P, 1)
