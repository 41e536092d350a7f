"""Data-parallel processes against threads on one CPU: the same training epoch (same data, seed and
global batch) run as one process with N torch threads and as `waveviz train --nproc N` (N processes
of one thread each), alternating, so that a shared machine slows both alike.

    python benchmarks/bench_nproc.py --preset nwm-linear-tetrominoes lstm-linear-tetrominoes --repeats 2

Each run is `waveviz train PRESET --n-train IMAGES --epochs 1 --batch-size 16 --device cpu` (the fast
recipe, its point sampling); the figure is the epoch's training seconds as the run reports them
(data generation, validation and saving excluded). Writes Markdown and JSON under --out
(benchmarks/results/nproc-<date>.*).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from waveviz.engine import usable_cores
from waveviz.training import hardware_name

EPOCH = re.compile(r"^epoch 1/1 train \S+ val \S+ FG-IoU \S+ \(([\d.]+)s", re.M)


def epoch_seconds(preset: str, images: int, nproc: int, threads: int, out: Path) -> float:
    """One epoch of `preset` on `images` generated images → its training seconds."""
    cmd = [sys.executable, "-m", "waveviz", "train", preset, "--n-train", str(images), "--n-val", "32",
           "--n-test", "0", "--epochs", "1", "--batch-size", "16", "--max-minutes", "off", "--device", "cpu",
           "--nproc", str(nproc), "--overwrite", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    found = EPOCH.search(res.stdout + res.stderr)
    if res.returncode or not found:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{(res.stdout + res.stderr)[-2000:]}")
    return float(found.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", nargs="+", default=["nwm-linear-tetrominoes", "lstm-linear-tetrominoes"])
    p.add_argument("--images", type=int, default=1600, help="training images (an epoch of images / 16 steps)")
    p.add_argument("--nproc", type=int, default=usable_cores(), help="processes, and the single process's threads")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    n = args.nproc
    setups = {f"1 process × {n} threads": (1, n), f"{n} processes × 1 thread": (n, 1)}
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.preset:
            times: dict[str, list[float]] = {name: [] for name in setups}
            for _ in range(args.repeats):
                for name, (nproc, threads) in setups.items():
                    times[name].append(epoch_seconds(preset, args.images, nproc, threads, Path(tmp) / "m.pt"))
                    print(f"{preset}, {name}: {times[name][-1]:.1f} s", flush=True)
            rows.append({"preset": preset, "images": args.images, "seconds": times})
    names = list(setups)
    day = time.strftime("%Y-%m-%d")
    lines = [f"# Data-parallel processes against threads, {day}", "",
             f"Hardware: {hardware_name(torch.device('cpu'))}; load average {load:.1f} at the start. One training epoch of "
             f"{args.images} generated images, batch 16, the fast recipe; median of {args.repeats} alternating runs "
             "(`python benchmarks/bench_nproc.py`).", "",
             f"| preset | {names[0]} (s) | {names[1]} (s) | speed-up of processes |", "|---|---:|---:|---:|"]
    for r in rows:
        a, b = (statistics.median(r["seconds"][k]) for k in names)
        lines.append(f"| {r['preset']} | {a:.1f} | {b:.1f} | ×{a / b:.2f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"nproc-{day}.md").write_text("\n".join(lines) + "\n")
    (out / f"nproc-{day}.json").write_text(json.dumps({"hardware": hardware_name(torch.device("cpu")), "load": load, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
