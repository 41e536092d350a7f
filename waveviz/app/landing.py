"""The landing page: what waveviz is, a picture of real waves, links to the pages that exist; and
the app's page list (`PAGES`), which app.py turns into its navigation."""
from __future__ import annotations

import numpy as np
import torch

from ..data import make_dataset, to_tensors
from ..paths import find_checkpoints, shipped_checkpoints
from . import catalog
from .figures import colourize, symmetric_scale

HOME = ("app_pages/home.py", "Home", ":material/home:", "", "what waveviz is")
PAGES = (  # (file, label, icon, URL path, what it shows)
    ("app_pages/explore.py", "Explore", ":material/waves:", "Explore",
     "draw or pick a shape, run a trained NWM or LSTM, watch and measure its waves"),
    ("app_pages/compare.py", "Compare", ":material/compare:", "Compare", "one input through several models and readouts side by side"),
    ("app_pages/drum.py", "Drum", ":material/music_note:", "Drum", "a wave-equation RNN that hears the shape of a drum you draw"),
    ("app_pages/train.py", "Train", ":material/model_training:", "Train", "start, watch, cancel and resume training jobs in the background"),
    ("app_pages/results.py", "Results", ":material/table_chart:", "Results", "shipped checkpoints against the paper's tables"),
)


def navigation_pages() -> list:
    """The st.Page list for `st.navigation`: Home first (the default), then `PAGES`, each at its own
    URL path (/Explore, /Compare, …) so deep links keep working."""
    import streamlit as st

    return [st.Page(path, title=label, icon=icon, url_path=url or None, default=not url)
            for path, label, icon, url, _ in (HOME, *PAGES)]


@torch.inference_mode()
def demo_waves(frames: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[int], str]:
    """A sample and `frames` snapshots of channel 0 of a wave model's hidden state, each on its own
    symmetric colour scale (± the 99th percentile of |y|, so no snapshot looks blank).

    Uses the best shipped checkpoint with waves (`catalog.best`) on a sample of its data set, else
    a fresh NWM on Tetrominoes, whose Laplacian-initialised coupling already sends waves out from
    the shapes' edges. → image uint8, snapshots (frames, H, W, 3) uint8, their steps (1-based), a caption.
    """
    from .. import create_model
    from .common import load_model

    shipped = [p for p in find_checkpoints() if p.parent == shipped_checkpoints()]
    best = catalog.best(catalog.catalog(shipped), recurrent=True)
    if best is not None:
        model, _ = load_model(best.path)
        dataset, caption = best.dataset, f"trained model {best.id} ({best.quality})"
    else:
        torch.manual_seed(seed)
        model = create_model("nwm-linear-tetrominoes").eval()
        dataset, caption = "tetrominoes", "untrained NWM (Laplacian coupling)"
    data = make_dataset(dataset, 1, seed=seed, split="test")
    x, _ = to_tensors(data)
    Y = model.run(x).hidden[0, :, 0].float().numpy()  # (T, H, W)
    Y = Y - Y.mean(0, keepdims=True)
    idx = np.linspace(Y.shape[0] // 10, Y.shape[0] - 1, frames).astype(int)
    snaps = np.stack([colourize(Y[i], vmax=symmetric_scale(Y[i])) for i in idx])
    return data.images[0], snaps, [int(i) + 1 for i in idx], f"{caption}, hidden channel 0"


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
    image, snaps, steps, caption = st.cache_data(demo_waves, show_spinner="Running a model for the picture…")()
    cols = st.columns(len(snaps) + 1)
    cols[0].image(image, caption="input", width="stretch")
    for c, s, t in zip(cols[1:], snaps, steps):
        c.image(s, caption=f"step t = {t}", width="stretch")
    st.caption(caption + "; y_t − its mean over time, each snapshot on its own scale (red > 0 > blue).")
    st.subheader("Pages")
    for path, label, icon, _, what in PAGES:
        st.page_link(path, label=f"**{label}** — {what}", icon=icon)
    n = len(find_checkpoints())
    st.info(f"{n} trained checkpoint{'s' if n != 1 else ''} found. Train more with `waveviz train PRESET --out FILE.pt` "
            "or on the Train page; `waveviz presets` lists every configuration in the paper.")
