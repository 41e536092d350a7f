"""Which engine a model computes with: `ENGINES`, the default from the settings, the model mixin."""
from __future__ import annotations

import torch

from .. import settings

ENGINES = ("auto", "fast", "fast-bf16", "reference")


def default_engine() -> str:
    """The engine new models start with: `WAVEVIZ_ENGINE` (one of `ENGINES`), else "auto"."""
    return check_engine(settings.get().engine)


def check_engine(name: str) -> str:
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; valid: {', '.join(ENGINES)}")
    return name


class EngineSelectable:
    """Mixin for models with a fast and a reference engine: `model.engine` = auto | fast | fast-bf16 | reference.

    auto and fast compute the reference's function in float32 (to rounding); fast-bf16 is the fast
    engine with the per-pixel head's matrix products in bfloat16 (float32 accumulation; encoders,
    recurrence and readout stay float32) — about 85 % of an NWM's FLOPs, products ≈ 2.5× faster on CPUs with
    AVX-512 BF16 / AMX (`cpu_bf16_native`; elsewhere oneDNN emulates bf16, slower than float32) and
    on tensor-core GPUs, and it keeps accuracy (docs/engine.md).
    The choice is a plain attribute, not a config field, so checkpoints are unaffected; new models
    start with `default_engine()`.
    """

    _engine: str = "auto"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.engine = default_engine()

    @property
    def engine(self) -> str:
        """One of `ENGINES`: how the model is computed (the function is the same; fast-bf16 to bf16 rounding)."""
        return self._engine

    @engine.setter
    def engine(self, name: str) -> None:
        self._engine = check_engine(name)

    @property
    def uses_fast_engine(self) -> bool:
        return self._engine != "reference"

    @property
    def bf16_head(self) -> bool:
        """Whether the head's matrix products run in bfloat16 (engine fast-bf16)."""
        return self._engine == "fast-bf16"

    def engine_input(self, x: torch.Tensor) -> torch.Tensor:
        """Images as the encoders like them: channels-last on CPU under the fast engine (oneDNN's
        own layout; same result). Measured 2026-12-02 (AMD EPYC, one thread, batch 16, the three NWM
        encoders forward and backward): 247 → 174 ms on 3-channel Tetrominoes (×1.4); a 1-channel
        image is laid out the same either way (MNIST 177 vs 180 ms)."""
        if self.uses_fast_engine and x.device.type == "cpu" and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x
