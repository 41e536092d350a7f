"""The drum lab: wave RNN vs theory (paper Fig. 2), spectra, isospectral drums, CLI and page."""
import io
import json
import tracemalloc
import types
import wave
from pathlib import Path

import numpy as np
import pytest

from waveviz import drum
from waveviz.cli import main

ROOT = Path(__file__).resolve().parents[1]


def blob_drawing(size: int = 320, outline: bool = False, centre=(160, 160)) -> np.ndarray:
    """An RGBA canvas image (size, size, 4) uint8 of a lopsided blob, filled or as a 6-pixel outline."""
    yy, xx = np.mgrid[:size, :size]
    th = np.arctan2(yy - centre[0], xx - centre[1])
    r = np.hypot(yy - centre[0], xx - centre[1])
    radius = size * (0.34 + 0.07 * np.sin(3 * th) + 0.04 * np.cos(5 * th + 0.7))
    ink = np.abs(r - radius) < 3 if outline else r < radius
    img = np.zeros((size, size, 4), dtype=np.uint8)
    img[ink] = (34, 34, 34, 255)
    return img


def run_cli(*argv: str) -> int:
    return main(list(argv))


# --- paper Fig. 2 ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fig2():
    return drum.verify_square_drums()  # nine drums, 40,000 steps


@pytest.mark.slow
def test_square_drums_match_theory(fig2):
    assert [r.side for r in fig2.rows] == list(range(13, 22))
    for r in fig2.rows:
        assert r.theory == pytest.approx(1.0 / (np.sqrt(2) * r.side))
        assert abs(r.rel_error) <= 5e-3, f"L={r.side}: {r.rel_error:.3%}"
        assert abs(r.measured - r.discrete) <= fig2.config.bin_hz, f"L={r.side} more than one bin off"
    # the residual is the grid's discretisation error, which shrinks as the drum grows
    errors = [abs(r.rel_error) for r in fig2.rows]
    assert errors == sorted(errors, reverse=True)
    assert fig2.passed()


@pytest.mark.slow
def test_verify_cli_json(capsys):
    assert run_cli("drum", "verify", "--json", "--steps", "20000", "--dt", "0.2") == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"c", "dt", "steps", "rows"} and out["steps"] == 20000 and out["dt"] == 0.2
    assert [row["side"] for row in out["rows"]] == list(range(13, 22))
    assert set(out["rows"][0]) == {"side", "theory", "discrete", "measured", "rel_error"}
    assert max(abs(row["rel_error"]) for row in out["rows"]) <= 5e-3


# --- ground truth ------------------------------------------------------------------------------

@pytest.mark.parametrize("side", [9, 24])  # 64 free pixels: dense solver; 529: sparse shift-invert
def test_eigenvalues_match_closed_form(side):
    modes = drum.drum_modes(drum.square_mask(side), k=12)
    np.testing.assert_allclose(modes.eigenvalues, drum.square_eigenvalues(side, 12), rtol=1e-9)
    # the fundamental is sin(πx/L)·sin(πy/L)
    s = np.sin(np.pi * np.arange(side + 1) / side)
    exact = np.outer(s, s) / np.linalg.norm(np.outer(s, s))
    assert abs((modes.shapes[0] * exact).sum()) == pytest.approx(1.0, abs=1e-9)


def test_frequency_conversions():
    lam = drum.square_eigenvalues(16, 1)
    assert drum.continuum_hz(lam, 2.0) == pytest.approx(2.0 * np.sqrt(lam) / (2 * np.pi))
    # leapfrog raises every frequency: sin(ω_d·dt/2) = ω·dt/2
    fd = drum.leapfrog_hz(lam, 1.0, 0.5)
    assert np.sin(2 * np.pi * fd * 0.5 / 2) == pytest.approx(np.sqrt(lam) * 0.5 / 2)
    assert fd > drum.continuum_hz(lam, 1.0)


# --- simulator ---------------------------------------------------------------------------------

def test_batched_matches_reference():
    masks = [drum.make_drum("circle", 21), drum.make_drum("L-shape", 17), drum.square_mask(12)]
    strikes = [(7, 12), (4, 5), (3, 8)]
    batch = drum.pad_masks(masks)
    cfg = drum.WaveConfig(c=1.3, dt=0.4, steps=400)
    fast = drum.simulate(batch, drum.strike_field(batch, strikes), cfg, probes=strikes).traces  # (T, D)
    for d, (m, p) in enumerate(zip(masks, strikes)):
        ref = drum.simulate_reference(m, drum.strike_field(m[None], [p])[0], cfg, p)
        np.testing.assert_allclose(fast[:, d], ref, rtol=0, atol=1e-12)
    assert np.abs(fast).max() > 1e-3


def test_initial_velocity_and_frames():
    mask = drum.square_mask(10)
    rng = np.random.default_rng(0)
    v0 = rng.standard_normal(mask.shape) * mask
    cfg = drum.WaveConfig(dt=0.3, steps=60)
    run = drum.simulate(mask, np.zeros(mask.shape), cfg, v0=v0[None], frame_every=20)
    assert run.frames.shape == (4, 1, *mask.shape) and run.traces is None
    # first step of Verlet from rest at u = 0: u_1 = dt·(v_0 + 0) = dt·v_0
    step1 = drum.simulate(mask, np.zeros(mask.shape), drum.WaveConfig(dt=0.3, steps=1), v0=v0[None], frame_every=1)
    np.testing.assert_allclose(step1.frames[1, 0], 0.3 * v0, atol=1e-15)
    assert np.all(run.frames[:, 0][:, ~mask] == 0)


def test_probe_only_run_does_not_store_the_field():
    mask = drum.square_mask(63)  # 64 × 64 grid
    cfg = drum.WaveConfig(dt=0.5, steps=2000)
    tracemalloc.start()
    run = drum.simulate(mask, drum.strike_field(mask[None], [(20, 30)]), cfg, probes=[(20, 30)])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert run.traces.shape == (2000, 1) and run.frames is None
    assert peak < 0.05 * cfg.steps * mask.size * 8  # far below T·H·W float64


@pytest.mark.parametrize("dt", [0.71, 1.0])
def test_unstable_time_step_is_refused(dt, capsys):
    with pytest.raises(drum.DrumError, match="unstable"):
        drum.WaveConfig(c=1.0, dt=dt)
    assert run_cli("drum", "verify", "--dt", str(dt)) == 2
    err = capsys.readouterr().err
    assert "unstable" in err and "Traceback" not in err and err.count("\n") == 1


def test_just_below_the_limit_stays_bounded():
    mask = drum.square_mask(20)
    cfg = drum.WaveConfig(c=1.0, dt=0.7, steps=3000)
    trace = drum.simulate(mask, drum.strike_field(mask[None], [(10, 10)]), cfg, probes=[(10, 10)]).traces
    assert np.abs(trace).max() <= 1.0


# --- spectrum ----------------------------------------------------------------------------------

@pytest.mark.parametrize("window, tol_bins", [("hann", 1e-4), ("rect", 1e-2)])  # rect leaks more
@pytest.mark.parametrize("bins", [30.37, 205.5, 819.23])
def test_peak_interpolation_is_sub_bin(window, tol_bins, bins):
    dt, n = 0.1, 4096
    bin_hz = 1 / (n * dt)
    f = bins * bin_hz  # between two bins: the raw maximum is 0.23 … 0.5 bin off
    trace = np.cos(2 * np.pi * f * np.arange(n) * dt + 0.3)
    assert drum.find_peaks(trace, dt, n=1, window=window)[0] == pytest.approx(f, abs=tol_bins * bin_hz)


def test_hann_interpolation_near_zero_frequency():
    dt, n = 0.1, 4096
    f = 5.5 / (n * dt)  # the peak's mirror image at −f leaks into it
    trace = np.cos(2 * np.pi * f * np.arange(n) * dt)
    assert drum.find_peaks(trace, dt, n=1)[0] == pytest.approx(f, rel=1e-3)


def test_lowest_peak_of_two_tones():
    dt, n = 0.1, 8192
    t = np.arange(n) * dt
    trace = 0.2 * np.sin(2 * np.pi * 0.031 * t) + np.sin(2 * np.pi * 0.087 * t)
    peaks = drum.find_peaks(trace, dt)
    np.testing.assert_allclose(peaks, [0.031, 0.087], atol=2e-5)


# --- beyond the paper --------------------------------------------------------------------------

def test_outline_drawing_becomes_a_filled_drum():
    filled = drum.mask_from_drawing(blob_drawing()[..., 3], 48)
    outline = drum.mask_from_drawing(blob_drawing(outline=True)[..., 3], 48)
    assert outline.sum() == pytest.approx(filled.sum(), rel=0.1)
    assert (outline & filled).sum() >= 0.9 * filled.sum()
    with pytest.raises(drum.DrumError, match="empty"):
        drum.mask_from_drawing(np.zeros((320, 320)), 48)


def test_a_bump_strike_and_frames_that_crowd_the_start():
    mask = drum.make_drum("square", 40)
    u0 = drum.bump_field(mask, (20, 20), 2.0)
    assert u0[20, 20] == 1.0 and 0.5 < u0[20, 22] < 0.7 and u0[~mask].max() == 0
    with pytest.raises(drum.DrumError, match="outside"):
        drum.bump_field(mask, (0, 0))
    at = drum.frame_schedule(5000, 120, 300)
    assert at[0] == 0 and at[-1] == 5000 and len(at) >= 100
    assert np.diff(at[at <= 300]).max() <= 4 and np.diff(at[at > 300]).max() > 100
    cfg = drum.WaveConfig(dt=0.5, steps=60)
    every = drum.simulate(mask, u0[None], cfg, frame_every=20)
    chosen = drum.simulate(mask, u0[None], cfg, record_at=[0, 20, 60])
    assert np.array_equal(chosen.frames[:, 0], every.frames[[0, 1, 3], 0]) and list(chosen.frame_steps) == [0, 20, 60]


def test_modes_a_strike_cannot_excite_are_marked_not_excited():
    lab = drum.run_lab(drum.make_drum("square", 31), (15, 15), drum.LabConfig(steps=8_000))
    errors = drum.peak_errors(lab)
    assert errors[1] is None and errors[2] is None  # the (1, 2) / (2, 1) pair has a node at the centre
    measured = [e for e in errors if e is not None]
    assert len(measured) >= 3 and max(measured) < 0.01  # what the strike does excite, it hears


def test_drawn_drum_spectrum_matches_its_eigenfrequencies():
    mask = drum.mask_from_drawing(blob_drawing()[..., 3], 40)
    lab = drum.run_lab(mask, (12, 17), drum.LabConfig(dt=0.5, steps=20_000))
    excited = lab.excited
    assert excited.size >= 5
    errors = drum.match_peaks(lab.mode_hz[excited], lab.peaks)
    assert errors.max() <= 0.01, errors
    # the ground truth is leapfrog's, not the continuum's: at c·dt = 0.5 the difference is visible
    continuum = drum.match_peaks(lab.modes.continuum_hz(1.0)[excited], lab.peaks)
    assert continuum.max() > errors.max()


def test_gww_drums_are_isospectral_and_a_control_is_not():
    rows = drum.isospectral_study(scales=(4, 8, 16), k=10)
    for r in rows:
        assert r.free_pixels[0] == r.free_pixels[1]
        assert r.gap_pair <= 5e-3
        assert r.gap_control >= 0.05  # equal area (3.5 triangles' worth), different sound
    # finer grids approach the continuum spectrum
    assert rows[0].continuum_error > rows[1].continuum_error > rows[2].continuum_error
    masks, _ = drum.isospectral_eigenvalues(8)
    a, b = masks["GWW drum A"], masks["GWW drum B"]
    assert not any(np.array_equal(a, t) for t in (b, b.T, b[::-1], b[:, ::-1], b[::-1, ::-1], b.T[::-1]))


def test_drum_sound_is_a_wav_at_the_chosen_pitch():
    mask = drum.make_drum("square", 33)
    modes = drum.drum_modes(mask, 12)
    data = drum.drum_sound(modes.continuum_hz(1.0), modes.weights(drum.centre_point(mask)), base_hz=220.0)
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050)
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(float)
    assert samples.size == 2 * 22050 and np.abs(samples).max() > 20000
    assert drum.find_peaks(samples, 1 / 22050, n=1)[0] == pytest.approx(220.0, abs=1.0)


def test_unknown_shape_lists_the_valid_ones():
    with pytest.raises(drum.DrumError, match="circle"):
        drum.make_drum("hexagon")


# --- the page ----------------------------------------------------------------------------------

@pytest.fixture
def app(monkeypatch):
    """The Drum page under AppTest, with a fake canvas whose drawing the test sets."""
    from streamlit.testing.v1 import AppTest

    from waveviz.app import common

    canvas = types.SimpleNamespace(image_data=None, json_data={})
    monkeypatch.setattr(common, "draw_canvas", lambda **kwargs: canvas)
    at = AppTest.from_file(str(ROOT / "app_pages" / "drum.py"), default_timeout=60)
    at.canvas = canvas
    return at


@pytest.mark.slow
def test_page_shows_a_picked_drum_and_fig2(app):
    app.run()
    assert not app.exception
    captions = " ".join(c.value for c in app.caption)
    assert "free pixels on a 48×48 grid" in captions
    assert "Largest error" not in captions  # Fig. 2 runs when asked, not on every page load
    assert any("isospectral" in m.value for m in app.markdown)
    assert "Struck with a bump 2 px wide" in captions and "Press ▶" in captions
    anim = next(json.loads(c.proto.spec) for c in app.get("plotly_chart") if json.loads(c.proto.spec).get("frames"))
    steps = [int(f["name"]) for f in anim["frames"]]
    assert len(steps) >= 100 and steps[0] == 0 and steps[-1] == 5000
    assert max(np.diff(steps[:60])) <= 5  # close together while the strike spreads: it plays smoothly
    app.button(key="drum_verify").click().run()
    assert not app.exception
    assert "Largest error 0.2" in " ".join(c.value for c in app.caption)  # the Fig. 2 verification ran
    assert any(m.value.startswith("**✅ passed**") for m in app.markdown)
    assert len(app.dataframe) >= 2  # its result table (and the spectrum's)


@pytest.mark.slow
def test_page_hears_a_drawn_drum(app):
    app.run()
    app.radio(key="drum_source").set_value("Draw one").run()
    assert [i.value for i in app.info] == ["Draw a closed outline on the canvas: it becomes the drum."]

    app.canvas.image_data = blob_drawing(outline=True)
    app.run()
    assert not app.exception and not app.error and not app.warning
    expected = drum.mask_from_drawing(blob_drawing(outline=True)[..., 3], 64).sum()
    assert f"{expected} free pixels on a 64×64 grid." in [c.value for c in app.caption]
    spectrum = next(c.value for c in app.caption if c.value.startswith("Red dashed"))
    worst = float(spectrum.split("Worst scored error ")[1].split("%")[0])
    assert worst < 1.0


@pytest.mark.slow
def test_page_says_what_is_wrong_in_one_line(app):
    app.run()
    app.radio(key="drum_source").set_value("Draw one")
    dot = np.zeros((320, 320, 4), dtype=np.uint8)
    dot[100:104, 100:104] = 255
    app.canvas.image_data = dot
    app.run()
    assert not app.exception
    assert "too small" in app.warning[0].value

    app.canvas.image_data = blob_drawing()
    app.number_input(key="drum_dt").set_value(0.9).run()
    assert not app.exception
    assert app.error[0].value.startswith("unstable: c·dt = 0.9")


@pytest.mark.slow
def test_page_strikes_the_clicked_point(app):
    app.run()
    app.radio(key="drum_strike_mode").set_value("clicked point").run()
    assert "Click a pixel" in " ".join(c.value for c in app.caption)
    app.session_state["drum_click"] = (10, 30)  # what a click on the strike plot stores
    app.run()
    assert not app.exception
    strike_marker = json.loads(app.get("plotly_chart")[0].proto.spec)["data"][-1]
    assert (strike_marker["y"], strike_marker["x"]) == ([10], [30])
    assert "Click a pixel" not in " ".join(c.value for c in app.caption)


def test_a_click_on_the_strike_figure_names_its_pixel():
    from waveviz.app import figures

    mask = drum.make_drum("square", 16)
    layer = figures.drum_strike_figure(mask, (8, 8)).data[1]  # one transparent marker per free pixel
    assert len(layer.x) == mask.sum()
    for i in (0, 7, len(layer.x) - 1):
        row, col = figures.pixel_from_points([{"customdata": list(layer.customdata[i])}])
        assert (row, col) == (layer.y[i], layer.x[i]) and mask[row, col]
