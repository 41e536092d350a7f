"""Shared Streamlit helpers: checkpoint discovery and cached loading, the model picker and card, the
input picker (canvas, data-set sample, upload), model runs and stage timings.

Widgets that describe a view are bound to the URL query string (`bind="query-params"`, the key is
the parameter name), so a link reproduces model, data set, seed and view settings.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st
import torch
from PIL import Image

from .. import engine as fast, inputs
from ..checkpoint import CheckpointError, load_checkpoint, trained_with_amp
from ..data import DATASETS
from ..paths import REPO_ROOT, find_checkpoints
from .figures import pixel_from_points

CANVAS_PX = 320  # drawing canvas, screen pixels
GET_MORE = ("Train more with `waveviz train nwm-linear-tetrominoes --epochs 20 --n-train 2000 "
            "--out checkpoints/nwm-linear-tetrominoes.pt` (any preset from `waveviz presets`), "
            "or start a job on the **Train** page; jobs' best checkpoints appear here by themselves.")
SOURCES = ("Sample", "Draw", "Upload")  # also their URL values (?src=Draw)


# ------------------------------------------------------------------------------ checkpoints

def checkpoint_id(path: Path) -> str:
    """A short, URL-friendly name: the file stem of a shipped checkpoint, `job-<id>` for a job's."""
    path = Path(path)
    if path.name == "best.pt" and path.parent.parent.name == "jobs":
        return f"job-{path.parent.name}"
    try:
        rel = path.resolve().relative_to((REPO_ROOT / "checkpoints").resolve())
        return rel.with_suffix("").as_posix()
    except ValueError:
        return path.stem


def checkpoint_options() -> dict[str, Path]:
    """id → path for every checkpoint `find_checkpoints` offers (first wins on a clash of ids)."""
    out: dict[str, Path] = {}
    for p in find_checkpoints():
        out.setdefault(checkpoint_id(p), p)
    return out


# The paper's Table 1 line-up, most interesting first: pickers default to the best-ranked checkpoint.
PREFERRED = ("nwm-linear", "nwm-fft", "nwm-last", "nwm", "lstm-linear", "lstm", "cnn8", "cnn16", "cnn", "unet")


def preset_rank(preset: str) -> int:
    return next((i for i, pref in enumerate(PREFERRED) if preset.startswith(pref)), len(PREFERRED))


@st.cache_data(show_spinner=False, max_entries=4)
def _describe(paths: tuple[str, ...], mtimes: tuple[float, ...]) -> dict[str, tuple[str, str]]:
    from ..checkpoint import read_checkpoint
    from ..presets import PRESETS

    out = {}
    for p in paths:
        try:
            ck = read_checkpoint(p)
        except CheckpointError:
            continue
        preset = str(ck.get("preset"))
        ds = (ck.get("meta") or {}).get("dataset") or (PRESETS.get(preset).dataset if preset in PRESETS else None)
        if ds in DATASETS:
            out[p] = (preset, ds)
    return out


def describe_checkpoints(options: dict[str, Path]) -> dict[str, tuple[str, str]]:
    """id → (preset, data set) of every readable checkpoint, read once per file version (no model built)."""
    ids = list(options)
    mtimes = []
    for c in ids:
        try:
            mtimes.append(options[c].stat().st_mtime)
        except OSError:
            mtimes.append(0.0)
    found = _describe(tuple(str(options[c]) for c in ids), tuple(mtimes))
    return {c: found[str(options[c])] for c in ids if str(options[c]) in found}


@st.cache_resource(max_entries=8, show_spinner="Loading the model…")
def _load(path: str, mtime: float) -> tuple[torch.nn.Module, dict]:
    model, info = load_checkpoint(path)
    model.eval()
    return model, info


def load_model(path: Path) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, checkpoint info), loaded once per file version (path, modification
    time). Raises CheckpointError (one line)."""
    try:
        mtime = Path(path).stat().st_mtime
    except OSError:
        raise CheckpointError(f"{path}: no such file") from None
    return _load(str(path), mtime)


@dataclass
class Picked:
    """A chosen, loaded checkpoint."""

    id: str
    path: Path
    model: torch.nn.Module
    info: dict

    @property
    def amp(self) -> bool:
        """Run under bf16 autocast, as it was trained."""
        return trained_with_amp(self.info)

    @property
    def how_run(self) -> str:
        """How the app computes it, for timing lines: "engine fast; bf16 autocast (…)"."""
        parts = [f"engine {self.model.engine}"] if hasattr(self.model, "engine") else []
        if self.amp:
            emulated = " (its products emulated in float32: no bf16 on this CPU)" if fast.bf16_emulated("cpu") else ""
            parts.append(f"bf16 autocast{emulated}, as this checkpoint was trained")
        return "; ".join(parts)

    @property
    def key(self) -> str:
        """Changes whenever the file does: for caches of this model's results."""
        return f"{self.path}:{self.path.stat().st_mtime if self.path.exists() else 0}"

    @property
    def preset(self) -> str:
        return str(self.info.get("preset", "?"))

    @property
    def dataset(self) -> str:
        ds = (self.info.get("meta") or {}).get("dataset")
        if ds in DATASETS:
            return ds
        from ..presets import PRESETS

        return PRESETS.get(self.preset).dataset if self.preset in PRESETS else DATASETS.names()[0]

    @property
    def spec(self) -> inputs.InputSpec:
        return inputs.InputSpec.of(self.model)

    @property
    def recurrent(self) -> bool:
        return hasattr(self.model, "forward_features")

    @property
    def short(self) -> str:
        """Family and readout, e.g. 'NWM linear', 'CNN-8'."""
        cfg = self.model.config
        fam = getattr(self.model, "family", "?")
        if self.recurrent:
            return f"{fam.upper()} {cfg.readout}"
        if fam == "cnn":
            return f"CNN-{cfg.L}"
        if fam == "unet":
            return f"U-Net {cfg.c}c"
        return fam


def no_checkpoints_message() -> None:
    st.warning("No trained models yet, so there is nothing to explore. " + GET_MORE)


def pick_checkpoint(options: dict[str, Path], *, key: str = "model", label: str = "Model",
                    where=st) -> Picked | None:
    """A select box of checkpoint ids (bound to the URL) → the loaded checkpoint, or None after a
    one-line message."""
    if not options:
        no_checkpoints_message()
        return None
    ids = list(options)
    described = describe_checkpoints(options)
    best = min(ids, key=lambda c: (preset_rank(described[c][0]) if c in described else len(PREFERRED) + 1))
    cid = where.selectbox(label, ids, index=ids.index(best), key=key, bind="query-params",
                          help="Shipped checkpoints/*.pt and the best model of each training job. " + GET_MORE)
    try:
        model, info = load_model(options[cid])
    except CheckpointError as e:
        where.error(str(e))
        return None
    return Picked(cid, options[cid], model, info)


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def model_card(p: Picked, where=st) -> None:
    """Preset, data set, parameters, the settings that matter and held-out test metrics."""
    meta = p.info.get("meta") or {}
    cfg = p.model.config
    params = meta.get("params") or sum(t.numel() for t in p.model.parameters())
    lines = [f"**{p.preset}** · {p.short}", f"data set **{p.dataset}** · {params:,} parameters"]
    if p.recurrent:
        lines.append(f"T = {cfg.T} steps · C = {cfg.C} channels · readout `{cfg.readout}`")
    m = meta.get("test_metrics") or meta.get("val_metrics")
    which = "test" if meta.get("test_metrics") else "validation"
    if m:
        lines.append(f"{which}: FG-Acc {_fmt(m.get('fg_acc'))} · FG-IoU {_fmt(m.get('fg_iou'))} · FG-Loss {_fmt(m.get('fg_loss'))}")
    else:
        lines.append("no test metrics stored")
    if meta.get("epochs"):
        lines.append(f"{meta['epochs']} epochs ({meta.get('status', '?')}) on {meta.get('hardware', '?')}")
    where.markdown("  \n".join(lines))


# ------------------------------------------------------------------------------------ inputs

def draw_canvas(**kwargs):
    """The drawing canvas (imported on use: the component registers only inside a running app).
    → its result object (`.image_data` (h, w, 4) uint8 RGBA, read-only) or None."""
    from streamlit_drawable_canvas import st_canvas

    return st_canvas(**kwargs)


def input_picker(spec: inputs.InputSpec, default_dataset: str, *, key: str = "", where=st) -> inputs.ModelInput | None:
    """Radio: sample / draw / upload → the model input, or None after a one-line message.

    URL-bound keys: `src`, `ds`, `seed` (prefixed by `key` when given).
    """
    k = (key + "_") if key else ""
    src = where.radio("Input", SOURCES, key=k + "src", bind="query-params", horizontal=True,
                      help="A data-set sample (with its true mask), a drawing, or a PNG / JPEG of your own.")
    names = inputs.compatible_datasets(spec.in_channels)
    if st.session_state.get(k + "ds") not in names:  # a model switch can leave an incompatible choice
        st.session_state[k + "ds"] = default_dataset if default_dataset in names else names[0]
    try:
        if src == "Sample":
            c1, c2 = where.columns(2)
            ds = c1.selectbox("Data set", names, key=k + "ds", bind="query-params")
            seed = c2.number_input("Sample (seed)", 0, 1_000_000, 0, key=k + "seed", bind="query-params",
                                   help="Each seed draws one image (and its true mask) from the test stream.")
            return inputs.from_sample(ds, int(seed), spec)
        if src == "Draw":
            return _drawing(spec, names, k, where)
        up = where.file_uploader("A PNG or JPEG (light shapes on dark; a dark drawing on white is inverted)",
                                 key=k + "upload")
        if up is None:
            where.info("Upload a picture: it is converted to what the model was trained on.")
            return None
        return inputs.from_upload(up.getvalue(), spec, up.name)
    except inputs.InputError as e:
        where.warning(str(e))
        return None


def _drawing(spec: inputs.InputSpec, names: list[str], k: str, where) -> inputs.ModelInput | None:
    c1, c2, c3, c4 = where.columns([1.2, 1, 1, 1.2])
    tool = c1.radio("Tool", ("freedraw", "line", "rect", "circle", "polygon", "eraser"), key=k + "tool",
                    help="A polygon counts once closed: click its first corner again.")
    width = c2.slider("Brush (px)", 4, 60, 22, key=k + "brush")
    colour = c2.color_picker("Colour", "#FFFFFF", key=k + "colour", disabled=spec.in_channels == 1)
    fill = c3.checkbox("Fill closed outlines", value=True, key=k + "fill",
                       help="Polygons and Tetrominoes are solid shapes: a drawn outline is filled.")
    trace = c3.checkbox("Trace over a sample", value=False, key=k + "trace")
    ds = c4.selectbox("Sample to trace", names, key=k + "trace_ds", disabled=not trace)
    seed = c4.number_input("Its seed", 0, 1_000_000, 0, key=k + "trace_seed", disabled=not trace)
    background = _background(ds if trace else None, int(seed))
    stroke = "#FFFFFF" if spec.in_channels == 1 else colour
    try:
        result = draw_canvas(stroke_width=width, stroke_color="#000000" if tool == "eraser" else stroke,
                             fill_color="#000000" if tool == "eraser" else stroke,
                             background_image=background, height=CANVAS_PX, width=CANVAS_PX,
                             drawing_mode="freedraw" if tool == "eraser" else tool, return_image_data=True,
                             key=k + "canvas")
    except Exception as e:  # the component could not load: say so; samples and uploads still work
        where.warning(f"The drawing canvas is unavailable ({type(e).__name__}); pick a sample or upload a picture.")
        return None
    where.caption("Undo, redo and clear are in the canvas toolbar (top right). The eraser paints background (black).")
    image = None if result is None else getattr(result, "image_data", None)
    if image is None:
        where.info("Draw a shape on the canvas.")
        return None
    return inputs.from_canvas(np.asarray(image), spec, fill=fill)


@st.cache_resource(show_spinner=False, max_entries=8)
def _background(dataset: str | None, seed: int) -> Image.Image:
    """The canvas background: black, or a dimmed data-set sample to trace over (not part of the drawing)."""
    if dataset is None:
        return Image.new("RGB", (CANVAS_PX, CANVAS_PX), (0, 0, 0))
    return inputs.sample_background(dataset, seed, CANVAS_PX)


def show_input(mi: inputs.ModelInput, where=st) -> None:
    """What was done to the source, in one caption."""
    where.caption("Input: " + " → ".join(mi.steps))


# ------------------------------------------------------------------------------------- runs

@dataclass
class RunResult:
    """One model on one input: logits (N, H, W), probs (N, H, W), pred (H, W); hidden (T, C, H, W)
    and extras (name → (C, H, W)) for recurrent models; seconds the run took."""

    logits: np.ndarray
    probs: np.ndarray
    pred: np.ndarray
    hidden: np.ndarray | None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0


def run_model(model: torch.nn.Module, x: torch.Tensor, amp: bool = False) -> RunResult:
    """`model.run(x)` under inference mode (and bf16 autocast with `amp`, for a checkpoint trained
    so: `checkpoint.trained_with_amp`), as float32 numpy arrays of the one image."""
    t0 = time.perf_counter()
    with torch.inference_mode(), fast.bf16_autocast(x.device.type, enabled=amp):
        out = model.run(x)
    logits = out.logits[0].float()
    res = RunResult(
        logits=logits.numpy(), probs=torch.softmax(logits, 0).numpy(), pred=logits.argmax(0).numpy(),
        hidden=None if out.hidden is None else out.hidden[0].float().numpy(),
        extras={k: v[0].float().numpy() for k, v in out.extras.items()},
    )
    res.seconds = time.perf_counter() - t0
    return res


@st.cache_resource(max_entries=6, show_spinner="Running the model…")
def cached_run(model_key: str, input_key: str, _model: torch.nn.Module, _x: torch.Tensor, amp: bool = False) -> RunResult:
    """`run_model`, once per (model file version, input content, amp); shared, so treat as read-only."""
    return run_model(_model, _x, amp)


# ---------------------------------------------------------------------------- pixel clicks

def clickable_chart(fig, key: str, **kwargs) -> tuple[int, int] | None:
    """Show a figure whose click layer reports pixels; → (row, col) of a *new* click, else None.

    A selection persists across reruns, so only a selection different from the last one handled
    counts as a click (otherwise it would undo every later edit of the pixel boxes). A page that
    redraws the figure after a click (say, to mark the pixel) should `st.rerun()` at once: Streamlit
    drops a click made on a figure that has changed since it was drawn.
    """
    event = st.plotly_chart(fig, key=key, on_select="rerun", selection_mode="points",
                            config={"displayModeBar": False}, **kwargs)
    points = []
    if event is not None:
        sel = event.get("selection", {}) if isinstance(event, dict) else getattr(event, "selection", {})
        points = (sel or {}).get("points", []) if isinstance(sel, dict) else getattr(sel, "points", [])
    px = pixel_from_points(points)
    seen = st.session_state.get(f"_{key}_seen")
    if px is None:  # nothing selected, or a click that cleared the selection
        st.session_state.pop(f"_{key}_seen", None)
        return None
    if px == seen:
        return None
    st.session_state[f"_{key}_seen"] = px
    return px


@contextmanager
def torch_threads(n: int = 1):
    """Run torch with n intra-op threads, then restore the setting.

    The pages' work is ~1,000 tiny ops per run (a 100-step recurrence on a 64 × 64 × 2 field), where
    every extra thread only adds pool synchronisation: on a busy 2-core machine an NWM run took
    45 ms with one thread and 830 ms with two (benchmarks/bench_explore.py).
    """
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ----------------------------------------------------------------------------------- timings

class Timings:
    """Wall-clock seconds per stage (model / analysis / rendering), for the page's timing line."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def line(self) -> str:
        total = sum(self.seconds.values())
        parts = " · ".join(f"{k} {1000 * v:.0f} ms" for k, v in self.seconds.items())
        return f"{parts} · total {1000 * total:.0f} ms (this run, on this machine's CPU)"
