"""The fast wave engine against the plain reference (STYLE: a fast kernel beside its `*_ref`).

Every fast path — the C kernel and the torch-op backend of the recurrence, the recurrence fused
with the linear readout, the fused head, whole models — is compared with the reference on the same
weights over a grid of shapes (B, C, H ≠ W, T, Δt, segment lengths): outputs and every gradient.
Tolerances are relative to the largest reference magnitude: 1e-9 in float64 (the algorithms are
the same; what differs is rounding order) and 1e-5 in float32 (the contract in the issue).
"""
from __future__ import annotations

import copy
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from waveviz import engine
from waveviz.checkpoint import load_checkpoint, save_checkpoint
from waveviz.models.layers import PixelMLP
from waveviz.models.lstm import convlstm_sequence_ref
from waveviz.models.nwm import nwm_recurrence_ref
from waveviz.presets import count_params, create_model

TOL = {torch.float64: 1e-9, torch.float32: 1e-5}
HAS_C = engine.cpu_kernel() is not None
NO_CUDA = "needs a CUDA GPU: the fast CUDA path is checked against the reference only where one is present"
KERNEL_BACKENDS = ["torch", pytest.param("c", marks=pytest.mark.skipif(not HAS_C, reason="no C compiler for the CPU kernel"))]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: threads only add synchronisation (and stalls on a shared machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b|: the error relative to the reference's scale."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-300)).item()


def assert_engines_agree(model, x, y, tol: float) -> None:
    """Same weights under the reference and the fast engine: logits and every parameter gradient of
    the cross-entropy agree to `tol` (relative to the reference's scale)."""
    res = {}
    for eng in ("reference", "fast"):
        model.engine = eng
        model.zero_grad()
        logits = model(x)
        F.cross_entropy(logits, y).backward()
        res[eng] = logits.detach(), [p.grad.clone() for p in model.parameters()]
    assert rel_err(res["fast"][0], res["reference"][0]) < tol
    for a, b in zip(res["fast"][1], res["reference"][1]):
        assert rel_err(a, b) < tol


def wave_inputs(B, C, H, W, dtype, seed=0, device="cpu"):
    """y0, ω, α, W_rec as the encoders would make them (y0 = tanh(·), ω, α ≥ 0), requiring grad."""
    g = torch.Generator().manual_seed(seed)
    y0 = torch.randn(B, C, H, W, generator=g, dtype=dtype).tanh()
    omega = torch.rand(B, C, H, W, generator=g, dtype=dtype) * 2
    alpha = torch.rand(B, C, H, W, generator=g, dtype=dtype) * 0.5
    weight = torch.randn(C, C, 3, 3, generator=g, dtype=dtype) * 0.4
    return [t.to(device).requires_grad_() for t in (y0, omega, alpha, weight)]


# (B, C, H, W, T, dt): H ≠ W, one-pixel and one-channel edge cases, the paper's C = 2 and 16
GRID = [(2, 2, 5, 7, 13, 0.1), (3, 3, 8, 6, 20, 0.05), (1, 1, 1, 1, 4, 0.1), (1, 2, 2, 3, 9, 0.2),
        (2, 16, 6, 5, 7, 0.1), (4, 2, 12, 10, 30, 0.1)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("shape", GRID, ids=lambda s: "B{}C{}H{}W{}T{}dt{}".format(*s))
@pytest.mark.parametrize("segment", [None, 1, 4], ids=["seg-auto", "seg1", "seg4"])
def test_recurrence_matches_reference(dtype, backend, shape, segment):
    B, C, H, W, T, dt = shape
    ins = wave_inputs(B, C, H, W, dtype, seed=B * 100 + T)
    Y_ref = nwm_recurrence_ref(*ins, dt, T)
    gY = torch.randn(Y_ref.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    grads_ref = torch.autograd.grad((Y_ref * gY).sum(), ins)

    Y = engine.nwm_recurrence(*ins, dt, T, backend=backend, segment=segment)
    assert Y.shape == (B, T, C, H, W) and Y.is_contiguous() and Y.dtype == dtype
    Y_seen = Y.detach().clone()
    grads = torch.autograd.grad((Y * gY).sum(), ins)
    assert torch.equal(Y, Y_seen)  # the backward reads the output, never writes it
    assert rel_err(Y, Y_ref) < TOL[dtype]
    for name, g, g_ref in zip(("y0", "omega", "alpha", "weight"), grads, grads_ref):
        assert rel_err(g, g_ref) < TOL[dtype], f"∂{name}: {rel_err(g, g_ref):.2e}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("shape", GRID[:4] + GRID[5:], ids=lambda s: "B{}C{}H{}W{}T{}dt{}".format(*s))
@pytest.mark.parametrize("segment", [None, 3])
@pytest.mark.parametrize("keep_states", [True, False], ids=["kept", "recomputed"])
def test_fused_linear_readout_matches_reference(dtype, backend, shape, segment, keep_states, monkeypatch):
    """feat = Σ_t P[:, t] y_t accumulated inside the recurrence = the einsum of LinearReadout,
    whether the forward keeps every segment's states for the backward or it recomputes them."""
    if not keep_states:
        monkeypatch.setattr(engine.recurrence, "CPU_KEEP_STATES_BYTES", 0)
    B, C, H, W, T, dt = shape
    ins = wave_inputs(B, C, H, W, dtype, seed=T)
    P_ref = (torch.randn(T // 2 + 1, T, generator=torch.Generator().manual_seed(2), dtype=dtype) / T).requires_grad_()
    f_ref = torch.einsum("btchw,kt->bkchw", nwm_recurrence_ref(*ins, dt, T), P_ref)
    gf = torch.randn(f_ref.shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    grads_ref = torch.autograd.grad((f_ref * gf).sum(), ins + [P_ref])

    P = P_ref.detach().clone().requires_grad_()
    f = engine.nwm_linear_features(*ins, dt, T, P, backend=backend, segment=segment)
    assert f.shape == f_ref.shape
    grads = torch.autograd.grad((f * gf).sum(), ins + [P])
    assert rel_err(f, f_ref) < TOL[dtype]
    for name, g, g_ref in zip(("y0", "omega", "alpha", "weight", "proj"), grads, grads_ref):
        assert rel_err(g, g_ref) < TOL[dtype], f"∂{name}: {rel_err(g, g_ref):.2e}"


# presets with small overrides so that the references run in milliseconds; image sizes H ≠ W
MODEL_CASES = [
    ("nwm-linear-tetrominoes", dict(T=12, head=(32, 32)), (2, 3, 9, 11)),
    ("nwm-linear-tetrominoes", dict(T=7, dt=0.2), (1, 3, 6, 5)),  # the paper's 256-wide head
    ("nwm-fft-mnist", dict(T=10, head=(24,)), (2, 1, 8, 6)),
    ("nwm-last-tetrominoes", dict(T=7, C=3, head=(16, 16)), (3, 3, 6, 5)),
    ("nwm-mean-polygons", dict(T=9, head=(16,)), (2, 1, 7, 7)),
    ("nwm-max-mnist", dict(T=6, head=(16,)), (1, 1, 5, 9)),
    ("nwm-linear-multi_mnist", dict(T=9), (2, 1, 10, 12)),  # C = 16, the 6-layer 32-wide head
    ("lstm-linear-tetrominoes", dict(T=6, head=(32, 32)), (2, 3, 7, 9)),
    ("lstm-fft-mnist", dict(T=5, head=(16,)), (1, 1, 6, 5)),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", MODEL_CASES, ids=lambda c: c[0] + "-" + "-".join(f"{k}{v}" for k, v in c[1].items()))
def test_model_fast_matches_reference(dtype, case):
    """Same weights: logits, the hidden sequence, the loss and every parameter gradient."""
    name, overrides, shape = case
    torch.manual_seed(0)
    model = create_model(name, **overrides).to(dtype)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(4), dtype=dtype)
    y = torch.randint(0, model.config.num_classes, (shape[0], *shape[2:]), generator=torch.Generator().manual_seed(5))
    out = {}
    for eng in ("reference", "fast"):
        model.engine = eng
        model.zero_grad()
        logits = model(x)
        F.cross_entropy(logits, y).backward()
        run = model.run(x)
        out[eng] = logits.detach(), run.logits.detach(), run.hidden.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}
    ref, fast = out["reference"], out["fast"]
    assert fast[0].shape == ref[0].shape == (shape[0], model.config.num_classes, *shape[2:])
    for what, a, b in (("logits", fast[0], ref[0]), ("run().logits", fast[1], ref[1]), ("hidden", fast[2], ref[2])):
        assert rel_err(a, b) < TOL[dtype], f"{what}: {rel_err(a, b):.2e}"
    assert set(fast[3]) == set(ref[3])
    for k in ref[3]:
        assert rel_err(fast[3][k], ref[3][k]) < TOL[dtype], f"∂{k}: {rel_err(fast[3][k], ref[3][k]):.2e}"


def test_paper_setting_float32_full_T():
    """The Tetrominoes preset as trained (T = 100, Δt = 0.1, 256-wide head) on a small image, float32."""
    torch.manual_seed(0)
    model = create_model("nwm-linear-tetrominoes")
    x, y = torch.rand(2, 3, 16, 12), torch.randint(0, 6, (2, 16, 12))
    assert_engines_agree(model, x, y, 1e-5)


def test_engine_changes_no_weights_or_checkpoints(tmp_path):
    """The engine is not part of the model: same parameters, keys and checkpoints as before."""
    model = create_model("nwm-linear-tetrominoes")
    assert model.engine == "auto" and model.uses_fast_engine
    assert count_params(model) == 176_124  # the paper's fingerprint
    ref = copy.deepcopy(model)
    ref.engine = "reference"
    assert list(ref.state_dict()) == list(model.state_dict())
    assert not hasattr(model.config, "engine")
    with pytest.raises(ValueError, match="valid: auto, fast, fast-bf16, reference"):
        model.engine = "turbo"
    path = tmp_path / "m.pt"
    save_checkpoint(path, ref, "nwm-linear-tetrominoes")
    loaded, _ = load_checkpoint(path)
    assert loaded.engine == "auto"  # a loaded model trains and predicts with the fast engine
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        loaded.engine = "reference"
        a = loaded(x)
        loaded.engine = "fast"
        assert rel_err(loaded(x), a) < 1e-5


def test_default_engine_from_environment(monkeypatch):
    monkeypatch.setenv("WAVEVIZ_ENGINE", "reference")
    assert create_model("nwm-linear-mnist").engine == "reference"
    assert create_model("lstm-linear-mnist").engine == "reference"
    monkeypatch.setenv("WAVEVIZ_ENGINE", "warp")
    with pytest.raises(ValueError, match="unknown engine 'warp'"):
        create_model("nwm-linear-mnist")


def test_without_a_compiler_the_torch_backend_takes_over(monkeypatch):
    monkeypatch.setenv("WAVEVIZ_CPU_KERNEL", "0")
    x = torch.zeros(1, 1, 2, 2)
    assert engine.cpu_kernel() is None
    assert engine.resolve_backend("auto", x) == "torch"
    with pytest.raises(RuntimeError, match="C backend is unavailable"):
        engine.resolve_backend("c", x)
    ins = wave_inputs(1, 2, 4, 3, torch.float32)
    assert rel_err(engine.nwm_recurrence(*ins, 0.1, 5), nwm_recurrence_ref(*ins, 0.1, 5)) < 1e-5


# (B, C, H, W, T, dt) for several threads: one image split by rows (H ≥ 2 threads), fewer images than
# threads, uneven ranges, and an image too short to split (empty ranges)
THREAD_GRID = [(1, 2, 9, 7, 12, 0.1), (2, 3, 11, 5, 9, 0.1), (5, 2, 6, 4, 6, 0.1), (1, 1, 3, 4, 5, 0.1)]


@pytest.mark.skipif(not HAS_C, reason="no C compiler for the CPU kernel")
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("shape", THREAD_GRID, ids=lambda s: "B{}C{}H{}W{}T{}dt{}".format(*s))
def test_c_kernel_threads_match_reference(threads, shape):
    """The C kernel on several threads (torch's OpenMP team, or its own pool) — by images, or by rows
    of one image with a barrier per step — is the reference to float64 rounding, features included."""
    B, C, H, W, T, dt = shape
    if engine.torch_openmp() and os.environ.get("CC") is None:  # the row split needs the OpenMP build
        assert hasattr(engine.cpu_kernel(), "nwm_fwd_omp_f64"), engine.cpu_kernel_status()
    ins = wave_inputs(B, C, H, W, torch.float64, seed=T)
    proj = torch.randn(T // 2 + 1, T, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_()
    Y_ref = nwm_recurrence_ref(*ins, dt, T)
    want = torch.einsum("btchw,kt->bkchw", Y_ref, proj)
    g = torch.randn(want.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grads_ref = torch.autograd.grad((want * g).sum(), [*ins, proj])
    torch.set_num_threads(threads)
    try:
        got = engine.nwm_linear_features(*ins, dt, T, proj, backend="c", segment=4)
        grads = torch.autograd.grad((got * g).sum(), [*ins, proj])
    finally:
        torch.set_num_threads(1)
    assert rel_err(got, want) < 1e-9
    for name, a, b in zip(("y0", "omega", "alpha", "weight", "proj"), grads, grads_ref):
        assert rel_err(a, b) < 1e-9, f"∂{name}: {rel_err(a, b):.2e}"


@pytest.mark.skipif(not HAS_C, reason="no C compiler for the CPU kernel")
@pytest.mark.slow
def test_c_kernel_without_openmp_uses_its_own_pool():
    """WAVEVIZ_CPU_OPENMP=0 builds the kernel without OpenMP; its thread pool computes the same."""
    code = """if 1:
        import torch
        from waveviz import engine
        from waveviz.models.lstm import convlstm_sequence_ref
        from waveviz.models.nwm import nwm_recurrence_ref
        torch.set_num_threads(2)
        g = torch.Generator().manual_seed(0)
        y0, om, al = (torch.rand(3, 2, 8, 6, generator=g, dtype=torch.float64) for _ in range(3))
        w = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64) * 0.4
        ins = [t.requires_grad_() for t in (y0, om, al, w)]
        got = engine.nwm_recurrence(*ins, 0.1, 11, backend="c")  # forward and adjoint on the pool
        ref = nwm_recurrence_ref(*ins, 0.1, 11)
        gg = torch.autograd.grad(got.square().sum(), ins)
        gr = torch.autograd.grad(ref.square().sum(), ins)
        err = max((got - ref).abs().max(), *((a - b).abs().max() for a, b in zip(gg, gr)))
        gn, wn, h = torch.randn(900, 6, generator=g), torch.randn(6, 40, generator=g), torch.rand(900, 40, generator=g) - 0.3
        want = torch.where(h > 0, gn @ wn, 0.0), gn.t().double() @ h.double()
        dw = engine.narrow_layer_backward(gn, wn, h)  # the head's narrow layer, on the pool too
        err2 = max((h - want[0]).abs().max() / want[0].abs().max(), (dw - want[1]).abs().max() / want[1].abs().max())
        from waveviz.models.layers import PixelMLP  # the ConvLSTM's loop, on the pool too
        gates = torch.nn.Conv2d(4, 8, 3, padding=1, padding_mode="circular").double()
        mlp = PixelMLP(2, 2, (4,)).double()
        ins = [torch.randn(3, 2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
        got = engine.convlstm_sequence(*ins, gates, mlp, 4)
        gg = torch.autograd.grad(got.square().sum(), [*ins, gates.weight])
        ref = convlstm_sequence_ref(*ins, gates, mlp, 4)
        gr = torch.autograd.grad(ref.square().sum(), [*ins, gates.weight])
        err = max(err, (got - ref).abs().max(), *((a - b).abs().max() for a, b in zip(gg, gr)))
        print(engine.cpu_kernel_status(), "|", float(err), "|", float(err2))
    """
    env = {**os.environ, "WAVEVIZ_CPU_OPENMP": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    status, err, err_narrow = out.strip().rsplit("|", 2)
    assert status.strip() == "compiled C kernel" and float(err) < 1e-12 and float(err_narrow) < 1e-6


# (P, N, K): blocks of 256 rows and a remainder, fewer rows than threads, one row, N at its limit
NARROW_GRID = [(1000, 6, 256), (3, 1, 7), (1, 4, 5), (700, 64, 33)]


@pytest.mark.skipif(not HAS_C, reason="no C compiler for the CPU kernel")
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape", NARROW_GRID, ids=lambda s: "P{}N{}K{}".format(*s))
def test_narrow_layer_backward_matches_torch(threads, shape):
    """The head's narrow-layer backward in C (one pass): ∂W = gᵀ·h and h ← (g·W) ⊙ (h > 0) in place,
    as float64 torch computes them to float32 rounding; zeros and NaNs in h handled like ReLU's backward."""
    P, N, K = shape
    gen = torch.Generator().manual_seed(P + N + K)
    g, w, h = torch.randn(P, N, generator=gen), torch.randn(N, K, generator=gen), torch.randn(P, K, generator=gen).relu()
    h[0, 0] = float("nan")
    want_dw = g.double().t() @ torch.nan_to_num(h.double())
    want_h = torch.where(h > 0, g.double() @ w.double(), 0.0)
    torch.set_num_threads(threads)
    try:
        got_h = h.clone()
        dw = engine.narrow_layer_backward(g, w, got_h)
    finally:
        torch.set_num_threads(1)
    assert dw.dtype == torch.float64 and dw.shape == (N, K)
    assert rel_err(got_h, want_h) < 1e-6 and got_h[0, 0] == 0  # NaN > 0 is false: ReLU's backward gives 0
    assert dw[:, 0].isnan().all() and rel_err(dw[:, 1:], want_dw[:, 1:]) < 1e-6  # a NaN input poisons its ∂W column


def test_narrow_layer_backward_declines_what_it_does_not_do():
    """Too many outputs, float64, a non-contiguous h: None, and h untouched."""
    g, w, h = torch.randn(10, 65), torch.randn(65, 8), torch.rand(10, 8)
    before = h.clone()
    assert engine.narrow_layer_backward(g, w, h) is None
    assert engine.narrow_layer_backward(g[:, :6].double(), w[:6].double(), h.double()) is None
    assert engine.narrow_layer_backward(g[:, :6], w[:6], torch.rand(8, 10).t()) is None
    assert torch.equal(h, before)


@pytest.mark.slow
def test_without_a_c_compiler_everything_falls_back(tmp_path):
    """No compiler (CC names none, an empty kernel cache): one warning, then the NWM, the ConvLSTM and
    the head run in torch ops and still equal the reference — what a machine without gcc gets."""
    code = """if 1:
        import warnings, torch
        from waveviz import engine
        from waveviz.presets import create_model
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            status = engine.cpu_kernel_status()
        errs = []
        for name in ("nwm-linear-tetrominoes", "lstm-linear-tetrominoes"):
            torch.manual_seed(0)
            model = create_model(name, T=5, head=(16,)).double()
            x = torch.rand(2, 3, 6, 5, dtype=torch.float64)
            out = {}
            for eng in ("reference", "fast"):
                model.engine = eng
                model.zero_grad()
                logits = model(x)
                logits.square().sum().backward()
                out[eng] = torch.cat([logits.flatten(), *(p.grad.flatten() for p in model.parameters())])
            errs.append(float((out["fast"] - out["reference"]).abs().max() / out["reference"].abs().max()))
        print(status, "|", len([w for w in caught if "CPU wave kernel is unavailable" in str(w.message)]), "|", max(errs))
    """
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc"), "WAVEVIZ_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    status, warned, err = (p.strip() for p in out.strip().rsplit("|", 2))
    assert status.startswith("unavailable (") and warned == "1" and float(err) < 1e-12, out


def test_backend_choice():
    assert engine.resolve_backend("auto", torch.zeros(1, dtype=torch.float16)) == "torch"
    with pytest.raises(ValueError, match="valid: auto, c, triton, torch"):
        engine.resolve_backend("cuda", torch.zeros(1))
    with pytest.raises(ValueError, match="float32/float64 CPU"):
        engine.resolve_backend("c", torch.zeros(1, dtype=torch.bfloat16))


@pytest.mark.skipif(not HAS_C, reason="no C compiler for the CPU kernel")
def test_c_tanh_is_accurate_and_keeps_nan():
    """The kernel's vectorised float tanh: ≤ 2 ulp from the float64 tanh everywhere; NaN stays NaN."""
    x = torch.cat([torch.linspace(-12, 12, 400_001), torch.logspace(-30, 1.5, 20_001), -torch.logspace(-30, 1.5, 20_001),
                   torch.tensor([0.0, -0.0, 50.0, -50.0, 1e30, -1e30])])
    y = engine.cpu_tanh(x).double()
    ref = torch.tanh(x.double())
    ulp = torch.from_numpy(__import__("numpy").spacing(ref.abs().float().numpy())).double()
    assert ((y - ref).abs() / ulp).max() <= 2.0
    assert torch.isnan(engine.cpu_tanh(torch.tensor([float("nan")]))).all()


@pytest.mark.skipif(not HAS_C, reason="no C compiler for the CPU kernel")
def test_c_sigmoid_is_accurate_and_keeps_nan():
    """The kernel's float logistic sigmoid (the ConvLSTM's gates): ≤ 4 ulp from float64 (below e^-87,
    within 1e-38: it gives ~6e-39 there, not the subnormals); NaN stays NaN."""
    x = torch.cat([torch.linspace(-90, 90, 400_001), torch.logspace(-30, 1.5, 20_001), -torch.logspace(-30, 1.5, 20_001),
                   torch.tensor([0.0, -0.0, 1e30, -1e30])])
    y = engine.cpu_sigmoid(x).double()
    ref = torch.sigmoid(x.double())
    ulp = torch.from_numpy(__import__("numpy").spacing(ref.abs().float().numpy())).double()
    normal = ref > 1e-37
    assert ((y - ref).abs() / ulp)[normal].max() <= 4.0 and (y - ref)[~normal].abs().max() < 1e-38
    assert torch.isnan(engine.cpu_sigmoid(torch.tensor([float("nan")]))).all()


# (B, C, M, H, W, T): the preset's C = 2, M = 4; one channel; wide MLP; fewer images than threads; tiny images
LSTM_GRID = [(3, 2, 4, 7, 9, 6), (2, 1, 3, 5, 4, 4), (1, 3, 8, 6, 6, 5), (4, 2, 4, 2, 3, 3)]


@pytest.mark.skipif(not HAS_C, reason="no C compiler for the CPU kernel")
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape", LSTM_GRID, ids=lambda s: "B{}C{}M{}H{}W{}T{}".format(*s))
def test_convlstm_kernel_matches_reference(threads, shape):
    """The ConvLSTM's T steps in C, on 1–3 threads: u_1 … u_T and the gradients of the initial states
    and of every parameter equal the torch loop's to float64 rounding."""
    from waveviz.models.layers import PixelMLP

    B, C, M, H, W, T = shape
    torch.manual_seed(B * 100 + C * 10 + M)
    gates = torch.nn.Conv2d(2 * C, 4 * C, 3, padding=1, padding_mode="circular").double()
    mlp = PixelMLP(C, C, (M,)).double()
    ins = [torch.randn(B, C, H, W, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    params = [*gates.parameters(), *mlp.parameters()]
    want = convlstm_sequence_ref(*ins, gates, mlp, T)
    g = torch.randn(want.shape, dtype=torch.float64)
    grads_ref = torch.autograd.grad((want * g).sum(), [*ins, *params])
    assert engine.convlstm_usable(ins[0], gates, mlp)
    torch.set_num_threads(threads)
    try:
        got = engine.convlstm_sequence(*ins, gates, mlp, T)
        grads = torch.autograd.grad((got * g).sum(), [*ins, *params])
    finally:
        torch.set_num_threads(1)
    assert got.shape == (B, T, C, H, W) and rel_err(got, want) < 1e-12
    names = ["u0", "h0", "c0", "gates.weight", "gates.bias", "mlp.w1", "mlp.b1", "mlp.w2", "mlp.b2"]
    for name, a, b in zip(names, grads, grads_ref):
        assert rel_err(a, b) < 1e-11, f"∂{name}: {rel_err(a, b):.2e}"


def test_convlstm_kernel_only_where_it_computes_the_model():
    """Not under autocast (an --amp ConvLSTM learnt bf16 rounding), nor for other convolutions or MLPs,
    nor off the CPU formats; inference without gradients works and matches."""
    from waveviz.models.layers import PixelMLP

    torch.manual_seed(0)
    gates, mlp = torch.nn.Conv2d(4, 8, 3, padding=1, padding_mode="circular"), PixelMLP(2, 2, (4,))
    u = torch.randn(2, 2, 5, 6)
    assert engine.convlstm_usable(u, gates, mlp) == HAS_C
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not engine.convlstm_usable(u, gates, mlp)
    assert not engine.convlstm_usable(u.half(), gates, mlp)
    assert not engine.convlstm_usable(u, torch.nn.Conv2d(4, 8, 3, padding=1), mlp)  # zero padding
    assert not engine.convlstm_usable(u, gates, PixelMLP(2, 2, (4, 4)))
    assert not engine.convlstm_usable(u.double(), gates, mlp)  # float64 states, float32 weights
    if HAS_C:
        with torch.inference_mode():
            got = engine.convlstm_sequence(u, u.cos(), u.sin(), gates, mlp, 4)
            assert rel_err(got, convlstm_sequence_ref(u, u.cos(), u.sin(), gates, mlp, 4)) < 1e-5


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_divergence_stays_visible(backend):
    """A NaN anywhere ends as NaN in the output, so the trainer's divergence check still fires."""
    y0, om, al, w = (t.detach() for t in wave_inputs(2, 2, 5, 4, torch.float32))
    y0[1, 0, 2, 2] = float("nan")
    Y = engine.nwm_recurrence(y0, om, al, w, 0.1, 6, backend=backend)
    assert torch.isnan(Y[1]).any() and torch.isfinite(Y[0]).all()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_mixed_dtypes_are_refused(backend):
    """float32 y0 with float64 ω: one clear line, never a kernel reading a buffer as the wrong type
    (the reference refuses such a mix too)."""
    y0, om, al, w = (t.detach() for t in wave_inputs(2, 2, 5, 4, torch.float64))
    with pytest.raises(AssertionError, match="must share a dtype"):
        engine.nwm_recurrence(y0.float(), om, al, w, 0.1, 9, backend=backend)
    with pytest.raises(RuntimeError):
        nwm_recurrence_ref(y0.float(), om, al, w, 0.1, 9)


@pytest.mark.parametrize("name", ["nwm-linear-polygons", "lstm-linear-polygons"])
def test_empty_batch(name):
    """A data-parallel rank can get no image in the last batch: forward and backward still work."""
    model = create_model(name, T=8, head=(16,), width=4)
    x, y = torch.rand(0, 1, 16, 12), torch.randint(0, 5, (0, 16, 12))
    logits = model(x)
    assert logits.shape == (0, 5, 16, 12) and model.run(x).hidden.shape == (0, 8, model.config.C, 16, 12)
    F.cross_entropy(logits, y, reduction="sum").backward()
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


def test_auto_segment():
    """Segments fit the per-buffer budget, are never shorter than √(2T/3) (nor, on CPU, than
    T / CPU_MAX_SEGMENTS), and tile T evenly."""
    assert engine.auto_segment(100, 2 * 64 * 64, 4) == 100  # one image: one segment
    assert engine.auto_segment(100, 64 * 2 * 64 * 64, 4, "cuda") == 100
    assert engine.auto_segment(100, 16 * 2 * 64 * 64, 4) == 34  # 2 cores, B = 16: 3 segments fit 24 MB
    assert engine.auto_segment(100, 64 * 2 * 64 * 64, 4) == 34  # B = 64: still 3, past the budget
    for T, numel, dev in ((100, 16 * 2 * 64 * 64, "cpu"), (100, 64 * 2 * 64 * 64, "cpu"),
                          (100, 64 * 16 * 128 * 128, "cuda"), (500, 64 * 16 * 128 * 128, "cuda"), (7, 10**9, "cpu")):
        s = engine.auto_segment(T, numel, 4, dev)
        floor = max(math.ceil(math.sqrt(2 * T / 3)), math.ceil(T / engine.CPU_MAX_SEGMENTS) if dev == "cpu" else 1)
        budget = engine.SEGMENT_BUFFER_BYTES["cpu" if dev == "cpu" else "other"]
        assert 1 <= s <= T
        assert s * numel * 4 <= budget or s <= floor + 1, (T, numel, s)
        assert s >= min(T, floor) and math.ceil(T / s) * s - T < math.ceil(T / s)  # near-equal segments


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("k_last", [False, True], ids=["k-major", "k-innermost"])
def test_head_matches_pixel_mlp(dtype, k_last):
    """The fused head on both feature layouts = PixelMLP on the readout's (B, K·C, H, W)."""
    torch.manual_seed(0)
    B, K, C, H, W = 2, 5, 3, 4, 6
    mlp = PixelMLP(K * C, 4, (16, 8)).to(dtype)
    f = torch.randn(B, C, H, W, K, dtype=dtype).permute(0, 4, 1, 2, 3) if k_last else torch.randn(B, K, C, H, W, dtype=dtype)
    f.requires_grad_()
    ref = mlp(f.reshape(B, K * C, H, W))
    g = torch.randn(ref.shape, dtype=dtype)
    grads_ref = torch.autograd.grad((ref * g).sum(), [f, *mlp.parameters()])
    out = engine.fast_head(f, mlp)
    grads = torch.autograd.grad((out * g).sum(), [f, *mlp.parameters()])
    assert rel_err(out, ref) < TOL[dtype]
    for a, b in zip(grads, grads_ref):
        assert rel_err(a, b) < TOL[dtype]


@pytest.mark.parametrize("k_last", [False, True], ids=["k-major", "k-innermost"])
def test_bf16_head_is_as_exact_as_autocast(k_last):
    """fast_head(bf16=True) is as close to the float64 head as the plain PixelMLP under bfloat16
    autocast is (bf16 operands, float32 accumulation), output and every gradient; float32 in and out."""
    torch.manual_seed(0)
    B, K, C, H, W = 2, 6, 2, 12, 10
    mlp = PixelMLP(K * C, 5, (64, 32))
    f = torch.randn(B, C, H, W, K).permute(0, 4, 1, 2, 3) if k_last else torch.randn(B, K, C, H, W)
    f.requires_grad_()
    g = torch.randn(B, 5, H, W)

    def run(head, m):
        out = head(m)
        return [out.double(), *torch.autograd.grad((out * g).sum(), [f, *m.parameters()])]

    exact = run(lambda m: m(f.double().reshape(B, K * C, H, W)), copy.deepcopy(mlp).double())
    auto = run(lambda m: _autocast_head(m, f), mlp)
    fast = run(lambda m: engine.fast_head(f, m, bf16=True), mlp)
    for i, (a, b, e) in enumerate(zip(fast, auto, exact)):
        err_fast, err_auto = (((t.double() - e.double()).norm() / e.double().norm()).item() for t in (a, b))
        assert 1e-4 < err_auto < 0.1 and err_fast < 2 * err_auto, (i, err_fast, err_auto)  # bf16: ~2⁻⁸ per term
        assert i > 0 or err_fast > 1e-4  # the products did run in bf16 (float32 would be ~1e-7 off)
    assert engine.fast_head(f, mlp, bf16=True).dtype == torch.float32


def _autocast_head(mlp, f):
    B, K, C, H, W = f.shape
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return mlp(f.reshape(B, K * C, H, W)).float()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason=NO_CUDA))])
@pytest.mark.parametrize("name", ["nwm-linear-tetrominoes", "nwm-fft-tetrominoes", "lstm-linear-tetrominoes"])
def test_fast_bf16_engine_keeps_the_function(name, device):
    """engine="fast-bf16": only the head's products are bfloat16. Against the float32 reference on
    the same weights: logits within 2 %, the same argmax almost everywhere, the gradient pointing
    the same way (cosine > 0.999). test_fast_bf16_keeps_a_shipped_models_accuracy checks a trained model."""
    torch.manual_seed(0)
    base = create_model(name, T=24).to(device)
    x, y = torch.rand(2, 3, 24, 20, device=device), torch.randint(0, 6, (2, 24, 20), device=device)
    res = {}
    for eng in ("reference", "fast-bf16"):
        model = copy.deepcopy(base)
        model.engine = eng
        assert model.bf16_head == (eng == "fast-bf16")
        logits = model(x)
        F.cross_entropy(logits, y).backward()
        res[eng] = logits.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])
    (lo, gr), (lo_ref, gr_ref) = res["fast-bf16"], res["reference"]
    assert lo.dtype == torch.float32 and rel_err(lo, lo_ref) < 2e-2
    assert (lo.argmax(1) == lo_ref.argmax(1)).float().mean() > 0.99
    assert F.cosine_similarity(gr.double(), gr_ref.double(), dim=0) > 0.999


def test_inference_mode_and_autocast():
    torch.manual_seed(0)
    model = create_model("nwm-linear-tetrominoes", T=8, head=(32,))
    x = torch.rand(2, 3, 6, 7)
    with torch.inference_mode():
        model.engine = "reference"
        ref = model(x)
        model.engine = "auto"
        assert rel_err(model(x), ref) < 1e-5
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the trainer's --amp: head in bf16, recurrence in fp32
        logits = model(x)
    assert torch.isfinite(logits).all() and rel_err(logits.float(), ref) < 0.05
    logits.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# ---------------------------------------------------------------- GPU (skipped without CUDA)


@pytest.fixture
def exact_cuda():
    """cuDNN's default TF32 convolutions would make the *reference* inexact (≈1e-3); switch them off."""
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


def _has_triton() -> bool:
    try:
        engine.load_triton_kernels()
        return True
    except ImportError:
        return False


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", [MODEL_CASES[0], MODEL_CASES[6], MODEL_CASES[7]], ids=lambda c: c[0])
def test_cuda_model_matches_reference(dtype, case, exact_cuda):
    name, overrides, shape = case
    torch.manual_seed(0)
    model = create_model(name, **overrides).to("cuda", dtype)
    x = torch.rand(shape, dtype=dtype, device="cuda")
    y = torch.randint(0, model.config.num_classes, (shape[0], *shape[2:]), device="cuda")
    assert_engines_agree(model, x, y, TOL[dtype])


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize("shape", GRID, ids=lambda s: "B{}C{}H{}W{}T{}dt{}".format(*s))
def test_cuda_recurrence_matches_reference(shape, exact_cuda):
    B, C, H, W, T, dt = shape
    ins = wave_inputs(B, C, H, W, torch.float64, device="cuda")
    Y_ref = nwm_recurrence_ref(*ins, dt, T)
    grads_ref = torch.autograd.grad(Y_ref.square().sum(), ins)
    Y = engine.nwm_recurrence(*ins, dt, T)
    grads = torch.autograd.grad(Y.square().sum(), ins)
    assert rel_err(Y, Y_ref) < 1e-9
    for a, b in zip(grads, grads_ref):
        assert rel_err(a, b) < 1e-9


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.skipif(torch.cuda.is_available() and not _has_triton(), reason="triton is not installed")
@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "per-step"])
@pytest.mark.parametrize("shape", GRID + [(2, 2, 64, 64, 25, 0.1), (2, 16, 40, 36, 6, 0.1)],
                         ids=lambda s: "B{}C{}H{}W{}T{}dt{}".format(*s))
def test_cuda_triton_matches_reference(shape, persistent, exact_cuda, monkeypatch):
    """Both launch plans of the Triton kernel: one program per image across steps, or a grid per step."""
    if not persistent:
        monkeypatch.setattr(engine.TritonBackend, "PERSISTENT_MAX", 0)
    assert engine.resolve_backend("auto", torch.zeros(1, device="cuda")) == "triton"
    B, C, H, W, T, dt = shape
    ins = wave_inputs(B, C, H, W, torch.float32, device="cuda")
    P = torch.randn(T // 2 + 1, T, device="cuda", requires_grad=True)
    Y_ref = nwm_recurrence_ref(*ins, dt, T)
    f_ref = torch.einsum("btchw,kt->bkchw", Y_ref, P)
    grads_ref = torch.autograd.grad(Y_ref.square().sum() + f_ref.square().sum(), ins + [P])
    Y = engine.nwm_recurrence(*ins, dt, T, backend="triton", segment=max(1, T // 3))
    f = engine.nwm_linear_features(*ins, dt, T, P, backend="triton", segment=max(1, T // 3))
    grads = torch.autograd.grad(Y.square().sum() + f.square().sum(), ins + [P])
    assert rel_err(Y, Y_ref) < 1e-5 and rel_err(f, f_ref) < 1e-5
    for a, b in zip(grads, grads_ref):
        assert rel_err(a, b) < 1e-5


@pytest.mark.slow
def test_fast_bf16_keeps_a_shipped_models_accuracy():
    """The shipped NWM (linear readout, Tetrominoes) on 24 fresh samples: fast-bf16 segments as the
    float32 engine does (≥ 99.9 % of pixels alike, FG-IoU within 0.005)."""
    from waveviz.data import make_dataset, to_tensors
    from waveviz.metrics import segmentation_metrics
    from waveviz.paths import shipped_checkpoints

    model, _ = load_checkpoint(shipped_checkpoints() / "nwm-linear-tetrominoes.pt")
    x, y = to_tensors(make_dataset("tetrominoes", 24, seed=10_000, split="test"))
    out = {}
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            for eng in ("fast", "fast-bf16"):
                model.engine = eng
                out[eng] = model.eval()(x)
    finally:
        torch.set_num_threads(1)
    agree = (out["fast"].argmax(1) == out["fast-bf16"].argmax(1)).float().mean().item()
    iou = {k: segmentation_metrics(v, y)["fg_iou"] for k, v in out.items()}
    # the shipped model scores ~0.4-0.5 on the paper-faithful data (checkpoints/README.md): agreement is the point
    assert agree > 0.999 and abs(iou["fast"] - iou["fast-bf16"]) < 0.005 and iou["fast"] > 0.3, (agree, iou)


def _thp_always() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
@pytest.mark.skipif(_thp_always(), reason="huge pages everywhere: page-fault counts are not 4 KB pages")
@pytest.mark.slow
def test_retain_freed_memory_stops_page_faults_on_reuse():
    """After `retain_freed_memory`, freed 64 MB tensors are soon reused without page faults;
    a user's own MALLOC_* setting is left alone."""
    code = """if 1:
        import resource, sys, torch
        from waveviz import engine
        if sys.argv[1] == "retain":
            print(engine.retain_freed_memory(), "|", engine.retain_freed_memory())
        def faults():
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):  # 64 MB, freed at once: glibc's holes settle after a few rounds
            torch.ones(16 * 2**20)
        f0 = faults()
        for _ in range(10):
            torch.ones(16 * 2**20)
        print(faults() - f0)
    """
    def run(mode, **env):
        base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "WAVEVIZ_MALLOC"}
        out = subprocess.run([sys.executable, "-c", code, mode], env={**base, **env}, capture_output=True,
                             text=True, check=True).stdout.strip().splitlines()
        return out[:-1], int(out[-1])

    (status,), kept = run("retain")
    first, again = status.split(" | ")
    assert first == again and "kept for reuse" in first
    _, fresh = run("default")
    assert fresh > 10 * 16_000 and kept <= 16_384, (fresh, kept)  # 64 MB = 16,384 pages, faulted in each time
    (status,), _ = run("retain", MALLOC_ARENA_MAX="2")
    assert status.startswith("glibc, as set by MALLOC_ARENA_MAX")
