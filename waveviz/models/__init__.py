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


def is_recurrent(model: Segmenter | str) -> bool:
    """Whether a model, or a model family by name, has a hidden sequence (the waves the analyses read):
    NWM and ConvLSTM, not the CNN and U-Net baselines. An unknown family name is not recurrent."""
    if isinstance(model, str):
        return model in MODELS and issubclass(MODELS.get(model)[0], SequenceSegmenter)
    return isinstance(model, SequenceSegmenter)

__all__ = [
    "MODELS", "ModelOutput", "Segmenter", "SequenceSegmenter", "NWM", "NWMConfig", "ConvLSTM",
    "ConvLSTMConfig", "CNN", "CNNConfig", "UNet", "UNetConfig", "nwm_recurrence_ref", "is_recurrent",
]
