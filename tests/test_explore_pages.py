"""AppTest for the Explore and Compare pages: every view and input path, a faked canvas drawing and
a faked pixel click, URL round trips, and the helpful messages for bad inputs and no checkpoints."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from waveviz.app import common, compare_page, explore_page

ROOT = Path(__file__).resolve().parent.parent
EXPLORE = str(ROOT / "pages" / "1_Explore.py")
COMPARE = str(ROOT / "pages" / "2_Compare.py")


def _app(page: str, **params) -> AppTest:
    at = AppTest.from_file(page, default_timeout=120)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def _charts(at: AppTest) -> list[dict]:
    """The plotly figure spec of every plotly chart on the page."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


class FakeCanvas:
    """What streamlit-drawable-canvas returns: `.image_data` (h, w, 4) uint8, read-only."""

    def __init__(self, rgba: np.ndarray | None):
        if rgba is not None:
            rgba.setflags(write=False)
        self.image_data = rgba


def _stroke(colour=(255, 255, 255)) -> np.ndarray:
    """A closed square outline 60 px wide on a transparent 320 × 320 canvas."""
    rgba = np.zeros((common.CANVAS_PX, common.CANVAS_PX, 4), np.uint8)
    rgba[100:200, 120:220] = (*colour, 255)
    rgba[115:185, 135:205] = 0
    return rgba


# --------------------------------------------------------------------------------- Explore

def test_explore_without_checkpoints_says_how_to_get_them(empty_home):
    at = _app(EXPLORE)
    assert not at.exception
    text = " ".join(w.value for w in at.warning)
    assert "No trained models" in text and "waveviz train" in text
    assert "Explore the waves" in at.title[0].value


def test_explore_opens_with_a_preloaded_example(app_home):
    at = _app(EXPLORE)
    _ok(at)
    assert at.selectbox(key="model").value == "job-tiny-nwm"  # the NWM with linear readout ranks first
    assert "tiny" not in at.markdown[0].value and len(at.markdown[0].value) > 100  # the lecturer's intro
    caps = _captions(at)
    assert "Input: drew tetrominoes sample (seed 0" in caps
    assert "model" in caps and "rendering" in caps and "total" in caps  # the timing line
    assert {m.label for m in at.metric} >= {"FG-Acc", "FG-IoU", "FG-Loss"}
    anim = next(s for s in _charts(at) if s.get("frames"))
    assert len(anim["frames"]) == 12  # T = 12 steps, one frame each
    assert anim["frames"][0]["data"][0]["source"].startswith("data:image/png;base64,")
    assert at.get("download_button")  # the GIF


@pytest.mark.parametrize("view", explore_page.VIEWS)
def test_explore_every_view(app_home, view):
    at = _app(EXPLORE, view=view)
    _ok(at)
    assert at.session_state["view"] == view
    if view == "Receptive field":
        assert "logit of class" in _captions(at)
    if view == "Phase & wavelength":
        assert {"long-wavelength share", "same, pixels shuffled"} <= {m.label for m in at.metric}


@pytest.mark.slow
def test_explore_views_of_a_feed_forward_model(app_home):
    at = _app(EXPLORE, model="job-tiny-cnn")
    _ok(at)
    assert any("feed-forward" in i.value for i in at.info)
    for view in explore_page.VIEWS:
        at.session_state["view"] = view
        at.run()
        _ok(at)


def test_explore_lstm_and_sample_seed(app_home):
    at = _app(EXPLORE, model="job-tiny-lstm", seed="5")
    _ok(at)
    assert at.number_input(key="seed").value == 5
    assert "seed 5" in _captions(at)
    assert "engine auto" in _captions(at) and "autocast" not in _captions(at)  # the tiny job trained in float32
    at.number_input(key="seed").set_value(6).run()
    _ok(at)
    assert "seed 6" in _captions(at)


def test_explore_faked_canvas_drawing(app_home, monkeypatch):
    drawings = {"now": _stroke()}
    monkeypatch.setattr(common, "draw_canvas", lambda **kw: FakeCanvas(drawings["now"]))
    at = _app(EXPLORE, src="Draw")
    _ok(at)
    caps = _captions(at)
    assert "took the 320×320 drawing" in caps and "filled the closed outlines" in caps
    assert "resized 320×320 → 64×64" in caps
    assert any("No true mask" in c.value for c in at.caption)
    assert any(s.get("frames") for s in _charts(at))  # the waves of the drawing

    drawings["now"] = np.zeros((320, 320, 4), np.uint8)  # cleared canvas
    at.run()
    assert not at.exception
    assert any("empty" in w.value for w in at.warning)

    drawings["now"] = np.full((320, 320, 4), 255, np.uint8)  # painted all over
    at.run()
    assert not at.exception
    assert any("no shape" in w.value for w in at.warning)

    drawings["now"] = None  # nothing drawn yet
    at.run()
    assert not at.exception
    assert any("Draw a shape" in i.value for i in at.info)


def test_explore_eraser_and_grey_colour_controls(app_home, monkeypatch):
    seen = {}

    def canvas(**kw):
        seen.update(kw)
        return FakeCanvas(_stroke())

    monkeypatch.setattr(common, "draw_canvas", canvas)
    at = _app(EXPLORE, src="Draw")
    at.radio(key="tool").set_value("eraser")
    at.slider(key="brush").set_value(40)
    at.checkbox(key="trace").check()
    at.run()
    _ok(at)
    assert seen["stroke_color"] == "#000000" and seen["drawing_mode"] == "freedraw" and seen["stroke_width"] == 40
    assert seen["background_image"].size == (common.CANVAS_PX, common.CANVAS_PX)
    assert seen["return_image_data"] is True


def test_explore_faked_pixel_click(app_home, monkeypatch):
    real = common.clickable_chart
    clicks = {"seg_click": (5, 7)}

    def fake(fig, key, **kw):  # a click on the prediction panel, in the first run only
        real(fig, key, **kw)
        return clicks.pop(key, None)

    monkeypatch.setattr(common, "clickable_chart", fake)
    at = _app(EXPLORE)
    _ok(at)
    assert (at.number_input(key="row").value, at.number_input(key="col").value) == (5, 7)
    titles = [s["layout"].get("title", {}).get("text", "") for s in _charts(at)]
    assert "pixel (5, 7) over time" in titles
    at.number_input(key="row").set_value(9).run()  # typing a row still works after a click
    _ok(at)
    assert at.number_input(key="row").value == 9


@pytest.mark.parametrize("name,payload,expect", [
    ("notes.txt", b"not an image at all", "not a readable PNG or JPEG"),
    ("empty.png", b"", "empty"),
    ("tiny.png", "tiny", "at least 8×8"),
    ("white.png", "white", "no shape"),
])
def test_explore_bad_uploads_give_one_line(app_home, name, payload, expect):
    if payload == "tiny":
        payload = _png(np.zeros((4, 4), np.uint8))
    elif payload == "white":
        payload = _png(np.full((100, 80), 255, np.uint8))
    at = _app(EXPLORE, src="Upload")
    at.file_uploader(key="upload").set_value((name, payload, "image/png")).run()
    assert not at.exception
    assert any(expect in w.value and "\n" not in w.value for w in at.warning), [w.value for w in at.warning]


def test_explore_upload_dark_on_white_is_inverted(app_home):
    img = np.full((300, 500, 3), 255, np.uint8)
    img[100:200, 150:300] = (10, 10, 10)
    at = _app(EXPLORE, src="Upload")
    at.file_uploader(key="upload").set_value(("drawing.jpg", _png(img, "JPEG"), "image/jpeg")).run()
    _ok(at)
    caps = _captions(at)
    assert "inverted light and dark" in caps and "padded 300×500" in caps


def test_explore_url_round_trip(app_home):
    at = _app(EXPLORE, model="job-tiny-nwmfft", seed="3", view="Frequency maps", row="4", col="6", demean="true")
    _ok(at)
    assert at.selectbox(key="model").value == "job-tiny-nwmfft"
    assert at.number_input(key="seed").value == 3
    assert (at.number_input(key="row").value, at.number_input(key="col").value) == (4, 6)
    assert at.toggle(key="demean").value is True
    assert at.session_state["view"] == "Frequency maps"
    assert at.multiselect(key="bins").value  # the strongest bins are preselected


@pytest.mark.slow
def test_explore_many_channels_animates_a_chosen_few(monkeypatch, tmp_path):
    import torch

    import waveviz
    import waveviz.paths

    torch.manual_seed(0)
    model = waveviz.create_model("nwm-linear-multi_mnist", C=6, T=5, head=(8,))  # untrained is enough here
    (tmp_path / "jobs" / "wide").mkdir(parents=True)
    waveviz.save_checkpoint(tmp_path / "jobs" / "wide" / "best.pt", model, "nwm-linear-multi_mnist",
                            {"dataset": "multi_mnist"})
    monkeypatch.setenv("WAVEVIZ_HOME", str(tmp_path))
    monkeypatch.setattr(waveviz.paths, "SHIPPED_CHECKPOINTS", tmp_path / "none")
    at = _app(EXPLORE, view="Drum: ω and α")
    _ok(at)
    assert at.multiselect(key="anim").value == [0, 1, 2, 3]
    anim = next(s for s in _charts(at) if s.get("frames"))
    assert [a["text"] for a in anim["layout"]["annotations"]] == ["c0", "c1", "c2", "c3"]
    at.multiselect(key="anim").set_value([5]).run()
    _ok(at)
    anim = next(s for s in _charts(at) if s.get("frames"))
    assert [a["text"] for a in anim["layout"]["annotations"]] == ["c5"]
    at.selectbox(key="ch").set_value(4).run()  # one channel at a time in the maps
    _ok(at)


# --------------------------------------------------------------------------------- Compare

def test_compare_without_checkpoints(empty_home):
    at = _app(COMPARE)
    assert not at.exception
    assert any("waveviz train" in w.value for w in at.warning)


def test_compare_default_lineup_and_table(app_home):
    at = _app(COMPARE)
    _ok(at)
    chosen = at.multiselect(key="models").value
    assert chosen == ["job-tiny-nwm", "job-tiny-nwmfft", "job-tiny-lstm", "job-tiny-cnn"]
    table = at.dataframe[0].value
    assert list(table["model"]) == ["NWM linear", "NWM fft", "LSTM linear", "CNN-2"]
    assert {"FG-Acc", "FG-IoU", "FG-Loss", "test FG-IoU", "params"} <= set(table.columns)
    waves = next(s for s in _charts(at) if s.get("frames"))
    assert len(waves["frames"]) == 12 and len(waves["frames"][0]["traces"]) == 3  # CNN has no clock
    assert "model" in _captions(at)


def test_compare_url_and_drawing(app_home, monkeypatch):
    monkeypatch.setattr(common, "draw_canvas", lambda **kw: FakeCanvas(_stroke()))
    at = AppTest.from_file(COMPARE, default_timeout=120)
    at.query_params["models"] = ["job-tiny-lstm", "job-tiny-nwm"]
    at.query_params["cmp_src"] = "Draw"
    at.run()
    _ok(at)
    assert at.multiselect(key="models").value == ["job-tiny-lstm", "job-tiny-nwm"]
    table = at.dataframe[0].value
    assert "FG-Acc" not in table.columns  # a drawing has no true mask
    assert any("No true mask" in c.value for c in at.caption)


def test_default_lineup_prefers_the_papers_table():
    presets = {"a": "cnn8-mnist", "b": "nwm-last-mnist", "c": "nwm-linear-mnist", "d": "lstm-linear-mnist",
               "e": "nwm-linear-mnist", "f": "unet2-mnist"}
    assert compare_page.default_lineup(presets) == ["c", "b", "d", "a"]


def _png(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


# --------------------------------------------------------------------------------- figures

from waveviz.app import figures  # noqa: E402


def test_colour_scale_is_fixed_and_symmetric():
    rgb = figures.colourize(np.array([-2.0, -1.0, 0.0, 1.0, 2.0, np.nan]), vmax=1.0)
    assert (rgb[0] == rgb[1]).all() and (rgb[3] == rgb[4]).all()  # clipped at ±vmax
    assert rgb[1][2] > rgb[1][0] and rgb[3][0] > rgb[3][2]  # blue for −, red for +
    assert rgb[2].min() > 200  # white-ish at 0
    assert (rgb[5] == 128).all()  # NaN is grey
    assert figures.symmetric_scale(np.zeros(4)) == 1.0


def test_wave_frames_tile_channels_and_cap_frames():
    h = np.random.default_rng(0).standard_normal((500, 3, 8, 10)).astype(np.float32)
    wf = figures.wave_frames(h)
    assert wf.index.shape == (100, 8, 3 * 10 + 2 * 2) and wf.steps[0] == 1 and wf.steps[-1] == 500
    assert wf.channel_origin(2) == (0, 24) and (wf.index[:, :, 10:12] == 255).all()  # grey gaps
    fig = figures.animation_figure(wf, pixel=(2, 3))
    assert len(fig.frames) == 100 and fig.frames[-1].name == "500"
    click = fig.data[1]
    assert len(click.x) == 3 * 8 * 10 and tuple(click.customdata[-1]) == (7, 9)
    gif = figures.gif_bytes(wf)
    with Image.open(io.BytesIO(gif)) as im:
        assert im.n_frames == 100 and min(im.size) >= 256


def test_compare_frames_share_one_clock():
    fast = np.random.default_rng(0).standard_normal((20, 2, 4, 4)).astype(np.float32)
    slow = np.random.default_rng(1).standard_normal((100, 2, 4, 4)).astype(np.float32)
    _, s20 = figures.compare_frames(fast, 0, 100, None)
    _, s100 = figures.compare_frames(slow, 1, 100, None)
    assert s20[-1] == 20 and s100[-1] == 100 and s20[49] == 10 and s100[49] == 50
    fr, steps = figures.compare_frames(None, 0, 100, np.zeros((4, 4, 3), np.uint8))
    assert fr.shape == (1, 4, 4, 3) and list(steps) == [0]


def test_click_points_give_pixels():
    assert figures.pixel_from_points([]) is None
    assert figures.pixel_from_points([{"x": 1, "y": 2}]) is None  # a click on another trace
    assert figures.pixel_from_points([{"customdata": [3, 4]}, {"customdata": [5, 6]}]) == (5, 6)
    # what Streamlit 1.67 really sends for a click on the transparent layer (seen in Chromium)
    event = [{"curve_number": 2, "point_number": 1820, "point_index": 1820, "x": 28, "y": 28,
              "customdata": {"0": 28, "1": 29}}]
    assert figures.pixel_from_points(event) == (28, 29)


def test_segmentation_figure_legend_names_the_classes():
    pred = np.zeros((6, 6), int)
    pred[1:3, 1:3] = 2
    truth = np.zeros((6, 6), int)
    truth[1:3, 1:3] = 1
    fig = figures.segmentation_figure(np.zeros((6, 6), np.uint8), pred, truth, ["background", "I", "O"])
    names = {t.name for t in fig.data if t.name and ":" in t.name}
    assert names == {"0: background", "1: I", "2: O"}
    assert fig.layout.xaxis.range == (-0.5, 5.5) and fig.layout.yaxis.range == (5.5, -0.5)


@pytest.mark.slow
def test_runs_use_the_precision_a_checkpoint_trained_in():
    """The shipped ConvLSTM trained under bf16 autocast: the app runs it so (its table row was
    measured so; on a CPU without bf16 with the products emulated), and a float32-trained one plainly."""
    import torch

    from waveviz import engine
    from waveviz.checkpoint import load_checkpoint, trained_with_amp
    from waveviz.data import make_dataset, to_tensors
    from waveviz.paths import SHIPPED_CHECKPOINTS

    model, info = load_checkpoint(SHIPPED_CHECKPOINTS / "lstm-linear-tetrominoes.pt")
    assert trained_with_amp(info) and not trained_with_amp(load_checkpoint(SHIPPED_CHECKPOINTS / "unet3-multi_mnist.pt")[1])
    x, _ = to_tensors(make_dataset("tetrominoes", 1, seed=10_000, split="test"))
    as_trained, plain = common.run_model(model, x, amp=True), common.run_model(model, x)
    with torch.inference_mode(), engine.bf16_autocast("cpu"):
        want = model(x)[0].float().numpy()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # torch's own bf16 kernels
        native = model(x)[0].float().numpy()
    assert as_trained.logits.dtype == np.float32 and as_trained.hidden.dtype == np.float32
    assert np.allclose(as_trained.logits, want, atol=1e-5) and not np.allclose(plain.logits, want, atol=1e-3)
    assert (as_trained.pred == native.argmax(0)).mean() > 0.99 and (plain.pred != native.argmax(0)).mean() > 0.01
    picked = common.Picked("lstm", SHIPPED_CHECKPOINTS / "lstm-linear-tetrominoes.pt", model, info)
    assert picked.amp and picked.how_run.startswith(f"engine {model.engine}; bf16 autocast")
    assert ("emulated in float32" in picked.how_run) == engine.bf16_emulated("cpu")
