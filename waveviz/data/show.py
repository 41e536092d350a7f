"""A contact sheet of a data set: each image above its label mask in the class colours, a legend below."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import DATASETS, make_dataset
from .io import DataError

CELL = 112  # images are enlarged (nearest, by a whole factor) to at least this many pixels a side
GAP = 4  # px between and around cells
COLUMNS = 8  # samples per row; more samples wrap into further (image, mask) row pairs
MAX_SAMPLES = 64
FONT_SIZE = 14
LINE = 22  # px per line of title or legend
BACKGROUND, TEXT, OUTLINE = (32, 32, 32), (235, 235, 235), (128, 128, 128)


def sample_sheet(name: str, n: int = 8, *, seed: int = 0, split: str = "test", mnist_dir: str | None = None) -> Image.Image:
    """RGB sheet of the first n samples of `make_dataset(name, n, seed=seed, split=split)`: rows of
    up to COLUMNS images, each above its mask (class colours of the app; 0 = background black),
    then a legend of the class names."""
    from ..app.figures import PALETTE, grey_rgb, label_rgb

    spec = DATASETS.get(name)
    if not 1 <= n <= MAX_SAMPLES:
        raise DataError(f"a sample sheet holds 1–{MAX_SAMPLES} samples, got {n}")
    data = make_dataset(name, n, seed=seed, split=split, mnist_dir=mnist_dir)
    H, W = data.size
    scale = math.ceil(CELL / max(H, W))
    h, w = H * scale, W * scale
    cols = min(n, COLUMNS)
    rows = math.ceil(n / cols)
    font = _font()
    legend = [(PALETTE[c % len(PALETTE)], label) for c, label in enumerate(spec.class_names)]
    title = f"{name} · {split} · seed {seed} · {H}x{W} px"
    width = max(GAP + cols * (w + GAP), 2 * GAP + math.ceil(font.getlength(title)))  # one sample: still room for the title
    legend_lines = _legend_layout(legend, font, width)
    height = LINE + rows * 2 * (h + GAP) + GAP + len(legend_lines) * LINE + GAP
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((GAP, 3), title, fill=TEXT, font=font)
    for i in range(n):
        r, c = divmod(i, cols)
        x, y = GAP + c * (w + GAP), LINE + r * 2 * (h + GAP)
        image = grey_rgb(data.images[i])
        mask = label_rgb(data.masks[i]) if data.masks is not None else np.zeros_like(image)
        for k, rgb in enumerate((image, mask)):
            tile = np.repeat(np.repeat(rgb, scale, 0), scale, 1)  # nearest: each pixel stays a sharp square
            sheet.paste(Image.fromarray(np.ascontiguousarray(tile)), (x, y + k * (h + GAP)))
    y = LINE + rows * 2 * (h + GAP) + GAP
    for line in legend_lines:
        for x, colour, label in line:
            draw.rectangle((x, y + 3, x + 14, y + 17), fill=colour, outline=OUTLINE)
            draw.text((x + 20, y + 2), label, fill=TEXT, font=font)
        y += LINE
    return sheet


def _legend_layout(entries: list[tuple[str, str]], font, width: int) -> list[list[tuple[int, str, str]]]:
    """Flow (colour, label) swatches into lines of at most `width` px: [[(x, colour, label), …], …]."""
    lines, line, x = [], [], GAP
    for colour, label in entries:
        size = 20 + math.ceil(font.getlength(label)) + 14
        if line and x + size > width:
            lines.append(line)
            line, x = [], GAP
        line.append((x, colour, label))
        x += size
    return lines + [line]


def _font():
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()
