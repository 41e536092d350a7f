"""`waveviz bench`: time the fast engine against the reference (`waveviz.bench`), or recipes against
each other in held-out accuracy per training minute (`waveviz.time_to_accuracy`).

    waveviz bench [--preset P …] [--batch 16 64] [--device auto] [--steps 5] [--json F] [--markdown F]
    waveviz bench --time-to-accuracy [--recipe R …] [--minutes 10] [--out benchmarks/results]
"""
from __future__ import annotations

import json
import os
import sys

import torch

from ..bench import Setting, run_benchmark, to_markdown
from ..models import is_recurrent
from .args import UserError, nonneg_int, parse_overrides, positive_float, positive_int, writable_target


def add_subparser(sub) -> None:
    p = sub.add_parser("bench", help="time the fast engine against the reference (train step, images/s, latency, memory)")
    p.add_argument("--preset", action="append", help="recurrent preset(s) to time (default: nwm-linear-tetrominoes)")
    p.add_argument("--batch", type=positive_int, nargs="+", default=[16, 64], help="batch sizes (default: 16 64)")
    p.add_argument("--image-size", type=positive_int, help="square image side (default: the preset's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. --set T=50")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--steps", type=positive_int, default=5, help="timed train steps per engine (median)")
    p.add_argument("--inference-runs", type=positive_int, default=20, help="timed single-image passes per engine")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write the table as Markdown")
    t = p.add_argument_group("time to accuracy (--time-to-accuracy): held-out FG-IoU against training time, per recipe")
    t.add_argument("--time-to-accuracy", action="store_true", help="train each --recipe for --minutes and record learning curves")
    t.add_argument("--recipe", action="append", help="recipes to compare (default: paper and fast)")
    t.add_argument("--minutes", type=positive_float, default=10.0, help="training budget of each recipe (default 10)")
    t.add_argument("--probe-seconds", type=positive_float, default=60.0, help="score held-out images every this many training seconds")
    t.add_argument("--held-out", type=positive_int, default=300, help="held-out images scored at each probe (default 300)")
    t.add_argument("--n-train", type=positive_int, help="training images (default: the paper's split)")
    t.add_argument("--seed", type=nonneg_int, default=0)
    t.add_argument("--out", default="benchmarks/results", help="folder for the JSON, Markdown and SVG (default benchmarks/results)")
    p.set_defaults(func=run_bench)


def run_time_to_accuracy(args) -> int:
    from ..presets import PRESETS
    from ..time_to_accuracy import time_to_accuracy, to_markdown, write_report
    from ..training import RECIPES, DataConfig

    preset = (args.preset or ["nwm-linear-tetrominoes"])[0]
    recipes = tuple(args.recipe or ("paper", "fast"))
    for r in recipes:
        if r not in RECIPES:
            raise UserError(f"unknown recipe {r!r}; valid: {', '.join(RECIPES)}")
    if not os.path.isdir(args.out):
        raise UserError(f"{args.out}: no such folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = DataConfig(dataset=PRESETS.get(preset).dataset, n_train=args.n_train)
    report = time_to_accuracy(preset, recipes, minutes=args.minutes, seed=args.seed, probe_s=args.probe_seconds,
                              held_out=args.held_out, device=args.device, data=data)
    paths = write_report(report, args.out)
    print(to_markdown(report))
    print("wrote " + ", ".join(paths.values()))
    return 0


def run_bench(args) -> int:
    from ..presets import PRESETS
    from ..training import pick_device

    if args.time_to_accuracy:
        return run_time_to_accuracy(args)
    for path in (args.json, args.markdown):
        if path:
            writable_target(path)
    presets = args.preset or ["nwm-linear-tetrominoes"]
    for name in presets:
        if not is_recurrent(PRESETS.get(name).model):
            raise UserError(f"{name}: only the recurrent models (nwm-…, lstm-…) have a fast engine to time")
    overrides = parse_overrides(args.set)
    for name in presets:
        PRESETS.get(name).build_config(**overrides)  # unknown fields fail here, before any work
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    settings = [Setting(p, b, args.image_size, overrides) for p in presets for b in args.batch]
    report = run_benchmark(settings, device, steps=args.steps, infer_runs=args.inference_runs,
                           memory=not args.no_memory, progress=lambda s: print(s, file=sys.stderr, flush=True))
    table = to_markdown(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    print(table)
    return 0
