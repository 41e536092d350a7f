"""The `waveviz` command line: the happy path end to end, and one line for every bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from waveviz.checkpoint import read_checkpoint
from waveviz.cli import main

from .test_models import PAPER_COUNTS


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_presets_json_has_all_paper_counts(capsys):
    code, out, _ = run(["presets", "--json"], capsys)
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    for name, count in PAPER_COUNTS.items():
        assert rows[name]["params"] == count
    assert {"name", "model", "dataset", "readout", "params"} <= set(rows["nwm-linear-mnist"])


@pytest.mark.slow
def test_make_train_eval_predict(tmp_path, capsys):
    data, ckpt, pred = str(tmp_path / "d.npz"), str(tmp_path / "m.pt"), str(tmp_path / "p.npz")
    assert run(["data", "make", "tetrominoes", "--n", "24", "--seed", "1", "--out", data], capsys)[0] == 0
    code, out, err = run(["train", "nwm-linear-tetrominoes", "--data", data, "--epochs", "1", "--batch-size", "8",
                          "--set", "T=6", "--set", "head=(16,)", "--out", ckpt], capsys)
    assert code == 0, err
    assert "FG-IoU" in out
    code, out, _ = run(["eval", ckpt, "--data", data, "--json"], capsys)
    assert code == 0
    m = json.loads(out)
    assert m["n"] == 24 and 0 <= m["fg_iou"] <= 1 and m["preset"] == "nwm-linear-tetrominoes"
    assert "per_class" not in m
    code, out, _ = run(["eval", ckpt, "--data", data, "--json", "--per-class"], capsys)
    pc = json.loads(out)
    assert code == 0 and pc["fg_iou"] == pytest.approx(m["fg_iou"])
    conf = np.array(pc["confusion"])  # (6, 6) over the set's foreground pixels
    with np.load(data) as z:
        masks = z["masks"]
    assert conf.shape == (6, 6) and conf.sum() == (masks > 0).sum()
    assert [r["class"] for r in pc["per_class"]] == [n for k, n in enumerate(("I", "O", "T", "S/Z", "J/L"), 1)
                                                      if (masks == k).any()]
    assert all(r["pixels"] == (masks == k).sum() for k, r in zip(np.unique(masks[masks > 0]), pc["per_class"]))
    code, out, _ = run(["eval", ckpt, "--data", data, "--per-class"], capsys)
    assert code == 0 and "most often taken for" in out and "\nI " in out
    code, out, _ = run(["eval", ckpt, "--data", data, "--json", "--gates"], capsys)
    g = json.loads(out)["gates"]
    assert code == 0 and set(g) == {"omega", "alpha"} and len(g["omega"]) == 2 and all(0 <= v <= 1 for v in g["alpha"])
    code, out, _ = run(["eval", ckpt, "--data", data, "--gates"], capsys)
    assert code == 0 and "gates alive (share of the foreground pixels of the first 24 images" in out and "\n  ω  c0 " in out
    assert run(["predict", ckpt, "--data", data, "--out", pred], capsys)[0] == 0
    with np.load(pred) as z:
        assert z["pred"].shape == (24, 64, 64) and z["pred"].max() < 6
    # --transfer: the Tetrominoes NWM starts an MNIST one (grey input, 11 classes)
    digits, moved = str(tmp_path / "digits.npz"), str(tmp_path / "mnist.pt")
    assert run(["data", "make", "mnist", "--n", "8", "--out", digits], capsys)[0] == 0
    code, out, err = run(["train", "nwm-linear-mnist", "--data", digits, "--epochs", "1", "--batch-size", "8",
                          "--set", "T=6", "--set", "head=(16,)", "--transfer", ckpt, "--out", moved], capsys)
    assert code == 0, err
    init = read_checkpoint(moved)["meta"]["init"]
    assert init["path"] == "m.pt" and init["preset"] == "nwm-linear-tetrominoes"
    assert init["transfer"]["kept"] == ["head.net.2.weight", "head.net.2.bias"] and len(init["transfer"]["adapted"]) == 3
    from waveviz.paths import shipped_checkpoints
    from waveviz.results import how_made, provenance

    assert how_made(provenance(read_checkpoint(moved)["meta"])).startswith(
        "`fast` recipe, transferred from `nwm-linear-tetrominoes`, its data-v2 checkpoint (1 epochs")
    assert ", fine-tuned from the data-v2 checkpoint" in how_made(provenance(read_checkpoint(
        shipped_checkpoints() / "lstm-linear-mnist.pt")["meta"]))


@pytest.mark.slow
def test_eval_and_predict_run_a_checkpoint_as_it_trained(tmp_path, capsys):
    """A ConvLSTM trained with --amp: eval / predict run it under bf16 autocast by default (as its
    stored metrics were measured), and say so; --precision float32 runs it plainly. (The shipped
    ConvLSTM, marked as trained so.)"""
    import torch

    from waveviz.checkpoint import read_checkpoint
    from waveviz.paths import shipped_checkpoints

    ck = read_checkpoint(shipped_checkpoints() / "lstm-linear-tetrominoes.pt")
    ck["meta"].setdefault("train", {})["amp"] = True
    ckpt, data = str(tmp_path / "amp.pt"), str(tmp_path / "d.npz")
    torch.save(ck, ckpt)
    assert run(["data", "make", "tetrominoes", "--n", "6", "--seed", "3", "--out", data], capsys)[0] == 0
    res = {}
    for precision in ("as-trained", "bf16", "float32"):
        code, out, err = run(["eval", ckpt, "--data", data, "--json", "--precision", precision], capsys)
        assert code == 0, err
        res[precision] = json.loads(out)
        assert run(["predict", ckpt, "--data", data, "--out", str(tmp_path / f"{precision}.npz"),
                    "--precision", precision], capsys)[0] == 0
    assert res["as-trained"]["precision"] == res["bf16"]["precision"] == "bf16 autocast"
    assert res["float32"]["precision"] == "float32" and res["as-trained"]["fg_iou"] == res["bf16"]["fg_iou"]
    assert res["float32"]["loss"] != res["bf16"]["loss"]
    with np.load(tmp_path / "as-trained.npz") as a, np.load(tmp_path / "bf16.npz") as b, np.load(tmp_path / "float32.npz") as f:
        assert (a["pred"] == b["pred"]).all() and a["pred"].shape == f["pred"].shape
    code, _, err = run(["eval", ckpt, "--data", data, "--precision", "fp8"], capsys)
    assert code == 2 and "invalid choice: 'fp8'" in err


@pytest.mark.slow
def test_console_script_and_module_entry():
    r = subprocess.run([sys.executable, "-m", "waveviz", "presets"], capture_output=True, text=True)
    assert r.returncode == 0 and "nwm-linear-tetrominoes" in r.stdout


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    from waveviz import create_model, make_dataset, save_checkpoint, save_npz
    save_npz(d / "tet.npz", make_dataset("tetrominoes", 4, seed=0))
    save_npz(d / "mnist.npz", make_dataset("mnist", 4, seed=0))
    save_checkpoint(d / "cnn.pt", create_model("cnn2-tetrominoes"), "cnn2-tetrominoes")
    np.savez(d / "nomask.npz", images=make_dataset("tetrominoes", 2, seed=0).images)
    np.savez(d / "labels.npz", images=make_dataset("tetrominoes", 2, seed=0).images, masks=np.full((2, 64, 64), 9))
    np.savez(d / "nan.npz", images=np.full((2, 64, 64, 3), np.nan))
    np.savez(d / "empty.npz", images=np.zeros((0, 64, 64, 3), np.uint8))
    np.savez(d / "rank.npz", images=np.zeros((64, 64), np.uint8))
    np.savez(d / "small.npz", images=np.zeros((2, 32, 32, 3), np.uint8), masks=np.zeros((2, 32, 32), np.uint8))
    np.savez(d / "other.npz", stuff=np.zeros(3))
    (d / "junk.npz").write_text("junk")
    (d / "notes.txt").write_text("images, masks\n1, 2\n")
    np.save(d / "array.npy", np.zeros((2, 64, 64), np.uint8))
    (d / "junk.pt").write_text("junk")
    tet = make_dataset("tetrominoes", 2, seed=0)
    np.savez(d / "background.npz", images=tet.images, masks=np.zeros_like(tet.masks))
    (d / "no-checkpoints").mkdir()
    return d


BAD = [
    (["train", "nope-preset", "--out", "{d}/x.pt"], "unknown preset"),
    (["train", "cnn2-tetrominoes", "--epochs", "0", "--out", "{d}/x.pt"], "must be ≥ 1"),
    (["train", "cnn2-tetrominoes", "--lr", "-1", "--out", "{d}/x.pt"], "positive"),
    (["train", "cnn2-tetrominoes", "--lr", "nan", "--out", "{d}/x.pt"], "positive"),
    (["train", "cnn2-tetrominoes", "--batch-size", "abc", "--out", "{d}/x.pt"], "whole number"),
    (["train", "cnn2-tetrominoes", "--data", "{d}/missing.npz", "--out", "{d}/x.pt"], "no such file"),
    (["train", "cnn2-tetrominoes", "--data", "{d}/mnist.npz", "--out", "{d}/x.pt"], "grey"),
    (["train", "cnn2-tetrominoes", "--data", "{d}/nomask.npz", "--out", "{d}/x.pt"], "no 'masks'"),
    (["train", "cnn2-tetrominoes", "--set", "L=-3", "--data", "{d}/tet.npz", "--out", "{d}/x.pt"], "L must be a whole number from 1"),
    (["train", "nwm-linear-tetrominoes", "--set", "head=abc", "--out", "{d}/x.pt"], "head must be"),
    (["train", "nwm-linear-tetrominoes", "--set", "dt=nan", "--out", "{d}/x.pt"], "dt must be a number > 0 and ≤ 1, got nan"),
    (["train", "cnn2-tetrominoes", "--set", "bogus=1", "--data", "{d}/tet.npz", "--out", "{d}/x.pt"], "unknown setting"),
    (["train", "cnn2-tetrominoes", "--device", "cuda9x", "--data", "{d}/tet.npz", "--out", "{d}/x.pt"], "device"),
    (["train", "cnn2-tetrominoes", "--out", "/proc/nope/x.pt"], "does not exist"),
    (["train", "cnn2-tetrominoes", "--data", "{d}/tet.npz", "--out", "{d}/tet.npz"], "tet.npz: exists; give another --out"),
    (["eval", "{d}/cnn.pt", "--data", "{d}/missing.npz"], "no such file"),
    (["eval", "{d}/missing.pt", "--data", "{d}/tet.npz"], "no such file"),
    (["eval", "{d}/junk.pt", "--data", "{d}/tet.npz"], "not a readable checkpoint"),
    (["eval", "{d}/tet.npz", "--data", "{d}/tet.npz"], "not a readable checkpoint"),
    (["eval", "{d}/cnn.pt", "--data", "{d}/junk.npz"], "junk.npz: not an .npz file"),
    (["eval", "{d}/cnn.pt", "--data", "{d}/notes.txt"], "notes.txt: not an .npz file"),
    (["eval", "{d}/cnn.pt", "--data", "{d}/array.npy"], "array.npy: a single .npy array, not an .npz file"),
    (["eval", "{d}/cnn.pt", "--data", "{d}/other.npz"], "not a waveviz data set"),
    (["eval", "{d}/cnn.pt", "--data", "{d}/mnist.npz"], "grey"),
    (["eval", "{d}/cnn.pt", "--data", "{d}/nomask.npz"], "no 'masks'"),
    (["eval", "{d}/cnn.pt", "--data", "{d}/labels.npz"], "label 9"),
    (["eval", "{d}/cnn.pt", "--data", "{d}/nan.npz"], "NaN"),
    (["eval", "{d}/cnn.pt", "--data", "{d}/empty.npz"], "empty"),
    (["eval", "{d}/cnn.pt", "--data", "{d}/rank.npz"], "shape"),
    (["eval", "{d}/cnn.pt", "--data", "{d}/small.npz"], "32×32"),
    (["eval", "{d}/cnn.pt"], "required"),
    (["eval", "{d}/cnn.pt", "--data", "{d}/tet.npz", "--gates"], "only an NWM has ω and α gates"),
    (["predict", "{d}/cnn.pt", "--data", "{d}/tet.npz", "--out", "/proc/nope/p.npz"], "does not exist"),
    (["predict", "{d}/cnn.pt", "--data", "{d}/tet.npz", "--out", "{d}"], "is a folder"),
    (["data", "make", "circles", "--n", "3", "--out", "{d}/x.npz"], "unknown data set"),
    (["data", "make", "polygons", "--n", "0", "--out", "{d}/x.npz"], "must be ≥ 1"),
    (["data", "make", "polygons", "--n", "3", "--seed", "-1", "--out", "{d}/x.npz"], "must be ≥ 0"),
    (["data", "make", "mnist", "--n", "99999", "--out", "{d}/x.npz"], "at most"),
    (["frobnicate"], "invalid choice"),
    ([], "required: {presets,data,train,eval,predict,results,drum,jobs,bench} (see `waveviz --help`)"),
    (["data"], "required: {make,fetch,show} (see `waveviz data --help`)"),
    (["jobs"], "required: {start,status,list,cancel,finish,resume,delete,wait,log,limit} (see `waveviz jobs --help`)"),
    (["results", "--dir", "{d}/no-checkpoints"], "no-checkpoints: no checkpoints with metrics"),
    (["train", "cnn2-tetrominoes", "--schedule", "linear", "--out", "{d}/x.pt"], "invalid choice: 'linear'"),
    (["train", "nwm-linear-mnist", "--data", "{d}/mnist.npz", "--transfer", "{d}/cnn.pt", "--out", "{d}/x.pt"],
     "cnn.pt: a cnn model, and this preset trains a nwm; transfer needs the same model family"),
    (["train", "nwm-linear-mnist", "--transfer", "{d}/cnn.pt", "--init", "{d}/cnn.pt", "--out", "{d}/x.pt"],
     "argument --init: not allowed with argument --transfer"),
    (["train", "nwm-linear-mnist", "--transfer", "{d}/cnn.pt", "--resume", "--out", "{d}/x.pt"],
     "--transfer starts a run and --resume continues one; give one of them"),
    (["jobs", "start", "cnn2-tetrominoes", "--point-weights", "balanced"], "invalid choice: 'balanced'"),
]


@pytest.mark.parametrize("argv,match", BAD, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_input_is_one_line_never_a_traceback(argv, match, files, capsys):
    code, out, err = run([a.format(d=files) for a in argv], capsys)
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("waveviz: error:") and match in lines[0], lines[0]
    assert "Traceback" not in err and "pickle" not in err


def test_eval_json_is_strict_json_without_foreground(files, capsys):
    """FG metrics are undefined on all-background masks: --json says null, never NaN, which
    JavaScript's JSON.parse and other strict parsers reject."""
    def strict(name):
        raise ValueError(f"non-standard JSON constant {name}")

    code, out, err = run(["eval", str(files / "cnn.pt"), "--data", str(files / "background.npz"), "--json"], capsys)
    assert code == 0, err
    m = json.loads(out, parse_constant=strict)
    assert m["fg_acc"] is None and m["fg_iou"] is None and 0 <= m["acc"] <= 1


def test_presets_table_has_a_header_row(capsys):
    from waveviz.presets import list_presets

    code, out, _ = run(["presets"], capsys)
    header, *rows = out.splitlines()
    assert code == 0 and header.split() == ["preset", "model", "dataset", "readout", "params"]
    assert [r.split()[0] for r in rows] == list(list_presets())


def test_data_make_help_says_where_mnist_digits_come_from(capsys):
    with pytest.raises(SystemExit):
        main(["data", "make", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "`waveviz data fetch mnist` once fetched, else the 5,000 embedded digits" in help_text


def test_train_help_reads_each_recipes_values(monkeypatch, capsys):
    """The help of every training flag ends with the recipes' values as RECIPES and DATASET_CHANGES
    hold them now, the default recipe first, so the help cannot fall behind a recipe change."""
    from waveviz.cli.train import recipe_values
    from waveviz.training import DATASET_CHANGES, RECIPES

    assert recipe_values("lr") == "(fast: 0.006, on mnist 0.002; paper: 0.001)"
    assert recipe_values("beta2") == "(default: 0.999)" and recipe_values("schedule_minutes") == ""
    monkeypatch.setitem(RECIPES, "paper", {**RECIPES["paper"], "batch_size": 48})
    monkeypatch.setitem(DATASET_CHANGES, "fast", {**DATASET_CHANGES["fast"], "polygons": dict(batch_size=8)})
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "images per step (fast: 16, on polygons 8; paper: 48)" in help_text


def test_unwritable_folder(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root can write into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code, _, err = run(["data", "make", "polygons", "--n", "2", "--out", str(ro / "x.npz")], capsys)
    assert code != 0 and "not writable" in err


def test_waveviz_warnings_print_as_one_line(monkeypatch):
    """On the command line a waveviz warning (a resume that warms up again, emulated bf16) is its one
    line on stderr, without Python's file, line number and source; other warnings keep Python's form."""
    import warnings

    from waveviz.cli import format_warning

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    main(["presets", "--json"])
    assert warnings.formatwarning is format_warning
    ours = "waveviz: the resumed schedule continues at lr 0.001 where the run ended at 0.0001"
    assert format_warning(RuntimeWarning(ours), RuntimeWarning, "/x/training.py", 241) == ours + "\n"
    other = format_warning(DeprecationWarning("old"), DeprecationWarning, "/x/y.py", 7, line="f()")
    assert other == "/x/y.py:7: DeprecationWarning: old\n  f()\n"


@pytest.mark.slow
def test_ctrl_c_finishes_the_epoch_and_writes_the_checkpoint(tmp_path, capsys, monkeypatch):
    """`waveviz train`: the first Ctrl-C ends the run at the next batch like a spent --max-minutes
    (the partial epoch validated, the checkpoint written, exit 0); a second one quits at once."""
    import signal

    import torch

    from waveviz.training import ProgressBar

    data, ckpt = str(tmp_path / "d.npz"), str(tmp_path / "m.pt")
    assert run(["data", "make", "tetrominoes", "--n", "40", "--seed", "1", "--out", data], capsys)[0] == 0
    seen = []
    bar = ProgressBar.__call__

    def ctrl_c_at_step_2(self, event, trainer, info):  # the user presses Ctrl-C after step 2
        bar(self, event, trainer, info)
        if event == "batch":
            seen.append(info["step"])
            if info["step"] == 2:
                signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(ProgressBar, "__call__", ctrl_c_at_step_2)
    code, out, err = run(["train", "nwm-linear-tetrominoes", "--data", data, "--epochs", "5", "--batch-size", "4",
                          "--set", "T=6", "--set", "head=(16,)", "--out", ckpt], capsys)
    assert code == 0, err
    assert seen == [1, 2]  # step 3's forward saw the request and ended the epoch before its update
    assert "stopped by SIGINT: finishing at the next batch" in err
    assert "(partial: stopped by SIGINT)" in err and "stopped by SIGINT after epoch 1 (best 1)" in err
    meta = torch.load(ckpt, weights_only=True)["meta"]
    assert meta["status"] == "finished" and meta["epochs"] == 1 and meta["history"][-1]["partial"]
    assert meta["history"][-1]["images_seen"] == 8 and "test_metrics" not in meta  # (--data: train/val only)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back

    def ctrl_c_twice(self, event, trainer, info):
        if event == "batch" and info["step"] == 1:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(ProgressBar, "__call__", ctrl_c_twice)
    os.remove(ckpt)
    code, out, err = run(["train", "nwm-linear-tetrominoes", "--data", data, "--epochs", "5", "--batch-size", "4",
                          "--set", "T=6", "--set", "head=(16,)", "--out", ckpt], capsys)
    assert code == 130 and err.strip().endswith("waveviz: interrupted") and not os.path.exists(ckpt)
