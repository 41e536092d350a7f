"""`waveviz bench` at toy size: every engine timed on the same weights, ratios, checks, the tables."""
import json

import pytest
import torch

from waveviz import bench
from waveviz.cli import main

TINY = ["--set", "T=6", "--set", "head=(16,)", "--image-size", "12", "--batch", "2", "--steps", "1",
        "--inference-runs", "1", "--threads", "1", "--device", "cpu"]


@pytest.fixture(autouse=True)
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
def test_bench_reports_every_engine(tmp_path, capsys):
    js, md = tmp_path / "b.json", tmp_path / "b.md"
    assert main(["bench", *TINY, "--json", str(js), "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    report = json.loads(js.read_text())
    (r,) = report["results"]
    assert list(r["engines"]) == list(bench.TIMED_ENGINES) == ["reference", "fast", "fast-bf16"]
    for eng, e in r["engines"].items():
        assert e["train_step_s"] > 0 and e["inference_1_image_s"] > 0 and e["images_per_s"] == pytest.approx(2 / e["train_step_s"])
        if eng != "reference":  # each fast engine against the reference of the same run
            ref = r["engines"]["reference"]
            assert e["speedup_train"] == pytest.approx(ref["train_step_s"] / e["train_step_s"])
            assert e["memory_ratio"] == pytest.approx(e["peak_memory_bytes"] / ref["peak_memory_bytes"])
    assert r["speedup_train"] == r["engines"]["fast"]["speedup_train"]
    chk = r["check"]
    # float32 fast: the reference's function, to the README's 1e-5 (measured here: 1.5e-7 and 1.9e-6)
    assert chk["logits_rel_err"] < 1e-5 and chk["grad_rel_err"] < 1e-5
    assert 1e-5 < chk["bf16"]["logits_rel_err"] < 3e-2 and chk["bf16"]["grad_cosine"] > 0.99  # bf16: close, not equal
    assert chk["bf16"]["worst_param_cosine"] <= chk["bf16"]["grad_cosine"] + 1e-9 and chk["bf16"]["worst_param"]
    env = report["environment"]
    assert env["device"] == "cpu" and "allocator" in env and "cpu_kernel" in env and "bf16_native" in env
    assert f"({torch.backends.cpu.get_cpu_capability()})" in env["hardware"]
    table = md.read_text()
    assert table.strip() == out.strip()
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert [ln.split("|")[2].strip() for ln in rows] == ["reference", "fast", "fast-bf16"]
    assert "bf16 head: logits within" in rows[2] and "max rel. error vs reference" in rows[1]


@pytest.mark.parametrize("argv, code, message", [
    (["--preset", "cnn8-tetrominoes"], 2, "only the recurrent models"),
    (["--set", "colour=3"], 1, "unknown setting(s) colour"),
    (["--batch", "0"], 2, "must be ≥ 1"),
])
def test_bench_refuses_bad_settings(argv, code, message, capsys):
    assert main(["bench", *argv]) == code
    err = capsys.readouterr().err
    assert err.startswith("waveviz: error") and message in err and len(err.strip().splitlines()) == 1
