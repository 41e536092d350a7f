"""The Compare page: one input through 2–4 models side by side, on one shared clock (paper Table 1, live).

Layout and widgets only; runs through :mod:`waveviz.app.common`, pictures from :mod:`waveviz.app.figures`.
"""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from ..data import DATASETS
from ..metrics import segmentation_metrics
from ..paths import find_checkpoints
from . import catalog, common, figures

INTRO = """
The paper's Table 1 asks which models can segment shapes they only see through local neurons:
a wave model whose readout keeps the whole time series (linear, fft), one that keeps only the last
step, a ConvLSTM and a deep CNN (up to four at a time: add or swap them in the picker). Here they all get
the same input, and one slider runs all their clocks at once.
"""

MAX_MODELS = 4


def default_lineup(presets: dict[str, str], k: int = MAX_MODELS) -> list[str]:
    """Up to k checkpoint ids in the paper's order of interest, one per preset when possible.
    presets: id → preset name."""
    ranked = sorted(presets, key=lambda c: common.preset_rank(presets[c]))
    first, rest, seen = [], [], set()
    for c in ranked:
        (rest if presets[c] in seen else first).append(c)
        seen.add(presets[c])
    return (first + rest)[:k]


def render() -> None:
    with common.torch_threads(1):
        _render()


def _render() -> None:
    st.title("Compare readouts and models")
    st.markdown(INTRO)
    entries = common.model_catalog()
    if not entries:
        if find_checkpoints():
            st.warning("None of the checkpoints could be read. " + common.GET_MORE)
        else:
            common.no_checkpoints_message()
        return
    by_ds: dict[str, dict[str, str]] = {}
    for cid, e in entries.items():
        by_ds.setdefault(e.dataset, {})[cid] = e.preset
    datasets = sorted(by_ds, key=lambda d: -len(by_ds[d]))
    with st.sidebar:
        ds = st.selectbox("Data set", datasets, key="data", bind="query-params",
                          help="Models are compared on the data set they were trained on; the sample and "
                               "the drawing tool are that data set's.")
        ids = list(by_ds[ds])
        if st.session_state.get("_models_ds") != ds:  # another data set: its own line-up
            st.session_state.pop("models", None)
            if st.session_state.get("_models_ds") is not None:  # a switch, not a deep link: the URL's are the old set's
                st.query_params.pop("models", None)
            st.session_state["_models_ds"] = ds
        common.url_state("models", ids, default_lineup(by_ds[ds]), many=True)
        chosen = st.multiselect("Models (2–4)", ids, key="models", max_selections=MAX_MODELS,
                                format_func=lambda c: entries[c].label if c in entries else c)
        st.query_params["models"] = chosen
        if common.url_problem("models"):
            st.warning(common.url_problem("models"))
        st.caption(common.GET_MORE)
    if len(ids) < 2:
        st.info(f"Only one {ds} model so far ({ids[0]}); a comparison needs two. " + common.GET_MORE)
    if not chosen:
        st.info("Choose models to compare in the sidebar.")
        return
    picked = []
    for cid in chosen:
        if cid not in entries:
            continue
        try:
            picked.append(common.load_picked(entries[cid]))
        except common.CheckpointError as e:
            st.error(str(e))
    if not picked:
        return
    in_ch = {p.spec.in_channels for p in picked}
    if len(in_ch) > 1:
        st.error("These models take different inputs (grey and RGB); choose models of one data set.")
        return

    timings = common.Timings()
    first = picked[0]
    left, right = st.columns([1, 1.6], gap="large")
    with left:
        mi = common.input_picker(first.spec, ds, key="cmp", choose_dataset=False,
                                 drawing_options=first.drawing_options)
        if mi is not None:
            common.show_input(mi)
    if mi is None:
        return
    results = []
    for p in picked:
        x = mi.x
        if p.spec != first.spec:  # another training size: convert the same picture for this model
            from ..inputs import prepare_image

            x = prepare_image(mi.image, p.spec, invert=False).x
        with timings.stage("model"):
            results.append(common.cached_run(p.key, mi.key, p.model, x, p.amp))
    names = DATASETS.get(ds).class_names
    truth = mi.mask if mi.dataset == ds else None
    shape = results[0].pred.shape
    same_size = all(r.pred.shape == shape for r in results)

    with right:
        st.subheader("Metrics on this input")
        st.dataframe(_table(picked, results, truth), hide_index=True)
        if truth is None:
            st.caption("No true mask for a drawing or an upload: only the models' own test metrics are shown.")
    with timings.stage("rendering"):
        preds = [(p.short, r.pred) for p, r in zip(picked, results)]
        if same_size:
            st.plotly_chart(figures.prediction_row_figure(mi.image, preds, truth, names), key="cmp_preds",
                            config={"displayModeBar": False})
        C = max((r.hidden.shape[1] for r in results if r.hidden is not None), default=0)
        if C:
            ch = int(st.selectbox("Hidden channel", list(range(C)), key="ch", bind="query-params")) if C > 1 else 0
            n_frames = min(figures.MAX_FRAMES, max(r.hidden.shape[0] for r in results if r.hidden is not None))
            panels = [_panel(p.key, mi.key, ch, n_frames, p, r) for p, r in zip(picked, results)]
            st.subheader("Their hidden states, on one clock")
            st.caption("Each panel shows one hidden channel on its own symmetric scale; the slider runs every model "
                       "through the same share of its run (an LSTM with T = 20 and an NWM with T = 100 stay in step). "
                       "A feed-forward model shows its prediction instead.")
            st.plotly_chart(figures.compare_figure(panels), key="cmp_waves", config={"displayModeBar": False})
    st.caption("Timings: " + timings.line())


@st.cache_resource(max_entries=16, show_spinner=False)
def _panel(model_key: str, input_key: str, channel: int, n_frames: int, _p: common.Picked,
           _r: common.RunResult) -> figures.ComparePanel:
    """One model's column of the shared-clock animation, its frames encoded once per (model, input,
    channel): a page change that keeps them sends the same pictures without re-encoding them."""
    fr, steps = figures.compare_frames(_r.hidden, channel, n_frames, figures.label_rgb(_r.pred))
    title = f"{_p.short} (T = {_p.model.config.T})" if _r.hidden is not None else f"{_p.short}: no waves"
    return figures.ComparePanel(title, fr, steps)


def _table(picked: list[common.Picked], results: list[common.RunResult], truth: np.ndarray | None) -> list[dict]:
    rows = []
    for p, r in zip(picked, results):
        meta = p.info.get("meta") or {}
        row = {"model": p.short, "checkpoint": p.id, "params": meta.get("params") or sum(t.numel() for t in p.model.parameters())}
        if truth is not None and truth.shape == r.pred.shape:
            m = segmentation_metrics(torch.from_numpy(r.logits)[None], torch.from_numpy(truth)[None])
            row.update({"FG-Acc": _r3(m["fg_acc"]), "FG-IoU": _r3(m["fg_iou"]), "FG-Loss": _r3(m["fg_loss"])})
        e = p.entry
        score = catalog.LABELS[e.metric] if e else ""  # FG-IoU, or FG-Acc where the paper gives only that
        row.update({"held-out score": f"{score} {e.value:.3f}" if e and e.value is not None else "–",
                    "paper": f"{score} {e.paper:.2f}" if e and e.paper else "–",
                    "under-trained": "⚠" if e and e.under_trained else "", "run (ms)": round(1000 * r.seconds)})
        rows.append(row)
    return rows


def _r3(v):
    return None if v is None or v != v else round(float(v), 3)
