"""Synthetic shape data sets: Polygons and Tetrominoes (SPEC §7)."""
from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import binary_dilation

from . import DATASETS, DatasetSpec, image_rng
from .io import SegmentationData

MAX_TRIES = 100


def _fits(occupied: np.ndarray, new: np.ndarray, gap: int = 1) -> bool:
    """True when `new` keeps at least `gap` pixels away from what is already placed."""
    return not (binary_dilation(new, iterations=gap) & occupied).any()


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
    15–20 px with jittered angles; label = edges − 2 (1 triangle … 4 hexagon)."""
    images = np.zeros((n, size, size), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        rng = image_rng(seed, split, i)
        occupied = np.zeros((size, size), bool)
        for _ in range(rng.integers(1, 3)):
            edges = int(rng.integers(3, 7))
            for _ in range(MAX_TRIES):
                r = rng.uniform(15, 20)
                c = rng.uniform(r, size - 1 - r, size=2)
                jitter = rng.uniform(-0.2, 0.2, size=edges)
                m = polygon_mask(edges, (c[0], c[1]), r, rng.uniform(0, 2 * np.pi), jitter, size)
                if _fits(occupied, m):
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


def square_tile(color: np.ndarray) -> np.ndarray:
    """(7, 7, 3) float tile: the colour inside, its 1-px border ring brightened by half the colour."""
    tile = np.empty((CELL, CELL, 3))
    tile[:] = np.minimum(1.5 * color, 1.0)
    tile[1:-1, 1:-1] = color
    return tile


def tetromino_tile(colour: np.ndarray, ring: str = "wrap") -> np.ndarray:
    """(7, 7, 3) uint8 square: `colour` (3,) uint8 inside, its 1-px border ring colour + colour // 2,
    wrapping mod 256 ("wrap", the paper's data) or clipped at 255 ("clip")."""
    c = np.asarray(colour, np.uint8)
    if ring not in ("wrap", "clip"):
        raise ValueError(f"unknown ring {ring!r}; valid: clip, wrap")
    edge = c + c // 2 if ring == "wrap" else np.minimum(c.astype(np.int64) + c // 2, 255).astype(np.uint8)
    tile = np.empty((CELL, CELL, 3), np.uint8)
    tile[:] = edge
    tile[1:-1, 1:-1] = c
    return tile


def make_tetrominoes(n: int, *, seed: int, split: str, size: int = 64, **_) -> SegmentationData:
    """1–5 non-overlapping tetrominoes of 7×7-px squares on black, random rotation, mirror for
    S/Z and J/L, random colour; labels I = 1, O = 2, T = 3, S/Z = 4, J/L = 5."""
    images = np.zeros((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    kinds = list(TETROMINOES)
    for i in range(n):
        rng = image_rng(seed, split, i)
        img = np.zeros((size, size, 3))
        occupied = np.zeros((size, size), bool)
        for _ in range(rng.integers(1, 6)):
            kind = kinds[rng.integers(len(kinds))]
            grid = piece_cells(kind, int(rng.integers(4)), bool(rng.integers(2)) and kind in "SJ")
            hue, sat, val = rng.uniform(), rng.uniform(0.5, 1.0), rng.uniform(0.45, 0.66)
            tile = square_tile(np.array(colorsys.hsv_to_rgb(hue, sat, val)))
            h, w = grid.shape[0] * CELL, grid.shape[1] * CELL
            for _ in range(MAX_TRIES):
                top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
                m = np.zeros((size, size), bool)
                m[top: top + h, left: left + w] = np.kron(grid, np.ones((CELL, CELL), bool))
                if _fits(occupied, m):
                    occupied |= m
                    masks[i][m] = TETROMINOES[kind][1]
                    for r, c in zip(*np.nonzero(grid)):
                        y, x = top + r * CELL, left + c * CELL
                        img[y: y + CELL, x: x + CELL] = tile
                    break
        images[i] = np.round(img * 255).astype(np.uint8)
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
    description="1–5 coloured Tetris pieces on black; class = piece shape",
))
