"""The CPU kernel: the C sources in `csrc/`, built at first use with the system C compiler into one
shared library, cached, checked, loaded through ctypes; and how its functions run over torch's threads.

The cache folder (`$WAVEVIZ_CACHE/kernels`, default `~/.cache/waveviz/kernels`) holds
`nwm_cpu_<key>.so` and its record `nwm_cpu_<key>.json`. The key is a hash of the sources, the
compiler (its resolved path, size and modification time), the flags and the CPU (for
`-march=native`); the record holds the whole key, the library's SHA-256 and the flags that built it.
A cached library is loaded only when its record matches and its bytes hash to the recorded sum
(else it is built again), and only from folders that this user owns and no one else can write to:
where others could write to the cache, a one-line warning, and the library is built in a private
temporary folder for this process instead. Without a compiler the fast engine runs in torch ops.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import stat
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


def _compiler_stamp(cc: str | None) -> str:
    """Which compiler `cc` is, without running it: its resolved path, size and modification time."""
    path = shutil.which(cc) if cc else None
    if path is None:
        return f"missing {cc}"
    real = os.path.realpath(path)
    st = os.stat(real)
    return f"{real} {st.st_size} {st.st_mtime_ns}"


def _compiler_id(cc: str) -> str:
    """The first line of `cc --version`, lower case ("" if it will not say)."""
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return (out.splitlines() or [""])[0].lower()


def cache_key(sources: dict[str, bytes], cc: str | None, openmp: bool) -> str:
    """SHA-256 over the sources, the compiler, the flags and the CPU: what the library depends on."""
    h = hashlib.sha256()
    for name, data in sources.items():
        h.update(f"{name} {len(data)}\n".encode() + data)
    flags = [*BASE_FLAGS, "openmp" if openmp else "no-openmp"]
    h.update("\n".join([_compiler_stamp(cc), " ".join(flags), cpu_signature()]).encode())
    return h.hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _writable_by_others(path: Path) -> str | None:
    """Why users other than this one could change what is at `path`, or None where none can."""
    if not hasattr(os, "getuid"):
        return None
    st = os.stat(path)
    if st.st_uid != os.getuid():
        return f"{path} belongs to another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        who = "everyone" if st.st_mode & 0o002 else "its group"
        return f"{path} is writable by {who} (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _cache_folder(root: Path) -> tuple[Path, str | None]:
    """root/kernels, created private (mode 700) where missing; and why it must not be used, or None."""
    folder = root / "kernels"
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder, _writable_by_others(root) or _writable_by_others(folder)
    except OSError as e:
        return folder, f"cannot create {folder}: {e.strerror or e}"


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


def _cached(lib: Path, record: Path, key: str) -> bool:
    """Whether `lib` is a plain file of this user's that its record vouches for under `key`."""
    try:
        rec = json.loads(record.read_text())
        return (stat.S_ISREG(os.lstat(lib).st_mode) and _writable_by_others(lib) is None
                and rec.get("key") == key and rec.get("sha256") == _sha256(lib))
    except (OSError, ValueError, AttributeError):
        return False


def load_library(root: Path, *, openmp: bool, sources: Path = CSRC, stem: str = "nwm_cpu") -> ctypes.CDLL:
    """The library built from `sources`, from the cache under `root` (built there first when missing
    or not matching), or built privately for this process where others could write to that cache.
    Raises OSError or RuntimeError when it cannot be built or loaded."""
    cc = find_compiler()
    key = cache_key(kernel_sources(sources), cc, openmp)
    folder, unsafe = _cache_folder(Path(root))
    if unsafe:
        warnings.warn(f"waveviz: not using the kernel cache ({unsafe}); building the CPU kernel in a private "
                      "temporary folder (make the cache yours alone, or set WAVEVIZ_CACHE)", RuntimeWarning, stacklevel=3)
        with tempfile.TemporaryDirectory(prefix="waveviz-kernel-") as tmp:  # mode 700
            path = Path(tmp) / f"{stem}.so"
            _build(cc, sources, path, openmp)
            return ctypes.CDLL(str(path))  # once loaded, the file may go
    path = folder / f"{stem}_{key[:16]}.so"
    record = path.with_suffix(".json")
    if not _cached(path, record, key):
        flags = _build(cc, sources, path, openmp)
        rec = {"key": key, "sha256": _sha256(path), "compiler": cc, "compiler_version": _compiler_id(cc), "flags": flags}
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(rec, f, indent=1)
        os.replace(tmp, record)
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
    (default `~/.cache/waveviz/kernels`), keyed by the sources, the compiler, the flags and the CPU.
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
            lib = load_library(settings.get().cache, openmp=torch_openmp())
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


def chunks(B: int) -> int:
    """How many contiguous ranges `over_batch` splits B items into: one per torch thread, at most B."""
    return max(1, min(torch.get_num_threads(), B))


def _parallel(fn, B: int) -> list:
    """fn(i, b0, b1) for the i-th of n contiguous chunks [b0, b1) of the batch, one per torch thread
    (ctypes releases the GIL) → their results in chunk order."""
    global _pool, _pool_size
    n = chunks(B)
    bounds = [(B * i // n, B * (i + 1) // n) for i in range(n)]
    if n == 1:
        return [fn(0, 0, B)]
    if _pool is None or _pool_size < n:
        _pool, _pool_size = ThreadPoolExecutor(max_workers=n, thread_name_prefix="waveviz"), n
    return list(_pool.map(lambda ib: fn(ib[0], *ib[1]), enumerate(bounds)))


def _check_rc(rcs) -> None:
    if any(rcs):
        raise MemoryError("the CPU wave kernel could not allocate its scratch memory")


def over_batch(lib: ctypes.CDLL, name: str, B: int, args: tuple, *, grads: torch.Tensor | None = None,
               grad_rows: str = "chunk", share_items: bool = False) -> None:
    """Run the kernel's `name` over B items (images, or the head's pixels) on every torch thread.

    Built with OpenMP: `{name}_omp_{suffix}`(B, nt, rc, *args[, grads]) on torch's own team, where
    `name` ends in its dtype suffix (`nwm_fwd_f32` → `nwm_fwd_omp_f32`). Without: `name`(b0, b1, *args[,
    row]) on `chunks(B)` contiguous ranges [b0, b1) from the pool. `grads`: float64, the rows the calls
    add their parameter gradients into, one per chunk (`grad_rows="chunk"`, `chunks(B)` rows) or one
    per item (`"item"`, B rows: each range at the row of its first item). `share_items`: the OpenMP
    function gets a thread per torch thread even when B is smaller (it splits an item's rows then).
    A kernel that could not allocate its scratch memory raises MemoryError."""
    assert grad_rows in ("chunk", "item"), grad_rows
    stem, suf = name.rsplit("_", 1)
    omp = getattr(lib, f"{stem}_omp_{suf}", None)
    if omp is not None:
        nt = max(1, torch.get_num_threads()) if share_items else chunks(B)
        rc = (ctypes.c_int * nt)()
        omp(B, nt, rc, *args, *(() if grads is None else (grads.data_ptr(),)))
        _check_rc(list(rc))
        return
    fn = getattr(lib, name)
    if grads is None:
        _check_rc(_parallel(lambda i, b0, b1: fn(b0, b1, *args), B))
    else:
        _check_rc(_parallel(lambda i, b0, b1: fn(b0, b1, *args, grads[b0 if grad_rows == "item" else i].data_ptr()), B))
