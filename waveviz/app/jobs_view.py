"""What the Train page shows about jobs, as plain functions: the launch form's defaults (from the
training config, never the page's own numbers), how long a run will take before it is launched,
how a job's state reads, and when a finished job deserves a warning.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from .. import jobs
from ..data import DATASETS
from ..paths import jobs_dir, shipped_checkpoints
from ..presets import PRESETS, create_model
from ..training import DATASET_CHANGES, TrainConfig, hardware_name, pick_device

NEAR_ZERO_IOU = 0.05  # a finished job whose FG-IoU is below this learnt (almost) nothing
VAL_COST = 1 / 3  # a validation image costs about a third of a training image (forward only)


def form_defaults(recipe: str = "fast", dataset: str | None = None) -> dict:
    """The launch form's starting values: every JobSpec field's default, with the training fields
    taken from `TrainConfig.from_recipe(recipe, dataset)` (the one source of training defaults: a change there
    changes the form). Fields the form has no widget for travel with the spec as they are."""
    out = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
           for f in dataclasses.fields(jobs.JobSpec)
           if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    train = TrainConfig.from_recipe(recipe, dataset)
    out.update({f.name: getattr(train, f.name) for f in dataclasses.fields(TrainConfig) if f.name in out})
    return out


def spec_from_form(preset: str, values: dict) -> jobs.JobSpec:
    """A JobSpec from the form's values on top of `form_defaults(values["recipe"], the preset's data
    set)` (unknown keys are dropped)."""
    dataset = PRESETS.get(preset).dataset if preset in PRESETS else None  # (JobSpec refuses a bad name)
    return jobs.JobSpec.from_dict({**form_defaults(values.get("recipe", "fast"), dataset), **values, "preset": preset})


SCRATCH = "scratch (the recipe's initialisation)"


def start_choices(preset: str, entries: dict) -> dict[str, dict]:
    """The form's "Start from" options for `preset` from the model catalog (id → `catalog.ModelEntry`)
    → label: the JobSpec fields it sets. Scratch first; then fine-tunes of the checkpoints of this
    very preset; then transfers from the same model family trained on another data set."""
    p = PRESETS.get(preset)
    out: dict[str, dict] = {SCRATCH: {}}
    for e in entries.values():
        if e.preset == preset:
            out[f"fine-tune {e.id}"] = {"init": str(e.path)}
    for e in entries.values():
        if e.family == p.model and e.dataset != p.dataset:
            out[f"transfer from {e.id} ({e.dataset})"] = {"transfer": str(e.path)}
    return out


# The form's widgets for recipe-set training fields: field → (widget key, value in the widget → in the
# spec, value in the spec → in the widget). 0 in a widget means "off" (None) where the field allows it.
RECIPE_WIDGETS: dict[str, tuple[str, object, object]] = {
    "epochs": ("train_epochs", int, int),
    "batch_size": ("train_batch", int, int),
    "lr": ("train_lr", float, float),
    "max_minutes": ("train_minutes", lambda v: float(v) or None, lambda v: float(v or 0.0)),
    "patience": ("train_patience", lambda v: int(v) or None, lambda v: int(v or 0)),
    "grad_clip": ("train_grad_clip", lambda v: float(v) or None, lambda v: float(v or 0.0)),
    "schedule": ("train_schedule", str, str),
    "warmup": ("train_warmup", float, float),
    "points": ("train_points", lambda v: float(v) if 0 < v < 1 else None, lambda v: float(v or 1.0)),
    "fg_weight": ("train_fg_weight", float, float),
    "val_images": ("train_val_images", lambda v: int(v) or None, lambda v: int(v or 0)),
    "gate_bias_init": ("train_gate_bias", lambda v: float(v) or None, lambda v: float(v or 0.0)),
}


def recipe_widget_values(recipe: str, dataset: str | None = None, only: tuple[str, ...] | None = None) -> dict[str, object]:
    """widget key → starting value for a recipe on a data set (what the form shows after choosing
    them); `only`: just these training fields."""
    d = form_defaults(recipe, dataset)
    return {key: to_widget(d[name]) for name, (key, _, to_widget) in RECIPE_WIDGETS.items()
            if only is None or name in only}


def dataset_fields(recipe: str) -> tuple[str, ...]:
    """The training fields the recipe sets differently on some data set (`DATASET_CHANGES`): what the
    form refills when another preset is picked."""
    return tuple(sorted({k for changes in DATASET_CHANGES.get(recipe, {}).values() for k in changes}))


# ------------------------------------------------------------------------ run time

@dataclass(frozen=True)
class Speed:
    """Training throughput: images per second of a whole epoch (its validation included when
    `per_epoch`), and where the number comes from, in words."""

    images_per_s: float
    source: str
    per_epoch: bool = False


def split_sizes(spec: jobs.JobSpec) -> tuple[int, int, int] | None:
    """(training, validation, test) images of a generated-data job; None for an .npz job."""
    if spec.npz:
        return None
    paper = DATASETS.get(PRESETS.get(spec.preset).dataset).paper_splits
    return spec.n_train or paper[0], spec.n_val or paper[1], paper[2] if spec.n_test is None else spec.n_test


def recorded_speed(preset: str, device: str = "cpu") -> Speed | None:
    """The speed of a finished run of `preset` on hardware like this machine's: shipped checkpoints
    and this machine's jobs record each epoch's seconds and their training-set size."""
    from ..checkpoint import CheckpointError, read_checkpoint

    here = hardware_name(pick_device(device))
    found = []
    for path in [*sorted(shipped_checkpoints().glob("*.pt")), *sorted(jobs_dir().glob("*/best.pt"))]:
        try:
            ck = read_checkpoint(path)
        except CheckpointError:
            continue
        meta = ck.get("meta") or {}
        secs = [r.get("seconds") for r in meta.get("history") or [] if r.get("seconds") and not r.get("partial")]
        n = (meta.get("splits") or {}).get("train")
        if ck.get("preset") == preset and meta.get("hardware") == here and secs and n:
            found.append((n * len(secs) / sum(secs), path.stem if path.name != "best.pt" else f"job {path.parent.name}"))
    if not found:
        return None
    ips, where = max(found)
    return Speed(ips, f"recorded by {where} on this kind of machine ({here})", per_epoch=True)


def measure_speed(spec: jobs.JobSpec, batch: int = 8, steps: int = 2) -> Speed:
    """Time `steps` training steps of the spec's model on random images (after one warm-up step)
    with its device, engine and precision → images per second (seconds of work)."""
    from ..training import Trainer

    model = create_model(spec.preset, **spec.model_overrides())
    C, S, N = model.config.in_channels, model.config.image_size, model.config.num_classes
    b = max(1, min(batch, spec.batch_size))
    x = torch.rand(b * (steps + 1), C, S, S)
    y = torch.randint(0, N, (b * (steps + 1), S, S))
    cfg = TrainConfig(epochs=1, batch_size=b, device=spec.device, amp=spec.amp, engine=spec.engine)
    trainer = Trainer(model, (x[:b], y[:b]), (x[:1], y[:1]), cfg)
    trainer.train_epoch()  # warm-up: kernels, allocator
    trainer.train_data = (x[b:], y[b:])
    t0 = time.perf_counter()
    trainer.train_epoch()
    ips = b * steps / (time.perf_counter() - t0)
    return Speed(ips, f"measured now: {steps} training steps of {b} images on {hardware_name(trainer.device)}")


def estimate_seconds(spec: jobs.JobSpec, speed: Speed | None) -> tuple[float | None, str]:
    """(seconds the run will take at most, how that was worked out): training, which the time budget
    caps, then scoring the best model on the test and validation images. Early stopping can end a
    run sooner. None when there is neither a budget nor a speed to go on."""
    budget = spec.max_minutes * 60 if spec.max_minutes else None
    sizes = split_sizes(spec)
    if speed is None or sizes is None:
        if budget:
            return budget, "the time budget, then scoring the best model (not counted: measure the speed to include it)"
        return None, "no speed known for this preset on this machine yet: measure it"
    n_train, n_val, n_test = sizes
    per_epoch = n_train / speed.images_per_s * (1 if speed.per_epoch else 1 + VAL_COST * n_val / n_train)
    total = spec.epochs * per_epoch
    scoring = VAL_COST * (n_test + n_val) / speed.images_per_s
    score = f"{fmt_seconds(scoring)} to score {n_test:,} test and {n_val:,} validation images at the end"
    how = (f"{spec.epochs} epochs × {n_train:,} images at {speed.images_per_s:.3g} images/s "
           f"({fmt_seconds(per_epoch)} an epoch; {speed.source})")
    if budget and budget < total:
        return budget + scoring, f"the time budget and {score} (the epochs alone would take {fmt_seconds(total)}: {how})"
    return total + scoring, f"{how}, and {score}"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    s = int(round(s))
    if s >= 86_400:
        return f"{s // 86_400}d {s % 86_400 // 3600:02d}h"
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


# ---------------------------------------------------------------------------- states

def state_label(status: dict) -> str:
    """How a job's state reads: "cancelling…" / "finishing…" from the moment Cancel / Finish now is
    pressed until the worker stops (it does at its next batch), else the state itself."""
    if status.get("cancelling"):
        return "cancelling…"
    if status.get("finishing"):
        return "finishing…"
    return status.get("state", "?")


def finished_fg_iou(status: dict, records: list[dict]) -> float | None:
    """A finished job's FG-IoU: its best checkpoint's stored test metric, else the best validation
    value of its epochs; None for jobs not finished or without numbers."""
    if status.get("state") != "finished":
        return None
    if status.get("checkpoint"):
        from .catalog import describe

        e = describe(status["checkpoint"])
        if e is not None and e.metrics and e.metrics.get("fg_iou") is not None:
            return float(e.metrics["fg_iou"])
    vals = [r["val_fg_iou"] for r in records if isinstance(r.get("val_fg_iou"), (int, float))]
    return max(vals) if vals else None


def near_zero_warning(status: dict, records: list[dict]) -> str | None:
    """One line when a finished job learnt (almost) nothing: FG-IoU ≈ 0 means it labels the shapes'
    pixels wrong, usually as background everywhere."""
    v = finished_fg_iou(status, records)
    if v is None or v >= NEAR_ZERO_IOU:
        return None
    return (f"FG-IoU {v:.3f} ≈ 0: this model labels almost every shape pixel wrong (most likely it calls "
            "everything background). Train longer — more epochs or images — or resume this job with more epochs.")


def learning_curves(records: list[dict], curve: list[dict]) -> dict[str, list]:
    """A job's learning curves against training minutes (time to accuracy, as the bench plots them):
    the live training loss from curve.jsonl (a point every few seconds) and, at each finished epoch's
    end, the training and validation loss, FG-IoU and the long-wavelength share. → columns: live_min,
    live_loss, epoch_min, train_loss, val_loss, val_fg_iou, long_wavelength_share (None where not recorded)."""
    mins, t = [], 0.0
    for r in records:
        t += r.get("seconds") or 0.0
        mins.append(t / 60)
    col = lambda k: [r.get(k) for r in records]  # noqa: E731
    return {"live_min": [p["seconds"] / 60 for p in curve], "live_loss": [p["train_loss"] for p in curve],
            "epoch_min": mins, "train_loss": col("train_loss"), "val_loss": col("val_loss"), "val_fg_iou": col("val_fg_iou"),
            "long_wavelength_share": col("long_wavelength_share")}
