"""Results page: shipped checkpoints against the paper's tables, training curves, class spectra."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from .. import paths
from ..metrics import METRIC_LABELS
from ..results import checkpoint_class_spectra, per_class_rows, results_table, share_loss_correlation
from . import catalog, common
from .figures import CHART_CONFIG, class_spectra_figure, learning_curves_figure


def _table(folder: str, fresh: int, progress=None) -> list[dict]:
    return [asdict(r) | {"meets_target": r.meets_target} for r in results_table(folder, fresh=fresh, progress=progress)]


def _versions(folder: str) -> tuple[tuple[str, float], ...]:
    """The checkpoints' names and modification times: a cache key that changes when any file does."""
    return tuple((p.name, p.stat().st_mtime) for p in sorted(Path(folder).glob("*.pt")))


def class_spectrum_figure(path: str, n: int = 16, seed: int = 10_000) -> go.Figure | None:
    """Mean |rfft| of each true class's pixels (paper Fig. 4, right), channel 0 without the constant
    bin, over n test images, the model run as it trained; None for a model without a hidden sequence."""
    found = checkpoint_class_spectra(*common.load_model(Path(path)), n=n, seed=seed)
    if found is None:
        return None
    freqs, spectra, counts, names = found  # (K,), (N, C, K), (N,), N names
    return class_spectra_figure(freqs[1:], spectra[:, :1, 1:], counts, names, height=420)


@st.cache_data(show_spinner=False, max_entries=8)
def _stored_table(folder: str, versions: tuple) -> list[dict]:
    return _table(folder, 0)


@st.cache_resource
def _fresh_tables() -> dict:
    """(folder, n, versions) → rows re-evaluated on n fresh images, shared by every session."""
    return {}


def _cached_table(folder: str, fresh: int, versions: tuple) -> list[dict]:
    """The table, computed once per setting and file versions; a re-evaluation shows its progress
    (one checkpoint after another) instead of a bare spinner."""
    if not fresh:
        return _stored_table(folder, versions)
    done = _fresh_tables()
    key = (folder, fresh, versions)
    if key not in done:
        bar = st.progress(0.0, text="Re-evaluating…")

        def progress(i: int, total: int, name: str) -> None:
            bar.progress(min(i / max(total, 1), 1.0),
                         text=f"Re-evaluating {name} on {fresh} fresh images ({i + 1} of {total})…" if name else "Done.")

        done[key] = _table(folder, fresh, progress)
        bar.empty()
    return done[key]


@st.cache_data(show_spinner="Running the model over 16 test images for its class spectra…", max_entries=16)
def _spectrum(path: str, mtime: float) -> go.Figure | None:
    return class_spectrum_figure(path)


def table_row(r: dict, fresh: bool) -> dict:
    """A row of the page's table from a `results_table` row (as a dict): the paper-faithful held-out
    score — what README and the model pickers quote — else, for a checkpoint not scored so, its own
    test split's; fresh re-measurements are paper-faithful by construction."""
    m, n = (r, r["n"]) if fresh or not r["faithful"] else (r["faithful"], r["faithful_n"])
    on = "fresh" if fresh else ("paper-faithful" if r["faithful"] else "own split (older data)")
    return {"preset": r["preset"], "FG-Acc": round(m["fg_acc"], 3), "FG-IoU": round(m["fg_iou"], 3),
            "FG-Loss": round(m["fg_loss"], 3), "test images": f"{n:,} {on}",
            "paper Acc / IoU / Loss": " / ".join("–" if v is None else f"{v:.2f}" for v in r["paper"]) if r["paper"] else "–",
            "target": f"{METRIC_LABELS[r['target'][0]]} ≥ {r['target'][1]}" if r["target"] else "–",
            "met": {True: "✓", False: "✗", None: ""}[r["meets_target"]], "epochs": r["epochs"], "hardware": r["hardware"]}


def render() -> None:
    st.title("Results")
    st.markdown("The checkpoints that ship with waveviz, measured on held-out images they never saw, next to "
                "the paper's means over seeds. Below: how each one learned, and what frequencies its pixels "
                "carry for each class.")
    folder = str(paths.shipped_checkpoints())
    fresh = st.toggle("Re-evaluate on fresh samples (slower)", value=False, key="results_fresh")
    n = st.slider("fresh images per data set", 16, 256, 64, step=16, disabled=not fresh, key="results_n")
    rows = _cached_table(folder, n if fresh else 0, _versions(folder))
    if not rows:
        st.info("No trained checkpoints in `checkpoints/` yet. Make one with `waveviz train PRESET --out "
                "checkpoints/PRESET.pt` or on the Train page; `checkpoints/README.md` lists the commands.")
        return
    st.dataframe([table_row(r, fresh) for r in rows], hide_index=True, width="stretch")
    st.caption(("Measured now on fresh test images made as the paper's authors made theirs"
                if fresh else "Held-out test images made as the paper's authors made theirs (MNIST: the official "
                "test digits); a checkpoint trained on older data shows its own test split's score, marked so")
               + ". `waveviz results` prints this table with each run's own test split as well; "
               "`waveviz results --fresh 256` re-measures it.")

    names = [Path(r["path"]).stem for r in rows]
    best = catalog.best(common.model_catalog([Path(r["path"]) for r in rows]), recurrent=True)
    pick = st.selectbox("checkpoint", names, index=names.index(best.id) if best and best.id in names else 0,
                        key="results_pick")
    path = rows[names.index(pick)]["path"]
    _, info = common.load_model(Path(path))
    meta = info["meta"]
    left, right = st.columns(2)
    with left:
        st.subheader("Training curves")
        fig = learning_curves_figure(meta.get("history") or [])
        if fig is None:
            st.info("This checkpoint stored no training history.")
        else:
            st.plotly_chart(fig, width="stretch", config=CHART_CONFIG)
        found = share_loss_correlation(meta)
        if found is not None:
            r, epochs = found
            st.metric(f"r(long-wavelength share, −val loss) over {epochs} epochs", f"{r:.3f}",
                      help="Paper Fig. 10: r = 0.961 over a whole Polygons run. This is over the epochs this "
                           "checkpoint's history records — for a fine-tuned model only its last segment.")
            if epochs < 10:
                st.caption(f"Only {epochs} epochs recorded: too few for the correlation to say much.")
        per_class = per_class_rows(meta)
        if per_class is not None:
            st.subheader("Per class")
            st.dataframe(per_class[0], hide_index=True, width="stretch")
            st.caption(per_class[1] + " `waveviz eval --per-class` measures it on any data.")
    with right:
        st.subheader("Class-averaged spectra")
        fig = _spectrum(path, Path(path).stat().st_mtime)
        if fig is None:
            st.info("This model has no hidden sequence to take spectra of (a feed-forward baseline).")
        else:
            st.plotly_chart(fig, width="stretch", config=CHART_CONFIG)
