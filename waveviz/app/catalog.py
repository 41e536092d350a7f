"""What the app's model pickers offer: every checkpoint with how good it is, read from its stored
metadata (never re-evaluated), job checkpoints named, unusable jobs hidden, the best model first.

A checkpoint's quality is its held-out test metric beside the paper's mean for its preset
(`results.PAPER`): FG-IoU where the paper gives one, else FG-Acc. Metrics come from the metadata
(`results.stored_metrics`: `faithful_test_metrics` when present, a re-score on the paper-faithful
test set, else `test_metrics`, else `val_metrics`, said so). A model below UNDER_TRAINED of the
paper's number is marked.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import jobs
from ..checkpoint import CheckpointError, read_checkpoint, trained_dataset
from ..data import DATASETS
from ..metrics import METRIC_LABELS as LABELS
from ..models import is_recurrent
from ..paths import find_checkpoints, shipped_checkpoints
from ..results import PAPER, finite_number, stored_class_rows, stored_metrics

UNDER_TRAINED = 0.9  # below this share of the paper's number a model is marked under-trained
HIDDEN_JOB_STATES = ("canceled", "failed", "crashed")  # their best.pt is not offered


@dataclass(frozen=True)
class ModelEntry:
    """One checkpoint as the pickers show it."""

    id: str  # URL-friendly: the file stem of a shipped checkpoint, job-<id> for a job's
    path: Path
    preset: str
    dataset: str
    family: str  # nwm, lstm, cnn, unet
    metrics: dict | None  # the stored held-out metrics, or None
    split: str | None  # "test" or "validation": where `metrics` were measured
    epochs: int | None
    job: str | None = None  # the job id, for a job's checkpoint
    per_class: dict | None = None  # meta["per_class"]: {n, on, rows (`metrics.class_report`)}, if stored

    @property
    def hardest(self) -> str | None:
        """The class it gets wrong most, e.g. "hardest class: 5 (FG-Acc 0.56 on its 8,000 pixels of 1,000
        test images; most often taken for 3, 18%)"; None without per-class metrics or when it gets every
        class right."""
        number = finite_number
        pc = self.per_class if isinstance(self.per_class, dict) else {}
        rows = [r for r in stored_class_rows(pc, "fg_acc", "pixels") if r["pixels"] > 0]
        if not rows:
            return None
        r = min(rows, key=lambda r: r["fg_acc"])
        if r["fg_acc"] >= 1.0:
            return None
        share = r.get("confused_share")
        taken = (f"; most often taken for {r['confused_with']}, {share:.0%}"
                 if r.get("confused_with") is not None and number(share) else "")
        on = f" of {int(pc['n']):,} test images" if number(pc.get("n")) else ""
        return f"hardest class: {r.get('class', '?')} (FG-Acc {r['fg_acc']:.2f} on its {int(r['pixels']):,} pixels{on}{taken})"

    @property
    def shipped(self) -> bool:
        return self.job is None

    @property
    def recurrent(self) -> bool:
        return is_recurrent(self.family)

    @property
    def metric(self) -> str:
        """The metric compared with the paper: fg_iou where the paper gives it, else fg_acc."""
        paper = PAPER.get(self.preset)
        return "fg_acc" if paper is not None and paper[1] is None else "fg_iou"

    @property
    def value(self) -> float | None:
        v = (self.metrics or {}).get(self.metric)
        return float(v) if isinstance(v, (int, float)) and v == v else None

    @property
    def paper(self) -> float | None:
        p = PAPER.get(self.preset)
        return None if p is None else p[(1 if self.metric == "fg_iou" else 0)]

    @property
    def ratio(self) -> float | None:
        """Our number over the paper's (> 1: better than the paper)."""
        return None if self.value is None or not self.paper else self.value / self.paper

    @property
    def under_trained(self) -> bool:
        return self.ratio is not None and self.ratio < UNDER_TRAINED

    @property
    def quality(self) -> str:
        """e.g. "test FG-IoU 0.987 (paper 0.98)", "test FG-Acc 0.635 (paper 1.00) ⚠ under-trained"."""
        if self.value is None:
            return "no held-out metrics stored"
        line = f"{self.split} {LABELS[self.metric]} {self.value:.3f}"
        line += f" (paper {self.paper:.2f})" if self.paper else " (not in the paper)"
        return line + (" ⚠ under-trained" if self.under_trained else "")

    @property
    def label(self) -> str:
        """The picker's line: name, (for a job: preset and epochs,) quality."""
        if self.job is None:
            return f"{self.id} · {self.quality}"
        epochs = f" · {self.epochs} epoch{'s' * (self.epochs != 1)}" if self.epochs else ""
        return f"job {self.job}: {self.preset}{epochs} · {self.quality}"

    @property
    def rank(self) -> tuple:
        """Sort key, best first: shipped before jobs; then models that reach the paper (not
        under-trained) before those that do not; then the higher held-out score. (Ranking by the
        share of the paper's number alone would put a CNN-8 at 0.74, beating the paper's weak 0.64,
        above an NWM at 0.99 of the paper's 0.98.)"""
        known = self.ratio is not None
        return (not self.shipped, not known or self.under_trained, -(self.value or 0.0), self.id)


def checkpoint_id(path: Path) -> str:
    """A short, URL-friendly name: the file stem of a shipped checkpoint, `job-<id>` for a job's."""
    path = Path(path)
    if path.name == "best.pt" and path.parent.parent.name == "jobs":
        return f"job-{path.parent.name}"
    try:
        rel = path.resolve().relative_to(shipped_checkpoints().resolve())
        return rel.with_suffix("").as_posix()
    except ValueError:
        return path.stem


def job_state(path: Path) -> str | None:
    """The state of the job whose best.pt this is (None for other files and folders that are not jobs)."""
    path = Path(path)
    if path.name != "best.pt" or not (path.parent / "config.json").is_file():
        return None
    try:
        return jobs.JobStore(path.parent.parent).status(path.parent.name)["state"]
    except (jobs.JobError, OSError, ValueError):
        return None


def describe(path: Path) -> ModelEntry | None:
    """A checkpoint's entry from its metadata alone (no model is built); None when unreadable or
    of no known data set."""
    path = Path(path)
    try:
        ck = read_checkpoint(path)
    except CheckpointError:
        return None
    preset = str(ck.get("preset"))
    meta = ck.get("meta") or {}
    ds = trained_dataset(ck)
    if ds not in DATASETS:
        return None
    metrics, split = stored_metrics(meta)
    cid = checkpoint_id(path)
    job = cid[len("job-"):] if cid.startswith("job-") else None
    epochs = meta.get("epochs")
    return ModelEntry(cid, path, preset, ds, str(ck.get("model")), metrics, split,
                      int(epochs) if isinstance(epochs, (int, float)) else None, job, meta.get("per_class"))


def usable(paths: list[Path]) -> list[Path]:
    """The checkpoints to offer: all but those of canceled, failed or crashed jobs."""
    return [p for p in paths if job_state(p) not in HIDDEN_JOB_STATES]


def catalog(paths: list[Path] | None = None, describe: Callable[[Path], ModelEntry | None] = describe
            ) -> dict[str, ModelEntry]:
    """id → entry for every usable checkpoint (`find_checkpoints` by default), best first; the first
    of two files with one id wins. `describe`: how to read one (the app passes a cached one)."""
    out: dict[str, ModelEntry] = {}
    for p in usable(find_checkpoints() if paths is None else list(paths)):
        e = describe(p)
        if e is not None:
            out.setdefault(e.id, e)
    return dict(sorted(out.items(), key=lambda kv: kv[1].rank))


def best(entries: dict[str, ModelEntry] | list[ModelEntry], *, recurrent: bool = False) -> ModelEntry | None:
    """The best entry (see `ModelEntry.rank`): a shipped one when there is one; `recurrent` keeps
    only models with waves."""
    pool = [e for e in (entries.values() if isinstance(entries, dict) else entries)
            if e.recurrent or not recurrent]
    return min(pool, key=lambda e: e.rank, default=None)


def shipped_best_by_dataset(folder: Path | None = None, *, recurrent: bool = False) -> dict[str, Path]:
    """data set → the path of its best shipped checkpoint (`recurrent`: the best with waves, where
    the data set has one)."""
    folder = Path(folder or shipped_checkpoints())
    entries = catalog(sorted(folder.glob("*.pt")))
    out: dict[str, Path] = {}
    for e in entries.values():  # best first
        if e.recurrent or not recurrent:
            out.setdefault(e.dataset, e.path)
    for e in entries.values():  # a data set with no wave model keeps its best
        out.setdefault(e.dataset, e.path)
    return out
