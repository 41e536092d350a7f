"""The time-to-accuracy bench: both recipes on the same data, curves with paused probes, the report files."""
import json

import torch

from waveviz.time_to_accuracy import run_recipe, seconds_to, time_to_accuracy, to_markdown, write_report
from waveviz.training import DataConfig, TrainConfig


def test_time_to_accuracy_report(tmp_path):
    data = DataConfig("polygons", n_train=16, n_val=4, n_test=6)
    report = time_to_accuracy("cnn2-polygons", ("paper", "fast"), minutes=0.15, probe_s=2.0, held_out=6,
                              device="cpu", data=data)
    assert [r["recipe"] for r in report["runs"]] == ["paper", "fast"] and report["held_out"] == 6
    for r in report["runs"]:
        c = r["curve"]
        assert c and all(0 <= p["fg_iou"] <= 1 for p in c)
        assert [p["seconds"] for p in c] == sorted(p["seconds"] for p in c)
        assert c[-1]["seconds"] <= 0.15 * 60 + 3  # probes paused the clock: the budget holds
        assert r["config"]["recipe"] == r["recipe"] and r["images_seen"] == c[-1]["images"] > 0
    assert report["runs"][0]["config"]["batch_size"] == 64 and report["runs"][1]["config"]["points"] == 0.125
    assert seconds_to([{"seconds": 5, "fg_iou": 0.4}, {"seconds": 9, "fg_iou": 0.91}], 0.9) == 9
    assert seconds_to([{"seconds": 5, "fg_iou": 0.4}], 0.9) is None
    paths = write_report(report, str(tmp_path))
    assert json.load(open(paths["json"]))["preset"] == "cnn2-polygons"
    assert "| paper |" in to_markdown(report) and open(paths["svg"]).read().startswith("<svg")


def test_a_run_takes_the_recipe_as_set_for_the_presets_data_set():
    """MNIST's fast recipe has its own lr (DATASET_CHANGES); a change given still wins."""
    x, y = torch.rand(4, 1, 56, 56), torch.randint(0, 11, (4, 56, 56))
    small = {"T": 4, "head": (8,)}
    for changes, lr in (({}, TrainConfig.from_recipe("fast", "mnist").lr), ({"lr": 1e-2}, 1e-2)):
        r = run_recipe("nwm-linear-mnist", "fast", (x, y), (x, y), (x, y), minutes=0.02, seed=0, probe_s=60,
                       device=torch.device("cpu"), changes=changes, overrides=small)
        assert r["config"]["lr"] == lr and r["steps"] >= 1
        assert set(r["gates"]) == {"omega", "alpha"} and len(r["gates"]["omega"]) == 2  # C = 2 channels
    assert TrainConfig.from_recipe("fast", "mnist").lr != TrainConfig().lr
