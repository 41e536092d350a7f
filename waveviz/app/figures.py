"""Plotly figure builders for the Explore and Compare pages: pure functions of arrays, no Streamlit.

Waves are sent to the browser as colour-mapped RGB frames (PNG data URIs), not as heat-map numbers:
100 frames of a 64 × 64 × 2 field are then ~0.5 MB instead of megabytes, and the animation (play,
pause, speeds, frame slider) runs entirely in the browser. Images are shown with pixel (row, col)
at plot coordinates x = col, y = row (y pointing down); a transparent scatter layer with one marker
per pixel makes them clickable (`customdata` = [row, col]).
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
from plotly.subplots import make_subplots
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
# Class colours: 0 background black, then distinct hues (Okabe–Ito, colour-blind safe, and more).
PALETTE = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
           "#999999", "#FFFFFF", "#8C564B", "#17BECF", "#BCBD22", "#9467BD", "#2CA02C", "#D62728")


# ------------------------------------------------------------------------------ colour

@functools.lru_cache(maxsize=16)
def colour_lut(colorscale: str = DIVERGING, n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colours sampled evenly along a plotly colour scale (cached: treat as read-only)."""
    cols = sample_colorscale(colorscale, list(np.linspace(0, 1, n)), colortype="tuple")
    return (np.array(cols) * (255 if max(max(c) for c in cols) <= 1 else 1)).round().clip(0, 255).astype(np.uint8)


def symmetric_scale(values: np.ndarray, q: float = 99.5) -> float:
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
    go.Image `source` takes). Indexed PNGs are about a third the size."""
    buf = io.BytesIO()
    if lut is None:
        im = Image.fromarray(img)
    else:
        im = Image.frombytes("P", (img.shape[1], img.shape[0]), np.ascontiguousarray(img, np.uint8).tobytes())
        im.putpalette(lut.ravel().tolist())
    im.save(buf, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ------------------------------------------------------------------------------ waves

@dataclass
class WaveFrames:
    """Colour-mapped frames of all hidden channels, tiled in a grid.

    index (F, h, w) uint8 colour indices into lut (256, 3) (`palette`); steps (F,) the recurrence
    step (1-based) each frame shows; vmax: the fixed symmetric scale; grid (rows, cols), tile (H, W)
    and gap in pixels locate the k-th tile (hidden channel `channels[k]`) at row k // cols,
    column k % cols.
    """

    index: np.ndarray
    lut: np.ndarray
    steps: np.ndarray
    vmax: float
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


def frame_steps(T: int, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """≤ max_frames evenly spread 0-based time indices, always ending at the last step."""
    if T <= max_frames:
        return np.arange(T)
    return np.unique(np.linspace(0, T - 1, max_frames).round().astype(np.int64))


def wave_frames(hidden: np.ndarray, *, max_frames: int = MAX_FRAMES, vmax: float | None = None,
                channels: Sequence[int] | None = None, gap: int = 2) -> WaveFrames:
    """hidden (T, C, H, W) → tiled colour-mapped frames on one symmetric scale for all channels.

    At most `max_frames` frames, and fewer when the tiled grid is large (≤ MAX_FRAME_PIXELS in all),
    so a 16-channel 128² model still sends a few megabytes.
    """
    T, C, H, W = hidden.shape
    chans = list(range(C)) if channels is None else list(channels)
    vmax = symmetric_scale(hidden) if vmax is None else vmax
    cols = min(len(chans), 4)
    rows = -(-len(chans) // cols)
    h, w = rows * H + (rows - 1) * gap, cols * W + (cols - 1) * gap
    idx = frame_steps(T, max(2, min(max_frames, MAX_FRAME_PIXELS // (h * w))))
    grid = np.full((len(idx), h, w), np.nan, np.float32)  # NaN = the grey gaps
    for k, c in enumerate(chans):
        r0, c0 = (k // cols) * (H + gap), (k % cols) * (W + gap)
        grid[:, r0: r0 + H, c0: c0 + W] = hidden[idx, c]
    return WaveFrames(colour_index(grid, vmax), palette(), idx + 1, vmax, (rows, cols), (H, W), gap, tuple(chans))


def click_layer(H: int, W: int, *, origins: Sequence[tuple[int, int]] = ((0, 0),), name: str = "pixel") -> go.Scatter:
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
    return go.Scatter(x=xs, y=ys, customdata=cd, mode="markers", name=name, showlegend=False,
                      marker=dict(size=max(4, 6 * stride), color="rgba(0,0,0,0)", symbol="square"),
                      hovertemplate="row %{customdata[0]}, col %{customdata[1]}<extra></extra>")


def pixel_marker(row: int, col: int, *, origins: Sequence[tuple[int, int]] = ((0, 0),)) -> go.Scatter:
    return go.Scatter(x=[col + o[1] for o in origins], y=[row + o[0] for o in origins], mode="markers",
                      showlegend=False, hoverinfo="skip",
                      marker=dict(size=14, symbol="x-thin", line=dict(width=3, color="#00FF66")))


def _image_axes(fig: go.Figure, H: int, W: int) -> None:
    """Hide the axes, show exactly the H × W pixels with row 0 on top, and keep pixels square in
    every subplot (fixed ranges, so click-layer markers cannot widen them)."""
    fig.update_xaxes(visible=False, constrain="domain", range=[-0.5, W - 0.5], autorange=False)
    fig.update_yaxes(visible=False, constrain="domain", range=[H - 0.5, -0.5], autorange=False)
    for name in [k for k in fig.layout if k.startswith("yaxis")]:
        fig.layout[name].scaleanchor = "x" + name[len("yaxis"):]


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


def animation_figure(frames: WaveFrames, *, title: str = "", pixel: tuple[int, int] | None = None,
                     clickable: bool = True, frame_ms: int = BASE_FRAME_MS, height: int = 560) -> go.Figure:
    """The hidden waves as an in-browser animation: speed buttons, pause, a step slider.

    Trace 0 is the image (the only one frames change); then the click layer over every channel tile
    and the clicked pixel's marker. Channel tiles are labelled c0, c1, … at their top-left corner.
    """
    F = len(frames.index)
    uris = [png_uri(f, frames.lut) for f in frames.index]
    names = [str(int(s)) for s in frames.steps]
    chans = frames.channels or tuple(range(frames.grid[0] * frames.grid[1]))
    origins = [frames.channel_origin(k) for k in range(len(chans))]
    H, W = frames.tile
    data = [go.Image(source=uris[0], hoverinfo="skip")]
    if clickable:
        data.append(click_layer(H, W, origins=origins))
    if pixel is not None:
        data.append(pixel_marker(*pixel, origins=origins))
    fig = go.Figure(data=data, frames=[go.Frame(data=[go.Image(source=u)], traces=[0], name=n) for u, n in zip(uris, names)])
    for c, (r0, c0) in zip(chans, origins):
        fig.add_annotation(x=c0 - 0.5, y=r0 - 0.5, text=f"c{c}", showarrow=False, xanchor="left", yanchor="top",
                           font=dict(size=14, color="#222"), bgcolor="rgba(255,255,255,0.6)")
    fig.update_layout(title=dict(text=title, font=FONT), height=height, margin=dict(l=10, r=10, t=50, b=10),
                      font=FONT, dragmode=False, **_play_controls(names, frame_ms, "step "))
    _image_axes(fig, *frames.index.shape[1:3])
    if F == 1:
        fig.layout.updatemenus, fig.layout.sliders = (), ()
    return fig


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
    fig = make_subplots(1, len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.03)
    for i, (_, rgb) in enumerate(panels):
        fig.add_trace(go.Image(source=png_uri(rgb), hoverinfo="skip"), 1, i + 1)
    H, W = pred.shape
    if clickable:
        fig.add_trace(click_layer(H, W), 1, 2)
    if pixel is not None:
        for i in range(len(panels)):
            fig.add_trace(pixel_marker(*pixel), 1, i + 1)
    present = sorted(set(np.unique(pred)) | (set(np.unique(truth)) if truth is not None else set()))
    for n in present:
        name = class_names[n] if n < len(class_names) else f"class {n}"
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{n}: {name}",
                                 marker=dict(size=16, symbol="square", color=PALETTE[n % len(PALETTE)],
                                             line=dict(width=1, color="#888"))))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), font=FONT, dragmode=False,
                      legend=dict(orientation="h", y=-0.02, yanchor="top", font=FONT))
    fig.update_annotations(font=FONT)
    _image_axes(fig, H, W)
    return fig


# ------------------------------------------------------------------------ measurements

def timeseries_figure(trace: np.ndarray, *, title: str = "", dt: float | None = None, height: int = 320) -> go.Figure:
    """One pixel's hidden state over time: trace (T, C), one line per channel; x in steps."""
    T, C = trace.shape
    t = np.arange(1, T + 1)
    fig = go.Figure([go.Scatter(x=t, y=trace[:, c], mode="lines", name=f"c{c}", line=dict(width=3)) for c in range(C)])
    unit = f" (one step = Δt = {dt:g})" if dt else ""
    fig.update_layout(title=dict(text=title, font=FONT), height=height, font=FONT, margin=dict(l=10, r=10, t=50, b=10),
                      xaxis_title=f"step t{unit}", yaxis_title="y_t")
    return fig


def spectrum_figure(freqs: np.ndarray, spectrum: np.ndarray, *, title: str = "", height: int = 320) -> go.Figure:
    """|rfft(y − mean)| of one pixel: spectrum (K, C) against freqs (K,) cycles per step."""
    fig = go.Figure([go.Scatter(x=freqs, y=spectrum[:, c], mode="lines+markers", name=f"c{c}", line=dict(width=3))
                     for c in range(spectrum.shape[1])])
    fig.update_layout(title=dict(text=title, font=FONT), height=height, font=FONT, margin=dict(l=10, r=10, t=50, b=10),
                      xaxis_title="frequency (cycles per step)", yaxis_title="|rfft|")
    return fig


def readout_figure(features: np.ndarray, readout: str, *, height: int = 320) -> go.Figure:
    """What the readout hands the head at one pixel: features (K', C) as grouped bars."""
    Kp, C = features.shape
    x = np.arange(Kp)
    label = {"fft": "rfft bin k", "linear": "learned projection row k"}.get(readout, readout)
    fig = go.Figure([go.Bar(x=x, y=features[:, c], name=f"c{c}") for c in range(C)])
    fig.update_layout(title=dict(text=f"what the {readout} readout sees", font=FONT), height=height, font=FONT,
                      barmode="group", margin=dict(l=10, r=10, t=50, b=10), xaxis_title=label, yaxis_title="feature")
    return fig


def probabilities_figure(probs: np.ndarray, class_names: Sequence[str], *, height: int = 320) -> go.Figure:
    """Class probabilities (N,) at one pixel."""
    names = [f"{n}: {class_names[n] if n < len(class_names) else n}" for n in range(len(probs))]
    fig = go.Figure(go.Bar(x=names, y=probs, marker_color=[PALETTE[n % len(PALETTE)] for n in range(len(probs))],
                           marker_line=dict(width=1, color="#888")))
    fig.update_layout(title=dict(text="class probabilities", font=FONT), height=height, font=FONT,
                      margin=dict(l=10, r=10, t=50, b=10), yaxis=dict(range=[0, 1]))
    return fig


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
    fig = make_subplots(rows, cols, subplot_titles=list(titles), horizontal_spacing=0.02, vertical_spacing=0.08)
    for i, m in enumerate(maps):
        fig.add_trace(go.Heatmap(z=np.where(np.isfinite(m), m, np.nan), colorscale=colorscale, zmin=zmin, zmax=zmax,
                                 showscale=i == 0, colorbar=dict(title=colorbar_title),
                                 hovertemplate="row %{y}, col %{x}: %{z:.3g}<extra></extra>"), i // cols + 1, i % cols + 1)
        if pixel is not None:
            fig.add_trace(pixel_marker(*pixel), i // cols + 1, i % cols + 1)
    fig.update_layout(height=height_per_row * rows + 40, font=FONT, margin=dict(l=10, r=10, t=40, b=10))
    fig.update_annotations(font=FONT)
    _image_axes(fig, *maps.shape[1:3])
    return fig


def class_spectra_figure(freqs: np.ndarray, spectra: np.ndarray, counts: np.ndarray, class_names: Sequence[str],
                         *, height: int = 380) -> go.Figure:
    """Class-averaged spectra (paper Fig. 4, right): spectra (N, C, K), one panel per channel."""
    N, C, K = spectra.shape
    fig = make_subplots(1, C, subplot_titles=[f"channel c{c}" for c in range(C)], shared_yaxes=True)
    for c in range(C):
        for n in range(N):
            if counts[n] == 0:
                continue
            name = class_names[n] if n < len(class_names) else f"class {n}"
            colour = PALETTE[n % len(PALETTE)] if n else "#777777"
            fig.add_trace(go.Scatter(x=freqs, y=spectra[n, c], mode="lines", name=f"{n}: {name}", legendgroup=str(n),
                                     showlegend=c == 0, line=dict(width=3, color=colour,
                                                                  dash="dot" if n == 0 else "solid")), 1, c + 1)
        fig.update_xaxes(title_text="frequency (cycles per step)", row=1, col=c + 1)
    fig.update_yaxes(title_text="mean |rfft|", row=1, col=1)
    fig.update_layout(height=height, font=FONT, margin=dict(l=10, r=10, t=40, b=10))
    fig.update_annotations(font=FONT)
    return fig


def wavelength_histogram(lam: np.ndarray, null_lam: np.ndarray | None, cut_px: float, *, height: int = 340) -> go.Figure:
    """Distribution of finite Hilbert wavelengths (pixels), with the shuffled-pixel null and the cut."""
    top = 24.0
    bins = dict(start=0, end=top, size=0.25)
    fig = go.Figure()
    for arr, name, colour in ((lam, "model", "#0072B2"), (null_lam, "pixels shuffled", "#999999")):
        if arr is None:
            continue
        v = arr[np.isfinite(arr)]
        fig.add_trace(go.Histogram(x=np.minimum(v, top), xbins=bins, histnorm="probability", name=name,
                                   marker_color=colour, opacity=0.7))
    fig.add_vline(x=cut_px, line=dict(color="#D55E00", width=3, dash="dash"),
                  annotation_text=f"λ = {cut_px:g} px", annotation_font=FONT)
    fig.update_layout(barmode="overlay", height=height, font=FONT, margin=dict(l=10, r=10, t=30, b=10),
                      xaxis_title=f"wavelength λ (pixels; ≥ {top:g} piled at {top:g})", yaxis_title="share of points")
    return fig


def erf_figure(steps: np.ndarray, maps: np.ndarray, radius: np.ndarray, pixel: tuple[int, int], *,
               height_per_row: int = 300) -> go.Figure:
    """Effective receptive field maps (S, H, W) (|∂ logit / ∂ input|, max 1) after each of `steps`."""
    titles = [f"after {int(s)} step{'s' if s != 1 else ''}: r90 = {r:.1f} px" if s else f"r90 = {r:.1f} px"
              for s, r in zip(steps, radius)]
    return maps_figure(maps, titles, colorscale="Hot", zmin=0, zmax=1, cols=min(len(maps), 3),
                       height_per_row=height_per_row, colorbar_title="|∂logit/∂x|", pixel=pixel)


def erf_radius_figure(steps: np.ndarray, radius: np.ndarray, *, height: int = 300) -> go.Figure:
    fig = go.Figure(go.Scatter(x=steps, y=radius, mode="lines+markers", line=dict(width=3), marker=dict(size=10)))
    fig.update_layout(height=height, font=FONT, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="steps t",
                      yaxis_title="radius holding 90 % of the gradient (px)")
    return fig


# ----------------------------------------------------------------------------- compare

@dataclass
class ComparePanel:
    """One model's column: title; frames (F, H, W, 3) uint8 of one hidden channel on its own
    symmetric scale, as (F, H, W) uint8 indices into `palette()` or (F, H, W, 3) RGB (F = 1 for a
    model without time); steps (F,) the step each frame shows."""

    title: str
    frames: np.ndarray
    steps: np.ndarray

    def uri(self, f: int) -> str:
        fr = self.frames[f]
        return png_uri(fr) if fr.ndim == 3 else png_uri(fr, palette())


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
    fig = make_subplots(1, M, subplot_titles=[p.title for p in panels], horizontal_spacing=0.02)
    for i, p in enumerate(panels):
        fig.add_trace(go.Image(source=p.uri(0), hoverinfo="skip"), 1, i + 1)
    timed = [i for i, p in enumerate(panels) if len(p.frames) > 1]
    F = max((len(panels[i].frames) for i in timed), default=1)
    frames = []
    for f in range(F):
        data = [go.Image(source=panels[i].uri(f)) for i in timed]
        frames.append(go.Frame(data=data, traces=timed, name=f"{(f + 1) / F:.0%}"))
    fig.frames = frames
    fig.update_layout(height=height, font=FONT, margin=dict(l=10, r=10, t=50, b=10), dragmode=False,
                      **_play_controls([fr.name for fr in frames], frame_ms, "share of each run: "))
    fig.update_annotations(font=FONT)
    _image_axes(fig, *panels[0].frames.shape[1:3])
    if F == 1 or not timed:
        fig.layout.updatemenus, fig.layout.sliders = (), ()
    return fig


def prediction_row_figure(image: np.ndarray, preds: Sequence[tuple[str, np.ndarray]], truth: np.ndarray | None,
                          class_names: Sequence[str], *, height: int = 380) -> go.Figure:
    """Input, each model's prediction and the true mask in one row, with a class legend."""
    panels = [("input", grey_rgb(image))] + [(t, label_rgb(p)) for t, p in preds]
    if truth is not None:
        panels.append(("true mask", label_rgb(truth)))
    fig = make_subplots(1, len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.02)
    for i, (_, rgb) in enumerate(panels):
        fig.add_trace(go.Image(source=png_uri(rgb), hoverinfo="skip"), 1, i + 1)
    present = set(np.unique(truth)) if truth is not None else set()
    for _, p in preds:
        present |= set(np.unique(p))
    for n in sorted(present):
        name = class_names[n] if n < len(class_names) else f"class {n}"
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{n}: {name}",
                                 marker=dict(size=16, symbol="square", color=PALETTE[n % len(PALETTE)],
                                             line=dict(width=1, color="#888"))))
    fig.update_layout(height=height, font=FONT, margin=dict(l=10, r=10, t=40, b=10), dragmode=False,
                      legend=dict(orientation="h", y=-0.02, yanchor="top"))
    fig.update_annotations(font=FONT)
    _image_axes(fig, *image.shape[:2])
    return fig


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
