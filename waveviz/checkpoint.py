"""Self-describing checkpoints: preset, full config, state dict and metadata in one file.

Loading uses `torch.load(weights_only=True)` (no code runs from the file) and strict keys;
every problem is a one-line `CheckpointError` naming the file.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import re
import secrets
from typing import Any

import torch

from . import __version__
from .models import MODELS, Segmenter

FORMAT = "waveviz-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line and names the file."""


def checkpoint_dict(model: Segmenter, preset: str, meta: dict | None = None) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "waveviz_version": __version__,
        "preset": preset,
        "model": model.family,
        "config": dataclasses.asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta or {},
    }


def save_checkpoint(path: str | os.PathLike, model: Segmenter, preset: str, meta: dict | None = None, **extra) -> None:
    """Write durably and atomically: a temp file of this writer's own in the same folder, fsync'd,
    renamed over `path`, then the folder fsync'd. A reader, a crash or a power cut leaves the old file
    or the new one, never a torn one, also with several processes saving the same path.
    `extra` entries (e.g. optimizer state) are stored too."""
    path = os.fspath(path)
    ckpt = checkpoint_dict(model, preset, meta)
    ckpt.update(extra)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:  # x: never another writer's temp file
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(folder)  # the rename itself survives a power cut
    except (OSError, RuntimeError) as e:  # torch.save reports some write failures as RuntimeError
        if os.path.exists(tmp):
            os.remove(tmp)
        why = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())
        raise CheckpointError(f"{path}: cannot write ({why})") from None


def _fsync_folder(folder: str) -> None:
    if os.name == "nt":  # no folder handles there; NTFS journals the rename
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict, checked to be a waveviz checkpoint; no model is built."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", str(e), re.I)  # "… operand": a text file, say
        if m:
            raise CheckpointError(f"{path}: refused — it holds more than plain weights (it asks for "
                                  f"{m.group(1)[:120]}); not loading it") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or not made by torch.save)") from None
    except Exception:  # a damaged file can fail anywhere inside torch.load
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or not made by torch.save)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a waveviz checkpoint (a foreign or plain state-dict file)")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {ckpt.get('format_version')} is not supported (expected {FORMAT_VERSION})")
    for key in ("preset", "model", "config", "state_dict"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return ckpt


def trained_with_amp(info: dict) -> bool:
    """Whether the run behind a checkpoint (its info from `load_checkpoint`) trained under bf16
    autocast (`--amp`): run it so to see what it learnt — a ConvLSTM can depend on it."""
    return bool(info.get("meta", {}).get("train", {}).get("amp"))


def trained_dataset(info: dict) -> str:
    """The data set the run behind a checkpoint (its info from `read_checkpoint` or `load_checkpoint`)
    trained on: its metadata's, else its preset's, else the preset name's last part (`…-{dataset}`)."""
    from .presets import PRESETS

    ds = (info.get("meta") or {}).get("dataset")
    if ds:
        return ds
    preset = str(info.get("preset"))
    return PRESETS.get(preset).dataset if preset in PRESETS else preset.rsplit("-", 1)[-1]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[Segmenter, dict]:
    """→ (model in eval mode, checkpoint dict without the state dict)."""
    path = os.fspath(path)
    ckpt = read_checkpoint(path)
    try:
        model_cls, config_cls = MODELS.get(ckpt["model"])
        fields = {f.name for f in dataclasses.fields(config_cls)}
        cfg = dict(ckpt["config"])
        unknown = set(cfg) - fields
        if unknown:
            raise ValueError(f"unknown config field(s) {', '.join(sorted(unknown))}")
        if "head" in cfg:
            cfg["head"] = tuple(cfg["head"])
        model = model_cls(config_cls(**cfg))
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        msg = " ".join(str(e).split())
        raise CheckpointError(f"{path}: weights do not fit the model it names ({msg[:200]})") from None
    model.eval()
    info = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model.to(map_location), info
