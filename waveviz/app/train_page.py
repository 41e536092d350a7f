"""The Train page: launch background training jobs and watch, finish early, cancel, resume or delete them.

Layout and widgets only; jobs, their files and every number shown come from :mod:`waveviz.jobs`.
"""
from __future__ import annotations

import streamlit as st

from waveviz import jobs
from waveviz.app import common, jobs_view
from waveviz.app.figures import CHART_CONFIG, learning_curves_figure
from waveviz.engine import ENGINES, default_engine
from waveviz.data import DATASETS
from waveviz.paths import page_readable_dirs
from waveviz.models import MODELS
from waveviz.presets import PRESETS
from waveviz.readouts import READOUTS
from waveviz.training import POINT_WEIGHTS, RECIPES, SCHEDULES

REFRESH_S = 2.0  # live view refresh while a job is queued or running
NPZ = "an .npz file"
DEVICES = ("auto", "cpu", "cuda", "mps")
STATE_ICONS = {"queued": "⏳", "running": "▶️", "cancelling…": "⏸️", "finishing…": "⏭️", "finished": "✅", "failed": "❌", "canceled": "⏹️",
               "crashed": "💥"}

INTRO = """
Train any preset in the background. Each job is its own process with its own folder under
`$WAVEVIZ_HOME/jobs` (config, status with a heartbeat, log, per-epoch metrics, best and last
checkpoints), so it keeps running when you reload this page or restart the app. Canceled and crashed
jobs resume from their last finished epoch; a finished job's best checkpoint appears in every model
picker of the app. The shell has the same controls: `waveviz jobs --help`.
"""


def _data_source() -> tuple[str | None, str | None]:
    """→ (data set name or None, npz path or None)."""
    options = [*DATASETS.names(), NPZ]
    choice = st.selectbox("Data", options, index=options.index("tetrominoes"), key="train_data",
                          help="Generated fresh from a seed, or your own .npz with `images` and `masks`.")
    if choice != NPZ:
        return choice, None
    upload = st.file_uploader("Upload an .npz", type=["npz"], key="train_upload")
    folders = ", ".join(f"`{d}`" for d in page_readable_dirs())
    path = st.text_input("…or its path on the server", key="train_npz")
    st.caption(f"This page reads server-side paths only under {folders} (`WAVEVIZ_READ_PATHS` on the server "
               "allows more folders).")
    if upload is not None:
        return None, jobs.save_upload(upload.name, upload.getvalue())
    return None, jobs.page_data_path(path.strip()) if path.strip() else None


def _preset_dataset() -> str | None:
    name = st.session_state.get("train_preset")
    return PRESETS.get(name).dataset if name in PRESETS else None


def _apply_recipe() -> None:
    """A recipe chosen: its settings for the preset's data set replace the form's (the user may change
    them again after)."""
    recipe, dataset = st.session_state["train_recipe"], _preset_dataset()
    st.session_state.update(jobs_view.recipe_widget_values(recipe, dataset))
    st.session_state["train_filled_for"] = dataset


def _fill_for_dataset(recipe: str, dataset: str) -> None:
    """Fill in the recipe's settings for the preset's data set where the form has none (its first
    render, or a return to this page: Streamlit forgets the widgets of a page not shown). A preset on
    another data set refills a setting the recipe sets differently there (the learning rate on
    MNIST) unless the user has changed it."""
    was = st.session_state.get("train_filled_for", dataset)
    if was != dataset:
        only = jobs_view.dataset_fields(recipe)
        old = jobs_view.recipe_widget_values(recipe, was, only=only)
        new = jobs_view.recipe_widget_values(recipe, dataset, only=only)
        st.session_state.update({k: v for k, v in new.items() if v != old[k] and st.session_state.get(k, v) == old[k]})
    for key, value in jobs_view.recipe_widget_values(recipe, dataset).items():
        st.session_state.setdefault(key, value)
    st.session_state["train_filled_for"] = dataset


def _launch_form(store: jobs.JobStore) -> None:
    st.subheader("New job")
    try:
        dataset, npz = _data_source()
    except jobs.JobError as e:
        st.error(str(e))
        return
    recipes = list(RECIPES)
    recipe = st.selectbox("Recipe", recipes, index=recipes.index("fast"), key="train_recipe",
                          on_change=_apply_recipe,
                          help="fast: a demo-ready model in about 10 CPU-minutes (point-sampled loss, cosine "
                               "schedule, a time budget); paper: SPEC §8 exactly (Adam 1e-3, batch 64, the full "
                               "loss, up to 300 epochs). Choosing one fills in its settings below.")
    names = [n for n in PRESETS.names() if dataset is None or PRESETS.get(n).dataset == dataset]
    first = next((i for i, n in enumerate(names) if n.startswith("nwm-linear-")), 0)  # the paper's model
    preset = st.selectbox("Preset", names, index=first, key="train_preset")
    p = PRESETS.get(preset)
    # TrainConfig's and JobSpec's defaults: one source for CLI, jobs and this form
    d = jobs_view.form_defaults(recipe, p.dataset)
    _fill_for_dataset(recipe, p.dataset)
    readout = None
    if p.readout is not None:
        options = READOUTS.names()
        readout = st.selectbox("Readout", options, index=options.index(p.readout), key="train_readout")
    starts = jobs_view.start_choices(preset, common.model_catalog())
    start = st.selectbox("Start from", list(starts), key="train_start",
                         help="Scratch; a fine-tune of a model of this preset (its weights, a fresh schedule: "
                              "lower the learning rate); or a transfer from the same kind of model trained on "
                              "another data set (the weights that fit; the class layer starts fresh).")
    c1, c2 = st.columns(2)
    epochs = c1.number_input("Epochs", 1, 100_000, key="train_epochs",
                             help="The most epochs to train; early stopping and the time budget can end it sooner.")
    batch = c2.number_input("Batch size", 1, 65_536, key="train_batch")
    lr = c1.number_input("Learning rate", 0.0, 10.0, step=1e-4, format="%g", key="train_lr")
    seed = c2.number_input("Seed", 0, 2**31 - 1, int(d["seed"]), key="train_seed")
    device = st.selectbox("Device", DEVICES, index=DEVICES.index(d["device"]) if d["device"] in DEVICES else 0,
                          key="train_device")
    minutes = st.number_input("Time budget in minutes (0: none)", 0.0, 100_000.0, step=5.0, key="train_minutes",
                              help="Stop when spent (an epoch that reaches it ends there) and keep the best epoch.")
    with st.expander("More settings"):
        T = st.number_input("Time steps T (0: the preset's)", 0, 10_000, 0, key="train_T",
                            disabled=p.readout is None)
        c1, c2 = st.columns(2)
        schedule = c1.selectbox("Learning-rate schedule", SCHEDULES, key="train_schedule",
                                help="After the warm-up: constant, or a cosine to 0 at the end of the budget.")
        warmup = c2.number_input("Warm-up (share of the run)", 0.0, 0.99, step=0.01, key="train_warmup")
        points = c1.number_input("Share of pixels in the loss (1: all)", 0.001, 1.0, step=0.025, format="%g",
                                 key="train_points", help="The head and the loss on a random share of each "
                                 "image's pixels (an unbiased estimate of the full loss); the recurrence sees all.")
        fg_weight = c2.number_input("Foreground points drawn × as often", 1.0, 1000.0, step=1.0, key="train_fg_weight")
        grad_clip = c1.number_input("Gradient clipping (0: off)", 0.0, 1e6, step=0.5, key="train_grad_clip")
        val_images = c2.number_input("Validation images per epoch (0: all)", 0, 1_000_000, key="train_val_images")
        patience = c1.number_input("Early-stopping patience in epochs (0: off)", 0, 100_000, key="train_patience")
        amp = c2.checkbox("bf16 mixed precision", value=bool(d["amp"]), key="train_amp")
        point_weights = c1.selectbox("Sampled points weigh", tuple(POINT_WEIGHTS), index=tuple(POINT_WEIGHTS).index(d["point_weights"]),
                                     key="train_point_weights",
                                     help="unbiased: importance weights, so the loss is the full loss in expectation; "
                                          "equal: every drawn point weighs 1, so foreground counts more.")
        gate_bias = c1.number_input("NWM: f_ω's and f_α's last biases start at (0: PyTorch's default)", 0.0, 100.0,
                                    step=0.05, format="%g", key="train_gate_bias", disabled=p.model != "nwm",
                                    help="A small positive start keeps both ReLUs passing gradient from the first "
                                         "step, which helps a from-scratch run leave its first plateau (docs/training.md).")
        beta2 = c2.number_input("Adam β₂", 0.0, 0.999999, float(d["beta2"]), step=0.001, format="%g", key="train_beta2")
        coupled = hasattr(MODELS.get(p.model)[0], "coupling_parameters")  # NWM W_rec, ConvLSTM gate conv
        coupling_lr = c2.number_input("Recurrent coupling's learning rate (× the rate above)", 0.001, 10_000.0,
                                      float(d["coupling_lr"]), step=1.0, format="%g", key="train_coupling_lr",
                                      disabled=not coupled, help="The NWM's W_rec or the ConvLSTM's gate convolution "
                                      "in its own Adam group at this multiple of the learning rate (1: the paper).")
        engines = list(ENGINES)
        engine = st.selectbox("Engine (NWM, ConvLSTM)", engines, key="train_engine",
                              index=engines.index(d["engine"] or default_engine()),
                              help="auto / fast: the reference's function, faster; fast-bf16: the per-pixel head in "
                                   "bfloat16, same accuracy, faster again on GPUs and CPUs with AVX-512 BF16 / AMX "
                                   "(elsewhere emulated: no faster); reference: the plain equations.")
        nproc = st.number_input("Processes (data-parallel: one per GPU, or up to one per CPU core)", 1, 64,
                                int(d["nproc"]), key="train_nproc",
                                help="The global batch is split over them (the same run up to rounding); each "
                                     "holds its own copy of the data. See docs/jobs.md.")
        if npz is None:
            n_train = st.number_input("Training images (0: the paper's)", 0, 1_000_000, int(d["n_train"] or 0),
                                      key="train_n_train")
            n_val = st.number_input("Validation images (0: the paper's)", 0, 1_000_000, int(d["n_val"] or 0),
                                    key="train_n_val")
        else:
            n_train = n_val = 0
    shown = dict(epochs=epochs, batch_size=batch, lr=lr, max_minutes=minutes, patience=patience, grad_clip=grad_clip,
                 schedule=schedule, warmup=warmup, points=points, fg_weight=fg_weight, val_images=val_images,
                 gate_bias_init=gate_bias)  # (only NWMs have those encoders: others ignore it)
    trained = {name: jobs_view.RECIPE_WIDGETS[name][1](v) for name, v in shown.items()}
    try:
        spec = jobs_view.spec_from_form(preset, dict(
            npz=npz, readout=readout if readout != p.readout else None, recipe=recipe, seed=int(seed), device=device,
            amp=amp, engine=engine, point_weights=point_weights, beta2=float(beta2),
            coupling_lr=float(coupling_lr) if coupled else 1.0, n_train=int(n_train) or None, n_val=int(n_val) or None,
            overrides={"T": int(T)} if T else {}, nproc=int(nproc), **starts[start], **trained))
    except (jobs.JobError, ValueError) as e:  # a setting the validator refuses: one line, nothing queued
        st.error(str(e))
        return
    _estimate(spec)
    if not st.button("Launch", type="primary", key="train_launch"):
        return
    if dataset is None and not npz:
        st.error("Upload an .npz or give its path.")
        return
    try:
        job_id = store.submit(spec)
    except jobs.JobError as e:
        st.error(str(e))
        return
    st.session_state["train_job"] = job_id
    st.success(f"Job {job_id} is {store.status(job_id)['state']}.")


@st.cache_data(show_spinner=False, max_entries=32, ttl=300)
def _recorded_speed(preset: str, device: str) -> jobs_view.Speed | None:
    return jobs_view.recorded_speed(preset, device)


@st.cache_data(show_spinner="Timing a few training steps on this machine…", max_entries=32)
def _measured_speed(key: str, _spec: jobs.JobSpec) -> jobs_view.Speed:
    return jobs_view.measure_speed(_spec)


def _estimate(spec: jobs.JobSpec) -> None:
    """The estimated run time, before Launch: from a measured or recorded speed, capped by the budget."""
    key = f"speed:{spec.preset}:{spec.device}:{spec.batch_size}:{spec.engine}:{spec.amp}:{sorted(spec.model_overrides().items())}"
    speed = st.session_state.get(key) or _recorded_speed(spec.preset, spec.device)
    seconds, how = jobs_view.estimate_seconds(spec, speed)
    text = f"**Estimated run time: {'at most ' if seconds else ''}{jobs_view.fmt_seconds(seconds)}** — {how}."
    (st.warning if seconds and seconds > 3600 else st.info)(text + (" Early stopping can end it sooner." if seconds else ""))
    if st.button("Measure the speed on this machine", key="train_measure",
                 help="A few seconds: times two training steps of this preset with these settings."):
        try:
            st.session_state[key] = _measured_speed(key, spec)
        except (ValueError, RuntimeError) as e:
            st.error(f"Could not time it: {' '.join(str(e).split())[:200]}")
            return
        st.rerun()


def _actions(store: jobs.JobStore, status: dict) -> None:
    job_id = status["id"]
    c1, c2, c3 = st.columns(3)
    try:
        if status["state"] == "running" and not status.get("cancelling") and not status.get("finishing") and c1.button(
                "Finish now", key=f"train_finish_{job_id}", type="primary",
                help="Stop at the next batch and keep the model as it is now: the epoch so far is validated "
                     "and the model scored on the test images."):
            store.finish(job_id)
            st.rerun(scope="app")
        if status["state"] in jobs.ACTIVE and not status.get("cancelling") and c2.button(
                "Cancel", key=f"train_cancel_{job_id}",
                help="Stop at the next batch, dropping the epoch in progress; the job can be resumed."):
            store.cancel(job_id)
            st.rerun(scope="app")
        if status["resumable"]:
            more = c2.number_input("Epochs in all", max(1, status["epoch"]), 100_000, max(status.get("epochs") or 1,
                                   status["epoch"]), key=f"train_resume_epochs_{job_id}")
            if c2.button("Resume", key=f"train_resume_{job_id}"):
                store.resume(job_id, epochs=int(more))
                st.rerun(scope="app")
        if status["state"] != "running" and c3.button("Delete", key=f"train_delete_{job_id}"):
            store.delete(job_id)
            st.session_state.pop("train_job", None)
            st.rerun(scope="app")
    except jobs.JobError as e:
        st.error(str(e))


def _live(store: jobs.JobStore, job_id: str) -> None:
    """One job: progress, curves, log, controls."""
    try:
        status = store.status(job_id)
    except jobs.JobError as e:
        st.warning(str(e))
        return
    state = status["state"]
    label = jobs_view.state_label(status)
    st.markdown(f"**{STATE_ICONS.get(label, STATE_ICONS.get(state, ''))} {job_id}** — {status.get('preset', '?')} — **{label}**")
    epochs = status.get("epochs") or "?"
    st.progress(status["progress"], text=f"epoch {status['epoch']}/{epochs} · ETA {jobs_view.fmt_seconds(status['eta_s'])}")
    if status.get("cancelling"):
        st.caption("Stopping at the end of the current batch; the best checkpoint so far is kept and the job can be resumed.")
    if status.get("finishing"):
        st.caption("Finishing at the end of the current batch: the epoch so far is validated, then the best "
                   "weights are scored on the test images.")
    if status["message"]:
        (st.error if state in ("failed", "crashed") else st.caption)(status["message"])
    records = store.metrics(job_id)
    warning = jobs_view.near_zero_warning(status, records)
    if warning:
        st.warning(warning)
    _actions(store, status)
    fig = learning_curves_figure(records, store.curve(job_id))
    if fig is not None:
        st.plotly_chart(fig, key=f"train_curves_{job_id}", config=CHART_CONFIG)
    if status["checkpoint"]:
        st.caption(f"Best checkpoint: `{status['checkpoint']}`")
    st.code(store.log_tail(job_id, 30) or "(no output yet)", language=None)


def _jobs(store: jobs.JobStore) -> None:
    st.subheader("Jobs")
    rows = store.list()
    if not rows:
        st.info("No jobs yet: launch one on the left.")
        return
    if any(r["state"] in jobs.ACTIVE for r in rows):  # the table, the picker and the job redrawn live
        st.fragment(_job_panel, run_every=REFRESH_S)(store, True)
    else:
        _job_panel(store, False, rows)


def _job_panel(store: jobs.JobStore, live: bool, rows: list[dict] | None = None) -> None:
    """The jobs table, the job picker and the picked job (`_live`); `live`: a self-refreshing fragment,
    which reruns the whole page once no job is queued or running (to stop refreshing)."""
    rows = store.list() if rows is None else rows
    if live and not any(r["state"] in jobs.ACTIVE for r in rows):
        st.rerun(scope="app")
    st.dataframe([{"id": r["id"], "state": f"{STATE_ICONS.get(jobs_view.state_label(r), STATE_ICONS.get(r['state'], ''))} "
                   f"{jobs_view.state_label(r)}",
                   "preset": r.get("preset"), "epoch": f"{r['epoch']}/{r.get('epochs') or '?'}",
                   "best val loss": r.get("best_val_loss"), "message": r["message"]} for r in rows],
                 hide_index=True, key="train_table")
    ids = [r["id"] for r in rows]
    if st.session_state.get("train_job") not in ids:
        st.session_state["train_job"] = ids[0]
    by_id = {r["id"]: r for r in rows}
    # the state is not in the label: a browser keeps showing a keyed selectbox's old label when only its
    # format_func output changes (streamlit PR #13788), so "running" would stay after the job finished
    job_id = st.selectbox("Job", ids, key="train_job", format_func=lambda i: f"{i} · {by_id[i].get('preset', '?')}")
    _live(store, job_id)


def render() -> None:
    st.title("Train")
    st.markdown(INTRO)
    store = jobs.JobStore()
    with st.sidebar:
        try:
            fixed = store.max_running_fixed()
            limit = st.number_input("Jobs at once", 1, 64, store.max_running(), key="train_limit", disabled=fixed,
                                    help="Set by $WAVEVIZ_MAX_JOBS." if fixed else
                                    "More jobs wait in a queue and start as slots free up.")
            if not fixed and limit != store.max_running():
                store.set_max_running(int(limit))
        except jobs.JobError as e:
            st.error(str(e))
    try:
        store.schedule()  # moves the queue on after a crash nobody else noticed
    except (jobs.JobError, OSError) as e:
        st.error(f"{e}")
    left, right = st.columns([1, 2], gap="large")
    with left:
        _launch_form(store)
    with right:
        _jobs(store)
