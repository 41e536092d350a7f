"""Point-sampled training: the sampled loss estimates the full loss without bias, and the head on
sampled points equals the full model's logits at those points, for every recurrent family and engine."""
import pytest
import torch
import torch.nn.functional as F

import waveviz
from waveviz.sampling import PointSampled, gather_points, sample_points, sampled_cross_entropy


@pytest.mark.parametrize("fg_weight", [1.0, 4.0])
def test_sampled_loss_is_an_unbiased_estimate_of_the_full_loss(fg_weight):
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(3, 16, 16, dtype=torch.long)
    y[:, 4:9, 3:12] = torch.tensor([1, 2, 3])[:, None, None]  # a foreground block in each image
    logits = torch.randn(3, 4, 16, 16, generator=g) * 3
    full = F.cross_entropy(logits, y).item()
    draws = []
    for _ in range(3000):
        idx, w = sample_points(y, 32, fg_weight=fg_weight, generator=g)
        draws.append(sampled_cross_entropy(gather_points(logits, idx), y, idx, w).item())
    draws = torch.tensor(draws)
    sem = draws.std().item() / len(draws) ** 0.5
    assert abs(draws.mean().item() - full) < 4 * sem, (draws.mean().item(), full, sem)
    assert draws.std() > 0  # an estimate, not the full loss in disguise


def test_uniform_points_are_distinct_and_foreground_is_oversampled():
    g = torch.Generator().manual_seed(1)
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    y[:, :2] = 1  # 16 of 64 pixels
    idx, w = sample_points(y, 20, generator=g)
    assert all(len(set(r.tolist())) == 20 for r in idx) and (w == 1).all()
    idx, w = sample_points(y, 64, fg_weight=9.0, generator=g)
    fg = (y.flatten(1).gather(1, idx) > 0).float().mean().item()
    assert fg > 0.5  # q(fg) = 9·16 / (9·16 + 48) = 0.75


def test_equal_weights_draw_the_same_points_and_weigh_foreground_fg_weight_times_more():
    """weights="equal": the same points as "unbiased" from the same generator, each weighing 1; so
    the loss's expectation is the cross-entropy with foreground pixels weighted fg_weight times."""
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    y[:, :2] = 1  # 16 of 64 pixels
    a, wa = sample_points(y, 30, fg_weight=3.0, generator=torch.Generator().manual_seed(2))
    b, wb = sample_points(y, 30, fg_weight=3.0, weights="equal", generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and (wb == 1).all() and not (wa == 1).all()
    logits = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    ce = F.cross_entropy(logits, y, reduction="none")  # (2, 8, 8)
    weighted = ((1 + 2.0 * (y > 0).float()) * ce).sum((1, 2)) / (1 + 2.0 * (y > 0).float()).sum((1, 2))
    g = torch.Generator().manual_seed(4)
    draws = torch.tensor([sampled_cross_entropy(gather_points(logits, i), y, i, w).item()
                          for i, w in (sample_points(y, 30, fg_weight=3.0, weights="equal", generator=g) for _ in range(3000))])
    sem = draws.std().item() / len(draws) ** 0.5
    assert abs(draws.mean().item() - weighted.mean().item()) < 4 * sem


@pytest.mark.parametrize("preset,overrides", [
    ("nwm-linear-tetrominoes", {"T": 10, "head": (16, 16)}), ("nwm-fft-tetrominoes", {"T": 10, "head": (16,)}),
    ("nwm-last-tetrominoes", {"T": 10, "head": (16,)}), ("lstm-linear-tetrominoes", {"T": 5, "head": (16,)}),
    ("cnn2-tetrominoes", {"head": (16,)}),
])
@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("fg_weight", [1.0, 4.0])  # 4: drawn with replacement, so some points repeat
def test_points_forward_equals_the_full_logits_there(preset, overrides, engine, fg_weight):
    torch.manual_seed(0)
    model = waveviz.create_model(preset, **overrides).double()
    if hasattr(model, "engine"):
        model.engine = engine
    x = torch.rand(2, 3, 24, 24, dtype=torch.float64)
    y = torch.randint(0, 6, (2, 24, 24))
    idx, w = sample_points(y, 40 if fg_weight == 1 else 400, fg_weight=fg_weight, generator=torch.Generator().manual_seed(0))
    if fg_weight > 1:
        assert any(len(set(r.tolist())) < len(r) for r in idx)  # repeated points: their gradients must add up
    net = PointSampled(model)
    pts = net(x, idx)
    assert pts.shape == (2, 6, idx.shape[1], 1)
    torch.testing.assert_close(pts, gather_points(model(x), idx), rtol=1e-10, atol=1e-12)
    # and the gradients of the sampled loss equal those through the full logits
    loss = sampled_cross_entropy(pts, y, idx, w)
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    ref = torch.autograd.grad(sampled_cross_entropy(gather_points(model(x), idx), y, idx, w), list(model.parameters()),
                              allow_unused=True)
    for a, b in zip(grads, ref):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("backend", ["c", "torch"])
def test_point_features_backward_twice_reuses_a_clean_buffer(backend):
    """nwm_point_features keeps its zeroed ∂L/∂y buffer between backward passes: a second pass
    (through other points) must see it zero again and give the gradients of a fresh computation."""
    from waveviz.engine import nwm_linear_features, nwm_point_features
    if backend == "c" and waveviz.engine.cpu_kernel() is None:
        pytest.skip("no C compiler here")
    g = torch.Generator().manual_seed(0)
    y0, om, al = (torch.rand(3, 2, 12, 12, generator=g, dtype=torch.float64) for _ in range(3))
    w = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64) * 0.3
    proj = torch.randn(7, 20, generator=g, dtype=torch.float64)
    for seed in (1, 2, 3):
        idx = torch.randint(0, 144, (3, 30), generator=torch.Generator().manual_seed(seed))
        ins = [t.clone().requires_grad_() for t in (y0, om, al, w, proj)]
        pts = nwm_point_features(*ins[:4], 0.1, 20, ins[4], idx, backend=backend, segment=6)
        got = torch.autograd.grad(pts.pow(2).sum(), ins)
        ref_ins = [t.clone().requires_grad_() for t in (y0, om, al, w, proj)]
        full = gather_points(nwm_linear_features(*ref_ins[:4], 0.1, 20, ref_ins[4], backend=backend, segment=6), idx)
        torch.testing.assert_close(pts, full, rtol=1e-12, atol=1e-12)
        want = torch.autograd.grad(full.pow(2).sum(), ref_ins)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("preset", ["nwm-fft-tetrominoes", "nwm-last-tetrominoes", "lstm-linear-tetrominoes"])
def test_points_forward_runs_the_readout_on_the_points_series_only(preset, monkeypatch):
    """Point-sampled training gathers Y at the points before the readout: the readout (an FFT over
    T = 500 on Polygons) sees (B, T, C, P, 1), never every pixel's series."""
    model = waveviz.create_model(preset, T=6, head=(8,))
    seen = []
    inner = model.readout_features  # (the fast linear readout is a product there, not time_features)
    monkeypatch.setattr(model, "readout_features", lambda Y: seen.append(tuple(Y.shape)) or inner(Y))
    idx, _ = sample_points(torch.randint(0, 6, (2, 16, 16)), 10, generator=torch.Generator().manual_seed(0))
    PointSampled(model)(torch.rand(2, 3, 16, 16), idx)
    assert seen == [(2, 6, model.config.C, 10, 1)]
