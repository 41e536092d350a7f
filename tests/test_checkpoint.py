"""Checkpoints describe themselves, round-trip exactly, and bad files are refused in one line."""
import os

import pytest
import torch

import waveviz
from waveviz import CheckpointError, create_model, load_checkpoint, save_checkpoint


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
    foreign = tmp_path / "foreign.pt"
    torch.save(create_model("cnn2-mnist").state_dict(), foreign)
    assert "not a waveviz checkpoint" in _refusal(foreign)

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "waveviz-checkpoint", "payload": Evil()}, evil)
    assert "refused" in _refusal(evil)
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
