"""The Train page for a live demo: the form's defaults come from the training config, the run time
is estimated before Launch, Cancel reads "cancelling…" at once, a job that learnt nothing is flagged,
and job checkpoints are offered by name in every picker (canceled and failed ones not at all)."""
from __future__ import annotations

import dataclasses
import os
import shutil

import pytest
from streamlit.testing.v1 import AppTest

from waveviz import jobs
from waveviz.app import catalog, jobs_view
from waveviz.jobs import HOST, JobSpec, JobStore, write_json

from ..test_jobs import fake_job

TRAIN = "../../app_pages/train.py"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("WAVEVIZ_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WAVEVIZ_MAX_JOBS", "1")
    monkeypatch.setenv("WAVEVIZ_CHECKPOINTS", str(tmp_path / "no-shipped-checkpoints"))
    return tmp_path / "home"


def _page() -> AppTest:
    return AppTest.from_file(TRAIN, default_timeout=120)


def _texts(at) -> str:
    return "\n".join(e.value for kind in (at.info, at.warning, at.caption, at.markdown) for e in kind)


def test_form_defaults_are_the_training_configs(home, monkeypatch):
    from waveviz.training import RECIPES

    # a changed recipe must change the form
    monkeypatch.setitem(RECIPES, "fast", {**RECIPES["fast"], "epochs": 7, "max_minutes": 12.0, "lr": 3e-3})
    at = _page().run()
    assert not at.exception
    assert at.selectbox(key="train_recipe").value == "fast"
    assert at.number_input(key="train_epochs").value == 7
    assert at.number_input(key="train_minutes").value == 12.0
    assert at.number_input(key="train_lr").value == pytest.approx(3e-3)
    assert at.number_input(key="train_points").value == pytest.approx(0.125)
    d = jobs_view.form_defaults()
    assert d["batch_size"] == RECIPES["fast"]["batch_size"] and d["epochs"] == 7  # the recipe's


def test_the_form_takes_the_recipes_learning_rate_for_the_presets_data_set(home):
    """MNIST's fast recipe trains at its own lr (DATASET_CHANGES): picking MNIST data refills the
    learning rate and nothing else the user set; going back refills the recipe's."""
    from waveviz.training import TrainConfig

    mnist, tetro = TrainConfig.from_recipe("fast", "mnist").lr, TrainConfig().lr
    at = _page().run()
    assert at.number_input(key="train_lr").value == pytest.approx(tetro)
    at = at.number_input(key="train_minutes").set_value(15.0).run()
    at = at.selectbox(key="train_data").select("mnist").run()
    assert not at.exception and at.selectbox(key="train_preset").value == "nwm-linear-mnist"
    assert at.number_input(key="train_lr").value == pytest.approx(mnist)
    assert at.number_input(key="train_minutes").value == 15.0  # the user's own setting stays
    at = at.selectbox(key="train_recipe").select("paper").run()  # the paper: 1e-3 on every data set
    assert at.number_input(key="train_lr").value == pytest.approx(1e-3)
    at = at.selectbox(key="train_recipe").select("fast").run()
    assert at.number_input(key="train_lr").value == pytest.approx(mnist)
    at = at.selectbox(key="train_data").select("tetrominoes").run()
    assert at.number_input(key="train_lr").value == pytest.approx(tetro)
    at = at.number_input(key="train_lr").set_value(3e-3).run()  # typed by the user: kept on any data set
    at = at.selectbox(key="train_data").select("mnist").run()
    assert at.number_input(key="train_lr").value == pytest.approx(3e-3)


def test_a_return_to_the_page_fills_the_form_again(home):
    """Streamlit forgets the widgets of a page not shown: coming back, the form has the recipe's
    settings for its preset again, not the widgets' minimums."""
    from waveviz.training import TrainConfig

    def app():  # the Train page, or another page when "elsewhere" is set
        import streamlit as st

        from waveviz.app.train_page import render

        if not st.session_state.get("elsewhere"):
            render()

    at = AppTest.from_function(app, default_timeout=120).run()
    at = at.selectbox(key="train_data").select("mnist").run()
    at.session_state["elsewhere"] = True
    at = at.run()  # another page: the form's widgets are not drawn, so Streamlit drops their state
    assert not at.number_input
    at.session_state["elsewhere"] = False
    at = at.run()
    assert not at.exception
    shown = at.selectbox(key="train_data").value  # (Streamlit forgot this choice too)
    want = TrainConfig.from_recipe("fast", shown)
    assert at.number_input(key="train_lr").value == pytest.approx(want.lr)
    assert at.number_input(key="train_epochs").value == want.epochs and at.number_input(key="train_batch").value == want.batch_size
    assert at.number_input(key="train_minutes").value == want.max_minutes


def test_choosing_the_paper_recipe_fills_in_its_settings_and_launches_them(home):
    from waveviz.jobs import JobStore
    from waveviz.training import TrainConfig

    store = JobStore()
    fake_job(store, "running", pid=os.getpid(), host=HOST)  # holds the only slot: the launched job stays queued, nothing trains
    at = _page().run()
    at = at.selectbox(key="train_recipe").select("paper").run()
    assert not at.exception and not at.error
    assert at.number_input(key="train_lr").value == pytest.approx(1e-3)
    assert at.number_input(key="train_batch").value == 64
    assert at.number_input(key="train_minutes").value == 0.0 and at.number_input(key="train_points").value == 1.0
    assert at.selectbox(key="train_schedule").value == "constant"
    at = at.number_input(key="train_epochs").set_value(2).run()  # the user may still change a setting
    at = at.button(key="train_launch").click().run()
    assert not at.exception and not at.error
    job = store.ids()[-1]
    assert store.status(job)["state"] == "queued"
    spec = store.spec(job)
    paper = TrainConfig.from_recipe("paper", epochs=2)
    assert at.number_input(key="train_gate_bias").value == 0.0  # the paper: PyTorch's default init
    for name in ("recipe", "epochs", "batch_size", "lr", "max_minutes", "points", "fg_weight", "grad_clip",
                 "schedule", "warmup", "val_images", "patience", "gate_bias_init"):
        assert getattr(spec, name) == getattr(paper, name), name


def test_estimate_before_launch(home):
    spec = JobSpec(preset="nwm-linear-tetrominoes", epochs=10, n_train=1000, n_val=100, max_minutes=None)  # no budget: epochs decide
    speed = jobs_view.Speed(10.0, "test", per_epoch=True)
    scoring = (1000 + 100) / 3 / 10.0  # then 1,000 test and 100 validation images, a third of a step each
    s, how = jobs_view.estimate_seconds(spec, speed)
    assert s == pytest.approx(10 * 1000 / 10.0 + scoring) and "10 epochs × 1,000 images at 10 images/s" in how
    assert "to score 1,000 test and 100 validation images at the end" in how
    s, how = jobs_view.estimate_seconds(dataclasses.replace(spec, max_minutes=5.0), speed)
    assert s == pytest.approx(300 + scoring) and how.startswith("the time budget")  # the budget caps training
    s, _ = jobs_view.estimate_seconds(spec, jobs_view.Speed(10.0, "test"))  # a bare step speed: validation added
    assert s == pytest.approx(10 * (1000 + 100 / 3) / 10.0 + scoring)  # 100 validation images cost a third each
    s, how = jobs_view.estimate_seconds(dataclasses.replace(spec, max_minutes=5.0), None)
    assert s == 300 and "not counted" in how  # only the budget to go on: it says scoring is left out
    assert jobs_view.estimate_seconds(spec, None)[0] is None  # nothing to go on: says to measure

    at = _page().run()
    assert not at.exception
    assert any("Estimated run time" in e.value for e in (*at.info, *at.warning))
    at.number_input(key="train_minutes").set_value(15.0).run()
    assert any("Estimated run time: at most 15m 00s" in e.value and "the time budget" in e.value
               for e in (*at.info, *at.warning))


def test_measuring_the_speed_feeds_the_estimate(home):
    at = _page().run()
    at.selectbox(key="train_preset").select("nwm-linear-tetrominoes")
    at.number_input(key="train_T").set_value(4)
    at.number_input(key="train_n_train").set_value(200)
    at = at.button(key="train_measure").click().run()
    assert not at.exception
    line = next(e.value for e in (*at.info, *at.warning) if "Estimated run time" in e.value)
    assert "measured now: 2 training steps of 8 images" in line and "× 200 images" in line


def test_cancel_reads_cancelling_at_once(home):
    store = JobStore()
    job = fake_job(store, "running", pid=os.getpid(), host=HOST)  # alive: this test's own process
    at = _page().run()
    assert "running" in at.markdown[-1].value
    at = at.button(key=f"train_cancel_{job}").click().run()
    assert not at.exception
    assert "cancelling…" in at.markdown[-1].value  # before the worker has noticed
    assert store.status(job)["state"] == "running" and store.status(job)["cancelling"]
    assert not [b for b in at.button if b.key == f"train_cancel_{job}"]  # no second Cancel
    assert "cancelling…" in at.dataframe[0].value["state"][0]  # the table, which the browser redraws
    assert at.selectbox(key="train_job").options[0] == f"{job} · nwm-linear-polygons"  # no state to go stale


def test_finish_now_reads_finishing_at_once(home):
    store = JobStore()
    job = fake_job(store, "running", pid=os.getpid(), host=HOST)  # alive: this test's own process
    at = _page().run()
    at = at.button(key=f"train_finish_{job}").click().run()
    assert not at.exception
    assert "finishing…" in at.markdown[-1].value and store.status(job)["finishing"]
    assert any("Finishing at the end of the current batch" in c.value for c in at.caption)
    assert not [b for b in at.button if b.key == f"train_finish_{job}"]  # asked once
    at = at.button(key=f"train_cancel_{job}").click().run()  # a finish that takes too long can still be canceled
    assert "cancelling…" in at.markdown[-1].value and store.status(job)["cancelling"]


def test_a_job_that_learnt_nothing_is_flagged(home):
    store = JobStore()
    job = fake_job(store, "finished", epoch=2, epochs=2, message="best epoch 2/2")
    write_json(store.root / job / "metrics.json", [{"epoch": 1, "val_loss": 1.0, "val_fg_iou": 0.004},
                                                   {"epoch": 2, "val_loss": 0.9, "val_fg_iou": 0.011}])
    at = _page().run()
    assert any("FG-IoU 0.011 ≈ 0" in w.value for w in at.warning)
    write_json(store.root / job / "metrics.json", [{"epoch": 1, "val_loss": 1.0, "val_fg_iou": 0.6}])
    at = _page().run()
    assert not any("≈ 0" in w.value for w in at.warning)


def test_job_checkpoints_are_named_and_unusable_ones_hidden(home, tiny_home):
    store = JobStore()
    src = tiny_home / "jobs" / "tiny-nwm" / "best.pt"
    ids = {}
    for state in ("finished", "running", "canceled", "failed"):
        extra = {"pid": os.getpid(), "host": HOST} if state == "running" else {}
        ids[state] = fake_job(store, state, **extra)
        shutil.copy(src, store.root / ids[state] / "best.pt")
    entries = catalog.catalog()
    shown = {e.job for e in entries.values()}
    assert shown == {ids["finished"], ids["running"]}  # canceled and failed jobs are not offered
    label = entries[f"job-{ids['finished']}"].label
    assert label.startswith(f"job {ids['finished']}: nwm-linear-tetrominoes · 1 epoch · test FG-IoU ")
    assert "(paper 0.98)" in label and "⚠ under-trained" in label
    assert jobs.JobStore().status(ids["canceled"])["state"] == "canceled"


def test_best_model_is_computed_from_stored_quality():
    e = lambda cid, preset, iou, job=None: catalog.ModelEntry(  # noqa: E731
        cid, None, preset, "tetrominoes", "nwm", {"fg_iou": iou, "fg_acc": iou}, "test", 10, job)
    a = e("a", "nwm-linear-tetrominoes", 0.97)  # 99 % of the paper's 0.98
    b = e("b", "cnn8-tetrominoes", 0.70)  # beats the paper's 0.64, but segments worse
    c = e("c", "nwm-linear-tetrominoes", 0.99, job="x")  # a job: shipped models come first
    d = e("d", "nwm-linear-tetrominoes", 0.99)
    m = e("m", "nwm-linear-mnist", 0.75)  # 88 % of the paper: under-trained, so after b despite 0.75 > 0.70
    assert catalog.best([a, b, c]).id == "a" and catalog.best([a, b, c, d]).id == "d"
    assert catalog.best([b, m]).id == "b" and catalog.best([c]).id == "c"
    assert not a.under_trained and e("m", "nwm-linear-mnist", 0.25).under_trained
    f = catalog.ModelEntry("f", None, "nwm-fft-polygons", "polygons", "nwm", {"fg_iou": 0.5, "fg_acc": 0.6},
                           "test", 2)
    assert f.quality == "test FG-Acc 0.600 (paper 1.00) ⚠ under-trained"  # the paper gives polygons' accuracy only
    g = catalog.ModelEntry("g", None, "nwm-linear-tetrominoes", "tetrominoes", "nwm", None, None, None)
    assert g.quality == "no held-out metrics stored" and not g.under_trained


def test_faithful_metrics_are_preferred(tmp_path):
    import torch

    import waveviz

    torch.manual_seed(0)
    model = waveviz.create_model("nwm-linear-tetrominoes", T=4, head=(8,))
    path = tmp_path / "m.pt"
    waveviz.save_checkpoint(path, model, "nwm-linear-tetrominoes", {
        "dataset": "tetrominoes", "test_metrics": {"fg_iou": 0.5}, "faithful_test_metrics": {"fg_iou": 0.9}})
    assert catalog.describe(path).value == 0.9
    waveviz.save_checkpoint(path, model, "nwm-linear-tetrominoes", {"dataset": "tetrominoes", "val_metrics": {"fg_iou": 0.4}})
    assert catalog.describe(path).quality.startswith("validation FG-IoU 0.400")


def test_recorded_speed_comes_from_runs_on_this_kind_of_machine(home, tmp_path, monkeypatch):
    import torch

    import waveviz
    from waveviz.training import hardware_name

    folder = tmp_path / "shipped"
    folder.mkdir()
    monkeypatch.setenv("WAVEVIZ_CHECKPOINTS", str(folder))
    model = waveviz.create_model("nwm-linear-tetrominoes", T=4, head=(8,))
    meta = {"dataset": "tetrominoes", "hardware": hardware_name(torch.device("cpu")), "splits": {"train": 400},
            "history": [{"epoch": 1, "seconds": 100.0}, {"epoch": 2, "seconds": 60.0}]}
    waveviz.save_checkpoint(folder / "nwm-linear-tetrominoes.pt", model, "nwm-linear-tetrominoes", meta)
    speed = jobs_view.recorded_speed("nwm-linear-tetrominoes", "cpu")
    assert speed.images_per_s == pytest.approx(800 / 160) and speed.per_epoch
    assert "recorded by nwm-linear-tetrominoes" in speed.source
    assert jobs_view.recorded_speed("nwm-fft-tetrominoes", "cpu") is None


def test_point_weights_adam_beta2_and_coupling_lr_reach_the_job(home):
    from waveviz.jobs import JobStore

    store = JobStore()
    fake_job(store, "running", pid=os.getpid(), host=HOST)  # holds the only slot: nothing trains
    at = _page().run()
    assert at.selectbox(key="train_point_weights").value == "unbiased"
    assert at.number_input(key="train_beta2").value == pytest.approx(0.999)
    at = at.selectbox(key="train_point_weights").select("equal").run()
    at = at.number_input(key="train_beta2").set_value(0.99).run()
    assert at.number_input(key="train_coupling_lr").value == 1.0 and not at.number_input(key="train_coupling_lr").disabled
    at = at.number_input(key="train_coupling_lr").set_value(10.0).run()
    at = at.button(key="train_launch").click().run()
    assert not at.exception and not at.error
    spec = store.spec(store.ids()[-1])
    assert (spec.point_weights, spec.beta2, spec.coupling_lr) == ("equal", pytest.approx(0.99), 10.0)
    assert spec.train_config().coupling_lr == 10.0
    at = at.selectbox(key="train_preset").select("cnn8-tetrominoes").run()  # no recurrent coupling: off, and 1
    assert at.number_input(key="train_coupling_lr").disabled
    at = at.button(key="train_launch").click().run()
    assert not at.exception and not at.error
    assert store.spec(store.ids()[-1]).coupling_lr == 1.0


def test_a_job_can_start_from_a_fine_tune_or_a_transfer(home, tmp_path):
    """"Start from" offers the checkpoints of the chosen preset (a fine-tune) and of its model family
    on other data sets (a transfer); the choice reaches the job."""
    import waveviz

    shipped = tmp_path / "no-shipped-checkpoints"  # the folder the fixture names: now with two models
    shipped.mkdir()
    for preset, dataset in (("nwm-linear-tetrominoes", "tetrominoes"), ("nwm-linear-mnist", "mnist")):
        waveviz.save_checkpoint(shipped / f"{preset}.pt", waveviz.create_model(preset), preset, {"dataset": dataset})
    store = JobStore()
    fake_job(store, "running", pid=os.getpid(), host=HOST)  # holds the only slot: nothing trains
    at = _page().run()
    assert at.selectbox(key="train_preset").value == "nwm-linear-tetrominoes"
    assert at.selectbox(key="train_start").options == [
        jobs_view.SCRATCH, "fine-tune nwm-linear-tetrominoes", "transfer from nwm-linear-mnist (mnist)"]
    for choice, field in (("fine-tune nwm-linear-tetrominoes", "init"), ("transfer from nwm-linear-mnist (mnist)", "transfer")):
        at = at.selectbox(key="train_start").select(choice).run()
        at = at.button(key="train_launch").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        spec = store.spec(store.ids()[-1])
        assert getattr(spec, field).endswith(choice.split()[-2 if field == "transfer" else -1] + ".pt")
        assert (spec.init, spec.transfer).count(None) == 1
    at = at.selectbox(key="train_preset").select("cnn8-tetrominoes").run()  # no such model here: scratch only
    assert at.selectbox(key="train_start").options == [jobs_view.SCRATCH]
