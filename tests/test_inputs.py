"""Canvas, upload and sample → exactly the input each model was trained on, or a one-line InputError."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import waveviz
from waveviz import inputs
from waveviz.data import to_tensors
from waveviz.inputs import InputError, InputSpec

RGB64, GREY56 = InputSpec(3, 64), InputSpec(1, 56)


def _png(arr: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _canvas(h=320, w=320) -> np.ndarray:
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[80:240, 100:140] = (255, 0, 0, 255)  # a red bar
    rgba.setflags(write=False)  # the component's array is read-only
    return rgba


@pytest.mark.parametrize("dataset", ["tetrominoes", "mnist", "polygons"])
def test_sample_is_exactly_the_training_tensor(dataset):
    spec = waveviz.DATASETS.get(dataset)
    mi = inputs.from_sample(dataset, 4, InputSpec(spec.in_channels, spec.size))
    x, y = to_tensors(waveviz.make_dataset(dataset, 1, seed=4, split="test"))
    assert torch.equal(mi.x, x) and np.array_equal(mi.mask, y[0].numpy())
    assert mi.dataset == dataset and mi.x.dtype == torch.float32


def test_sample_resized_to_another_model_keeps_labels_whole():
    mi = inputs.from_sample("mnist", 0, InputSpec(1, 64))  # a 56-px set into a 64-px model
    assert mi.x.shape == (1, 1, 64, 64) and mi.mask.shape == (64, 64)
    assert set(np.unique(mi.mask)) <= set(range(11))
    assert any("resized 56×56 → 64×64" in s for s in mi.steps)


def test_canvas_to_rgb_and_grey():
    rgb = inputs.from_canvas(_canvas(), RGB64)
    assert rgb.x.shape == (1, 3, 64, 64) and 0 <= rgb.x.min() and rgb.x.max() <= 1
    assert rgb.x[0, 0].max() == 1 and rgb.x[0, 1].max() == 0  # red stays red, on black
    assert rgb.mask is None and rgb.dataset is None
    grey = inputs.from_canvas(_canvas(), GREY56)
    assert grey.x.shape == (1, 1, 56, 56)
    assert any("grey" in s for s in grey.steps) and any("area averaging" in s for s in grey.steps)


def test_canvas_fill_closes_outlines_but_not_erased_loops():
    rgba = np.zeros((320, 320, 4), np.uint8)
    rgba[100:200, 100:200] = (255, 255, 255, 255)
    rgba[110:190, 110:190] = 0  # an outline
    filled = inputs.from_canvas(rgba, GREY56, fill=True)
    hollow = inputs.from_canvas(rgba, GREY56, fill=False)
    assert filled.image[28, 28] == 255 and hollow.image[28, 28] == 0
    eraser = rgba.copy()
    eraser[100:200, 100:200, :3] = 0  # the same loop painted in background colour
    eraser[10:20, 10:60] = (255, 255, 255, 255)
    assert inputs.from_canvas(eraser, GREY56, fill=True).image[28, 28] == 0


@pytest.mark.parametrize("rgba,message", [
    (np.zeros((320, 320, 4), np.uint8), "empty"),
    (np.full((320, 320, 4), 255, np.uint8), "no shape"),
    (np.zeros((320, 320, 3), np.uint8), "RGBA"),
])
def test_canvas_without_a_shape_says_so(rgba, message):
    with pytest.raises(InputError, match=message) as e:
        inputs.from_canvas(rgba, RGB64)
    assert "\n" not in str(e.value)


def test_mostly_ink_is_refused():
    rgba = np.full((320, 320, 4), 255, np.uint8)
    rgba[:10, :10] = 0
    with pytest.raises(InputError, match="ink almost everywhere"):
        inputs.from_canvas(rgba, RGB64)


def test_upload_png_jpeg_and_conversion_steps():
    img = np.zeros((120, 90), np.uint8)
    img[30:90, 20:70] = 200
    mi = inputs.from_upload(_png(img), RGB64, "shape.png")
    assert mi.x.shape == (1, 3, 64, 64)
    assert any("padded 120×90" in s for s in mi.steps) and any("repeated the grey" in s for s in mi.steps)
    dark_on_white = np.full((200, 200, 3), 250, np.uint8)
    dark_on_white[50:150, 60:140] = 5
    mi = inputs.from_upload(_png(dark_on_white, "JPEG", quality=95), GREY56, "photo.jpg")
    assert any("inverted" in s for s in mi.steps)
    assert mi.image[28, 28] > 200 and mi.image[2, 2] < 20  # now a light shape on black


def test_upload_dark_strokes_on_transparent_sheet():
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[20:80, 40:60] = (0, 0, 0, 255)
    mi = inputs.from_upload(_png(rgba), GREY56, "strokes.png")
    assert mi.image.max() == 255 and any("opaque strokes" in s for s in mi.steps)


@pytest.mark.parametrize("data,message", [
    (b"", "empty"),
    (b"%PDF-1.4 definitely not a picture", "not a readable PNG or JPEG"),
    (b"\x89PNG\r\n\x1a\n truncated", "not a readable PNG or JPEG"),
])
def test_upload_non_images(data, message):
    with pytest.raises(InputError, match=message) as e:
        inputs.from_upload(data, RGB64, "f.bin")
    assert "\n" not in str(e.value) and str(e.value).startswith("f.bin:")


def test_upload_other_formats_tiny_and_huge(monkeypatch):
    with pytest.raises(InputError, match="GIF"):
        inputs.from_upload(_png(np.zeros((20, 20), np.uint8), "GIF"), RGB64, "a.gif")
    with pytest.raises(InputError, match="at least 8×8"):
        inputs.from_upload(_png(np.full((5, 30), 200, np.uint8)), RGB64, "tiny.png")
    monkeypatch.setattr(inputs, "MAX_PIXELS", 10_000)
    with pytest.raises(InputError, match="too large"):
        inputs.from_upload(_png(np.zeros((200, 200), np.uint8)), RGB64, "big.png")


@pytest.mark.slow
def test_upload_large_image_is_shrunk():
    big = np.zeros((3000, 5000), np.uint8)
    big[1000:2000, 2000:3000] = 255
    mi = inputs.from_upload(_png(big), GREY56, "big.png")
    assert mi.x.shape == (1, 1, 56, 56) and mi.image.max() > 200


def test_prepare_image_rejects_wrong_arrays():
    with pytest.raises(InputError, match="uint8"):
        inputs.prepare_image(np.zeros((32, 32), np.float32), RGB64)
    with pytest.raises(InputError, match="shape"):
        inputs.prepare_image(np.zeros((32, 32, 2), np.uint8), RGB64)


@pytest.mark.slow
def test_model_input_runs_through_a_model():
    model = waveviz.create_model("nwm-linear-mnist", T=4, head=(8,))
    mi = inputs.from_canvas(_canvas(), InputSpec.of(model))
    with torch.inference_mode():
        out = model.run(mi.x)
    assert out.logits.shape == (1, 11, 56, 56)
    assert set(inputs.compatible_datasets(1)) == {"polygons", "mnist", "multi_mnist"}


def test_an_uploaded_polygon_is_scaled_to_the_training_size_as_a_drawing_is():
    # a large black triangle on white: for a Polygons model it goes through the drawing tool, so its
    # corners land on a circle of the generator's radii (the shipped model misread it unscaled)
    from PIL import ImageDraw

    from waveviz import drawing

    page = Image.new("L", (400, 400), 255)
    ImageDraw.Draw(page).polygon([(200, 20), (380, 360), (20, 360)], fill=0)
    grey64 = InputSpec(1, 64)
    plain = inputs.from_upload(_png(np.asarray(page)), grey64, "tri.png")
    mi = inputs.from_upload(_png(np.asarray(page)), grey64, "tri.png", dataset="polygons")
    assert not any("scaled the polygon" in s for s in plain.steps)
    assert any("scaled the polygon" in s for s in mi.steps) and set(np.unique(mi.image)) == {0, 255}
    radius = drawing.enclosing_circle(drawing.shape_corners(mi.image > 0))[1]
    assert drawing.POLYGON_RADII[0] - 1 <= radius <= drawing.POLYGON_RADII[1] + 1
    assert len(drawing.shape_corners(mi.image > 0)) == 3
    assert inputs.from_upload(_png(np.asarray(page)), grey64, "tri.png", dataset="mnist").steps == plain.steps
