"""Background training jobs that outlive page reloads, app restarts and crashes.

A job is a folder `$WAVEVIZ_HOME/jobs/<id>/`, and the folder is the whole truth (nothing is kept in
memory, so an app or shell that starts later sees every job):

    config.json    the JobSpec it was started with (a resume may raise `epochs`)
    status.json    state, pid, host, epoch / epochs, step / steps, ETA, message, heartbeat (Unix time)
    launch.json    pid and host of the launched process
    log.txt        the worker's output
    metrics.json   one record per finished epoch: losses, metrics, long-wavelength share
    best.pt        the best weights so far (every model picker lists it); best.pt.last: resume state
    cancel         present while the user wants the job stopped
    finish         present while the user wants the job to finish early, keeping its partial epoch

Every JSON write is atomic (temp file, fsync, rename), and so are the checkpoints.

States: queued → running → finished | failed | canceled. A stored "running" whose worker process is
gone (same host) or whose heartbeat is older than `stale_s` reads as crashed; canceled, crashed and
failed jobs resume from best.pt.last. At most `max_running` jobs run at once (argument,
$WAVEVIZ_MAX_JOBS, or `settings.json` in the jobs folder; default 1): `schedule()` starts the oldest
queued jobs when slots are free. Submitting, resuming, a worker's end and every look from the app or
the CLI call it, so a queue moves on even after a crash.

The worker is `python -m waveviz.jobs run DIR` (which starts `nproc` ranks of itself through
`distributed.launch_local` when `nproc` > 1: a SIGTERM cancels all of them), started in its own
session with no terminal, so neither a reload nor a stopped Streamlit server touches it. It stops at
the next batch once `cancel` appears (canceled: the partial epoch is dropped, resumable), or once
`finish` appears (finished: the epoch so far is validated and counts, as when a time budget ends it).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Iterator

from . import distributed, settings
from .paths import jobs_dir, page_readable_dirs, uploads_dir
from .presets import PRESETS
from .readouts import READOUTS
from .training import RECIPES, DataConfig, TrainConfig
from .validate import PATH, Range, check_fields, clip_repr, finite_or_null

STATES = ("queued", "running", "finished", "failed", "canceled", "crashed")
ACTIVE = ("queued", "running")
RESUMABLE = ("canceled", "crashed", "failed")
HEARTBEAT_S = 2.0  # the worker rewrites status.json at least this often
CURVE_EVERY_S = 5.0  # a point of the live learning curve this often
CURVE_FILE = "curve.jsonl"  # the live learning curve, a JSON line per point
FINISH = "finish"  # present while the user wants a running job to finish early (`JobStore.finish`)
STALE_S = 30.0  # a running job silent for longer than this has crashed
DEFAULT_MAX_RUNNING = 1
MIN_FREE_BYTES = 100 * 2**20  # refuse to start a job with less free disk than this
HOST = socket.gethostname()
BEST, LAST = "best.pt", "best.pt.last"
JOB_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9]{3}[0-9a-f]{2}")  # what `JobStore.submit` names a job


class JobError(ValueError):
    """A job request that cannot be honoured; the message is one line."""


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ------------------------------------------------------------------ files

def write_json(path: Path, obj) -> None:
    """Atomically: a reader sees the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(finite_or_null(obj), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def append_jsonl(path: Path, obj) -> None:
    """One JSON line at the end of `path` (a growing log: a point costs its own bytes, not the file's);
    after a line a killed writer left torn, on a line of its own."""
    with open(path, "a+b") as f:
        torn = f.tell() > 0 and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n"
        f.write((b"\n" if torn else b"") + json.dumps(finite_or_null(obj)).encode() + b"\n")


def read_jsonl(path: Path) -> list:
    """The lines of a JSON-lines file; a line a crash or a concurrent writer left torn is skipped."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def read_json(path: Path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def pid_running(pid: int) -> bool:
    """Whether process `pid` exists on this machine and is not a zombie (a finished child not yet
    reaped still answers os.kill(pid, 0))."""
    if os.name == "nt":  # os.kill(pid, 0) would send Ctrl-C there: trust the heartbeat
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): trust the heartbeat


def is_job_id(job_id) -> bool:
    """Whether `job_id` has the form of the ids `JobStore.submit` makes (so it names a folder in the store)."""
    return isinstance(job_id, str) and JOB_ID.fullmatch(job_id) is not None


# ------------------------------------------------------------------ what to train

class _FromRecipe:
    """The default of JobSpec's training fields: the job's recipe's value for its preset's data set."""

    def __repr__(self) -> str:
        return "FROM_RECIPE"


FROM_RECIPE = _FromRecipe()


@dataclass
class JobSpec:
    """Everything a job trains with; stored as config.json."""

    preset: str  # name in PRESETS
    npz: str | None = None  # train on this file (90 / 10 train / val) instead of generated images
    readout: str | None = None  # replace the preset's readout (recurrent presets only)
    init: str | None = None  # start from this checkpoint's weights (a fine-tune: the same model)
    transfer: str | None = None  # start from another data set's model of the same family (`training.transfer_weights`)
    # the training settings: TrainConfig's fields; one not given takes `TrainConfig.from_recipe(recipe,
    # the preset's data set)`'s value (so `JobSpec("nwm-linear-mnist")` trains at MNIST's 2e-3 and
    # `JobSpec(p, recipe="paper")` is SPEC §8), see waveviz.training
    recipe: str = "fast"
    epochs: int = FROM_RECIPE
    batch_size: int = FROM_RECIPE  # global: split over the processes when nproc > 1
    lr: float = FROM_RECIPE
    seed: int = FROM_RECIPE
    device: str = FROM_RECIPE
    amp: bool = FROM_RECIPE
    patience: int | None = FROM_RECIPE
    grad_clip: float | None = FROM_RECIPE
    max_minutes: float | None = FROM_RECIPE  # time budget of each run (a resumed job gets it afresh)
    engine: str | None = FROM_RECIPE  # auto | fast | fast-bf16 | reference; None: the default (WAVEVIZ_ENGINE or auto)
    schedule: str = FROM_RECIPE
    warmup: float = FROM_RECIPE
    schedule_minutes: float | None = FROM_RECIPE
    rewarm: float = FROM_RECIPE
    points: float | None = FROM_RECIPE
    fg_weight: float = FROM_RECIPE
    point_weights: str = FROM_RECIPE
    beta2: float = FROM_RECIPE
    gate_bias_init: float | None = FROM_RECIPE
    val_images: int | None = FROM_RECIPE
    coupling_lr: float = FROM_RECIPE
    n_train: int | None = None  # generated images per split (default: the paper's)
    n_val: int | None = None
    n_test: int | None = None
    data_seed: int = 0
    overrides: dict = field(default_factory=dict)  # model config fields, e.g. {"T": 50}
    nproc: int = 1  # data-parallel training processes (one per GPU or CPU core)

    # the training and data fields allow what TrainConfig and DataConfig do (`waveviz.validate`)
    RANGES: ClassVar[dict] = {**TrainConfig.RANGES, **DataConfig.RANGES, "preset": PRESETS, "readout": READOUTS,
                              "nproc": Range(1, 1024), "init": PATH, "transfer": PATH}

    def __post_init__(self) -> None:
        self._fill_from_recipe()
        check_fields(self, error=JobError)

    def _fill_from_recipe(self) -> None:
        unset = [name for name in self.train_fields() if getattr(self, name) is FROM_RECIPE]
        if not unset:
            return
        recipe = self.recipe if isinstance(self.recipe, str) and self.recipe in RECIPES else "fast"  # (check_fields refuses an unknown one)
        known = isinstance(self.preset, str) and self.preset in PRESETS
        values = TrainConfig.from_recipe(recipe, PRESETS.get(self.preset).dataset if known else None)
        for name in unset:
            setattr(self, name, getattr(values, name))

    @classmethod
    def from_dict(cls, d: dict) -> "JobSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def model_overrides(self) -> dict:
        return {**self.overrides, **({"readout": self.readout} if self.readout else {})}

    def data_config(self) -> DataConfig:
        return DataConfig(dataset=PRESETS.get(self.preset).dataset, npz=self.npz, n_train=self.n_train,
                          n_val=self.n_val, n_test=self.n_test, data_seed=self.data_seed)

    def _check_start(self) -> None:
        """Refuse a missing, corrupt or foreign `init` / `transfer` checkpoint in one line, without
        making any data (what `train_preset` would refuse when the worker starts)."""
        from .checkpoint import CheckpointError, read_checkpoint
        from .training import check_init

        if self.init and self.transfer:
            raise JobError("give init (a fine-tune of the same model) or transfer (from another data set), not both")
        start = self.init or self.transfer
        if not start:
            return
        if not os.path.isfile(start):
            raise JobError(f"{start}: no such file")
        try:  # an .npz's size is unknown here: a fine-tune keeps the checkpoint's
            size = read_checkpoint(start)["config"].get("image_size") if self.npz and self.init else None
            check_init(self.preset, start, self.train_config(), self.model_overrides(), image_size=size,
                       transfer=bool(self.transfer))
        except CheckpointError as e:
            raise JobError(_one_line(e)) from None

    def start_args(self, job_dir: Path) -> dict:
        """`train_preset`'s start: the `init` or `transfer` checkpoint on a job's first run; a resumed
        job (one with a last state) continues from that instead."""
        if (job_dir / LAST).exists():
            return {"resume": True}
        if self.transfer:
            return {"transfer": self.transfer}
        return {"resume": True, "init": self.init}

    @staticmethod
    def train_fields() -> tuple[str, ...]:
        """The fields a job shares with TrainConfig (all of TrainConfig's)."""
        return tuple(f.name for f in dataclasses.fields(TrainConfig))

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{name: getattr(self, name) for name in self.train_fields()})

    def validate(self) -> None:
        """Refuse, in one line, whatever would make the worker fail at once."""
        try:
            self._validate()
        except JobError:
            raise
        except (ValueError, KeyError, TypeError) as e:  # DataError, UnknownNameError, config errors
            raise JobError(_one_line(e)) from None

    def _validate(self) -> None:
        from .data import DATASETS, load_npz
        from .training import pick_device

        p = PRESETS.get(self.preset)
        self.train_config().validate()
        self._check_start()
        device = pick_device(self.device)
        problem = distributed.nproc_problem(self.nproc, device.type)
        if problem:
            raise JobError(f"nproc {self.nproc} {problem}")
        if self.readout:
            if p.readout is None:
                raise JobError(f"preset {self.preset} is a baseline without a readout; leave the readout empty")
        cfg = p.build_config(**self.model_overrides())
        if hasattr(cfg, "validate"):
            cfg.validate()
        if self.npz:
            if not os.path.isfile(self.npz):
                raise JobError(f"{self.npz}: no such file")
            data = load_npz(self.npz, require_masks=True)
            if len(data) < 2:
                raise JobError(f"{self.npz}: need at least 2 images to hold one out for validation")
            H, W = data.size  # train_preset sizes the model to square images (it is fully convolutional)
            size = self.overrides.get("image_size", H if H == W else cfg.image_size)
            data.check_for(in_channels=cfg.in_channels, num_classes=cfg.num_classes, image_size=size, what=self.npz)
            return
        spec = DATASETS.get(p.dataset)
        if (cfg.in_channels, cfg.num_classes, cfg.image_size) != (spec.in_channels, spec.num_classes, spec.size):
            raise JobError(f"the settings change the model's input or classes; {p.dataset} needs in_channels "
                           f"{spec.in_channels}, num_classes {spec.num_classes}, image_size {spec.size}")


# ------------------------------------------------------------------ the store

def progress(status: dict) -> tuple[float, float | None]:
    """→ (fraction done in [0, 1], seconds left or None) from a status; an upper bound when early
    stopping ends the run sooner."""
    if status.get("state") == "finished":
        return 1.0, 0.0
    E = status.get("epochs") or 0
    steps = status.get("steps") or 0
    done = (status.get("epoch") or 0) + ((status.get("step") or 0) / steps if steps else 0.0)
    frac = min(1.0, done / E) if E else 0.0
    if status.get("budget_s") and status.get("spent_s") is not None:  # a time budget ends it first
        frac = max(frac, min(1.0, status["spent_s"] / status["budget_s"]))
    eta = status.get("eta_s")
    if status.get("state") != "running" or eta is None:
        return frac, None
    return frac, max(0.0, eta - (time.time() - (status.get("eta_at") or time.time())))


def metric_series(records: list[dict]) -> dict[str, list]:
    """Per-epoch records → columns (epoch, train_loss, val_loss, val_fg_iou, long_wavelength_share, …);
    a metric missing in an epoch is None."""
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys]
    return {k: [r.get(k) for r in records] for k in keys}


class JobStore:
    """The jobs under `root` (default `$WAVEVIZ_HOME/jobs`, read at each call)."""

    def __init__(self, root: str | os.PathLike | None = None, *, max_running: int | None = None,
                 stale_s: float = STALE_S):
        self._root = Path(root) if root is not None else None
        self._max_running = max_running
        self.stale_s = stale_s

    @property
    def root(self) -> Path:
        return self._root if self._root is not None else jobs_dir()

    # ---- reading

    def ids(self) -> list[str]:
        """Job ids, oldest first (ids start with their creation time); other folders are not jobs."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if is_job_id(p.name) and (p / "config.json").is_file())

    def path(self, job_id: str) -> Path:
        """The folder of job `job_id`; anything but an id as `submit` makes them (no `..`, no path) is refused."""
        if not is_job_id(job_id):
            raise JobError(f"{clip_repr(job_id)} is not a job id (ids look like 20240101-120000-123ab; "
                           "`waveviz jobs list` shows them)")
        d = self.root / job_id
        if not (d / "config.json").is_file():
            raise JobError(f"no job {job_id!r} in {self.root} (`waveviz jobs list` shows them)")
        return d

    def spec(self, job_id: str) -> JobSpec:
        return JobSpec.from_dict(read_json(self.path(job_id) / "config.json", {}))

    def status(self, job_id: str) -> dict:
        """The stored status with derived fields: state (crashed when the worker is gone), checkpoint
        (path of best.pt or None), resumable, progress, eta_s."""
        d = self.path(job_id)
        st = read_json(d / "status.json")
        if not isinstance(st, dict):
            st = {"state": "failed", "message": "status.json is missing or unreadable"}
        st["id"] = job_id
        st.setdefault("pid", None)
        st.setdefault("epoch", 0)
        st.setdefault("message", "")
        if st.get("state") == "running" and not self._alive(d, st):
            st["state"] = "crashed"
            st["message"] = (f"the worker stopped without a word at epoch {st['epoch']} (killed or out of memory?); "
                             "resume to continue")
        st["cancelling"] = st["state"] == "running" and (d / "cancel").exists()  # asked to stop; stops at its next batch
        st["finishing"] = st["state"] == "running" and not st["cancelling"] and (d / FINISH).exists()
        best = d / BEST
        st["checkpoint"] = str(best) if best.is_file() else None
        st["resumable"] = st["state"] in RESUMABLE
        st["progress"], st["eta_s"] = progress(st)
        return st

    def _alive(self, d: Path, st: dict) -> bool:
        """The worker that writes status.json (rank 0 under several processes) runs, or, before it
        has written its pid, the process launched; and its heartbeat is fresh."""
        pid, host = st.get("pid"), st.get("host")
        if not pid:
            launch = read_json(d / "launch.json", {}) or {}
            pid, host = launch.get("pid"), launch.get("host")
        if pid and host == HOST and not pid_running(int(pid)):
            return False
        return time.time() - float(st.get("heartbeat") or 0) <= self.stale_s

    def list(self) -> list[dict]:
        """Every job's status, newest first."""
        out = []
        for i in self.ids():
            try:
                out.append(self.status(i))
            except JobError:  # deleted meanwhile
                continue
        return sorted(out, key=lambda st: (st.get("created") or 0, st["id"]), reverse=True)

    def metrics(self, job_id: str) -> list[dict]:
        return read_json(self.path(job_id) / "metrics.json", []) or []

    def curve(self, job_id: str) -> list[dict]:
        """The live learning curve: {seconds, images_seen, epoch, train_loss, lr} every few seconds."""
        d = self.path(job_id)
        return read_jsonl(d / CURVE_FILE) or read_json(d / "curve.json", []) or []  # (curve.json: jobs before 2026-12-02)

    def log_tail(self, job_id: str, lines: int = 40) -> str:
        try:
            with open(self.path(job_id) / "log.txt", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 200 * lines))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])

    # ---- settings

    def max_running(self) -> int:
        if self._max_running is not None:
            return self._max_running
        env = settings.get().max_jobs
        if env:
            try:
                n = int(env)
            except ValueError:
                n = 0
            if n < 1:
                raise JobError(f"WAVEVIZ_MAX_JOBS must be a whole number ≥ 1, got {env!r}")
            return n
        stored = read_json(self.root / "settings.json", {}) or {}
        return int(stored.get("max_running", DEFAULT_MAX_RUNNING))

    def max_running_fixed(self) -> bool:
        """Whether the limit comes from the constructor or $WAVEVIZ_MAX_JOBS (so settings.json is ignored)."""
        return self._max_running is not None or bool(settings.get().max_jobs)

    def set_max_running(self, n: int) -> None:
        if not isinstance(n, int) or n < 1:
            raise JobError(f"jobs at once must be a whole number ≥ 1, got {n!r}")
        self._ensure_root()
        settings = read_json(self.root / "settings.json", {}) or {}
        write_json(self.root / "settings.json", {**settings, "max_running": n})
        self.schedule()

    # ---- changing

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise JobError(f"cannot create the jobs folder {self.root}: {e.strerror or e}") from None

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """One controller at a time changes states and starts workers (an advisory file lock)."""
        self._ensure_root()
        with open(self.root / ".lock", "a") as f:
            try:
                import fcntl
            except ImportError:  # Windows: no cross-process lock
                yield
                return
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def submit(self, spec: JobSpec) -> str:
        """Check `spec`, make the job folder, queue it and start it when a slot is free → job id."""
        paths = {k: os.path.abspath(getattr(spec, k)) for k in ("npz", "init", "transfer") if getattr(spec, k)}
        if paths:  # the worker runs elsewhere: absolute paths
            spec = dataclasses.replace(spec, **paths)
        spec.validate()
        self._ensure_root()
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            free = MIN_FREE_BYTES
        if free < MIN_FREE_BYTES:
            raise JobError(f"only {free / 2**20:.0f} MB free in {self.root}; need {MIN_FREE_BYTES // 2**20} MB")
        for _ in range(100):
            now = time.time()  # ids sort by creation: date-time, milliseconds, two random hex digits
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
            job_id = f"{stamp}-{int(now * 1000) % 1000:03d}{secrets.token_hex(1)}"
            d = self.root / job_id
            try:
                d.mkdir()
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise JobError(f"cannot create the job folder {d}: {e.strerror or e}") from None
        try:
            now = time.time()
            write_json(d / "status.json", {"state": "queued", "pid": None, "epoch": 0, "epochs": spec.epochs,
                                           "preset": spec.preset, "created": now, "queued_at": now,
                                           "attempt": 0, "message": "waiting for a free slot"})
            write_json(d / "config.json", asdict(spec))  # last: its presence makes the folder a job
        except OSError as e:
            shutil.rmtree(d, ignore_errors=True)
            raise JobError(f"cannot write to the job folder {d}: {e.strerror or e}") from None
        self.schedule()
        return job_id

    def schedule(self) -> list[str]:
        """Start the oldest queued jobs while fewer than `max_running` run → the ids started."""
        started = []
        with self._lock():
            jobs = [self.status(i) for i in self.ids()]
            free = self.max_running() - sum(j["state"] == "running" for j in jobs)
            for j in sorted((j for j in jobs if j["state"] == "queued"), key=lambda j: j.get("queued_at") or 0):
                if free <= 0:
                    break
                self._launch(j["id"])
                started.append(j["id"])
                free -= 1
        return started

    def _launch(self, job_id: str) -> None:
        d = self.path(job_id)
        self.spec(job_id)  # a config.json that no longer reads is refused here, as before, not in the worker
        (d / "launch.json").unlink(missing_ok=True)  # the last attempt's process is not this one
        st = read_json(d / "status.json", {}) or {}
        st.update(state="running", pid=None, host=HOST, heartbeat=time.time(), started=time.time(),
                  attempt=int(st.get("attempt") or 0) + 1, message="starting")
        write_json(d / "status.json", st)
        env = dict(distributed.outside_env(dict(os.environ)), PYTHONUNBUFFERED="1")  # a rank starts the next job
        pkg_parent = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
        try:
            with open(d / "log.txt", "ab") as log:
                proc = subprocess.Popen(worker_command(d), stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, cwd=d, env=env, start_new_session=True)
            write_json(d / "launch.json", {"pid": proc.pid, "host": HOST, "time": time.time()})
        except OSError as e:
            st.update(state="failed", message=f"could not start the worker: {e.strerror or e}", finished=time.time())
            write_json(d / "status.json", st)
            return
        # reap the worker when it ends, so that a long-lived app keeps no zombies
        threading.Thread(target=proc.wait, daemon=True, name=f"reap-{job_id}").start()

    def cancel(self, job_id: str) -> dict:
        """Stop a job: a queued or crashed one at once, a running one at its next batch."""
        with self._lock():
            d = self.path(job_id)
            st = self.status(job_id)
            if st["state"] == "running":
                (d / "cancel").touch()
            elif st["state"] in ("queued", "crashed"):
                stored = read_json(d / "status.json", {}) or {}
                was = "before it started" if st["state"] == "queued" else f"after a crash at epoch {st['epoch']}"
                stored.update(state="canceled", message=f"canceled {was}", finished=time.time())
                write_json(d / "status.json", stored)
            else:
                raise JobError(f"job {job_id} is already {st['state']}")
        return self.status(job_id)

    def finish(self, job_id: str) -> dict:
        """End a running job early at its next batch, keeping what it learnt: the epoch so far is
        validated and counts, the best weights are scored on the test split, and the job is finished."""
        with self._lock():
            st = self.status(job_id)
            if st["state"] != "running":
                raise JobError(f"job {job_id} is {st['state']}; only a running job can finish early")
            (self.path(job_id) / FINISH).touch()
        return self.status(job_id)

    def resume(self, job_id: str, *, epochs: int | None = None) -> dict:
        """Queue a canceled, crashed or failed job again; it continues from best.pt.last (or starts
        over when no epoch was finished). `epochs` raises or lowers the total."""
        with self._lock():
            d = self.path(job_id)
            st = self.status(job_id)
            if st["state"] not in RESUMABLE:
                raise JobError(f"job {job_id} is {st['state']}; only {', '.join(RESUMABLE)} jobs can be resumed")
            if epochs is not None:
                if epochs < max(1, st["epoch"]):
                    raise JobError(f"job {job_id} has trained {st['epoch']} epochs; give at least {max(1, st['epoch'])}")
                spec = dataclasses.replace(self.spec(job_id), epochs=epochs)
                write_json(d / "config.json", asdict(spec))
            (d / "cancel").unlink(missing_ok=True)
            (d / FINISH).unlink(missing_ok=True)
            stored = read_json(d / "status.json", {}) or {}
            stored.update(state="queued", pid=None, queued_at=time.time(), epochs=self.spec(job_id).epochs,
                          message=f"queued to resume after epoch {st['epoch']}")
            write_json(d / "status.json", stored)
        self.schedule()
        return self.status(job_id)

    def delete(self, job_id: str) -> None:
        with self._lock():
            d = self.path(job_id)
            st = self.status(job_id)
            if st["state"] == "running":
                raise JobError(f"job {job_id} is running; cancel it first")
            shutil.rmtree(d)

    def wait(self, job_id: str, *, timeout: float = 600.0, poll: float = 0.2) -> dict:
        """Block until the job is neither queued nor running (or `timeout` seconds pass) → its status."""
        end = time.time() + timeout
        while True:
            st = self.status(job_id)
            if st["state"] not in ACTIVE or time.time() > end:
                return st
            if st["state"] == "queued":
                self.schedule()
            time.sleep(poll)


def save_upload(filename: str, data: bytes) -> str:
    """Keep an uploaded .npz under `$WAVEVIZ_HOME/uploads/` (named by content) → its path, for jobs
    to read after the browser is gone."""
    import hashlib

    folder = uploads_dir()
    name = f"{hashlib.sha256(data).hexdigest()[:12]}-{Path(filename).name}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / name).is_file():
            tmp = folder / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, folder / name)
    except OSError as e:
        raise JobError(f"cannot keep the upload in {folder}: {e.strerror or e}") from None
    return str(folder / name)


def page_data_path(path: str) -> str:
    """A server-side path typed on the Train page → its real path, when it lies under one of
    `paths.page_readable_dirs()` (symbolic links and `..` resolved first); else a one-line JobError."""
    if not path or "\0" in path or len(path) > 4096:
        raise JobError(f"{clip_repr(path)} is not a file path")
    real = os.path.realpath(os.path.expanduser(path))
    roots = [os.path.realpath(d) for d in page_readable_dirs()]
    if not any(_inside(real, root) for root in roots):
        raise JobError(f"{clip_repr(path, 80)}: this page reads files only under {', '.join(roots)} "
                       "(upload the file, or set WAVEVIZ_READ_PATHS on the server to allow more folders)")
    return real


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # another drive
        return False


def worker_command(job_dir: Path) -> list[str]:
    """The worker's command line (it starts the job's `nproc` ranks itself, `run_job`)."""
    return [sys.executable, *distributed.module_argv("waveviz.jobs", ["run", str(job_dir)])]


# ------------------------------------------------------------------ the worker

class StatusWriter:
    """The worker's view of status.json: every update rewrites it (atomically) with a fresh heartbeat."""

    def __init__(self, job_dir: Path):
        self.path = job_dir / "status.json"
        self.data = read_json(self.path, {}) or {}
        self._lock = threading.Lock()

    def update(self, **fields) -> None:
        with self._lock:
            self.data.update(fields, heartbeat=time.time())
            write_json(self.path, self.data)


class Heartbeat(threading.Thread):
    """Rewrites the status every `every` seconds, even while a long batch or evaluation runs."""

    def __init__(self, writer: StatusWriter, every: float = HEARTBEAT_S):
        super().__init__(daemon=True, name="heartbeat")
        self.writer, self.every = writer, every
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            try:
                self.writer.update()
            except OSError:  # a full disk: try again next time; the worker reports the real error
                pass

    def stop(self) -> None:
        self.done.set()
        self.join()


class LogStream:
    """stdout for the log (redirected to log.txt), never raising: a full disk must not kill training."""

    def write(self, s: str) -> None:
        try:
            sys.stdout.write(s)
            sys.stdout.flush()
        except (OSError, ValueError):
            pass

    def flush(self) -> None:
        pass


def log(msg: str) -> None:
    LogStream().write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")


class JobMonitor:
    """The training callback of a job: status and ETA per batch, the cancel flag, the long-wavelength
    share per epoch, metrics.json after each epoch's checkpoints."""

    def __init__(self, job_dir: Path, writer: StatusWriter, probe_images: int = 4, curve_every_s: float = CURVE_EVERY_S):
        self.dir, self.writer, self.probe_images = job_dir, writer, probe_images
        self.epoch = 0
        self.epoch_t0 = time.perf_counter()
        self.last_write = 0.0
        self.probe_on = True
        self.curve_every_s, self.curve_t, self.loss_avg = curve_every_s, 0.0, None
        self.finished_early = False  # the run ended at the user's Finish (not at its last epoch)

    def eta(self, trainer, step: int, steps: int) -> float | None:
        """Seconds left: the epochs left at the recent epochs' pace, or the time budget's rest if sooner."""
        per_epoch = [r["seconds"] for r in trainer.history[-5:]]
        if per_epoch:
            t = sum(per_epoch) / len(per_epoch)
        elif step:
            t = (time.perf_counter() - self.epoch_t0) / step * steps
        else:
            t = None
        left = None if t is None else t * max(0.0, trainer.config.epochs - trainer.epoch - (step / steps if steps else 0))
        if trainer.config.max_minutes and trainer.fit_start is not None:
            budget_left = max(0.0, trainer.config.max_minutes * 60 - (trainer.train_seconds() - trainer.elapsed_before))
            left = budget_left if left is None else min(left, budget_left)
        return left

    def _curve_point(self, trainer, loss: float) -> None:
        """The live learning curve: the training loss (a running mean over ~20 steps) against training
        seconds and images seen, a point every `curve_every_s` seconds, a line each in curve.jsonl."""
        self.loss_avg = loss if self.loss_avg is None else 0.95 * self.loss_avg + 0.05 * loss
        now = time.perf_counter()
        if now - self.curve_t < self.curve_every_s:
            return
        self.curve_t = now
        append_jsonl(self.dir / CURVE_FILE, {  # a resumed job's curve goes on in the same file
            "seconds": round(trainer.train_seconds(), 1), "images_seen": trainer.images_seen,
            "epoch": trainer.epoch + 1, "train_loss": round(self.loss_avg, 5),
            "lr": trainer.optimizer.param_groups[0]["lr"]})

    def __call__(self, event: str, trainer, info: dict) -> None:
        getattr(self, f"on_{event}", lambda tr, info: None)(trainer, info)

    def on_batch(self, trainer, info) -> None:
        if info["step"] == 1:
            self.epoch_t0 = time.perf_counter()
        if (self.dir / "cancel").exists():
            trainer.request_stop("canceled by the user")
        elif trainer.finish_reason is None and (self.dir / FINISH).exists():
            trainer.finish_now("finished early by the user")
        self._curve_point(trainer, info["loss"])
        now = time.perf_counter()
        if now - self.last_write >= 1.0 or info["step"] == info["steps"]:
            self.last_write = now
            step, steps = info["step"], info["steps"]
            budget = trainer.config.max_minutes * 60 if trainer.config.max_minutes else None
            self.writer.update(epoch=trainer.epoch, epochs=trainer.config.epochs, step=step, steps=steps,
                               eta_s=self.eta(trainer, step, steps), eta_at=time.time(), budget_s=budget,
                               spent_s=trainer.train_seconds() - trainer.elapsed_before,
                               message=f"epoch {trainer.epoch + 1}: batch {step}/{steps}, loss {info['loss']:.4f}")

    def on_epoch(self, trainer, info) -> None:
        self.epoch = trainer.epoch
        if not self.probe_on:
            return
        try:
            from . import analysis

            analysis.record_wave_share(trainer, info, self.probe_images)  # lands in the history, so in checkpoints too
        except Exception as e:  # an optional metric must never stop training
            self.probe_on = False
            log(f"long-wavelength share switched off: {type(e).__name__}: {_one_line(e)[:200]}")

    def on_saved(self, trainer, info) -> None:
        write_json(self.dir / "metrics.json", trainer.history)
        r = trainer.history[-1]
        self.writer.update(epoch=trainer.epoch, epochs=trainer.config.epochs, step=0,
                           best_epoch=trainer.best_epoch, best_val_loss=trainer.best_val_loss,
                           eta_s=self.eta(trainer, 0, 0), eta_at=time.time(),
                           message=f"epoch {trainer.epoch}: val loss {r['val_loss']:.4f}, FG-IoU {r['val_fg_iou']:.3f}")

    def on_scoring(self, trainer, info) -> None:
        from .training import scoring_seconds

        self.writer.update(step=0, eta_s=scoring_seconds(trainer, info["test"] + info["val"]), eta_at=time.time(),
                           message=f"scoring the best model on {info['test']:,} test and {info['val']:,} "
                                   "validation images")

    def on_finished_early(self, trainer, info) -> None:
        self.finished_early = True

    def on_early_stop(self, trainer, info) -> None:
        self.writer.update(message=f"early stop at epoch {info['epoch']} (best {trainer.best_epoch})")


def _outcome(e: BaseException | None, info: dict | None, monitor: JobMonitor, job_dir: Path) -> dict:
    """Final state and message of a worker that ended with exception `e` (None: it finished)."""
    from .checkpoint import CheckpointError
    from .training import DivergenceError, TrainingCanceled

    kept = "kept the best checkpoint" if (job_dir / BEST).is_file() else "no checkpoint yet"
    if e is None:
        m = info.get("test_metrics") or info["val_metrics"]
        which = "test" if "test_metrics" in info else "val"
        early = "finished early by the user: " if monitor.finished_early else ""
        return {"state": "finished", "message": f"{early}best epoch {info['best_epoch']}/{info['epochs']}: {which} FG-IoU "
                f"{m['fg_iou']:.3f}, FG-Acc {m['fg_acc']:.3f} ({info['wall_time_s']:.0f}s on {info['hardware']})"}
    if isinstance(e, TrainingCanceled):
        return {"state": "canceled", "message": f"{_one_line(e)} during epoch {monitor.epoch + 1}; resume to continue"}
    if isinstance(e, DivergenceError):
        return {"state": "failed", "message": f"diverged: {_one_line(e)}; {kept}"}
    if isinstance(e, OSError):  # a full disk, a folder that became unwritable
        what = f"{e.filename}: {e.strerror}" if e.filename else (e.strerror or _one_line(e))
        return {"state": "failed", "message": f"{what}; {kept}"}
    if isinstance(e, CheckpointError):
        return {"state": "failed", "message": f"{_one_line(e)}; {kept}"}
    if isinstance(e, (ValueError, KeyError)):
        return {"state": "failed", "message": _one_line(e)}
    return {"state": "failed", "message": f"internal error: {type(e).__name__}: {_one_line(e)[:300]} (see the log)"}


def run_job(job_dir: str | os.PathLike) -> int:
    """The worker: train the job in `job_dir` to its end, keeping status.json current → exit code
    (0 finished or canceled, 1 failed). With `nproc` > 1 it starts that many ranks of itself
    (`distributed.launch_local`, which passes a SIGTERM to rank 0: a cancel for all) and returns
    their status; only rank 0 writes, the others just train."""
    from .training import ProgressBar, TrainingCanceled, train_preset

    d = Path(job_dir).resolve()
    spec = JobSpec.from_dict(read_json(d / "config.json", {}))
    if spec.nproc > 1 and not distributed.launch_env().distributed:
        StatusWriter(d).update(message=f"starting {spec.nproc} processes")  # a fresh heartbeat meanwhile
        return distributed.launch_local(distributed.module_argv("waveviz.jobs", ["run", str(d)]), spec.nproc)

    def train(**callbacks):
        return train_preset(spec.preset, str(d / BEST), data=spec.data_config(), train=spec.train_config(),
                            overrides=spec.model_overrides(), **spec.start_args(d), **callbacks)

    if not distributed.launch_env().is_main:
        try:
            train()
        except TrainingCanceled:
            pass
        return 0

    writer = StatusWriter(d)
    writer.update(state="running", pid=os.getpid(), host=HOST, epochs=spec.epochs, message="loading data")
    heartbeat = Heartbeat(writer)
    heartbeat.start()
    monitor = JobMonitor(d, writer)
    # SIGTERM (logout, shutdown, `kill`): stop like a cancel, at the next batch
    signal.signal(signal.SIGTERM, lambda *_: (d / "cancel").touch())
    distributed.finish_if_orphaned()  # rank 0 of several: its launcher gone (killed), cancel as on a SIGTERM
    log(f"job {d.name}: {spec.preset} on {spec.npz or 'generated data'}, attempt {writer.data.get('attempt')}, "
        f"pid {os.getpid()} on {HOST}")
    error, info = None, None
    try:
        if (d / "cancel").exists():
            raise TrainingCanceled("canceled before it started")
        info = train(callbacks=[monitor, ProgressBar(stream=LogStream())])
    except BaseException as e:  # every ending is recorded in status.json
        error = e
        if not isinstance(e, (TrainingCanceled, KeyboardInterrupt)):
            LogStream().write(traceback.format_exc())
    heartbeat.stop()
    outcome = _outcome(error, info, monitor, d)
    log(f"{outcome['state']}: {outcome['message']}")
    try:
        writer.update(**outcome, finished=time.time(), eta_s=None)
    except OSError as e:  # nothing more can be said on disk; the job will read as crashed
        log(f"cannot write the final status: {e}")
        return 1
    try:
        JobStore(d.parent).schedule()  # hand the slot to the next queued job
    except (OSError, JobError) as e:
        log(f"could not start the next queued job: {_one_line(e)}")
    return 0 if outcome["state"] in ("finished", "canceled") else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "run":
        print("usage: python -m waveviz.jobs run JOB_DIR", file=sys.stderr)
        return 2
    return run_job(argv[1])


if __name__ == "__main__":
    sys.exit(main())
