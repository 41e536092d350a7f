"""Shared Streamlit helpers: the model catalogue and cached loading, the model picker and card, the
input picker (data-set sample, drawing, upload), model runs and stage timings.

Widgets that describe a view are bound to the URL query string (`bind="query-params"`, the key is
the parameter name), so a link reproduces model, data set, seed and view settings.
"""
from __future__ import annotations

import copy
import hashlib
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st
import torch
from PIL import Image

from .. import drawing, engine as fast, inputs
from ..checkpoint import CheckpointError, load_checkpoint, trained_dataset, trained_with_amp
from ..data import DATASETS
from ..models import is_recurrent
from ..paths import find_checkpoints
from . import catalog
from .figures import pixel_from_points

CANVAS_PX = 320  # drawing canvas, screen pixels
PREVIEW_PX = 160  # "what the model will see" beside the canvas
GET_MORE = ("Train your own on the **Train** page (a job's best checkpoint appears here by itself), or with "
            "`waveviz train nwm-linear-tetrominoes --out checkpoints/my-nwm.pt` (about 10 minutes on a CPU; any "
            "preset from `waveviz presets`; a model in `checkpoints/` is offered here).")
SOURCES = ("Sample", "Draw", "Upload")  # also their URL values (?src=Draw)
ERASER = "#000000"  # the eraser paints background black (see drawing.ink)


# ------------------------------------------------------------------------------ checkpoints

# The paper's Table 1 line-up, most interesting first (the Compare page's default line-up).
PREFERRED = ("nwm-linear", "nwm-fft", "nwm-last", "nwm", "lstm-linear", "lstm", "cnn8", "cnn16", "cnn", "unet")


def preset_rank(preset: str) -> int:
    return next((i for i, pref in enumerate(PREFERRED) if preset.startswith(pref)), len(PREFERRED))


def _mtime(path: Path) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


@st.cache_data(show_spinner=False, max_entries=256)
def _describe(path: str, mtime: float) -> catalog.ModelEntry | None:
    return catalog.describe(Path(path))


def describe_cached(path: Path) -> catalog.ModelEntry | None:
    """`catalog.describe`, read once per file version."""
    return _describe(str(path), _mtime(path))


def model_catalog(paths: list[Path] | None = None) -> dict[str, catalog.ModelEntry]:
    """id → entry (preset, data set, stored quality) of every checkpoint a picker offers
    (`find_checkpoints` by default), best first; each file's metadata is read once per version,
    never re-evaluated."""
    return catalog.catalog(find_checkpoints() if paths is None else paths, describe=describe_cached)


@st.cache_resource(max_entries=8, show_spinner="Loading the model…")
def _load(path: str, mtime: float) -> tuple[torch.nn.Module, dict]:
    model, info = load_checkpoint(path)
    model.eval()
    return model, info


def load_model(path: Path) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, checkpoint info), loaded once per file version (path, modification
    time). Raises CheckpointError (one line)."""
    if not Path(path).exists():
        raise CheckpointError(f"{path}: no such file")
    return _load(str(path), _mtime(path))


@dataclass
class Picked:
    """A chosen, loaded checkpoint."""

    id: str
    path: Path
    model: torch.nn.Module
    info: dict
    entry: catalog.ModelEntry | None = None

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
        return f"{self.path}:{_mtime(self.path)}"

    @property
    def preset(self) -> str:
        return str(self.info.get("preset", "?"))

    @property
    def dataset(self) -> str:
        ds = trained_dataset(self.info)
        return ds if ds in DATASETS else DATASETS.names()[0]

    @property
    def drawing_options(self) -> dict:
        """Options of the data set's drawing tool that follow the training data (the Tetrominoes
        border ring, "wrap" or "clip", where the checkpoint's data settings name one)."""
        ring = ((self.info.get("meta") or {}).get("data") or {}).get("ring")
        return {"ring": ring} if ring in ("wrap", "clip") and self.dataset == "tetrominoes" else {}

    @property
    def spec(self) -> inputs.InputSpec:
        return inputs.InputSpec.of(self.model)

    @property
    def recurrent(self) -> bool:
        return is_recurrent(self.model)

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


def url_state(key: str, ids: list[str], default, *, many: bool = False) -> None:
    """Seed a picker's session state from the URL (?key=id, repeated for `many`) on its first run,
    and keep it to valid ids. The pickers name each option with its quality (format_func), and
    Streamlit's own URL binding would then put that label, not the id, in the URL; so pickers bind
    by hand: this on the way in, `st.query_params[key] = …` on the way out."""
    if key not in st.session_state:
        asked = st.query_params.get_all(key)
        if many:
            st.session_state[key] = [v for v in asked if v in ids] or list(default)
        else:
            st.session_state[key] = asked[0] if asked and asked[0] in ids else default
        unknown = [v for v in asked if v not in ids][: 1 if not many else None]
        if unknown:  # said by `url_problem` until the picker changes
            st.session_state[f"_{key}_unknown"] = (unknown, copy.copy(st.session_state[key]))
    elif many:
        st.session_state[key] = [v for v in st.session_state[key] if v in ids]
    elif st.session_state[key] not in ids:
        st.session_state[key] = default


def url_problem(key: str) -> str | None:
    """One line on the ids in the URL that `url_state` could not find, while the picker still shows
    what it chose instead; else None."""
    unknown, chosen = st.session_state.get(f"_{key}_unknown") or (None, None)
    if not unknown or st.session_state.get(key) != chosen:
        return None
    names = ", ".join(f"'{v}'" for v in unknown)
    shown = ", ".join(chosen) if isinstance(chosen, list) else chosen
    return f"No model {names} here (see the list for the ones there are); showing {shown}."


def no_checkpoints_message() -> None:
    st.warning("No trained models yet, so there is nothing to explore. " + GET_MORE)


def load_picked(entry: catalog.ModelEntry) -> Picked:
    """The entry's model, loaded (cached). Raises CheckpointError (one line)."""
    model, info = load_model(entry.path)
    return Picked(entry.id, entry.path, model, info, entry)


def pick_checkpoint(entries: dict[str, catalog.ModelEntry], *, key: str = "model", label: str = "Model",
                    where=st, recurrent: bool = False) -> Picked | None:
    """A select box of checkpoints, each named with its stored quality (bound to the URL by id),
    opening on the best (`catalog.best`; `recurrent`: the best with waves) → the loaded
    checkpoint, or None after a one-line message."""
    if not entries:
        no_checkpoints_message()
        return None
    ids = list(entries)
    best = catalog.best(entries, recurrent=recurrent) or catalog.best(entries)
    url_state(key, ids, best.id)
    cid = where.selectbox(label, ids, key=key, format_func=lambda c: entries[c].label if c in entries else c,
                          help="Each model's held-out test score beside the paper's; ⚠ marks one below "
                               f"{catalog.UNDER_TRAINED:.0%} of the paper's. Shipped checkpoints/*.pt and the best "
                               "model of each finished or running training job. " + GET_MORE)
    st.query_params[key] = cid
    problem = url_problem(key)
    if problem:
        where.warning(problem)
    try:
        return load_picked(entries[cid])
    except CheckpointError as e:
        where.error(str(e))
        return None


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def model_card(p: Picked, where=st) -> None:
    """Preset, data set, parameters, the settings that matter and the held-out quality."""
    meta = p.info.get("meta") or {}
    cfg = p.model.config
    params = meta.get("params") or sum(t.numel() for t in p.model.parameters())
    lines = [f"**{p.preset}** · {p.short}", f"data set **{p.dataset}** · {params:,} parameters"]
    if p.recurrent:
        lines.append(f"T = {cfg.T} steps · C = {cfg.C} channels · readout `{cfg.readout}`")
    if p.entry is not None:
        lines.append(p.entry.quality)
        m = p.entry.metrics or {}
        if m:
            lines.append(f"FG-Acc {_fmt(m.get('fg_acc'))} · FG-IoU {_fmt(m.get('fg_iou'))} · FG-Loss {_fmt(m.get('fg_loss'))}")
        if p.entry.hardest:
            lines.append(p.entry.hardest)
    if meta.get("epochs"):
        lines.append(f"{meta['epochs']} epochs ({meta.get('status', '?')}) on {meta.get('hardware', '?')}")
    where.markdown("  \n".join(lines))
    if p.entry is not None and p.entry.under_trained:
        where.warning(f"Under-trained: {p.entry.value:.2f} against the paper's {p.entry.paper:.2f}. Expect "
                      "mistakes the paper's model would not make.")


# ------------------------------------------------------------------------------------ inputs

def draw_canvas(**kwargs):
    """The drawing canvas (imported on use: the component registers only inside a running app).
    → its result object (`.image_data` (h, w, 4) uint8 RGBA, read-only) or None."""
    from streamlit_drawable_canvas import st_canvas

    return st_canvas(**kwargs)


def follow_model_dataset(k: str, names: list[str], model_dataset: str) -> None:
    """Make the sample's data set (session key k + "ds") follow the model's: when the model's data
    set changes, the sample set changes with it; a set the user or the URL chose holds while the
    model's set stays the same."""
    seen = k + "_model_ds"
    current = st.session_state.get(k + "ds", st.query_params.get(k + "ds"))
    model_changed = seen in st.session_state and st.session_state[seen] != model_dataset
    if model_changed or current not in names:
        st.session_state[k + "ds"] = model_dataset if model_dataset in names else names[0]
    st.session_state[seen] = model_dataset


def input_picker(spec: inputs.InputSpec, model_dataset: str, *, key: str = "", where=st,
                 choose_dataset: bool = True, drawing_options: dict | None = None) -> inputs.ModelInput | None:
    """Radio: sample / draw / upload → the model input, or None after a one-line message.

    Samples come from the model's data set unless the user picks another (`choose_dataset`; the
    Compare page fixes it); drawings go through that data set's drawing tool.
    URL-bound keys: `src`, `ds`, `seed` (prefixed by `key` when given).
    """
    k = (key + "_") if key else ""
    src = where.radio("Input", SOURCES, key=k + "src", bind="query-params", horizontal=True,
                      help="A data-set sample (with its true mask), a drawing, or a PNG / JPEG of your own.")
    names = inputs.compatible_datasets(spec.in_channels)
    try:
        if src == "Sample":
            if choose_dataset:
                follow_model_dataset(k, names, model_dataset)
                c1, c2 = where.columns(2)
                ds = c1.selectbox("Data set", names, key=k + "ds", bind="query-params",
                                  help="The model's own data set unless you choose another (its classes then "
                                       "mean other things, and there is no true mask to compare with).")
                box = c2
            else:
                ds, box = model_dataset, where
            seed = box.number_input("Sample (seed)", 0, 1_000_000, 0, key=k + "seed", bind="query-params",
                                    help="Each seed draws one image (and its true mask) from the test stream.")
            return _sample(ds, int(seed), spec)
        if src == "Draw":
            return _drawing(spec, model_dataset, k, drawing_options or {})
        up = where.file_uploader("A PNG or JPEG (light shapes on dark; a dark drawing on white is inverted)",
                                 key=k + "upload")
        if up is None:
            where.info("Upload a picture: it is converted to what the model was trained on.")
            return None
        return inputs.from_upload(up.getvalue(), spec, up.name, dataset=model_dataset)
    except inputs.InputError as e:
        where.warning(str(e))
        return None


@st.cache_resource(show_spinner=False, max_entries=32)
def _sample(dataset: str, seed: int, spec: inputs.InputSpec) -> inputs.ModelInput:
    """`inputs.from_sample`, once per (data set, seed, model input); shared: treat as read-only."""
    return inputs.from_sample(dataset, seed, spec)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).tobytes() + str(a.shape).encode()).hexdigest()[:16]


@st.cache_resource(show_spinner=False, max_entries=16)
def _drawn(digest: str, _rgba: np.ndarray, spec: inputs.InputSpec, dataset: str,
           options: tuple[tuple[str, str], ...]) -> inputs.ModelInput:
    """`inputs.from_drawing`, once per drawing (by content) and model input; shared: read-only."""
    return inputs.from_drawing(_rgba, spec, dataset, **dict(options))


def drawn_input(rgba: np.ndarray, spec: inputs.InputSpec, dataset: str, options: dict) -> inputs.ModelInput:
    return _drawn(_digest(rgba), rgba, spec, dataset, tuple(sorted(options.items())))


def _drawing(spec: inputs.InputSpec, dataset: str, k: str, options: dict) -> inputs.ModelInput | None:
    """The drawing panel (a fragment: strokes rerun only it), Run, and the drawing last sent to the
    model, as model input. Run sits outside the fragment, below it: a click is one whole-page run
    (a button inside would rerun the fragment first, then the page)."""
    panel, controls = st.container(), st.container()
    with controls:
        r1, r2 = st.columns([1, 1.4])
        if r1.button("Run the model", type="primary", key=k + "run"):
            st.session_state[k + "run_now"] = True  # read by the panel in this run (not an argument:
            #                                         a fragment's reruns replay its arguments)
        r2.toggle("Run on every stroke", key=k + "auto", help="Off: draw the whole shape, then Run.")
    with panel:
        _draw_panel(spec, dataset, k, options)
    sent = st.session_state.get(k + "drawn")
    if sent is None or sent["dataset"] != dataset:  # nothing run yet, or drawn for another data set's tool
        return None
    return drawn_input(sent["rgba"], spec, dataset, options)


@st.fragment
def _draw_panel(spec: inputs.InputSpec, dataset: str, k: str, options: dict) -> None:
    """Tool settings, the canvas and "what the model will see"; Run sends the drawing to the model
    (the whole page reruns then, once per finished drawing, not on every stroke)."""
    tool = drawing.TOOLS.get(dataset)
    st.markdown(f"**{tool.label} tool** ({dataset}): {tool.how}.")
    c1, c2, c3 = st.columns([0.8, 1.2, 1])
    colour = c1.color_picker("Colour", DEFAULT_COLOUR, key=k + "colour") if tool.colour else "#FFFFFF"
    brush = c2.slider("Brush (px)", 2, 60, tool.brush, key=k + "brush") if tool.mode == "freedraw" else tool.brush
    erase = c3.toggle("Eraser", key=k + "erase", help="Paint background over strokes.") if tool.eraser else False
    t1, t2 = st.columns(2)
    trace = t1.toggle("Trace over a sample", key=k + "trace", help="Show a dimmed sample of the data set "
                      "behind the canvas to draw over (it is not part of the drawing).")
    seed = int(t2.number_input("Its seed", 0, 1_000_000, 0, key=k + "trace_seed")) if trace else 0
    size = DATASETS.get(dataset).size
    canvas_col, preview_col = st.columns([CANVAS_PX + 10, PREVIEW_PX + 40])
    with canvas_col:
        st.write("")  # room for the canvas toolbar, which appears above the canvas on hover
        try:
            result = draw_canvas(stroke_width=brush, stroke_color=ERASER if erase else colour,
                                 fill_color=ERASER if erase else colour,
                                 background_image=_background(dataset if trace else None, seed, tool.grid, size),
                                 height=CANVAS_PX, width=CANVAS_PX, drawing_mode="freedraw" if erase else tool.mode,
                                 return_image_data=True, key=k + "canvas")
        except Exception as e:  # the component could not load: say so; samples and uploads still work
            st.warning(f"The drawing canvas is unavailable ({type(e).__name__}); pick a sample or upload a picture.")
            return
    image = None if result is None else getattr(result, "image_data", None)
    has_ink = image is not None and bool(drawing.painted(np.asarray(image)).any())
    with preview_col:
        st.caption("What the model will see")
        if has_ink:
            try:
                mi = drawn_input(np.asarray(image), spec, dataset, options)
                st.image(_enlarged(mi.image, PREVIEW_PX), width=PREVIEW_PX)
                for note in mi.notes:
                    st.caption(f"⚠ {note}")
            except inputs.InputError as e:
                st.caption(str(e))
        else:
            st.caption("(nothing drawn yet)")
    st.caption("Undo, redo and clear are in the canvas toolbar (top right of the canvas, on hover).")
    run = st.session_state.pop(k + "run_now", False)  # Run was clicked: this is a whole-page run
    sent = st.session_state.get(k + "drawn")
    digest = _digest(np.asarray(image)) if has_ink else None
    changed = has_ink and (sent is None or sent["digest"] != digest or sent["dataset"] != dataset)
    if has_ink and (run or (changed and st.session_state.get(k + "auto"))):
        sent = st.session_state[k + "drawn"] = {"rgba": np.array(image), "digest": digest, "dataset": dataset}
        if not run:  # a stroke reran only this fragment: run the page for the new drawing
            st.rerun(scope="app")
        changed = False
    if run and not has_ink:
        st.info("Nothing drawn yet: draw a shape, then press **Run the model**.")
    elif sent is None or sent["dataset"] != dataset:
        st.info("Draw a shape, then press **Run the model**.")
    elif changed:
        st.caption("The drawing has changed since the model last ran: press **Run the model**.")


DEFAULT_COLOUR = "#2A9D8F"  # a teal: channels ≤ 170, so colour + colour // 2 needs no wrapping


def _enlarged(image: np.ndarray, px: int) -> np.ndarray:
    """A small image enlarged by whole pixels (nearest neighbour) to about px wide."""
    s = max(1, px // image.shape[1])
    return image.repeat(s, axis=0).repeat(s, axis=1)


@st.cache_resource(show_spinner=False, max_entries=8)
def _background(dataset: str | None, seed: int, grid: int | None, size: int) -> Image.Image:
    """The canvas background (not part of the drawing): black or a dimmed data-set sample to trace
    over, with the block tool's grid when it has one."""
    under = None if dataset is None else np.asarray(inputs.sample_background(dataset, seed, CANVAS_PX).convert("RGB"))
    if grid:
        return Image.fromarray(drawing.grid_background(CANVAS_PX, size, grid, under))
    return Image.fromarray(under) if under is not None else Image.new("RGB", (CANVAS_PX, CANVAS_PX), (0, 0, 0))


def show_input(mi: inputs.ModelInput, where=st) -> None:
    """What was done to the source, in one caption; a drawing's departures from the training data."""
    where.caption("Input: " + " → ".join(mi.steps))
    for note in mi.notes:
        where.warning(f"This drawing is unlike the training data: {note}.")


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
    redraws the figure after a click (say, to mark the pixel) should take the click with
    `take_click` before drawing (one run), or `st.rerun()` at once: Streamlit drops a click made on
    a figure that has changed since it was drawn.
    """
    event = st.plotly_chart(fig, key=key, on_select="rerun", selection_mode="points",
                            config={"displayModeBar": False}, **kwargs)
    return _new_click(key, event)


def take_click(key: str) -> tuple[int, int] | None:
    """A new click on the clickable chart `key` (drawn by `clickable_chart` in the last run), read
    from its widget state before anything is drawn → (row, col), else None. Taking it at the top of
    the run lets that same run draw every figure marking the new pixel: no second run, which costs
    a redraw of every changed figure in the browser (seconds for a 100-frame animation)."""
    return _new_click(key, st.session_state.get(key))


def _new_click(key: str, event) -> tuple[int, int] | None:
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
