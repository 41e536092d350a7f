"""A point-sampled training step (the `fast` recipe's: batch 16, 1/8 of the pixels, foreground 4×)
timed four ways in one run, interleaved so that a shared machine slows all alike:

- `reference`: the plain equations under autograd, the full logits gathered at the points;
- `fast, all-pixel readout`: the fast engine's readout features at every pixel, gathered at the points
  (what every readout but the fused linear one did before 2026-12-03; an FFT over all pixels);
- `fast, gathered`: `SequenceSegmenter.forward_points`: Y gathered at the points, then the readout
  there (the fused linear readout's path before 2026-12-02);
- `fast, points, recomputed`: the readout computed at the points only (`nwm_point_features`), the
  backward recomputing all but the last time segment;
- `fast, points` (what training runs): the same, the forward's states kept for the backward.

    python benchmarks/bench_point_step.py --preset nwm-linear-tetrominoes --steps 7 --threads 2
Writes Markdown and JSON under --out (benchmarks/results/point-step-<preset>-<date>.*).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from waveviz import engine
from waveviz.engine import fast_head, recurrence
from waveviz.models.base import SequenceSegmenter
from waveviz.presets import PRESETS, create_model
from waveviz.sampling import gather_points, sample_points, sampled_cross_entropy
from waveviz.training import hardware_name


def gathered(model, x, idx):
    """The earlier path: all pixels' readout features, then the points gathered (`SequenceSegmenter.forward_points`)."""
    return SequenceSegmenter.forward_points(model, x, idx)


def all_pixel_readout(model, x, idx):
    """The readout's features at every pixel, then the points gathered (before 2026-12-03)."""
    return fast_head(gather_points(model.time_features(x), idx), model.head, bf16=model.bf16_head)


def reference(model, x, idx):
    return gather_points(model(x), idx)


# name → (engine, forward at points, keep states)
WAYS = {
    "reference": ("reference", reference, True),
    "fast, all-pixel readout": ("fast", all_pixel_readout, True),
    "fast, gathered": ("fast", gathered, True),
    "fast, points, recomputed": ("fast", lambda m, x, idx: m.forward_points(x, idx), False),
    "fast, points": ("fast", lambda m, x, idx: m.forward_points(x, idx), True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="nwm-linear-tetrominoes")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--points", type=float, default=0.125)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    allocator = engine.retain_freed_memory()
    cfg = PRESETS.get(a.preset).build_config()
    torch.manual_seed(0)
    model = create_model(a.preset)
    H = cfg.image_size
    x = torch.rand(a.batch, cfg.in_channels, H, H)
    y = torch.randint(1, cfg.num_classes, (a.batch, H, H)) * (torch.rand(a.batch, H, H) > 0.7)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    keep_default = recurrence.CPU_KEEP_STATES_BYTES

    def step(way: str) -> float:
        eng, fwd, keep = WAYS[way]
        model.engine = eng
        recurrence.CPU_KEEP_STATES_BYTES = keep_default if keep else 0
        t = time.perf_counter()
        idx, w = sample_points(y, max(1, round(a.points * H * H)), fg_weight=4.0)
        loss = sampled_cross_entropy(fwd(model, x, idx), y, idx, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    for way in WAYS:  # warm-up: kernels compiled, buffers allocated
        step(way)
    times = {way: [] for way in WAYS}
    for _ in range(a.steps):
        for way in WAYS:
            times[way].append(step(way))
    recurrence.CPU_KEEP_STATES_BYTES = keep_default
    med = {way: statistics.median(v) for way, v in times.items()}
    hw = f"{hardware_name(torch.device('cpu'))}, {torch.get_num_threads()} threads, torch {torch.__version__}, {allocator}"
    stem = Path(a.out) / f"point-step-{a.preset}-{time.strftime('%Y-%m-%d')}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"| {way} | {1e3 * m:,.0f} | {a.batch / m:.1f} | ×{med['reference'] / m:.2f} |" for way, m in med.items()]
    stem.with_suffix(".md").write_text(
        f"Point-sampled train step of {a.preset}, batch {a.batch}, {a.points:g} of the pixels, median of "
        f"{a.steps} interleaved steps; {hw}.\n\n| way | step (ms) | images/s | vs reference |\n|---|---:|---:|---:|\n"
        + "\n".join(rows) + "\n")
    stem.with_suffix(".json").write_text(json.dumps(dict(preset=a.preset, batch=a.batch, points=a.points,
                                                         hardware=hw, times_s=times, median_s=med), indent=1))
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
