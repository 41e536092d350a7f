"""Drum lab: the wave-equation RNN of SPEC §1 on any drum shape, and its exact spectrum.

Units, used everywhere in this module:
- space: one grid step (pixel) is one unit of length;
- time: one RNN step advances simulation time by ``dt``, so step ``t`` is time ``t·dt``;
- ``c`` is the wave speed in pixels per unit of simulation time;
- frequencies ``f`` are in cycles per unit of simulation time ("Hz of simulation time");
  angular frequencies are ``ω = 2π f``.

The RNN (paper eq. 6–8) is the Verlet / leapfrog scheme on a boolean mask ``M`` of free pixels::

    v_{t+1} = v_t + dt · c² · (Δ * u_t)
    u_{t+1} = (u_t + dt · v_{t+1}) ⊙ M

with the five-point stencil ``Δ``. Eliminating ``v`` gives the same scheme in one variable,
``u_{t+1} = (2 − (c·dt)² K) u_t − u_{t−1}`` on the free pixels, where ``K`` is the sparse
Dirichlet Laplacian ``−Δ`` restricted to ``M``. The batched fast path (:func:`simulate`) steps that
form for all drums at once with one sparse mat-vec per step; :func:`simulate_reference` is the
literal per-drum loop, and the tests check one against the other.

Shapes: ``D`` drums, ``H, W`` grid height and width, ``T`` steps, ``F`` recorded frames,
``N`` free pixels, ``k`` modes, ``K = T // 2 + 1`` frequency bins.
"""
from __future__ import annotations

import io
import math
import wave
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp
import scipy.sparse.linalg as spla

STABILITY_LIMIT = 1.0 / math.sqrt(2.0)  # c·dt must stay below this (max eigenvalue of −Δ < 8)
MIN_FREE_PIXELS = 9  # a drum with fewer free pixels has too few modes to be worth a spectrum


class DrumError(ValueError):
    """A problem with a drum or a setting that a user can cause (said in one line)."""


# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------

def square_mask(side: int) -> np.ndarray:
    """Square drum of side ``L`` with the clamped lines at grid indices 0 and L (paper Fig. 2).

    Returns (L+1, L+1) bool with the (L−1)² free pixels at indices 1 … L−1.
    """
    if side < 2:
        raise DrumError(f"square side must be at least 2, got {side}")
    mask = np.zeros((side + 1, side + 1), dtype=bool)
    mask[1:-1, 1:-1] = True
    return mask


def disk_mask(size: int) -> np.ndarray:
    """Round drum filling a (size, size) grid: free pixels strictly inside radius (size−1)/2."""
    r = (size - 1) / 2.0
    y, x = np.mgrid[:size, :size]
    return (x - r) ** 2 + (y - r) ** 2 < r**2


def polygon_mask(vertices: Sequence[tuple[float, float]], scale: int) -> np.ndarray:
    """Rasterise a polygon with integer vertices (in tile units) on a grid of ``scale`` nodes per unit.

    A node is free when it lies strictly inside the polygon; nodes on an edge are clamped, so
    edges along the axes or the diagonals fall exactly on clamped nodes. Row 0 is the top (largest y).
    Returns (ymax·scale + 1, xmax·scale + 1) bool.
    """
    v = np.asarray(vertices, dtype=np.int64) * int(scale)  # (V, 2) integer node coordinates
    v -= v.min(axis=0)
    w, h = v.max(axis=0) + 1
    py, px = np.mgrid[h - 1:-1:-1, :w]  # (H, W): row 0 is the top
    a, b = v, np.roll(v, -1, axis=0)  # edges a → b
    on_edge = np.zeros(px.shape, dtype=bool)
    crossings = np.zeros(px.shape, dtype=np.int64)
    for (x1, y1), (x2, y2) in zip(a, b):
        cross = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
        within = (np.minimum(x1, x2) <= px) & (px <= max(x1, x2)) & (min(y1, y2) <= py) & (py <= max(y1, y2))
        on_edge |= (cross == 0) & within
        # even-odd rule with a ray towards +x; exact in integers: x_hit > px  ⇔  cross·sign(y2−y1) > 0
        spans = (y1 > py) != (y2 > py)
        crossings += spans & (cross * np.sign(y2 - y1) > 0)
    return (crossings % 2 == 1) & ~on_edge


# The Gordon–Webb–Wolpert isospectral pair as drawn by Buser–Conway–Doyle–Semmler: each drum is
# seven congruent right isosceles triangles (legs 1, area 3.5) glued in a different order.
GWW_A = ((2, 0), (3, 1), (3, 2), (1, 2), (1, 3), (0, 2), (1, 1), (2, 1))
GWW_B = ((2, 0), (2, 1), (3, 1), (2, 2), (1, 2), (1, 3), (0, 3), (0, 2))
# Same seven triangles, same area, not isospectral: a 2×2 square with one corner triangle cut off.
NOTCHED_SQUARE = ((0, 0), (2, 0), (2, 1), (1, 2), (0, 2))
L_SHAPE = ((0, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2))


def _tiles_scale(size: int, extent: int) -> int:
    scale = (size - 1) // extent
    if scale < 1:
        raise DrumError(f"size {size} is too small for this shape (need at least {extent + 1})")
    return scale


SHAPES: dict[str, Callable[[int], np.ndarray]] = {
    "square": lambda size: square_mask(size - 1),
    "circle": disk_mask,
    "L-shape": lambda size: polygon_mask(L_SHAPE, _tiles_scale(size, 2)),
    "GWW drum A": lambda size: polygon_mask(GWW_A, _tiles_scale(size, 3)),
    "GWW drum B": lambda size: polygon_mask(GWW_B, _tiles_scale(size, 3)),
    "notched square": lambda size: polygon_mask(NOTCHED_SQUARE, _tiles_scale(size, 2)),
}


def make_drum(name: str, size: int = 48) -> np.ndarray:
    """A named drum fitting in a (size, size) grid → (H, W) bool mask of free pixels."""
    if name not in SHAPES:
        raise DrumError(f"unknown drum {name!r}; choose one of: {', '.join(SHAPES)}")
    return SHAPES[name](size)


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Make any boolean image a drum: fill holes, keep the largest 4-connected piece, clamp the border.

    The five-point stencil couples only 4-neighbours, so pieces joined by a corner vibrate separately.
    (H, W) bool → (H, W) bool. Raises DrumError when fewer than MIN_FREE_PIXELS remain.
    """
    m = ndi.binary_fill_holes(np.asarray(mask, dtype=bool))
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = False  # the grid's edge is outside the drum
    labels, n = ndi.label(m)  # default structure: 4-connectivity
    if n == 0:
        raise DrumError("the drum is empty: draw a closed shape")
    sizes = np.bincount(labels.ravel())[1:]
    m = labels == 1 + int(np.argmax(sizes))
    if m.sum() < MIN_FREE_PIXELS:
        raise DrumError(f"the drum is too small: {int(m.sum())} free pixels, need at least {MIN_FREE_PIXELS}")
    return m


def mask_from_drawing(alpha: np.ndarray, size: int = 64) -> np.ndarray:
    """A drawing's opacity (h, w) (any numeric type; > half its max counts as ink) → (size, size) drum.

    An outline is filled (see clean_mask).
    """
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim != 2 or a.size == 0 or a.max() <= 0:
        raise DrumError("the drawing is empty: draw a closed shape")
    ink = (a > 0.5 * a.max()).astype(np.uint8)
    h, w = ink.shape
    # a cell is ink when any drawn pixel falls in it, so thin strokes still close an outline
    ink = np.maximum.reduceat(ink, np.arange(size) * h // size, axis=0)
    ink = np.maximum.reduceat(ink, np.arange(size) * w // size, axis=1)  # (size, size)
    return clean_mask(ink)


def centre_point(mask: np.ndarray) -> tuple[int, int]:
    """The free pixel farthest from the clamped boundary (the centre of a square or a disk)."""
    dist = ndi.distance_transform_edt(mask)
    r, c = np.unravel_index(int(np.argmax(dist)), mask.shape)
    return int(r), int(c)


def pad_masks(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Stack D masks of different sizes into (D, H, W) bool, padding with clamped pixels (bottom/right)."""
    h = max(m.shape[0] for m in masks)
    w = max(m.shape[1] for m in masks)
    out = np.zeros((len(masks), h, w), dtype=bool)
    for d, m in enumerate(masks):
        out[d, : m.shape[0], : m.shape[1]] = m
    return out


# ---------------------------------------------------------------------------------------------
# Ground truth: the Dirichlet Laplacian of a mask
# ---------------------------------------------------------------------------------------------

def check_stability(c: float, dt: float) -> None:
    """Raise DrumError unless 0 < c·dt < 1/√2 (leapfrog on the five-point stencil, SPEC §1)."""
    if not (c > 0 and dt > 0):
        raise DrumError(f"c and dt must be positive, got c={c}, dt={dt}")
    if c * dt >= STABILITY_LIMIT:
        raise DrumError(
            f"unstable: c·dt = {c * dt:.4g} ≥ 1/√2 ≈ {STABILITY_LIMIT:.4f}; use dt < {STABILITY_LIMIT / c:.4g}"
        )


def _numbering(mask: np.ndarray) -> np.ndarray:
    """Index of each free pixel in C order, −1 elsewhere; same shape as mask."""
    number = np.full(mask.shape, -1, dtype=np.int64)
    number[mask] = np.arange(int(mask.sum()))
    return number


def dirichlet_laplacian(mask: np.ndarray) -> sp.csr_array:
    """−Δ on the free pixels of a (..., H, W) mask, zero (clamped) outside: (N, N) sparse, SPD.

    Diagonal 4, −1 between 4-neighbours that are both free; free pixels numbered in C order
    (the order of ``u[mask]``). Leading axes are separate drums (a block-diagonal matrix).
    """
    mask = np.asarray(mask, dtype=bool)
    number = _numbering(mask)
    n = int(mask.sum())
    rows, cols = [], []
    for axis in (-2, -1):  # each undirected edge once: pixel → its next pixel along the axis
        a = number.take(np.arange(mask.shape[axis] - 1), axis=axis)
        b = number.take(np.arange(1, mask.shape[axis]), axis=axis)
        both = (a >= 0) & (b >= 0)
        rows.append(a[both])
        cols.append(b[both])
    i, j = np.concatenate(rows), np.concatenate(cols)
    diag = np.arange(n)
    data = np.concatenate([np.full(2 * i.size, -1.0), np.full(n, 4.0)])
    return sp.csr_array((data, (np.concatenate([i, j, diag]), np.concatenate([j, i, diag]))), shape=(n, n))


def continuum_hz(eigenvalues: np.ndarray, c: float) -> np.ndarray:
    """f = c·√λ / 2π: the frequency a mode of −Δ-eigenvalue λ has under the exact time evolution."""
    return c * np.sqrt(np.asarray(eigenvalues, dtype=np.float64)) / (2 * np.pi)


def leapfrog_hz(eigenvalues: np.ndarray, c: float, dt: float) -> np.ndarray:
    """The frequency leapfrog actually produces: ω_d = (2/dt)·arcsin(c·√λ·dt/2), f = ω_d / 2π."""
    check_stability(c, dt)
    omega = c * np.sqrt(np.asarray(eigenvalues, dtype=np.float64))
    return (2.0 / dt) * np.arcsin(omega * dt / 2.0) / (2 * np.pi)


@dataclass(frozen=True)
class DrumModes:
    """The lowest k normal modes of a drum (eigenpairs of −Δ with grid spacing 1)."""

    eigenvalues: np.ndarray  # (k,) ascending
    shapes: np.ndarray  # (k, H, W) unit l2 norm, zero outside the drum, largest |value| positive

    def continuum_hz(self, c: float) -> np.ndarray:
        return continuum_hz(self.eigenvalues, c)

    def leapfrog_hz(self, c: float, dt: float) -> np.ndarray:
        return leapfrog_hz(self.eigenvalues, c, dt)

    def weights(self, strike: tuple[int, int], probe: tuple[int, int] | None = None) -> np.ndarray:
        """Amplitude of each mode in the probe trace after a unit strike: φ_k(strike)·φ_k(probe) → (k,)."""
        probe = strike if probe is None else probe
        return self.shapes[:, strike[0], strike[1]] * self.shapes[:, probe[0], probe[1]]

    def projections(self, u0: np.ndarray, probe: tuple[int, int]) -> np.ndarray:
        """Amplitude of each mode in the probe trace after displacing the drum by u0 (H, W):
        ⟨φ_k, u0⟩·φ_k(probe) → (k,) (for a unit point strike, `weights`)."""
        return np.tensordot(self.shapes, u0, axes=2) * self.shapes[:, probe[0], probe[1]]


def drum_modes(mask: np.ndarray, k: int = 10) -> DrumModes:
    """Lowest k eigenpairs of the Dirichlet Laplacian of a (H, W) mask (shift-invert about 0)."""
    mask = np.asarray(mask, dtype=bool)
    lap = dirichlet_laplacian(mask)
    n = lap.shape[0]
    if n < MIN_FREE_PIXELS:
        raise DrumError(f"the drum is too small: {n} free pixels, need at least {MIN_FREE_PIXELS}")
    k = min(k, n)
    if n <= max(64, 2 * k + 1):  # tiny drums: eigsh needs k < n, and dense is quick
        vals, vecs = np.linalg.eigh(lap.toarray())
        vals, vecs = vals[:k], vecs[:, :k]
    else:
        vals, vecs = spla.eigsh(lap.tocsc(), k=k, sigma=0.0, which="LM")
        order = np.argsort(vals)
        vals, vecs = vals[order], vecs[:, order]
    peak = np.abs(vecs).argmax(axis=0)
    vecs = vecs * np.sign(vecs[peak, np.arange(vecs.shape[1])])  # a fixed sign per mode
    shapes = np.zeros((vecs.shape[1], *mask.shape))
    shapes[:, mask] = vecs.T  # (k, N) → (k, H, W)
    return DrumModes(eigenvalues=vals, shapes=shapes)


def square_eigenvalues(side: int, k: int) -> np.ndarray:
    """Closed form for the square of side L (SPEC §1): 4 sin²(mπ/2L) + 4 sin²(nπ/2L), lowest k → (k,)."""
    m = np.arange(1, side)
    s = 4 * np.sin(m * np.pi / (2 * side)) ** 2
    return np.sort((s[:, None] + s[None, :]).ravel())[:k]


# ---------------------------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WaveConfig:
    """Time stepping of the wave RNN (units in the module docstring)."""

    c: float = 1.0  # wave speed, pixels per unit of simulation time
    dt: float = 0.1  # simulation time per step
    steps: int = 40_000  # number of RNN steps T

    def __post_init__(self):
        check_stability(self.c, self.dt)
        if self.steps < 1:
            raise DrumError(f"steps must be at least 1, got {self.steps}")

    @property
    def duration(self) -> float:
        """Simulated time T·dt."""
        return self.steps * self.dt

    @property
    def bin_hz(self) -> float:
        """FFT bin width of a T-step trace: 1 / (T·dt)."""
        return 1.0 / self.duration


@dataclass(frozen=True)
class WaveRun:
    """What a simulation recorded."""

    config: WaveConfig
    traces: np.ndarray | None  # (T, D): u at each drum's probe after steps 1 … T
    frames: np.ndarray | None  # (F, D, H, W): u at steps 0, e, 2e, … (e = frame_every), or at `frame_steps`
    frame_every: int | None
    frame_steps: np.ndarray | None = None  # (F,) the step of each frame


def strike_field(masks: np.ndarray, points: Sequence[tuple[int, int]]) -> np.ndarray:
    """Unit displacement at one point per drum: (D, H, W) masks, D points (row, col) → (D, H, W) float."""
    masks = np.asarray(masks, dtype=bool)
    u0 = np.zeros(masks.shape)
    for d, (r, c) in enumerate(points):
        if not (0 <= r < masks.shape[1] and 0 <= c < masks.shape[2] and masks[d, r, c]):
            raise DrumError(f"strike point ({r}, {c}) is outside drum {d}")
        u0[d, r, c] = 1.0
    return u0


def bump_field(mask: np.ndarray, centre: tuple[int, int], width: float = 2.0) -> np.ndarray:
    """A smooth strike: a Gaussian bump exp(−d²/(2·width²)) of height 1 at `centre`, on the free
    pixels of a (H, W) mask → (H, W). A point strike (`strike_field`) excites every grid mode up to
    the checkerboard; a bump a few pixels wide excites the low modes that make a drum's sound, so
    the field shows the strike spreading, reflecting and settling."""
    mask = np.asarray(mask, dtype=bool)
    r, c = centre
    if not (0 <= r < mask.shape[0] and 0 <= c < mask.shape[1] and mask[r, c]):
        raise DrumError(f"strike point ({r}, {c}) is outside the drum")
    rr, cc = np.mgrid[: mask.shape[0], : mask.shape[1]]
    return np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * width**2)) * mask


def frame_schedule(steps: int, frames: int, early_steps: int, early_share: float = 0.7) -> np.ndarray:
    """Steps to record for an animation: `early_share` of the frames evenly over the first
    `early_steps` (the strike spreading and reflecting: every frame a small move), the rest spread
    geometrically up to `steps` (the settling into standing waves) → sorted unique steps, from 0."""
    early_steps = max(1, min(early_steps, steps))
    n_early = max(2, int(frames * early_share))
    early = np.linspace(0, early_steps, n_early)
    late = np.geomspace(early_steps, steps, max(2, frames - n_early + 1))[1:] if steps > early_steps else []
    return np.unique(np.round(np.concatenate([early, late])).astype(np.int64))


def _as_batch(masks: np.ndarray, u0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks, dtype=bool)
    u0 = np.asarray(u0, dtype=np.float64)
    if masks.ndim == 2:
        masks = masks[None]
    if u0.ndim == 2:
        u0 = u0[None]
    if masks.shape != u0.shape:
        raise DrumError(f"initial field of shape {u0.shape} does not match the drums {masks.shape}")
    return masks, u0


def simulate(
    masks: np.ndarray,
    u0: np.ndarray,
    config: WaveConfig = WaveConfig(),
    *,
    v0: np.ndarray | None = None,
    probes: Sequence[tuple[int, int]] | None = None,
    frame_every: int | None = None,
    record_at: Sequence[int] | None = None,
) -> WaveRun:
    """Run the wave RNN on D drums at once (fast path).

    masks (D, H, W) bool (or one (H, W)); u0 and v0 (D, H, W) initial displacement and velocity,
    taken as zero outside the drum. Record the probe traces (one (row, col) per drum; memory T·D)
    and/or every ``frame_every``-th field, or the fields at the steps ``record_at`` (memory F·D·H·W).
    Leapfrog in one variable::

        u_{t+1} = A u_t − u_{t−1},   A = 2I − (c·dt)² K,   u_{−1} = u_0 − dt·v_0

    equals the Verlet pair of the module docstring on the free pixels (dt·v_t = u_t − u_{t−1}).
    """
    masks, u0 = _as_batch(masks, u0)
    D = masks.shape[0]
    lap = dirichlet_laplacian(masks)  # (N, N) block-diagonal over drums
    n = lap.shape[0]
    a = (sp.identity(n, format="csr") * 2.0 - (config.c * config.dt) ** 2 * lap).tocsr()
    u = u0[masks].copy()  # (N,)
    u_prev = u.copy() if v0 is None else u - config.dt * np.asarray(v0, dtype=np.float64).reshape(masks.shape)[masks]

    probe_idx = None
    traces = None
    if probes is not None:
        if len(probes) != D:
            raise DrumError(f"need one probe per drum ({D}), got {len(probes)}")
        number = _numbering(masks)
        probe_idx = np.array([number[d, r, c] if 0 <= r < masks.shape[1] and 0 <= c < masks.shape[2] else -1
                              for d, (r, c) in enumerate(probes)])
        if (probe_idx < 0).any():
            d = int(np.argmax(probe_idx < 0))
            raise DrumError(f"probe {tuple(probes[d])} is outside drum {d}")
        traces = np.empty((config.steps, D))

    frames = frame_steps = None
    if frame_every is not None and record_at is not None:
        raise DrumError("give frame_every or record_at, not both")
    if frame_every is not None:
        if frame_every < 1:
            raise DrumError(f"frame_every must be at least 1, got {frame_every}")
        frame_steps = np.arange(0, config.steps + 1, frame_every)
    elif record_at is not None:
        frame_steps = np.unique(np.asarray(record_at, dtype=np.int64))
        if frame_steps.size and (frame_steps[0] < 0 or frame_steps[-1] > config.steps):
            raise DrumError(f"frames can be recorded at steps 0 … {config.steps}, got {frame_steps[0]} … {frame_steps[-1]}")
    if frame_steps is not None:
        frames = np.zeros((len(frame_steps), *masks.shape))
        flat_idx = np.flatnonzero(masks)
        slot = {int(t): i for i, t in enumerate(frame_steps)}
        if 0 in slot:
            frames[slot[0]].reshape(-1)[flat_idx] = u

    for t in range(1, config.steps + 1):
        np.subtract(a @ u, u_prev, out=u_prev)
        u, u_prev = u_prev, u
        if traces is not None:
            traces[t - 1] = u[probe_idx]
        if frames is not None and t in slot:
            frames[slot[t]].reshape(-1)[flat_idx] = u
    return WaveRun(config=config, traces=traces, frames=frames, frame_every=frame_every, frame_steps=frame_steps)


def simulate_reference(mask: np.ndarray, u0: np.ndarray, config: WaveConfig, probe: tuple[int, int]) -> np.ndarray:
    """The literal Verlet RNN of SPEC §1 for one (H, W) drum, plain numpy → probe trace (T,) after steps 1 … T."""
    m = np.asarray(mask, dtype=np.float64)
    u = np.asarray(u0, dtype=np.float64) * m
    v = np.zeros_like(u)
    lap = np.empty_like(u)
    k = config.dt * config.c**2
    trace = np.empty(config.steps)
    for t in range(config.steps):
        # Δ * u with zero padding: [[0,1,0],[1,-4,1],[0,1,0]]
        np.multiply(u, -4.0, out=lap)
        lap[1:] += u[:-1]
        lap[:-1] += u[1:]
        lap[:, 1:] += u[:, :-1]
        lap[:, :-1] += u[:, 1:]
        v += k * lap
        u = (u + config.dt * v) * m
        trace[t] = u[probe]
    return trace


# ---------------------------------------------------------------------------------------------
# Spectrum of a probe trace
# ---------------------------------------------------------------------------------------------

def _hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic Hann


# window → (weights for n samples, offset δ ∈ [0, 1] of the true peak from the bin of the peak,
# given α = |X[k±1]| / |X[k]| for the larger neighbour). Both are exact for one sinusoid:
# the main lobes are sinc(δ) (rect) and sinc(δ)/(1 − δ²) (Hann).
WINDOWS: dict[str, tuple[Callable[[int], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "hann": (_hann, lambda a: (2 * a - 1) / (1 + a)),
    "rect": (np.ones, lambda a: a / (1 + a)),
}


def amplitude_spectrum(trace: np.ndarray, dt: float, window: str = "hann") -> tuple[np.ndarray, np.ndarray]:
    """|rfft| of a mean-removed, windowed trace (T,) → frequencies (K,) in Hz of simulation time, magnitude (K,)."""
    if window not in WINDOWS:
        raise DrumError(f"unknown window {window!r}; choose one of: {', '.join(WINDOWS)}")
    x = np.asarray(trace, dtype=np.float64)
    x = (x - x.mean()) * WINDOWS[window][0](x.size)
    return np.fft.rfftfreq(x.size, dt), np.abs(np.fft.rfft(x))


def find_peaks(
    trace: np.ndarray, dt: float, *, n: int | None = None, window: str = "hann", rel_height: float = 1e-2
) -> np.ndarray:
    """The lowest n spectral peaks of a trace (T,), interpolated between bins → (≤ n,) Hz, ascending.

    A peak is a local maximum at least ``rel_height`` × the largest one. Its sub-bin position comes
    from the ratio of its larger neighbour to it, inverted through the window's main lobe.
    """
    _, mag = amplitude_spectrum(trace, dt, window)
    k = np.flatnonzero((mag[1:-1] > mag[:-2]) & (mag[1:-1] >= mag[2:])) + 1
    k = k[mag[k] >= rel_height * mag.max()] if k.size else k
    if n is not None:
        k = k[:n]
    right = mag[k + 1] >= mag[k - 1]
    neighbour = np.where(right, mag[k + 1], mag[k - 1])
    delta = np.clip(WINDOWS[window][1](neighbour / mag[k]), 0.0, 1.0)
    return (k + np.where(right, delta, -delta)) / (len(trace) * dt)


# ---------------------------------------------------------------------------------------------
# Paper Fig. 2: square drums
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VerifyRow:
    side: int  # L
    theory: float  # c / (√2·L): continuum fundamental, Hz
    discrete: float  # the exact discrete prediction: leapfrog-corrected, λ = 8 sin²(π/2L)
    measured: float  # lowest spectral peak of u(centre, t)
    rel_error: float  # (measured − theory) / theory


@dataclass(frozen=True)
class VerifyResult:
    config: WaveConfig
    rows: tuple[VerifyRow, ...]

    @property
    def max_abs_rel_error(self) -> float:
        return max(abs(r.rel_error) for r in self.rows)

    @property
    def max_bins_from_discrete(self) -> float:
        """Largest |measured − discrete| in FFT bins."""
        return max(abs(r.measured - r.discrete) for r in self.rows) / self.config.bin_hz

    def passed(self, tolerance: float = 5e-3) -> bool:
        """Every relative error ≤ tolerance and every measurement within one bin of the discrete prediction."""
        return self.max_abs_rel_error <= tolerance and self.max_bins_from_discrete <= 1.0

    def to_dict(self) -> dict:
        return {
            "c": self.config.c,
            "dt": self.config.dt,
            "steps": self.config.steps,
            "rows": [vars(r) for r in self.rows],
        }


FIG2_SIDES = tuple(range(13, 22))


def verify_square_drums(
    config: WaveConfig = WaveConfig(), sides: Sequence[int] = FIG2_SIDES, *, batched: bool = True
) -> VerifyResult:
    """Paper Fig. 2: strike each square at its centre pixel (L//2, L//2), measure the lowest peak.

    ``batched=False`` runs the plain per-drum reference loop (same numbers, slower).
    """
    masks = [square_mask(s) for s in sides]
    centres = [(s // 2, s // 2) for s in sides]
    if batched:
        batch = pad_masks(masks)
        traces = simulate(batch, strike_field(batch, centres), config, probes=centres).traces  # (T, D)
    else:
        traces = np.stack(
            [simulate_reference(m, strike_field(m[None], [p])[0], config, p) for m, p in zip(masks, centres)], axis=1
        )
    rows = []
    for d, side in enumerate(sides):
        theory = config.c / (math.sqrt(2.0) * side)
        discrete = float(leapfrog_hz(8 * math.sin(math.pi / (2 * side)) ** 2, config.c, config.dt))
        peaks = find_peaks(traces[:, d], config.dt, n=1)
        if peaks.size == 0:
            raise DrumError(f"no spectral peak for side {side} after {config.steps} steps; run more steps")
        measured = float(peaks[0])
        rows.append(VerifyRow(side, theory, discrete, measured, (measured - theory) / theory))
    return VerifyResult(config=config, rows=tuple(rows))


# ---------------------------------------------------------------------------------------------
# Can one hear the shape? Isospectral drums
# ---------------------------------------------------------------------------------------------

# Continuum eigenvalues of the GWW drums (Driscoll, SIAM Review 39, 1997), listed there for the drums
# at twice the size used here; ×4 for unit legs. The ninth is exactly 5π² (legs 1).
GWW_CONTINUUM = 4 * np.array([2.53794399980, 3.65550971352, 5.17555935622, 6.53755744376, 7.24807786256,
                              9.20929499840, 10.5969856913, 11.5413953956, 12.3370055014, 13.0536540557])


@dataclass(frozen=True)
class IsospectralRow:
    scale: int  # grid nodes per triangle leg
    free_pixels: tuple[int, int, int]  # drum A, drum B, control
    gap_pair: float  # max_k |λ_A − λ_B| / λ_A over the first k eigenvalues
    gap_control: float  # the same for drum A against the equal-area notched square
    continuum_error: float  # max_k |scale²·λ_A − λ_k(continuum)| / λ_k(continuum)


ISOSPECTRAL_DRUMS = {"GWW drum A": GWW_A, "GWW drum B": GWW_B, "notched square": NOTCHED_SQUARE}


def isospectral_eigenvalues(scale: int, k: int = 10) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Masks of the GWW pair and the equal-area control at ``scale`` nodes per leg, and their lowest
    k eigenvalues → ({name: (H, W) bool}, (3, k)) in the order of ISOSPECTRAL_DRUMS."""
    masks = {name: polygon_mask(p, scale) for name, p in ISOSPECTRAL_DRUMS.items()}
    return masks, np.stack([drum_modes(m, k).eigenvalues for m in masks.values()])


def isospectral_study(scales: Sequence[int] = (4, 8, 16, 24), k: int = 10) -> list[IsospectralRow]:
    """Spectra of the GWW pair and an equal-area control at several resolutions (k ≤ 10).

    On the grid the pair is exactly isospectral (gap at rounding level) at every scale: the
    transplantation between the seven triangles uses reflections in axis-parallel and diagonal
    lines, which map the five-point stencil to itself. Resolution only moves both spectra
    together towards the continuum values.
    """
    rows = []
    for s in scales:
        masks, (lam_a, lam_b, lam_c) = isospectral_eigenvalues(s, k)
        ref = GWW_CONTINUUM[:k]
        rows.append(IsospectralRow(
            scale=s,
            free_pixels=tuple(int(m.sum()) for m in masks.values()),
            gap_pair=float(np.max(np.abs(lam_a - lam_b) / lam_a)),
            gap_control=float(np.max(np.abs(lam_a - lam_c) / lam_a)),
            continuum_error=float(np.max(np.abs(lam_a[: ref.size] * s**2 - ref) / ref)),
        ))
    return rows


# ---------------------------------------------------------------------------------------------
# The drum lab: everything the page shows for one drum
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabConfig:
    c: float = 1.0
    dt: float = 0.5  # c·dt = 0.5: stable, and 5,000 steps cover enough periods of a 64-pixel drum
    steps: int = 5_000
    frames: int = 120  # frames of the animation (about): most of them close together early (`frame_schedule`)
    strike_width: float = 2.0  # pixels: the Gaussian bump that strikes the drum (`bump_field`)
    modes: int = 12  # eigenpairs computed
    rel_weight: float = 0.05  # a mode counts as excited when its weight ≥ this × the largest computed one
    rel_height: float = 1e-3  # spectral peaks down to this × the highest (the strike excites many
    # modes, and the highest peak can be far above the modes computed)


@dataclass(frozen=True)
class LabResult:
    mask: np.ndarray  # (H, W) bool
    strike: tuple[int, int]  # struck and probed pixel
    config: LabConfig
    frames: np.ndarray  # (F, H, W) field at `frame_steps`, from step 0
    frame_steps: np.ndarray  # (F,) close together while the strike spreads and reflects, then further apart
    trace: np.ndarray  # (T,) u(strike, t) after steps 1 … T
    freqs: np.ndarray  # (K,) Hz of simulation time
    magnitude: np.ndarray  # (K,) amplitude spectrum (Hann)
    peaks: np.ndarray  # (P,) measured peak frequencies, Hz
    modes: DrumModes
    mode_hz: np.ndarray  # (k,) leapfrog-corrected eigenfrequencies, Hz
    weights: np.ndarray  # (k,) ⟨φ_k, bump⟩·φ_k(strike): each mode's amplitude at the struck pixel

    @property
    def excited(self) -> np.ndarray:
        """Indices of the modes the strike excites (|weight| ≥ rel_weight × the largest)."""
        w = np.abs(self.weights)
        return np.flatnonzero(w >= self.config.rel_weight * w.max())


def run_lab(mask: np.ndarray, strike: tuple[int, int] | None = None, config: LabConfig = LabConfig()) -> LabResult:
    """Strike a (H, W) drum with a smooth bump (default: at its centre), simulate, take the spectrum of
    the struck pixel, compute the modes. Frames crowd the first three crossings of the drum."""
    mask = np.asarray(mask, dtype=bool)
    if mask.sum() < MIN_FREE_PIXELS:
        raise DrumError(f"the drum is too small: {int(mask.sum())} free pixels, need at least {MIN_FREE_PIXELS}")
    strike = centre_point(mask) if strike is None else (int(strike[0]), int(strike[1]))
    wave_cfg = WaveConfig(c=config.c, dt=config.dt, steps=config.steps)
    u0 = bump_field(mask, strike, config.strike_width)
    crossing = max(mask.shape) / (config.c * config.dt)  # steps for a wave to cross the grid
    at = frame_schedule(config.steps, config.frames, int(3 * crossing))
    run = simulate(mask, u0[None], wave_cfg, probes=[strike], record_at=at)
    trace = run.traces[:, 0]
    freqs, mag = amplitude_spectrum(trace, config.dt)
    modes = drum_modes(mask, config.modes)
    return LabResult(
        mask=mask, strike=strike, config=config, frames=run.frames[:, 0], frame_steps=run.frame_steps, trace=trace,
        freqs=freqs, magnitude=mag, peaks=find_peaks(trace, config.dt, rel_height=config.rel_height), modes=modes,
        mode_hz=modes.leapfrog_hz(config.c, config.dt), weights=modes.projections(u0, strike),
    )


def peak_errors(lab: LabResult) -> list[float | None]:
    """Per computed mode: the relative error of the nearest measured peak when the strike excites
    the mode, None when it does not (a silent mode has no peak to match)."""
    errors = match_peaks(lab.mode_hz, lab.peaks)
    excited = set(lab.excited.tolist())
    return [float(e) if k in excited else None for k, e in enumerate(errors)]


def match_peaks(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Relative error of the nearest measured peak for each predicted frequency → (len(predicted),)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    if len(measured) == 0:
        return np.full(predicted.shape, np.inf)
    nearest = np.asarray(measured)[np.abs(np.subtract.outer(predicted, measured)).argmin(axis=1)]
    return np.abs(nearest - predicted) / predicted


# ---------------------------------------------------------------------------------------------
# Pictures and sound
# ---------------------------------------------------------------------------------------------

def field_to_rgb(frames: np.ndarray, mask: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Colour-map fields (F, H, W) → (F, H, W, 3) uint8: blue < 0 < red, white at 0, grey outside the drum.

    ``scale`` (the |u| shown at full colour) defaults to the 99th percentile of |u| inside the drum
    over frames 1 …, so the initial one-pixel strike does not wash out the rest.
    """
    frames = np.asarray(frames, dtype=np.float64)
    if scale is None:
        inside = np.abs(frames[1:] if len(frames) > 1 else frames)[:, mask]
        scale = float(np.percentile(inside, 99)) if inside.size else 1.0
    x = np.clip(frames / (scale or 1.0), -1.0, 1.0)[..., None]  # (F, H, W, 1)
    white, red, blue = np.array([1.0, 1.0, 1.0]), np.array([0.70, 0.09, 0.17]), np.array([0.13, 0.40, 0.67])
    rgb = np.where(x >= 0, white + x * (red - white), white - x * (blue - white))
    rgb[:, ~mask] = 0.35
    return (rgb * 255).round().astype(np.uint8)


def wav_bytes(signal: np.ndarray, sample_rate: int) -> bytes:
    """Mono 16-bit PCM WAV of a signal (n,), normalised to 90 % of full scale."""
    x = np.asarray(signal, dtype=np.float64)
    peak = np.abs(x).max() if x.size else 0.0
    pcm = (x / peak * 0.9 * 32767 if peak > 0 else x).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def drum_sound(
    freqs_hz: np.ndarray,
    weights: np.ndarray,
    *,
    base_hz: float = 220.0,
    seconds: float = 2.0,
    sample_rate: int = 22_050,
    decay_s: float = 0.7,
) -> bytes:
    """The probe signal as a mode sum, Σ_k w_k cos(2π s f_k t)·e^{−t/decay}, pitched so that the
    lowest mode with weight > 0 sounds at ``base_hz`` (s = base_hz / f_lowest) → WAV bytes.

    Every mode keeps its ratio to the fundamental, so drums that sound alike here share a spectrum.
    """
    if not (base_hz > 0 and seconds > 0 and decay_s > 0):
        raise DrumError(f"pitch, duration and decay must be positive, got {base_hz}, {seconds}, {decay_s}")
    freqs_hz, weights = np.asarray(freqs_hz, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    heard = weights > 1e-3 * np.abs(weights).max()
    if not heard.any():
        raise DrumError("no mode is excited at this point")
    f = freqs_hz[heard] * (base_hz / freqs_hz[heard].min())
    f, w = f[f < sample_rate / 2], weights[heard][f < sample_rate / 2]
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    signal = (w[:, None] * np.cos(2 * np.pi * f[:, None] * t)).sum(axis=0) * np.exp(-t / decay_s)
    return wav_bytes(signal, sample_rate)
