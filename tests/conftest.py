"""Shared fixtures. Others may append their own below."""
from __future__ import annotations

from pathlib import Path

import os
import tempfile

import pytest
import torch


def pytest_configure(config):
    """Tests see no user data cache (no fetched MNIST) unless a test builds one: the same results on
    every machine. Subprocesses inherit this."""
    os.environ["WAVEVIZ_DATA"] = tempfile.mkdtemp(prefix="waveviz-test-data-")

# name → (preset, overrides): tiny but real trained checkpoints for the app's tests (seconds on a CPU)
TINY_MODELS = {
    "tiny-nwm": ("nwm-linear-tetrominoes", {"T": 12, "head": (32,)}),
    "tiny-nwmfft": ("nwm-fft-tetrominoes", {"T": 12, "head": (32,)}),
    "tiny-lstm": ("lstm-linear-tetrominoes", {"T": 6, "head": (32,)}),
    "tiny-cnn": ("cnn2-tetrominoes", {"head": (32,)}),
}


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory) -> Path:
    """A $WAVEVIZ_HOME whose jobs/<name>/best.pt hold the TINY_MODELS, trained once per session
    (1 epoch on 16 Tetrominoes images), so pages always have checkpoints to show."""
    from waveviz.training import DataConfig, TrainConfig, train_preset

    home = tmp_path_factory.mktemp("waveviz_home")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, (preset, overrides) in TINY_MODELS.items():
            job = home / "jobs" / name
            job.mkdir(parents=True)
            train_preset(preset, str(job / "best.pt"),
                         data=DataConfig("tetrominoes", n_train=16, n_val=4, n_test=4),
                         train=TrainConfig(epochs=1, batch_size=8, device="cpu", seed=0), overrides=dict(overrides))
    finally:
        torch.set_num_threads(threads)
    return home


@pytest.fixture
def app_home(tiny_home, monkeypatch, tmp_path) -> Path:
    """Point checkpoint discovery at the tiny jobs only (no shipped checkpoints), for this test."""
    monkeypatch.setenv("WAVEVIZ_HOME", str(tiny_home))
    monkeypatch.setenv("WAVEVIZ_CHECKPOINTS", str(tmp_path / "no-shipped-checkpoints"))
    return tiny_home


@pytest.fixture
def empty_home(monkeypatch, tmp_path) -> Path:
    """No checkpoints anywhere."""
    monkeypatch.setenv("WAVEVIZ_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WAVEVIZ_CHECKPOINTS", str(tmp_path / "no-shipped-checkpoints"))
    return tmp_path / "home"
