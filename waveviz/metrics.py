"""Segmentation metrics (SPEC §9): per image, then averaged over images.

FG-* use only the pixels whose true label is not 0 (images without foreground are skipped);
the plain versions use all pixels. IoU = Σ_c |pred=c ∧ true=c| / Σ_c |pred=c ∨ true=c| over the
chosen pixels, which equals correct / (correct + 2·wrong).

Per class (not in the paper; `foreground_confusion`, `class_report`): the foreground pixels of the
whole set pooled into a confusion matrix, so each class's accuracy and IoU weigh images by their
pixels rather than averaging per image as the SPEC §9 numbers do.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

METRIC_NAMES = ("fg_acc", "fg_iou", "fg_loss", "acc", "iou", "loss")
METRIC_LABELS = {"fg_acc": "FG-Acc", "fg_iou": "FG-IoU", "fg_loss": "FG-Loss", "acc": "Acc", "iou": "IoU", "loss": "Loss"}


@torch.no_grad()
def per_image_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """logits (B, N, H, W), target (B, H, W) → each metric as (B,) (NaN where an image has no foreground)."""
    B = target.shape[0]
    ce = F.cross_entropy(logits.float(), target, reduction="none").reshape(B, -1)  # (B, H·W)
    correct = (logits.argmax(1) == target).reshape(B, -1).float()
    fg = (target != 0).reshape(B, -1).float()
    out = {}
    for prefix, w in (("fg_", fg), ("", torch.ones_like(fg))):
        n = w.sum(1)
        right = (correct * w).sum(1)
        wrong = n - right
        out[prefix + "acc"] = right / n
        out[prefix + "iou"] = right / (right + 2 * wrong)
        out[prefix + "loss"] = (ce * w).sum(1) / n
    return out  # 0/0 = NaN marks images without foreground


class MetricAccumulator:
    """Collects per-image metrics over batches; `compute()` averages, skipping images with no foreground."""

    def __init__(self):
        self.parts: dict[str, list[torch.Tensor]] = {k: [] for k in METRIC_NAMES}

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        for k, v in per_image_metrics(logits, target).items():
            self.parts[k].append(v.detach().cpu())

    def compute(self) -> dict[str, float]:
        res = {}
        for k, vs in self.parts.items():
            v = torch.cat(vs) if vs else torch.empty(0)
            v = v[~torch.isnan(v)]
            res[k] = float(v.mean()) if len(v) else float("nan")
        return res


def segmentation_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    acc = MetricAccumulator()
    acc.update(logits, target)
    return acc.compute()


@torch.no_grad()
def foreground_confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """pred, target (B, H, W) labels → (N, N) int64 counts over the foreground pixels (target ≠ 0):
    row = true class, column = predicted class (column 0: taken for background)."""
    fg = target != 0
    idx = target[fg].long() * num_classes + pred[fg].long()
    return torch.bincount(idx.cpu(), minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def class_report(confusion: torch.Tensor, class_names: tuple[str, ...] | list[str]) -> list[dict]:
    """A (N, N) `foreground_confusion` → one row per foreground class with pixels: {class, pixels,
    fg_acc (its pixels predicted right), fg_iou (right / (its pixels + pixels wrongly given its
    label)), confused_with (the label most often wrongly given to its pixels, or None), confused_share}."""
    c = confusion.double()
    rows = []
    for k in range(1, len(c)):
        n = float(c[k].sum())
        if n == 0:
            continue
        right = float(c[k, k])
        wrong = c[k].clone()
        wrong[k] = 0
        j = int(wrong.argmax())
        rows.append({"class": class_names[k], "pixels": int(n), "fg_acc": right / n,
                     "fg_iou": right / (n + float(c[:, k].sum()) - right),
                     "confused_with": class_names[j] if wrong[j] > 0 else None, "confused_share": float(wrong[j]) / n})
    return rows
