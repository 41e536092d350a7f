"""Named presets for every configuration in the paper's tables.

Recurrent models: `{model}-{readout}-{dataset}` (`nwm-linear-tetrominoes`, `lstm-last-mnist`, …);
baselines: `cnn{L}-{dataset}` and `unet{c}-{dataset}`. `create_model(name, **overrides)` builds one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .data import DATASETS
from .models import MODELS, Segmenter
from .readouts import READOUTS
from .registry import Registry


@dataclass(frozen=True)
class Preset:
    name: str
    model: str  # family in MODELS
    dataset: str  # name in DATASETS
    readout: str | None  # recurrent models only
    config: dict = field(default_factory=dict)  # keyword arguments of the family's config

    def build_config(self, **overrides):
        _, config_cls = MODELS.get(self.model)
        known = {f.name for f in dataclasses.fields(config_cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)} for {self.model}; valid: {', '.join(sorted(known))}")
        kw = {**self.config, **overrides}
        if isinstance(kw.get("head"), list):  # from JSON
            kw["head"] = tuple(kw["head"])
        return config_cls(**kw)


PRESETS: Registry[Preset] = Registry("preset")

CNN_DEPTHS = (2, 4, 8, 16, 32)
UNET_WIDTHS = (2, 3, 4, 5)


# Where the paper sizes a family differently on a data set (data set → family → config fields)
DATASET_MODEL_CHANGES: dict[str, dict[str, dict]] = {
    "polygons": {"nwm": dict(T=500)},  # the NWM runs 500 steps on Polygons
    "multi_mnist": {"nwm": dict(C=16, head=(32,) * 5)},  # the 55K model of the Multi-MNIST table
}


def _register_all() -> None:
    for ds in DATASETS.names():
        spec = DATASETS.get(ds)
        base = dict(in_channels=spec.in_channels, num_classes=spec.num_classes, image_size=spec.size)
        changes = DATASET_MODEL_CHANGES.get(ds, {})
        for readout in READOUTS.names():
            for model in ("nwm", "lstm"):
                cfg = dict(base, readout=readout, **changes.get(model, {}))
                name = f"{model}-{readout}-{ds}"
                PRESETS.register(name, Preset(name, model, ds, readout, cfg))
        for L in CNN_DEPTHS:
            PRESETS.register(f"cnn{L}-{ds}", Preset(f"cnn{L}-{ds}", "cnn", ds, None, dict(base, L=L)))
        for c in UNET_WIDTHS:
            PRESETS.register(f"unet{c}-{ds}", Preset(f"unet{c}-{ds}", "unet", ds, None, dict(base, c=c)))


_register_all()


def list_presets() -> list[str]:
    return PRESETS.names()


def create_model(name: str, **overrides) -> Segmenter:
    """Build preset `name`, with config fields replaced by `overrides` (e.g. `T=50`, `readout="fft"`)."""
    preset = PRESETS.get(name)
    model_cls, _ = MODELS.get(preset.model)
    return model_cls(preset.build_config(**overrides))


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(name: str) -> dict:
    """Preset summary for listings: name, model, dataset, readout, params and the full config."""
    p = PRESETS.get(name)
    model = create_model(name)
    return {
        "name": p.name, "model": p.model, "dataset": p.dataset, "readout": p.readout,
        "params": count_params(model), "config": dataclasses.asdict(model.config),
    }
