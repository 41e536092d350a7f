"""The CPU kernel: the C sources in `csrc/`, built at first use with the system C compiler into one
shared library, cached under `$WAVEVIZ_CACHE/kernels` (keyed by the sources, $CC, OpenMP and the
CPU), loaded through ctypes; and how its functions run over torch's threads.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .. import settings
from .cpu import cpu_signature

CSRC = Path(__file__).with_name("csrc")
MAIN_SOURCE = "waveviz_cpu.c"  # includes the other files in CSRC
BASE_FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd")


def kernel_sources(folder: Path = CSRC) -> dict[str, bytes]:
    """The C sources of the library: {file name: bytes}, in name order."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".c", ".h")}


def find_compiler() -> str | None:
    """$CC, else the first of cc, gcc, clang on PATH."""
    return settings.get().cc or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _compiler_id(cc: str) -> str:
    """The first line of `cc --version`, lower case ("" if it will not say)."""
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return (out.splitlines() or [""])[0].lower()


def _build(cc: str | None, sources: Path, out: Path, openmp: bool) -> list[str]:
    """Compile sources/MAIN_SOURCE into the library `out` (replaced atomically) → the flags used."""
    if not cc:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        lib = os.path.join(tmp, out.name)
        base = [cc, *BASE_FLAGS, str(sources / MAIN_SOURCE), "-o", lib, "-lm"]
        errors = []
        # native first; plain if the compiler refuses it; OpenMP first when wanted, else without.
        # GNU's runtime by name (clang's plain -fopenmp would bring LLVM's libomp, a second pool)
        omp = "-fopenmp=libgomp" if "clang" in _compiler_id(cc) else "-fopenmp"
        variants = [["-march=native", omp], [omp]] if openmp else []
        for arch in variants + [["-march=native"], []]:
            r = subprocess.run(base[:1] + arch + base[1:], capture_output=True, text=True)
            if r.returncode == 0:
                os.replace(lib, out)  # atomic: concurrent builders leave one good file
                return [*arch, *BASE_FLAGS]
            lines = r.stderr.strip().splitlines()
            errors.append(next((ln for ln in lines if "error" in ln), lines[-1] if lines else "?").strip())
        raise RuntimeError(f"{cc} failed: {errors[-1][:300]}")


def _cache_dir() -> Path:
    return settings.get().cache / "kernels"


def load_library(openmp: bool) -> ctypes.CDLL:
    """The library, from the cache (built there first when missing). Raises OSError or RuntimeError."""
    cc = find_compiler()
    source = b"".join(kernel_sources().values()).decode()
    key = hashlib.sha256((source + cpu_signature() + (settings.get().cc or "") + f"omp={openmp}")
                         .encode()).hexdigest()[:16]
    path = _cache_dir() / f"nwm_cpu_{key}.so"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _build(cc, CSRC, path, openmp)
    return ctypes.CDLL(str(path))


def torch_openmp() -> bool:
    """Whether the kernel may join torch's OpenMP thread team: torch's ATen backend is OpenMP and the
    GNU runtime (libgomp.so.1, which a `-fopenmp` library links to by that name) is already loaded
    in this process, so the kernel binds to the very same runtime and threads. Off with
    `WAVEVIZ_CPU_OPENMP=0` (the kernel then runs its own Python thread pool)."""
    if not settings.get().cpu_openmp or "OpenMP" not in torch.__config__.parallel_info():
        return False
    try:
        with open("/proc/self/maps") as f:
            return any("libgomp.so.1" in line for line in f)
    except OSError:
        return False


def _declare(lib: ctypes.CDLL) -> None:
    """The C functions' signatures (csrc/nwm.h, convlstm.h, waveviz_cpu.c), for ctypes."""
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


_lib_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_lib_error: str | None = None


def cpu_kernel() -> ctypes.CDLL | None:
    """The compiled CPU kernel, building it on first use; None when it cannot be built.

    Disabled by `WAVEVIZ_CPU_KERNEL=0`. The library is cached under `$WAVEVIZ_CACHE/kernels`
    (default `~/.cache/waveviz/kernels`), keyed by the sources, the compiler and the CPU.
    """
    global _lib, _lib_error
    if not settings.get().cpu_kernel:
        return None
    if _lib is not None or _lib_error is not None:
        return _lib
    with _lib_lock:
        if _lib is not None or _lib_error is not None:
            return _lib
        try:
            lib = load_library(torch_openmp())
        except (OSError, RuntimeError) as e:
            _lib_error = f"{type(e).__name__}: {e}"
            warnings.warn(f"waveviz: the CPU wave kernel is unavailable ({_lib_error}); using the torch-op fast path",
                          RuntimeWarning, stacklevel=2)
            return None
        _declare(lib)
        _lib = lib
        return _lib


def _pointwise(fn: str, x: torch.Tensor) -> torch.Tensor:
    lib = cpu_kernel()
    assert lib is not None, "the CPU kernel is unavailable"
    x = x.detach().to(torch.float32).contiguous()
    y = torch.empty_like(x)
    getattr(lib, fn)(x.data_ptr(), y.data_ptr(), x.numel())
    return y


def cpu_tanh(x: torch.Tensor) -> torch.Tensor:
    """The C kernel's float32 tanh on a CPU tensor (for tests of its accuracy)."""
    return _pointwise("wv_tanh_f32", x)


def cpu_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """The C kernel's float32 logistic sigmoid on a CPU tensor (for tests of its accuracy)."""
    return _pointwise("wv_sigm_f32", x)


def cpu_kernel_status() -> str:
    """One line for benchmark reports: whether the C kernel is in use, or why not."""
    if not settings.get().cpu_kernel:
        return "disabled (WAVEVIZ_CPU_KERNEL=0)"
    lib = cpu_kernel()
    if lib is None:
        return f"unavailable ({_lib_error})"
    return "compiled C kernel" + (" on torch's OpenMP threads" if hasattr(lib, "nwm_fwd_omp_f32") else "")


# ---------------------------------------------------------------------- calling it over threads
#
# Built with OpenMP, the kernel's `*_omp_*` functions split the batch over torch's own OpenMP team;
# without, `_parallel` calls the plain ones on contiguous ranges of the batch from a thread pool.

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
