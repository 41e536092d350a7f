"""What the CPU is, read once from /proc/cpuinfo: for the kernel cache's key and the bf16 policy."""
from __future__ import annotations

import functools
import os
import platform


@functools.lru_cache(maxsize=1)
def cpu_signature() -> str:
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


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` says."""
    line = next((ln for ln in cpu_signature().splitlines() if ln.startswith("model name")), None)
    return line.split(":", 1)[1].strip() if line else (platform.processor() or platform.machine())


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags (x86 `flags`), None where /proc/cpuinfo does not list them."""
    line = next((ln for ln in cpu_signature().splitlines() if ln.startswith("flags")), None)
    return None if line is None else set(line.split(":", 1)[-1].split())


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (`taskset`, cgroups' cpusets) where the
    OS reports one, else every core the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
