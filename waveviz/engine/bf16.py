"""bfloat16 on CPU: whether this CPU has it natively, and, where not, autocast's bf16 matrix products
and convolutions emulated in float32 (`bf16_autocast`, `bf16_products`) — the same numbers at about
float32 speed instead of torch's 5–40× slower bf16 kernels there."""
from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from .. import settings
from .cpu import cpu_flags


def cpu_bf16_native() -> bool | None:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX), which is where
    fast-bf16 pays on CPU (elsewhere oneDNN emulates it, slower than float32); None where unknown."""
    flags = cpu_flags()
    return None if flags is None else bool({"avx512_bf16", "amx_bf16"} & flags)


def bf16_emulated(device_type: str = "cpu") -> bool:
    """Whether bfloat16 products on `device_type` are emulated (`bf16_products`): on a CPU without
    native bf16 (`cpu_bf16_native` False or unknown), where torch's own bf16 matrix products and
    convolutions are 5–40× slower than float32 (seen on a Zen 3 with AVX2: a 65536×256×256 product
    1.1 GFLOP/s in bf16, 48 in float32). `WAVEVIZ_BF16=native` or `=emulate` decides instead."""
    if device_type != "cpu":
        return False
    forced = settings.get().bf16
    if forced in ("native", "emulate"):
        return forced == "emulate"
    return not cpu_bf16_native()


class Bf16Products(TorchDispatchMode):
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
    return Bf16Products() if bf16_emulated(device_type) else contextlib.nullcontext()


def bf16_autocast(device_type: str, enabled: bool = True) -> contextlib.ExitStack:
    """`torch.autocast(device_type, bfloat16)`, with its products emulated on a CPU without native
    bf16 (`bf16_products`): the same numbers as there, at about float32 speed instead of 5–40× slower
    (the app's one-image Multi-MNIST run under autocast, Zen 3: 9.8 s → 0.64 s). Off: no-op."""
    stack = contextlib.ExitStack()
    if enabled:
        stack.enter_context(torch.autocast(device_type, dtype=torch.bfloat16))
        stack.enter_context(bf16_products(device_type))
    return stack
