"""Measure the waves in a recurrent model's hidden sequence (SPEC §10).

Units used throughout (each function repeats what it returns):

- time is counted in **steps** of the recurrence (one step of the NWM is Δt = 0.1 units of its ODE time);
- frequencies are **cycles per step**: rfft bin k of a T-step series is f_k = k / T (k = 0 … K − 1,
  K = T // 2 + 1, so the highest is 0.5, the Nyquist frequency); `rfft_freqs(T, dt)` converts to
  cycles per unit time f_k / Δt;
- space is counted in **pixels**; phases in **radians**; a phase gradient in radians per pixel;
- a **wavelength** λ = 2π / |∇φ| is in pixels. On a pixel grid the shortest wave along an axis has
  λ = 2 px (a phase step of π per pixel), the grid's Nyquist wavelength: uncorrelated noise piles
  up there. `long_wavelength_share` therefore takes its threshold in **units of that Nyquist
  wavelength** (threshold 1.5 ⇒ λ > 3 px), which puts the paper's "peak at 1 due to discretisation"
  at 1 and its threshold of 1.5 just above it;
- a **speed** |∂φ/∂t| / |∇φ| is in pixels per step.

Hidden sequences are (T, C, H, W) for one image or (B, T, C, H, W) for a batch, torch or numpy.
The recurrences of the NWM and the ConvLSTM couple neighbours with circular padding, so the hidden
field lives on a torus: spatial differences wrap around the edges here too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.signal
import torch

from .data.mnist import MASK_LEVEL  # grey foreground: MNIST's mask level
from .inputs import INK_LEVEL
from .models import is_recurrent

NYQUIST_WAVELENGTH_PX = 2.0  # the shortest wavelength a pixel grid carries along an axis
AMPLITUDE_FLOOR = 1e-3  # analytic amplitude below this fraction of its maximum: no defined phase


def as_numpy(a: torch.Tensor | np.ndarray) -> np.ndarray:
    """A float32 numpy view/copy of a tensor or array (detached, on the CPU)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().to("cpu", torch.float32).numpy()
    return np.asarray(a, dtype=np.float32)


def _batched(hidden: torch.Tensor | np.ndarray) -> np.ndarray:
    """(T, C, H, W) or (B, T, C, H, W) → (B, T, C, H, W) float32."""
    h = as_numpy(hidden)
    if h.ndim == 4:
        h = h[None]
    if h.ndim != 5:
        raise ValueError(f"hidden must be (T, C, H, W) or (B, T, C, H, W), got shape {h.shape}")
    return h


# ------------------------------------------------------------------------------------ spectra

def rfft_freqs(T: int, dt: float | None = None) -> np.ndarray:
    """(K,) bin frequencies f_k = k / T in cycles per step, or k / (T·Δt) cycles per unit time."""
    f = np.fft.rfftfreq(T)
    return f if dt is None else f / dt


def pixel_spectra(hidden: torch.Tensor | np.ndarray) -> np.ndarray:
    """|rfft(y(t) − mean_t y)| along time for every pixel and channel (SPEC §10).

    (T, C, H, W) → (K, C, H, W); (B, T, C, H, W) → (B, K, C, H, W). Bin k is k / T cycles per step;
    bin 0 is 0 because the mean is removed.
    """
    h = as_numpy(hidden)
    axis = h.ndim - 4  # the time axis
    return np.abs(np.fft.rfft(h - h.mean(axis=axis, keepdims=True), axis=axis)).astype(np.float32)


def frequency_bin_maps(hidden: torch.Tensor | np.ndarray, bins: Sequence[int]) -> np.ndarray:
    """Spectral magnitude of every pixel at chosen rfft bins (paper Fig. 4, left).

    hidden (T, C, H, W) → (len(bins), C, H, W); bin k is k / T cycles per step.
    """
    spec = pixel_spectra(hidden)
    K = spec.shape[0]
    bad = [b for b in bins if not 0 <= b < K]
    if bad:
        raise ValueError(f"frequency bins {bad} out of range 0–{K - 1}")
    return spec[list(bins)]


def class_spectra(hidden: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray,
                  num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean pixel spectrum of each true class over a batch (paper Fig. 4, right).

    hidden (B, T, C, H, W), masks (B, H, W) labels → spectra (N, C, K) and pixel counts (N,);
    a class with no pixels has NaN spectra. Bin k is k / T cycles per step.
    """
    spec = pixel_spectra(_batched(hidden))  # (B, K, C, H, W)
    B, K, C, H, W = spec.shape
    labels = as_numpy(masks).astype(np.int64).reshape(B, H * W)
    flat = spec.reshape(B, K, C, H * W).transpose(0, 3, 2, 1).reshape(B * H * W, C, K)  # (pixels, C, K)
    labels = labels.reshape(-1)
    counts = np.bincount(labels, minlength=num_classes)[:num_classes]
    out = np.full((num_classes, C, K), np.nan, np.float32)
    for n in range(num_classes):
        if counts[n]:
            out[n] = flat[labels == n].mean(axis=0)
    return out, counts


def model_class_spectra(model: torch.nn.Module, x: torch.Tensor, masks: torch.Tensor, num_classes: int, *,
                        batch_size: int = 8, amp: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`class_spectra` of a model's hidden sequence over a data set, batch by batch (never all of Y
    at once): x (n, in, H, W), masks (n, H, W) → spectra (N, C, K), counts (N,), each class's
    spectrum the mean over all its pixels in the set. `amp`: under bf16 autocast, for a checkpoint
    trained so (`checkpoint.trained_with_amp`)."""
    from .engine import bf16_autocast

    total, counts = None, np.zeros(num_classes, np.int64)
    with torch.inference_mode(), bf16_autocast(x.device.type, enabled=amp):
        for i in range(0, len(x), batch_size):
            Y, _ = model.forward_features(x[i: i + batch_size])
            spectra, n = class_spectra(Y.float(), masks[i: i + batch_size], num_classes)
            part = np.nan_to_num(spectra).astype(np.float64) * n[:, None, None]
            total = part if total is None else total + part
            counts += n
    mean = (total / np.maximum(counts, 1)[:, None, None]).astype(np.float32)
    mean[counts == 0] = np.nan
    return mean, counts


def readout_view(readout: torch.nn.Module, hidden: torch.Tensor, row: int, col: int) -> np.ndarray:
    """Exactly the per-pixel features a readout passes to the head: (K', C) at pixel (row, col).

    hidden (B, T, C, H, W) of one image (B = 1); `readout.time_features` gives |rfft(y)| for fft
    (no mean removed — what the model sees), the learned Linear(T → K) projection for linear, and
    one value per channel (K' = 1) for last / mean / max.
    """
    with torch.inference_mode():
        f = readout.time_features(hidden[:1])  # (1, K', C, H, W)
    return as_numpy(f[0, :, :, row, col])


# ----------------------------------------------------------------- phase, wavelength, speed

def analytic_signal(hidden: torch.Tensor | np.ndarray) -> np.ndarray:
    """a = y + i·H[y] along time, with y's temporal mean removed first (scipy.signal.hilbert).

    (T, C, H, W) → complex64 (T, C, H, W); (B, T, …) → (B, T, …).
    """
    h = as_numpy(hidden)
    axis = h.ndim - 4
    a = scipy.signal.hilbert(h - h.mean(axis=axis, keepdims=True), axis=axis)
    return a.astype(np.complex64)


def phase_maps(hidden: torch.Tensor | np.ndarray) -> np.ndarray:
    """Instantaneous phase φ = arg a in radians, (−π, π]; same shape as `hidden`."""
    return np.angle(analytic_signal(hidden)).astype(np.float32)


def _valid(a: np.ndarray) -> np.ndarray:
    """Where the analytic amplitude is large enough for its phase to mean something."""
    amp = np.abs(a)
    return amp > AMPLITUDE_FLOOR * max(float(amp.max(initial=0.0)), 1e-12)


def phase_gradient(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spatial phase gradient (∂φ/∂y, ∂φ/∂x) in radians per pixel from wrapped neighbour differences
    arg(a_{x+1} · conj(a_x)) (SPEC §10), circular like the recurrence; each the shape of `a` (…, H, W)."""
    gy = np.angle(np.roll(a, -1, axis=-2) * np.conj(a))
    gx = np.angle(np.roll(a, -1, axis=-1) * np.conj(a))
    return gy.astype(np.float32), gx.astype(np.float32)


def wavelength_from_analytic(a: np.ndarray) -> np.ndarray:
    """λ = 2π / |∇φ| in pixels (inf where the phase is flat, NaN where the amplitude is too small)."""
    gy, gx = phase_gradient(a)
    k = np.hypot(gx, gy)  # rad / px
    with np.errstate(divide="ignore"):
        lam = (2 * np.pi / k).astype(np.float32)
    ok = _valid(a)
    ok &= np.roll(ok, -1, axis=-1) & np.roll(ok, -1, axis=-2)
    lam[~ok] = np.nan
    return lam


def wavelength_maps(hidden: torch.Tensor | np.ndarray) -> np.ndarray:
    """Hilbert wavelength λ = 2π / |∇φ| in pixels per (t, c, y, x), shape of `hidden`.

    inf where neighbours share one phase (a standing or synchronous oscillation); NaN where the
    oscillation is too weak to have a phase (amplitude < 0.1 % of the largest).
    """
    return wavelength_from_analytic(analytic_signal(hidden))


def long_wavelength_share(hidden: torch.Tensor | np.ndarray, threshold: float = 1.5) -> float:
    """Share of (pixel, time) points whose Hilbert wavelength exceeds `threshold` (paper appendix).

    hidden: Tensor or ndarray (T, C, H, W) or (B, T, C, H, W). λ = 2π / |∇φ| is in pixels and
    `threshold` in units of the grid's Nyquist wavelength (2 px): the default 1.5 counts λ > 3 px.
    Points without a defined phase (amplitude < 0.1 % of the largest in their image) are left out;
    a sequence with no oscillation at all scores 0.0. Returns a float in [0, 1].
    """
    h = _batched(hidden)
    longer, counted = 0, 0
    for b in range(h.shape[0]):  # one image at a time keeps the complex arrays small
        n_long, n = _count_long(wavelength_maps(h[b]), threshold)
        longer, counted = longer + n_long, counted + n
    return longer / counted if counted else 0.0



def model_wave_share(model: torch.nn.Module, x: torch.Tensor, device: torch.device | str = "cpu",
                     max_elements: int = 30_000_000) -> float | None:
    """Mean `long_wavelength_share` of a model's hidden sequences on images x (n, in, H, W), one image
    at a time, over as many of them (at least one) as keep T·C·H·W·n ≤ `max_elements` (the probe of
    paper Fig. 10, run once an epoch). None for models without a hidden sequence (CNN, U-Net).
    Leaves the model in eval mode."""
    model.eval()
    shares = []
    with torch.no_grad():
        for i in range(len(x)):
            hidden = model.run(x[i: i + 1].to(device)).hidden  # (1, T, C, H, W) or None
            if hidden is None:
                return None
            shares.append(float(long_wavelength_share(hidden[0].float().cpu())))
            if hidden[0].numel() * (i + 2) > max_elements:
                break
    return sum(shares) / len(shares) if shares else None


@torch.no_grad()
def gate_activity(model: torch.nn.Module, x: torch.Tensor, masks: torch.Tensor) -> dict[str, list[float]] | None:
    """How alive an NWM's input-tuned oscillators are: for ω = f_ω(x) and α = f_α(x) (each ending in a
    ReLU), the share of foreground pixels (masks > 0) where each channel is above zero. x (n, in, H, W),
    masks (n, H, W) → {"omega": [C shares], "alpha": [C shares]}; a channel at 0.0 is dead on these
    images (its ReLU passes no gradient, so training cannot revive it). None for a model without
    f_ω / f_α (not an NWM) or without foreground pixels. Leaves the model in eval mode."""
    if not callable(getattr(model, "encode", None)) or not hasattr(model, "f_omega"):
        return None
    x = x.to(next(model.parameters()).device)
    fg = masks.to(x.device) > 0
    if not bool(fg.any()):
        return None
    model.eval()
    _, omega, alpha = model.encode(x)  # each (n, C, H, W)
    return {name: [float((g[:, c][fg] > 0).float().mean()) for c in range(g.shape[1])]
            for name, g in (("omega", omega), ("alpha", alpha))}


def record_wave_share(trainer, info: dict, images: int = 4) -> None:
    """A training callback's epoch step: the long-wavelength share of up to `images` validation images
    (`model_wave_share`, paper Fig. 10) into the epoch's record, so into the history and checkpoints.
    Records nothing for models without a hidden sequence."""
    share = model_wave_share(trainer.model, trainer.val_data[0][:images], trainer.device)
    if share is not None:
        info["record"]["long_wavelength_share"] = share


def _count_long(lam: np.ndarray, threshold: float) -> tuple[int, int]:
    ok = ~np.isnan(lam)
    return int((lam[ok] > float(threshold) * NYQUIST_WAVELENGTH_PX).sum()), int(ok.sum())


def share_from_analytic(a: np.ndarray, threshold: float = 1.5) -> float:
    """`long_wavelength_share` of an analytic signal a (…, H, W) already computed (the Hilbert
    transform runs along time, so shuffling pixels of `a` equals transforming shuffled pixels)."""
    n_long, n = _count_long(wavelength_from_analytic(a), threshold)
    return n_long / n if n else 0.0


def speed_maps(hidden: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Phase speed |∂φ/∂t| / |∇φ| in pixels per step, and propagation direction in radians.

    hidden (T, C, H, W) → speed (T, C, H, W), direction (T, C, H, W). ∂φ/∂t is the wrapped
    difference arg(a_{t+1} · conj(a_t)) (the last step repeats the one before). A wave travels
    along −sign(∂φ/∂t)·∇φ; its direction is atan2 of that vector's (y, x) components, with x
    pointing right and y down the image; NaN where the phase is undefined or flat.
    """
    a = analytic_signal(hidden)
    dphi = np.angle(a[1:] * np.conj(a[:-1]))
    dphi = np.concatenate([dphi, dphi[-1:]], axis=0) if len(dphi) else np.zeros_like(a.real)
    gy, gx = phase_gradient(a)
    k = np.hypot(gx, gy)
    with np.errstate(divide="ignore", invalid="ignore"):
        speed = np.abs(dphi) / k
    s = -np.sign(dphi)
    direction = np.arctan2(s * gy, s * gx)
    bad = ~_valid(a) | (k == 0)
    speed[bad] = np.nan
    direction[bad] = np.nan
    return speed.astype(np.float32), direction.astype(np.float32)


# ------------------------------------------------------------------------ shuffled-pixel null

@dataclass
class NullTest:
    """A score against its shuffled-pixel null: `null` (n,) scores of pixel-shuffled copies and
    p = (1 + #{null ≥ observed}) / (1 + n), one-sided."""

    observed: float
    null: np.ndarray
    p_value: float

    @property
    def null_mean(self) -> float:
        return float(np.mean(self.null))


def shuffle_pixels(hidden: torch.Tensor | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random permutation of pixel positions, shared by every time step and channel:
    each pixel keeps its own time series, all spatial arrangement is destroyed. Shape and dtype kept."""
    h = hidden.detach().cpu().numpy() if isinstance(hidden, torch.Tensor) else np.asarray(hidden)
    *lead, H, W = h.shape
    perm = rng.permutation(H * W)
    return h.reshape(*lead, H * W)[..., perm].reshape(h.shape)


def shuffled_null(score: Callable[[np.ndarray], float], hidden: torch.Tensor | np.ndarray,
                  n: int = 20, seed: int = 0) -> NullTest:
    """Compare `score(data)` with the scores of `n` pixel-shuffled copies (deterministic per seed).

    data: any array whose last two axes are (H, W): a hidden sequence, or its analytic signal
    (then `score=share_from_analytic` skips n Hilbert transforms).
    """
    h = hidden.detach().cpu().numpy() if isinstance(hidden, torch.Tensor) else np.asarray(hidden)
    rng = np.random.default_rng(seed)
    observed = float(score(h))
    null = np.array([score(shuffle_pixels(h, rng)) for _ in range(n)], dtype=np.float64)
    p = (1 + int((null >= observed).sum())) / (1 + n)
    return NullTest(observed, null, p)


# ------------------------------------------------------------------ effective receptive field

@dataclass
class ReceptiveField:
    """Input gradients of one pixel's logit as time runs.

    steps (S,): the step counts t; maps (S, H, W): Σ over input channels of |∂ logit / ∂x|,
    each normalised to max 1; radius (S,): pixels from the clicked pixel within which 90 % of the
    gradient mass lies; label: the class whose logit was differentiated.
    """

    steps: np.ndarray
    maps: np.ndarray
    radius: np.ndarray
    label: int


def mass_radius(grad_map: np.ndarray, row: int, col: int, mass: float = 0.9) -> float:
    """Smallest Euclidean distance (pixels) from (row, col) that encloses `mass` of the map's total."""
    H, W = grad_map.shape
    yy, xx = np.mgrid[0:H, 0:W]
    d = np.hypot(yy - row, xx - col).ravel()
    w = np.abs(grad_map).ravel()
    total = w.sum()
    if total <= 0:
        return 0.0
    order = np.argsort(d, kind="stable")
    cum = np.cumsum(w[order])
    return float(d[order][np.searchsorted(cum, mass * total)])


def held_sequence(Y: torch.Tensor, t: int) -> torch.Tensor:
    """(B, T, C, H, W) → the same shape with y_s = y_t for s > t: the waves frozen after step t."""
    T = Y.shape[1]
    return torch.cat([Y[:, :t], Y[:, t - 1: t].expand(-1, T - t, -1, -1, -1)], dim=1)


def effective_receptive_field(model, x: torch.Tensor, row: int, col: int, steps: Sequence[int] | None = None,
                              label: int | None = None) -> ReceptiveField:
    """How far the input reaches pixel (row, col) after t steps (paper Fig. 7).

    For a recurrent model, the logit of the class it predicts at the pixel is recomputed with the
    hidden sequence frozen after step t (`held_sequence`: y_s = y_t for s > t, so only the input
    that reached the pixel by step t counts) and differentiated with respect to the image
    x (1, in, H, W). Every t runs as one batch element, so one backward pass serves all; the head
    is a per-pixel MLP, so it runs on the clicked pixel alone. `label` defaults to the predicted
    class. A model without a time axis (CNN, U-Net) gives one map, at step 0.
    """
    x = x[:1].detach()
    if label is None:
        with torch.inference_mode():
            label = int(model(x)[0, :, row, col].argmax())
    recurrent = is_recurrent(model)
    T = model.config.T if recurrent else 0
    if recurrent:
        steps = sorted({int(s) for s in (steps or default_erf_steps(T)) if 1 <= int(s) <= T})
        if not steps:
            raise ValueError(f"steps must lie in 1–{T}")
    else:
        steps = [0]
    xs = x.repeat(len(steps), 1, 1, 1).requires_grad_(True)  # (S, in, H, W): one copy per t
    with torch.enable_grad():
        if recurrent:
            Y, _ = model.forward_features(xs)  # (S, T, C, H, W)
            Y = Y[..., row: row + 1, col: col + 1]  # (S, T, C, 1, 1): the head is per pixel
            held = torch.cat([held_sequence(Y[i: i + 1], t) for i, t in enumerate(steps)])
            logit = model.forward_head(held)[:, label, 0, 0]  # (S,)
        else:
            logit = model(xs)[:, label, row, col]
        (grad,) = torch.autograd.grad(logit.sum(), xs)
    maps = grad.abs().sum(1).numpy()  # (S, H, W)
    radius = np.array([mass_radius(m, row, col) for m in maps])
    peak = maps.reshape(len(steps), -1).max(1).clip(min=1e-30)
    return ReceptiveField(np.array(steps), (maps / peak[:, None, None]).astype(np.float32), radius, label)


def default_erf_steps(T: int, n: int = 6) -> list[int]:
    """About n step counts from 1 to T, spaced geometrically (the receptive field grows fastest early)."""
    return sorted({int(round(s)) for s in np.geomspace(1, T, n)})


# ----------------------------------------------------------------------- page-level summaries

def strongest_bins(hidden: torch.Tensor | np.ndarray, n: int = 6) -> list[int]:
    """The n rfft bins (excluding 0) with the most mean spectral magnitude over all pixels and
    channels, ascending. hidden (T, C, H, W)."""
    spec = pixel_spectra(hidden)  # (K, C, H, W)
    power = spec.reshape(spec.shape[0], -1).mean(1)
    power[0] = -np.inf
    top = np.argsort(power)[::-1][: min(n, len(power) - 1)]
    return sorted(int(k) for k in top)


def focus_pixel(pred: np.ndarray) -> tuple[int, int]:
    """A pixel worth looking at first: the predicted-foreground pixel nearest the foreground's
    centroid (the image centre when everything is background). pred (H, W) labels → (row, col)."""
    H, W = pred.shape
    rr, cc = np.nonzero(pred != 0)
    if not len(rr):
        return H // 2, W // 2
    i = int(np.argmin((rr - rr.mean()) ** 2 + (cc - cc.mean()) ** 2))
    return int(rr[i]), int(cc[i])


@dataclass(frozen=True)
class ShapeReading:
    """What a model made of one shape of the input: the commonest non-background class over the
    shape's foreground pixels (0 when all are background), its share of them, how many there are,
    and where the shape is."""

    label: int
    share: float
    pixels: int
    centre: tuple[float, float]  # (row, col)


def shape_foreground(image: np.ndarray) -> np.ndarray:
    """The pixels a data set's true mask calls foreground, found from the image alone.

    image (H, W) grey or (H, W, 3) RGB uint8 → (H, W) bool. Grey: brighter than MASK_LEVEL of full
    scale, MNIST's mask (upsampled value > 0.5; the uint8 image stores a value of exactly 0.5 as 128,
    so those few pixels, about 1 in 1,000 of a digit's, count here and not in the mask); Polygons
    and Multi-MNIST images are binary 0 / 255, so the same test is their mask. RGB (Tetrominoes,
    pieces on black): any channel brighter than `inputs.INK_LEVEL`, the app's ink level, which keeps
    an uploaded JPEG's near-black halo out; it misses a piece's border ring that wraps to that dark
    (about 1 image in 1,000; the piece still reads as one, `shape_parts`) and pieces that dark all
    through (about 1 piece in 23,000).
    """
    if image.ndim == 2:
        return image.astype(np.float32) / 255 > MASK_LEVEL
    return image.max(axis=-1) > INK_LEVEL


def _piece_colour_keys(image: np.ndarray, blobs: np.ndarray, min_pixels: float) -> np.ndarray:
    """Tell touching pieces apart by colour: (H, W) int keys, equal within one piece.

    image (H, W, 3) uint8; blobs (H, W) labels of the foreground's parts (0: background). A piece
    colour fills some 3×3 patch (a 7-px Tetrominoes square's inside does, its 1-px border ring does
    not) and covers at least `min_pixels` (a speck's colour is no piece). Each pixel of a blob holding
    a piece colour takes the colour of the nearest piece-colour pixel of the blob (a ring pixel is
    1 px from its own square's inside, at least 2 px from a touching piece's); a blob without one
    (an upload's JPEG noise leaves no patch of one exact colour) keeps one key, −its label.
    """
    from scipy import ndimage

    img = image.astype(np.int64)
    code = (img[..., 0] << 16) | (img[..., 1] << 8) | img[..., 2]  # (H, W) one int per colour
    H, W = code.shape
    padded = np.pad(code, 1, constant_values=-1)
    flat = np.ones((H, W), bool)  # the pixel's 3×3 neighbourhood is one colour
    for dr in range(3):
        for dc in range(3):
            flat &= padded[dr: dr + H, dc: dc + W] == code
    fg = blobs > 0
    colours, counts = np.unique(code[fg], return_counts=True)
    piece = colours[np.isin(colours, code[fg & flat]) & (counts >= min_pixels)]
    seeds = fg & np.isin(code, piece)
    keys = -blobs
    for b, box in enumerate(ndimage.find_objects(blobs), start=1):
        inside = blobs[box] == b
        if not (seeds[box] & inside).any():
            continue
        _, (rr, cc) = ndimage.distance_transform_edt(~(seeds[box] & inside), return_indices=True)
        keys[box][inside] = code[box][rr, cc][inside]
    return keys


def shape_parts(image: np.ndarray, min_pixels: float = 0.0) -> np.ndarray:
    """The shapes of an input image: (H, W) int labels 1 … k, 0 between them.

    Grey (H, W): the 8-connected parts of the ink (brighter than `inputs.INK_LEVEL`, so a faint
    stroke between two bright parts of a digit keeps them one shape). RGB (H, W, 3): the 4-connected
    parts of the foreground (a Tetromino's squares join edge to edge), split by colour where pieces
    touch (`_piece_colour_keys`; colours covering under `min_pixels` are no piece); the parts of one
    piece colour up to 2 px apart are one piece, since a Tetromino's border ring can wrap to black
    between its squares. Touching shapes of one colour cannot be told apart from the image and make
    one shape: touching Polygons and Multi-MNIST digits (all white; about 1 image in 12 of each) and
    touching Tetrominoes of exactly the same colour (1 pair in 16 million).
    """
    from scipy import ndimage

    box = np.ones((3, 3), bool)
    if image.ndim == 2:
        return ndimage.label(image > INK_LEVEL, structure=box)[0]
    fg = shape_foreground(image)
    blobs = ndimage.label(fg)[0]
    keys = _piece_colour_keys(image, blobs, min_pixels)
    parts, n = np.zeros(fg.shape, np.int64), 0
    for key in np.unique(keys[fg]):
        same = fg & (keys == key)
        lab, k = ndimage.label(ndimage.binary_dilation(same, box))  # bridges gaps of ≤ 2 px
        parts[same] = lab[same] + n
        n += k
    return parts


def shape_readings(image: np.ndarray, pred: np.ndarray, *, min_share: float = 0.05) -> list[ShapeReading]:
    """One reading per shape of the input (`shape_parts`), top to bottom, left to right. image
    (H, W) grey or (H, W, 3) RGB uint8; pred (H, W) labels.

    A shape's pixels are those its data set's mask would call foreground (`shape_foreground`), so
    the share is over the pixels the model was trained to label. Shapes under `min_share` of all
    the foreground pixels (specks) are left out.
    """
    fg = shape_foreground(image)
    min_pixels = min_share * fg.sum()
    parts = shape_parts(image, min_pixels)
    out = []
    for p in range(1, int(parts.max()) + 1):
        part = (parts == p) & fg
        n = int(part.sum())
        if n == 0 or n < min_pixels:
            continue
        counts = np.bincount(pred[part].ravel(), minlength=2)
        counts[0] = 0
        label = int(counts.argmax()) if counts.any() else 0
        share = counts[label] / n if label else float((pred[part] == 0).mean())
        rr, cc = np.nonzero(part)
        out.append(ShapeReading(label, float(share), n, (float(rr.mean()), float(cc.mean()))))
    return sorted(out, key=lambda s: (round(s.centre[0] / 8), s.centre[1]))


@dataclass
class WaveStats:
    """Hilbert-wavelength summary of one image's hidden sequence.

    wavelength (T, C, H, W) pixels; share: long-wavelength share; cut_px: the wavelength it counts
    above (threshold × 2 px); null: the share against pixel-shuffled copies; null_wavelength: the
    wavelengths of one shuffled copy (for histograms).
    """

    wavelength: np.ndarray
    share: float
    cut_px: float
    null: NullTest
    null_wavelength: np.ndarray


def wave_statistics(hidden: torch.Tensor | np.ndarray, threshold: float = 1.5, n_null: int = 19,
                    seed: int = 0, null_steps: int = 25) -> WaveStats:
    """Wavelength maps, the long-wavelength share and its shuffled-pixel null for (T, C, H, W).

    The null test (observed and shuffled scores alike) uses at most `null_steps` evenly spaced time
    steps of the analytic signal, which keeps 19 shuffles well under a second; `share` uses all.
    """
    a = analytic_signal(hidden)
    lam = wavelength_from_analytic(a)
    n_long, n = _count_long(lam, threshold)
    sub = a[np.unique(np.linspace(0, len(a) - 1, min(null_steps, len(a))).round().astype(int))]
    null = shuffled_null(lambda z: share_from_analytic(z, threshold), sub, n=n_null, seed=seed)
    shuffled = shuffle_pixels(sub, np.random.default_rng(seed + 1))
    return WaveStats(lam, n_long / n if n else 0.0, threshold * NYQUIST_WAVELENGTH_PX, null,
                     wavelength_from_analytic(shuffled))
