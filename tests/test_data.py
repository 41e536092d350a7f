"""Data generators: labels, shapes, determinism, the real MNIST pool, the .npz format."""
import numpy as np
import pytest

from waveviz.data import DATASETS, DataError, load_npz, make_dataset, save_npz
from waveviz.data.mnist import binary_digit, digit_pool, embedded_pool, read_idx, make_mnist, paper_split
from waveviz.data.shapes import CELL, TETROMINOES, piece_cells, piece_deck, tetromino_tile


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
    assert set(counts) <= {1, 2} and 2 in counts  # 1–2 polygons
    # polygons never overlap but may touch: a component may then hold two labels
    touching = sum(any(len(np.unique(m[lab == k])) > 1 for k in range(1, n + 1))
                   for m in d.masks for lab, n in [label(m > 0)])
    assert touching >= 1


def test_tetromino_pieces():
    assert piece_cells("I", 1, False).shape == (4, 1)
    assert piece_cells("O", 3, False).shape == (2, 2)
    s, z = piece_cells("S", 0, False), piece_cells("S", 0, True)
    assert not np.array_equal(s, z) and s.sum() == z.sum() == 4
    d = make_dataset("tetrominoes", 40, seed=1)
    assert set(np.unique(d.masks)) == {0, 1, 2, 3, 4, 5}
    # 1–5 pieces, each of 4 squares of 7×7 = 196 pixels: a label's pixels come in multiples of 196
    for m in d.masks:
        counts = np.bincount(m.ravel(), minlength=6)[1:]
        assert (counts % 196 == 0).all() and 1 <= counts.sum() // 196 <= 5


def test_tetromino_deck_is_the_authors():
    """n // 5 + 1 copies of each shape, shuffled, the first n: ≤ 4 pieces never repeat a shape."""
    rng = np.random.default_rng(0)
    for n in range(1, 6):
        for _ in range(50):
            deck = piece_deck(n, rng)
            assert len(deck) == n and set(deck) <= set(TETROMINOES)
            if n <= 4:
                assert len(set(deck)) == n
    fives = [piece_deck(5, rng) for _ in range(300)]
    assert any(len(set(d)) < 5 for d in fives)  # with 5 pieces a shape may come twice


def test_tetromino_ring_wraps_in_8_bits():
    """The border ring is colour + colour // 2 in uint8 arithmetic: 200 + 100 wraps to 44."""
    tile = tetromino_tile(np.array([200, 100, 10], np.uint8))
    assert tile.dtype == np.uint8 and tile.shape == (CELL, CELL, 3)
    assert tile[0, 0].tolist() == [44, 150, 15] and tile[3, 3].tolist() == [200, 100, 10]
    assert (tile[1:-1, 1:-1] == [200, 100, 10]).all() and (tile[:, 0] == [44, 150, 15]).all()
    assert tetromino_tile(np.array([200, 100, 10], np.uint8), ring="clip")[0, 0].tolist() == [255, 150, 15]
    with pytest.raises(DataError, match="ring must be one of wrap, clip"):
        make_dataset("tetrominoes", 2, ring="round")
    with pytest.raises(DataError, match="no option 'rings'"):
        make_dataset("tetrominoes", 2, rings="clip")
    clip = make_dataset("tetrominoes", 30, seed=0, ring="clip")
    wrap = make_dataset("tetrominoes", 30, seed=0)
    np.testing.assert_array_equal(clip.masks, wrap.masks)
    assert (clip.images >= wrap.images).all() and (clip.images > wrap.images).any()


def test_tetromino_colours_and_touching_pieces():
    d = make_dataset("tetrominoes", 300, seed=2)
    # every square's inside holds its piece's colour, each channel anywhere in 0–255
    insides = []
    for img, m in zip(d.images[:300], d.masks[:300]):
        for y, x in np.argwhere(m > 0):
            if (y == 0 or m[y - 1, x] == 0) and (x == 0 or m[y, x - 1] == 0):  # a piece's top-left edge
                insides.append(img[y + 3, x + 3])
    insides = np.array(insides)
    assert insides.min() <= 5 and insides.max() >= 250
    assert np.histogram(insides.ravel(), bins=4, range=(0, 256))[0].min() > 0.15 * insides.size
    # some pieces touch: fewer 4-connected components than pieces
    from scipy.ndimage import label
    touching = sum(label(m > 0)[1] < (np.bincount(m.ravel(), minlength=6)[1:] // 196).sum() for m in d.masks)
    assert touching > 0
    # and pieces never overlap: a component of one label never holds more than its pieces' pixels
    bg = d.images[d.masks == 0]
    assert (bg == 0).all()


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
    # mask = upsampled value > 0.5 (the stored uint8 image is that value rounded: > 127 agrees away from 0.5)
    assert (((d.masks > 0) == (d.images > 127)) | (np.abs(d.images.astype(int) - 127.5) < 1)).all()
    assert ((d.masks > 0) <= (d.images >= 127)).all() and (d.masks > 0).any(axis=(1, 2)).all()
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
    # the paper's split: a fixed random 51,000 / 9,000 of the training digits, disjoint
    tr, va = digit_pool("train", str(tmp_path))[0], digit_pool("val", str(tmp_path))[0]
    assert len(tr) == 44_200 and len(va) == 7_800  # 85 / 15 of the 52,000 written here
    full = {"train_images": np.arange(100)[:, None, None] * np.ones((1, 28, 28), np.uint8),
            "train_labels": np.arange(100) % 10, "test_images": imgs[:7], "test_labels": labs[:7]}
    a, b = paper_split(full, "train")[0][:, 0, 0], paper_split(full, "val")[0][:, 0, 0]
    assert len(a) == 85 and len(b) == 15 and not set(a) & set(b) and sorted(set(a) | set(b)) == list(range(100))
    assert sorted(a.tolist()) != list(range(85))  # at random, not the first 85
    assert len(paper_split(full, "test")[0]) == 7
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
    with pytest.raises(DataError, match="junk.npz: not an .npz file"):
        load_npz(tmp_path / "junk.npz")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "d.npz").read_bytes()[:200])  # a zip cut short
    with pytest.raises(DataError, match="cut.npz: not a readable .npz file"):
        load_npz(tmp_path / "cut.npz")
    with pytest.raises(DataError, match="no such file"):
        load_npz(tmp_path / "missing.npz")


def test_multi_mnist_is_binary_thresholded_and_may_touch():
    imgs, _ = embedded_pool()
    b = binary_digit(imgs[0])
    assert b.shape == (42, 42) and b.dtype == bool
    from PIL import Image
    ref = np.asarray(Image.fromarray(imgs[0]).resize((42, 42), Image.BILINEAR)) > 50
    np.testing.assert_array_equal(b, ref)
    d = make_dataset("multi_mnist", 300, seed=0)
    assert set(np.unique(d.images)) <= {0, 255}
    assert ((d.images == 255) == (d.masks > 0)).all()
    from scipy.ndimage import label
    # digits of different labels may touch: some component of the canvas holds two labels
    touching = 0
    for m in d.masks:
        lab, n = label(m > 0)
        touching += any(len(np.unique(m[lab == k])) > 1 for k in range(1, n + 1))
    assert touching > 0


def test_check_for_model():
    d = make_dataset("mnist", 3, seed=0)
    with pytest.raises(DataError, match="RGB"):
        d.check_for(in_channels=3, num_classes=11)
    with pytest.raises(DataError, match="64×64"):
        d.check_for(in_channels=1, num_classes=11, image_size=64)
    with pytest.raises(DataError, match="only 5 classes"):
        d.check_for(in_channels=1, num_classes=5)
