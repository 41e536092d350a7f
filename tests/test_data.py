"""Data generators: labels, shapes, determinism, the real MNIST pool, the .npz format."""
import numpy as np
import pytest

from waveviz.data import DATASETS, DataError, load_npz, make_dataset, save_npz
from waveviz.data.mnist import digit_pool, embedded_pool, read_idx, make_mnist
from waveviz.data.shapes import piece_cells


@pytest.mark.parametrize("name", ["polygons", "tetrominoes", "mnist", "multi_mnist"])
def test_shapes_labels_and_determinism(name):
    spec = DATASETS.get(name)
    a = make_dataset(name, 12, seed=3)
    b = make_dataset(name, 12, seed=3)
    c = make_dataset(name, 12, seed=4)
    shape = (12, spec.size, spec.size) + ((3,) if spec.in_channels == 3 else ())
    assert a.images.shape == shape and a.images.dtype == np.uint8
    assert a.masks.shape == shape[:3]
    assert a.masks.min() >= 0 and a.masks.max() < spec.num_classes
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, c.images)
    # a longer draw starts with the shorter one
    np.testing.assert_array_equal(make_dataset(name, 4, seed=3).images, a.images[:4])
    # background is black, every foreground pixel is lit
    lit = a.images.reshape(12, spec.size, spec.size, -1).max(-1) > 0
    assert ((a.masks > 0) <= lit).all()
    if name == "mnist":  # the mask is the digit's pixels above 0.5, one label (digit + 1) per image
        np.testing.assert_array_equal(a.masks > 0, a.images > 127)
        assert all(len(np.unique(m[m > 0])) == 1 for m in a.masks)
    assert (a.masks > 0).any(axis=(1, 2)).all()  # every image has foreground


def test_splits_differ():
    tr = make_dataset("tetrominoes", 5, seed=0, split="train")
    te = make_dataset("tetrominoes", 5, seed=0, split="test")
    assert not np.array_equal(tr.images, te.images)


def test_polygon_labels_count_edges():
    d = make_dataset("polygons", 60, seed=0)
    assert set(np.unique(d.masks)) == {0, 1, 2, 3, 4}
    assert (d.images[d.masks > 0] == 255).all() and (d.images[d.masks == 0] == 0).all()
    from scipy.ndimage import label
    counts = [label(m > 0)[1] for m in d.masks]
    assert set(counts) <= {1, 2} and 2 in counts  # 1–2 polygons, never touching


def test_tetromino_pieces():
    assert piece_cells("I", 1, False).shape == (4, 1)
    assert piece_cells("O", 3, False).shape == (2, 2)
    s, z = piece_cells("S", 0, False), piece_cells("S", 0, True)
    assert not np.array_equal(s, z) and s.sum() == z.sum() == 4
    d = make_dataset("tetrominoes", 40, seed=1)
    assert set(np.unique(d.masks)) == {0, 1, 2, 3, 4, 5}
    # each piece is 4 squares of 7×7 = 196 pixels
    from scipy.ndimage import label
    for img_mask in d.masks[:10]:
        lab, n = label(img_mask > 0)
        assert 1 <= n <= 5
        assert all((lab == k).sum() == 196 for k in range(1, n + 1))
    # borders are brighter than the square's inside
    y, x = np.argwhere(d.masks[0] > 0)[0]  # top-left corner of the topmost square
    border, inside = d.images[0][y, x].astype(float), d.images[0][y + 3, x + 3].astype(float)
    np.testing.assert_allclose(border, np.minimum(1.5 * inside, 255), atol=2)
    assert border.sum() > inside.sum()


def test_embedded_mnist_pool_is_the_5000_real_digits():
    images, labels = embedded_pool()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    # disjoint splits of 4000 / 500 / 500
    pools = {s: digit_pool(s)[0].reshape(-1, 784) for s in ("train", "val", "test")}
    assert [len(p) for p in pools.values()] == [4000, 500, 500]
    tr = {p.tobytes() for p in pools["train"]}
    assert not any(p.tobytes() in tr for p in pools["test"])


def test_mnist_labels_follow_threshold():
    d = make_dataset("mnist", 20, seed=0)
    fg = d.images > 127
    assert ((d.masks > 0) == fg).all()
    assert all(len(np.unique(m[m > 0])) == 1 for m in d.masks)
    with pytest.raises(DataError, match="4000 digits"):
        make_mnist(4001, seed=0, split="train")


def test_full_mnist_from_idx_folder(tmp_path):
    """A folder laid out like torchvision's (MNIST/raw/*-ubyte.gz) is read without downloading."""
    import gzip
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs, labs = embedded_pool()

    def write(name, arr, gz=False):
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        with (gzip.open(raw / (name + ".gz"), "wb", compresslevel=1) if gz else open(raw / name, "wb")) as f:
            f.write(header + arr.astype(np.uint8).tobytes())

    write("train-images-idx3-ubyte", np.concatenate([imgs] * 11)[:52000])
    write("train-labels-idx1-ubyte", np.concatenate([labs] * 11)[:52000])
    write("t10k-images-idx3-ubyte", imgs[:100], gz=True)
    write("t10k-labels-idx1-ubyte", labs[:100], gz=True)
    assert read_idx(raw / "t10k-images-idx3-ubyte.gz").shape == (100, 28, 28)
    assert len(digit_pool("val", str(tmp_path))[0]) == 1000
    d = make_dataset("mnist", 10, seed=0, split="test", mnist_dir=str(tmp_path))
    assert d.images.shape == (10, 56, 56)
    with pytest.raises(DataError, match="no train-images"):
        digit_pool("train", str(tmp_path / "nowhere"))


def test_npz_round_trip_and_refusals(tmp_path):
    d = make_dataset("polygons", 5, seed=0)
    p = tmp_path / "d.npz"
    save_npz(p, d)
    back = load_npz(p)
    np.testing.assert_array_equal(back.images, d.images)
    np.testing.assert_array_equal(back.masks, d.masks)
    # images only (for prediction)
    np.savez(tmp_path / "imgs.npz", images=d.images)
    assert load_npz(tmp_path / "imgs.npz").masks is None
    with pytest.raises(DataError, match="has no 'masks'"):
        load_npz(tmp_path / "imgs.npz", require_masks=True)
    bad = {
        "noimages.npz": dict(x=d.images),
        "rank.npz": dict(images=d.images[0]),
        "channels.npz": dict(images=np.zeros((2, 8, 8, 4), np.uint8)),
        "nan.npz": dict(images=np.full((2, 8, 8), np.nan)),
        "float.npz": dict(images=np.zeros((2, 8, 8))),
        "empty.npz": dict(images=np.zeros((0, 8, 8), np.uint8)),
        "maskshape.npz": dict(images=d.images, masks=d.masks[:, :10]),
        "negative.npz": dict(images=d.images, masks=-d.masks - 1),
    }
    for name, arrays in bad.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(DataError) as e:
            load_npz(tmp_path / name)
        assert name in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="no such file"):
        load_npz(tmp_path / "missing.npz")


def test_check_for_model():
    d = make_dataset("mnist", 3, seed=0)
    with pytest.raises(DataError, match="RGB"):
        d.check_for(in_channels=3, num_classes=11)
    with pytest.raises(DataError, match="64×64"):
        d.check_for(in_channels=1, num_classes=11, image_size=64)
    with pytest.raises(DataError, match="only 5 classes"):
        d.check_for(in_channels=1, num_classes=5)
