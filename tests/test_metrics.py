"""SPEC §9 metrics on hand-made masks."""
import pytest
import torch
import torch.nn.functional as F

from waveviz.metrics import MetricAccumulator, class_report, foreground_confusion, per_image_metrics, segmentation_metrics


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


def test_per_class_report_on_hand_made_masks():
    """The hand-made masks above, per class: class 1 has 4 pixels, 3 right, 1 taken for 2; class 2 has
    2 pixels, 1 right, 1 taken for background; label 2 was also given to one pixel of class 1."""
    true = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [0, 2, 2, 0], [0, 0, 0, 0]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 0, 1, 2], [0, 2, 0, 0], [0, 0, 0, 0]]])
    c = foreground_confusion(pred, true, 3)
    assert c.tolist() == [[0, 0, 0], [0, 3, 1], [1, 0, 1]]  # background rows: no foreground pixel is label 0
    one, two = class_report(c, ("bg", "one", "two"))
    assert one == {"class": "one", "pixels": 4, "fg_acc": 0.75, "fg_iou": 3 / 4, "confused_with": "two",
                   "confused_share": 0.25}
    assert two["pixels"] == 2 and two["fg_acc"] == 0.5 and two["fg_iou"] == pytest.approx(1 / 3)  # 1 / (2 + 2 − 1)
    assert two["confused_with"] == "bg"
    # pooled over all foreground pixels, the diagonal's share is FG-Acc of one image
    assert float(c.diagonal().sum() / c.sum()) == pytest.approx(segmentation_metrics(onehot_logits(pred, 3), true)["fg_acc"])


def test_a_class_without_pixels_is_left_out_and_a_perfect_one_is_confused_with_nothing():
    true = torch.tensor([[[1, 1], [0, 0]]])
    (row,) = class_report(foreground_confusion(true, true, 4), ("bg", "a", "b", "c"))
    assert row["class"] == "a" and row["fg_iou"] == 1.0 and row["confused_with"] is None


def test_evaluate_pools_the_confusion_of_every_image_and_every_rank(monkeypatch):
    """`evaluate(confusion=True)`: the counts equal `foreground_confusion` of the predictions; two
    ranks' shards (the all-reduce stood in for by a sum) add up to one process's."""
    from waveviz import distributed
    from waveviz.presets import create_model
    from waveviz.training import evaluate, predict

    torch.manual_seed(0)
    model = create_model("cnn2-polygons", image_size=16)
    x, y = torch.rand(7, 1, 16, 16), torch.randint(0, 5, (7, 16, 16))
    whole = evaluate(model, (x, y), batch_size=3, confusion=True)
    assert torch.equal(whole["confusion"], foreground_confusion(predict(model, x), y, 5))
    assert "confusion" not in evaluate(model, (x, y), batch_size=3)
    monkeypatch.setattr(distributed.DistEnv, "all_reduce_sum", lambda self, t: t)  # each rank keeps its own
    parts = [evaluate(model, (x, y), batch_size=2, confusion=True, dist=distributed.DistEnv(r, 2))["confusion"]
             for r in (0, 1)]
    assert torch.equal(parts[0] + parts[1], whole["confusion"]) and parts[0].sum() > 0 and parts[1].sum() > 0
