"""Wave measurements against fields whose answers are known in closed form."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import waveviz
from waveviz import analysis as A


def plane_wave(T=64, H=16, W=32, wavelength=16.0, period=8.0, direction="x") -> np.ndarray:
    """cos(k·x − ω·t) on a torus: (T, 1, H, W) float32; wavelength px, period steps."""
    t = np.arange(T)[:, None, None, None]
    y, x = np.mgrid[0:H, 0:W]
    pos = (x if direction == "x" else y)[None, None]
    return np.cos(2 * np.pi * pos / wavelength - 2 * np.pi * t / period).astype(np.float32)


def test_spectrum_peaks_at_the_wave_frequency():
    h = plane_wave(T=64, period=8)  # 64 / 8 = bin 8
    spec = A.pixel_spectra(h)
    assert spec.shape == (33, 1, 16, 32)
    assert (spec.argmax(0) == 8).all() and np.allclose(spec[0], 0, atol=1e-3)  # mean removed
    assert A.rfft_freqs(64)[8] == pytest.approx(1 / 8)
    assert A.rfft_freqs(64, dt=0.1)[8] == pytest.approx(1.25)
    assert A.strongest_bins(h, 1) == [8]
    maps = A.frequency_bin_maps(h, [8, 3])
    assert maps.shape == (2, 1, 16, 32) and maps[0].min() > 10 * maps[1].max()
    with pytest.raises(ValueError, match="out of range"):
        A.frequency_bin_maps(h, [40])


def test_batched_spectra_keep_the_batch_axis():
    h = torch.from_numpy(np.stack([plane_wave(T=20), plane_wave(T=20, period=4)]))
    assert A.pixel_spectra(h).shape == (2, 11, 1, 16, 32)


@pytest.mark.parametrize("wavelength,direction", [(16.0, "x"), (8.0, "y"), (32.0, "x")])
def test_hilbert_wavelength_speed_and_direction_of_a_plane_wave(wavelength, direction):
    H, W = 32, 32
    h = plane_wave(T=64, H=H, W=W, wavelength=wavelength, period=8, direction=direction)
    lam = A.wavelength_maps(h)
    assert np.nanmedian(lam) == pytest.approx(wavelength, rel=1e-3)
    speed, angle = A.speed_maps(h)
    assert np.nanmedian(speed) == pytest.approx(wavelength / 8, rel=1e-3)  # λ / period px per step
    expect = 0.0 if direction == "x" else np.pi / 2  # travelling towards +x (right) or +y (down)
    assert np.nanmedian(angle) == pytest.approx(expect, abs=1e-3)
    assert A.phase_maps(h).shape == h.shape and np.abs(A.phase_maps(h)).max() <= np.pi + 1e-6


def test_long_wavelength_share_units_and_inputs():
    long = plane_wave(wavelength=16)  # λ = 16 px > 3 px
    short = plane_wave(wavelength=2)  # λ = 2 px: the grid's Nyquist wave, below 1.5 × 2 px
    assert A.long_wavelength_share(long) == 1.0
    assert A.long_wavelength_share(short) == 0.0
    assert A.long_wavelength_share(short, threshold=0.9) == 1.0  # 2 px > 0.9 × 2 px
    batch = torch.from_numpy(np.stack([long, short]))  # (B, T, C, H, W) tensor
    assert A.long_wavelength_share(batch) == pytest.approx(0.5)
    assert A.long_wavelength_share(np.zeros((10, 2, 8, 8))) == 0.0  # nothing oscillates
    assert isinstance(A.long_wavelength_share(long), float)
    with pytest.raises(ValueError, match="shape"):
        A.long_wavelength_share(np.zeros((8, 8)))


def test_synchronous_oscillation_has_unbounded_wavelength():
    t = np.arange(40)[:, None, None, None]
    h = np.broadcast_to(np.sin(2 * np.pi * t / 10), (40, 1, 8, 8)).astype(np.float32)
    assert (A.wavelength_maps(h) > 1e6).all()  # inf, or huge where float rounding leaves a hair of gradient
    assert A.long_wavelength_share(h) == 1.0


def test_shuffled_null_separates_waves_from_noise():
    h = plane_wave(T=32, H=16, W=16, wavelength=16)
    test = A.shuffled_null(A.long_wavelength_share, h, n=9, seed=0)
    assert test.observed == 1.0 and test.null_mean < 0.6 and test.p_value == pytest.approx(0.1)
    again = A.shuffled_null(A.long_wavelength_share, h, n=9, seed=0)
    assert np.array_equal(test.null, again.null)  # deterministic per seed
    noise = np.random.default_rng(0).standard_normal((32, 2, 16, 16)).astype(np.float32)
    stats = A.wave_statistics(noise, n_null=19)
    assert abs(stats.share - stats.null.null_mean) < 0.02 and stats.null.p_value > 0.05
    assert stats.cut_px == 3.0 and stats.wavelength.shape == noise.shape


def test_shuffle_keeps_each_pixels_time_series():
    h = np.random.default_rng(1).standard_normal((5, 2, 4, 6)).astype(np.float32)
    s = A.shuffle_pixels(h, np.random.default_rng(0))
    cols = {tuple(h[:, :, i, j].ravel()) for i in range(4) for j in range(6)}
    assert {tuple(s[:, :, i, j].ravel()) for i in range(4) for j in range(6)} == cols


def test_class_spectra_average_the_right_pixels():
    h = np.zeros((1, 20, 1, 4, 4), np.float32)
    h[0, :, 0, :2] = np.sin(2 * np.pi * np.arange(20) / 5)[:, None, None]  # rows 0–1 ring at bin 4
    masks = np.zeros((1, 4, 4), np.int64)
    masks[0, :2] = 2
    spectra, counts = A.class_spectra(h, masks, num_classes=3)
    assert spectra.shape == (3, 1, 11) and list(counts) == [8, 0, 8]
    assert spectra[2, 0].argmax() == 4 and np.allclose(spectra[0], 0, atol=1e-5)
    assert np.isnan(spectra[1]).all()


@pytest.mark.slow
def test_model_class_spectra_batched_equal_the_whole_set():
    """Batch by batch (3 images a batch, the last short) = `class_spectra` of all images at once;
    with amp the model runs under bf16 autocast (a different, still close, answer)."""
    torch.manual_seed(0)
    model = waveviz.create_model("nwm-linear-tetrominoes", T=12, head=(8,)).eval()
    x, y = torch.rand(7, 3, 12, 10), torch.randint(0, 4, (7, 12, 10))
    y[y == 3] = 0  # class 3 present nowhere: NaN
    with torch.inference_mode():
        want, n_want = A.class_spectra(model.forward_features(x)[0], y, 6)
    got, n = A.model_class_spectra(model, x, y, 6, batch_size=3)
    assert list(n) == list(n_want) and n[3] == 0 and np.isnan(got[3]).all()
    assert np.allclose(got[:3], want[:3], rtol=1e-5, atol=1e-6)
    amp, _ = A.model_class_spectra(model, x, y, 6, batch_size=3, amp=True)
    assert not np.allclose(amp[:3], want[:3], rtol=1e-5, atol=1e-6) and np.allclose(amp[:3], want[:3], rtol=0.1, atol=0.05)


@pytest.mark.parametrize("readout", ["fft", "linear", "last"])
def test_readout_view_is_what_the_head_gets(readout):
    model = waveviz.create_model(f"nwm-{readout}-tetrominoes", T=10, head=(8,)).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        Y, _ = model.forward_features(x)
        feats = model.readout(Y)  # (1, K'·C, H, W), what the head is fed
    view = A.readout_view(model.readout, Y, 3, 5)  # (K', C)
    assert np.allclose(view.ravel(), feats[0, :, 3, 5].numpy(), atol=1e-6)  # feature k·C + c
    K = {"fft": 6, "linear": 6, "last": 1}[readout]
    assert view.shape == (K, 2)


def test_held_sequence_freezes_after_t():
    Y = torch.arange(5.0).reshape(1, 5, 1, 1, 1)
    assert A.held_sequence(Y, 2).flatten().tolist() == [0, 1, 1, 1, 1]
    assert A.held_sequence(Y, 5).flatten().tolist() == [0, 1, 2, 3, 4]


def test_receptive_field_grows_inside_the_light_cone():
    torch.manual_seed(0)
    model = waveviz.create_model("nwm-linear-polygons", T=12, head=(16,)).eval()
    x = torch.rand(1, 1, 40, 40)
    row, col = 20, 20
    rf = A.effective_receptive_field(model, x, row, col, steps=[1, 4, 12])
    assert list(rf.steps) == [1, 4, 12] and rf.maps.shape == (3, 40, 40)
    yy, xx = np.mgrid[0:40, 0:40]
    cheb = np.maximum(abs(yy - row), abs(xx - col))
    for t, m in zip(rf.steps, rf.maps):
        # y_0 sees 4 pixels (4 conv layers), and every step couples nearest neighbours once more
        assert m[cheb > 4 + t].max() == 0, f"input beyond {4 + t} px reached the pixel by step {t}"
        assert m[cheb == 4 + t].max() > 0 or t == 1
    assert rf.radius[0] <= rf.radius[1] <= rf.radius[2] and rf.radius[2] > rf.radius[0]
    assert np.allclose(rf.maps.reshape(3, -1).max(1), 1)


def test_receptive_field_of_a_cnn_is_fixed():
    model = waveviz.create_model("cnn2-polygons", head=(8,)).eval()
    rf = A.effective_receptive_field(model, torch.rand(1, 1, 24, 24), 12, 12)
    yy, xx = np.mgrid[0:24, 0:24]
    assert list(rf.steps) == [0] and rf.maps[0][np.maximum(abs(yy - 12), abs(xx - 12)) > 2].max() == 0


def test_mass_radius_and_focus_pixel():
    m = np.zeros((9, 9))
    m[4, 4] = 1
    assert A.mass_radius(m, 4, 4) == 0.0
    m[4, 7] = 9
    assert A.mass_radius(m, 4, 4) == 3.0
    assert A.mass_radius(np.zeros((3, 3)), 1, 1) == 0.0
    pred = np.zeros((10, 10), int)
    assert A.focus_pixel(pred) == (5, 5)
    pred[2:5, 6:9] = 3
    assert A.focus_pixel(pred) == (3, 7)
    assert A.default_erf_steps(100) == [1, 3, 6, 16, 40, 100]


def test_model_wave_share_probe_of_fig10():
    from waveviz.analysis import model_wave_share
    from waveviz.presets import create_model

    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 16)
    nwm = create_model("nwm-linear-tetrominoes", T=10, image_size=16, head=(8,))
    seen = []
    run = nwm.run
    nwm.run = lambda im: seen.append(len(im)) or run(im)
    share = model_wave_share(nwm, x)
    assert 0.0 <= share <= 1.0 and seen == [1, 1, 1] and not nwm.training
    seen.clear()
    assert model_wave_share(nwm, x, max_elements=1) is not None and seen == [1]  # at least one image
    assert model_wave_share(create_model("cnn2-tetrominoes", image_size=16, head=(8,)), x) is None


def test_gate_activity_finds_a_dead_oscillator_channel():
    """A channel whose last bias is pushed far below zero is dead (share 0), one pushed up is alive on
    every foreground pixel (ω: channel 0 dead, α: channel 1); a CNN has no gates; no foreground, no answer."""
    torch.manual_seed(0)
    model = waveviz.create_model("nwm-linear-tetrominoes", T=4, head=(8,))
    with torch.no_grad():
        for enc, bias in ((model.f_omega, [-1e3, 1e3]), (model.f_alpha, [1e3, -1e3])):
            [m for m in enc if isinstance(m, torch.nn.Conv2d)][-1].bias.copy_(torch.tensor(bias))
    x = torch.rand(3, 3, 16, 16)
    masks = torch.zeros(3, 16, 16, dtype=torch.long)
    masks[:, 4:9, 4:9] = 2
    g = A.gate_activity(model, x, masks)
    assert g == {"omega": [0.0, 1.0], "alpha": [1.0, 0.0]}
    assert not model.training
    assert A.gate_activity(model, x, torch.zeros_like(masks)) is None
    assert A.gate_activity(waveviz.create_model("cnn2-tetrominoes"), x, masks) is None


# ------------------------------------------------------------------------------ shape readings

def _draw_piece(img: np.ndarray, mask: np.ndarray, kind: str, top: int, left: int, colour, rot: int = 0) -> None:
    """One tetromino into img (H, W, 3) and its label into mask, as make_tetrominoes draws it."""
    from waveviz.data.shapes import CELL, TETROMINOES, piece_cells, tetromino_tile

    tile = tetromino_tile(np.array(colour, np.uint8))
    grid = piece_cells(kind, rot, False)
    for r, c in zip(*np.nonzero(grid)):
        y, x = top + r * CELL, left + c * CELL
        img[y: y + CELL, x: x + CELL] = tile
        mask[y: y + CELL, x: x + CELL] = TETROMINOES[kind][1]


def test_touching_tetrominoes_of_two_colours_read_as_two_shapes():
    """An I lying on top of an O, edge to edge: two readings, each with its own share, not one shape
    whose share mixes them. A ring wrapping to near-black ((172, 3, 4) → (2, 4, 6)) leaves the O's
    squares apart in the image: still one piece."""
    img = np.zeros((40, 40, 3), np.uint8)
    truth = np.zeros((40, 40), np.int64)
    _draw_piece(img, truth, "I", 5, 4, (200, 40, 90))  # rows 5–11, cols 4–31
    _draw_piece(img, truth, "O", 12, 11, (30, 160, 220))  # rows 12–25, cols 11–24: touches the I
    pred = truth.copy()
    pred[12:19, 11:18] = 1  # one of the O's squares read as I: the O 75 %, the I still 100 %
    r = A.shape_readings(img, pred)
    assert [(x.label, x.share, x.pixels) for x in r] == [(1, 1.0, 196), (2, 0.75, 196)]
    assert r[0].centre == (8.0, 17.5)

    dark = np.zeros_like(img)
    _draw_piece(dark, truth, "O", 10, 10, (172, 3, 4))
    assert dark[10, 10].max() <= 8  # the ring is background at the app's ink level
    assert [(x.label, x.pixels) for x in A.shape_readings(dark, truth)] == [(2, 100)]


def test_touching_tetrominoes_of_one_colour_cannot_be_told_apart():
    img = np.zeros((40, 40, 3), np.uint8)
    truth = np.zeros((40, 40), np.int64)
    _draw_piece(img, truth, "I", 5, 4, (200, 40, 90))
    _draw_piece(img, truth, "O", 12, 11, (200, 40, 90))
    assert [(x.label, x.share, x.pixels) for x in A.shape_readings(img, truth)] == [(1, 0.5, 392)]


def test_generated_tetrominoes_read_one_shape_per_piece():
    """A model that gets every pixel right reads 100 % on every piece, touching or not."""
    from waveviz.data import make_dataset
    from waveviz.drawing import tetromino_pieces
    from scipy import ndimage

    data = make_dataset("tetrominoes", 100, seed=3, split="val")
    touching = 0
    for img, mask in zip(data.images, data.masks):
        r = A.shape_readings(img, mask)
        pieces = tetromino_pieces(img, mask).max()
        assert len(r) == pieces and all(x.share == 1.0 and x.pixels == 196 for x in r)
        touching += ndimage.label(mask > 0)[1] < pieces
    assert touching >= 10  # the draw holds images whose pieces touch


@pytest.mark.parametrize("name, n, at_most", [("mnist", 20, 0.005), ("polygons", 20, 0.0),
                                              ("multi_mnist", 10, 0.0), ("tetrominoes", 20, 0.0)])
def test_readings_count_the_pixels_the_data_sets_mask_counts(name, n, at_most):
    """The foreground of a reading is the data set's own: MNIST's mask is the upsampled value > 0.5,
    not every pixel with some ink (a uint8 image stores a value of exactly 0.5 as 128, so a few
    pixels in a thousand differ); the binary sets' and Tetrominoes' masks exactly."""
    from waveviz.data import make_dataset

    data = make_dataset(name, n, seed=0, split="test")
    fg = np.array([A.shape_foreground(img) for img in data.images])
    assert (fg != (data.masks > 0)).sum() <= at_most * (data.masks > 0).sum()


def test_an_mnist_digit_read_right_reads_all_its_pixels():
    """A prediction equal to the true mask reads ~100 % (it read about half when every pixel
    brighter than 8/255 counted as the digit)."""
    from waveviz.data import make_dataset

    data = make_dataset("mnist", 5, seed=0, split="test")
    for img, mask in zip(data.images, data.masks):
        (r,) = A.shape_readings(img, mask)
        assert r.label == mask.max() and r.share >= 0.99 and r.pixels == pytest.approx((mask > 0).sum(), abs=3)
