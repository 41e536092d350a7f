"""The `.npz` exchange format and its validation; every problem is a one-line `DataError`."""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np
import torch


class DataError(ValueError):
    """A data problem a user can cause; the message is one line naming what is wrong."""


@dataclass
class SegmentationData:
    images: np.ndarray  # (n, H, W) or (n, H, W, 3) uint8
    masks: np.ndarray | None = None  # (n, H, W) int64 labels, 0 = background
    name: str = ""

    def __len__(self) -> int:
        return len(self.images)

    @property
    def in_channels(self) -> int:
        return 3 if self.images.ndim == 4 else 1

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:3])

    def subset(self, idx) -> "SegmentationData":
        return SegmentationData(self.images[idx], None if self.masks is None else self.masks[idx], self.name)

    def check_for(self, *, in_channels: int, num_classes: int, image_size: int | None = None, what: str = "data") -> None:
        """Raise DataError unless a model with these numbers can take these images and labels."""
        if self.in_channels != in_channels:
            kind = {1: "grey (n, H, W)", 3: "RGB (n, H, W, 3)"}
            raise DataError(
                f"{what} has {kind[self.in_channels]} images but the model takes {kind.get(in_channels, in_channels)} images"
            )
        if image_size is not None and self.size != (image_size, image_size):
            raise DataError(f"{what} has {self.size[0]}×{self.size[1]} images but the model was built for {image_size}×{image_size}")
        if self.masks is not None and len(self.masks) and int(self.masks.max()) >= num_classes:
            raise DataError(f"{what} has label {int(self.masks.max())} but the model has only {num_classes} classes (0–{num_classes - 1})")


def validate(images: np.ndarray, masks: np.ndarray | None, source: str = "data") -> SegmentationData:
    """Check shapes, dtypes and values; returns a SegmentationData with uint8 images, int64 masks."""
    images = np.asarray(images)
    if images.dtype.kind == "f":
        if not np.isfinite(images).all():
            raise DataError(f"{source}: images contain NaN or infinite values")
        raise DataError(f"{source}: images must be uint8 (0–255), got {images.dtype}")
    if images.dtype.kind not in "uib":
        raise DataError(f"{source}: images must be uint8 (0–255), got {images.dtype}")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise DataError(f"{source}: images must be (n, H, W) grey or (n, H, W, 3) RGB, got shape {images.shape}")
    if images.shape[0] == 0:
        raise DataError(f"{source}: the data set is empty")
    if min(images.shape[1:3]) < 4:
        raise DataError(f"{source}: images of {images.shape[1]}×{images.shape[2]} pixels are too small (need ≥ 4×4)")
    if images.dtype != np.uint8:
        if images.min() < 0 or images.max() > 255:
            raise DataError(f"{source}: image values must lie in 0–255")
        images = images.astype(np.uint8)
    if masks is not None:
        masks = np.asarray(masks)
        if masks.dtype.kind == "f":
            if not np.isfinite(masks).all():
                raise DataError(f"{source}: masks contain NaN or infinite values")
            if not np.all(masks == np.round(masks)):
                raise DataError(f"{source}: masks must hold integer labels, got fractional values")
        elif masks.dtype.kind not in "uib":
            raise DataError(f"{source}: masks must hold integer labels, got {masks.dtype}")
        if masks.shape != images.shape[:3]:
            raise DataError(f"{source}: masks have shape {masks.shape} but images need {images.shape[:3]}")
        if masks.min() < 0:
            raise DataError(f"{source}: masks hold negative labels")
        masks = masks.astype(np.int64)
    return SegmentationData(images, masks)


def load_npz(path: str | os.PathLike, *, require_masks: bool = False) -> SegmentationData:
    """Read a data set `.npz` with `images` and optional `masks`; DataError names the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, not an .npz file")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        # np.load takes any file: a lone .npy array, or anything else as a pickle, which it then refuses
        if magic.startswith(b"\x93NUMPY"):
            raise DataError(f"{path}: a single .npy array, not an .npz file (save images and masks with numpy.savez)")
        if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            raise DataError(f"{path}: not an .npz file (a zip of NumPy arrays: images and optional masks)")
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if "images" not in keys:
                raise DataError(f"{path}: not a waveviz data set (no 'images' array; found {keys or 'nothing'})")
            images = z["images"]
            masks = z["masks"] if "masks" in keys else None
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    data = validate(images, masks, source=path)
    if require_masks and masks is None:
        raise DataError(f"{path}: has no 'masks' array, which this command needs")
    data.name = os.path.basename(path)
    return data


def save_npz(path: str | os.PathLike, data: SegmentationData) -> None:
    """Write `images` (and `masks` when present) atomically; DataError when the place is unwritable."""
    path = os.fspath(path)
    arrays = {"images": data.images}
    if data.masks is not None:
        arrays["masks"] = data.masks.astype(np.uint8 if data.masks.max(initial=0) < 256 else np.int64)
    tmp = f"{path}.tmp.npz"
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise DataError(f"{path}: cannot write ({e.strerror or e})") from None


def to_tensors(data: SegmentationData) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images → float (n, in_channels, H, W) in [0, 1]; masks → long (n, H, W)."""
    x = torch.from_numpy(data.images).float().div_(255.0)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
    y = None if data.masks is None else torch.from_numpy(data.masks).long()
    return x, y
