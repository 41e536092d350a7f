"""SPEC §9 metrics on hand-made masks."""
import pytest
import torch
import torch.nn.functional as F

from waveviz.metrics import MetricAccumulator, per_image_metrics, segmentation_metrics


def onehot_logits(pred: torch.Tensor, n: int) -> torch.Tensor:
    return F.one_hot(pred, n).permute(0, 3, 1, 2).float() * 10


def test_hand_made_masks():
    true = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [0, 2, 2, 0], [0, 0, 0, 0]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 0, 1, 2], [0, 2, 0, 0], [0, 0, 0, 0]]])
    m = segmentation_metrics(onehot_logits(pred, 3), true)
    # foreground: 6 pixels, 4 right (three 1s, one 2), 2 wrong (one 1 → 2, one 2 → 0)
    assert m["fg_acc"] == pytest.approx(4 / 6, rel=1e-5)
    assert m["fg_iou"] == pytest.approx(4 / (4 + 2 * 2), rel=1e-5)
    # all pixels: 16, wrong = the 2 above + one background predicted as 1 → 13 right
    assert m["acc"] == pytest.approx(13 / 16, rel=1e-5)
    assert m["iou"] == pytest.approx(13 / (13 + 2 * 3), rel=1e-5)


def test_iou_equals_the_class_union_definition():
    torch.manual_seed(0)
    true = torch.randint(0, 4, (1, 9, 9))
    pred = torch.randint(0, 4, (1, 9, 9))
    fg = true != 0
    t, p = true[fg], pred[fg]
    inter = sum(((p == c) & (t == c)).sum() for c in range(4))
    union = sum(((p == c) | (t == c)).sum() for c in range(4))
    assert segmentation_metrics(onehot_logits(pred, 4), true)["fg_iou"] == pytest.approx(float(inter / union), rel=1e-5)


def test_per_image_average_and_empty_images_are_skipped():
    true = torch.zeros(3, 2, 2, dtype=torch.long)
    true[0, 0, 0] = 1  # 1 fg pixel, predicted right
    true[1] = 1  # 4 fg pixels, 2 right
    pred = torch.zeros_like(true)
    pred[0, 0, 0] = 1
    pred[1, 0] = 1
    acc = MetricAccumulator()
    acc.update(onehot_logits(pred[:2], 2), true[:2])
    acc.update(onehot_logits(pred[2:], 2), true[2:])  # image 3: no foreground
    m = acc.compute()
    assert m["fg_acc"] == pytest.approx((1.0 + 0.5) / 2)  # per image, then averaged
    assert torch.isnan(per_image_metrics(onehot_logits(pred, 2), true)["fg_acc"][2])


def test_fg_loss_is_cross_entropy_over_foreground():
    logits = torch.randn(2, 3, 4, 4)
    true = torch.randint(0, 3, (2, 4, 4))
    true[:, 0, 0] = 1
    ce = F.cross_entropy(logits, true, reduction="none")
    expect = sum(ce[i][true[i] != 0].mean() for i in range(2)) / 2
    assert segmentation_metrics(logits, true)["fg_loss"] == pytest.approx(float(expect), rel=1e-5)
