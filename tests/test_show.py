"""`waveviz data show`: a PNG sheet of samples, images above their coloured masks, a legend below."""
import numpy as np
from PIL import Image

from waveviz.app.figures import label_rgb
from waveviz.cli import main
from waveviz.data import make_dataset
from waveviz.data.show import CELL, GAP, LINE, sample_sheet


def test_sheet_shows_each_image_above_its_mask():
    three = sample_sheet("tetrominoes", 3, seed=2, split="val")
    s = 2 * 64  # 64² images enlarged by 2 to at least CELL
    assert s >= CELL and three.width == GAP + 3 * (s + GAP)
    data = make_dataset("tetrominoes", 3, seed=2, split="val")
    x, y = GAP + 2 * (s + GAP), LINE  # the third sample's image, then its mask one cell below
    px = np.asarray(three)
    np.testing.assert_array_equal(px[y: y + s: 2, x: x + s: 2], data.images[2])
    np.testing.assert_array_equal(px[y + s + GAP: y + 2 * s + GAP: 2, x: x + s: 2], label_rgb(data.masks[2]))
    eight, eleven = sample_sheet("tetrominoes", 8), sample_sheet("tetrominoes", 11)
    assert eleven.size == (eight.width, eight.height + 2 * (s + GAP))  # 8 a row: 11 take a second row pair


def test_cli_writes_a_png_and_refuses_a_bad_name_in_one_line(tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert main(["data", "show", "mnist", "--n", "4", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width == GAP + 4 * (112 + GAP)  # 56² MNIST images shown at 112²
    assert "wrote" in capsys.readouterr().out
    assert main(["data", "show", "mnits", "--out", str(tmp_path / "bad.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("waveviz: error: unknown data set 'mnits'") and "mnist" in err and "\n" not in err
    assert not (tmp_path / "bad.png").exists()
