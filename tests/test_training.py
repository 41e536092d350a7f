"""A short CPU training run in which the loss falls; best-validation weights; resume."""
import math

import pytest
import torch

from waveviz import load_checkpoint
from waveviz.training import DataConfig, TrainConfig, Trainer, pick_device, train_preset


@pytest.mark.slow
def test_short_train_loss_falls_and_checkpoint_describes_itself(tmp_path):
    out = str(tmp_path / "m.pt")
    info = train_preset("nwm-linear-tetrominoes", out,
                        data=DataConfig("tetrominoes", n_train=16, n_val=4, n_test=4),
                        train=TrainConfig(epochs=4, batch_size=8, seed=1), overrides={"T": 8, "head": (32, 32)})
    losses = [r["train_loss"] for r in info["history"]]
    assert losses[-1] < losses[0]
    assert info["epochs"] == 4 and len(info["history"]) == 4
    model, ck = load_checkpoint(out)
    meta = ck["meta"]
    assert ck["preset"] == "nwm-linear-tetrominoes" and ck["config"]["T"] == 8
    assert meta["status"] == "finished" and meta["splits"] == {"train": 16, "val": 4, "test": 4}
    assert set(meta["test_metrics"]) >= {"fg_acc", "fg_iou", "fg_loss"}
    assert meta["best_val_loss"] == min(r["val_loss"] for r in meta["history"])
    assert meta["wall_time_s"] > 0 and "cpu" in meta["hardware"]


@pytest.mark.slow
def test_train_with_the_bf16_engine_records_it(tmp_path, monkeypatch):
    """TrainConfig.engine sets how the model computes during training and lands in the checkpoint;
    on a CPU without native bf16 the trainer says, once, that fast-bf16 is emulated there."""
    monkeypatch.setenv("WAVEVIZ_BF16", "emulate")
    out = str(tmp_path / "m.pt")
    seen = []
    cb = lambda event, tr, info: seen.append(tr.model.engine) if event == "epoch" else None  # noqa: E731
    with pytest.warns(RuntimeWarning, match="fast-bf16's products are emulated"):
        info = train_preset("nwm-linear-polygons", out, data=DataConfig("polygons", n_train=8, n_val=4, n_test=0),
                            train=TrainConfig(epochs=2, batch_size=4, engine="fast-bf16"), callbacks=[cb],
                            overrides={"T": 6, "head": (16,)})
    assert seen == ["fast-bf16", "fast-bf16"] and info["train"]["engine"] == "fast-bf16"
    assert math.isfinite(info["history"][-1]["val_loss"])
    _, ck = load_checkpoint(out)
    assert ck["meta"]["train"]["engine"] == "fast-bf16"


@pytest.mark.slow
def test_resume_continues_where_it_stopped(tmp_path):
    out = str(tmp_path / "m.pt")
    kw = dict(data=DataConfig("polygons", n_train=16, n_val=4, n_test=0), overrides={"head": (16,)})
    train_preset("cnn2-polygons", out, train=TrainConfig(epochs=2, batch_size=8), **kw)
    info = train_preset("cnn2-polygons", out, train=TrainConfig(epochs=3, batch_size=8), resume=True, **kw)
    assert [r["epoch"] for r in info["history"]] == [1, 2, 3]
    assert info["hardware"].startswith("cpu") and " + " not in info["hardware"]  # same hardware: named once


@pytest.mark.slow
def test_resume_takes_this_runs_learning_rate(tmp_path):
    out = str(tmp_path / "m.pt")
    kw = dict(data=DataConfig("polygons", n_train=8, n_val=4, n_test=0), overrides={"head": (16,)})
    train_preset("cnn2-polygons", out, train=TrainConfig(epochs=1, batch_size=8), **kw)
    seen = []
    cb = lambda event, tr, info: seen.append(tr.optimizer.param_groups[0]["lr"]) if event == "epoch" else None  # noqa: E731
    train_preset("cnn2-polygons", out, train=TrainConfig(epochs=2, batch_size=8, lr=3e-4), resume=True,
                 callbacks=[cb], **kw)
    assert seen == [3e-4]


@pytest.mark.slow
def test_a_run_continued_on_other_hardware_names_both(tmp_path):
    from waveviz.checkpoint import read_checkpoint

    out = str(tmp_path / "m.pt")
    kw = dict(data=DataConfig("polygons", n_train=8, n_val=4, n_test=0), overrides={"head": (16,)})
    train_preset("cnn2-polygons", out, train=TrainConfig(epochs=1, batch_size=8), **kw)
    last = read_checkpoint(out + ".last")
    last["meta"]["hardware"] = "NVIDIA H200"  # as if the first epoch had run on a GPU
    torch.save(last, out + ".last")
    info = train_preset("cnn2-polygons", out, train=TrainConfig(epochs=2, batch_size=8), resume=True, **kw)
    assert info["hardware"].startswith("NVIDIA H200 + cpu")


def test_trainer_keeps_best_validation_weights():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 2, 1)
    x = torch.rand(8, 1, 4, 4)
    y = (x[:, 0] > 0.5).long()
    tr = Trainer(model, (x, y), (x, y), TrainConfig(epochs=3, batch_size=4, lr=0.1, device="cpu"))
    tr.fit()
    assert tr.best_val_loss == min(r["val_loss"] for r in tr.history)


def _clocked_trainer(monkeypatch, n: int, batch: int, minutes: float, batch_s: float) -> tuple[Trainer, list]:
    """A trainer on a fake clock that advances `batch_s` seconds per batch (and not otherwise), and
    its events: the budget's decisions become exact."""
    import types

    import waveviz.training as training

    now = [1000.0]
    monkeypatch.setattr(training, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    torch.manual_seed(0)
    x = torch.rand(n, 1, 4, 4)
    y = (x[:, 0] > 0.5).long()
    events = []

    def cb(event, tr, info):
        events.append(event)
        if event == "batch":
            now[0] += batch_s

    cfg = TrainConfig(epochs=1000, batch_size=batch, lr=0.1, device="cpu", patience=None, max_minutes=minutes)
    return Trainer(torch.nn.Conv2d(1, 2, 1), (x, y), (x, y), cfg, [cb]), events


def test_time_budget_ends_an_overlong_epoch_and_keeps_what_it_learned(monkeypatch):
    tr, events = _clocked_trainer(monkeypatch, n=64, batch=4, minutes=0.5, batch_s=10.0)  # 16 batches = 160 s > 30 s
    tr.fit()
    # the check after batch 3 (30 s) is not late yet; the one after batch 4 (40 s) is: 4 batches ran
    assert events.count("batch") == 4 and len(tr.history) == 1
    assert tr.history[0]["partial"] and tr.best_epoch == 1 and math.isfinite(tr.history[0]["train_loss"])
    assert events[-2:] == ["budget_stop", "end"] and tr.deadline is None


def test_time_budget_does_not_begin_an_epoch_that_would_not_fit(monkeypatch):
    tr, events = _clocked_trainer(monkeypatch, n=4, batch=4, minutes=1.0, batch_s=25.0)  # 1 batch = 25 s an epoch
    tr.fit()
    # epochs end at 25 and 50 s; a third would end at 75 s > 60 s, so it is not begun
    assert len(tr.history) == 2 and not any(r.get("partial") for r in tr.history)
    assert events.count("batch") == 2 and "budget_stop" in events


@pytest.mark.parametrize("bad,match", [
    (dict(epochs=0), "epochs"), (dict(batch_size=0), "batch size"), (dict(lr=-1.0), "learning rate"),
    (dict(lr=math.nan), "learning rate"), (dict(patience=0), "patience"),
    (dict(max_minutes=0.0), "time budget"), (dict(max_minutes=math.inf), "time budget"),
    (dict(engine="turbo"), "unknown engine 'turbo'"),
])
def test_impossible_settings_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**bad).validate()


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            pick_device("cuda")
