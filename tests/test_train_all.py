"""scripts/train_all.py, the prepared multi-preset run, at toy size: several presets at once, one log
each beginning with its command, a continuation appended, unknown presets refused."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_all.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_parallel_tiny_recipe_then_resume(tmp_path):
    r = run("--out", str(tmp_path), "--tiny", "--parallel", "2", "--only", "cnn8-tetrominoes", "unet3-multi_mnist")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(ln.split(":")[0] for ln in r.stdout.splitlines()) == ["cnn8-tetrominoes", "unet3-multi_mnist"]
    for preset in ("cnn8-tetrominoes", "unet3-multi_mnist"):
        assert (tmp_path / f"{preset}.pt").is_file()
        assert (tmp_path / f"{preset}.log").read_text().startswith(f"waveviz train {preset} ")
    r = run("--out", str(tmp_path), "--tiny", "--only", "cnn8-tetrominoes", "--resume", "--max-minutes", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    log = (tmp_path / "cnn8-tetrominoes.log").read_text()
    assert log.count("waveviz train cnn8-tetrominoes") == 2 and "--resume --max-minutes 1 " in log


def test_refuses_what_is_not_in_the_recipe(tmp_path):
    r = run("--out", str(tmp_path), "--only", "nwm-linear-nothing")
    assert r.returncode == 2 and "not in the recipe: nwm-linear-nothing" in r.stderr
