"""Plotly figure builders for the app's pages: pure functions of arrays, no Streamlit.

Waves are sent to the browser as colour-mapped frames (indexed PNG data URIs), not as heat-map
numbers: 100 frames of a 64 × 64 × 2 field are then ~0.5 MB instead of megabytes, and the animation
(play, pause, speeds, frame slider) runs entirely in the browser. Images are shown with pixel
(row, col) at plot coordinates x = col, y = row (y pointing down); a transparent scatter layer with
one marker per pixel makes them clickable (`customdata` = [row, col]).

Figures are written as plain dicts and wrapped without plotly's validation (`_figure`): building
them through plotly's objects (`make_subplots`, `update_layout`) took 0.3–2 s per figure on the
project's 2-core machine, most of a page's time; the dicts take milliseconds.
"""
from __future__ import annotations

import base64
import functools
import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from PIL import Image

DIVERGING = "RdBu_r"  # hidden states: blue negative, white 0, red positive
SEQUENTIAL = "Viridis"
CYCLIC = "Twilight"  # phases
FONT = dict(size=16)  # legible on a projector
SPEEDS = (0.25, 0.5, 1.0, 2.0)  # play buttons, multiples of the base frame rate
BASE_FRAME_MS = 60
MAX_FRAMES = 100
MAX_FRAME_PIXELS = 10_000_000  # all frames of one animation together: fewer frames for big grids
MAX_CLICK_MARKERS = 20_000  # larger images get a click marker every few pixels
SCALE_PERCENTILE = 99.0  # each channel's colour scale: ± this percentile of |values|
CHART_CONFIG = {"displayModeBar": False}  # no plotly toolbar over the subplot titles
# Class colours: 0 background black, then a qualitative set whose neighbours differ in hue and
# lightness (after Trubetskoy's 20 distinct colours; CIE76 ΔE ≥ 30 between any two of classes 0–10).
PALETTE = ("#000000", "#E6194B", "#3CB44B", "#4363D8", "#FFE119", "#F032E6", "#42D4F4", "#F58231",
           "#BFEF45", "#FABED4", "#9A6324", "#469990", "#DCBEFF", "#AAFFC3", "#808000", "#A9A9A9")


def _figure(fig: dict) -> go.Figure:
    """A plain figure dict as a go.Figure, without plotly's (slow) validation."""
    return go.Figure(fig, _validate=False)


def class_label(name: str) -> str:
    """A class as people say it: MNIST's "6" is "digit 6"; other names stay."""
    return f"digit {name}" if name.isdigit() else name


def class_labels(names: Sequence[str], n: int) -> list[str]:
    """Labels of classes 0 … n − 1 (`class_label`), "class k" past the given names."""
    return [class_label(names[k]) if k < len(names) else f"class {k}" for k in range(n)]


# ------------------------------------------------------------------------------ colour

@functools.lru_cache(maxsize=16)
def colour_lut(colorscale: str = DIVERGING, n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colours sampled evenly along a plotly colour scale (cached: treat as read-only)."""
    cols = sample_colorscale(colorscale, list(np.linspace(0, 1, n)), colortype="tuple")
    return (np.array(cols) * (255 if max(max(c) for c in cols) <= 1 else 1)).round().clip(0, 255).astype(np.uint8)


def symmetric_scale(values: np.ndarray, q: float = SCALE_PERCENTILE) -> float:
    """vmax for a fixed symmetric scale [−vmax, vmax]: the q-th percentile of |values| (> 0)."""
    v = float(np.nanpercentile(np.abs(values), q)) if np.size(values) else 0.0
    return v if v > 1e-12 else 1.0


def colour_index(values: np.ndarray, vmax: float, vmin: float | None = None, n: int = 255) -> np.ndarray:
    """values (…) → uint8 indices 0 … n−1 on the fixed scale [vmin, vmax] (default [−vmax, vmax]);
    NaN → n (the grey entry of `palette`)."""
    lo = -vmax if vmin is None else vmin
    v = np.asarray(values, dtype=np.float32)
    idx = np.clip((v - lo) / max(vmax - lo, 1e-12) * (n - 1), 0, n - 1)
    out = np.nan_to_num(idx, nan=0).round().astype(np.uint8)
    out[np.isnan(v)] = n
    return out


def palette(colorscale: str = DIVERGING) -> np.ndarray:
    """(256, 3) uint8: 255 colours along the scale, then grey for NaN (pairs with `colour_index`)."""
    return np.concatenate([colour_lut(colorscale, 255), np.full((1, 3), 128, np.uint8)])


def colourize(values: np.ndarray, vmax: float, colorscale: str = DIVERGING, vmin: float | None = None) -> np.ndarray:
    """values (…) → RGB (…, 3) uint8 on the fixed scale [vmin, vmax] (default [−vmax, vmax]); NaN → grey."""
    return palette(colorscale)[colour_index(values, vmax, vmin)]


def label_rgb(labels: np.ndarray) -> np.ndarray:
    """(H, W) class labels → (H, W, 3) uint8 in the class palette."""
    lut = np.array([[int(c[i: i + 2], 16) for i in (1, 3, 5)] for c in PALETTE], np.uint8)
    return lut[np.asarray(labels) % len(lut)]


def grey_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 → (H, W, 3) uint8."""
    return np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image


def png_uri(img: np.ndarray, lut: np.ndarray | None = None) -> str:
    """(H, W, 3) uint8 RGB, or (H, W) uint8 indices into `lut` (256, 3), → a PNG data URI (what
    an image trace's `source` takes). Indexed PNGs are about a third the size; light compression
    (level 1) encodes several times faster than the default for a few per cent more bytes."""
    buf = io.BytesIO()
    if lut is None:
        im = Image.fromarray(img)
    else:
        im = Image.frombytes("P", (img.shape[1], img.shape[0]), np.ascontiguousarray(img, np.uint8).tobytes())
        im.putpalette(lut.ravel().tolist())
    im.save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ------------------------------------------------------------------------------ layout

def _axis(k: int, letter: str) -> str:
    """Layout key of the k-th (0-based) axis: xaxis, xaxis2, …"""
    return f"{letter}axis{k + 1 if k else ''}"


def _ref(k: int, letter: str) -> str:
    """A trace's reference to the k-th axis: x, x2, …"""
    return f"{letter}{k + 1 if k else ''}"


def _grid(rows: int, cols: int, titles: Sequence[str] = (), *, hspace: float = 0.02, vspace: float = 0.08) -> dict:
    """Layout entries for a rows × cols grid of subplots (what make_subplots lays out): axes with
    their domains, row-major, and each subplot's title above it."""
    w = (1 - hspace * (cols - 1)) / cols
    h = (1 - vspace * (rows - 1)) / rows
    out: dict = {"annotations": []}
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        x0, y1 = c * (w + hspace), 1 - r * (h + vspace)
        clip = lambda v: min(1.0, max(0.0, round(v, 9)))  # noqa: E731  (float error must not leave [0, 1])
        out[_axis(k, "x")] = {"domain": [clip(x0), clip(x0 + w)], "anchor": _ref(k, "y")}
        out[_axis(k, "y")] = {"domain": [clip(y1 - h), clip(y1)], "anchor": _ref(k, "x")}
        if k < len(titles):
            out["annotations"].append({"text": titles[k], "x": x0 + w / 2, "y": y1, "xref": "paper", "yref": "paper",
                                       "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": FONT})
    return out


def _on(trace: dict, k: int) -> dict:
    """The trace placed in the k-th subplot."""
    return {**trace, "xaxis": _ref(k, "x"), "yaxis": _ref(k, "y")}


def _image_axes(layout: dict, H: int, W: int, n: int = 1) -> None:
    """Hide the axes of the first n subplots, show exactly the H × W pixels with row 0 on top, and
    keep pixels square (fixed ranges, so click-layer markers cannot widen them)."""
    for k in range(n):
        layout.setdefault(_axis(k, "x"), {}).update(visible=False, constrain="domain", range=[-0.5, W - 0.5],
                                                    autorange=False)
        layout.setdefault(_axis(k, "y"), {}).update(visible=False, constrain="domain", range=[H - 0.5, -0.5],
                                                    autorange=False, scaleanchor=_ref(k, "x"))


def _image(rgb_or_uri, **kw) -> dict:
    src = rgb_or_uri if isinstance(rgb_or_uri, str) else png_uri(rgb_or_uri)
    return {"type": "image", "source": src, "hoverinfo": "skip", **kw}


def _legend_swatches(present: Sequence[int], class_names: Sequence[str]) -> list[dict]:
    """Empty square markers that make a legend of the classes present."""
    labels = class_labels(class_names, max(present, default=0) + 1)
    return [{"type": "scatter", "x": [None], "y": [None], "mode": "markers", "name": labels[n],
             "marker": {"size": 16, "symbol": "square", "color": PALETTE[n % len(PALETTE)],
                        "line": {"width": 1, "color": "#888"}}} for n in present]


def _margin(t: int = 40, b: int = 10) -> dict:
    return {"l": 10, "r": 10, "t": t, "b": b}


# ------------------------------------------------------------------------------ waves

@dataclass
class WaveFrames:
    """Colour-mapped frames of hidden channels, tiled in a grid.

    index (F, h, w) uint8 colour indices into lut (256, 3) (`palette`); steps (F,) the recurrence
    step (1-based) each frame shows; vmax (k,) each tile's symmetric scale ±vmax; grid (rows, cols),
    tile (H, W) and gap in pixels locate the k-th tile (hidden channel `channels[k]`) at row
    k // cols, column k % cols.
    """

    index: np.ndarray
    lut: np.ndarray
    steps: np.ndarray
    vmax: tuple[float, ...]
    grid: tuple[int, int]
    tile: tuple[int, int]
    gap: int
    channels: tuple[int, ...] = ()  # the hidden channel shown in each tile

    def channel_origin(self, k: int) -> tuple[int, int]:
        """Top-left (row, col) of the k-th tile."""
        H, W = self.tile
        return (k // self.grid[1]) * (H + self.gap), (k % self.grid[1]) * (W + self.gap)

    @property
    def rgb(self) -> np.ndarray:
        """(F, h, w, 3) uint8."""
        return self.lut[self.index]

    @functools.cached_property
    def uris(self) -> tuple[str, ...]:
        """Each frame as an indexed-PNG data URI (computed once per frame set)."""
        return tuple(png_uri(f, self.lut) for f in self.index)

    @property
    def scale_note(self) -> str:
        """The colour scales in words, e.g. "c0 ±1.2, c1 ±0.31"."""
        return ", ".join(f"c{c} ±{v:.2g}" for c, v in zip(self.channels, self.vmax))


def frame_steps(T: int, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """≤ max_frames evenly spread 0-based time indices, always ending at the last step."""
    if T <= max_frames:
        return np.arange(T)
    return np.unique(np.linspace(0, T - 1, max_frames).round().astype(np.int64))


def wave_frames(hidden: np.ndarray, *, max_frames: int = MAX_FRAMES, channels: Sequence[int] | None = None,
                gap: int = 2, q: float = SCALE_PERCENTILE) -> WaveFrames:
    """hidden (T, C, H, W) → tiled colour-mapped frames, each channel on its own symmetric scale
    ± the q-th percentile of its |values| over all steps and pixels: one channel's large values no
    longer wash the others out, and a few extreme pixels no longer make every frame look empty.

    At most `max_frames` frames, and fewer when the tiled grid is large (≤ MAX_FRAME_PIXELS in all),
    so a 16-channel 128² model still sends a few megabytes.
    """
    T, C, H, W = hidden.shape
    chans = list(range(C)) if channels is None else list(channels)
    cols = min(len(chans), 4)
    rows = -(-len(chans) // cols)
    h, w = rows * H + (rows - 1) * gap, cols * W + (cols - 1) * gap
    idx = frame_steps(T, max(2, min(max_frames, MAX_FRAME_PIXELS // (h * w))))
    index = np.full((len(idx), h, w), 255, np.uint8)  # 255 = the grey gaps
    vmax = []
    for k, c in enumerate(chans):
        r0, c0 = (k // cols) * (H + gap), (k % cols) * (W + gap)
        v = symmetric_scale(hidden[:, c], q)
        index[:, r0: r0 + H, c0: c0 + W] = colour_index(hidden[idx, c], v)
        vmax.append(v)
    return WaveFrames(index, palette(), idx + 1, tuple(vmax), (rows, cols), (H, W), gap, tuple(chans))


def click_layer(H: int, W: int, *, origins: Sequence[tuple[int, int]] = ((0, 0),), name: str = "pixel") -> dict:
    """Transparent markers, one per pixel (every s-th pixel for big images) of each tile whose
    top-left corner is in `origins`; customdata = [row, col] within the tile."""
    stride = 1
    while (H // stride) * (W // stride) * len(origins) > MAX_CLICK_MARKERS:
        stride += 1
    rr, cc = np.mgrid[0:H:stride, 0:W:stride]
    rr, cc = rr.ravel(), cc.ravel()
    xs = np.concatenate([cc + o[1] for o in origins])
    ys = np.concatenate([rr + o[0] for o in origins])
    cd = np.tile(np.stack([rr, cc], 1), (len(origins), 1))
    return {"type": "scatter", "x": xs, "y": ys, "customdata": cd, "mode": "markers", "name": name,
            "showlegend": False, "marker": {"size": max(4, 6 * stride), "color": "rgba(0,0,0,0)", "symbol": "square"},
            "hovertemplate": "row %{customdata[0]}, col %{customdata[1]}<extra></extra>"}


def pixel_marker(row: int, col: int, *, origins: Sequence[tuple[int, int]] = ((0, 0),)) -> dict:
    return {"type": "scatter", "x": [col + o[1] for o in origins], "y": [row + o[0] for o in origins],
            "mode": "markers", "showlegend": False, "hoverinfo": "skip",
            "marker": {"size": 14, "symbol": "x-thin", "line": {"width": 3, "color": "#00FF66"}}}


def _play_controls(names: list[str], frame_ms: int, prefix: str) -> dict:
    buttons = [dict(label=f"▶ {s:g}×", method="animate",
                    args=[None, {"frame": {"duration": int(frame_ms / s), "redraw": True},
                                 "fromcurrent": True, "transition": {"duration": 0}}]) for s in SPEEDS]
    buttons.append(dict(label="❚❚ pause", method="animate",
                        args=[[None], {"frame": {"duration": 0, "redraw": False}, "mode": "immediate",
                                       "transition": {"duration": 0}}]))
    slider = dict(active=0, pad=dict(t=40), currentvalue=dict(prefix=prefix, font=FONT),
                  steps=[dict(label=n, method="animate",
                              args=[[n], {"frame": {"duration": 0, "redraw": True}, "mode": "immediate",
                                          "transition": {"duration": 0}}]) for n in names])
    menu = dict(type="buttons", direction="left", showactive=False, x=0, y=-0.02, xanchor="left",
                yanchor="top", pad=dict(t=0, r=6), buttons=buttons, font=dict(size=14))
    return dict(updatemenus=[menu], sliders=[slider])


def field_frames(fields: np.ndarray, steps: np.ndarray, vmax: float) -> WaveFrames:
    """One field over time as frames for `animation_figure`: fields (F, H, W), NaN where there is
    no field (grey), on the symmetric scale ±vmax; steps (F,) the step of each frame."""
    F, H, W = fields.shape
    return WaveFrames(colour_index(fields, vmax), palette(), np.asarray(steps), (float(vmax),), (1, 1), (H, W), 0, ())


def animation_figure(frames: WaveFrames, *, title: str = "", pixel: tuple[int, int] | None = None,
                     clickable: bool = True, frame_ms: int = BASE_FRAME_MS, height: int = 560) -> go.Figure:
    """The hidden waves as an in-browser animation: speed buttons, pause, a step slider.

    Trace 0 is the image (the only one frames change); then the click layer over every channel tile
    and the clicked pixel's marker. Channel tiles are labelled c0, c1, … at their top-left corner.
    """
    F = len(frames.index)
    uris = frames.uris
    names = [str(int(s)) for s in frames.steps]
    chans = frames.channels  # () for a single unlabelled field
    origins = [frames.channel_origin(k) for k in range(max(1, len(chans)))]
    H, W = frames.tile
    data = [_image(uris[0])]
    if clickable:
        data.append(click_layer(H, W, origins=origins))
    if pixel is not None:
        data.append(pixel_marker(*pixel, origins=origins))
    notes = [{"x": c0 - 0.5, "y": r0 - 0.5, "text": f"c{c}", "showarrow": False, "xanchor": "left", "yanchor": "top",
              "font": {"size": 14, "color": "#222"}, "bgcolor": "rgba(255,255,255,0.6)"} for c, (r0, c0) in zip(chans, origins)]
    layout = {"title": {"text": title, "font": FONT}, "height": height, "margin": _margin(50), "font": FONT,
              "dragmode": False, "annotations": notes}
    if F > 1:
        layout.update(_play_controls(names, frame_ms, "step "))
    _image_axes(layout, *frames.index.shape[1:3])
    frame_list = [{"data": [{"type": "image", "source": u}], "traces": [0], "name": n} for u, n in zip(uris, names)]
    return _figure({"data": data, "layout": layout, "frames": frame_list})


def gif_bytes(frames: WaveFrames, *, frame_ms: int = BASE_FRAME_MS, min_side: int = 256) -> bytes:
    """The frames as an endlessly looping GIF, enlarged (nearest neighbour) to ≥ min_side px."""
    idx = frames.index
    scale = max(1, -(-min_side // min(idx.shape[1:3])))
    big = idx.repeat(scale, axis=1).repeat(scale, axis=2)  # (F, h·s, w·s)
    pal = frames.lut.ravel().tolist()
    ims = []
    for f in big:
        im = Image.frombytes("P", (f.shape[1], f.shape[0]), np.ascontiguousarray(f).tobytes())
        im.putpalette(pal)
        ims.append(im)
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=frame_ms, loop=0, optimize=False)
    return buf.getvalue()


# ------------------------------------------------------------------------- segmentation

def segmentation_figure(image: np.ndarray, pred: np.ndarray, truth: np.ndarray | None,
                        class_names: Sequence[str], *, pixel: tuple[int, int] | None = None,
                        clickable: bool = True, height: int = 430) -> go.Figure:
    """Input | prediction | truth (when known) side by side, with a class legend; the prediction
    panel is clickable (trace index 2 holds its click layer)."""
    panels = [("what the model sees", grey_rgb(image)), ("prediction", label_rgb(pred))]
    if truth is not None:
        panels.append(("true mask", label_rgb(truth)))
    data = [_on(_image(rgb), i) for i, (_, rgb) in enumerate(panels)]
    H, W = pred.shape
    if clickable:
        data.append(_on(click_layer(H, W), 1))
    if pixel is not None:
        data += [_on(pixel_marker(*pixel), i) for i in range(len(panels))]
    present = sorted(set(np.unique(pred).tolist()) | (set(np.unique(truth).tolist()) if truth is not None else set()))
    data += _legend_swatches(present, class_names)
    layout = {"height": height, "margin": _margin(), "font": FONT, "dragmode": False,
              "legend": {"orientation": "h", "y": -0.02, "yanchor": "top", "font": FONT},
              **_grid(1, len(panels), [p[0] for p in panels], hspace=0.03)}
    _image_axes(layout, H, W, len(panels))
    return _figure({"data": data, "layout": layout})


# ------------------------------------------------------------------------ measurements

def _lines(title: str, height: int, xtitle: str, ytitle: str, traces: list[dict], **layout) -> go.Figure:
    return _figure({"data": traces, "layout": {"title": {"text": title, "font": FONT}, "height": height, "font": FONT,
                                               "margin": _margin(50), "xaxis": {"title": {"text": xtitle}},
                                               "yaxis": {"title": {"text": ytitle}}, **layout}})


def timeseries_figure(trace: np.ndarray, *, title: str = "", dt: float | None = None, height: int = 320) -> go.Figure:
    """One pixel's hidden state over time: trace (T, C), one line per channel; x in steps."""
    T, C = trace.shape
    t = np.arange(1, T + 1)
    unit = f" (one step = Δt = {dt:g})" if dt else ""
    return _lines(title, height, f"step t{unit}", "y_t",
                  [{"type": "scatter", "x": t, "y": trace[:, c], "mode": "lines", "name": f"c{c}", "line": {"width": 3}}
                   for c in range(C)])


def spectrum_figure(freqs: np.ndarray, spectrum: np.ndarray, *, title: str = "", height: int = 320) -> go.Figure:
    """|rfft(y − mean)| of one pixel: spectrum (K, C) against freqs (K,) cycles per step."""
    return _lines(title, height, "frequency (cycles per step)", "|rfft|",
                  [{"type": "scatter", "x": freqs, "y": spectrum[:, c], "mode": "lines+markers", "name": f"c{c}",
                    "line": {"width": 3}} for c in range(spectrum.shape[1])])


def readout_figure(features: np.ndarray, readout: str, *, height: int = 320) -> go.Figure:
    """What the readout hands the head at one pixel: features (K', C) as grouped bars."""
    Kp, C = features.shape
    label = {"fft": "rfft bin k", "linear": "learned projection row k"}.get(readout, readout)
    return _lines(f"what the {readout} readout sees", height, label, "feature",
                  [{"type": "bar", "x": np.arange(Kp), "y": features[:, c], "name": f"c{c}"} for c in range(C)],
                  barmode="group")


def probabilities_figure(probs: np.ndarray, class_names: Sequence[str], *, height: int = 320) -> go.Figure:
    """Class probabilities (N,) at one pixel."""
    names = class_labels(class_names, len(probs))
    bar = {"type": "bar", "x": names, "y": probs, "marker": {"color": [PALETTE[n % len(PALETTE)] for n in range(len(probs))],
                                                            "line": {"width": 1, "color": "#888"}}}
    return _lines("class probabilities", height, "", "", [bar], yaxis={"range": [0, 1]})


def maps_figure(maps: np.ndarray, titles: Sequence[str], *, colorscale: str = SEQUENTIAL, zmin: float | None = None,
                zmax: float | None = None, cols: int = 4, height_per_row: int = 300, colorbar_title: str = "",
                pixel: tuple[int, int] | None = None) -> go.Figure:
    """Small multiples of (n, H, W) maps as heat maps on one shared colour scale."""
    n = len(maps)
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    finite = maps[np.isfinite(maps)]
    zmin = float(finite.min()) if zmin is None and finite.size else zmin
    zmax = float(finite.max()) if zmax is None and finite.size else zmax
    data = []
    for i, m in enumerate(maps):
        data.append(_on({"type": "heatmap", "z": np.where(np.isfinite(m), m, np.nan), "colorscale": colorscale,
                         "zmin": zmin, "zmax": zmax, "showscale": i == 0, "colorbar": {"title": {"text": colorbar_title}},
                         "hovertemplate": "row %{y}, col %{x}: %{z:.3g}<extra></extra>"}, i))
        if pixel is not None:
            data.append(_on(pixel_marker(*pixel), i))
    layout = {"height": height_per_row * rows + 40, "font": FONT, "margin": _margin(), **_grid(rows, cols, titles)}
    _image_axes(layout, *maps.shape[1:3], n)
    return _figure({"data": data, "layout": layout})


def class_spectra_figure(freqs: np.ndarray, spectra: np.ndarray, counts: np.ndarray, class_names: Sequence[str],
                         *, height: int = 380) -> go.Figure:
    """Class-averaged spectra (paper Fig. 4, right): spectra (N, C, K), one panel per channel."""
    N, C, K = spectra.shape
    labels = class_labels(class_names, N)
    layout = {"height": height, "font": FONT, "margin": _margin(), **_grid(1, C, [f"channel c{c}" for c in range(C)],
                                                                            hspace=0.04)}
    data = []
    for c in range(C):
        layout[_axis(c, "x")]["title"] = {"text": "frequency (cycles per step)"}
        if c:
            layout[_axis(c, "y")]["matches"] = "y"
        for n in range(N):
            if counts[n] == 0:
                continue
            colour = PALETTE[n % len(PALETTE)] if n else "#777777"
            data.append(_on({"type": "scatter", "x": freqs, "y": spectra[n, c], "mode": "lines", "name": labels[n],
                             "legendgroup": str(n), "showlegend": c == 0,
                             "line": {"width": 3, "color": colour, "dash": "dot" if n == 0 else "solid"}}, c))
    layout["yaxis"]["title"] = {"text": "mean |rfft|"}
    return _figure({"data": data, "layout": layout})


def wavelength_histogram(lam: np.ndarray, null_lam: np.ndarray | None, cut_px: float, *, height: int = 340) -> go.Figure:
    """Distribution of finite Hilbert wavelengths (pixels), with the shuffled-pixel null and the cut."""
    top = 24.0
    data = []
    for arr, name, colour in ((lam, "model", "#0072B2"), (null_lam, "pixels shuffled", "#999999")):
        if arr is None:
            continue
        v = arr[np.isfinite(arr)]
        data.append({"type": "histogram", "x": np.minimum(v, top), "xbins": {"start": 0, "end": top, "size": 0.25},
                     "histnorm": "probability", "name": name, "marker": {"color": colour}, "opacity": 0.7})
    cut = {"type": "line", "x0": cut_px, "x1": cut_px, "y0": 0, "y1": 1, "xref": "x", "yref": "paper",
           "line": {"color": "#D55E00", "width": 3, "dash": "dash"}}
    note = {"x": cut_px, "y": 1, "xref": "x", "yref": "paper", "text": f"λ = {cut_px:g} px", "showarrow": False,
            "xanchor": "left", "yanchor": "top", "font": FONT}
    return _lines("", height, f"wavelength λ (pixels; ≥ {top:g} piled at {top:g})", "share of points", data,
                  barmode="overlay", shapes=[cut], annotations=[note], margin=_margin(30))


def erf_figure(steps: np.ndarray, maps: np.ndarray, radius: np.ndarray, pixel: tuple[int, int], *,
               height_per_row: int = 300) -> go.Figure:
    """Effective receptive field maps (S, H, W) (|∂ logit / ∂ input|, max 1) after each of `steps`."""
    titles = [f"after {int(s)} step{'s' if s != 1 else ''}: r90 = {r:.1f} px" if s else f"r90 = {r:.1f} px"
              for s, r in zip(steps, radius)]
    return maps_figure(maps, titles, colorscale="Hot", zmin=0, zmax=1, cols=min(len(maps), 3),
                       height_per_row=height_per_row, colorbar_title="|∂logit/∂x|", pixel=pixel)


def erf_radius_figure(steps: np.ndarray, radius: np.ndarray, *, height: int = 300) -> go.Figure:
    return _lines("", height, "steps t", "radius holding 90 % of the gradient (px)",
                  [{"type": "scatter", "x": steps, "y": radius, "mode": "lines+markers", "line": {"width": 3},
                    "marker": {"size": 10}}], margin=_margin(30))


# ----------------------------------------------------------------------------- compare

@dataclass
class ComparePanel:
    """One model's column: title; frames (F, H, W) uint8 indices into `palette()` of one hidden
    channel on its own symmetric scale, or (F, H, W, 3) RGB (F = 1 for a model without time);
    steps (F,) the step each frame shows."""

    title: str
    frames: np.ndarray
    steps: np.ndarray

    def uri(self, f: int) -> str:
        fr = self.frames[f]
        return png_uri(fr) if fr.ndim == 3 else png_uri(fr, palette())

    @functools.cached_property
    def uris(self) -> tuple[str, ...]:
        """Every frame's PNG data URI (encoded once per panel)."""
        return tuple(self.uri(f) for f in range(len(self.frames)))


def compare_frames(hidden: np.ndarray | None, channel: int, n_frames: int, fallback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One model's frames on a shared clock of n_frames: frame f shows step ⌈(f + 1)/n_frames · T⌉
    (so models with different T stay aligned by the share of their run that has passed).
    hidden (T, C, H, W) or None → (frames (F, H, W) palette indices, steps (F,));
    without time: ([fallback RGB (H, W, 3)], [0])."""
    if hidden is None:
        return fallback[None], np.array([0])
    T = hidden.shape[0]
    idx = np.ceil((np.arange(n_frames) + 1) / n_frames * T).astype(np.int64) - 1
    h = hidden[:, min(channel, hidden.shape[1] - 1)]
    return colour_index(h[idx], symmetric_scale(h)), idx + 1


def compare_figure(panels: Sequence[ComparePanel], *, frame_ms: int = BASE_FRAME_MS, height: int = 430) -> go.Figure:
    """Models side by side under one shared clock (one slider, one play button for all)."""
    M = len(panels)
    uris = [p.uris for p in panels]
    data = [_on(_image(u[0]), i) for i, u in enumerate(uris)]
    timed = [i for i, p in enumerate(panels) if len(p.frames) > 1]
    F = max((len(panels[i].frames) for i in timed), default=1)
    frames = [{"data": [{"type": "image", "source": uris[i][f]} for i in timed], "traces": timed,
               "name": f"{(f + 1) / F:.0%}"} for f in range(F)] if timed else []
    layout = {"height": height, "font": FONT, "margin": _margin(50), "dragmode": False,
              **_grid(1, M, [p.title for p in panels])}
    if F > 1 and timed:
        layout.update(_play_controls([fr["name"] for fr in frames], frame_ms, "share of each run: "))
    _image_axes(layout, *panels[0].frames.shape[1:3], M)
    return _figure({"data": data, "layout": layout, "frames": frames})


def prediction_row_figure(image: np.ndarray, preds: Sequence[tuple[str, np.ndarray]], truth: np.ndarray | None,
                          class_names: Sequence[str], *, height: int = 380) -> go.Figure:
    """Input, each model's prediction and the true mask in one row, with a class legend."""
    panels = [("input", grey_rgb(image))] + [(t, label_rgb(p)) for t, p in preds]
    if truth is not None:
        panels.append(("true mask", label_rgb(truth)))
    data = [_on(_image(rgb), i) for i, (_, rgb) in enumerate(panels)]
    present = set(np.unique(truth).tolist()) if truth is not None else set()
    for _, p in preds:
        present |= set(np.unique(p).tolist())
    data += _legend_swatches(sorted(present), class_names)
    layout = {"height": height, "font": FONT, "margin": _margin(), "dragmode": False,
              "legend": {"orientation": "h", "y": -0.02, "yanchor": "top"}, **_grid(1, len(panels), [p[0] for p in panels])}
    _image_axes(layout, *image.shape[:2], len(panels))
    return _figure({"data": data, "layout": layout})


def pixel_from_points(points: Sequence[dict]) -> tuple[int, int] | None:
    """The (row, col) of the last clicked click-layer marker in a plotly selection event, if any.

    Streamlit hands a point's customdata [row, col] back as a list or as {"0": row, "1": col}.
    """
    for p in reversed(list(points or [])):
        cd = p.get("customdata")
        if isinstance(cd, dict):
            cd = [cd.get("0", cd.get(0)), cd.get("1", cd.get(1))]
        if isinstance(cd, (list, tuple)) and len(cd) >= 2:
            try:
                return int(cd[0]), int(cd[1])
            except (TypeError, ValueError):
                continue
    return None


# ---------------------------------------------------------------------------- learning curves

def learning_curves_figure(records: Sequence[dict], curve: Sequence[dict] = ()) -> go.Figure | None:
    """Loss, held-out FG-IoU and long-wavelength share against training minutes: a job's, live while
    it runs (`curve`: its curve.jsonl, the training loss every few seconds), or a checkpoint's
    (`records`: its history; without a live curve the loss panel shows each epoch's training loss).
    None when there is nothing to draw."""
    from plotly.subplots import make_subplots

    from .jobs_view import learning_curves

    if not records and not curve:
        return None
    s = learning_curves(list(records), list(curve))
    fig = make_subplots(rows=1, cols=3, subplot_titles=["loss", "FG-IoU (val)", "long-wavelength share"])
    if curve:
        fig.add_trace(go.Scatter(x=s["live_min"], y=s["live_loss"], name="train loss (live)", mode="lines"), row=1, col=1)
    else:
        fig.add_trace(go.Scatter(x=s["epoch_min"], y=s["train_loss"], name="train loss", mode="lines+markers"), row=1, col=1)
    fig.add_trace(go.Scatter(x=s["epoch_min"], y=s["val_loss"], name="val loss", mode="markers"), row=1, col=1)
    fig.add_trace(go.Scatter(x=s["epoch_min"], y=s["val_fg_iou"], name="val FG-IoU", mode="lines+markers"), row=1, col=2)
    if any(v is not None for v in s["long_wavelength_share"]):
        fig.add_trace(go.Scatter(x=s["epoch_min"], y=s["long_wavelength_share"], name="long-wavelength share",
                                 mode="lines+markers"), row=1, col=3)
    fig.update_xaxes(title_text="training minutes")
    fig.update_yaxes(type="log", row=1, col=1)  # one exploded batch (a loss of 10⁴) would flatten the rest
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    fig.update_layout(height=300, margin=dict(l=0, r=0, t=30, b=0), legend=dict(orientation="h", y=-0.3))
    return fig


# ---------------------------------------------------------------------------------- drum lab

DRUM_COLOURS = [[0, "#595959"], [1, "#f2efe6"]]  # clamped rim grey, membrane off-white


def drum_wave_frames(lab) -> tuple[WaveFrames, float]:
    """A `drum.LabResult`'s displacement u as animation frames, grey outside the drum, on ± the
    `SCALE_PERCENTILE`th percentile of |u| after the strike → (frames, that scale)."""
    fields = np.where(lab.mask, lab.frames, np.nan)  # (F, H, W)
    inside = np.abs(lab.frames[1:])[:, lab.mask]
    vmax = float(np.percentile(inside, SCALE_PERCENTILE)) if inside.size else 1.0
    return field_frames(fields, lab.frame_steps, vmax or 1.0), vmax


def drum_strike_figure(mask: np.ndarray, strike: tuple[int, int]) -> go.Figure:
    """The drum mask (H, W) with one invisible, selectable marker per free pixel (customdata = [row,
    col]: heat maps return no selection) and the strike point marked ×."""
    rows, cols = np.nonzero(mask)
    fig = go.Figure(go.Heatmap(z=mask.astype(float), colorscale=DRUM_COLOURS, showscale=False, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=cols, y=rows, customdata=np.stack([rows, cols], axis=1), mode="markers",
                             marker=dict(size=6, color="rgba(0,0,0,0)"),
                             hovertemplate="row %{y}, col %{x}<extra></extra>", showlegend=False))
    fig.add_trace(go.Scatter(x=[strike[1]], y=[strike[0]], mode="markers", hoverinfo="skip", showlegend=False,
                             marker=dict(symbol="x", size=12, color="#b2182b")))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    # not dragmode="select": there a click starts a box and selects nothing
    fig.update_layout(height=340, margin=dict(l=0, r=0, t=10, b=0), dragmode=False)
    return fig


def drum_spectrum_figure(lab) -> go.Figure:
    """|FFT| of the struck pixel's u(t) (log scale) up to 1.15 × the highest mode, the eigenfrequencies
    as dashed lines (red: modes the strike excites strongly, grey: weakly or not at all) and the measured peaks."""
    fmax = 1.15 * lab.mode_hz.max()
    keep = lab.freqs <= fmax
    fig = go.Figure(go.Scatter(x=lab.freqs[keep], y=lab.magnitude[keep], name="|FFT| of u(strike, t)",
                               line=dict(color="#2166ac")))
    for i, f in enumerate(lab.mode_hz):
        fig.add_vline(x=f, line_dash="dash", line_color="#b2182b" if i in lab.excited else "#bbbbbb", opacity=0.8)
    peaks = lab.peaks[lab.peaks <= fmax]
    fig.add_trace(go.Scatter(x=peaks, y=np.interp(peaks, lab.freqs, lab.magnitude), mode="markers",
                             name="measured peaks", marker=dict(color="#1b7837", size=8)))
    fig.update_layout(height=380, yaxis_type="log", xaxis_title="frequency (cycles per unit time)",
                      yaxis_title="amplitude", margin=dict(l=0, r=0, t=10, b=0), legend=dict(x=0.6, y=0.98))
    return fig


def drum_modes_figure(lab, n: int = 8) -> go.Figure:
    """The first n normal modes' shapes (n, H, W), four to a row, each titled with its frequency."""
    import plotly.express as px

    n = min(n, lab.mode_hz.size)
    shapes = lab.modes.shapes[:n]
    zmax = float(np.abs(shapes).max())
    fig = px.imshow(shapes, facet_col=0, facet_col_wrap=4, color_continuous_scale="RdBu_r", zmin=-zmax, zmax=zmax)
    for ann in fig.layout.annotations:
        k = int(ann.text.split("=")[1])
        ann.text = f"mode {k + 1}: f = {lab.mode_hz[k]:.4f}"
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(height=420, coloraxis_showscale=False, margin=dict(l=0, r=0, t=30, b=0))
    return fig


def drum_fig2_figure(result) -> go.Figure:
    """Paper Fig. 2 from a `drum.VerifyResult`: the measured lowest peak of each square drum against
    the theory c/(√2·L)."""
    sides = np.array([r.side for r in result.rows])
    grid = np.linspace(sides.min() - 0.5, sides.max() + 0.5, 100)
    fig = go.Figure(go.Scatter(x=grid, y=result.config.c / (np.sqrt(2) * grid), name="theory c/(√2·L)",
                               line=dict(color="#444444")))
    fig.add_trace(go.Scatter(x=sides, y=[r.measured for r in result.rows], mode="markers", name="RNN, measured",
                             marker=dict(size=10, color="#b2182b")))
    fig.update_layout(height=380, xaxis_title="side length L", yaxis_title="lowest peak (cycles per unit time)",
                      margin=dict(l=0, r=0, t=10, b=0))
    return fig


def drum_shape_figure(mask: np.ndarray, title: str) -> go.Figure:
    """One drum mask (H, W), titled, without axes."""
    import plotly.express as px

    fig = px.imshow(mask.astype(float), color_continuous_scale=DRUM_COLOURS)
    fig.update_layout(height=220, coloraxis_showscale=False, margin=dict(l=0, r=0, t=25, b=0), title=title)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def eigenvalues_figure(names: Sequence[str], eigenvalues: np.ndarray, scale: int) -> go.Figure:
    """Each drum's eigenvalues λ_k (len(names), K), scaled by scale² to unit triangle legs, against k."""
    fig = go.Figure()
    for name, values in zip(names, eigenvalues):
        fig.add_trace(go.Scatter(x=np.arange(1, values.size + 1), y=values * scale**2, mode="lines+markers", name=name))
    fig.update_layout(height=320, xaxis_title="mode k", yaxis_title="λ_k × scale² (unit triangle legs)",
                      margin=dict(l=0, r=0, t=10, b=0))
    return fig
