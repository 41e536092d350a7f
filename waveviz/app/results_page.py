"""Results page: shipped checkpoints against the paper's tables, training curves, class spectra."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import plotly.graph_objects as go

from .. import paths
from ..analysis import model_class_spectra, rfft_freqs
from ..checkpoint import load_checkpoint, trained_with_amp
from ..data import DATASETS, make_dataset, to_tensors
from .figures import class_spectra_figure
from ..results import history_arrays, results_table, share_loss_correlation


def _table(folder: str, fresh: int) -> list[dict]:
    return [asdict(r) | {"meets_target": r.meets_target} for r in results_table(folder, fresh=fresh)]


def class_spectrum_figure(path: str, n: int = 16, seed: int = 10_000) -> go.Figure | None:
    """Mean |rfft| of each true class's pixels (paper Fig. 4, right), channel 0 without the constant
    bin, over n test images, the model run as it trained; None for a model without a hidden sequence."""
    model, info = load_checkpoint(path)
    if not hasattr(model, "forward_features"):
        return None
    dataset = info["meta"].get("dataset") or info["preset"].rsplit("-", 1)[-1]
    spec = DATASETS.get(dataset)
    x, y = to_tensors(make_dataset(dataset, n, seed=seed, split="test"))
    spectra, counts = model_class_spectra(model, x, y, spec.num_classes, amp=trained_with_amp(info))  # (N, C, K), (N,)
    freqs = rfft_freqs(model.config.T)
    return class_spectra_figure(freqs[1:], spectra[:, :1, 1:], counts, spec.class_names, height=420)


def curves_figure(meta: dict) -> go.Figure:
    h = history_arrays(meta)
    fig = go.Figure()
    for key, name in (("train_loss", "train loss"), ("val_loss", "val loss"), ("val_fg_iou", "val FG-IoU"),
                      ("long_wavelength_share", "long-wavelength share")):
        if key in h:
            fig.add_trace(go.Scatter(x=h["epoch"], y=h[key], name=name, mode="lines+markers"))
    fig.update_layout(xaxis_title="epoch", height=400, font=dict(size=16))
    return fig


def render() -> None:
    import streamlit as st

    st.title("Results")
    st.markdown("The checkpoints that ship with waveviz, measured on held-out images they never saw, next to "
                "the paper's means over seeds. Below: how each one learned, and what frequencies its pixels "
                "carry for each class.")
    folder = str(paths.SHIPPED_CHECKPOINTS)
    fresh = st.toggle("Re-evaluate on fresh samples (slower)", value=False)
    n = st.slider("fresh images per data set", 16, 256, 64, step=16, disabled=not fresh)
    rows = st.cache_data(_table)(folder, n if fresh else 0)
    if not rows:
        st.info("No trained checkpoints in `checkpoints/` yet. Make one with `waveviz train PRESET --out "
                "checkpoints/PRESET.pt` or on the Train page; `checkpoints/README.md` lists the commands.")
        return
    st.dataframe(
        [{"preset": r["preset"], "images": r["n"], "FG-Acc": round(r["fg_acc"], 3), "FG-IoU": round(r["fg_iou"], 3),
          "FG-Loss": round(r["fg_loss"], 3),
          "paper Acc / IoU / Loss": " / ".join("–" if v is None else f"{v:.2f}" for v in r["paper"]) if r["paper"] else "–",
          "target": f"{r['target'][0]} ≥ {r['target'][1]}" if r["target"] else "–",
          "met": {True: "✓", False: "✗", None: ""}[r["meets_target"]], "epochs": r["epochs"], "hardware": r["hardware"]}
         for r in rows], hide_index=True, width="stretch")
    st.caption(rows[0]["source"] + ". `waveviz results` prints this table; `waveviz results --fresh 256` re-measures it.")

    names = [Path(r["path"]).stem for r in rows]
    showcase = "nwm-linear-tetrominoes"
    pick = st.selectbox("checkpoint", names, index=names.index(showcase) if showcase in names else 0)
    path = rows[names.index(pick)]["path"]
    _, info = st.cache_resource(load_checkpoint)(path)
    meta = info["meta"]
    left, right = st.columns(2)
    with left:
        st.subheader("Training curves")
        st.plotly_chart(curves_figure(meta), width="stretch")
        r = share_loss_correlation(meta)
        if r is not None:
            st.metric("r(long-wavelength share, −val loss)", f"{r:.3f}", help="paper Fig. 10: r = 0.961 on Polygons")
    with right:
        st.subheader("Class-averaged spectra")
        fig = st.cache_data(class_spectrum_figure)(path)
        if fig is None:
            st.info("This model has no hidden sequence to take spectra of (a feed-forward baseline).")
        else:
            st.plotly_chart(fig, width="stretch")
