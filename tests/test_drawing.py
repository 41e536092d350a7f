"""Drawing tools: a drawing becomes what each data set's images look like (block grid and border
rings, filled binary polygons, MNIST's size-and-centre normalisation), and data-set samples redrawn
through them come back as the samples."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from waveviz import drawing, inputs
from waveviz.data import make_dataset
from waveviz.data.mnist import embedded_pool, upsample
from waveviz.data.shapes import CELL, polygon_mask, tetromino_tile
from waveviz.inputs import InputError, InputSpec

PX = 320  # the app's canvas; 5 canvas pixels per image pixel at 64², one cell = 35 px


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    im = Image.new("RGBA", (PX, PX), (0, 0, 0, 0))
    return im, ImageDraw.Draw(im)


def _click(draw, row: int, col: int, colour, r: int = 12) -> None:
    """A click's dot at the centre of grid cell (row, col)."""
    y, x = (row + 0.5) * 35, (col + 0.5) * 35
    draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)


def test_tetromino_tile_rings_wrap_or_clip():
    c = np.array([200, 100, 10], np.uint8)
    wrap, clip = tetromino_tile(c), tetromino_tile(c, ring="clip")
    assert wrap.shape == (7, 7, 3) and wrap.dtype == np.uint8
    assert (wrap[3, 3] == c).all() and (wrap[1:-1, 1:-1] == c).all()
    assert list(wrap[0, 0]) == [(200 + 100) % 256, 150, 15] and list(clip[0, 0]) == [255, 150, 15]
    assert (wrap[0] == wrap[0, 0]).all() and (wrap[:, -1] == wrap[0, 0]).all()  # the whole 1-px ring
    with pytest.raises(ValueError, match="ring must be one of wrap, clip"):
        tetromino_tile(c, ring="soft")


def test_clicks_and_drags_fill_grid_cells_in_their_colour():
    im, draw = _canvas()
    orange, teal = (200, 100, 10, 255), (42, 157, 143, 255)
    for r, c in ((1, 1), (2, 1), (3, 1)):  # three clicks down a column…
        _click(draw, r, c, orange)
    draw.line([(5.5 * 35, 6.5 * 35), (7.5 * 35, 6.5 * 35)], fill=teal, width=24)  # …and a drag along a row
    filled, colours = drawing.block_cells(np.asarray(im))
    assert filled.shape == (9, 9)
    assert set(zip(*np.nonzero(filled))) == {(1, 1), (2, 1), (3, 1), (6, 5), (6, 6), (6, 7)}
    assert list(colours[2, 1]) == [200, 100, 10] and list(colours[6, 6]) == [42, 157, 143]
    img = drawing.blocks_image(filled, colours)
    assert (img[7:14, 7:14] == tetromino_tile(colours[1, 1])).all()  # cell (1, 1) → image rows/cols 7 … 13
    assert img[:7].max() == 0 and img[63].max() == 0  # empty cells and the unused last row stay black


def test_eraser_strokes_and_dark_colours():
    im, draw = _canvas()
    _click(draw, 4, 4, (30, 20, 120, 255))  # a dark blue still counts as paint
    _click(draw, 0, 0, (255, 255, 255, 255))
    _click(draw, 0, 0, (0, 0, 0, 255), r=20)  # the eraser paints black over it
    filled, colours = drawing.block_cells(np.asarray(im))
    assert set(zip(*np.nonzero(filled))) == {(4, 4)} and list(colours[4, 4]) == [30, 20, 120]


def test_block_notes_say_what_the_model_never_saw():
    filled = np.zeros((9, 9), bool)
    colours = np.zeros((9, 9, 3), np.uint8)
    filled[1, 1:6] = True  # five cells in a row: not a tetromino
    colours[1, 1:6] = (100, 50, 50)
    filled[2, 1:5] = True  # another piece right below, another colour: touching, as in training
    colours[2, 1:5] = (50, 50, 100)
    assert drawing.piece_notes(filled, colours) == ["1 piece of 5 cells: a tetromino has 4 (one colour per piece)"]
    filled[1, 5] = False
    assert drawing.piece_notes(filled, colours) == []


def test_touching_pieces_are_no_departure_from_training():
    """The generator keeps only a piece's bounding box clear, so pieces touch in training images
    (about one in five): two touching pieces of different colours get no note."""
    data = make_dataset("tetrominoes", 40, seed=0, split="train")
    touching = 0
    for img, mask in zip(data.images, data.masks):
        lab = drawing.tetromino_pieces(img, mask)
        others = [(ndimage.binary_dilation(lab == p) & (lab > 0) & (lab != p)).any() for p in range(1, lab.max() + 1)]
        touching += any(others)
    assert touching >= 4
    im, draw = _canvas()
    for r, c in ((2, 1), (2, 2), (2, 3), (2, 4)):  # an I…
        _click(draw, r, c, (200, 100, 10, 255))
    for r, c in ((3, 2), (3, 3), (4, 2), (4, 3)):  # …and an O right below it, touching
        _click(draw, r, c, (42, 157, 143, 255))
    drawn = drawing.render_blocks(np.asarray(im))
    assert drawn.notes == []


def test_a_redrawn_tetrominoes_sample_is_that_sample_on_the_grid():
    data = make_dataset("tetrominoes", 6, seed=10_000, split="test")
    for img, mask in zip(data.images, data.masks):
        canvas, truth, dropped = drawing.redraw_tetrominoes(img, mask)
        out = drawing.TOOLS.get("tetrominoes").render(canvas, 64).image
        assert dropped == 0
        assert ((out.max(axis=-1) > 0) == (truth > 0)).all()  # every piece, square for square
        assert sorted(np.bincount(truth.ravel())[1:]) == sorted(np.bincount(mask.ravel())[1:])  # same pieces
        for cls in np.unique(mask[mask > 0]):  # and their colours (interior of one square)
            assert any((img[mask == cls] == out[truth == cls][24]).all(axis=-1))


def _vertex_canvas(*polygons) -> np.ndarray:
    """The vertex tool's drawing of polygons given by their corners (x, y) in canvas pixels: filled
    white with a 2-px outline (its brush)."""
    im, draw = _canvas()
    for corners in polygons:
        draw.polygon([tuple(c) for c in corners], fill=(255, 255, 255, 255), outline=(255, 255, 255, 255), width=2)
    return np.asarray(im)


def _regular(k: int, radius: float, rot: float = -np.pi / 2, centre=(160.0, 160.0)) -> np.ndarray:
    a = rot + 2 * np.pi / k * np.arange(k)
    return np.stack([centre[0] + radius * np.cos(a), centre[1] + radius * np.sin(a)], 1)


def test_a_drawn_polygon_is_the_generators_polygon():
    """Corners clicked on a circle of a training radius come back as make_polygons draws them."""
    jitter = np.array([0.1, -0.15, 0.05, 0.2, -0.1])
    mask = polygon_mask(5, (30.0, 33.0), 17.0, 0.4, jitter, 64)  # image pixels
    ang = 0.4 + 2 * np.pi / 5 * (np.arange(5) + jitter)
    corners = np.stack([30 + 17 * np.cos(ang), 33 + 17 * np.sin(ang)], 1)
    drawn = drawing.render_polygon(_vertex_canvas(corners * PX / 64), 64)  # PIL's coordinates, as the canvas's
    got = drawn.image > 0
    assert set(np.unique(drawn.image)) == {0, 255} and drawn.notes == []
    assert (got & mask).sum() / (got | mask).sum() > 0.95
    assert "×1.00" in drawn.steps[1]  # already the training size: not scaled


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_polygons_of_any_size_are_drawn_at_the_training_size(k):
    """Regular k-gons clicked at radii 40–150 canvas px (8–30 image px) all come out at the training
    size (corners on a circle of radius 15–20 image px, make_polygons): the small ones as the
    generator draws a polygon of radius 16, the large ones of radius 19."""
    lo, hi = drawing.POLYGON_RADII
    for radius in (40, 60, 85, 120, 150):
        drawn = drawing.render_polygon(_vertex_canvas(_regular(k, radius)), 64)
        got = drawn.image > 0
        assert ndimage.label(got)[1] == 1 and drawn.notes == []
        rr, cc = np.nonzero(got)
        extent = np.hypot(rr + 0.5 - 32, cc + 0.5 - 32).max()  # about the circumradius
        assert 15 <= extent <= 20, (k, radius, extent)
        want = polygon_mask(k, (32, 32), float(np.clip(radius * 64 / PX, lo, hi)), -np.pi / 2, np.zeros(k), 64)
        assert (got & want).sum() / (got | want).sum() > 0.9, (k, radius)
        assert any(f"radius {lo:g}–{hi:g} px" in s for s in drawn.steps)
    assert "scaled to the training polygons'" in drawing.TOOLS.get("polygons").how


def test_a_polygon_is_scaled_where_it_was_drawn_and_kept_inside():
    small = drawing.render_polygon(_vertex_canvas(_regular(4, 30, 0.3, centre=(100, 200))), 64).image > 0
    rr, cc = np.nonzero(small)
    assert abs(cc.mean() - 19.5) < 1 and abs(rr.mean() - 39.5) < 1  # (100, 200) canvas px → (19.5, 39.5)
    corner = drawing.render_polygon(_vertex_canvas(_regular(3, 25, 0.1, centre=(30, 30))), 64).image > 0
    whole = polygon_mask(3, (32, 32), drawing.POLYGON_RADII[0], 0.1, np.zeros(3), 64)
    rr, cc = np.nonzero(corner)
    assert abs(corner.sum() - whole.sum()) < 0.05 * whole.sum()  # the whole triangle, not cut by the edge…
    assert min(rr.mean(), cc.mean()) > 12  # …moved in so its circle fits the image, as the generator places them


def test_a_picture_of_a_polygon_is_drawn_at_the_training_size():
    """A black triangle on white (an upload's ink once inverted), at any resolution."""
    paper = Image.new("L", (400, 400), 255)
    ImageDraw.Draw(paper).polygon([(200, 40), (360, 340), (40, 340)], fill=0)
    drawn = drawing.polygon_image((255 - np.asarray(paper, np.float32)) / 255, 64)
    got = drawn.image > 0
    rr, cc = np.nonzero(got)
    assert ndimage.label(got)[1] == 1 and 15 <= np.hypot(rr - rr.mean(), cc - cc.mean()).max() <= 20
    assert len(drawing.shape_corners(np.asarray(paper) < 128)) == 3


@pytest.mark.slow
def test_the_shipped_polygons_model_reads_drawn_polygons_at_any_size():
    """The bug this tool fixed: with the shipped model, a triangle clicked at a radius of 120–150
    canvas px read as a quadrilateral and a square at 40–60 px as a triangle."""
    from waveviz import analysis
    from waveviz.checkpoint import load_checkpoint
    from waveviz.paths import shipped_checkpoints

    path = shipped_checkpoints() / "nwm-fft-polygons.pt"
    if not path.exists():
        pytest.skip("no shipped Polygons checkpoint")
    model, _ = load_checkpoint(path)
    cases = [(k, r) for k in (3, 4, 5, 6) for r in (40, 85, 150)]
    images = np.stack([drawing.render_polygon(_vertex_canvas(_regular(k, r, 0.3)), 64).image for k, r in cases])
    with torch.inference_mode():
        pred = model.eval().run(torch.from_numpy(images[:, None] / 255).float()).logits.argmax(1).numpy()
    read = [analysis.shape_readings(img, p)[0].label for img, p in zip(images, pred)]
    assert read == [k - 2 for k, _ in cases]


def test_outlines_are_filled_and_many_shapes_noted():
    im, draw = _canvas()
    draw.rectangle((50, 50, 200, 200), outline=(255, 255, 255, 255), width=10)
    for x in (215, 260):
        draw.rectangle((x, 260, x + 40, 300), fill=(255, 255, 255, 255))
    draw.ellipse((300, 10, 306, 16), fill=(255, 255, 255, 255))  # a speck: left out
    drawn = drawing.render_polygon(np.asarray(im), 64)
    assert drawn.image[30, 30] == 255  # inside the outline
    assert ndimage.label(drawn.image > 0)[1] <= 3 and drawn.image[:10, 55:].max() == 0
    assert any("3 separate shapes" in n for n in drawn.notes) and any("overlap" in n for n in drawn.notes)


def test_polygon_notes_for_concave_and_empty_drawings():
    arrow = _vertex_canvas([(60, 60), (260, 160), (60, 260), (130, 160)])
    drawn = drawing.render_polygon(arrow, 64)
    assert any("not convex" in n for n in drawn.notes)
    touching = _vertex_canvas(_regular(4, 40, np.pi / 4, (100, 160)), _regular(3, 45, 0.0, (150.8, 160)))
    drawn = drawing.render_polygon(touching, 64)  # one shape of two polygons: left as drawn, not scaled
    assert any("not convex" in n for n in drawn.notes) and not any("scaled" in s for s in drawn.steps)
    want = drawing.area_resize(drawing.ink(touching), 64) >= 0.5
    assert ((drawn.image > 0) == want).mean() > 0.99
    line = np.zeros((PX, PX, 4), np.uint8)
    line[100, 50:250] = 255  # a one-pixel line: its pixels have no 2-D hull, their corners do
    assert drawing.render_polygon(line, 64).image.max() == 255
    assert drawing.render_polygon(_vertex_canvas(_regular(4, 70)), 64).notes == []
    with pytest.raises(drawing.DrawingError, match="empty"):
        drawing.render_polygon(np.zeros((PX, PX, 4), np.uint8), 64)


def test_enclosing_circle():
    pts = np.array([(0, 0), (4, 0), (2, 1), (2, -1)], float)
    c, r = drawing.enclosing_circle(pts)
    assert np.allclose(c, (2, 0)) and np.isclose(r, 2)
    tri = _regular(3, 10.0, 0.2, centre=(5.0, -3.0))
    c, r = drawing.enclosing_circle(np.concatenate([tri, tri.mean(0, keepdims=True)]))
    assert np.allclose(c, (5, -3)) and np.isclose(r, 10)


def test_polygon_corners_recover_a_generated_polygon():
    mask = polygon_mask(5, (32.0, 30.0), 18.0, 0.3, np.zeros(5), 64)
    corners = drawing.polygon_corners(mask, 5)
    assert corners.shape == (5, 2)
    ang = 0.3 + 2 * np.pi / 5 * np.arange(5)
    true = np.stack([32 + 18 * np.cos(ang), 30 + 18 * np.sin(ang)], 1)
    assert max(np.min(np.linalg.norm(true - c, axis=1)) for c in corners) < 2.5  # each within 2.5 px


def test_redrawn_polygons_cover_the_samples_polygons():
    """Corners clicked on a sample give what the sample itself gives through the tool (each polygon
    at the training size)."""
    data = make_dataset("polygons", 6, seed=10_000, split="test")
    for mask in data.masks:
        canvas, labels = drawing.redraw_polygons(mask)
        got = drawing.render_polygon(canvas, 64).image > 0
        sample = np.repeat(np.repeat(np.where(mask > 0, 255, 0).astype(np.uint8), PX // 64, 0), PX // 64, 1)
        want = drawing.polygon_image(sample / 255, 64).image > 0
        assert (got & want).sum() / (got | want).sum() > 0.85 and len(labels) == ndimage.label(mask > 0)[1]


def test_mnist_preprocessing_normalises_size_and_position():
    canvas = np.zeros((PX, PX), np.float32)
    canvas[40:100, 200:300] = 1.0  # a "7": its bar…
    for i in range(200):  # …and a thick diagonal down to the lower left
        r, c = 100 + i, 290 - i // 2
        canvas[r, c - 12: c + 12] = 1.0
    a = drawing.mnist_digit(canvas)
    assert a.shape == (28, 28) and a.dtype == np.uint8 and a.max() == 255
    rows, cols = np.nonzero(a)
    assert max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == 20  # fits 20×20, aspect kept
    assert np.allclose(ndimage.center_of_mass(a.astype(float)), 14, atol=0.5)  # MNIST's centre of mass
    small = np.zeros_like(canvas)  # the same digit drawn at half the size somewhere else
    small[150:310, 10:170] = np.asarray(Image.fromarray(canvas, "F").resize((160, 160), Image.Resampling.BOX))
    b = drawing.mnist_digit(small)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_mnist_preprocessing_reproduces_mnists_own_digits():
    """MNIST digits enlarged 10× (as if drawn on a big canvas) come back as themselves."""
    images, _ = embedded_pool()
    cors = []
    for x in images[:20]:
        big = np.asarray(Image.fromarray(x).resize((280, 280), Image.Resampling.BILINEAR)).astype(np.float32) / 255
        cors.append(np.corrcoef(x.ravel().astype(float), drawing.mnist_digit(big).ravel().astype(float))[0, 1])
    assert np.median(cors) > 0.93


def test_a_drawn_digit_goes_through_the_data_sets_upsampling():
    im, draw = _canvas()
    draw.line([(100, 60), (220, 60), (150, 260)], fill=(255, 255, 255, 255), width=26)  # a 7
    drawn = drawing.render_digit(np.asarray(im), 56)
    digit = drawing.mnist_digit(drawing.ink(np.asarray(im)))
    want = np.round(upsample(digit[None], 56)[0] * 255).astype(np.uint8)
    assert drawn.image.shape == (56, 56) and (drawn.image == want).all()
    assert drawn.notes == []


def test_redrawn_mnist_digits_look_like_the_samples():
    data = make_dataset("mnist", 10, seed=10_000, split="test")
    ious = []
    for img in data.images:
        out = drawing.render_digit(drawing.redraw_digit(img, height=0.6, offset=(0.05, -0.05)), 56).image
        a, b = img > 127, out > 127
        ious.append((a & b).sum() / (a | b).sum())
    assert np.mean(ious) > 0.6  # the skeleton re-stroked with the tool's brush, not a copy


def test_several_digits_land_where_they_were_drawn():
    im, draw = _canvas()
    draw.line([(60, 40), (60, 120)], fill=(255, 255, 255, 255), width=12)  # a 1, top left
    draw.line([(230, 200), (290, 200), (250, 300)], fill=(255, 255, 255, 255), width=12)  # a 7, bottom right
    drawn = drawing.render_digits(np.asarray(im), 128)
    assert set(np.unique(drawn.image)) == {0, 255}
    lab, k = ndimage.label(drawn.image > 0)
    assert k == 2
    centres = sorted(ndimage.center_of_mass(drawn.image > 0, lab, [1, 2]))
    assert centres[0][0] < 50 and centres[1][0] > 70 and centres[1][1] > 80  # top left, bottom right
    assert any("found 2 digits" in s for s in drawn.steps) and drawn.notes == []
    im2, draw2 = _canvas()
    for x in (20, 90, 160, 230, 290):
        draw2.line([(x, 100), (x, 200)], fill=(255, 255, 255, 255), width=12)
    assert any("5 digits" in n for n in drawing.render_digits(np.asarray(im2), 128).notes)


def test_thinning_gives_a_one_pixel_path():
    bar = np.zeros((20, 40), bool)
    bar[6:13, 5:35] = True
    skel = drawing.thin(bar)
    assert skel.sum() >= 20 and skel.sum(axis=0).max() == 1  # one pixel per column
    assert skel[6:13].sum() == skel.sum()


@pytest.mark.parametrize("dataset,spec", [("tetrominoes", InputSpec(3, 64)), ("polygons", InputSpec(1, 64)),
                                          ("mnist", InputSpec(1, 56)), ("multi_mnist", InputSpec(1, 128))])
def test_from_drawing_gives_the_model_its_input(dataset, spec):
    im, draw = _canvas()
    _click(draw, 3, 3, (42, 157, 143, 255), r=16)
    draw.polygon([(150, 150), (300, 160), (220, 300)], fill=(255, 255, 255, 255))
    mi = inputs.from_drawing(np.asarray(im), spec, dataset)
    assert mi.x.shape == (1, spec.in_channels, spec.size, spec.size) and mi.x.dtype == torch.float32
    assert mi.steps[0].startswith(f"took the 320×320 drawing ({drawing.TOOLS.get(dataset).label.lower()} tool")
    with pytest.raises(InputError, match="empty"):
        inputs.from_drawing(np.zeros((PX, PX, 4), np.uint8), spec, dataset)


def test_grid_background_marks_the_cells():
    bg = drawing.grid_background(PX, 64)
    assert bg.shape == (PX, PX, 3) and bg[35, 10].max() > 0 and bg[17, 17].max() == 0
    assert CELL * PX // 64 == 35


@pytest.mark.parametrize("dataset", ["tetrominoes", "polygons", "mnist", "multi_mnist"])
def test_redraw_dataset_gives_each_drawn_shape_its_samples_label(dataset):
    """The drawing-fidelity measurement's input: samples redrawn through the app's tool, at the data
    set's size, every drawn pixel labelled with a class of the sample it came from."""
    data = make_dataset(dataset, 6, seed=10_000, split="test")
    images, masks, dropped = drawing.redraw_dataset(dataset, data.images, data.masks)
    assert images.shape == data.images.shape and masks.shape == data.masks.shape and dropped == 0
    whole = []
    for out, truth, mask in zip(images, masks, data.masks):
        ink = (out if out.ndim == 2 else out.max(-1)) > 127
        assert set(np.unique(truth[truth > 0])) <= set(np.unique(mask[mask > 0]))
        whole.append((truth > 0).sum() > 0.3 * (mask > 0).sum())  # the redraw about as large as the sample
        if dataset != "tetrominoes":  # (dark Tetrominoes colours are drawn in fewer than 128 levels)
            assert ((truth > 0) <= ink).all()
            whole[-1] &= ((truth > 0) == ink).mean() > 0.95
    # Multi-MNIST digits may touch: written touching, the tool reads them as one digit (its note says to
    # leave a gap), so only some samples come back whole there
    assert all(whole) if dataset != "multi_mnist" else sum(whole) >= 3
