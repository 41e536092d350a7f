"""The Drum page: draw or pick a drum, strike it, watch the wave, see and hear its spectrum.

Layout and widgets only; every number comes from :mod:`waveviz.drum`.
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from waveviz import drum
from waveviz.app import common, figures
from waveviz.app.figures import CHART_CONFIG

DRAW_GRID = 64  # a drawing becomes a DRAW_GRID × DRAW_GRID drum

INTRO = """
A drum is a membrane clamped at its rim. Struck, it rings at a set of frequencies fixed by its
shape alone, its **spectrum**. Here the membrane is the hidden state of a recurrent network, one
neuron per pixel, each step the leapfrog update of the wave equation
`v ← v + Δt·c²·(Δ * u)`, `u ← (u + Δt·v) ⊙ M` with a 3 × 3 Laplacian kernel `Δ` and the drum mask `M`
(paper Fig. 2). Watch the strike spread, bounce off the rim and settle into standing waves; the
spectrum of one neuron's activity then shows peaks exactly at the drum's eigenfrequencies
(dashed lines, computed independently from the Laplacian). Time is in units of the simulation:
one step is Δt, frequencies are cycles per unit time.
"""


@st.cache_data(show_spinner="Striking the drum…", max_entries=16)
def _lab(mask: np.ndarray, strike: tuple[int, int], c: float, dt: float, steps: int) -> drum.LabResult:
    return drum.run_lab(mask, strike, drum.LabConfig(c=c, dt=dt, steps=steps))


@st.cache_data(show_spinner="Running the paper's Fig. 2 experiment…")
def _verify() -> drum.VerifyResult:
    return drum.verify_square_drums()


@st.cache_data(show_spinner=False)
def _isospectral(scale: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    return drum.isospectral_eigenvalues(scale)


@st.cache_data(show_spinner=False)
def _sound(mode_hz: np.ndarray, weights: np.ndarray) -> bytes:
    return drum.drum_sound(mode_hz, weights)


def _pick_drum() -> np.ndarray | None:
    """The drum as a mask, or None (after saying why in one line)."""
    source = st.radio("Drum", ["Pick a shape", "Draw one"], horizontal=True, key="drum_source")
    if source == "Pick a shape":
        shape = st.selectbox("Shape", list(drum.SHAPES), key="drum_shape")
        size = st.slider("Grid size (pixels)", 16, 64, 48, step=4, key="drum_size")
        return drum.make_drum(shape, size)

    mode = st.radio("Tool", ["freedraw", "polygon", "circle", "rect"], horizontal=True, key="drum_tool",
                    help="An outline is filled; only the largest connected piece is kept.")
    st.write("")  # room for the canvas toolbar, which appears above the canvas on hover
    try:
        result = common.draw_canvas(stroke_width=6, stroke_color="#222222", fill_color="rgba(34, 34, 34, 0.6)",
                                    height=common.CANVAS_PX, width=common.CANVAS_PX, drawing_mode=mode,
                                    return_image_data=True, key="drum_canvas")
    except Exception as e:  # the component failed to load: say so, the shapes still work
        st.warning(f"The drawing canvas is unavailable ({type(e).__name__}); pick a shape instead.")
        return None
    image = None if result is None else result.image_data
    if image is None or not np.asarray(image)[..., 3].any():
        st.info("Draw a closed outline on the canvas: it becomes the drum.")
        return None
    alpha = np.array(image)[..., 3]  # (h, w) copy; the default transparent background leaves ink opaque
    return drum.mask_from_drawing(alpha, DRAW_GRID)


def _inside(mask: np.ndarray, point) -> bool:
    return point is not None and 0 <= point[0] < mask.shape[0] and 0 <= point[1] < mask.shape[1] and mask[point]


def _choose_strike(mask: np.ndarray) -> tuple[int, int]:
    where = st.radio("Strike", ["centre", "clicked point"], horizontal=True, key="drum_strike_mode")
    strike = drum.centre_point(mask)
    if where == "clicked point":
        clicked = st.session_state.get("drum_click")
        if _inside(mask, clicked):
            strike = clicked
        else:
            st.caption("Click a pixel of the drum to strike there (until then: the centre).")
    clicked = common.clickable_chart(figures.drum_strike_figure(mask, strike), key="drum_strike_plot")
    if where == "clicked point" and clicked != st.session_state.get("drum_click") and _inside(mask, clicked):
        st.session_state["drum_click"] = clicked
        st.rerun()
    return strike


def _wave_tab(lab: drum.LabResult) -> None:
    frames, vmax = figures.drum_wave_frames(lab)
    st.plotly_chart(figures.animation_figure(frames, clickable=False, height=520), config=CHART_CONFIG,
                    key="drum_wave")
    steps = lab.frame_steps
    early = int(np.median(np.diff(steps[: len(steps) // 2])))
    st.caption(f"Displacement u (red up, blue down, grey clamped), ± the {figures.SCALE_PERCENTILE:g}th percentile "
               f"of |u| after the strike (±{vmax:.2g}). Struck with a bump {lab.config.strike_width:g} px wide. "
               f"Frames every ~{early} steps while the strike spreads and reflects, then further apart as it "
               f"settles, up to step {int(steps[-1]):,} (one step is Δt = {lab.config.dt:g}). Press ▶.")


def _spectrum_tab(lab: drum.LabResult) -> None:
    st.plotly_chart(figures.drum_spectrum_figure(lab), config=CHART_CONFIG)
    errors = drum.peak_errors(lab)
    st.dataframe({
        "mode": np.arange(1, lab.mode_hz.size + 1),
        "λ (−Δ)": lab.modes.eigenvalues.round(6),
        "c√λ/2π": lab.modes.continuum_hz(lab.config.c).round(6),
        "leapfrog f": lab.mode_hz.round(6),
        "amplitude at the strike": lab.weights.round(6),
        "nearest peak error": ["weak: not scored" if e is None else f"{e:.3%}" for e in errors],
    }, hide_index=True)
    measured = [e for e in errors if e is not None]
    worst = max(measured) if measured else float("nan")
    st.caption(f"Red dashed: eigenfrequencies of the modes the strike excites strongly, scored against the "
               f"nearest measured peak; grey: modes with under {lab.config.rel_weight:.0%} of the strongest "
               f"one's amplitude at the strike (none at all at a node or by symmetry), not scored: a small peak "
               f"can still show there. Worst scored error {worst:.3%}; FFT bin "
               f"{1 / (lab.config.steps * lab.config.dt):.2g}.")


def _modes_tab(lab: drum.LabResult) -> None:
    st.plotly_chart(figures.drum_modes_figure(lab), config=CHART_CONFIG)
    st.caption("Normal modes: each pixel oscillates with the mode's frequency and this amplitude; "
               "white lines are nodes.")


def _listen_tab(lab: drum.LabResult) -> None:
    st.audio(_sound(lab.mode_hz, lab.weights), format="audio/wav")
    st.caption("The struck pixel's signal as a sum of the computed modes, pitched so that the lowest "
               "excited mode sounds at 220 Hz; overtone ratios are the drum's own.")


def _fig2_tab() -> None:
    st.markdown("Paper Fig. 2: square drums of side L = 13 … 21, each struck at its centre; the lowest peak of "
                "the struck pixel's spectrum should sit at the fundamental c/(√2·L).")
    if st.button("Verify Fig. 2", key="drum_verify", help="Runs the nine drums for 40,000 steps (a few seconds).") \
            or st.session_state.get("drum_verified"):
        st.session_state["drum_verified"] = True
        _fig2_result(_verify())


def _fig2_result(result: drum.VerifyResult) -> None:
    rows = result.rows
    verdict = "✅ passed" if result.passed() else "❌ failed"
    st.markdown(f"**{verdict}**: every measured fundamental within {result.max_abs_rel_error:.3%} of c/(√2·L) "
                f"and within {result.max_bins_from_discrete:.1g} FFT bins of the exact discrete prediction "
                "(the test: ≤ 0.5 % and ≤ 1 bin).")
    st.plotly_chart(figures.drum_fig2_figure(result), config=CHART_CONFIG)
    st.dataframe([{"L": r.side, "theory": r.theory, "discrete": r.discrete, "measured": r.measured,
                   "rel. error": f"{r.rel_error:+.3%}"} for r in rows], hide_index=True)
    cfg = result.config
    st.caption(f"Square drums struck at the centre, c = {cfg.c}, Δt = {cfg.dt}, {cfg.steps:,} steps. Largest "
               f"error {result.max_abs_rel_error:.3%}: the grid's own Laplacian is slightly softer than the "
               f"continuum's; the measurement sits within {result.max_bins_from_discrete:.1g} FFT bins of "
               f"the exact discrete prediction.")


def _isospectral_tab(size: int) -> None:
    scale = max(2, min(16, (size - 1) // 3))
    masks, lam = _isospectral(scale)
    cols = st.columns(len(masks))
    for col, (name, m) in zip(cols, masks.items()):
        col.plotly_chart(figures.drum_shape_figure(m, name), config=CHART_CONFIG)
    st.plotly_chart(figures.eigenvalues_figure(list(masks), lam, scale), config=CHART_CONFIG)
    gap_pair = np.max(np.abs(lam[0] - lam[1]) / lam[0])
    gap_control = np.max(np.abs(lam[0] - lam[2]) / lam[0])
    st.markdown(
        f"Can one hear the shape of a drum? **No.** The Gordon–Webb–Wolpert drums A and B are different "
        f"shapes built from the same seven triangles, yet their first 10 eigenvalues agree to "
        f"{gap_pair:.1e} (relative): on this grid they are exactly isospectral, at every resolution. The "
        f"notched square has the same area but differs by up to {gap_control:.0%}: it sounds different."
    )


def render() -> None:
    st.title("Drum lab")
    st.markdown(INTRO)
    left, right = st.columns([1, 2], gap="large")
    with left:
        try:
            mask = _pick_drum()
        except drum.DrumError as e:
            st.warning(str(e))
            mask = None
        with st.expander("Time stepping"):
            c = st.number_input("wave speed c (pixels per unit time)", 0.1, 4.0, 1.0, 0.1, key="drum_c")
            dt = st.number_input("Δt per step (stable while c·Δt < 1/√2)", 0.01, 1.0, 0.5, 0.05, key="drum_dt")
            steps = st.slider("steps", 1000, 20000, 5000, step=1000, key="drum_steps")
        if mask is not None:
            st.caption(f"{int(mask.sum())} free pixels on a {mask.shape[0]}×{mask.shape[1]} grid.")
            strike = _choose_strike(mask)
    with right:
        lab = None
        if mask is not None:
            try:
                lab = _lab(mask, strike, float(c), float(dt), int(steps))
            except drum.DrumError as e:
                st.error(str(e))
        tabs = st.tabs(["Wave", "Spectrum", "Modes", "Listen", "Paper Fig. 2", "Hear the shape?"])
        if lab is not None:
            with tabs[0]:
                _wave_tab(lab)
            with tabs[1]:
                _spectrum_tab(lab)
            with tabs[2]:
                _modes_tab(lab)
            with tabs[3]:
                _listen_tab(lab)
        with tabs[4]:
            _fig2_tab()
        with tabs[5]:
            _isospectral_tab(st.session_state.get("drum_size", 48))
