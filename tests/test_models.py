"""Every preset builds and runs; parameter counts are the paper's; the NWM follows its equations."""
import pytest
import torch
import torch.nn.functional as F

import waveviz
from waveviz.models import NWM, nwm_recurrence_ref
from waveviz.models.layers import laplacian_kernel_
from waveviz.presets import PRESETS, count_params, create_model
from waveviz.readouts import READOUTS

# SPEC §6: the 19 counts the paper's tables and the authors' code give.
PAPER_COUNTS = {
    "nwm-linear-mnist": 176_545, "nwm-linear-tetrominoes": 176_124,
    "lstm-linear-mnist": 151_467, "lstm-linear-tetrominoes": 151_046,
    "cnn2-mnist": 160_499, "cnn4-mnist": 165_139, "cnn8-mnist": 174_419, "cnn16-mnist": 192_979, "cnn32-mnist": 230_099,
    "cnn2-tetrominoes": 159_502, "cnn4-tetrominoes": 164_142, "cnn8-tetrominoes": 173_422,
    "cnn16-tetrominoes": 191_982, "cnn32-tetrominoes": 229_102,
    "nwm-linear-multi_mnist": 54_855,
    "unet2-multi_mnist": 30_745, "unet3-multi_mnist": 68_834, "unet4-multi_mnist": 122_071, "unet5-multi_mnist": 190_456,
}


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_paper_parameter_counts(name):
    assert count_params(create_model(name)) == PAPER_COUNTS[name]


@pytest.mark.parametrize("name,count", [("nwm-last-mnist", 150_945), ("nwm-max-tetrominoes", 150_524), ("nwm-fft-mnist", 176_545)])
def test_authors_unused_linear_option(name, count):
    assert count_params(create_model(name, paper_unused_linear=True)) == count


def test_preset_names_follow_the_scheme():
    names = set(waveviz.list_presets())
    assert set(PAPER_COUNTS) <= names
    for ds in ("polygons", "tetrominoes", "mnist", "multi_mnist"):
        for r in READOUTS.names():
            assert f"nwm-{r}-{ds}" in names and f"lstm-{r}-{ds}" in names
    assert create_model("nwm-fft-polygons").config.T == 500
    assert create_model("nwm-linear-multi_mnist").config.C == 16


@pytest.mark.parametrize("name", PRESETS.names())
def test_every_preset_builds_and_gives_finite_logits(name):
    torch.manual_seed(0)
    p = PRESETS.get(name)
    small = {"T": 6} if p.model in ("nwm", "lstm") else {}
    model = create_model(name, **small).eval()
    cfg = model.config
    H = 32 if p.model == "unet" else 12  # U-Net halves 4 times
    x = torch.rand(2, cfg.in_channels, H, H)
    with torch.no_grad():
        out = model.run(x)
    assert out.logits.shape == (2, cfg.num_classes, H, H)
    assert torch.isfinite(out.logits).all()
    if p.model in ("nwm", "lstm"):
        assert out.hidden.shape == (2, 6, cfg.C, H, H)
    if p.model == "nwm":
        assert out.extras["omega"].shape == (2, cfg.C, H, H) and (out.extras["omega"] >= 0).all()
        assert (out.extras["alpha"] >= 0).all()


def test_unknown_preset_and_override_are_named():
    with pytest.raises(KeyError, match="did you mean nwm-linear-tetrominoes"):
        create_model("nwm-linear-tetrominos")
    with pytest.raises(ValueError, match="unknown setting"):
        create_model("nwm-linear-tetrominoes", steps=5)
    with pytest.raises(ValueError, match="dt must be a number > 0 and ≤ 1, got 0.0"):
        create_model("nwm-linear-tetrominoes", dt=0.0)
    with pytest.raises(ValueError, match="readout must be one of last, mean, max, fft, linear, got 'median'"):
        create_model("nwm-linear-tetrominoes", readout="median")


def nwm_loop_from_equations(model: NWM, x: torch.Tensor) -> torch.Tensor:
    """SPEC §2 written pixel-free but op by op, independently of the model's code."""
    y = model.f_y(x)
    omega, alpha = model.f_omega(x), model.f_alpha(x)
    z = torch.zeros_like(y)
    W, dt = model.rec.weight, model.config.dt
    ys = []
    for _ in range(model.config.T):
        yp = torch.cat([y[..., -1:, :], y, y[..., :1, :]], dim=-2)  # circular rows
        yp = torch.cat([yp[..., -1:], yp, yp[..., :1]], dim=-1)  # circular columns
        z = z + dt * (torch.tanh(F.conv2d(yp, W)) - omega * y - alpha * z)
        y = y + dt * z
        ys.append(y)
    return torch.stack(ys, 1)


def test_nwm_step_matches_equations():
    torch.manual_seed(1)
    model = create_model("nwm-linear-tetrominoes", T=15, C=3).double()
    with torch.no_grad():
        model.rec.weight.add_(0.05 * torch.randn_like(model.rec.weight))  # not just the Laplacian
    x = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    Y, extras = model.forward_features(x)
    torch.testing.assert_close(Y, nwm_loop_from_equations(model, x), rtol=1e-10, atol=1e-12)
    assert Y.shape == (2, 15, 3, 9, 11)


def test_laplacian_initialisation():
    model = create_model("nwm-linear-multi_mnist")
    W = model.rec.weight
    lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            torch.testing.assert_close(W[i, j], lap if i == j else torch.zeros(3, 3))
    assert model.rec.bias is None and model.rec.padding_mode == "circular"


def test_coupling_init_scales_the_stencil_and_the_reach_of_a_pulse():
    """coupling_init s: W_rec starts as s × the Laplacian, so waves start √s times faster (1: the paper)."""
    fast = create_model("nwm-linear-mnist", coupling_init=9.0)
    paper = create_model("nwm-linear-mnist")
    torch.testing.assert_close(fast.rec.weight, 9.0 * paper.rec.weight)
    assert count_params(fast) == count_params(paper)

    def reach(W):  # the farthest pixel right of a central pulse above 1 % of its peak after 60 steps
        y0 = torch.zeros(1, 2, 1, 81)
        y0[..., 40] = 0.5
        zeros = torch.zeros_like(y0)
        y = nwm_recurrence_ref(y0, zeros, zeros, W, dt=0.1, T=60)[0, -1, 0, 0, 40:].abs()
        return int((y > 0.01 * y.max()).nonzero().max())

    assert reach(fast.rec.weight) > 2 * reach(paper.rec.weight)
    with pytest.raises(ValueError, match="coupling_init"):
        create_model("nwm-linear-mnist", coupling_init=0.0)


def test_gate_act_softplus_keeps_every_gate_positive_and_trainable():
    """gate_act "softplus": ω, α > 0 everywhere, and a gate whose pre-activation is negative everywhere
    still gets a gradient (with the paper's ReLU it is dead: zero value, zero gradient)."""
    x = torch.rand(2, 1, 56, 56)
    grads = {}
    for act in ("relu", "softplus"):
        torch.manual_seed(0)
        model = create_model("nwm-linear-mnist", gate_act=act)
        last = [m for m in model.f_omega if isinstance(m, torch.nn.Conv2d)][-1]
        with torch.no_grad():
            last.bias.fill_(-50.0)  # far below zero on every pixel
        _, omega, alpha = model.encode(x)
        (omega.sum() + alpha.sum()).backward()
        grads[act] = last.bias.grad.abs().sum().item()
        assert count_params(model) == 176_545
        if act == "softplus":
            assert bool((alpha > 0).all()) and bool((omega >= 0).all())
    assert grads["relu"] == 0.0 and grads["softplus"] > 0.0
    assert create_model("nwm-linear-mnist").config.gate_act == "relu"  # the paper
    with pytest.raises(ValueError, match="gate_act"):
        create_model("nwm-linear-mnist", gate_act="sigmoid")


def test_circular_padding_wraps_a_pulse_around_the_edge():
    """A pulse at the left edge reaches the right edge's column at once through the coupling."""
    W = laplacian_kernel_(torch.empty(1, 1, 3, 3))
    y0 = torch.zeros(1, 1, 8, 8)
    y0[0, 0, 4, 0] = 1.0
    zeros = torch.zeros_like(y0)
    Y = nwm_recurrence_ref(y0, zeros, zeros, W, dt=0.5, T=1)
    assert Y[0, 0, 0, 4, -1] > 0  # wrapped to the last column
    assert Y[0, 0, 0, 4, 1] > 0 and Y[0, 0, 0, 4, 1] == pytest.approx(Y[0, 0, 0, 4, -1].item())
    assert Y[0, 0, 0, 4, 3] == 0  # and nowhere else yet


def test_identity_init_option():
    model = create_model("nwm-linear-mnist", omega_identity_init=True)
    x = torch.rand(1, 1, 10, 10)
    with torch.no_grad():
        _, omega, alpha = model.encode(x)
    torch.testing.assert_close(omega[0, 0], x[0, 0])  # Dirac kernels pass the grey image through
    assert (alpha == 0).all()
    # and α stays 0 for good: all-zero convolutions before a ReLU pass no gradient to f_α
    model(x).pow(2).mean().backward()
    assert all((p.grad == 0).all() for p in model.f_alpha.parameters())
    assert any((p.grad != 0).any() for p in model.f_omega.parameters())


def test_gate_bias_init_keeps_omega_and_alpha_alive():
    """gate_bias_init: f_ω's and f_α's last biases start there, so both ReLUs pass gradient almost
    everywhere at the start (PyTorch's default leaves ω ≈ 0, dead over a black background)."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 12, 12) * (torch.rand(2, 1, 12, 12) > 0.5)  # some black background
    default = create_model("nwm-linear-tetrominoes")
    torch.manual_seed(0)
    alive = create_model("nwm-linear-tetrominoes", gate_bias_init=0.1)
    with torch.no_grad():
        _, om0, al0 = default.encode(x)
        _, om, al = alive.encode(x)
    assert (om > 0).float().mean() > 0.95 and (al > 0).float().mean() > 0.95
    assert min((om0 > 0).float().mean(), (al0 > 0).float().mean()) < 0.6  # this seed: ω 52 %, α 10 % alive
    assert all(enc[-2].bias.eq(0.1).all() for enc in (alive.f_omega, alive.f_alpha))
    assert count_params(alive) == count_params(default)
    with pytest.raises(ValueError, match="gate_bias_init"):
        create_model("nwm-linear-tetrominoes", gate_bias_init=-1.0)


@pytest.mark.parametrize("readout,features", [("last", 2), ("mean", 2), ("max", 2), ("fft", 51 * 2), ("linear", 51 * 2)])
def test_readout_feature_sizes(readout, features):
    r = READOUTS.get(readout)(100, 2)
    Y = torch.randn(3, 100, 2, 5, 4)
    assert r(Y).shape == (3, features, 5, 4)


def test_fft_readout_is_rfft_magnitude():
    r = READOUTS.get("fft")(8, 1)
    t = torch.arange(8.0)
    Y = torch.cos(2 * torch.pi * 2 * t / 8).reshape(1, 8, 1, 1, 1)
    f = r.time_features(Y)[0, :, 0, 0, 0]
    assert f.argmax() == 2 and f[2] == pytest.approx(4.0, abs=1e-5)


def test_is_recurrent_names_the_models_with_waves():
    from waveviz.models import MODELS, is_recurrent

    assert [f for f in MODELS.names() if is_recurrent(f)] == ["nwm", "lstm"] and not is_recurrent("no-such-family")
    assert is_recurrent(create_model("nwm-linear-tetrominoes", T=4)) and not is_recurrent(create_model("cnn2-tetrominoes"))


@pytest.mark.parametrize("preset", ["nwm-linear-tetrominoes", "lstm-linear-mnist"])
def test_linear_readout_fourier_init(preset):
    """readout_init="fourier": the linear readout starts as the lowest real Fourier basis (unit rows,
    orthogonal, row 0 the mean); the default stays PyTorch's uniform init; parameter counts unchanged."""
    from waveviz.presets import count_params, create_model

    torch.manual_seed(0)
    m = create_model(preset, readout_init="fourier")
    w = m.readout.proj.weight.detach().double()
    assert torch.allclose(w @ w.T, torch.eye(w.shape[0], dtype=torch.float64), atol=1e-5)
    assert torch.allclose(w[0], torch.full_like(w[0], w.shape[1] ** -0.5))
    y = torch.sin(2 * torch.pi * 2 * torch.arange(w.shape[1]) / w.shape[1]).double()  # 2 cycles per window
    assert (w @ y).abs().argmax().item() == 4  # → the sin row of frequency 2
    default = create_model(preset)
    assert not torch.allclose(default.readout.proj.weight.double() @ default.readout.proj.weight.double().T,
                              torch.eye(w.shape[0], dtype=torch.float64), atol=1e-2)
    assert count_params(m) == count_params(default)
