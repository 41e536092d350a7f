"""Drawing tools that turn a canvas drawing into what a model was trained on, one per data set.

The models only ever saw their data sets' look, so a free-hand stroke is outside their world: a thick
white L is not a Tetromino, and a 7 filling the canvas is not an MNIST digit. Each data set's tool
produces its look (SPEC §7):

  tetrominoes   blocks: clicks and drags fill the cells of a 7-px grid on the 64² image, each cell
                a square of the stroke's colour with its 1-px border ring (`tetromino_tile`)
  polygons      vertices: a closed polygon, scaled about its centre so its corners lie on a circle of
                the generator's radius, filled white on black and binary, as the generator draws
  mnist         a digit: the standard MNIST preprocessing (crop to the ink, fit into 20×20 keeping
                the aspect ratio, place in 28×28 with the centre of mass at the centre), then as the
                data set: bilinear 28² → 56² (align_corners False)
  multi_mnist   digits: each group of strokes one MNIST digit, upsampled to 42², thresholded at 0.5
                and placed where it was drawn on the 128² image

A canvas drawing is (h, w, 4) uint8 RGBA on a transparent background: alpha is the ink, and the
eraser paints opaque black. Each tool → `Drawn` (the image at the data set's size, the steps taken
in words, notes on what the model never saw). `redraw_*` turn data-set samples back into canvas
drawings as a user would draw them (cells, vertices, strokes), to measure what the drawing path
costs a model (`redraw_dataset`, `scripts/drawing_fidelity.py`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from .data.mnist import upsample
from .data.shapes import CELL, tetromino_tile
from .registry import Registry

INK_LEVEL = 8  # 0–255: a pixel at most this bright is background (the eraser paints black)
BLOCK_COVER = 0.2  # a cell is filled when ink covers this share of it (a click's dot covers ~40 %)
MNIST_BOX, MNIST_SIDE, MNIST_CENTRE = 20, 28, 14.0  # fit into 20×20, place in 28×28, centre of mass at (14, 14)
MULTI_DIGIT = 42  # Multi-MNIST digits: 28² upsampled to 42², thresholded at 0.5
GROUP_GAP = 0.04  # strokes closer than this share of the canvas belong to one digit
# Polygons' corners lie on circles of radius 15–20 px (data.shapes.make_polygons). A drawn polygon is
# scaled into the middle of that range: the shipped model misreads polygons below 14 px and above 20,
# and reads them less surely at the ends (15 px, 20 px) than in between. A range, not one radius: two
# polygons drawn near each other, as the generator may place them, keep their layout.
POLYGON_RADII = (16.0, 19.0)
SPECK = 0.05  # a part with less than this share of the ink is a speck, not a polygon (as analysis.shape_readings)
CORNER_AREA = 0.05  # see shape_corners
CONVEX_SHARE = 0.97  # a shape filling less of its corners' polygon than this is not convex (a convex one fills ≥ 1)


class DrawingError(ValueError):
    """A drawing a tool cannot use; the message is one line saying why."""


@dataclass
class Drawn:
    """image (S, S) grey or (S, S, 3) RGB uint8 at the data set's size; steps: what was done, in
    words; notes: where the drawing leaves what the model saw in training (one line each)."""

    image: np.ndarray
    steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DrawTool:
    """One data set's drawing tool: the canvas settings and the function from canvas to image."""

    label: str  # what the tool is called on the page
    how: str  # one line: how to draw with it
    mode: str  # drawable-canvas drawing_mode
    brush: int  # default stroke width in canvas pixels (an outline's width for polygons)
    render: Callable[..., Drawn]  # (rgba, size, **options) → Drawn
    colour: bool = False  # whether strokes keep a colour the user picks (else white)
    eraser: bool = True  # whether the eraser (black freehand) makes sense
    grid: int | None = None  # image pixels per cell of a grid to show behind the canvas
    picture: Callable[[np.ndarray, int], Drawn] | None = None  # (ink (h, h) in [0, 1], size) → Drawn: an upload's way in


TOOLS: Registry[DrawTool] = Registry("drawing tool")  # keyed by data-set name


# ------------------------------------------------------------------------------- helpers

def ink(rgba: np.ndarray) -> np.ndarray:
    """(h, w, 4) uint8 → (h, w) float in [0, 1]: brightness × opacity (eraser strokes are 0)."""
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[-1] != 4:
        raise DrawingError(f"a canvas drawing must be (h, w, 4) RGBA, got shape {rgba.shape}")
    level = rgba[..., :3].max(axis=-1).astype(np.float32)
    level[level <= INK_LEVEL] = 0
    return level / 255 * (rgba[..., 3].astype(np.float32) / 255)


def painted(rgba: np.ndarray) -> np.ndarray:
    """(h, w, 4) uint8 → (h, w) bool: mostly opaque and not black (dark colours count; eraser strokes do not)."""
    rgba = np.asarray(rgba)
    return (rgba[..., 3] > 127) & (rgba[..., :3].max(axis=-1) > INK_LEVEL)


def _square(rgba: np.ndarray) -> int:
    h, w = rgba.shape[:2]
    if h != w:
        raise DrawingError(f"the canvas must be square, got {h}×{w}")
    return h


def area_resize(a: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """(h, w) float → (size) float by area averaging (PIL's box filter)."""
    wh = (size, size) if isinstance(size, int) else (size[1], size[0])
    return np.asarray(Image.fromarray(a.astype(np.float32), "F").resize(wh, Image.Resampling.BOX))


# -------------------------------------------------------------------------- Tetrominoes

def block_cells(rgba: np.ndarray, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Canvas → (filled (n, n) bool, colours (n, n, 3) uint8) on the grid of 7-px cells of a
    size × size image (n = size // 7; cell (i, j) covers image rows 7i … 7i + 6). A cell is filled
    when ink covers ≥ BLOCK_COVER of it; its colour is the commonest opaque stroke colour in it."""
    h = _square(rgba)
    ink(rgba)  # checks the array
    paint = painted(rgba)
    n = size // CELL
    edges = np.round(np.arange(n + 1) * CELL * h / size).astype(int)  # canvas pixel bounds of the cells
    filled = np.zeros((n, n), bool)
    colours = np.zeros((n, n, 3), np.uint8)
    for i in range(n):
        for j in range(n):
            r0, r1, c0, c1 = edges[i], edges[i + 1], edges[j], edges[j + 1]
            if paint[r0:r1, c0:c1].mean() < BLOCK_COVER:
                continue
            px = rgba[r0:r1, c0:c1].reshape(-1, 4)
            px = px[(px[:, 3] == 255) & (px[:, :3].max(axis=1) > INK_LEVEL)]
            if not len(px):
                continue
            packed = px[:, 0].astype(np.int64) << 16 | px[:, 1].astype(np.int64) << 8 | px[:, 2]
            values, counts = np.unique(packed, return_counts=True)
            v = int(values[counts.argmax()])
            filled[i, j] = True
            colours[i, j] = (v >> 16 & 255, v >> 8 & 255, v & 255)
    return filled, colours


def blocks_image(filled: np.ndarray, colours: np.ndarray, size: int = 64, ring: str = "wrap") -> np.ndarray:
    """Cells → (size, size, 3) uint8: each filled cell a `tetromino_tile` of its colour, on black."""
    img = np.zeros((size, size, 3), np.uint8)
    for i, j in zip(*np.nonzero(filled)):
        img[CELL * i: CELL * (i + 1), CELL * j: CELL * (j + 1)] = tetromino_tile(colours[i, j], ring)
    return img


def piece_notes(filled: np.ndarray, colours: np.ndarray) -> list[str]:
    """One line per way the cells leave the Tetrominoes look: pieces (4-connected cells of one
    colour) that are not 4 cells. Pieces of different colours may touch, as in training (the
    generator only keeps a piece's bounding box clear of earlier pieces)."""
    notes = []
    packed = colours.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
    packed[~filled] = -1
    sizes = []
    for v in np.unique(packed[filled]):
        lab, k = ndimage.label(packed == v)
        sizes += [int((lab == i).sum()) for i in range(1, k + 1)]
    odd = sorted(s for s in sizes if s != 4)
    if odd:
        notes.append(f"{len(odd)} piece{'s' * (len(odd) > 1)} of {', '.join(map(str, odd))} cells: a tetromino has 4 "
                     "(one colour per piece)")
    return notes


def render_blocks(rgba: np.ndarray, size: int = 64, *, ring: str = "wrap") -> Drawn:
    filled, colours = block_cells(rgba, size)
    n = filled.shape[0]
    steps = [f"took the filled cells of the {n}×{n} grid of 7-px squares ({int(filled.sum())} filled)",
             f"drew each as a 7×7 square of its colour with the 1-px border ring (colour + colour // 2, {ring})"]
    return Drawn(blocks_image(filled, colours, size, ring), steps, piece_notes(filled, colours))


# ----------------------------------------------------------------------------- Polygons

def enclosing_circle(pts: np.ndarray) -> tuple[np.ndarray, float]:
    """The smallest circle holding the points (n, 2) → (centre (2,), radius), by Welzl's incremental
    algorithm. A generated polygon holds its circle's centre (its corners' angles are spread round
    it), so its smallest enclosing circle is the circle its corners were put on."""
    pts = np.asarray(pts, float)
    pts = pts[np.random.default_rng(0).permutation(len(pts))]  # expected linear time in any order

    def circle(*ps):
        if len(ps) == 1:
            return ps[0], 0.0
        if len(ps) == 2:
            c = (ps[0] + ps[1]) / 2
            return c, float(np.hypot(*(ps[0] - c)))
        (ax, ay), (bx, by), (cx, cy) = ps
        d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
        if abs(d) < 1e-12:  # collinear: the circle on the two farthest apart
            pairs = [(ps[0], ps[1]), (ps[0], ps[2]), (ps[1], ps[2])]
            return circle(*max(pairs, key=lambda q: np.hypot(*(q[0] - q[1]))))
        a2, b2, c2 = ax * ax + ay * ay, bx * bx + by * by, cx * cx + cy * cy
        c = np.array([a2 * (by - cy) + b2 * (cy - ay) + c2 * (ay - by),
                      a2 * (cx - bx) + b2 * (ax - cx) + c2 * (bx - ax)]) / d
        return c, float(np.hypot(*(ps[0] - c)))

    def out(p, c, r):
        return np.hypot(*(p - c)) > r + 1e-9

    c, r = circle(pts[0])
    for i in range(1, len(pts)):
        if out(pts[i], c, r):
            c, r = circle(pts[i])
            for j in range(i):
                if out(pts[j], c, r):
                    c, r = circle(pts[i], pts[j])
                    for k in range(j):
                        if out(pts[k], c, r):
                            c, r = circle(pts[i], pts[j], pts[k])
    return c, r


def shape_corners(part: np.ndarray) -> np.ndarray:
    """The corners (n, 2) (x, y) of a shape's convex outline, in PIL's and the canvas's coordinates
    (pixel (r, c) spans [c, c + 1) × [r, r + 1)): the convex hull of its pixels' centres, thinned by
    removing the corner that spans the smallest triangle while that triangle is under CORNER_AREA ×
    the squared radius of the shape's enclosing circle (the hull's near-collinear steps go; a
    training polygon's corners, ≥ ~0.24 r² each, stay)."""
    rr, cc = np.nonzero(part & ~ndimage.binary_erosion(part))
    pts = np.stack([cc, rr], 1) + 0.5
    try:
        hull = pts[ConvexHull(pts).vertices]
    except QhullError:  # pixels in a line: their corners have a hull
        pts = (pts[:, None] + np.array([[-.5, -.5], [-.5, .5], [.5, -.5], [.5, .5]])).reshape(-1, 2)
        hull = pts[ConvexHull(pts).vertices]
    small = CORNER_AREA * enclosing_circle(hull)[1] ** 2
    while len(hull) > 3:
        a, b = np.roll(hull, 1, 0) - hull, np.roll(hull, -1, 0) - hull
        area = np.abs(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]) / 2
        if area.min() >= small:
            break
        hull = np.delete(hull, area.argmin(), 0)
    return hull


def polygon_image(level: np.ndarray, size: int = 64) -> Drawn:
    """Ink (h, h) float in [0, 1] (a canvas drawing's, or a picture's light on dark) → the Polygons
    look at size × size. Closed outlines are filled; each convex shape becomes the polygon of its
    corners (`shape_corners`), scaled about the centre of its enclosing circle so that circle's
    radius lies in POLYGON_RADII (image px; moved in where that pushes it out of the image), and
    drawn as `make_polygons` draws: PIL's filled polygon, white on black. A shape that is not convex
    (two touching polygons, or no polygon) stays as drawn: white where it covers at least half a
    pixel. Parts under SPECK of the ink are left out."""
    h = _square(level)
    lab, k = ndimage.label(ndimage.binary_fill_holes(level >= 0.5), structure=np.ones((3, 3)))
    areas = np.bincount(lab.ravel(), minlength=k + 1)[1:]
    shapes = [p + 1 for p in range(k) if areas[p] >= SPECK * areas.sum()]
    if not shapes:
        raise DrawingError("the drawing is empty: click the corners of a polygon first")
    img = Image.new("L", (size, size), 0)
    out = np.zeros((size, size), bool)
    scales, overlap, concave = [], False, 0
    for p in shapes:
        part = lab == p
        corners = shape_corners(part)
        if areas[p - 1] < CONVEX_SHARE * ConvexHull(corners).volume:  # (a 2-D hull's volume is its area)
            concave += 1
            m = area_resize(part.astype(np.float32), size) >= 0.5
        else:
            corners = corners * size / h  # → image coordinates
            centre, r = enclosing_circle(corners)
            radius = float(np.clip(r, *POLYGON_RADII))
            scales.append(radius / r)
            moved = np.clip(centre, radius, size - radius)
            img.paste(0, (0, 0, size, size))
            ImageDraw.Draw(img).polygon([tuple(c) for c in moved + (corners - centre) * scales[-1]], fill=255)
            m = np.asarray(img) > 0
        overlap |= bool((m & out).any())
        out |= m
    lo, hi = POLYGON_RADII
    steps = ["filled closed outlines"]
    if scales:
        which = "the polygon" if len(scales) == 1 else f"each of the {len(scales)} polygons"
        steps.append(f"scaled {which} (×{', ×'.join(f'{s:.2f}' for s in scales)}) to the training size: "
                     f"corners on a circle of radius {lo:g}–{hi:g} px")
    steps.append(f"drew it on {size}×{size}, white (255) on black, as the generator draws polygons")
    notes = []
    if len(shapes) > 2:
        notes.append(f"{len(shapes)} separate shapes: the training images held 1 or 2 polygons")
    if overlap:
        notes.append("the polygons overlap once scaled to the training size (training polygons never do): "
                     "draw them further apart")
    if concave:
        notes.append(f"{'a shape is' if concave == 1 else f'{concave} shapes are'} not convex (training polygons "
                     "all are; two touching polygons are one shape): left at the size drawn")
    return Drawn(np.where(out, 255, 0).astype(np.uint8), steps, notes)


def render_polygon(rgba: np.ndarray, size: int = 64) -> Drawn:
    """A canvas drawing → `polygon_image` of its ink."""
    _square(rgba)
    return polygon_image(ink(rgba), size)


# -------------------------------------------------------------------------------- MNIST

def mnist_digit(grey: np.ndarray) -> np.ndarray:
    """The standard MNIST preprocessing: (h, w) grey ink on black → (28, 28) uint8. Crop to the ink,
    resize (area averaging) so the longer side is 20 px keeping the aspect ratio, stretch the grey
    levels to a maximum of 255, and place in 28×28 with the centre of mass at (14, 14) (rounded to
    whole pixels, as MNIST did: its digits' centres of mass lie within ±0.5 px of (14, 14))."""
    grey = np.asarray(grey, np.float32)
    rows, cols = np.nonzero(grey > INK_LEVEL / 255 * max(1.0, float(grey.max())))
    if not len(rows):
        raise DrawingError("the drawing is empty: draw a digit first")
    crop = grey[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    h, w = crop.shape
    scale = MNIST_BOX / max(h, w)
    hh, ww = max(1, round(h * scale)), max(1, round(w * scale))
    patch = area_resize(crop, (hh, ww))
    patch = patch * (255.0 / patch.max())
    cy, cx = ndimage.center_of_mass(patch)
    top = int(np.clip(round(MNIST_CENTRE - cy), 0, MNIST_SIDE - hh))
    left = int(np.clip(round(MNIST_CENTRE - cx), 0, MNIST_SIDE - ww))
    out = np.zeros((MNIST_SIDE, MNIST_SIDE), np.float32)
    out[top: top + hh, left: left + ww] = patch
    return np.round(out).clip(0, 255).astype(np.uint8)


def _upsampled(digit28: np.ndarray, size: int) -> np.ndarray:
    """(28, 28) uint8 → (size, size) float in [0, 1], exactly as the MNIST data sets upsample."""
    return upsample(digit28[None], size)[0]


MNIST_STEPS = ["cropped to the ink", "fitted into 20×20 keeping the aspect ratio (area averaging)",
               "placed in 28×28 with the centre of mass at the centre"]


def render_digit(rgba: np.ndarray, size: int = 56) -> Drawn:
    _square(rgba)
    level = ink(rgba)
    digit = mnist_digit(level)
    img = np.round(_upsampled(digit, size) * 255).astype(np.uint8)
    notes = []
    if _groups(level)[1] > 1:
        notes.append("the drawing has several separate parts: an MNIST image holds one digit")
    return Drawn(img, MNIST_STEPS + [f"upsampled 28² → {size}² (bilinear), as the data set"], notes)


def _groups(level: np.ndarray) -> tuple[np.ndarray, int]:
    """The drawing's groups of strokes (strokes nearer than GROUP_GAP of the canvas join):
    (labels (h, w) int, 0 off the ink; number of groups)."""
    gap = max(1, round(GROUP_GAP * level.shape[0]))
    near = ndimage.binary_dilation(level > 0.5, iterations=gap)
    lab, k = ndimage.label(near)
    lab[level <= 0] = 0
    return lab, k


def render_digits(rgba: np.ndarray, size: int = 128, *, digit: int = MULTI_DIGIT) -> Drawn:
    """Each group of strokes → an MNIST digit (as `mnist_digit`), upsampled to digit² and
    thresholded at 0.5, centred where the group was drawn; white on black, as Multi-MNIST."""
    h = _square(rgba)
    level = ink(rgba)
    lab, k = _groups(level)
    if not k:
        raise DrawingError("the drawing is empty: draw one to four digits first")
    out = np.zeros((size, size), bool)
    overlap = False
    for g, (rs, cs) in enumerate(ndimage.find_objects(lab), start=1):
        shape = _upsampled(mnist_digit(np.where(lab[rs, cs] == g, level[rs, cs], 0)), digit) > 0.5
        cy, cx = (rs.start + rs.stop) / 2 * size / h, (cs.start + cs.stop) / 2 * size / h
        top = int(np.clip(round(cy - digit / 2), 0, size - digit))
        left = int(np.clip(round(cx - digit / 2), 0, size - digit))
        region = out[top: top + digit, left: left + digit]
        overlap |= bool((ndimage.binary_dilation(shape) & region).any())
        region |= shape
    notes = []
    if overlap:
        notes.append("digits overlap or touch: the tool tells digits apart by the gap between them (draw them further apart)")
    if k > 4:
        notes.append(f"{k} digits: the training images held 1 to 4")
    steps = [f"found {k} digit{'s' * (k > 1)} (groups of strokes)", *MNIST_STEPS,
             f"upsampled each to {digit}² (bilinear) and thresholded at 0.5, where it was drawn on {size}²"]
    return Drawn(np.where(out, 255, 0).astype(np.uint8), steps, notes)


def grid_background(px: int, size: int, cell: int = CELL, under: np.ndarray | None = None) -> np.ndarray:
    """What to show behind the block tool's canvas: (px, px, 3) uint8, black or `under` (an image
    to trace, (px, px, 3)), with grey lines along the edges of the size × size image's cells."""
    out = np.zeros((px, px, 3), np.uint8) if under is None else np.array(under, np.uint8)
    for e in np.round(np.arange(size // cell + 1) * cell * px / size).astype(int):
        e = min(e, px - 1)
        out[e, :] = out[:, e] = (80, 80, 80)
    return out


# ----------------------------------------------------------------------------- registry

TOOLS.register("tetrominoes", DrawTool(
    "Blocks", "click or drag over the grid to fill its 7-px squares; one colour per piece", "freedraw", 24,
    render_blocks, colour=True, grid=CELL))
TOOLS.register("polygons", DrawTool(
    "Vertices", "click the corners; click the first corner again to close and fill the polygon (any size: it is "
    "scaled to the training polygons')", "polygon", 2,
    render_polygon, eraser=False, picture=polygon_image))
TOOLS.register("mnist", DrawTool(
    "Digit", "write one digit, as large as you like: it is sized and centred as MNIST's were", "freedraw", 26,
    render_digit))
TOOLS.register("multi_mnist", DrawTool(
    "Digits", "write one to four digits apart from each other: each is sized and centred as MNIST's were",
    "freedraw", 12, render_digits))


# ------------------------------------------------------------ redrawing data-set samples

def _canvas(px: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    im = Image.new("RGBA", (px, px), (0, 0, 0, 0))
    return im, ImageDraw.Draw(im)


def _stroke(draw: ImageDraw.ImageDraw, pts: np.ndarray, width: int, colour) -> None:
    """A brush stroke through canvas points (x, y): round dots joined by lines, as a canvas draws."""
    r = width / 2
    for x, y in pts:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    if len(pts) > 1:
        draw.line([tuple(p) for p in pts], fill=colour, width=width)


def tetromino_pieces(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each Tetrominoes piece numbered 1..k, also where pieces touch. image (S, S, 3) uint8, mask
    (S, S) class labels → (S, S) int. A piece is one colour: every 7-px square's 3×3 core (the
    pixels whose 3×3 neighbourhood is one colour) dilated by 2 px is that square, so the squares
    of a class and colour are one piece (two touching pieces of one class and one exact colour
    stay one, a 1-in-16-million chance)."""
    img = image.astype(np.int64)
    code = (img[..., 0] << 16) | (img[..., 1] << 8) | img[..., 2]
    same = np.ones(mask.shape, bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            same &= np.roll(code, (dr, dc), (0, 1)) == code
    same &= ndimage.binary_erosion(mask > 0, np.ones((3, 3)))
    out, k = np.zeros(mask.shape, int), 0
    for cls in np.unique(mask[mask > 0]):
        for colour in np.unique(code[same & (mask == cls)]):
            core = same & (mask == cls) & (code == colour)
            piece = ndimage.binary_dilation(core, np.ones((3, 3)), iterations=2) & (mask == cls)
            piece &= out == 0
            if piece.any():
                k += 1
                out[piece] = k
    rest = (mask > 0) & (out == 0)  # anything without a core (never in generated data): by contact
    lab, m = ndimage.label(rest)
    out[rest] = lab[rest] + k
    return out


def redraw_tetrominoes(image: np.ndarray, mask: np.ndarray, *, px: int = 320, brush: int = 24
                       ) -> tuple[np.ndarray, np.ndarray, int]:
    """A Tetrominoes sample as the block tool would be used on it: each piece's cells moved to the
    nearest free spot of the 7-px grid (no overlap, no contact) and clicked or dragged over in its
    colour. → (canvas (px, px, 4) uint8, the pieces' true labels on the grid (S, S), pieces dropped)."""
    S = mask.shape[0]
    n, scale = S // CELL, px / S
    occupied = np.zeros((n, n), int)  # 0 free, else piece number
    truth = np.zeros_like(mask)
    im, draw = _canvas(px)
    lab = tetromino_pieces(image, mask)
    dropped = 0
    for p, (rs, cs) in enumerate(ndimage.find_objects(lab), start=1):
        piece = lab[rs, cs] == p
        cells = piece[CELL // 2:: CELL, CELL // 2:: CELL]  # sample each 7-px square at its centre
        cls = int(mask[rs, cs][piece][0])
        r0, c0 = np.argwhere(cells)[0] * CELL + CELL // 2  # the centre of one of its squares
        colour = tuple(int(v) for v in image[rs, cs][r0, c0])
        h, w = cells.shape
        near = (round(rs.start / CELL), round(cs.start / CELL))
        spots = sorted(((i, j) for i in range(n - h + 1) for j in range(n - w + 1)),
                       key=lambda s: (s[0] - near[0]) ** 2 + (s[1] - near[1]) ** 2)
        for i, j in spots:
            here = np.zeros((n, n), bool)
            here[i: i + h, j: j + w] = cells
            if not (ndimage.binary_dilation(here) & (occupied > 0)).any():  # no overlap, no contact
                break
        else:
            dropped += 1
            continue
        rr, cc = np.nonzero(cells)
        occupied[rr + i, cc + j] = p
        for r, c in zip(rr + i, cc + j):
            truth[CELL * r: CELL * (r + 1), CELL * c: CELL * (c + 1)] = cls
        centres = np.stack([(cc + j + 0.5) * CELL * scale, (rr + i + 0.5) * CELL * scale], 1)
        for a in centres:  # a click on every cell…
            _stroke(draw, a[None], brush, colour + (255,))
        order = np.lexsort((centres[:, 0], centres[:, 1]))  # …and a drag along each row of cells
        for row in np.unique(rr):
            pts = centres[order][(rr[order] == row)]
            _stroke(draw, pts, brush, colour + (255,))
    return np.asarray(im), truth, dropped


def polygon_corners(shape: np.ndarray, k: int) -> np.ndarray:
    """The k corners (x, y) of a convex shape's outline in pixel coordinates (pixel centres at
    integers): the convex hull of its pixels, thinned by removing the vertex that spans the smallest
    triangle until k remain. Rasterising cut the true corners off, so they lie within ~2 px, about
    as near as a user's clicks."""
    rr, cc = np.nonzero(shape)
    pts = np.stack([cc, rr], 1).astype(float)
    hull = pts[ConvexHull(pts).vertices]
    while len(hull) > k:
        a, b = np.roll(hull, 1, 0) - hull, np.roll(hull, -1, 0) - hull
        area = np.abs(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]) / 2
        hull = np.delete(hull, area.argmin(), 0)
    return hull


def redraw_polygons(mask: np.ndarray, *, px: int = 320) -> tuple[np.ndarray, dict[int, int]]:
    """A Polygons sample as the vertex tool would be used on it: each polygon's corners clicked
    (its class says how many: edges = label + 2) and the polygon closed, filled white.
    → (canvas (px, px, 4) uint8, {component: label})."""
    S = mask.shape[0]
    im, draw = _canvas(px)
    labels, p = {}, 0
    for cls in np.unique(mask[mask > 0]):  # class by class: polygons of different classes may touch
        lab, k = ndimage.label(mask == cls)
        for q in range(1, k + 1):
            shape = lab == q
            rr, cc = np.nonzero(shape)
            if len(np.unique(rr)) < 2 or len(np.unique(cc)) < 2:  # a sliver with no area: nothing to click
                continue
            p += 1
            corners = (polygon_corners(shape, int(cls) + 2) + 0.5) * px / S
            draw.polygon([tuple(c) for c in corners], fill=(255, 255, 255, 255), outline=(255, 255, 255, 255))
            labels[p] = int(cls)
    return np.asarray(im), labels


def thin(binary: np.ndarray) -> np.ndarray:
    """Zhang–Suen thinning: a one-pixel-wide skeleton of a binary image (the pen's path)."""
    img = np.pad(binary.astype(bool), 1)
    while True:
        changed = False
        for step in (0, 1):
            P = [np.roll(np.roll(img, -dy, 0), -dx, 1) for dy, dx in
                 ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))]  # P2 … P9
            B = sum(p.astype(int) for p in P)
            A = sum((~P[i] & P[(i + 1) % 8]).astype(int) for i in range(8))
            if step == 0:
                c1, c2 = ~(P[0] & P[2] & P[4]), ~(P[2] & P[4] & P[6])
            else:
                c1, c2 = ~(P[0] & P[2] & P[6]), ~(P[0] & P[4] & P[6])
            kill = img & (B >= 2) & (B <= 6) & (A == 1) & c1 & c2
            if kill.any():
                img &= ~kill
                changed = True
        if not changed:
            return img[1:-1, 1:-1]


def _pen_strokes(draw: ImageDraw.ImageDraw, skeleton: np.ndarray, to_canvas: Callable, brush: int) -> None:
    """Strokes along a skeleton: a dot on every skeleton pixel and a line to each 8-neighbour."""
    rr, cc = np.nonzero(skeleton)
    on = set(zip(rr.tolist(), cc.tolist()))
    for r, c in on:
        x, y = to_canvas(r, c)
        _stroke(draw, np.array([[x, y]]), brush, (255, 255, 255, 255))
        for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):
            if (r + dr, c + dc) in on:
                _stroke(draw, np.array([[x, y], to_canvas(r + dr, c + dc)]), brush, (255, 255, 255, 255))


def redraw_digit(image: np.ndarray, *, px: int = 320, height: float = 0.7, offset: tuple[float, float] = (0.0, 0.0),
                 brush: int | None = None) -> np.ndarray:
    """An MNIST sample as a user would write it: the pen's path (the digit's skeleton) drawn with
    the digit tool's brush at `height` × the canvas's height, shifted by `offset` (shares of the
    canvas). → canvas (px, px, 4) uint8."""
    brush = brush or TOOLS.get("mnist").brush
    shape = image > 127
    skel = thin(shape)
    rr, cc = np.nonzero(shape)
    s = height * px / (rr.max() - rr.min() + 1)
    cy, cx = (rr.min() + rr.max()) / 2, (cc.min() + cc.max()) / 2
    im, draw = _canvas(px)
    _pen_strokes(draw, skel, lambda r, c: (px / 2 + offset[1] * px + (c - cx) * s,
                                           px / 2 + offset[0] * px + (r - cy) * s), brush)
    return np.asarray(im)


def redraw_digits(mask: np.ndarray, *, px: int = 320, brush: int | None = None) -> tuple[np.ndarray, list[int]]:
    """A Multi-MNIST sample as a user would write it: each digit's skeleton drawn where it is, with
    the digits tool's brush. → (canvas (px, px, 4) uint8, the digits' labels)."""
    brush = brush or TOOLS.get("multi_mnist").brush
    s = px / mask.shape[0]
    im, draw = _canvas(px)
    labels = []
    for cls in np.unique(mask[mask > 0]):
        lab, k = ndimage.label(ndimage.binary_dilation(mask == cls, iterations=3))
        for p in range(1, k + 1):
            part = (lab == p) & (mask == cls)
            _pen_strokes(draw, thin(part), lambda r, c: ((c + 0.5) * s, (r + 0.5) * s), brush)
            labels.append(int(cls))
    return np.asarray(im), labels


def majority_labels(drawn: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """True labels for a redrawn image: each drawn shape (S, S) bool component takes the commonest
    label of the sample's mask (S, S) under it (its own redraw of that shape) → (S, S) int64."""
    lab, k = ndimage.label(drawn)
    truth = np.zeros(mask.shape, np.int64)
    for p in range(1, k + 1):
        part = lab == p
        under = mask[ndimage.binary_dilation(part, iterations=2)]
        under = under[under > 0]
        truth[part] = np.bincount(under).argmax() if len(under) else 0
    return truth


def _redraw_tetrominoes(image, mask, px, rng):
    canvas, truth, dropped = redraw_tetrominoes(image, mask, px=px, brush=TOOLS.get("tetrominoes").brush)
    return canvas, lambda out: truth, dropped


def _redraw_polygons(image, mask, px, rng):
    return redraw_polygons(mask, px=px)[0], lambda out: majority_labels(out > 127, mask), 0


def _redraw_mnist(image, mask, px, rng):  # written at 45–85 % of the canvas height, somewhere on it
    canvas = redraw_digit(image, px=px, height=rng.uniform(0.45, 0.85), offset=tuple(rng.uniform(-0.08, 0.08, 2)),
                          brush=TOOLS.get("mnist").brush)
    return canvas, lambda out: np.where(out > 127, int(mask.max()), 0), 0  # the data set's rule: > 0.5


def _redraw_multi_mnist(image, mask, px, rng):
    canvas = redraw_digits(mask, px=px, brush=TOOLS.get("multi_mnist").brush)[0]
    return canvas, lambda out: majority_labels(out > 127, mask), 0


REDRAWS: dict[str, Callable] = {"tetrominoes": _redraw_tetrominoes, "polygons": _redraw_polygons,
                                "mnist": _redraw_mnist, "multi_mnist": _redraw_multi_mnist}


def redraw_dataset(dataset: str, images: np.ndarray, masks: np.ndarray, *, px: int = 320, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """Data-set samples as a user would draw them in the app, through the data set's drawing tool:
    images (n, S, S[, 3]) uint8 and masks (n, S, S) → (redrawn images, their true masks, pieces that
    found no place on the block grid). Tetrominoes pieces are clicked and dragged onto the block
    grid, Polygons' corners clicked, digits written along their skeletons with the tool's brush."""
    tool, redraw = TOOLS.get(dataset), REDRAWS[dataset]
    size = masks.shape[-1]
    rng = np.random.default_rng(seed)
    out_img, out_mask, dropped = [], [], 0
    for img, mask in zip(images, masks):
        canvas, truth, d = redraw(img, mask, px, rng)
        out = tool.render(canvas, size).image
        out_img.append(out)
        out_mask.append(truth(out if out.ndim == 2 else out.max(-1)))
        dropped += d
    return np.stack(out_img), np.stack(out_mask).astype(np.int64), dropped
