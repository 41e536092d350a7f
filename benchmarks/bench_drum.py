"""Benchmark: paper Fig. 2 (nine square drums, 40,000 steps), batched sparse path vs a per-drum numpy loop.

    python benchmarks/bench_drum.py [--repeat 3] [--steps 40000]

Prints a markdown table and a JSON line. Also times the drum lab's recompute for a 64×64 drawing
with 5,000 steps (simulation, spectrum, modes, animation colours, sound), the page's budget being 1 s.
Target: the batched path ≤ 2 s on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from waveviz import drum  # noqa: E402


def best_of(repeat: int, fn):
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def lab_recompute(size: int = 64) -> None:
    yy, xx = np.mgrid[:320, :320]
    th, r = np.arctan2(yy - 160, xx - 160), np.hypot(yy - 160, xx - 160)
    alpha = (r < 125 + 25 * np.sin(3 * th)).astype(np.uint8) * 255
    mask = drum.mask_from_drawing(alpha, size)
    lab = drum.run_lab(mask, None, drum.LabConfig(steps=5_000))
    drum.field_to_rgb(lab.frames, lab.mask)
    drum.drum_sound(lab.mode_hz, lab.weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs (default %(default)s)")
    parser.add_argument("--steps", type=int, default=40_000, help="RNN steps (default %(default)s)")
    args = parser.parse_args()
    cfg = drum.WaveConfig(steps=args.steps)

    t_fast, fast = best_of(args.repeat, lambda: drum.verify_square_drums(cfg, batched=True))
    t_ref, ref = best_of(1, lambda: drum.verify_square_drums(cfg, batched=False))
    t_lab, _ = best_of(args.repeat, lab_recompute)
    agree = max(abs(a.measured - b.measured) / b.measured for a, b in zip(fast.rows, ref.rows))

    print(f"drum verify: 9 square drums (L = 13 … 21), {cfg.steps:,} steps, c = {cfg.c}, dt = {cfg.dt}; "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}\n")
    print("| path | time (s) | max abs rel. error vs c/(√2·L) | passed |")
    print("|---|---|---|---|")
    print(f"| batched sparse (all drums at once) | {t_fast:.3f} | {fast.max_abs_rel_error:.4%} | {fast.passed()} |")
    print(f"| plain numpy loop, drum by drum | {t_ref:.3f} | {ref.max_abs_rel_error:.4%} | {ref.passed()} |")
    print(f"\nspeed-up {t_ref / t_fast:.1f}×; fundamentals agree to {agree:.1e} (relative)")
    print(f"drum lab recompute, 64×64 drawing, 5,000 steps: {t_lab:.3f} s\n")
    print(json.dumps({"steps": cfg.steps, "c": cfg.c, "dt": cfg.dt, "batched_s": round(t_fast, 4),
                      "reference_s": round(t_ref, 4), "speedup": round(t_ref / t_fast, 2),
                      "max_abs_rel_error": fast.max_abs_rel_error, "paths_agree_rel": agree,
                      "lab_recompute_s": round(t_lab, 4), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
