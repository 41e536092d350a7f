"""`waveviz jobs …`: background training jobs from the shell, mirroring the app's Train page.

    waveviz jobs start PRESET [--data NPZ] [--epochs E] [--batch-size B] … [--json]   → {"id": …}
    waveviz jobs status ID [--json]      id, state, pid, epoch, epochs, checkpoint, message, …
    waveviz jobs list [--json]
    waveviz jobs cancel ID | finish ID | resume ID [--epochs E] | delete ID | wait ID | log ID
    waveviz jobs limit [N]               how many jobs may run at once
"""
from __future__ import annotations

import argparse
import dataclasses

from .args import Parser, emit, name_commands, nonneg_int, parse_overrides, positive_float, positive_int
from .train import add_train_flags, train_config_from

STATUS_FIELDS = ("id", "state", "pid", "preset", "epoch", "epochs", "checkpoint", "message")


def _store():
    from ..jobs import JobStore

    return JobStore()


def _line(st: dict) -> str:
    eta = f", ETA {st['eta_s']:.0f}s" if st.get("eta_s") else ""
    progress = f"{st.get('epoch') or 0}/{st.get('epochs') or '?'}{eta}"
    return f"{st['id']:21s}  {st['state']:9s} {st.get('preset') or '?':28s} {progress:18s} {st.get('message') or ''}"


LIST_HEADER = f"{'job':21s}  {'state':9s} {'preset':28s} {'epoch':18s} message"


def _with_id(p: argparse.ArgumentParser, func, json_help: str = "the job's status as JSON") -> None:
    p.add_argument("id", help="job id (see `waveviz jobs list`)")
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(func=func)


def add_subparser(sub) -> None:
    p = sub.add_parser("jobs", help="background training jobs that survive restarts (also the app's Train page)")
    jsub = p.add_subparsers(dest="jobs_cmd", required=True, parser_class=Parser)

    s = jsub.add_parser("start", help="queue a training job; it starts when a slot is free")
    s.add_argument("preset")
    s.add_argument("--data", help="train on this .npz (90 / 10 train / val) instead of generated images")
    s.add_argument("--readout", help="replace the preset's readout: last | mean | max | fft | linear")
    start = s.add_mutually_exclusive_group()
    start.add_argument("--init", metavar="CKPT", help="start from this checkpoint's weights (fine-tune; same model)")
    start.add_argument("--transfer", metavar="CKPT", help="start from another data set's model of the same family "
                                                          "(the weights that fit; see `waveviz train --help`)")
    add_train_flags(s)
    s.add_argument("--n-train", type=positive_int)
    s.add_argument("--n-val", type=positive_int)
    s.add_argument("--n-test", type=nonneg_int)
    s.add_argument("--data-seed", type=nonneg_int, default=0)
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a model config field, e.g. --set T=50")
    s.add_argument("--nproc", type=positive_int, default=1, help="data-parallel processes: one per GPU, or on a CPU up to one per core")
    s.add_argument("--json", action="store_true", help='{"id": …, "state": …}')
    s.set_defaults(func=run_start)

    _with_id(jsub.add_parser("status", help="state, progress and message of one job"), run_status)
    ls = jsub.add_parser("list", help="every job, newest first")
    ls.add_argument("--json", action="store_true", help="a JSON list of statuses")
    ls.set_defaults(func=run_list)
    _with_id(jsub.add_parser("cancel", help="stop a job (a running one at its next batch)"), run_cancel)
    _with_id(jsub.add_parser("finish", help="end a running job early at its next batch, keeping the epoch so far "
                                            "(validated, scored on the test split: finished)"), run_finish)
    r = jsub.add_parser("resume", help="continue a canceled, crashed or failed job from its last checkpoint")
    _with_id(r, run_resume)
    r.add_argument("--epochs", type=positive_int, help="new total number of epochs")
    _with_id(jsub.add_parser("delete", help="remove a job that is not running, checkpoints included"), run_delete)
    w = jsub.add_parser("wait", help="block until a job ends; exit 0 when it finished")
    _with_id(w, run_wait)
    w.add_argument("--timeout", type=positive_float, default=3600.0, help="seconds")
    lg = jsub.add_parser("log", help="the end of a job's log")
    lg.add_argument("id")
    lg.add_argument("--lines", type=positive_int, default=40)
    lg.set_defaults(func=run_log)
    lim = jsub.add_parser("limit", help="show or set how many jobs may run at once")
    lim.add_argument("n", nargs="?", type=positive_int)
    lim.add_argument("--json", action="store_true")
    lim.set_defaults(func=run_limit)
    name_commands(jsub)


def run_start(args) -> int:
    from ..jobs import JobSpec
    from ..presets import PRESETS

    dataset = PRESETS.get(args.preset).dataset if args.preset in PRESETS else None  # (JobSpec refuses a bad name)
    train = dataclasses.asdict(train_config_from(args, dataset))  # every TrainConfig field is a JobSpec one
    spec = JobSpec(preset=args.preset, npz=args.data, readout=args.readout, init=args.init, transfer=args.transfer,
                   n_train=args.n_train, n_val=args.n_val,
                   n_test=args.n_test, data_seed=args.data_seed, overrides=parse_overrides(args.set),
                   nproc=args.nproc, **train)
    store = _store()
    job_id = store.submit(spec)
    st = store.status(job_id)
    emit({"id": job_id, "state": st["state"]}, args.json, f"job {job_id}: {st['state']} ({st['message']})")
    return 0


def _status_out(st: dict, as_json: bool) -> None:
    emit({**{k: st.get(k) for k in STATUS_FIELDS}, **st}, as_json, _line(st))


def run_status(args) -> int:
    store = _store()
    store.schedule()
    _status_out(store.status(args.id), args.json)
    return 0


def run_list(args) -> int:
    store = _store()
    store.schedule()
    rows = store.list()
    emit(rows, args.json, "\n".join([LIST_HEADER] + [_line(st) for st in rows]) if rows else "no jobs")
    return 0


def run_cancel(args) -> int:
    st = _store().cancel(args.id)
    if st["state"] == "running":
        st["message"] = "cancel requested; it stops at its next batch"
    _status_out(st, args.json)
    return 0


def run_finish(args) -> int:
    st = _store().finish(args.id)
    st["message"] = "finish requested; at its next batch it validates the epoch so far and writes its checkpoint"
    _status_out(st, args.json)
    return 0


def run_resume(args) -> int:
    _status_out(_store().resume(args.id, epochs=args.epochs), args.json)
    return 0


def run_delete(args) -> int:
    _store().delete(args.id)
    emit({"id": args.id, "deleted": True}, args.json, f"deleted job {args.id}")
    return 0


def run_wait(args) -> int:
    st = _store().wait(args.id, timeout=args.timeout)
    _status_out(st, args.json)
    return 0 if st["state"] == "finished" else 1


def run_log(args) -> int:
    print(_store().log_tail(args.id, args.lines))
    return 0


def run_limit(args) -> int:
    store = _store()
    if args.n is not None:
        store.set_max_running(args.n)
    n = store.max_running()
    emit({"max_running": n}, args.json, f"at most {n} job{'s' if n > 1 else ''} run at once")
    return 0
