"""The fast wave engine against the reference on the issue's settings, for the README.

    python benchmarks/bench_engine.py                       # CUDA when present, else CPU
    python benchmarks/bench_engine.py --device cpu --repeats 3 --out benchmarks/results/engine-cpu

CPU: NWM-linear Tetrominoes (64², C = 2, T = 100) at batch 16 and 64, and the ConvLSTM (T = 20).
CUDA: the same at batch 64, plus NWM-linear Multi-MNIST (128², C = 16, batch 64), whose peak memory
is the issue's point. Each setting is measured `--repeats` times (whole runs, so a busy machine's
slow phases land in one repeat rather than in one engine); the table reports the median repeat.
Writes OUT.json (every repeat, the environment) and OUT.md (the table), and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from waveviz.bench import Setting, run_benchmark, to_markdown  # noqa: E402
from waveviz.training import pick_device  # noqa: E402

SUITES = {
    "cpu": [Setting("nwm-linear-tetrominoes", 16), Setting("nwm-linear-tetrominoes", 64),
            Setting("lstm-linear-tetrominoes", 16)],
    "cuda": [Setting("nwm-linear-tetrominoes", 64), Setting("nwm-linear-multi_mnist", 64),
             Setting("lstm-linear-tetrominoes", 64)],
}


def median_report(reports: list[dict]) -> dict:
    """Per setting, the repeat whose fast/reference train-step ratio is the median one."""
    out = dict(reports[0])
    out["results"] = []
    for i in range(len(reports[0]["results"])):
        runs = sorted((r["results"][i] for r in reports), key=lambda r: r["speedup_train"])
        out["results"].append(runs[len(runs) // 2])
    out["repeats"] = len(reports)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--inference-runs", type=int, default=20)
    p.add_argument("--threads", type=int)
    p.add_argument("--out", help="path prefix for .json and .md (default: benchmarks/results/engine-<device>)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    suite = SUITES["cuda" if device.type == "cuda" else "cpu"]
    reports = []
    for r in range(args.repeats):
        print(f"repeat {r + 1}/{args.repeats}", file=sys.stderr, flush=True)
        reports.append(run_benchmark(suite, device, steps=args.steps, infer_runs=args.inference_runs,
                                     memory=r == 0, progress=lambda s: print("  " + s, file=sys.stderr, flush=True)))
    for rep in reports[1:]:  # memory is measured once; it does not depend on the machine's load
        for a, b in zip(rep["results"], reports[0]["results"]):
            for eng, e in a["engines"].items():
                for k in ("peak_memory_bytes", "memory_ratio"):
                    if k in b["engines"][eng]:
                        e[k] = b["engines"][eng][k]
            if "memory_ratio" in b:
                a["memory_ratio"] = b["memory_ratio"]
    report = median_report(reports)
    report["all_repeats"] = [[{"label": r["label"], "speedup_train": r["speedup_train"],
                               "speedup_inference": r["speedup_inference"],
                               "speedup_train_bf16": r["engines"]["fast-bf16"]["speedup_train"],
                               "speedup_inference_bf16": r["engines"]["fast-bf16"]["speedup_inference"],
                               "train_step_s": {e: v["train_step_s"] for e, v in r["engines"].items()},
                               "inference_1_image_s": {e: v["inference_1_image_s"] for e, v in r["engines"].items()}}
                              for r in rep["results"]] for rep in reports]
    table = to_markdown(report)
    if args.repeats > 1:
        spread = "; ".join(
            f"{report['results'][i]['label'].split(',')[0]} B={report['results'][i]['setting']['batch']}: train ×"
            + "/".join(f"{rep[i]['speedup_train']:.2f}" for rep in report["all_repeats"])
            + " (fast-bf16 ×" + "/".join(f"{rep[i]['speedup_train_bf16']:.2f}" for rep in report["all_repeats"]) + ")"
            for i in range(len(report["results"])))
        table += (f"\n\nTrain-step speed-ups of fast (and fast-bf16) in each of the {args.repeats} repeats "
                  f"(the table shows the repeat with the median fast speed-up): {spread}.")
    prefix = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"engine-{device.type}")
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with open(prefix + ".json", "w") as f:
        json.dump(report, f, indent=2)
    with open(prefix + ".md", "w") as f:
        f.write(table + "\n")
    print(table)
    print(f"\nwrote {prefix}.json and {prefix}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
