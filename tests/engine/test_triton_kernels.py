"""The CUDA wave kernels (Triton) without a GPU: they compile for Hopper (sm_90, the H100/H200) and,
run by Triton's CPU interpreter, compute what the torch backend computes — forward and adjoint, both
ways of computing the coupling (outer products below 16 channels, tensor-core dots from 16), and
both launch plans (one persistent program per image, one launch per step). A compile error in the
16-channel path once reached a GPU unseen; these tests catch that class of bug on any CI machine
that has triton (`.ci/run` installs it). The same comparison on real CUDA is in test_engine.py."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

triton = pytest.importorskip("triton")

PTR = "*fp32"
FWD_ARGS = dict(Yin=PTR, Zin=PTR, OM=PTR, AL=PTR, Wr=PTR, Y=PTR, Z=PTR, dt="fp32", n="i32", j0="i32", tiles="i32",
                ysb="i32", ysj="i32", zsb="i32", zsj="i32", C="i32", H="i32", W="i32", CP="constexpr", BP="constexpr")
BWD_ARGS = dict(Yin=PTR, Zin=PTR, OM=PTR, AL=PTR, Wr=PTR, Y=PTR, Z=PTR, G=PTR, S=PTR, YB=PTR, ZB=PTR, DOM=PTR, DAL=PTR,
                dt="fp32", n="i32", jtop="i32", tiles="i32", ysb="i32", ysj="i32", zsb="i32", zsj="i32",
                gsb="i32", gsj="i32", ssb="i32", ssj="i32", C="i32", H="i32", W="i32",
                PHASE="constexpr", CP="constexpr", BP="constexpr")


@pytest.mark.parametrize("CP,BP", [(2, 1024), (4, 512), (16, 128), (32, 64)])
@pytest.mark.slow
def test_kernels_compile_for_hopper(CP, BP):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from waveviz import engine

    fwd, bwd = engine.load_triton_kernels()
    target = GPUTarget("cuda", 90, 32)
    kernels = [(fwd, FWD_ARGS, {"CP": CP, "BP": BP})]
    kernels += [(bwd, BWD_ARGS, {"PHASE": p, "CP": CP, "BP": BP}) for p in (0, 1, 2)]
    for fn, sig, consts in kernels:
        for const_one in ({}, {"n": 1, "tiles": 1}):  # per-step launches pass n = tiles = 1, which Triton specialises
            s = {**sig, **{k: "constexpr" for k in const_one}}
            src = ASTSource(fn=fn, signature=s, constexprs={**consts, **const_one})
            compiled = triton.compile(src, target=target, options={"num_warps": 8})  # as launched
            assert ".target sm_90" in compiled.asm["ptx"]


INTERPRETED = textwrap.dedent("""
    import os, sys
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from triton.runtime import interpreter as I

    # Triton's interpreter turns a scalar argument into a 1-element array and `range(n)` calls int()
    # on it, which numpy >= 2.? refuses for arrays of one dimension; index its single element instead.
    if hasattr(I, "_patch_lang_tensor"):
        _orig = I._patch_lang_tensor
        def _patched(tensor, scope):
            _orig(tensor, scope)
            scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))
        I._patch_lang_tensor = _patched

    from waveviz import engine
    engine.TritonBackend.PERSISTENT_MAX = int(sys.argv[1])  # 0: one launch per step
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    # C = CP (2, 16) and C < CP (3 → 4, 20 → 32) for the channel masks; 12² and 9² with 20 channels
    # span several pixel blocks of one image (BP = 2048 / CP)
    for B, C, H, W, T, seg in [(2, 2, 6, 7, 6, 4), (1, 16, 9, 10, 4, 3), (1, 3, 24, 30, 3, 2), (1, 20, 9, 9, 3, 2)]:
        ins = [torch.randn(B, C, H, W, generator=g).tanh(), torch.rand(B, C, H, W, generator=g),
               torch.rand(B, C, H, W, generator=g) * 0.3, torch.randn(C, C, 3, 3, generator=g) * 0.3 / C]
        ins = [t.requires_grad_() for t in ins]
        proj = torch.randn(3, T, generator=g)
        for p in (None, proj):
            res = []
            for be in ("triton", "torch"):
                f = engine.WaveFunction.apply(*ins, p, 0.1, T, seg, be)
                w = torch.randn(f.shape, generator=torch.Generator().manual_seed(1))
                res.append([f.detach(), *torch.autograd.grad((f * w).sum(), ins)])
            worst = max(worst, *(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(*res)))
    print(worst)
""")


@pytest.mark.slow
@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "per-step"])
def test_interpreted_kernels_match_torch_backend(persistent):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-c", INTERPRETED, str(32 * 1024 if persistent else 0)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert float(r.stdout.strip().splitlines()[-1]) < 1e-5
