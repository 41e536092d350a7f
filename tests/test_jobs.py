"""Background training jobs: lifecycle, queue, crash and divergence handling, refused settings,
the CLI and the Train page. Workers are real detached processes training a tiny NWM on 16×16 images."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from waveviz import jobs
from waveviz.cli import main
from waveviz.checkpoint import read_checkpoint
from waveviz.jobs import BEST, HOST, JobError, JobSpec, JobStore, append_jsonl, read_json, read_jsonl, write_json
from waveviz.paths import find_checkpoints

TINY = {"T": 8, "head": [16], "width": 4}  # a few thousand parameters: an epoch takes milliseconds


def tiny_npz(path, n=24, size=16, seed=0) -> str:
    """Grey size×size images, one filled rectangle each labelled 1–4 (fits the polygons presets)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size), np.uint8)
    masks = np.zeros((n, size, size), np.int64)
    for i in range(n):
        r, c = rng.integers(0, size - 6, 2)
        h, w = rng.integers(3, 7, 2)
        k = rng.integers(1, 5)
        images[i, r:r + h, c:c + w] = 60 * k
        masks[i, r:r + h, c:c + w] = k
    np.savez(path, images=images, masks=masks)
    return str(path)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("WAVEVIZ_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WAVEVIZ_MAX_JOBS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # workers share two cores with the test
    return tmp_path / "home"


@pytest.fixture
def npz(tmp_path):
    return tiny_npz(tmp_path / "tiny.npz")


def spec(npz, **kw) -> JobSpec:
    """A tiny job under the paper's recipe (a constant learning rate, the full loss): its epochs and
    divergence are predictable."""
    from waveviz.training import RECIPES

    return JobSpec(**{**RECIPES["paper"], "recipe": "paper", "preset": "nwm-linear-polygons", "npz": npz, "epochs": 2,
                      "batch_size": 8, "device": "cpu", "overrides": TINY, **kw})


def wait_for(store, job_id, cond, timeout=60.0) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        st = store.status(job_id)
        if cond(st):
            return st
        time.sleep(0.1)
    raise AssertionError(f"timed out; last status {st}\nlog:\n{store.log_tail(job_id)}")


def fake_job(store, state, *, epoch=0, epochs=5, **status) -> str:
    """A job folder written by hand, as a worker would have left it."""
    job_id = f"20240101-0000{len(store.ids()):02d}-000fa"  # the form of the ids `submit` makes
    d = store.root / job_id
    d.mkdir(parents=True)
    write_json(d / "status.json", {"state": state, "pid": None, "epoch": epoch, "epochs": epochs,
                                   "preset": "nwm-linear-polygons", "heartbeat": time.time(), "message": "", **status})
    write_json(d / "config.json", {"preset": "nwm-linear-polygons", "epochs": epochs})
    return job_id


# ------------------------------------------------------------------ real workers

@pytest.mark.slow
def test_lifecycle_queue_divergence_cancel_resume(home, npz, capsys, monkeypatch):
    from waveviz.checkpoint import load_checkpoint

    # Adam steps of ~1e3 overflow the reference recurrence to NaN in epoch 2 (workers inherit the env)
    monkeypatch.setenv("WAVEVIZ_ENGINE", "reference")

    store = JobStore()
    a = store.submit(spec(npz, epochs=10_000))
    b = store.submit(spec(npz, epochs=5, lr=1e3, batch_size=32))  # Adam steps of ~1e3: NaN in epoch 2
    assert store.status(a)["state"] == "running"
    assert store.status(b)["state"] == "queued"  # one slot ($WAVEVIZ_MAX_JOBS=1)

    st = wait_for(store, a, lambda s: s["epoch"] >= 1)
    assert st["state"] == "running" and st["pid"] and 0 < st["progress"] < 1 and st["eta_s"] is not None
    assert store.cancel(a)["state"] == "running"  # asked; it stops at its next batch
    st = store.wait(a, timeout=60)
    assert st["state"] == "canceled" and st["resumable"] and st["checkpoint"]
    k = st["epoch"]

    st = store.wait(b, timeout=60)  # a's worker handed its slot to b on the way out
    assert st["state"] == "failed" and st["epoch"] == 1
    assert "diverged" in st["message"] and "nan" in st["message"] and "\n" not in st["message"]
    load_checkpoint(st["checkpoint"])  # the best checkpoint is kept, intact

    st = store.resume(a, epochs=k + 1)
    assert st["state"] in ("queued", "running")
    st = store.wait(a, timeout=60)
    assert st["state"] == "finished", st["message"]
    assert st["epoch"] == k + 1 and st["progress"] == 1.0
    assert st["checkpoint"] in map(str, find_checkpoints())  # every model picker lists it
    records = store.metrics(a)
    assert [r["epoch"] for r in records] == list(range(1, k + 2))  # continued, not restarted
    assert {"train_loss", "val_loss", "val_fg_iou"} <= set(records[0])
    try:
        import waveviz.analysis  # noqa: F401  (another module's work; the share appears once it exists)
        assert all(0 <= r["long_wavelength_share"] <= 1 for r in records)
    except ImportError:
        pass

    assert main(["jobs", "status", a, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"id", "state", "pid", "epoch", "epochs", "checkpoint", "message"} <= set(out)
    assert (out["id"], out["state"], out["epoch"], out["epochs"]) == (a, "finished", k + 1, k + 1)
    assert main(["jobs", "list", "--json"]) == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)] == [b, a]  # newest first
    assert main(["jobs", "list"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["job", "state", "preset", "epoch", "message"]
    assert [r.split()[:2] for r in rows] == [[b, "failed"], [a, "finished"]]
    assert all(r.index("finished" if r.startswith(a) else "failed") == header.index("state") for r in rows)


@pytest.mark.slow
def test_a_time_budget_finishes_a_job_early(home, npz):
    store = JobStore()
    job = store.submit(spec(npz, epochs=100_000, max_minutes=0.05))  # 3 s of training
    st = store.wait(job, timeout=60)
    assert st["state"] == "finished", st["message"]
    assert 1 <= st["epoch"] < 100_000 and st["checkpoint"]
    curve = store.curve(job)  # the live learning curve: a point at the first step, then every 5 s
    assert curve and curve[0]["images_seen"] > 0 and all(p["train_loss"] > 0 for p in curve)
    assert [p["seconds"] for p in curve] == sorted(p["seconds"] for p in curve)


@pytest.mark.slow
def test_finish_ends_a_running_job_early_keeping_its_partial_epoch(home, npz, capsys):
    store = JobStore()
    job = store.submit(spec(npz, epochs=10_000))
    wait_for(store, job, lambda s: s["epoch"] >= 1)
    assert main(["jobs", "finish", job]) == 0
    assert "finish requested" in capsys.readouterr().out
    st = store.wait(job, timeout=60)
    assert st["state"] == "finished" and st["message"].startswith("finished early by the user: best epoch"), st["message"]
    assert 1 <= st["epoch"] < 10_000 and st["checkpoint"] and not st["finishing"]
    with pytest.raises(JobError, match="is finished; only a running job can finish early"):
        store.finish(job)
    assert main(["jobs", "finish", job]) == 1
    assert capsys.readouterr().err.strip() == f"waveviz: error: job {job} is finished; only a running job can finish early"


@pytest.mark.slow
def test_sigkill_reads_as_crashed_and_resumable(home, npz, capsys):
    store = JobStore()
    assert main(["jobs", "start", "nwm-linear-polygons", "--data", npz, "--epochs", "10000", "--batch-size", "8",
                 "--device", "cpu", "--set", "T=8", "--set", "head=(16,)", "--set", "width=4", "--json"]) == 0
    job = json.loads(capsys.readouterr().out)["id"]
    st = wait_for(store, job, lambda s: s["epoch"] >= 1)
    os.kill(st["pid"], signal.SIGKILL)
    st = wait_for(store, job, lambda s: s["state"] != "running", timeout=10)
    assert st["state"] == "crashed" and st["resumable"] and st["checkpoint"]
    assert "resume" in st["message"]
    assert JobStore().status(job)["state"] == "crashed"  # a fresh store (an app restart) sees the same
    assert store.cancel(job)["state"] == "canceled"  # the slot is free again without a worker


# ------------------------------------------------------------------ no worker needed

def test_jobs_start_takes_the_recipe_for_the_presets_data_set(home):
    """`jobs start nwm-linear-mnist` queues the fast recipe's MNIST learning rate (DATASET_CHANGES);
    a flag given wins; other data sets keep the recipe's."""
    from waveviz.training import TrainConfig

    store = JobStore()
    fake_job(store, "running", pid=os.getpid(), host=HOST)  # holds the only slot: nothing trains
    for args, lr in ((["nwm-linear-mnist"], TrainConfig.from_recipe("fast", "mnist").lr),
                     (["nwm-linear-mnist", "--lr", "1e-2"], 1e-2),
                     (["nwm-linear-tetrominoes"], TrainConfig().lr)):
        before = set(store.ids())
        assert main(["jobs", "start", *args]) == 0
        (job,) = set(store.ids()) - before
        assert store.status(job)["state"] == "queued" and store.spec(job).lr == lr, args
    assert TrainConfig.from_recipe("fast", "mnist").lr != TrainConfig().lr

def test_a_job_spec_built_in_python_takes_its_recipe_for_its_data_set():
    """A training field not given to `JobSpec` is the recipe's value for the preset's data set, as
    `jobs start` and the Train page give it; a value given (None included: "no limit") wins; a job
    stored before a field existed reads it from its own recipe."""
    import dataclasses

    from waveviz.training import TrainConfig

    def train(spec):
        return dataclasses.asdict(spec.train_config())

    assert train(JobSpec("nwm-linear-mnist")) == dataclasses.asdict(TrainConfig.from_recipe("fast", "mnist"))
    assert JobSpec("nwm-linear-mnist").lr != JobSpec("nwm-linear-tetrominoes").lr == TrainConfig().lr
    assert train(JobSpec("nwm-linear-tetrominoes", recipe="paper")) == dataclasses.asdict(TrainConfig.from_recipe("paper"))
    given = JobSpec("nwm-linear-mnist", lr=1e-2, max_minutes=None, recipe="paper")
    assert (given.lr, given.max_minutes, given.batch_size) == (1e-2, None, 64)
    old = {k: v for k, v in dataclasses.asdict(JobSpec("lstm-linear-mnist", recipe="paper")).items() if k != "beta2"}
    assert JobSpec.from_dict(old).beta2 == TrainConfig.from_recipe("paper").beta2
    assert "FROM_RECIPE" not in json.dumps(dataclasses.asdict(JobSpec("nwm-linear-mnist")))
    with pytest.raises(JobError, match="recipe must be one of"):
        JobSpec("nwm-linear-mnist", recipe="slow")
    with pytest.raises(JobError, match="preset must be one of"):
        JobSpec(["not", "a", "name"])


@pytest.mark.parametrize("change, says", [
    (dict(preset="nope"), "preset must be one of"),
    (dict(epochs=0), "epochs must be"),
    (dict(lr=0.0), "lr must be"),
    (dict(batch_size=0), "batch_size must be"),
    (dict(preset="cnn2-polygons", readout="fft"), "without a readout"),
    (dict(readout="fancy"), "readout must be one of"),
    (dict(npz="/no/such.npz"), "no such file"),
    (dict(preset="nwm-linear-tetrominoes"), "RGB"),
    (dict(overrides={"T": 0}), "T must be"),
    (dict(overrides={"depth": 3}), "unknown setting"),
    (dict(npz=None, preset="nwm-linear-polygons", overrides={"num_classes": 3}), "num_classes"),
    (dict(nproc=0), "nproc must be"),
    (dict(max_minutes=-1.0), "max_minutes must be"),
    (dict(engine="warp"), "engine must be one of .*, got 'warp'"),
])
def test_invalid_settings_are_refused_before_launch(home, npz, change, says):
    store = JobStore()
    with pytest.raises(JobError, match=says) as e:
        store.submit(spec(**{"npz": npz, **change}))
    assert "\n" not in str(e.value)
    assert store.ids() == []


def test_a_job_can_start_from_a_checkpoint(home, npz, tmp_path):
    """init: a fine-tune of the same model, recorded in the new checkpoint; a missing, foreign or
    doubled start is refused in one line before anything is queued."""
    import waveviz

    store = JobStore()
    with pytest.raises(JobError, match="no such file"):
        store.submit(spec(npz, init=str(tmp_path / "none.pt")))
    cnn = tmp_path / "cnn.pt"
    waveviz.save_checkpoint(cnn, waveviz.create_model("cnn2-polygons"), "cnn2-polygons", {"dataset": "polygons"})
    with pytest.raises(JobError, match="a cnn model, and this preset trains a nwm") as e:
        store.submit(spec(npz, init=str(cnn)))
    assert "\n" not in str(e.value)
    with pytest.raises(JobError, match="not both"):
        store.submit(spec(npz, init=str(cnn), transfer=str(cnn)))
    assert store.ids() == []

    first = store.submit(spec(npz, epochs=1))
    assert store.wait(first, timeout=60)["state"] == "finished"
    start = store.status(first)["checkpoint"]
    job = store.submit(spec(npz, epochs=1, init=start))
    st = store.wait(job, timeout=60)
    assert st["state"] == "finished", st["message"]
    assert read_checkpoint(st["checkpoint"])["meta"]["init"]["path"] == os.path.basename(start)
    assert jobs.JobSpec.from_dict(read_json(store.root / job / "config.json")).start_args(store.root / job) == \
        {"resume": True}  # a resumed job continues from its own last state, not from the start again
    assert spec(npz, transfer=start).start_args(tmp_path) == {"transfer": start}  # a first run: from the start


def test_cli_refuses_in_one_line(home, npz, capsys):
    assert main(["jobs", "start", "nwm-linear-polygons", "--data", npz, "--lr", "0"]) == 2
    assert main(["jobs", "start", "nwm-linear-polygons", "--data", npz, "--set", "T=0"]) == 1
    assert main(["jobs", "status", "nope"]) == 1
    assert main(["jobs", "start", "nwm-linear-polygons", "--data", npz, "--engine", "turbo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("waveviz: error:") for line in err)
    assert "invalid choice: 'turbo'" in err[-1] and "fast-bf16" in err[-1]


def test_unwritable_home_is_refused(tmp_path, monkeypatch, npz):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("WAVEVIZ_HOME", str(blocker / "home"))
    with pytest.raises(JobError, match="cannot create the jobs folder"):
        JobStore().submit(spec(npz))


@pytest.mark.slow
def test_full_disk_fails_the_job_cleanly(home, npz, monkeypatch):
    """The worker itself (run in this process), with every checkpoint write failing as on a full disk."""
    store = JobStore()
    fake_job(store, "running", pid=os.getpid(), host=HOST)  # holds the only slot: the next job stays queued
    job = store.submit(spec(npz, epochs=1))
    assert store.status(job)["state"] == "queued"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("waveviz.checkpoint.torch.save", full)
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        assert jobs.run_job(store.root / job) == 1
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    st = store.status(job)
    assert st["state"] == "failed" and "No space left on device" in st["message"] and "\n" not in st["message"]
    assert st["checkpoint"] is None and not list((store.root / job).glob("*.tmp"))


def test_state_comes_from_heartbeat_and_process(home):
    store = JobStore(stale_s=30)
    beating = fake_job(store, "running", host="elsewhere", pid=1)
    silent = fake_job(store, "running", host="elsewhere", pid=1, heartbeat=time.time() - 60)
    zombie = subprocess.Popen(["true"])  # finished but not reaped: os.kill(pid, 0) still succeeds
    time.sleep(0.3)
    try:
        os.kill(zombie.pid, 0)
        assert not jobs.pid_running(zombie.pid)
        dead_here = fake_job(store, "running", host=HOST, pid=zombie.pid)
        assert store.status(dead_here)["state"] == "crashed"
    finally:
        zombie.wait()
    assert store.status(beating)["state"] == "running"
    assert store.status(silent)["state"] == "crashed" and store.status(silent)["resumable"]
    with pytest.raises(JobError, match="running; cancel it first"):
        store.delete(beating)
    assert store.cancel(silent)["state"] == "canceled"


BAD_IDS = ["..", ".", "", "/etc", "jobs", "../jobs", "a\0b", "x" * 10_000, "20240101-000000-000fa/..",
           "../20240101-000000-000fa", "20240101-000000-000fa\n", "２０２４0101-000000-000fa"]


def test_job_ids_are_checked_as_ids(home, capsys):
    """Only the form `submit` makes names a job, for every command, the API and the list: `..` must
    not reach $WAVEVIZ_HOME even when a config.json lies there."""
    store = JobStore()
    good = fake_job(store, "finished")
    write_json(home / "config.json", {"preset": "nwm-linear-polygons"})  # a folder that looks like a job
    (store.root / "notes").mkdir()
    write_json(store.root / "notes" / "config.json", {})
    assert store.ids() == [good] and [st["id"] for st in store.list()] == [good]
    for bad in BAD_IDS + [str(home), str(store.root / good)]:
        for call in (store.status, store.spec, store.metrics, store.log_tail, store.cancel, store.resume, store.delete):
            with pytest.raises(JobError, match="not a job id") as e:
                call(bad)
            assert "\n" not in str(e.value) and len(str(e.value)) < 200
    for cmd in ("status", "cancel", "resume", "delete", "wait", "log"):
        assert main(["jobs", cmd, ".."]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "'..' is not a job id" in err[0], err
    assert home.is_dir() and (home / "config.json").is_file() and store.status(good)["state"] == "finished"
    store.delete(good)
    assert store.ids() == []


def test_the_final_scoring_says_so_with_its_own_eta(tmp_path):
    """After training, scoring the best model (10,000 MNIST test digits: minutes on a CPU) is not
    silence: the status names it, with an ETA at the last validation's pace per image."""
    from types import SimpleNamespace

    monitor = jobs.JobMonitor(tmp_path, jobs.StatusWriter(tmp_path))
    trainer = SimpleNamespace(val_data=(np.zeros((4, 1)),), history=[{"val_seconds": 9.0}, {"val_seconds": 2.0}])
    monitor("scoring", trainer, {"test": 10, "val": 6})
    st = read_json(tmp_path / "status.json")
    assert st["message"] == "scoring the best model on 10 test and 6 validation images"
    assert st["eta_s"] == pytest.approx(16 * 2.0 / 4)  # the last epoch's 0.5 s an image
    assert jobs.progress({**st, "state": "running", "epochs": 1, "epoch": 1})[1] > 0  # counted down, not 0


def test_progress_and_series():
    assert jobs.progress({"state": "running", "epoch": 1, "epochs": 4, "step": 5, "steps": 10,
                          "eta_s": 30.0, "eta_at": time.time()})[0] == pytest.approx(1.5 / 4)
    assert jobs.progress({"state": "finished", "epoch": 2, "epochs": 4}) == (1.0, 0.0)
    # 300 epochs under a 10-minute budget: 6 minutes spent is 60 % done, whatever the epoch count says
    assert jobs.progress({"state": "running", "epoch": 1, "epochs": 300, "step": 0, "steps": 10, "budget_s": 600,
                          "spent_s": 360, "eta_s": 240.0, "eta_at": time.time()})[0] == pytest.approx(0.6)
    s = jobs.metric_series([{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0, "share": 0.5}])
    assert s == {"epoch": [1, 2], "loss": [2.0, 1.0], "share": [None, 0.5]}


# ------------------------------------------------------------------ the page

def _page():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file("../app_pages/train.py", default_timeout=60)


def test_page_rebuilds_the_job_list_from_disk(home):
    store = JobStore()
    done = fake_job(store, "finished", epoch=2, epochs=2, best_val_loss=0.5, message="best epoch 2/2")
    write_json(store.root / done / "metrics.json", [
        {"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "val_fg_iou": 0.1, "long_wavelength_share": 0.2},
        {"epoch": 2, "train_loss": 0.6, "val_loss": 0.5, "val_fg_iou": 0.3, "long_wavelength_share": 0.4}])
    crashed = fake_job(store, "running", epoch=1, host="elsewhere", heartbeat=time.time() - 3600)

    at = _page().run()  # a fresh app: only the folders tell it about the jobs
    assert not at.exception
    picker = at.selectbox(key="train_job")
    assert picker.options[0].startswith(crashed) and picker.options[1].startswith(done)
    assert "crashed" in at.markdown[-1].value and "resume to continue" in at.error[0].value
    assert any(b.label == "Resume" for b in at.button)
    at = picker.select(done).run()
    assert not at.exception and len(at.get("plotly_chart")) == 1
    assert "finished" in at.markdown[-1].value


def test_page_draws_the_learning_curve_before_the_first_epoch_ends(home):
    from waveviz.app import jobs_view

    store = JobStore()
    job = fake_job(store, "running", pid=os.getpid(), host=HOST, epoch=0, epochs=300)
    for point in ({"seconds": 5.0, "images_seen": 80, "epoch": 1, "train_loss": 1.2, "lr": 1e-3},
                  {"seconds": 10.0, "images_seen": 160, "epoch": 1, "train_loss": 0.8, "lr": 2e-3}):
        append_jsonl(store.root / job / "curve.jsonl", point)
    with open(store.root / job / "curve.jsonl", "a") as f:
        f.write('{"seconds": 15.0, "ima')  # a torn last line (the writer was killed mid-write) is skipped
    at = _page().run()
    assert not at.exception and at.selectbox(key="train_job").value == job
    charts = at.get("plotly_chart")
    assert len(charts) == 1 and "train loss (live)" in charts[0].proto.spec
    s = jobs_view.learning_curves([{"epoch": 1, "seconds": 90.0, "val_loss": 0.5, "val_fg_iou": 0.4},
                                   {"epoch": 2, "seconds": 30.0, "val_loss": 0.4, "val_fg_iou": 0.6}], store.curve(job))
    assert s["epoch_min"] == [1.5, 2.0] and s["live_min"] == [5 / 60, 10 / 60] and s["live_loss"] == [1.2, 0.8]
    assert s["long_wavelength_share"] == [None, None]


def test_a_curve_point_after_a_torn_line_is_kept(tmp_path):
    path = tmp_path / "curve.jsonl"
    append_jsonl(path, {"seconds": 5.0})
    with open(path, "a") as f:
        f.write('{"seconds": 1')  # the writer was killed mid-line; the resumed job appends next
    append_jsonl(path, {"seconds": 10.0})
    assert read_jsonl(path) == [{"seconds": 5.0}, {"seconds": 10.0}]


def test_a_job_from_before_the_jsonl_curve_keeps_its_curve(home):
    store = JobStore()
    job = fake_job(store, "finished")
    write_json(store.root / job / "curve.json", [{"seconds": 5.0, "images_seen": 80, "epoch": 1, "train_loss": 1.2}])
    assert [p["train_loss"] for p in store.curve(job)] == [1.2]


def test_page_refuses_queues_and_cancels(home):
    store = JobStore()
    fake_job(store, "running", pid=os.getpid(), host=HOST)  # takes the only slot: nothing is spawned
    (home / "data").mkdir()
    npz = tiny_npz(home / "data" / "tiny.npz")  # where the page may read
    at = _page().run()
    at.selectbox(key="train_data").select("an .npz file").run()
    at.text_input(key="train_npz").input(npz)
    at.selectbox(key="train_preset").select("nwm-linear-polygons")
    at = at.number_input(key="train_lr").set_value(0.0).run()
    assert not at.exception and at.error[0].value == "lr must be a number > 0 and ≤ 1e+06, got 0.0"
    assert not any(b.key == "train_launch" for b in at.button)  # nothing to launch while a setting is refused
    assert len(store.ids()) == 1

    at.number_input(key="train_lr").set_value(1e-3)
    at.number_input(key="train_epochs").set_value(3)
    assert at.selectbox(key="train_engine").value == "auto"
    at = at.selectbox(key="train_engine").select("fast-bf16").run()
    at = at.button(key="train_launch").click().run()
    assert not at.exception and not at.error
    job = store.ids()[-1]
    assert store.status(job)["state"] == "queued" and store.spec(job).epochs == 3 and store.spec(job).npz == npz
    assert store.spec(job).engine == "fast-bf16"
    assert at.selectbox(key="train_job").value == job

    at = at.button(key=f"train_cancel_{job}").click().run()
    assert not at.exception
    assert store.status(job)["state"] == "canceled"


def test_page_reads_server_paths_only_under_uploads_and_data(home, npz, tmp_path, monkeypatch):
    """A browser user may not make the server read any file: outside $WAVEVIZ_HOME's uploads and data
    folders (after `..` and symbolic links) a path is refused, and the page says where it reads;
    $WAVEVIZ_READ_PATHS allows more."""
    store = JobStore()
    fake_job(store, "running", pid=os.getpid(), host=HOST)  # takes the only slot: nothing is spawned
    data = home / "data"
    data.mkdir()
    (data / "link.npz").symlink_to(npz)  # npz lies in tmp_path, outside the home
    at = _page().run()
    at.selectbox(key="train_data").select("an .npz file").run()
    assert any(str(data) in c.value and "WAVEVIZ_READ_PATHS" in c.value for c in at.caption)
    for path in (npz, str(data / ".." / ".." / "tiny.npz"), str(data / "link.npz"), "/etc/passwd"):
        at.text_input(key="train_npz").input(path)
        at = at.run()
        assert not at.exception and len(at.error) == 1, path
        assert "reads files only under" in at.error[0].value and str(data) in at.error[0].value, at.error[0].value
        assert not any(b.key == "train_launch" for b in at.button)  # no form to launch from
    assert len(store.ids()) == 1

    monkeypatch.setenv("WAVEVIZ_READ_PATHS", str(tmp_path))
    at.text_input(key="train_npz").input(npz)
    at = at.run()
    at.selectbox(key="train_preset").select("nwm-linear-polygons")
    at = at.button(key="train_launch").click().run()
    assert not at.exception and not at.error
    assert len(store.ids()) == 2 and store.spec(store.ids()[-1]).npz == npz


@pytest.mark.slow
def test_a_two_process_job_trains_data_parallel_and_a_sigterm_cancels_it_cleanly(home, npz):
    # nproc 2 on a CPU: the worker starts its two ranks (distributed.launch_local); a SIGTERM to the
    # worker (logout, `kill`) reaches rank 0, whose cancel stops both ranks at the same batch; the job
    # queued behind it, started by rank 0, runs as one process (no rank variables handed down)
    store = JobStore()
    job = store.submit(spec(npz, epochs=10_000, batch_size=2, nproc=2))
    queued = store.submit(spec(npz, epochs=1))
    wait_for(store, job, lambda s: s["epoch"] >= 1, timeout=120)
    launcher = read_json(store.path(job) / "launch.json", {})["pid"]
    os.kill(launcher, signal.SIGTERM)
    st = wait_for(store, job, lambda s: s["state"] != "running", timeout=60)
    assert st["state"] == "canceled" and st["resumable"], (st, store.log_tail(job))
    assert "Traceback" not in store.log_tail(job)
    assert read_checkpoint(store.path(job) / BEST)["meta"]["world_size"] == 2
    st = store.wait(queued, timeout=120)
    assert st["state"] == "finished", (st, store.log_tail(queued))
    assert read_checkpoint(store.path(queued) / BEST)["meta"]["world_size"] == 1
