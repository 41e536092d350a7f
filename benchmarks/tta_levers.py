"""Which training levers pay, from scratch, in a short fixed time budget (issue: time to accuracy).

    python benchmarks/tta_levers.py --minutes 4 --variant base='{}' --variant lr1e-2='{"lr": 0.01}' \
        --variant fourier='{"model": {"readout_init": "fourier"}}'

Every variant trains the same freshly initialised `--preset` (same seed, same 10,000 paper-faithful
training images) under the `fast` recipe with its TrainConfig changes (JSON) for `--minutes` of
training time ("model": model config overrides; "transfer": a checkpoint of the same family to start from,
`waveviz.training.transfer_weights`), then is scored on held-out validation images that no run selects on (validation
images `val_images` … `val_images + held_out`: the recipe validates on the first `val_images`).
Writes JSON and a Markdown table to `--out` (one row per variant, appended, with the hardware).
Single runs on a shared machine: differences under ~0.03 are noise.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from waveviz.data import to_tensors
from waveviz.presets import PRESETS
from waveviz.time_to_accuracy import run_recipe
from waveviz.training import DataConfig, TrainConfig, hardware_name, load_training_data, pick_device


def gates_cell(gates: dict | None) -> str:
    """{"omega": [shares], "alpha": [shares]} → "ω 0.00, 0.93; α 0.00, 0.00" (– for a model without)."""
    if not gates:
        return "–"
    return "; ".join(f"{sym} " + ", ".join(f"{v:.2f}" for v in gates[key]) for sym, key in (("ω", "omega"), ("α", "alpha")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="nwm-linear-tetrominoes")
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--held-out", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probe-minutes", type=float, help="also score the held-out images every this many training minutes (the curve goes to the JSON)")
    ap.add_argument("--variant", action="append", required=True, help="NAME=JSON TrainConfig changes")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    variants = [(v.split("=", 1)[0], json.loads(v.split("=", 1)[1])) for v in a.variant]
    for _, changes in variants:  # refuse a bad setting before any training
        TrainConfig.from_recipe("fast", PRESETS.get(a.preset).dataset, **{k: v for k, v in changes.items() if k not in ("model", "transfer")})
        PRESETS.get(a.preset).build_config(**changes.get("model", {}))
    dev = pick_device("auto")
    splits = load_training_data(DataConfig(dataset=PRESETS.get(a.preset).dataset))
    t = {k: to_tensors(v) for k, v in splits.items()}
    skip = TrainConfig.from_recipe("fast").val_images
    held = tuple(x[skip:skip + a.held_out] for x in t["val"])
    stem = Path(a.out) / f"tta-levers-{a.preset}-{time.strftime('%Y-%m-%d')}"
    os.makedirs(a.out, exist_ok=True)
    md = stem.with_suffix(".md")
    if not md.exists():
        md.write_text(f"Levers for {a.preset}, `fast` recipe + changes, from scratch, seed {a.seed}; FG-IoU on "
                      f"{len(held[0])} held-out validation images; {hardware_name(dev)}, "
                      f"{torch.get_num_threads()} threads, torch {torch.__version__}.\n\n"
                      "| variant | changes | minutes | steps | images seen | held-out FG-IoU (last) | (best val) "
                      "| NWM gates alive at the end (ω; α: share of foreground pixels per channel) |\n"
                      "|---|---|---:|---:|---:|---:|---:|---|\n")
    for name, changes in variants:
        train_changes = {k: v for k, v in changes.items() if k not in ("model", "transfer")}
        r = run_recipe(a.preset, "fast", t["train"], t["val"], held, minutes=a.minutes, seed=a.seed,
                       probe_s=a.probe_minutes * 60 if a.probe_minutes else a.minutes * 60 + 1, device=dev,
                       changes=train_changes, overrides=changes.get("model"), transfer=changes.get("transfer"))
        r["variant"], r["changes"] = name, changes
        with open(stem.with_suffix(".jsonl"), "a") as f:
            f.write(json.dumps(r) + "\n")
        with open(md, "a") as f:
            f.write(f"| {name} | `{json.dumps(changes)}` | {a.minutes:g} | {r['steps']:,} | {r['images_seen']:,} | "
                    f"{r['final']['fg_iou']:.3f} | {r['best_val_weights']['fg_iou']:.3f} | {gates_cell(r['gates'])} |\n")
        print(name, changes, r["images_seen"], round(r["final"]["fg_iou"], 3), flush=True)


if __name__ == "__main__":
    main()
