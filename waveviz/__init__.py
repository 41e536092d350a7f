"""waveviz: traveling waves in recurrent networks that integrate spatial information through time.

    >>> import waveviz
    >>> model = waveviz.create_model("nwm-linear-tetrominoes")
    >>> logits = model(x)              # x (B, 3, 64, 64) in [0, 1] → (B, 6, 64, 64)
    >>> out = model.run(x)             # out.hidden (B, T, C, H, W), out.extras["omega"] (B, C, H, W)
"""
__version__ = "0.1.0"

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from .data import DATASETS, DataError, load_npz, make_dataset, save_npz  # noqa: E402
from .metrics import segmentation_metrics  # noqa: E402
from .models import MODELS, ModelOutput  # noqa: E402
from .presets import PRESETS, count_params, create_model, list_presets  # noqa: E402

__all__ = [
    "__version__", "create_model", "list_presets", "count_params", "save_checkpoint", "load_checkpoint",
    "CheckpointError", "make_dataset", "load_npz", "save_npz", "DataError", "segmentation_metrics",
    "DATASETS", "MODELS", "PRESETS", "ModelOutput",
]
