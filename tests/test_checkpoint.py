"""Checkpoints describe themselves, round-trip exactly, bad files are refused in one line, and a
write is durable: a crash or a second writer leaves the old file or the new one."""
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

import waveviz
from waveviz import CheckpointError, create_model, load_checkpoint, save_checkpoint
from waveviz.checkpoint import read_checkpoint


def test_round_trip_rebuilds_the_model_without_being_told(tmp_path):
    torch.manual_seed(0)
    model = create_model("nwm-fft-polygons", T=12).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, "nwm-fft-polygons", {"epochs": 3, "test_metrics": {"fg_iou": 0.5}})
    back, info = load_checkpoint(path)
    assert info["preset"] == "nwm-fft-polygons" and info["config"]["T"] == 12
    assert info["meta"]["test_metrics"]["fg_iou"] == 0.5 and info["waveviz_version"] == waveviz.__version__
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(back(x), model(x))
    assert not back.training


def _refusal(path) -> str:
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def test_refuses_corrupt_foreign_malicious_and_mismatched_files(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, create_model("cnn2-mnist"), "cnn2-mnist")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[:500])
    assert "not a readable checkpoint" in _refusal(corrupt)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    assert "not a readable checkpoint" in _refusal(text)
    text.write_text("# a README\n")  # the unpickler's "Unsupported operand 35": still not a checkpoint
    assert "not a readable checkpoint" in _refusal(text)
    foreign = tmp_path / "foreign.pt"
    torch.save(create_model("cnn2-mnist").state_dict(), foreign)
    assert "not a waveviz checkpoint" in _refusal(foreign)

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "waveviz-checkpoint", "payload": Evil()}, evil)
    assert "refused" in _refusal(evil) and "asks for posix.system" in _refusal(evil).replace("nt.system", "posix.system")
    assert not marker.exists()

    ck = torch.load(good, weights_only=True)
    ck["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(ck, tmp_path / "extra.pt")
    assert "do not fit" in _refusal(tmp_path / "extra.pt")
    ck = torch.load(good, weights_only=True)
    ck["config"]["L"] = 4  # names a deeper model than its weights
    torch.save(ck, tmp_path / "mismatch.pt")
    assert "do not fit" in _refusal(tmp_path / "mismatch.pt")
    ck = torch.load(good, weights_only=True)
    ck["model"] = "transformer"
    torch.save(ck, tmp_path / "family.pt")
    assert "do not fit" in _refusal(tmp_path / "family.pt")
    assert "no such file" in _refusal(tmp_path / "missing.pt")


def test_save_to_unwritable_place_is_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="cannot write"):
        save_checkpoint(tmp_path / "no" / "dir" / "m.pt", create_model("cnn2-mnist"), "cnn2-mnist")


# ------------------------------------------------------------------ durable writes

WRITER = """
import io, os, sys, time
import torch
from waveviz import create_model, save_checkpoint

path, go, first, count, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
real_save = torch.save


def save_in_two_halves(obj, f):  # the second half after `pause` seconds: a window in the middle of a write
    buf = io.BytesIO()
    real_save(obj, buf)
    data = buf.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    print("mid", flush=True)
    time.sleep(pause)
    f.write(data[len(data) // 2:])


torch.save = save_in_two_halves
model = create_model("cnn2-mnist")
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.01)
for v in range(first, first + count):
    save_checkpoint(path, model, "cnn2-mnist", {"version": v}, blob=torch.full((1000,), float(v)))
"""


def _writer(path, go, first: int, count: int, pause: float) -> subprocess.Popen:
    """A process saving versions first … first + count − 1 of a checkpoint to `path` once `go` exists,
    each write paused half-way; it prints "ready" once loaded, then "mid" in each pause."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(go), str(first), str(count), str(pause)],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=root)


def _ready(*procs: subprocess.Popen) -> None:
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"


def _version(path) -> int:
    """The version a whole checkpoint holds; its blob must agree (a torn file fails to load or here)."""
    ck = read_checkpoint(path)
    v = ck["meta"]["version"]
    assert bool((ck["blob"] == v).all()), path
    return v


def _save_version(path, v: int) -> None:
    save_checkpoint(path, create_model("cnn2-mnist"), "cnn2-mnist", {"version": v}, blob=torch.full((1000,), float(v)))


def test_save_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real_fsync(fd)))
    save_checkpoint(tmp_path / "m.pt", create_model("cnn2-mnist"), "cnn2-mnist")
    assert synced == [False, True]  # the temp file's data, then the folder holding the rename
    assert os.listdir(tmp_path) == ["m.pt"]


def test_a_writer_killed_mid_write_leaves_the_old_file(tmp_path):
    folder, go = tmp_path / "ck", tmp_path / "go"
    folder.mkdir()
    path = folder / "m.pt"
    _save_version(path, 1)
    go.touch()
    proc = _writer(path, go, first=2, count=1, pause=60)
    _ready(proc)
    assert proc.stdout.readline().strip() == "mid"  # half of version 2 is on disk
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _version(path) == 1
    (temp,) = [p for p in folder.iterdir() if p != path]  # what the killed writer left: its own temp file
    assert temp.name.startswith(".m.pt.") and temp.suffix == ".tmp"  # hidden, and no model picker lists it
    with pytest.raises(CheckpointError):
        read_checkpoint(temp)  # it is the torn half
    _save_version(path, 3)  # the next save is not disturbed by it
    assert _version(path) == 3


@pytest.mark.slow  # two Python processes start (≈ 20 s on a busy 2-core machine)
def test_two_concurrent_writers_never_leave_a_broken_file(tmp_path):
    folder, go = tmp_path / "ck", tmp_path / "go"
    folder.mkdir()
    path = folder / "m.pt"
    _save_version(path, 0)
    writers = [_writer(path, go, first=100, count=4, pause=0.2), _writer(path, go, first=200, count=4, pause=0.2)]
    _ready(*writers)
    go.touch()  # both start together: their writes overlap
    seen = set()
    while any(w.poll() is None for w in writers):
        seen.add(_version(path))  # a reader meanwhile always gets a whole checkpoint
        time.sleep(0.02)
    assert [w.returncode for w in writers] == [0, 0]
    assert _version(path) in (103, 203) and seen <= {0, 100, 101, 102, 103, 200, 201, 202, 203}
    assert os.listdir(folder) == ["m.pt"]  # each writer's temp file became the checkpoint


def test_trained_dataset_reads_the_metadata_then_the_preset():
    from waveviz.checkpoint import trained_dataset

    assert trained_dataset({"preset": "nwm-linear-mnist", "meta": {"dataset": "tetrominoes"}}) == "tetrominoes"
    assert trained_dataset({"preset": "nwm-linear-multi_mnist", "meta": {}}) == "multi_mnist"
    assert trained_dataset({"preset": "my-run-polygons"}) == "polygons"  # not a preset: its name's last part
