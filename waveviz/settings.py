"""Every environment switch waveviz reads, in one frozen dataclass.

    from waveviz import settings
    settings.get().engine                       # what WAVEVIZ_ENGINE says, or "auto"
    with settings.override(cpu_kernel=False):   # in tests: no subprocess, no os.environ edits
        ...

`get()` reads the environment once and again only when one of the variables below changes (a test's
`monkeypatch.setenv`, a script that sets `os.environ` before it calls waveviz), so a long-running
process reads it once. Values are checked where they are used (an unknown `WAVEVIZ_ENGINE` is an
error when a model is made, a bad `WAVEVIZ_MAX_JOBS` when jobs are scheduled), so that a bad value
only stops what it concerns.

| variable | field | effect (default) |
|---|---|---|
| `WAVEVIZ_ENGINE` | `engine` | the engine new models start with: auto, fast, fast-bf16 or reference ("auto") |
| `WAVEVIZ_BF16` | `bf16` | "native" or "emulate": whether bf16 products are emulated on CPU ("": from the CPU's flags) |
| `WAVEVIZ_CPU_KERNEL` | `cpu_kernel` | 0: no C kernel, the fast engine runs in torch ops on CPU (on) |
| `WAVEVIZ_CPU_OPENMP` | `cpu_openmp` | 0: the C kernel built without OpenMP, on its own thread pool (on: torch's OpenMP team) |
| `WAVEVIZ_CACHE` | `cache` | where compiled kernels go, in `kernels/` (`$XDG_CACHE_HOME/waveviz`, else `~/.cache/waveviz`) |
| `CC` | `cc` | the C compiler for the kernel (None: cc, gcc or clang, the first on PATH) |
| `WAVEVIZ_TRITON` | `triton` | 0: no Triton kernel on CUDA, torch ops instead (on where triton imports and passes its check) |
| `WAVEVIZ_ONEDNN_BWD` | `onednn_bwd` | 0: the backward's input-gradient products through BLAS instead of oneDNN (on) |
| `WAVEVIZ_MALLOC` | `malloc` | 0: leave glibc's allocator alone in training and `waveviz bench` (on: freed memory kept) |
| `WAVEVIZ_DEBUG` | `debug` | any value: the CLI prints the traceback of an internal error (off) |
| `WAVEVIZ_HOME` | `home` | jobs, uploads and the app's state (`~/.waveviz`) |
| `WAVEVIZ_CHECKPOINTS` | `checkpoints` | the shipped checkpoints the app, `waveviz results` and the pickers offer (the checkout's `checkpoints/`, beside the package) |
| `WAVEVIZ_MAX_JOBS` | `max_jobs` | training jobs running at once, a whole number ≥ 1 (None: `settings.json` in the jobs folder, else 1) |
| `WAVEVIZ_MNIST_DIR` | `mnist_dir` | a folder with the MNIST IDX files (None: fetched MNIST, else the digits shipped in the package) |
| `WAVEVIZ_DATA` | `data_cache` | where `waveviz data fetch` caches data sets (`$XDG_CACHE_HOME/waveviz`, else `~/.cache/waveviz`) |
| `WAVEVIZ_READ_PATHS` | `read_paths` | folders (os.pathsep-separated) the Train page may read besides uploads and `$WAVEVIZ_HOME/data` ("") |
| `WAVEVIZ_LAUNCHED` | — | set by `waveviz train --nproc` in each rank it starts (the launcher's pid; not a setting) |
| `WAVEVIZ_OMP_BEFORE` | — | set with it: OMP_NUM_THREADS as the launcher found it, restored for a process a rank starts |

The on/off switches are off only at "0", as they always were. glibc's own `MALLOC_*` variables are
not waveviz's: `engine.retain_freed_memory` looks at them itself, to leave a user's tuning alone.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent  # the package's parent: a checkout, or site-packages


@dataclasses.dataclass(frozen=True)
class Settings:
    engine: str = "auto"
    bf16: str = ""
    cpu_kernel: bool = True
    cpu_openmp: bool = True
    cache: Path = Path.home() / ".cache" / "waveviz"
    cc: str | None = None
    triton: bool = True
    onednn_bwd: bool = True
    malloc: bool = True
    debug: bool = False
    home: Path = Path.home() / ".waveviz"
    checkpoints: Path = CHECKOUT / "checkpoints"
    max_jobs: str | None = None
    mnist_dir: str | None = None
    data_cache: Path = Path.home() / ".cache" / "waveviz"
    read_paths: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        on = lambda name: env.get(name, "1") != "0"  # noqa: E731
        xdg = env.get("XDG_CACHE_HOME")
        return cls(
            engine=env.get("WAVEVIZ_ENGINE") or "auto",
            bf16=env.get("WAVEVIZ_BF16", ""),
            cpu_kernel=on("WAVEVIZ_CPU_KERNEL"),
            cpu_openmp=on("WAVEVIZ_CPU_OPENMP"),
            cache=Path(env.get("WAVEVIZ_CACHE") or Path(xdg or Path.home() / ".cache") / "waveviz"),
            cc=env.get("CC") or None,
            triton=on("WAVEVIZ_TRITON"),
            onednn_bwd=on("WAVEVIZ_ONEDNN_BWD"),
            malloc=on("WAVEVIZ_MALLOC"),
            debug=bool(env.get("WAVEVIZ_DEBUG")),
            home=Path(env.get("WAVEVIZ_HOME") or Path.home() / ".waveviz"),
            checkpoints=Path(env.get("WAVEVIZ_CHECKPOINTS") or CHECKOUT / "checkpoints"),
            max_jobs=env.get("WAVEVIZ_MAX_JOBS") or None,
            mnist_dir=env.get("WAVEVIZ_MNIST_DIR") or None,
            data_cache=Path(env.get("WAVEVIZ_DATA") or Path(xdg or Path.home() / ".cache") / "waveviz"),
            read_paths=env.get("WAVEVIZ_READ_PATHS", ""),
        )


def _names_read() -> tuple[str, ...]:
    """The variables `from_env` reads, found by calling it on a mapping that notes each lookup (so the
    list cannot fall behind it), and HOME, which `Path.home()` reads."""
    seen: list[str] = []

    class Noting(dict):
        def get(self, name, default=None):
            seen.append(name)
            return default

    Settings.from_env(Noting())
    return tuple(dict.fromkeys([*seen, "HOME"]))


# What `from_env` reads: a change to any of these makes `get()` read the environment again.
_READS = _names_read()
_read: tuple[tuple, Settings] | None = None
_overrides: list[Settings] = []


def get() -> Settings:
    """The settings in force: the innermost `override`, else those the environment gives."""
    global _read
    if _overrides:
        return _overrides[-1]
    seen = tuple(os.environ.get(name) for name in _READS)
    if _read is None or _read[0] != seen:
        _read = seen, Settings.from_env(os.environ)
    return _read[1]


@contextlib.contextmanager
def override(**fields) -> Iterator[Settings]:
    """Settings with `fields` replaced, inside the block (for tests), whatever the environment says."""
    valid = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise TypeError(f"unknown setting {unknown[0]!r}; valid: {', '.join(sorted(valid))}")
    s = dataclasses.replace(get(), **fields)
    _overrides.append(s)
    try:
        yield s
    finally:
        _overrides.pop()
