"""Model families: one file each; `MODELS` maps a family name to its (model class, config class)."""
from __future__ import annotations

from ..registry import Registry
from .base import ModelOutput, Segmenter, SequenceSegmenter
from .cnn import CNN, CNNConfig
from .lstm import ConvLSTM, ConvLSTMConfig
from .nwm import NWM, NWMConfig, nwm_recurrence_ref
from .unet import UNet, UNetConfig

MODELS: Registry[tuple[type[Segmenter], type]] = Registry("model family")
MODELS.register("nwm", (NWM, NWMConfig))
MODELS.register("lstm", (ConvLSTM, ConvLSTMConfig))
MODELS.register("cnn", (CNN, CNNConfig))
MODELS.register("unet", (UNet, UNetConfig))

__all__ = [
    "MODELS", "ModelOutput", "Segmenter", "SequenceSegmenter", "NWM", "NWMConfig", "ConvLSTM",
    "ConvLSTMConfig", "CNN", "CNNConfig", "UNet", "UNetConfig", "nwm_recurrence_ref",
]
