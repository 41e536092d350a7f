"""The landing page: what waveviz is, a picture of real waves, links to the pages that exist."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import make_dataset, to_tensors
from ..paths import REPO_ROOT, find_checkpoints
from .figures import colourize

PAGES = (  # (file, label, what it shows)
    ("pages/1_Explore.py", "Explore", "draw or pick a shape, run a trained NWM or LSTM, watch and measure its waves"),
    ("pages/2_Compare.py", "Compare", "one input through several models and readouts side by side"),
    ("pages/3_Drum.py", "Drum", "a wave-equation RNN that hears the shape of a drum you draw"),
    ("pages/4_Train.py", "Train", "start, watch, cancel and resume training jobs in the background"),
    ("pages/5_Results.py", "Results", "shipped checkpoints against the paper's tables"),
)


def available_pages(root: Path = REPO_ROOT) -> list[tuple[str, str, str]]:
    return [p for p in PAGES if (root / p[0]).exists()]


@torch.inference_mode()
def demo_waves(frames: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """A Tetrominoes sample and `frames` snapshots of channel 0 of an NWM's hidden state.

    Uses a shipped `nwm-*-tetrominoes` checkpoint when there is one, else a fresh NWM, whose
    Laplacian-initialised coupling already sends waves out from the shapes' edges.
    → image (H, W, 3) uint8, snapshots (frames, H, W, 3) uint8, a caption.
    """
    from .. import create_model, load_checkpoint

    ckpt = next((p for p in find_checkpoints() if p.name.startswith("nwm-") and "tetrominoes" in p.name), None)
    if ckpt is not None:
        model, _ = load_checkpoint(ckpt)
        caption = f"trained model {ckpt.stem}"
    else:
        torch.manual_seed(seed)
        model = create_model("nwm-linear-tetrominoes").eval()
        caption = "untrained NWM (Laplacian coupling)"
    data = make_dataset("tetrominoes", 1, seed=seed, split="test")
    x, _ = to_tensors(data)
    Y = model.run(x).hidden[0, :, 0].numpy()  # (T, H, W)
    Y = Y - Y.mean(0, keepdims=True)
    idx = np.linspace(Y.shape[0] // 10, Y.shape[0] - 1, frames).astype(int)
    return data.images[0], colourize(Y[idx], vmax=float(np.abs(Y[idx]).max()) or 1.0), f"{caption}, hidden channel 0 at t = {', '.join(map(str, idx + 1))}"


def render() -> None:
    import streamlit as st

    st.title("waveviz — traveling waves that integrate spatial information")
    st.markdown(
        "Each neuron of these recurrent networks sees only a 3×3 patch of the image. Yet they segment "
        "shapes whose class depends on the *whole* shape: they send **traveling waves** across the image "
        "and read each pixel's time series out, much as one can *hear the shape of a drum* from its "
        "frequencies. This app lets you draw a shape, run trained Neural Wave Machines (NWM) and "
        "ConvLSTMs on it, watch and measure their waves, and train your own. Based on *Traveling Waves "
        "Integrate Spatial Information Through Time* (Jacobs, Budzinski, Muller, Ba, Keller)."
    )
    image, snaps, caption = st.cache_data(demo_waves)()
    cols = st.columns(len(snaps) + 1)
    cols[0].image(image, caption="input", width="stretch")
    for c, s in zip(cols[1:], snaps):
        c.image(s, width="stretch")
    st.caption(caption + " (red > 0 > blue)")
    st.subheader("Pages")
    pages = available_pages()
    for path, label, what in pages:
        st.page_link(path, label=f"**{label}** — {what}")
    n = len(find_checkpoints())
    st.info(f"{n} trained checkpoint{'s' if n != 1 else ''} found. Train more with `waveviz train PRESET --out FILE.pt` "
            "or on the Train page; `waveviz presets` lists every configuration in the paper.")
