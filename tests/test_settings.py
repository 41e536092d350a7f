"""waveviz.settings: every WAVEVIZ_* variable read in one place, documented, overridable in tests."""
import re
from pathlib import Path

import pytest
import torch

import waveviz
from waveviz import engine, settings
from waveviz.presets import create_model

PACKAGE = Path(waveviz.__file__).parent


def test_defaults_and_each_variable():
    home = Path.home()
    s = settings.Settings.from_env({})
    assert (s.engine, s.bf16, s.cc, s.max_jobs, s.mnist_dir) == ("auto", "", None, None, None)
    assert s.cpu_kernel and s.cpu_openmp and s.triton and s.onednn_bwd and s.malloc and not s.debug
    assert s.cache == home / ".cache" / "waveviz" and s.home == home / ".waveviz"
    s = settings.Settings.from_env({
        "WAVEVIZ_ENGINE": "fast-bf16", "WAVEVIZ_BF16": "emulate", "WAVEVIZ_CPU_KERNEL": "0",
        "WAVEVIZ_CPU_OPENMP": "0", "WAVEVIZ_TRITON": "0", "WAVEVIZ_ONEDNN_BWD": "0", "WAVEVIZ_MALLOC": "0",
        "WAVEVIZ_DEBUG": "1", "WAVEVIZ_HOME": "/h", "WAVEVIZ_MAX_JOBS": "3", "WAVEVIZ_MNIST_DIR": "/m",
        "XDG_CACHE_HOME": "/x", "CC": "clang"})
    assert (s.engine, s.bf16, s.cc, s.max_jobs, s.mnist_dir) == ("fast-bf16", "emulate", "clang", "3", "/m")
    assert not (s.cpu_kernel or s.cpu_openmp or s.triton or s.onednn_bwd or s.malloc) and s.debug
    assert s.home == Path("/h") and s.cache == Path("/x/waveviz")
    assert settings.Settings.from_env({"WAVEVIZ_CACHE": "/c", "XDG_CACHE_HOME": "/x"}).cache == Path("/c")
    assert settings.Settings.from_env({"WAVEVIZ_CPU_KERNEL": "1", "WAVEVIZ_ENGINE": ""}).cpu_kernel  # only "0" is off


def test_read_again_when_the_environment_changes(monkeypatch):
    monkeypatch.setenv("WAVEVIZ_ENGINE", "fast")
    first = settings.get()
    assert first.engine == "fast" and settings.get() is first  # read once while nothing changes
    monkeypatch.setenv("WAVEVIZ_ENGINE", "reference")
    assert settings.get().engine == "reference"
    # every variable a setting comes from is watched, however from_env is changed later
    source = Path(settings.__file__).read_text()
    from_env = source[source.index("def from_env"):source.index("def _names_read")]
    assert set(re.findall(r"\"([A-Z][A-Z0-9_]+)\"", from_env)) | {"HOME"} == set(settings._READS)
    monkeypatch.setenv("WAVEVIZ_READ_PATHS", "/srv")
    assert settings.get().read_paths == "/srv"


def test_override_reaches_the_engine_without_the_environment(monkeypatch):
    monkeypatch.setenv("WAVEVIZ_ENGINE", "fast")
    with settings.override(engine="reference", cpu_kernel=False) as s:
        assert settings.get() is s
        assert create_model("nwm-linear-mnist").engine == "reference"
        assert engine.cpu_kernel() is None and engine.resolve_backend("auto", torch.zeros(1)) == "torch"
        assert engine.cpu_kernel_status() == "disabled (WAVEVIZ_CPU_KERNEL=0)"
        with settings.override(bf16="emulate"):
            assert settings.get().engine == "reference" and engine.bf16_emulated("cpu")
    assert settings.get().engine == "fast" and settings.get().cpu_kernel
    with pytest.raises(TypeError, match="unknown setting 'engin'; valid: .*engine"):
        with settings.override(engin="fast"):
            pass


def test_every_variable_is_documented_and_the_engine_reads_none_itself():
    used = set()
    for path in PACKAGE.rglob("*.py"):
        used |= set(re.findall(r"WAVEVIZ_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    undocumented = sorted(v for v in used if f"`{v}`" not in settings.__doc__)
    assert not undocumented, f"not in settings' table: {undocumented}"
    for path in (PACKAGE / "engine").glob("*.py"):
        assert "os.environ.get(" not in path.read_text(), f"{path.name} reads the environment itself"


def test_the_checkpoints_folder_is_a_setting(monkeypatch, tmp_path):
    from waveviz import paths, settings

    monkeypatch.delenv("WAVEVIZ_CHECKPOINTS", raising=False)
    checkout = Path(paths.__file__).resolve().parent.parent
    assert paths.shipped_checkpoints() == settings.get().checkpoints == checkout / "checkpoints"
    monkeypatch.setenv("WAVEVIZ_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("WAVEVIZ_HOME", str(tmp_path / "home"))
    assert paths.shipped_checkpoints() == tmp_path and paths.find_checkpoints() == []
