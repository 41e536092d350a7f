"""bfloat16 on a CPU without it: `engine.bf16_autocast` / `bf16_products` run autocast's bf16
matrix products and convolutions in float32 on the bf16 values (one rounding, as native bf16
kernels do) instead of torch's own emulation, 5–40× slower than float32 on such CPUs.

Checked: the emulated ops round like an exact product rounded once; no bf16 product reaches a
kernel under emulation, in the forward or the backward of an --amp train step; emulation and
torch's own bf16 kernels give the same models' outputs and gradients to bf16 rounding; who decides.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from waveviz import engine
from waveviz.data import make_dataset, to_tensors
from waveviz.models.layers import PixelMLP
from waveviz.presets import create_model
from waveviz.training import TrainConfig, Trainer

BF = torch.bfloat16
PRODUCTS = engine.Bf16Products.OPS


class _SeenProducts(TorchDispatchMode):
    """Records the dtypes of every product that reaches the kernels below it."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, set]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in PRODUCTS:
            dtypes = {t.dtype for t in tree_leaves((args, kwargs or {})) if isinstance(t, torch.Tensor)}
            self.seen.append((str(func.overloadpacket), dtypes))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def emulate(monkeypatch):
    monkeypatch.setenv("WAVEVIZ_BF16", "emulate")


def _bf(*shape, g):
    return torch.randn(*shape, generator=g).to(BF)


CASES = {
    "linear": lambda x, w, b, v, k: F.linear(x, w, b),
    "linear-3d": lambda x, w, b, v, k: F.linear(x.view(4, 16, 96), w, b),
    "addmm": lambda x, w, b, v, k: torch.addmm(b, x, w.t()),
    "mm-out": lambda x, w, b, v, k: torch.mm(x, w.t(), out=torch.empty(64, 40, dtype=x.dtype)),
    "bmm": lambda x, w, b, v, k: torch.bmm(x.view(4, 16, 96), w.t().expand(4, 96, 40)),
    "conv2d": lambda x, w, b, v, k: F.conv2d(v, k, padding=1),
    "conv_transpose2d": lambda x, w, b, v, k: F.conv_transpose2d(v, k.transpose(0, 1), padding=1),
}


@pytest.mark.parametrize("op", list(CASES))
def test_emulated_products_round_once(op):
    """Each emulated product equals the exact (float64) product of the same bf16 values rounded once
    to bf16 (to float32 summation error), returns bf16, and reaches the kernel in float32."""
    g = torch.Generator().manual_seed(0)
    args = _bf(64, 96, g=g), _bf(40, 96, g=g), _bf(40, g=g), _bf(2, 24, 9, 11, g=g), _bf(16, 24, 3, 3, g=g)
    exact = CASES[op](*(a.double() for a in args)).to(BF)
    seen = _SeenProducts()
    with seen, engine.Bf16Products():
        got = CASES[op](*args)
    assert got.dtype == BF and got.shape == exact.shape
    assert seen.seen and all(torch.float32 in d and BF not in d for _, d in seen.seen), seen.seen
    ulp = exact.double().abs().clamp_min(1e-3) * 2.0 ** -7  # one bf16 step, at most
    assert ((got.double() - exact.double()).abs() <= ulp).all()


def test_a_backward_under_emulation_runs_float32_products():
    """Gradients of a bf16 conv and linear, taken inside `bf16_products`: no bf16 product below."""
    g = torch.Generator().manual_seed(1)
    v = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    conv, lin = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Linear(4, 5)
    seen = _SeenProducts()
    with seen, torch.autocast("cpu", dtype=BF), engine.Bf16Products():
        out = lin(conv(v).permute(0, 2, 3, 1))
    with seen, engine.Bf16Products():
        out.float().square().sum().backward()
    assert "aten.convolution_backward" in {s for s, _ in seen.seen} and all(BF not in d for _, d in seen.seen)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in (*conv.parameters(), *lin.parameters()))


def test_who_decides(monkeypatch):
    """Emulated on a CPU without native bf16 (or unknown); never on CUDA; WAVEVIZ_BF16 overrides."""
    monkeypatch.delenv("WAVEVIZ_BF16", raising=False)
    for native, want in ((True, False), (False, True), (None, True)):
        monkeypatch.setattr(engine.bf16, "cpu_bf16_native", lambda n=native: n)
        assert engine.bf16_emulated("cpu") is want and engine.bf16_emulated("cuda") is False
        assert isinstance(engine.bf16_products("cpu"), engine.Bf16Products) is want
    monkeypatch.setenv("WAVEVIZ_BF16", "native")
    assert not engine.bf16_emulated("cpu")
    monkeypatch.setattr(engine.bf16, "cpu_bf16_native", lambda: True)
    monkeypatch.setenv("WAVEVIZ_BF16", "emulate")
    assert engine.bf16_emulated("cpu")
    with engine.bf16_autocast("cpu", enabled=False):
        assert not torch.is_autocast_enabled("cpu")
    with engine.bf16_autocast("cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == BF


@pytest.mark.parametrize("name", ["nwm-linear-tetrominoes", "lstm-linear-tetrominoes"])
def test_emulated_autocast_matches_torchs_bf16(name, monkeypatch):
    """A model's logits and gradients under `bf16_autocast`, emulated and with torch's own bf16
    kernels: the same to bf16 rounding (both far from float32, so the bf16 path really ran)."""
    torch.manual_seed(0)
    model = create_model(name, T=12, head=(64, 64))
    x, y = torch.rand(2, 3, 16, 14), torch.randint(0, 6, (2, 16, 14))
    res = {}
    for mode in ("native", "emulate", "float32"):
        monkeypatch.setenv("WAVEVIZ_BF16", "native" if mode == "float32" else mode)
        m = copy.deepcopy(model)
        with engine.bf16_autocast("cpu", enabled=mode != "float32"):
            logits = m(x).float()
        with engine.bf16_products("cpu"):
            F.cross_entropy(logits, y).backward()
        res[mode] = logits.detach(), torch.cat([p.grad.flatten() for p in m.parameters()])
    (lo_e, gr_e), (lo_n, gr_n), (lo_f, _) = res["emulate"], res["native"], res["float32"]
    spread = (lo_n - lo_f).norm() / lo_f.norm()
    assert spread > 1e-3  # bf16 made a difference …
    assert (lo_e - lo_n).norm() / lo_n.norm() < spread  # … and emulation is nearer torch's bf16 than float32 is
    assert F.cosine_similarity(gr_e.double(), gr_n.double(), dim=0) > 0.999


def test_fast_bf16_head_emulated(emulate):
    """engine fast-bf16's head on a CPU without bf16: float32 products on bf16 values, forward and
    backward, as close to the float64 head as torch's bf16 autocast is."""
    torch.manual_seed(0)
    mlp = PixelMLP(12, 5, (64, 32))
    f = torch.randn(2, 6, 2, 12, 10, requires_grad=True)
    seen = _SeenProducts()
    with seen:
        out = engine.fast_head(f, mlp, bf16=True)
        out.square().sum().backward()
    assert out.dtype == torch.float32 and len(seen.seen) >= 6 and all(BF not in d for _, d in seen.seen), seen.seen
    exact = mlp.double()(f.detach().double().reshape(2, 12, 12, 10))
    err = ((out.double() - exact).norm() / exact.norm()).item()
    assert 1e-4 < err < 2e-2  # bf16 operands (float32 products would be ~1e-7 off)


@pytest.mark.parametrize("mode", ["native", "emulate"])
def test_trainer_says_when_fast_bf16_is_emulated(mode, monkeypatch):
    import warnings

    monkeypatch.setenv("WAVEVIZ_BF16", mode)
    data = torch.rand(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(create_model("nwm-linear-tetrominoes", T=4, head=(8,)), data, data,
                TrainConfig(epochs=1, batch_size=2, engine="fast-bf16"))
    said = [w for w in caught if "fast-bf16's products are emulated" in str(w.message)]
    assert len(said) == (mode == "emulate")


def test_amp_training_emulated_runs_no_bf16_product(emulate, tmp_path):
    """An --amp epoch on CPU under emulation: every product of the forward and of the backward
    reaches its kernel in float32 (the trainer wraps its backward too), and the loss is finite."""
    torch.manual_seed(0)
    x, y = to_tensors(make_dataset("tetrominoes", 8, seed=3, split="train"))
    data = x[..., :16, :16].contiguous(), y[..., :16, :16].contiguous()
    model = create_model("nwm-linear-tetrominoes", T=8, head=(32,))
    trainer = Trainer(model, data, data, TrainConfig(epochs=1, batch_size=4, amp=True))
    seen = _SeenProducts()
    with seen:
        loss = trainer.train_epoch()
    assert seen.seen and all(BF not in d for _, d in seen.seen), [s for s in seen.seen if BF in s[1]][:3]
    assert "aten.convolution_backward" in {s for s, _ in seen.seen}
    assert loss == loss and loss < 10
