"""Synthetic shape data sets: Polygons and Tetrominoes (docs/data.md; SPEC §7).

Tetrominoes follow the authors' data script: pieces from a shuffled deck, colours anywhere in RGB,
each square's border ring brightened in 8-bit arithmetic that wraps, pieces that may touch.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from . import DATASETS, DatasetSpec, image_rng
from .io import SegmentationData

POLYGON_TRIES = 100
PIECE_TRIES = 1000  # the authors retry without limit; a piece that finds no place in 1000 is skipped


# ---------------------------------------------------------------- Polygons

def polygon_mask(n_edges: int, center: tuple[float, float], radius: float, rot: float, jitter: np.ndarray, size: int) -> np.ndarray:
    """(size, size) bool mask of a polygon whose vertices lie on a circle, angles jittered."""
    step = 2 * np.pi / n_edges
    ang = rot + step * (np.arange(n_edges) + jitter)
    pts = [(center[0] + radius * np.cos(a), center[1] + radius * np.sin(a)) for a in ang]
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).polygon(pts, fill=255)
    return np.asarray(img) > 0


def make_polygons(n: int, *, seed: int, split: str, size: int = 64, **_) -> SegmentationData:
    """White filled polygons on black: 1–2 per image, 3–6 edges, vertices on circles of radius
    15–20 px with jittered angles; label = edges − 2 (1 triangle … 4 hexagon). A polygon is placed
    where it overlaps no earlier one (touching allowed, as for the other data sets)."""
    images = np.zeros((n, size, size), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        rng = image_rng(seed, split, i)
        occupied = np.zeros((size, size), bool)
        for _ in range(rng.integers(1, 3)):
            edges = int(rng.integers(3, 7))
            for _ in range(POLYGON_TRIES):
                r = rng.uniform(15, 20)
                c = rng.uniform(r, size - 1 - r, size=2)
                jitter = rng.uniform(-0.2, 0.2, size=edges)
                m = polygon_mask(edges, (c[0], c[1]), r, rng.uniform(0, 2 * np.pi), jitter, size)
                if not (m & occupied).any():
                    occupied |= m
                    masks[i][m] = edges - 2
                    break
        images[i] = np.where(masks[i] > 0, 255, 0)
    return SegmentationData(images, masks.astype(np.int64))


# ------------------------------------------------------------- Tetrominoes

# Each piece as (row, col) cells; its label. S and J are mirrored half the time into Z and L.
TETROMINOES = {
    "I": ([(0, 0), (0, 1), (0, 2), (0, 3)], 1),
    "O": ([(0, 0), (0, 1), (1, 0), (1, 1)], 2),
    "T": ([(0, 0), (0, 1), (0, 2), (1, 1)], 3),
    "S": ([(0, 1), (0, 2), (1, 0), (1, 1)], 4),
    "J": ([(0, 0), (1, 0), (1, 1), (1, 2)], 5),
}
CELL = 7  # pixels per square
RINGS = ("wrap", "clip")


def piece_cells(kind: str, rot: int, mirror: bool) -> np.ndarray:
    """(h, w) bool grid of a tetromino's cells after `rot` quarter turns and an optional mirror."""
    cells, _ = TETROMINOES[kind]
    grid = np.zeros((4, 4), bool)
    for r, c in cells:
        grid[r, c] = True
    if mirror:
        grid = grid[:, ::-1]
    grid = np.rot90(grid, rot)
    rows, cols = np.nonzero(grid)
    return grid[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]


def tetromino_tile(colour: np.ndarray, ring: str = "wrap") -> np.ndarray:
    """(3,) uint8 colour → (7, 7, 3) uint8 square: the colour inside, its 1-px border ring
    `colour + colour // 2` in 8-bit arithmetic. "wrap" is the authors' data: their script clips a
    uint8 sum that has already wrapped, so a channel above 170 gets a dark ring (200 + 100 → 44);
    "clip" saturates at 255 instead."""
    if ring not in RINGS:
        raise ValueError(f"ring must be one of {', '.join(RINGS)}, got {ring!r}")
    c = np.asarray(colour, np.uint8).reshape(3)
    total = c.astype(np.int64) + c // 2
    edge = (total % 256) if ring == "wrap" else np.minimum(total, 255)
    tile = np.empty((CELL, CELL, 3), np.uint8)
    tile[:] = edge.astype(np.uint8)
    tile[1:-1, 1:-1] = c
    return tile


def piece_deck(n: int, rng: np.random.Generator) -> list[str]:
    """The authors' draw of n pieces: a deck holding each of the five shapes n // 5 + 1 times,
    shuffled, the first n taken (so an image of ≤ 5 pieces repeats a shape only when it has 5)."""
    deck = np.repeat(np.array(list(TETROMINOES)), n // 5 + 1)
    rng.shuffle(deck)
    return [str(k) for k in deck[:n]]


def make_tetrominoes(n: int, *, seed: int, split: str, size: int = 64, ring: str = "wrap", **_) -> SegmentationData:
    """1–5 tetrominoes of 7×7-px squares on black, as the authors' script draws them: shapes from
    `piece_deck`, a random quarter turn, S/Z and J/L mirrored with probability ½, each RGB channel
    uniform in 0–255, the border ring of `tetromino_tile`; the top-left corner uniform in
    [0, size − h) × [0, size − w), retried until the piece's bounding box holds no pixel of an
    earlier piece (pieces may touch). Labels I = 1, O = 2, T = 3, S/Z = 4, J/L = 5."""
    if ring not in RINGS:
        raise ValueError(f"ring must be one of {', '.join(RINGS)}, got {ring!r}")
    images = np.zeros((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    block = np.ones((CELL, CELL), bool)
    for i in range(n):
        rng = image_rng(seed, split, i)
        img, mask = images[i], masks[i]
        for kind in piece_deck(int(rng.integers(1, 6)), rng):
            mirror = kind in "SJ" and bool(rng.integers(2))
            grid = piece_cells(kind, int(rng.integers(4)), mirror)
            tile = tetromino_tile(rng.integers(0, 256, size=3).astype(np.uint8), ring)
            h, w = grid.shape[0] * CELL, grid.shape[1] * CELL
            for _ in range(PIECE_TRIES):
                top, left = int(rng.integers(0, size - h)), int(rng.integers(0, size - w))
                if mask[top: top + h, left: left + w].any():
                    continue
                mask[top: top + h, left: left + w][np.kron(grid, block)] = TETROMINOES[kind][1]
                for r, c in zip(*np.nonzero(grid)):
                    y, x = top + r * CELL, left + c * CELL
                    img[y: y + CELL, x: x + CELL] = tile
                break
    return SegmentationData(images, masks.astype(np.int64))


DATASETS.register("polygons", DatasetSpec(
    name="polygons", in_channels=1, num_classes=5, size=64,
    class_names=("background", "triangle", "quadrilateral", "pentagon", "hexagon"),
    paper_splits=(10_000, 1_000, 1_000), make=make_polygons,
    description="white polygons (3–6 edges) on black; class = edges − 2",
))
DATASETS.register("tetrominoes", DatasetSpec(
    name="tetrominoes", in_channels=3, num_classes=6, size=64,
    class_names=("background", "I", "O", "T", "S/Z", "J/L"),
    paper_splits=(10_000, 1_000, 1_000), make=make_tetrominoes,
    description="1–5 coloured Tetris pieces on black, touching allowed; class = piece shape",
    options={"ring": RINGS},
))
