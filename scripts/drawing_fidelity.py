"""What the drawing path costs a model: held-out samples redrawn as a user would draw them.

    python scripts/drawing_fidelity.py                        # every data set's best shipped wave model
    python scripts/drawing_fidelity.py --n 20 --ckpt checkpoints/nwm-linear-mnist.pt --json

For each data set, n held-out test samples (seed 10,000, as `waveviz results --fresh`) are turned back
into canvas drawings (`waveviz.drawing.redraw_dataset`: Tetrominoes pieces clicked and dragged onto the
block grid, Polygons' corners clicked, digits written along their skeletons with the tool's brush at
several sizes and places), sent through the app's drawing tool (`waveviz.drawing.TOOLS`), and
segmented. Reported: the model's FG-IoU on the samples themselves and on the redrawn images (each
against its own true mask), and the gap; the goal is a gap within 0.05. Rerun it after retraining.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from waveviz import drawing  # noqa: E402
from waveviz.app.catalog import shipped_best_by_dataset  # noqa: E402
from waveviz.checkpoint import load_checkpoint, trained_dataset, trained_with_amp  # noqa: E402
from waveviz.data import make_dataset  # noqa: E402
from waveviz.engine import bf16_autocast  # noqa: E402
from waveviz.metrics import segmentation_metrics  # noqa: E402
from waveviz.results import FRESH_SEED  # noqa: E402

PX = 320  # the app's canvas


@torch.inference_mode()
def fg_iou(model, images: np.ndarray, masks: np.ndarray, amp: bool) -> float:
    x = torch.from_numpy(images).float().div(255)
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    with bf16_autocast("cpu", enabled=amp):
        logits = model(x.contiguous()).float()
    return segmentation_metrics(logits, torch.from_numpy(masks))["fg_iou"]


def measure(ckpt: Path, n: int) -> dict:
    model, info = load_checkpoint(ckpt)
    dataset = trained_dataset(info)
    data = make_dataset(dataset, n, seed=FRESH_SEED, split="test")
    images, masks, dropped = drawing.redraw_dataset(dataset, data.images, data.masks, px=PX)
    amp = trained_with_amp(info)
    own, drawn = fg_iou(model, data.images, data.masks, amp), fg_iou(model, images, masks, amp)
    return {"dataset": dataset, "checkpoint": str(ckpt.relative_to(ROOT) if ckpt.is_relative_to(ROOT) else ckpt),
            "n": n, "samples_fg_iou": round(own, 4), "redrawn_fg_iou": round(drawn, 4),
            "gap": round(own - drawn, 4), "within_0.05": abs(own - drawn) <= 0.05, "pieces_dropped": dropped}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", type=Path, action="append", help="checkpoints to measure (default: each data "
                    "set's best shipped wave model: what the app opens on)")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    ckpts = a.ckpt or list(shipped_best_by_dataset(recurrent=True).values())
    rows = [measure(Path(c), a.n) for c in ckpts]
    if a.json:
        print(json.dumps(rows, indent=1))
        return
    print("| data set | checkpoint | samples FG-IoU | redrawn FG-IoU | gap | within 0.05 |")
    print("|---|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['checkpoint']} | {r['samples_fg_iou']:.3f} | {r['redrawn_fg_iou']:.3f} | "
              f"{r['gap']:+.3f} | {'yes' if r['within_0.05'] else 'no'} |"
              + (f" ({r['pieces_dropped']} pieces found no place)" if r["pieces_dropped"] else ""))


if __name__ == "__main__":
    main()
