"""The engine benchmark behind `waveviz bench`: the fast engine against the reference — same weights, same run, same device.

    waveviz bench [--preset P …] [--batch 16 64] [--device auto] [--steps 5] [--json F] [--markdown F]

For each preset and batch size it reports, for each engine (reference, fast, fast-bf16): the
train-step time (forward, backward and an Adam step; median of `--steps`, the engines interleaved so
that a busy machine slows all alike), images per second, the single-image inference latency, the
peak memory of a train step and, first of all, how far each fast engine is from the reference on
the same weights (fast: logits and every parameter gradient, relative to the reference's largest
magnitude; fast-bf16, whose head computes in bfloat16: logits and the whole gradient's direction).

On CPU the bench, like the trainer, lets glibc keep freed memory (`engine.retain_freed_memory`) for
all engines alike; the report names the allocator setting.

Peak memory: on CUDA `torch.cuda.max_memory_allocated` during one step; on Linux CPUs the rise of
the resident set (VmHWM) during one step, measured in a fresh process whose allocator returns every
block ≥ 64 KiB to the system (`MALLOC_MMAP_THRESHOLD_`), so that resident memory follows live tensors.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from . import engine

TIMED_ENGINES = ("reference", "fast", "fast-bf16")  # timed, in this order; the first is the baseline


@dataclass
class Setting:
    preset: str = "nwm-linear-tetrominoes"
    batch: int = 16
    image_size: int | None = None  # default: the preset's
    overrides: dict = field(default_factory=dict)
    seed: int = 0

    def build(self, device: torch.device | str = "cpu"):
        from .presets import create_model

        torch.manual_seed(self.seed)
        return create_model(self.preset, **self.overrides).to(device)

    def batch_data(self, model, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        c = model.config
        size = self.image_size or c.image_size
        g = torch.Generator().manual_seed(self.seed + 1)
        x = torch.rand(batch, c.in_channels, size, size, generator=g)
        y = torch.randint(0, c.num_classes, (batch, size, size), generator=g)
        return x.to(device), y.to(device)

    def label(self, model) -> str:
        c = model.config
        size = self.image_size or c.image_size
        extra = "".join(f", {k}={v}" for k, v in self.overrides.items() if k != "T")
        return f"{self.preset}, B={self.batch}, {size}², T={c.T}{extra}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(model, opt, x, y) -> None:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-300)).item()


def check_same_function(setting: Setting, device: torch.device, batch: int = 2) -> dict:
    """Fast vs reference on the same weights and images: logits and every parameter gradient, and
    both against the reference in float64 (which tells rounding from error: the float32 reference
    is itself up to ~1e-4 off in sums over many pixels). On CUDA with TF32 off, as cuDNN's
    default TF32 convolutions make the reference inexact."""
    base = setting.build(device)
    x, y = setting.batch_data(base, batch, device)
    res = {}
    with engine.tf32_off():
        runs = (("reference", torch.float64), ("reference", torch.float32), ("fast", torch.float32),
                ("fast-bf16", torch.float32))
        for eng, dtype in runs:
            model = copy.deepcopy(base).to(dtype)
            model.engine = eng
            logits = model(x.to(dtype))
            F.cross_entropy(logits, y).backward()
            res[eng, dtype] = logits.detach(), {k: p.grad.detach().clone() for k, p in model.named_parameters()}
            del model

    def worst(a, b):
        errs = {k: _rel(a[1][k], b[1][k]) for k in b[1]}
        k = max(errs, key=errs.get)
        return _rel(a[0], b[0]), errs[k], k

    ref, fast, exact = res["reference", torch.float32], res["fast", torch.float32], res["reference", torch.float64]
    (lo, g, k), (lo_f, g_f, k_f), (lo_r, g_r, k_r) = worst(fast, ref), worst(fast, exact), worst(ref, exact)
    bf = res["fast-bf16", torch.float32]
    flat = [torch.cat([t[1][k].double().flatten() for k in ref[1]]) for t in (bf, ref)]
    per = {k: F.cosine_similarity(bf[1][k].double().flatten(), g.double().flatten(), dim=0).item()
           for k, g in ref[1].items() if g.abs().max() > 0}  # per parameter: a small one is not hidden
    worst = min(per, key=per.get)
    return {"batch": batch, "dtype": "torch.float32",
            "logits_rel_err": lo, "grad_rel_err": g, "worst_grad": k,
            "fast_vs_float64": {"logits": lo_f, "grad": g_f, "worst_grad": k_f},
            "reference_vs_float64": {"logits": lo_r, "grad": g_r, "worst_grad": k_r},
            "bf16": {"logits_rel_err": _rel(bf[0], ref[0]),
                     "argmax_agreement": (bf[0].argmax(1) == ref[0].argmax(1)).double().mean().item(),
                     "grad_cosine": F.cosine_similarity(*flat, dim=0).item(),
                     "worst_param_cosine": per[worst], "worst_param": worst}}


def time_train_steps(setting: Setting, device: torch.device, steps: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per train step for each engine, same initial weights, interleaved."""
    base = setting.build(device)
    x, y = setting.batch_data(base, setting.batch, device)
    runs = {}
    for eng in TIMED_ENGINES:
        m = copy.deepcopy(base)
        m.engine = eng
        runs[eng] = (m, torch.optim.Adam(m.parameters(), lr=1e-3))
    for _ in range(warmup):
        for m, opt in runs.values():
            _train_step(m, opt, x, y)
    times = {eng: [] for eng in TIMED_ENGINES}
    for _ in range(steps):
        for eng, (m, opt) in runs.items():
            _sync(device)
            t0 = time.perf_counter()
            _train_step(m, opt, x, y)
            _sync(device)
            times[eng].append(time.perf_counter() - t0)
    return times


def time_inference(setting: Setting, device: torch.device, runs: int, warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per single-image forward pass (eval, inference mode) for each engine, interleaved."""
    base = setting.build(device).eval()
    x, _ = setting.batch_data(base, 1, device)
    models = {}
    for eng in TIMED_ENGINES:
        models[eng] = copy.deepcopy(base)
        models[eng].engine = eng
    times = {eng: [] for eng in TIMED_ENGINES}
    with torch.inference_mode():
        for i in range(warmup + runs):
            for eng, m in models.items():
                _sync(device)
                t0 = time.perf_counter()
                m(x)
                _sync(device)
                if i >= warmup:
                    times[eng].append(time.perf_counter() - t0)
    return times


def peak_memory(setting: Setting, device: torch.device, engine: str) -> float | None:
    """Bytes that one train step needs above what is resident before it (None where unmeasurable)."""
    if device.type == "cuda":
        m = setting.build(device)
        m.engine = engine
        x, y = setting.batch_data(m, setting.batch, device)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        _train_step(m, opt, x, y)  # optimizer state exists from here on, as in training
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        _train_step(m, opt, x, y)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del m, opt, x, y
        torch.cuda.empty_cache()
        return float(peak)
    if device.type != "cpu" or not os.path.exists("/proc/self/clear_refs"):
        return None
    spec = json.dumps({"setting": asdict(setting), "engine": engine, "threads": torch.get_num_threads()})
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    r = subprocess.run([sys.executable, "-m", "waveviz.bench", "--memory-probe", spec],
                       capture_output=True, text=True, env=env)
    try:
        return float(json.loads(r.stdout.strip().splitlines()[-1])["peak_bytes"])
    except (ValueError, IndexError, KeyError):
        return None


def _memory_probe(spec: str) -> None:
    """Child process of `peak_memory` on CPU: one warm-up step, then the RSS high-water mark of one step."""
    s = json.loads(spec)
    torch.set_num_threads(s["threads"])
    setting = Setting(**s["setting"])
    m = setting.build("cpu")
    m.engine = s["engine"]
    x, y = setting.batch_data(m, setting.batch, "cpu")
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    _train_step(m, opt, x, y)

    def status(key: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark to the current resident set
    base = status("VmRSS:")
    _train_step(m, opt, x, y)
    print(json.dumps({"peak_bytes": status("VmHWM:") - base}))


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "usable_cores": engine.usable_cores()}
    if device.type == "cuda":
        env["hardware"] = torch.cuda.get_device_name(device)
        env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        env["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
        env["wave_backend"] = engine.resolve_backend("auto", torch.zeros(1, device=device))
    else:
        simd = torch.backends.cpu.get_cpu_capability()  # the vector ISA torch's kernels use: AVX2, AVX512, …
        env["hardware"] = f"{engine.cpu_model()} ({simd}), {engine.usable_cores()} of {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
        env["cpu_kernel"] = engine.cpu_kernel_status()
        env["allocator"] = engine.retain_freed_memory()
        env["bf16_native"] = engine.cpu_bf16_native()
    if hasattr(os, "getloadavg"):
        env["load_average"] = list(os.getloadavg())
    return env


def run_setting(setting: Setting, device: torch.device, *, steps: int, infer_runs: int, memory: bool,
                inference_cache: dict | None = None) -> dict:
    """Everything measured for one setting, both engines."""
    probe = setting.build("cpu")
    label = setting.label(probe)
    check = check_same_function(setting, device)
    train = time_train_steps(setting, device, steps)
    key = (setting.preset, setting.image_size, json.dumps(setting.overrides, sort_keys=True))
    if inference_cache is not None and key in inference_cache:
        infer = inference_cache[key]
    else:
        infer = time_inference(setting, device, infer_runs)
        if inference_cache is not None:
            inference_cache[key] = infer
    out = {"setting": asdict(setting), "label": label, "check": check, "engines": {}}
    for eng in TIMED_ENGINES:
        t = statistics.median(train[eng])
        out["engines"][eng] = {
            "train_step_s": t, "train_step_s_all": train[eng], "images_per_s": setting.batch / t,
            "inference_1_image_s": statistics.median(infer[eng]), "inference_min_s": min(infer[eng]),
            "peak_memory_bytes": peak_memory(setting, device, eng) if memory else None,
        }
    ref = out["engines"][TIMED_ENGINES[0]]
    for eng in TIMED_ENGINES[1:]:  # each engine against the reference: times faster, memory fraction
        e = out["engines"][eng]
        e["speedup_train"] = ref["train_step_s"] / e["train_step_s"]
        e["speedup_inference"] = ref["inference_1_image_s"] / e["inference_1_image_s"]
        if ref["peak_memory_bytes"] and e["peak_memory_bytes"] is not None:
            e["memory_ratio"] = e["peak_memory_bytes"] / ref["peak_memory_bytes"]
    fast = out["engines"]["fast"]  # the float32 fast engine's ratios, also at the top level
    out.update({k: fast[k] for k in ("speedup_train", "speedup_inference", "memory_ratio") if k in fast})
    return out


def run_benchmark(settings: list[Setting], device: torch.device, *, steps: int = 5, infer_runs: int = 20,
                  memory: bool = True, progress=None) -> dict:
    env = environment(device)
    results, cache = [], {}
    for s in settings:
        if progress:
            progress(f"{s.preset} B={s.batch} …")
        results.append(run_setting(s, device, steps=steps, infer_runs=infer_runs, memory=memory, inference_cache=cache))
    if hasattr(os, "getloadavg"):
        env["load_average_after"] = list(os.getloadavg())
    return {"environment": env, "steps": steps, "inference_runs": infer_runs, "results": results}


def _ms(s: float) -> str:
    return f"{s * 1e3:,.1f}" if s < 1 else f"{s * 1e3:,.0f}"


def _mb(b: float | None) -> str:
    return "–" if b is None else f"{b / 2**20:,.0f}"


def to_markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"Hardware: {env['hardware']}; torch {env['torch']}"
        + (f"; CPU kernel: {env['cpu_kernel']}" if "cpu_kernel" in env else "")
        + (f"; allocator: {env['allocator']}" if "allocator" in env else "")
        + ({True: "; bf16 products native (AVX-512 BF16 / AMX)", False: "; bf16 products emulated (no AVX-512 BF16 / AMX)"}
           .get(env.get("bf16_native"), ""))
        + (f"; wave backend: {env['wave_backend']}, TF32 cuDNN {env['tf32_cudnn']} / matmul {env['tf32_matmul']}"
           if "wave_backend" in env else "")
        + (f"; load average {env['load_average'][0]:.1f} at start" if "load_average" in env else "") + ".",
        f"Median of {report['steps']} train steps (forward + backward + Adam) and of {report['inference_runs']} single-image "
        "forward passes; engines interleaved, same initial weights.",
        "",
        "| setting | engine | train step (ms) | images/s | 1-image inference (ms) | peak memory of a step (MB) | vs reference |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        chk = r["check"]
        for i, (eng, e) in enumerate(r["engines"].items()):
            cells = [r["label"] if i == 0 else "", eng, _ms(e["train_step_s"]), f"{e['images_per_s']:.1f}",
                     _ms(e["inference_1_image_s"]), _mb(e["peak_memory_bytes"]), _versus(e, eng, chk)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _versus(e: dict, eng: str, chk: dict) -> str:
    """The last column: how much faster than the reference, and how close to its function."""
    if "speedup_train" not in e:
        return ""
    mem = f", memory ×{e['memory_ratio']:.2f}" if "memory_ratio" in e else ""
    head = f"train ×{e['speedup_train']:.2f}, inference ×{e['speedup_inference']:.2f}{mem}; "
    if eng == "fast-bf16" and "bf16" in chk:
        b = chk["bf16"]
        return head + (f"bf16 head: logits within {b['logits_rel_err']:.0e}, same argmax on "
                       f"{100 * b['argmax_agreement']:.1f} % of pixels, gradient cosine {b['grad_cosine']:.5f} "
                       f"(lowest per parameter {b['worst_param_cosine']:.4f}, {b['worst_param']})")
    return head + (f"max rel. error vs reference: logits {chk['logits_rel_err']:.0e}, gradients {chk['grad_rel_err']:.0e}"
                   f" (vs float64: fast {chk['fast_vs_float64']['grad']:.0e}, "
                   f"reference {chk['reference_vs_float64']['grad']:.0e})")


if __name__ == "__main__":  # the CPU memory probe runs here, in a fresh process
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-probe":
        _memory_probe(sys.argv[2])
    else:
        sys.exit("usage: waveviz bench … (this module's own entry point is internal)")
