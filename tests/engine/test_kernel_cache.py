"""The compiled CPU kernel's cache: keyed by a hash of the sources, the compiler and the flags; a
library is loaded only when its record vouches for its bytes (else rebuilt), and never from a folder
that others can write to (one warning, then a private build). Most tests build a one-line library
through the same loader, so that they take milliseconds, not the kernel's compile time."""
import hashlib
import json
import os
import stat
import subprocess
import sys

import pytest

from waveviz.engine import clib

needs_cc = pytest.mark.skipif(clib.find_compiler() is None, reason="no C compiler")


def _write_source(folder, answer: int):
    folder.mkdir(exist_ok=True)
    (folder / clib.MAIN_SOURCE).write_text(f"int wv_answer(void) {{ return {answer}; }}\n")
    return folder


@pytest.fixture
def src(tmp_path):
    return _write_source(tmp_path / "src", 42)


def load(root, src):
    return clib.load_library(root, openmp=False, sources=src, stem="probe")


def cached(root):
    """The cached libraries under root, {path: (inode, mtime)}."""
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (root / "kernels").glob("probe_*.so")}


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_key_follows_sources_compiler_and_flags(src, tmp_path):
    sources = clib.kernel_sources(src)
    fake_cc = tmp_path / "fake-cc"
    fake_cc.write_text("#!/bin/sh\n")
    fake_cc.chmod(0o755)
    key = clib.cache_key(sources, str(fake_cc), False)
    assert clib.cache_key(sources, str(fake_cc), False) == key
    assert clib.cache_key({**sources, clib.MAIN_SOURCE: b"int x;"}, str(fake_cc), False) != key
    assert clib.cache_key(sources, str(fake_cc), True) != key  # OpenMP flags
    assert clib.cache_key(sources, str(tmp_path / "other-cc"), False) != key  # another compiler
    os.utime(fake_cc, ns=(0, 0))  # the same compiler, upgraded in place
    assert clib.cache_key(sources, str(fake_cc), False) != key


def test_the_key_covers_every_file_the_kernel_includes():
    """Editing any header the kernel includes must change the key, so the sources hashed are all of them."""
    sources = clib.kernel_sources()
    included = {line.split('"')[1] for data in sources.values() for line in data.decode().splitlines()
                if line.startswith('#include "')}
    assert clib.MAIN_SOURCE in sources and included and included <= set(sources)


@needs_cc
def test_built_once_into_a_private_folder_then_loaded_from_it(tmp_path, src):
    root = tmp_path / "cache"
    assert load(root, src).wv_answer() == 42
    (so,) = cached(root)
    record = json.loads(so.with_suffix(".json").read_text())
    assert record["sha256"] == sha256(so) and len(record["key"]) == 64 and record["flags"]
    for folder in (root, root / "kernels"):
        assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0, oct(folder.stat().st_mode)
    before = cached(root)
    assert load(root, src).wv_answer() == 42
    assert cached(root) == before  # the same file: not built again


@needs_cc
def test_a_library_that_does_not_match_its_record_is_rebuilt(tmp_path, src):
    root = tmp_path / "cache"
    load(root, src)
    (so,) = cached(root)
    # replaced behind our back (a new file: this process has the old one mapped, which must not shrink)
    (tmp_path / "other").write_bytes(b"not the library that was built")
    os.replace(tmp_path / "other", so)
    load(root, src)
    assert so.read_bytes()[:4] == b"\x7fELF" and sha256(so) == json.loads(so.with_suffix(".json").read_text())["sha256"]
    record = so.with_suffix(".json")
    record.write_text(json.dumps({**json.loads(record.read_text()), "key": "0" * 64}))  # a record for another key
    before = cached(root)
    load(root, src)
    assert cached(root) != before and json.loads(record.read_text())["key"] != "0" * 64


@needs_cc
def test_changed_sources_get_a_library_of_their_own(tmp_path, src):
    root = tmp_path / "cache"
    assert load(root, src).wv_answer() == 42
    assert load(root, _write_source(src, 43)).wv_answer() == 43
    assert len(cached(root)) == 2


@needs_cc
@pytest.mark.parametrize("mode, why", [(0o777, "writable by everyone"), (0o770, "writable by its group")])
@pytest.mark.parametrize("which", ["root", "kernels"])
def test_a_cache_others_can_write_to_is_not_used(tmp_path, src, mode, why, which):
    root = tmp_path / "shared"
    (root / "kernels").mkdir(parents=True, mode=0o700)
    root.chmod(0o700)
    (root if which == "root" else root / "kernels").chmod(mode)
    with pytest.warns(RuntimeWarning, match=why) as caught:
        assert load(root, src).wv_answer() == 42  # built privately for this process
    assert len(caught) == 1 and "\n" not in str(caught[0].message) and "WAVEVIZ_CACHE" in str(caught[0].message)
    assert not list((root / "kernels").iterdir())  # nothing written where others could swap it


@needs_cc
def test_a_cache_owned_by_someone_else_is_not_used(tmp_path, src, monkeypatch):
    root = tmp_path / "cache"
    load(root, src)
    before = cached(root)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(root).st_uid + 1)
    with pytest.warns(RuntimeWarning, match="belongs to another user"):
        assert load(root, src).wv_answer() == 42
    assert cached(root) == before


@needs_cc
@pytest.mark.slow
def test_the_wave_kernel_from_a_shared_cache_is_built_privately(tmp_path):
    """End to end: WAVEVIZ_CACHE names a folder everyone can write to → one warning, and the engine
    still runs the compiled kernel, built in a private folder, leaving nothing in the shared one."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    code = """if 1:
        import warnings
        from waveviz import engine
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            status = engine.cpu_kernel_status()
        print(status, "|", len(caught), "|", str(caught[0].message) if caught else "")
    """
    env = {**os.environ, "WAVEVIZ_CACHE": str(shared)}
    env.pop("WAVEVIZ_CPU_KERNEL", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    status, n, message = (p.strip() for p in out.strip().split("|", 2))
    assert status.startswith("compiled C kernel") and n == "1" and "writable by everyone" in message, out
    assert not list(shared.rglob("*.so"))
