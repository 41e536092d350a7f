"""The Explore page: draw or pick an image, run a trained wave model, watch and measure its waves.

Layout and widgets only; the numbers come from :mod:`waveviz.analysis` and :mod:`waveviz.inputs`,
the pictures from :mod:`waveviz.app.figures`.
"""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from .. import analysis
from ..data import DATASETS, make_dataset, to_tensors
from ..metrics import segmentation_metrics
from ..readouts import num_freqs
from . import common, figures
from .figures import CHART_CONFIG

INTRO = """
Each pixel of a wave model is a small oscillator that only feels its neighbours, yet the waves it
starts from the edges of a shape travel across the image, so after a while every pixel's rhythm
carries news of the whole shape. Pick a sample or draw a shape: the model segments it, the animation
shows the waves that did it, and the tabs measure them the way the paper does.
"""

VIEWS = ("Pixel", "Frequency maps", "Drum: ω and α", "Phase & wavelength", "Class spectra", "Receptive field")


def render() -> None:
    with common.torch_threads(1):
        _render()


def _render() -> None:
    st.title("Explore the waves")
    st.markdown(INTRO)
    entries = common.model_catalog()
    with st.sidebar:
        picked = common.pick_checkpoint(entries, where=st.sidebar, recurrent=True)
        if picked is not None:
            common.model_card(picked, where=st.sidebar)
        st.caption(common.GET_MORE)
    if picked is None:
        return
    timings = common.Timings()
    left, right = st.columns([1.15, 1], gap="medium")
    with left:
        mi = common.input_picker(picked.spec, picked.dataset, drawing_options=picked.drawing_options)
        if mi is not None:
            common.show_input(mi)
    if mi is None:
        return
    with timings.stage("model"):
        res = common.cached_run(picked.key, mi.key, picked.model, mi.x, picked.amp)
    names = DATASETS.get(picked.dataset).class_names
    truth = mi.mask if mi.dataset == picked.dataset else None  # another set's labels mean other classes
    H, W = res.pred.shape
    wave_key = f"wave_click_{st.session_state.get('_wave_gen', 0)}"
    for key in ("seg_click", wave_key):  # a click since the last run: this run draws its pixel
        clicked = common.take_click(key)
        if clicked is not None and 0 <= clicked[0] < H and 0 <= clicked[1] < W:
            st.session_state["row"], st.session_state["col"] = clicked
    row, col = _pixel_state(res.pred)
    if st.session_state.get(f"_{wave_key}_seen") not in (None, (row, col)):
        # The animation is not redrawn by a click (see below), so it keeps its selection: a click on that
        # pixel again would only clear it. Once the pixel is set elsewhere, a fresh chart (a new key).
        st.session_state["_wave_gen"] = st.session_state.get("_wave_gen", 0) + 1
        wave_key = f"wave_click_{st.session_state['_wave_gen']}"

    with right:
        with timings.stage("rendering"):
            fig = figures.segmentation_figure(mi.image, res.pred, truth, names, pixel=(row, col))
        common.clickable_chart(fig, key="seg_click")  # its clicks: `take_click` above, in the next run
        st.markdown(reading_line(mi.image, res.pred, names))
        _metrics(res, truth)
    if res.hidden is None:
        st.info(f"{picked.short} is feed-forward: it has no time axis and no waves. Pick an NWM or LSTM "
                "checkpoint to see waves; this one is here to compare with on the **Compare** page.")
    else:
        st.subheader("The waves")
        c1, c2 = st.columns([3, 1])
        c1.caption(f"The hidden channels (c0 … c{res.hidden.shape[1] - 1}) over {res.hidden.shape[0]} steps "
                   f"(blue −, white 0, red +). Click any pixel to measure it: the segmentation above marks it.")
        demean = c2.toggle("Subtract each pixel's mean", key="demean", bind="query-params",
                           help="Show y_t − mean over t: hides a constant offset so the travelling part stands out.")
        C = res.hidden.shape[1]
        shown = tuple(range(C))
        if C > 4:  # 16 channels of 128² would be megabytes per frame: animate a chosen few
            shown = tuple(st.multiselect("Channels to animate", list(range(C)), default=[0, 1, 2, 3], key="anim",
                                         max_selections=8, bind="query-params") or [0])
        with timings.stage("rendering"):
            frames = _frames(picked.key, mi.key, res, demean, shown)
            # no pixel marker here: it would change this 100-frame figure with every click, and redrawing
            # it is most of a click's wait (5–6.6 s → 2.7–2.9 s under load,
            # benchmarks/results/app-browser-click-2026-12-04.md)
            anim = figures.animation_figure(frames, title=f"{picked.short}: y_t")
        common.clickable_chart(anim, key=wave_key)
        st.caption(f"Each channel on its own colour scale, ± the {figures.SCALE_PERCENTILE:g}th percentile of its "
                   f"|y| over all steps and pixels (a few extreme pixels saturate instead of washing the rest out): "
                   f"{frames.scale_note}.")
        st.download_button("Download the animation (GIF)", data=lambda: figures.gif_bytes(frames),
                           file_name=f"waves-{picked.id.replace('/', '_')}.gif", mime="image/gif")
    c1, c2, _ = st.columns([1, 1, 4])
    row = int(c1.number_input("Pixel row", 0, H - 1, key="row", bind="query-params"))
    col = int(c2.number_input("Pixel column", 0, W - 1, key="col", bind="query-params"))

    tabs = st.tabs(VIEWS, key="view", bind="query-params")
    for tab, view in zip(tabs, VIEWS):
        if tab.open is False:  # lazy: only the open tab computes (None = no state: run them all)
            continue
        with tab:
            VIEW_RENDERERS[view](picked, mi, res, row, col, timings)
    st.caption("; ".join(filter(None, ["Timings: " + timings.line(), picked.how_run])))


# ---------------------------------------------------------------------------------- helpers

def _pixel_state(pred: np.ndarray) -> tuple[int, int]:
    """The pixel to measure: from the URL / boxes when valid for this image, else a foreground one."""
    H, W = pred.shape
    row, col = (_int(st.session_state.get(k, st.query_params.get(k))) for k in ("row", "col"))
    if row is None or col is None or not (0 <= row < H and 0 <= col < W):
        row, col = analysis.focus_pixel(pred)
        st.session_state["row"], st.session_state["col"] = row, col
    return int(row), int(col)


def reading_line(image: np.ndarray, pred: np.ndarray, names) -> str:
    """What the model made of each shape of the input, in one line: "The model reads: **J/L** (96 %
    of its pixels)"; several shapes are listed top to bottom, left to right."""
    readings = analysis.shape_readings(image, pred)
    if not readings:
        return "The model reads: nothing to read (no shape in the input)."
    labels = figures.class_labels(names, max(len(names), max(r.label for r in readings) + 1))
    parts = [f"**{labels[r.label]}** ({r.share:.0%} of {'its' if len(readings) == 1 else 'the shape’s'} pixels)"
             for r in readings[:6]]
    more = f" and {len(readings) - 6} more" if len(readings) > 6 else ""
    return "The model reads: " + " · ".join(parts) + more


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


@st.cache_resource(max_entries=6, show_spinner=False)
def _frames(model_key: str, input_key: str, _res: common.RunResult, demean: bool,
            channels: tuple[int, ...]) -> figures.WaveFrames:
    h = _res.hidden
    return figures.wave_frames(h - h.mean(0, keepdims=True) if demean else h, channels=channels)


def _metrics(res: common.RunResult, truth: np.ndarray | None) -> None:
    if truth is None:
        st.caption("No true mask for a drawing, an upload or another data set's sample: "
                   "the card in the sidebar gives the model's test metrics.")
        return
    m = segmentation_metrics(torch.from_numpy(res.logits)[None], torch.from_numpy(truth)[None])
    cols = st.columns(4)
    for c, (k, label) in zip(cols, (("fg_acc", "FG-Acc"), ("fg_iou", "FG-IoU"), ("fg_loss", "FG-Loss"), ("acc", "Acc"))):
        v = m[k]
        c.metric(label, "—" if np.isnan(v) else f"{v:.3f}")


def _needs_waves(picked: common.Picked, res: common.RunResult) -> bool:
    if res.hidden is None:
        st.info(f"{picked.short} has no hidden sequence to measure.")
        return False
    return True


# ------------------------------------------------------------------------------------- views

def _view_pixel(picked, mi, res, row, col, timings) -> None:
    names = DATASETS.get(picked.dataset).class_names
    c1, c2 = st.columns(2)
    with timings.stage("rendering"):
        c1.plotly_chart(figures.probabilities_figure(res.probs[:, row, col], names), key="px_probs",
                        config=CHART_CONFIG)
    if res.hidden is None:
        c2.info(f"{picked.short} is feed-forward: no time series at this pixel.")
        return
    cfg = picked.model.config
    with timings.stage("analysis"):
        trace = res.hidden[:, :, row, col]  # (T, C)
        spec = analysis.pixel_spectra(res.hidden[:, :, row: row + 1, col: col + 1])[:, :, 0, 0]  # (K, C)
        feats = analysis.readout_view(picked.model.readout, torch.from_numpy(res.hidden)[None], row, col)
    with timings.stage("rendering"):
        c2.plotly_chart(figures.timeseries_figure(trace, title=f"pixel ({row}, {col}) over time",
                                                  dt=getattr(cfg, "dt", None)), key="px_trace",
                        config=CHART_CONFIG)
        c3, c4 = st.columns(2)
        c3.plotly_chart(figures.spectrum_figure(analysis.rfft_freqs(cfg.T), spec,
                                                title="its spectrum |rfft(y − mean)|"), key="px_spec",
                        config=CHART_CONFIG)
        c4.plotly_chart(figures.readout_figure(feats, cfg.readout), key="px_readout", config=CHART_CONFIG)
    st.caption(READOUT_NOTES.get(cfg.readout, ""))


READOUT_NOTES = {
    "fft": "The fft readout hands the head |rfft(y)| of each channel, T // 2 + 1 magnitudes (the mean, bin 0, included).",
    "linear": "The linear readout hands the head W·y: K = T // 2 + 1 learned projections of each channel's time series.",
    "last": "The last readout hands the head only y_T, one number per channel: the waves' history is thrown away.",
    "mean": "The mean readout hands the head the time average of each channel, one number per channel.",
    "max": "The max readout hands the head the maximum over time of each channel, one number per channel.",
}


def _channel_picker(C: int) -> list[int]:
    """All channels when there are few; otherwise the one chosen (URL-bound `ch`)."""
    if C <= 4:
        return list(range(C))
    return [int(st.selectbox("Channel", list(range(C)), key="ch", bind="query-params"))]


def _view_bins(picked, mi, res, row, col, timings) -> None:
    if not _needs_waves(picked, res):
        return
    T, C = res.hidden.shape[:2]
    K = num_freqs(T)
    st.markdown("How strongly each pixel oscillates at a few frequencies (paper Fig. 4, left): inside a shape "
                "and outside it, different frequencies light up, which is what lets a per-pixel readout tell them apart.")
    with timings.stage("analysis"):
        default = analysis.strongest_bins(res.hidden)
    bins = st.multiselect("Frequency bins k (f = k / T cycles per step)", list(range(1, K)), default=default,
                          key="bins", max_selections=8)
    chans = _channel_picker(C)
    if not bins:
        st.info("Choose at least one frequency bin.")
        return
    with timings.stage("analysis"):
        maps = analysis.frequency_bin_maps(res.hidden, bins)  # (n, C, H, W)
    sel = np.concatenate([maps[:, c] for c in chans])
    titles = [f"c{c} · k={k} (f={k / T:.3f})" for c in chans for k in bins]
    with timings.stage("rendering"):
        st.plotly_chart(figures.maps_figure(sel, titles, cols=len(bins), colorbar_title="|rfft|", pixel=(row, col)),
                        key="bin_maps", config=CHART_CONFIG)


def _view_drum(picked, mi, res, row, col, timings) -> None:
    if "omega" not in res.extras:
        st.info(f"{picked.short} builds no ω and α maps: only the Neural Wave Machine tunes its oscillators to the image.")
        return
    st.markdown("The NWM turns the image into a drum: ω sets each oscillator's natural frequency and α its damping. "
                "Sharp steps in ω along a shape's outline act as soft walls that reflect and trap the waves "
                "(cf. paper Fig. 3).")
    C = res.extras["omega"].shape[0]
    chans = _channel_picker(C)
    maps, titles = [], []
    for name, sym in (("omega", "ω"), ("alpha", "α"), ("y0", "y₀")):
        for c in chans:
            maps.append(res.extras[name][c])
            titles.append(f"{sym} · c{c}")
    with timings.stage("rendering"):
        st.plotly_chart(figures.maps_figure(np.stack(maps[: 2 * len(chans)]), titles[: 2 * len(chans)],
                                            cols=max(2, len(chans)), colorscale="Cividis", zmin=0,
                                            colorbar_title="ω, α", pixel=(row, col)), key="drum_maps",
                        config=CHART_CONFIG)
        y0 = np.stack(maps[2 * len(chans):])
        st.plotly_chart(figures.maps_figure(y0, titles[2 * len(chans):], cols=max(2, len(chans)),
                                            colorscale=figures.DIVERGING, zmin=-1, zmax=1, colorbar_title="y₀",
                                            pixel=(row, col), height_per_row=260), key="y0_maps",
                        config=CHART_CONFIG)


@st.cache_resource(max_entries=6, show_spinner="Measuring wavelengths…")
def _wave_stats(model_key: str, input_key: str, _hidden: np.ndarray) -> analysis.WaveStats:
    return analysis.wave_statistics(_hidden)


@st.cache_resource(max_entries=6, show_spinner=False)
def _phase_speed(model_key: str, input_key: str, _hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = analysis.analytic_signal(_hidden)
    speed, _ = analysis.speed_maps(_hidden)
    return np.angle(a).astype(np.float32), speed


def _view_phase(picked, mi, res, row, col, timings) -> None:
    if not _needs_waves(picked, res):
        return
    T, C = res.hidden.shape[:2]
    st.markdown("The Hilbert transform gives every pixel a phase at every step; where neighbours' phases differ "
                "little, the local wavelength λ = 2π / |∇φ| is long: a coherent travelling wave rather than "
                "pixel-by-pixel jitter (paper appendix, after Davis et al. 2020).")
    with timings.stage("analysis"):
        ws = _wave_stats(picked.key, mi.key, res.hidden)
        phase, speed = _phase_speed(picked.key, mi.key, res.hidden)
    c1, c2, c3 = st.columns(3)
    c1.metric("long-wavelength share", f"{ws.share:.1%}", help=f"(pixel, step) points with λ > {ws.cut_px:g} px, "
              "i.e. 1.5 × the grid's shortest (Nyquist) wavelength of 2 px")
    c2.metric("same, pixels shuffled", f"{ws.null.null_mean:.1%}", help=f"mean of {len(ws.null.null)} shuffles of "
              "the pixel positions (each pixel keeps its time series)")
    floor = 1 / (1 + len(ws.null.null))  # no shuffle reached the model: the least p this many can show
    c3.metric("p (shuffled ≥ model)", f"≤ {floor:.2f}" if ws.null.p_value <= floor else f"{ws.null.p_value:.2f}",
              help=f"one-sided, (1 + shuffles ≥ model) / (1 + {len(ws.null.null)}); {floor:.2f} is the least "
                   f"{len(ws.null.null)} shuffles can show")
    t = int(st.slider("Step t", 1, T, T // 2, key="t", bind="query-params"))
    chans = _channel_picker(C)
    lam = np.log2(np.clip(ws.wavelength[t - 1], 1, 64))
    with timings.stage("rendering"):
        st.plotly_chart(figures.maps_figure(phase[t - 1, chans], [f"phase φ · c{c} · step {t}" for c in chans],
                                            colorscale=figures.CYCLIC, zmin=-np.pi, zmax=np.pi, cols=4,
                                            colorbar_title="rad", pixel=(row, col)), key="phase_maps",
                        config=CHART_CONFIG)
        st.plotly_chart(figures.maps_figure(lam[chans], [f"log₂ λ (px) · c{c} · step {t}" for c in chans],
                                            zmin=0, zmax=6, cols=4, colorbar_title="log₂ px", pixel=(row, col)),
                        key="lambda_maps", config=CHART_CONFIG)
        st.plotly_chart(figures.maps_figure(np.clip(speed[t - 1, chans], 0, 8), [f"speed · c{c} · step {t}" for c in chans],
                                            zmin=0, zmax=8, cols=4, colorscale="Magma", colorbar_title="px / step",
                                            pixel=(row, col)), key="speed_maps",
                        config=CHART_CONFIG)
        st.plotly_chart(figures.wavelength_histogram(ws.wavelength, ws.null_wavelength, ws.cut_px), key="lambda_hist",
                        config=CHART_CONFIG)


@st.cache_data(max_entries=4, show_spinner="Running the model over a data-set sample…")
def _class_spectra(model_key: str, dataset: str, n: int, _model, amp: bool = False) -> tuple[np.ndarray, np.ndarray]:
    x, y = to_tensors(make_dataset(dataset, n, seed=0, split="test"))
    return analysis.model_class_spectra(_model, x, y, DATASETS.get(dataset).num_classes, amp=amp)


def _view_classes(picked, mi, res, row, col, timings) -> None:
    if not _needs_waves(picked, res):
        return
    ds = picked.dataset
    if DATASETS.get(ds).size != picked.model.config.image_size:
        st.info(f"This model was trained at {picked.model.config.image_size} px, the {ds} set is "
                f"{DATASETS.get(ds).size} px: class spectra need the training size.")
        return
    st.markdown(f"The spectrum of every pixel, averaged over all pixels of each true class in {ds} test images "
                "(paper Fig. 4, right): if the classes' curves differ, a per-pixel readout can tell them apart.")
    n = int(st.select_slider("Images", [4, 8, 16, 32, 64], value=8, key="n", bind="query-params"))
    with timings.stage("analysis"):
        spectra, counts = _class_spectra(picked.key, ds, n, picked.model, picked.amp)
    names = DATASETS.get(ds).class_names
    with timings.stage("rendering"):
        st.plotly_chart(figures.class_spectra_figure(analysis.rfft_freqs(picked.model.config.T), spectra, counts, names),
                        key="class_spectra", config=CHART_CONFIG)


@st.cache_data(max_entries=16, show_spinner="Differentiating the logit through time…")
def _erf(model_key: str, input_key: str, row: int, col: int, label: int, _model, _x) -> analysis.ReceptiveField:
    return analysis.effective_receptive_field(_model, _x, row, col, label=label)


def _view_erf(picked, mi, res, row, col, timings) -> None:
    st.markdown("Which input pixels can change this pixel's decision after t steps: the gradient of its "
                "predicted class's logit with respect to the image, with the waves frozen after step t. "
                "The encoders see only a few pixels; the waves widen that view step by step (paper Fig. 7).")
    label = int(res.pred[row, col])
    with timings.stage("analysis"):
        rf = _erf(picked.key, mi.key, row, col, label, picked.model, mi.x)
    names = figures.class_labels(DATASETS.get(picked.dataset).class_names, label + 1)
    st.caption(f"pixel ({row}, {col}), logit of class {label}: {names[label]}")
    with timings.stage("rendering"):
        st.plotly_chart(figures.erf_figure(rf.steps, rf.maps, rf.radius, (row, col)), key="erf_maps",
                        config=CHART_CONFIG)
        if len(rf.steps) > 1:
            st.plotly_chart(figures.erf_radius_figure(rf.steps, rf.radius), key="erf_radius", config=CHART_CONFIG)


VIEW_RENDERERS = {
    "Pixel": _view_pixel,
    "Frequency maps": _view_bins,
    "Drum: ω and α": _view_drum,
    "Phase & wavelength": _view_phase,
    "Class spectra": _view_classes,
    "Receptive field": _view_erf,
}
