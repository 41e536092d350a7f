"""glibc's malloc tuned to keep freed memory for reuse (CPU training speed), once per process."""
from __future__ import annotations

import ctypes
import os
import platform

from .. import settings

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
        user = sorted(k for k in os.environ if k.startswith("MALLOC_"))  # glibc's own tuning: left alone
        if user:
            _allocator = f"glibc, as set by {', '.join(user)}"
        elif settings.get().malloc and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(None)
                M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
                if libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1:
                    _allocator = "glibc, freed memory kept for reuse (M_MMAP_MAX 0, M_TRIM_THRESHOLD 2 GB)"
            except (OSError, AttributeError):
                pass
    return _allocator
