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

from waveviz.app import catalog, common, compare_page, explore_page
from waveviz import paths

from ..conftest import TINY_MODELS

ROOT = Path(__file__).resolve().parents[2]
EXPLORE = str(ROOT / "app_pages" / "explore.py")
COMPARE = str(ROOT / "app_pages" / "compare.py")


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
    entries = catalog.catalog()
    assert at.selectbox(key="model").value == catalog.best(entries, recurrent=True).id  # computed, not fixed
    labels = at.selectbox(key="model").options
    assert all("test FG-IoU" in o for o in labels)  # each model's quality…
    assert sum("(paper 0.9" in o for o in labels) == 3  # …beside the paper's (CNN-2 is not in the paper)
    assert any("⚠ under-trained" in o for o in labels)  # one epoch on 16 images
    assert any("Under-trained" in w.value for w in at.warning)
    assert any("hardest class: " in m.value and "of 4 test images" in m.value for m in at.markdown)  # the model card
    assert "tiny" not in at.markdown[0].value and len(at.markdown[0].value) > 100  # the lecturer's intro
    caps = _captions(at)
    assert "Input: a generated tetrominoes sample (seed 0" in caps
    assert "model" in caps and "rendering" in caps and "total" in caps  # the timing line
    assert "on its own colour scale" in caps and "c0 ±" in caps  # the animation's scales, said
    assert any(m.value.startswith("The model reads: ") for m in at.markdown)
    assert {m.label for m in at.metric} >= {"FG-Acc", "FG-IoU", "FG-Loss"}
    anim = next(s for s in _charts(at) if s.get("frames"))
    T = TINY_MODELS[at.selectbox(key="model").value.removeprefix("job-")][1]["T"]
    assert len(anim["frames"]) == T  # one frame per step
    assert anim["frames"][0]["data"][0]["source"].startswith("data:image/png;base64,")
    assert at.get("download_button")  # the GIF
    assert all(json.loads(el.proto.config) == {"displayModeBar": False} for el in at.get("plotly_chart"))


@pytest.mark.parametrize("view", explore_page.VIEWS)
def test_explore_every_view(app_home, view):
    at = _app(EXPLORE, view=view)
    _ok(at)
    assert at.session_state["view"] == view
    if view == "Receptive field":
        assert "logit of class" in _captions(at)
    if view == "Phase & wavelength":
        assert {"long-wavelength share", "same, pixels shuffled"} <= {m.label for m in at.metric}
        p = next(m for m in at.metric if m.label.startswith("p (shuffled"))
        assert p.value.startswith("≤ 0.05") or 0.05 < float(p.value) <= 1  # 19 shuffles: never a bare "0.05"


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


def _blocks(cells, colour=(42, 157, 143)) -> np.ndarray:
    """Clicks on block-grid cells (row, col) of the 320-px canvas (35 px a cell), in one colour."""
    rgba = np.zeros((common.CANVAS_PX, common.CANVAS_PX, 4), np.uint8)
    for r, c in cells:
        rgba[35 * r + 6: 35 * r + 29, 35 * c + 6: 35 * c + 29] = (*colour, 255)
    return rgba


L_PIECE = [(2, 2), (3, 2), (4, 2), (4, 3)]


def test_explore_draw_blocks_then_run(app_home, monkeypatch):
    drawings = {"now": _blocks(L_PIECE)}
    monkeypatch.setattr(common, "draw_canvas", lambda **kw: FakeCanvas(drawings["now"]))
    at = _app(EXPLORE, src="Draw")
    _ok(at)
    assert any("Blocks tool" in m.value for m in at.markdown)
    assert any("press **Run the model**" in i.value for i in at.info)  # strokes alone do not run the model
    assert not _charts(at) and at.get("image")  # no segmentation yet; the preview of what the model will see
    at.button(key="run").click().run()
    _ok(at)
    caps = _captions(at)
    assert "took the 320×320 drawing (blocks tool, tetrominoes)" in caps
    assert "took the filled cells of the 9×9 grid of 7-px squares (4 filled)" in caps
    assert any("No true mask" in c.value for c in at.caption)
    assert any(s.get("frames") for s in _charts(at))  # the waves of the drawing
    assert any(m.value.startswith("The model reads: ") for m in at.markdown)

    drawings["now"] = _blocks(L_PIECE + [(6, 6)])  # another stroke: nothing runs until Run
    at.run()
    _ok(at)
    assert "has changed since the model last ran" in _captions(at)
    assert "(4 filled)" in _captions(at)

    drawings["now"] = _blocks([(r, c) for r in range(9) for c in range(9)], (255, 255, 255))  # painted all over
    at.button(key="run").click().run()
    assert not at.exception
    assert any("no shape" in w.value for w in at.warning)

    drawings["now"] = np.zeros((320, 320, 4), np.uint8)  # cleared canvas: Run says to draw first
    at.button(key="run").click().run()
    assert not at.exception and any("Nothing drawn yet" in i.value for i in at.info)


def test_explore_run_after_each_stroke(app_home, monkeypatch):
    drawings = {"now": _blocks(L_PIECE)}
    monkeypatch.setattr(common, "draw_canvas", lambda **kw: FakeCanvas(drawings["now"]))
    at = _app(EXPLORE, src="Draw")
    at.toggle(key="auto").set_value(True).run()
    _ok(at)
    assert "(4 filled)" in _captions(at)
    drawings["now"] = _blocks(L_PIECE[:3])
    at.run()
    _ok(at)
    assert "(3 filled)" in _captions(at)
    assert any("a tetromino has 4" in w.value for w in at.warning)  # said beside the result


def test_explore_drawing_controls(app_home, monkeypatch):
    seen = {}

    def canvas(**kw):
        seen.update(kw)
        return FakeCanvas(_blocks(L_PIECE))

    monkeypatch.setattr(common, "draw_canvas", canvas)
    at = _app(EXPLORE, src="Draw")
    assert seen["drawing_mode"] == "freedraw" and seen["stroke_width"] == 24 and seen["return_image_data"] is True
    assert seen["background_image"].size == (common.CANVAS_PX, common.CANVAS_PX)  # the block grid
    at.toggle(key="erase").set_value(True)
    at.slider(key="brush").set_value(40)
    at.toggle(key="trace").set_value(True)
    at.color_picker(key="colour").set_value("#A0522D")
    at.run()
    _ok(at)
    assert seen["stroke_color"] == "#000000" and seen["stroke_width"] == 40
    at.toggle(key="erase").set_value(False).run()
    assert seen["stroke_color"] == "#A0522D"


@pytest.fixture
def mixed_home(tiny_home, monkeypatch, tmp_path):
    """The tiny Tetrominoes jobs plus small untrained MNIST, Polygons and Multi-MNIST NWMs: grey
    models of several data sets, for the drawing tools and the sample's data set."""
    import shutil

    import torch

    import waveviz
    from waveviz.presets import PRESETS

    home = tmp_path / "home"
    shutil.copytree(tiny_home / "jobs", home / "jobs")
    torch.manual_seed(0)
    for preset in ("nwm-linear-mnist", "nwm-fft-polygons", "nwm-linear-multi_mnist"):
        (home / "jobs" / preset).mkdir()
        waveviz.save_checkpoint(home / "jobs" / preset / "best.pt", waveviz.create_model(preset, C=2, T=4, head=(8,)),
                                preset, {"dataset": PRESETS.get(preset).dataset})
    monkeypatch.setenv("WAVEVIZ_HOME", str(home))
    monkeypatch.setenv("WAVEVIZ_CHECKPOINTS", str(tmp_path / "no-shipped-checkpoints"))
    return home


def test_sample_data_set_follows_the_model(mixed_home):
    at = _app(EXPLORE, model="job-nwm-linear-mnist")
    _ok(at)
    assert at.selectbox(key="ds").value == "mnist"
    at.selectbox(key="model").set_value("job-nwm-fft-polygons").run()
    _ok(at)
    assert at.selectbox(key="ds").value == "polygons" and "polygons sample" in _captions(at)
    assert {m.label for m in at.metric} >= {"FG-IoU"}  # its own set: a true mask, so metrics
    at.selectbox(key="ds").set_value("mnist").run()  # the user's own choice…
    at.number_input(key="seed").set_value(3).run()
    assert at.selectbox(key="ds").value == "mnist"  # …holds while the model stays
    at.selectbox(key="model").set_value("job-nwm-linear-multi_mnist").run()
    _ok(at)
    assert at.selectbox(key="ds").value == "multi_mnist"  # and a new model's set is followed again
    linked = _app(EXPLORE, model="job-nwm-linear-mnist", ds="polygons")  # a link's choice is kept
    assert linked.selectbox(key="ds").value == "polygons"


def test_digit_polygon_and_digits_tools(mixed_home, monkeypatch):
    seen = {}
    seven = np.zeros((320, 320, 4), np.uint8)
    seven[60:90, 80:250] = 255
    for i in range(200):
        seven[90 + i, 230 - i // 2 - 14: 230 - i // 2 + 14] = 255

    def canvas(**kw):
        seen.update(kw)
        return FakeCanvas(seven.copy())

    monkeypatch.setattr(common, "draw_canvas", canvas)
    expect = {"job-nwm-linear-mnist": ("freedraw", "placed in 28×28 with the centre of mass at the centre"),
              "job-nwm-fft-polygons": ("polygon", "white (255) on black"),
              "job-nwm-linear-multi_mnist": ("freedraw", "found 1 digit (groups of strokes)")}
    for model, (mode, step) in expect.items():
        at = _app(EXPLORE, model=model, src="Draw")
        at.button(key="run").click().run()
        _ok(at)
        assert seen["drawing_mode"] == mode and step in _captions(at), (model, _captions(at))
        assert any(m.value.startswith("The model reads: ") for m in at.markdown)


def test_explore_faked_pixel_click(app_home, monkeypatch):
    clicks = {"seg_click": (5, 7)}
    monkeypatch.setattr(common, "take_click", lambda key: clicks.pop(key, None))  # on the prediction panel, once
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
def test_a_link_to_a_model_not_here_says_so_in_one_line(app_home):
    at = _app(EXPLORE, model="nosuch")
    assert not at.exception
    shown = at.selectbox(key="model").value
    assert [w.value for w in at.warning if "nosuch" in w.value] == [
        f"No model 'nosuch' here (see the list for the ones there are); showing {shown}."]
    at.selectbox(key="model").set_value("job-tiny-lstm" if shown != "job-tiny-lstm" else "job-tiny-nwm").run()
    assert not any("nosuch" in w.value for w in at.warning)  # the user moved on: said no more

    at = _app(COMPARE, models=["job-tiny-nwm", "nosuch"])
    assert not at.exception
    assert at.multiselect(key="models").value == ["job-tiny-nwm"]
    assert any("No model 'nosuch' here" in w.value for w in at.warning)


def test_switching_the_compare_data_set_is_not_a_bad_link(mixed_home):
    at = _app(COMPARE)
    assert at.selectbox(key="data").value == "tetrominoes"
    at.selectbox(key="data").set_value("mnist").run()  # the URL still names the Tetrominoes models
    assert not at.exception
    assert not [w.value for w in at.warning if "No model" in w.value]


def test_explore_many_channels_animates_a_chosen_few(monkeypatch, tmp_path):
    import torch

    import waveviz

    torch.manual_seed(0)
    model = waveviz.create_model("nwm-linear-multi_mnist", C=6, T=5, head=(8,))  # untrained is enough here
    (tmp_path / "jobs" / "wide").mkdir(parents=True)
    waveviz.save_checkpoint(tmp_path / "jobs" / "wide" / "best.pt", model, "nwm-linear-multi_mnist",
                            {"dataset": "multi_mnist"})
    monkeypatch.setenv("WAVEVIZ_HOME", str(tmp_path))
    monkeypatch.setenv("WAVEVIZ_CHECKPOINTS", str(tmp_path / "none"))
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
    assert {"FG-Acc", "FG-IoU", "FG-Loss", "held-out score", "paper", "under-trained", "params"} <= set(table.columns)
    assert all(v == "–" or v.startswith(("FG-IoU ", "FG-Acc ")) for v in list(table["held-out score"]) + list(table["paper"]))
    assert [b.label for b in at.selectbox].count("Data set") == 1  # one data-set box: the sample is from that set
    assert all("test FG-IoU" in o for o in at.multiselect(key="models").options)
    waves = next(s for s in _charts(at) if s.get("frames"))
    assert len(waves["frames"]) == 12 and len(waves["frames"][0]["traces"]) == 3  # CNN has no clock
    assert "model" in _captions(at)


def test_compare_url_and_drawing(app_home, monkeypatch):
    monkeypatch.setattr(common, "draw_canvas", lambda **kw: FakeCanvas(_blocks(L_PIECE)))
    at = AppTest.from_file(COMPARE, default_timeout=120)
    at.query_params["models"] = ["job-tiny-lstm", "job-tiny-nwm"]
    at.query_params["cmp_src"] = "Draw"
    at.run()
    _ok(at)
    assert at.multiselect(key="models").value == ["job-tiny-lstm", "job-tiny-nwm"]
    assert any("Blocks tool" in m.value for m in at.markdown)  # the data set's drawing tool
    at.button(key="cmp_run").click().run()
    _ok(at)
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
from waveviz.data import DATASETS  # noqa: E402


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
    names = {t.name for t in fig.data if t.name and t.name != "pixel"}
    assert names == {"background", "I", "O"}
    assert fig.layout.xaxis.range == (-0.5, 5.5) and fig.layout.yaxis.range == (5.5, -0.5)
    digits = figures.segmentation_figure(np.zeros((6, 6), np.uint8), pred * 3, None, DATASETS.get("mnist").class_names)
    assert {t.name for t in digits.data if t.name and t.name != "pixel"} == {"background", "digit 5"}  # class 6


def _lab(hexes) -> np.ndarray:
    """sRGB hex colours → CIELAB (D65)."""
    rgb = np.array([[int(h[i: i + 2], 16) / 255 for i in (1, 3, 5)] for h in hexes])
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = lin @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    f = np.cbrt(xyz / np.array([0.95047, 1.0, 1.08883]))
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def test_class_colours_are_distinct():
    """MNIST's 11 classes (background and ten digits) get colours no one confuses: CIE76 ΔE ≥ 30
    between any two (the old palette had two yellows and two blues at 26–35)."""
    lab = _lab(figures.PALETTE[:11])
    d = np.linalg.norm(lab[:, None] - lab[None], axis=-1) + np.eye(11) * 1e9
    assert d.min() >= 30


def test_each_channel_gets_its_own_robust_scale():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((50, 2, 8, 8)).astype(np.float32)
    h[:, 1] *= 100  # one loud channel…
    h[0, 0, 0, 0] = 1e4  # …and one extreme pixel in the quiet one
    wf = figures.wave_frames(h)
    assert wf.vmax[1] > 50 * wf.vmax[0] and wf.vmax[0] < 5  # neither washes the quiet channel out
    quiet = wf.index[:, :, :8]
    assert (quiet < 60).mean() > 0.05 and (quiet > 195).mean() > 0.05  # it uses the whole colour range
    assert wf.scale_note.startswith("c0 ±") and ", c1 ±" in wf.scale_note


def test_shape_readings_name_each_shape():
    from waveviz.analysis import shape_readings

    img = np.zeros((20, 20), np.uint8)
    img[2:6, 2:8] = 255
    img[12:18, 10:14] = 255
    pred = np.zeros((20, 20), int)
    pred[2:6, 2:8] = 3
    pred[12:18, 10:13] = 7  # three quarters of the second shape
    r = shape_readings(img, pred)
    assert [(x.label, round(x.share, 2)) for x in r] == [(3, 1.0), (7, 0.75)]
    line = explore_page.reading_line(img, pred, DATASETS.get("mnist").class_names)
    assert "**digit 2** (100%" in line and "**digit 6** (75%" in line


@pytest.mark.slow
def test_runs_use_the_precision_a_checkpoint_trained_in(tmp_path):
    """A ConvLSTM trained under bf16 autocast: the app runs it so (its table row was measured so; on
    a CPU without bf16 with the products emulated), and a float32-trained one plainly. (The shipped
    ConvLSTM, marked as trained so.)"""
    import torch

    from waveviz import engine
    from waveviz.checkpoint import load_checkpoint, read_checkpoint, trained_with_amp
    from waveviz.data import make_dataset, to_tensors
    from waveviz.paths import shipped_checkpoints

    ck = read_checkpoint(shipped_checkpoints() / "lstm-linear-tetrominoes.pt")
    assert not trained_with_amp(ck)  # retrained in float32 (checkpoints/README.md)
    ck["meta"].setdefault("train", {})["amp"] = True
    torch.save(ck, tmp_path / "amp.pt")
    model, info = load_checkpoint(tmp_path / "amp.pt")
    assert trained_with_amp(info) and not trained_with_amp(load_checkpoint(shipped_checkpoints() / "unet3-multi_mnist.pt")[1])
    x, _ = to_tensors(make_dataset("tetrominoes", 1, seed=10_000, split="test"))
    as_trained, plain = common.run_model(model, x, amp=True), common.run_model(model, x)
    with torch.inference_mode(), engine.bf16_autocast("cpu"):
        want = model(x)[0].float().numpy()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # torch's own bf16 kernels
        native = model(x)[0].float().numpy()
    assert as_trained.logits.dtype == np.float32 and as_trained.hidden.dtype == np.float32
    assert np.allclose(as_trained.logits, want, atol=1e-5) and not np.allclose(plain.logits, want, atol=1e-3)
    assert (as_trained.pred == native.argmax(0)).mean() > 0.99
    picked = common.Picked("lstm", tmp_path / "amp.pt", model, info)
    assert picked.amp and picked.how_run.startswith(f"engine {model.engine}; bf16 autocast")
    assert ("emulated in float32" in picked.how_run) == engine.bf16_emulated("cpu")


def test_shipped_best_by_dataset_can_ask_for_wave_models():
    """Multi-MNIST's best shipped checkpoint is the U-Net baseline; the drawing-fidelity check and the
    app's first model want its best wave model (and keep a data set's best when it has none)."""
    every, waves = catalog.shipped_best_by_dataset(), catalog.shipped_best_by_dataset(recurrent=True)
    assert every.keys() == waves.keys() and every
    entries = {e.path: e for e in catalog.catalog(sorted(paths.shipped_checkpoints().glob("*.pt"))).values()}
    for ds, path in waves.items():
        assert entries[path].dataset == ds
        assert entries[path].recurrent or not any(e.recurrent and e.dataset == ds for e in entries.values())
    assert any(not entries[p].recurrent for p in every.values()) == (every != waves)
