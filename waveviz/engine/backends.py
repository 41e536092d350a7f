"""The backends of the NWM recurrence: each advances the state n steps, writing y_t and z_t into
(B, n, C, H, W) views whose (C, H, W) blocks are contiguous, and walks n steps of the adjoint
backwards (`z is None` means z = 0). The C kernel on CPU (`clib`), Triton kernels on CUDA
(`triton_kernels`), and the same algorithm in torch ops anywhere; `resolve_backend` chooses.
"""
from __future__ import annotations

import contextlib
import ctypes
import warnings

import torch
import torch.nn.functional as F

from .. import settings
from .clib import cpu_kernel, cpu_kernel_status, over_batch

BACKENDS = ("auto", "c", "triton", "torch")


class CBackend:
    name = "c"

    def __init__(self, lib: ctypes.CDLL, dtype: torch.dtype):
        self.lib, self.suf = lib, {torch.float32: "f32", torch.float64: "f64"}[dtype]

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
        # with fewer images than threads, the OpenMP forward splits each image's rows over the team
        over_batch(self.lib, f"nwm_fwd_{self.suf}", B, args, share_items=True)

    def adjoint(self, y, z, om, al, w, dt, Yv, Zv, Gv, ybar, zbar, dom, dal, dW):
        B, n, C, H, W = Yv.shape
        parts = torch.zeros(B, C * C * 9, dtype=torch.float64)  # ∂W per image range, summed below
        args = (n, C, H, W, dt, self._p(y), self._p(z), self._p(om), self._p(al), self._p(w),
                *self._seq(Yv), *self._seq(Zv), *self._seq(Gv),
                self._p(ybar), self._p(zbar), self._p(dom), self._p(dal))
        over_batch(self.lib, f"nwm_bwd_{self.suf}", B, args, grads=parts, grad_rows="item")
        dW += parts.sum(0).view(dW.shape)
        return ybar, zbar


def _circular(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 1, 1, 1), mode="circular")


class TorchBackend:
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


def load_triton_kernels():
    """(forward kernel, adjoint kernel) from `triton_kernels`; ImportError without triton."""
    from . import triton_kernels

    return triton_kernels.nwm_fwd, triton_kernels.nwm_bwd


class TritonBackend(TorchBackend):
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
        fwd, _ = load_triton_kernels()
        B, n, C, H, W = Yv.shape
        z = torch.zeros_like(y) if z is None else z
        CP, BP, blocks, persistent = self._plan(C, H, W)
        args = (*self._seq(Yv), *self._seq(Zv))
        Y, ysb, ysj, Z, zsb, zsj = args
        with torch.cuda.device(y.device) if y.is_cuda else contextlib.nullcontext():
            if persistent:
                fwd[(B, 1)](y, z, om, al, w, Y, Z, dt, n, 0, blocks, ysb, ysj, zsb, zsj, C, H, W, CP=CP, BP=BP, num_warps=8)
            else:
                for j in range(n):
                    fwd[(B, blocks)](y, z, om, al, w, Y, Z, dt, 1, j, 1, ysb, ysj, zsb, zsj, C, H, W, CP=CP, BP=BP, num_warps=8)

    def adjoint(self, y, z, om, al, w, dt, Yv, Zv, Gv, ybar, zbar, dom, dal, dW):
        _, bwd = load_triton_kernels()
        B, n, C, H, W = Yv.shape
        z = torch.zeros_like(y) if z is None else z
        S = torch.empty(B, n, C, H, W, dtype=Yv.dtype, device=Yv.device)
        CP, BP, blocks, persistent = self._plan(C, H, W)
        Y, ysb, ysj = self._seq(Yv)
        Z, zsb, zsj = self._seq(Zv)
        G, gsb, gsj = self._seq(Gv)
        common = (y, z, om, al, w, Y, Z, G, S, ybar, zbar, dom, dal, dt)
        strides = (ysb, ysj, zsb, zsj, gsb, gsj, S.stride(0), S.stride(1), C, H, W)
        with torch.cuda.device(y.device) if y.is_cuda else contextlib.nullcontext():
            if persistent:
                bwd[(B, 1)](*common, n, n - 1, blocks, *strides, PHASE=0, CP=CP, BP=BP, num_warps=8)
            else:
                for j in reversed(range(n)):
                    for phase in (1, 2):
                        bwd[(B, blocks)](*common, 1, j, 1, *strides, PHASE=phase, CP=CP, BP=BP, num_warps=8)
        prev = torch.cat([y.unsqueeze(1), Yv[:, : n - 1]], dim=1).reshape(B * n, C, H, W)  # y_{t-1} per step
        dW += torch.nn.grad.conv2d_weight(_circular(prev), w.shape, S.reshape(B * n, C, H, W)).to(dW.dtype)
        return ybar, zbar


class tf32_off:
    """TF32 off for cuDNN and matmul inside the block (the torch backend's convolutions; a benchmark's
    reference, which cuDNN's default TF32 convolutions would make inexact)."""

    def __enter__(self):
        self.saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved
        return False


_triton_checked: dict[str, bool] = {}


def triton_usable(device: torch.device) -> bool:
    """Whether the Triton backend imports, compiles and agrees with the torch backend on `device`
    (checked once per device on a small random problem; a failure warns and falls back)."""
    key = str(device)
    if key not in _triton_checked:
        ok, why = False, ""
        if not settings.get().triton:
            why = "disabled (WAVEVIZ_TRITON=0)"
        else:
            try:
                from .recurrence import WaveFunction  # (which calls this module)

                load_triton_kernels()
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
                            torch.autocast(device.type, enabled=False), tf32_off():
                        for be in ("triton", "torch"):
                            f = WaveFunction.apply(*ins, None, 0.1, 6, 4, be)
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
        load_triton_kernels()  # ImportError without triton
        return name
    if name == "c":
        if not cpu_ok:
            raise ValueError(f"the C backend needs float32/float64 CPU tensors, got {like.dtype} on {like.device}")
        if cpu_kernel() is None:
            raise RuntimeError(f"the C backend is unavailable: {cpu_kernel_status()}")
    return name


# name → the backend for tensors like `like` (`resolve_backend` has checked that it can run them)
_MAKE_BACKEND = {
    "c": lambda like: CBackend(cpu_kernel(), like.dtype),
    "triton": lambda like: TritonBackend(),
    "torch": lambda like: TorchBackend(),
}
assert ("auto", *_MAKE_BACKEND) == BACKENDS


def _backend(name: str, like: torch.Tensor):
    return _MAKE_BACKEND[name](like)
