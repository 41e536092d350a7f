"""Turn a drawing, an upload or a data-set sample into exactly what a model was trained on.

Every model takes x (1, in_channels, S, S) float in [0, 1]: light shapes on a black background,
grey (in_channels = 1) or RGB (3), at its training size S. `prepare_image` gets there from any
uint8 picture and lists each step it took, so the app can show the user what was done. Every
problem a user can cause is an `InputError` with a one-line message.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from scipy.ndimage import binary_fill_holes

from .data import DATASETS, DataError, make_dataset

MIN_SIDE = 8  # smaller pictures carry too little to resize from
MAX_PIXELS = 40_000_000  # refuse to decode anything larger (a 40-megapixel photo is plenty)
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
INK_LEVEL = 8  # 0–255: darker than this counts as background when looking for a drawing
FULL_SHARE = 0.9  # a drawing whose ink covers more than this share of the picture has no shape
EMPTY = "the picture is empty: draw a shape (or pick a sample) first"


class InputError(ValueError):
    """An input the models cannot use; the message is one line saying why and what to do."""


@dataclass(frozen=True)
class InputSpec:
    """What a model takes: in_channels 1 (grey) or 3 (RGB), images size × size."""

    in_channels: int
    size: int

    @classmethod
    def of(cls, model) -> "InputSpec":
        return cls(model.config.in_channels, model.config.image_size)

    @property
    def kind(self) -> str:
        return "grey" if self.in_channels == 1 else "RGB"


@dataclass
class ModelInput:
    """x (1, in, S, S) float in [0, 1]; image: the same as uint8 (S, S) or (S, S, 3), for showing;
    mask (S, S) true labels when known; steps: what was done to the source, in words."""

    x: torch.Tensor
    image: np.ndarray
    mask: np.ndarray | None = None
    source: str = ""
    steps: list[str] = field(default_factory=list)
    dataset: str | None = None  # the data set a sample came from (its mask's class names)
    notes: list[str] = field(default_factory=list)  # where a drawing leaves what the model saw in training

    @property
    def key(self) -> str:
        """A short content hash, for caches."""
        import hashlib

        return hashlib.sha1(self.image.tobytes() + str(self.image.shape).encode()).hexdigest()[:16]


def _to_channels(img: np.ndarray, in_channels: int, steps: list[str]) -> np.ndarray:
    """uint8 (h, w), (h, w, 3) or (h, w, 4) → (h, w) grey or (h, w, 3) RGB; RGBA is laid on black."""
    if img.ndim == 3 and img.shape[-1] == 4:
        a = img[..., 3:4].astype(np.float32) / 255
        img = (img[..., :3].astype(np.float32) * a).round().astype(np.uint8)
        steps.append("laid the transparent picture on black")
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if in_channels == 1 and img.ndim == 3:
        img = np.asarray(Image.fromarray(img, "RGB").convert("L"))
        steps.append("converted colour to grey (ITU-R 601 luma)")
    elif in_channels == 3 and img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
        steps.append("repeated the grey picture into red, green and blue")
    return img


def _pad_square(img: np.ndarray, steps: list[str]) -> np.ndarray:
    h, w = img.shape[:2]
    if h == w:
        return img
    s = max(h, w)
    out = np.zeros((s, s) + img.shape[2:], img.dtype)
    top, left = (s - h) // 2, (s - w) // 2
    out[top: top + h, left: left + w] = img
    steps.append(f"padded {h}×{w} with black to a {s}×{s} square")
    return out


def _resize(img: np.ndarray, size: int, steps: list[str]) -> np.ndarray:
    h = img.shape[0]
    if h == size:
        return img
    # area averaging when shrinking keeps thin strokes; bilinear when enlarging, like the MNIST set
    method, name = (Image.Resampling.BOX, "area averaging") if h > size else (Image.Resampling.BILINEAR, "bilinear")
    out = np.asarray(Image.fromarray(img).resize((size, size), method))
    steps.append(f"resized {h}×{h} → {size}×{size} ({name})")
    return out


def prepare_image(img: np.ndarray, spec: InputSpec, *, source: str = "", invert: bool | None = None,
                  steps: list[str] | None = None, mask: np.ndarray | None = None) -> ModelInput:
    """Any uint8 picture (h, w), (h, w, 3) or (h, w, 4) → the model's input (see module docstring).

    invert: True flips light and dark, False never does, None flips when the picture's border is
    mostly light (a dark drawing on white paper), since the models were trained on light shapes on
    black. Raises InputError for pictures that are too small, empty or all ink.
    """
    steps = list(steps or [])
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise InputError(f"pictures must be 8-bit (uint8), got {img.dtype}")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] not in (1, 3, 4)):
        raise InputError(f"a picture must be (h, w) grey, (h, w, 3) RGB or (h, w, 4) RGBA, got shape {img.shape}")
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"the picture is {h}×{w} pixels; it needs at least {MIN_SIDE}×{MIN_SIDE}")
    img = _to_channels(img, spec.in_channels, steps)
    if int(img.max()) - int(img.min()) <= INK_LEVEL:
        if int(img.max()) <= INK_LEVEL:
            raise InputError(EMPTY)
        raise InputError("the picture is one flat colour, so there is no shape in it: draw or upload a shape")
    if invert is None:
        invert = bool(np.median(_border(img)) > 127)
    if invert:
        img = 255 - img
        steps.append("inverted light and dark (the models saw light shapes on black)")
    check_has_shape(img)
    img = _resize(_pad_square(img, steps), spec.size, steps)
    steps.append(f"scaled 0–255 to 0–1: a {spec.kind} {spec.size}×{spec.size} input")
    x = torch.from_numpy(img.astype(np.float32) / 255)
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]  # (1, in, S, S)
    return ModelInput(x.contiguous(), img, mask, source, steps)


def _border(img: np.ndarray) -> np.ndarray:
    return np.concatenate([img[0].ravel(), img[-1].ravel(), img[:, 0].ravel(), img[:, -1].ravel()])


def check_has_shape(img: np.ndarray) -> None:
    """InputError unless the picture holds some ink on a background (not blank, not all ink)."""
    level = img if img.ndim == 2 else img.max(axis=-1)
    ink = level > INK_LEVEL
    if not ink.any():
        raise InputError(EMPTY)
    if ink.mean() > FULL_SHARE:
        raise InputError("the picture is ink almost everywhere, so there is no shape to find; "
                         "leave background around a shape (or erase some)")


# ------------------------------------------------------------------------------- sources

def from_canvas(rgba: np.ndarray, spec: InputSpec, *, fill: bool = False) -> ModelInput:
    """A drawing-canvas image (h, w, 4) uint8 with a transparent background → model input.

    The strokes are laid on black (their alpha is the ink); `fill` fills closed outlines, so a
    drawn outline becomes a solid shape like those in Polygons and Tetrominoes.
    """
    rgba = np.array(rgba, dtype=np.uint8)  # the component hands out a read-only array
    if rgba.ndim != 3 or rgba.shape[-1] != 4:
        raise InputError(f"a canvas drawing must be (h, w, 4) RGBA, got shape {rgba.shape}")
    steps = [f"took the {rgba.shape[0]}×{rgba.shape[1]} drawing"]
    if fill:
        ink = (rgba[..., 3] > 0) & (rgba[..., :3].max(axis=-1) > INK_LEVEL)  # eraser strokes are black
        holes = binary_fill_holes(ink) & ~ink
        if holes.any():
            colour = rgba[ink][:, :3].mean(axis=0) if ink.any() else np.zeros(3)
            rgba[holes, :3] = colour.round().astype(np.uint8)
            rgba[holes, 3] = 255
            steps.append("filled the closed outlines with their stroke colour")
    return prepare_image(rgba, spec, source="drawing", invert=False, steps=steps)


def from_drawing(rgba: np.ndarray, spec: InputSpec, dataset: str | None, **options) -> ModelInput:
    """A canvas drawing (h, w, 4) uint8 through the data set's drawing tool (`drawing.TOOLS`: what
    that set's images look like) → model input; with no tool for `dataset`, the drawing as it is,
    outlines filled (`from_canvas`). `options` go to the tool (the Tetrominoes ring: `ring="clip"`)."""
    from .drawing import TOOLS, DrawingError

    if dataset not in TOOLS:
        return from_canvas(rgba, spec, fill=True)
    tool = TOOLS.get(dataset)
    rgba = np.array(rgba, dtype=np.uint8)  # the component hands out a read-only array
    try:
        drawn = tool.render(rgba, DATASETS.get(dataset).size, **options)
    except DrawingError as e:
        raise InputError(str(e)) from None
    steps = [f"took the {rgba.shape[0]}×{rgba.shape[1]} drawing ({tool.label.lower()} tool, {dataset})", *drawn.steps]
    out = prepare_image(drawn.image, spec, source="drawing", invert=False, steps=steps)
    out.notes = drawn.notes
    return out


def from_upload(data: bytes, spec: InputSpec, name: str = "upload", dataset: str | None = None) -> ModelInput:
    """PNG / JPEG bytes → model input; anything else is a one-line InputError. With a `dataset` whose
    drawing tool reshapes pictures (`DrawTool.picture`: Polygons are scaled to the training size),
    the prepared grey picture goes through it, as a drawing would."""
    if not data:
        raise InputError(f"{name}: the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise InputError(f"{name}: the file is {len(data) / 2**20:.0f} MB; upload at most {MAX_UPLOAD_BYTES // 2**20} MB")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in ("PNG", "JPEG"):
                raise InputError(f"{name}: a {im.format or 'unknown'} image; upload a PNG or JPEG")
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise InputError(f"{name}: {w}×{h} pixels is too large; upload at most {MAX_PIXELS // 1_000_000} megapixels")
            if max(w, h) > 4 * 1024:  # decode JPEGs at a reduced scale, and shrink anything huge early
                im.draft("RGB", (1024, 1024))
                im.thumbnail((1024, 1024), Image.Resampling.BOX)
            mode = "RGBA" if "A" in im.getbands() or "transparency" in im.info else ("L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB")
            img = np.asarray(im.convert(mode))
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise InputError(f"{name}: not a readable PNG or JPEG image") from None
    steps = [f"read the {w}×{h} {mode} image {name}"]
    if mode == "RGBA":
        opaque = img[..., 3] > 127
        if img[..., 3].min() == 255:
            img = img[..., :3]
        elif opaque.any() and img[opaque][:, :3].mean() < 64:  # dark strokes on a transparent sheet
            img = img.copy()
            img[..., :3] = 255
            steps.append("took the opaque strokes as white ink")
    try:
        out = prepare_image(img, spec, source=name, steps=steps)
        return _through_tool(out, spec, dataset) if spec.in_channels == 1 else out
    except InputError as e:
        raise InputError(f"{name}: {e}") from None


def _through_tool(prepared: ModelInput, spec: InputSpec, dataset: str | None) -> ModelInput:
    """A prepared grey picture through its data set's `DrawTool.picture`, when that tool has one."""
    from .drawing import TOOLS, DrawingError

    tool = TOOLS.get(dataset) if dataset in TOOLS else None
    if tool is None or tool.picture is None:
        return prepared
    try:
        drawn = tool.picture(prepared.x[0, 0].numpy(), spec.size)
    except DrawingError as e:
        raise InputError(str(e)) from None
    out = prepare_image(drawn.image, spec, source=prepared.source, invert=False, steps=prepared.steps + drawn.steps)
    out.notes = drawn.notes
    return out


def from_sample(dataset: str, seed: int, spec: InputSpec, *, split: str = "test") -> ModelInput:
    """Image `seed` of the data set's `split` stream with its true mask (resized when the model's
    size differs, labels by nearest neighbour)."""
    try:
        data = make_dataset(dataset, 1, seed=seed, split=split)
    except (DataError, KeyError) as e:
        raise InputError(str(e).strip("'\"")) from None
    img, mask = data.images[0], data.masks[0]
    steps = [f"a generated {dataset} sample (seed {seed}, {split} split)"]
    out = prepare_image(img, spec, source=f"{dataset} #{seed}", invert=False, steps=steps)
    if mask.shape[0] != spec.size:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((spec.size, spec.size), Image.Resampling.NEAREST))
    out.mask = mask.astype(np.int64)
    out.dataset = dataset
    return out


def sample_background(dataset: str, seed: int, size: int, *, split: str = "test") -> Image.Image:
    """A dimmed RGB picture of a data-set sample at size × size, to trace over on the canvas."""
    img = make_dataset(dataset, 1, seed=seed, split=split).images[0]
    rgb = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img
    return Image.fromarray((rgb.astype(np.float32) * 0.45).astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)


def compatible_datasets(in_channels: int) -> list[str]:
    """Data sets whose images a model with `in_channels` inputs can take."""
    return [n for n in DATASETS.names() if DATASETS.get(n).in_channels == in_channels]
