"""Time to accuracy: held-out FG-IoU against training seconds and images seen, for several training
recipes on the same data, seeds and machine in one run (as DAWNBench and MLPerf judge training).

    waveviz bench --time-to-accuracy [--preset P] [--minutes 10] [--recipe paper --recipe fast] --out DIR

Each recipe trains the same freshly initialised model (same seed) on the same training split for the
same time budget; every `probe_s` seconds of training, and at the end, the current weights are scored
on a held-out set drawn like the paper's test split and never trained or tuned on. Probing pauses
the training clock (`Trainer.pause`), so it costs the recipes nothing.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict

import torch

from .analysis import gate_activity
from .data import to_tensors
from .presets import PRESETS, create_model
from .training import (DataConfig, TrainConfig, Trainer, evaluate, hardware_name, load_training_data, pick_device,
                       recipe_model_overrides, transfer_weights)


def run_recipe(preset: str, recipe: str, train, val, held_out, *, minutes: float, seed: int, probe_s: float,
               device: torch.device, changes: dict | None = None, overrides: dict | None = None,
               transfer: str | None = None) -> dict:
    """Train `preset` (with model config `overrides`; started from checkpoint `transfer`'s weights by
    `transfer_weights` when given) under `recipe` as set for its data set (`DATASET_CHANGES`), with
    TrainConfig `changes`, for `minutes`; → {"config", "curve": [{seconds, images, fg_iou, …}], …}."""
    cfg = TrainConfig.from_recipe(recipe, PRESETS.get(preset).dataset, max_minutes=minutes, seed=seed,
                                  device=str(device), **(changes or {}))
    cfg.patience = None
    torch.manual_seed(seed)
    model = create_model(preset, **recipe_model_overrides(preset, cfg, overrides))
    if transfer:
        transfer_weights(model, transfer)
    curve: list[dict] = []
    next_probe = [probe_s]

    def probe(tr: Trainer) -> None:
        t0, seconds = time.perf_counter(), tr.train_seconds()
        m = evaluate(tr.model, held_out, batch_size=32, device=tr.device)
        curve.append({"seconds": round(seconds, 2), "images": tr.images_seen, "step": tr.step,
                      "fg_iou": m["fg_iou"], "fg_acc": m["fg_acc"], "loss": m["loss"]})
        tr.model.train()
        tr.pause(time.perf_counter() - t0)

    def on_event(event, tr, info):
        if event == "batch" and tr.train_seconds() >= next_probe[0]:
            next_probe[0] += probe_s
            probe(tr)

    trainer = Trainer(model, train, val, cfg, callbacks=[on_event])
    trainer.fit()
    probe(trainer)  # the last weights, at the end of the budget
    best = evaluate(trainer.best_model(), held_out, batch_size=32, device=trainer.device)
    gates = gate_activity(trainer.model, held_out[0][:32].to(trainer.device), held_out[1][:32])
    return {"recipe": recipe, "config": asdict(cfg), "overrides": dict(overrides or {}), "curve": curve, "final": curve[-1], "best_val_weights": best,
            "epochs": trainer.epoch, "steps": trainer.step, "images_seen": trainer.images_seen, "gates": gates}


def time_to_accuracy(preset: str = "nwm-linear-tetrominoes", recipes: tuple[str, ...] = ("paper", "fast"), *,
                     minutes: float = 10.0, seed: int = 0, probe_s: float = 60.0, held_out: int = 300,
                     device: str = "auto", data: DataConfig | None = None) -> dict:
    """One run of every recipe; → a report with each recipe's learning curve and the environment."""
    p = PRESETS.get(preset)
    dev = pick_device(device)
    data = data or DataConfig(dataset=p.dataset)
    splits = load_training_data(data)
    t = {k: to_tensors(v) for k, v in splits.items()}
    held = tuple(x[:held_out] for x in t["test"])
    runs = [run_recipe(preset, r, t["train"], t["val"], held, minutes=minutes, seed=seed, probe_s=probe_s, device=dev)
            for r in recipes]
    return {
        "preset": preset, "minutes": minutes, "seed": seed, "held_out": len(held[0]), "data": asdict(data),
        "splits": {k: len(v) for k, v in splits.items()}, "hardware": hardware_name(dev),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": str(torch.__version__), "date": time.strftime("%Y-%m-%d"), "runs": runs,
    }


def seconds_to(curve: list[dict], target: float) -> float | None:
    """Training seconds at the first probe whose FG-IoU reached `target` (None: never)."""
    return next((c["seconds"] for c in curve if c["fg_iou"] >= target), None)


def to_markdown(report: dict, targets=(0.5, 0.8, 0.9, 0.95)) -> str:
    head = "| recipe | images seen | final held-out FG-IoU | " + " | ".join(f"s to {t:g}" for t in targets) + " |"
    lines = [f"Time to accuracy: {report['preset']}, {report['minutes']:g} min each, seed {report['seed']}, "
             f"held-out {report['held_out']} images; {report['hardware']}, {report['threads']} threads, "
             f"torch {report['torch']}, {report['date']}.", "", head, "|" + "---|" * (3 + len(targets))]
    for r in report["runs"]:
        hit = [seconds_to(r["curve"], t) for t in targets]
        lines.append(f"| {r['recipe']} | {r['images_seen']:,} | {r['final']['fg_iou']:.3f} | "
                     + " | ".join("—" if h is None else f"{h:.0f}" for h in hit) + " |")
    return "\n".join(lines) + "\n"


def to_svg(report: dict, width: int = 760, height: int = 300) -> str:
    """Two panels, FG-IoU against training seconds and against images seen, one line per recipe."""
    colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]
    pw, ph, m = (width - 60) // 2, height - 70, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>']
    for panel, (key, label) in enumerate((("seconds", "training seconds"), ("images", "images seen"))):
        x0, y0 = m + panel * (pw + 30), 20
        xmax = max(c[key] for r in report["runs"] for c in r["curve"]) or 1
        parts.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
        for v in (0.25, 0.5, 0.75, 1.0):
            y = y0 + ph * (1 - v)
            parts.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                         f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
        parts.append(f'<text x="{x0 + pw / 2}" y="{y0 + ph + 28}" text-anchor="middle">{label} (max {xmax:,.0f})</text>')
        for i, r in enumerate(report["runs"]):
            pts = " ".join(f"{x0 + pw * c[key] / xmax:.1f},{y0 + ph * (1 - c['fg_iou']):.1f}" for c in r["curve"])
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{colours[i % 4]}" stroke-width="2"/>')
            if panel == 0:
                parts.append(f'<text x="{x0 + 8}" y="{y0 + 14 + 14 * i}" fill="{colours[i % 4]}">{r["recipe"]}</text>')
    parts.append(f'<text x="{m}" y="{height - 6}">held-out FG-IoU, {report["preset"]}, {report["hardware"]}</text></svg>')
    return "\n".join(parts)


def write_report(report: dict, out_dir: str) -> dict[str, str]:
    """JSON, Markdown and SVG files under out_dir, named by preset and date; → their paths."""
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"tta-{report['preset']}-{report['date']}")
    paths = {"json": stem + ".json", "md": stem + ".md", "svg": stem + ".svg"}
    with open(paths["json"], "w") as f:
        json.dump(report, f, indent=1)
    with open(paths["md"], "w") as f:
        f.write(to_markdown(report))
    with open(paths["svg"], "w") as f:
        f.write(to_svg(report))
    return paths
