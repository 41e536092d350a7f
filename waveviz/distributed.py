"""Data-parallel training under `torchrun`: one code path for 1 … N processes.

`torchrun --nproc_per_node=N -m waveviz train …` starts N copies of the ordinary training command
with RANK, WORLD_SIZE and LOCAL_RANK set; `process_group` joins them (NCCL on GPUs, gloo on CPU) and
the trainer then splits every global batch over the ranks. Without those variables every helper here
is the identity, so a single process runs exactly the same code.

Equivalence with one process (what `tests/test_distributed.py` checks): all ranks draw the same
permutation; rank r takes images r, r + N, r + 2N, … of each global batch of B and weights its
mean loss by n_r·N / B, so DDP's average of the ranks' gradients is the gradient of the global
batch's mean loss.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from .registry import Registry

PROCESS_GROUP_BACKENDS: Registry[str] = Registry("device type for data-parallel training")
PROCESS_GROUP_BACKENDS.register("cuda", "nccl")
PROCESS_GROUP_BACKENDS.register("cpu", "gloo")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits among the training processes."""

    rank: int = 0  # 0 … world_size − 1; rank 0 reports, logs and writes checkpoints
    world_size: int = 1
    local_rank: int = 0  # index on this machine: the GPU it drives

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's share of `idx` (n,): every world_size-th element from position `rank`."""
        return idx[self.rank::self.world_size]

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum `t` over the ranks, in place; the identity for one process."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t


SINGLE = DistEnv()

LAUNCHED = "WAVEVIZ_LAUNCHED"  # the launcher's pid, in the processes `launch_local` starts


def launch_env() -> DistEnv:
    """What the launcher (torchrun) asked for through RANK / WORLD_SIZE / LOCAL_RANK; SINGLE without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (set by torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK {rank} is not in 0 … WORLD_SIZE − 1 = {world - 1}")
    return DistEnv(rank, world, local)


def current() -> DistEnv:
    """This process's place in the initialised process group; SINGLE when there is none."""
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return SINGLE


@contextmanager
def process_group(device_type: str) -> Iterator[DistEnv]:
    """Join the torchrun processes for training on `device_type` ("cuda" → NCCL, "cpu" → gloo) and
    leave again afterwards; yields SINGLE when not launched by torchrun, and the existing group when
    the caller already made one."""
    env = launch_env()
    if not env.distributed or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    backend = PROCESS_GROUP_BACKENDS.get(device_type)
    if device_type == "cuda":
        if env.local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {env.rank} wants GPU {env.local_rank} but this machine has "
                             f"{torch.cuda.device_count()}; start at most that many processes per node")
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(backend)  # env:// rendezvous from MASTER_ADDR / MASTER_PORT
    try:
        yield current()
        # leave together: a rank that tore gloo down while rank 0 still wrote its checkpoints
        # sometimes aborted at exit ("terminate called without an active exception", ~1 run in 10).
        # Only on success: a rank that raised goes straight on, and torchrun then stops the others.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def rank_device(device: torch.device, env: DistEnv) -> torch.device:
    """Under DDP each process drives its own GPU, cuda:LOCAL_RANK (any index given is ignored)."""
    if env.distributed and device.type == "cuda":
        return torch.device("cuda", env.local_rank)
    return device


def unused_parameters(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of parameters that get no gradient from one forward/backward pass on x (1, in, H, W);
    DDP must be told about them or it waits for their gradients forever."""
    model.zero_grad(set_to_none=True)
    model(x).float().sum().backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    return unused


def wrap(model: nn.Module, device: torch.device, env: DistEnv, probe: torch.Tensor) -> nn.Module:
    """The module to train: `model` itself for one process, a DistributedDataParallel around it for
    several (whose backward averages the gradients over the ranks). `probe` (1, in, H, W) finds
    parameters the forward pass never uses."""
    if not env.distributed:
        return model
    find_unused = bool(unused_parameters(model, probe.to(device)))
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                  "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT", LAUNCHED)
OMP_BEFORE = "WAVEVIZ_OMP_BEFORE"  # OMP_NUM_THREADS as `launch_local` found it ("" when unset)
SIGNALS_FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP")


def launch_local(argv: list[str], nproc: int, grace_s: float = 30.0) -> int:
    """Run `python ARGV` as `nproc` data-parallel processes on this machine and wait for them → the
    exit status (0 when every process ended with 0, else the first failure's; 128 + n for signal n).

    What torchrun --standalone does, with the signals a long run wants: every Ctrl-C, SIGTERM or
    SIGHUP this process gets goes to rank 0 alone (as SIGINT or SIGTERM), and the other ranks ignore
    those signals. A first one makes rank 0's `training.FinishOnSignal` finish the run at the next
    batch with the epoch so far kept, the per-step all-reduce taking every rank along, exactly as in
    one process; a second stops rank 0 at once and the others with it (a rank that fails stops the
    rest: SIGTERM, then SIGKILL after `grace_s`). torchrun forwards a signal to every rank and kills
    them 30 s later, while a graceful finish validates and scores for minutes. The ranks run in their
    own session, so a terminal's Ctrl-C reaches them only through here; a signal this process ignores
    (a script's `cmd &`) stays ignored. Rank 0 finishes by itself if this process dies
    (`finish_if_orphaned`). The rendezvous store lives here on a port the OS picked, so no port is
    guessed; each rank gets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR / MASTER_PORT and, unless set,
    OMP_NUM_THREADS = cores // nproc (≥ 1); `outside_env` takes them away again for a process a rank
    starts. POSIX only (sessions and signals)."""
    from .engine import usable_cores

    if nproc < 1:
        raise ValueError(f"need at least 1 process, got {nproc}")
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)  # the ranks connect to it
    base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(store.port), WORLD_SIZE=str(nproc),
                TORCHELASTIC_USE_AGENT_STORE="True", **{LAUNCHED: str(os.getpid()),
                                                        OMP_BEFORE: os.environ.get("OMP_NUM_THREADS", "")})
    base.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // nproc)))
    procs: list[subprocess.Popen] = []

    def forward(signum, frame) -> None:
        if procs and procs[0].poll() is None:
            procs[0].send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    signals = [getattr(signal, name) for name in SIGNALS_FORWARDED]
    handled = [sig for sig in signals if signal.getsignal(sig) is not signal.SIG_IGN]
    saved = {sig: signal.signal(sig, forward) for sig in handled}
    try:
        for rank in range(nproc):
            env = dict(base, RANK=str(rank), LOCAL_RANK=str(rank))
            if rank:  # rank > 0 starts with the signals ignored (inherited through exec): rank 0 decides
                for sig in handled:
                    signal.signal(sig, signal.SIG_IGN)
            try:
                procs.append(subprocess.Popen([sys.executable, *argv], env=env, stdin=subprocess.DEVNULL,
                                              start_new_session=True))
            finally:
                for sig in handled:
                    signal.signal(sig, forward)
        status = 0
        while None in [p.poll() for p in procs]:  # a list: poll every rank, not up to the first running one
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed:
                status = failed[0]
                _stop(procs, grace_s)
                break
            time.sleep(0.2)
        codes = [p.wait() for p in procs]
        status = status or next((c for c in codes if c != 0), 0)
        return 128 - status if status < 0 else status  # killed by signal n → 128 + n, as a shell says
    finally:
        for p in procs:  # an exception here (KeyboardInterrupt in the loop above): leave nothing behind
            if p.poll() is None:
                p.kill()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def module_argv(module: str, args: list[str]) -> list[str]:
    """`python -m MODULE ARGS` for `launch_local`, run from the waveviz this process imported → the
    interpreter's arguments. `-m` would look in the current directory first, so a `waveviz/` folder
    there (another checkout) could give the ranks other code than the launcher's; this pins the
    import path to this package's parent and passes this interpreter's flags (-W, -X …) on."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    flags = getattr(subprocess, "_args_from_interpreter_flags", list)()  # what multiprocessing passes on
    code = f"import runpy, sys; sys.path[0] = {root!r}; runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    return [*flags, "-c", code, *args]


def nproc_problem(nproc: int, device_type: str) -> str | None:
    """Why `nproc` data-parallel processes on `device_type` cannot run on this machine (completing
    "--nproc N …" or "nproc N …"), or None when they can: one per GPU on cuda, at most one per core on
    a CPU, cpu or cuda only, POSIX only (`launch_local`)."""
    from .engine import usable_cores

    if nproc <= 1:
        return None
    if os.name != "posix":
        return "needs a POSIX system (Linux, macOS); on Windows use torchrun (docs/jobs.md)"
    if device_type == "cuda" and nproc > torch.cuda.device_count():
        return f"needs {nproc} GPUs; this machine has {torch.cuda.device_count()}"
    if device_type == "cpu" and nproc > usable_cores():
        return f"is more processes than this machine's {usable_cores()} cores"
    if device_type not in ("cpu", "cuda"):
        return f"trains on cpu or cuda, not {device_type}: leave it out or use device cpu"
    return None


def outside_env(env: dict[str, str]) -> dict[str, str]:
    """`env` without what a launcher (`launch_local` or torchrun) set for this rank, for a process a
    rank starts on its own (a background job's next job): no rank, world or rendezvous, and the
    OMP_NUM_THREADS the launcher found."""
    out = {k: v for k, v in env.items() if k not in RANK_VARIABLES and not k.startswith("TORCHELASTIC_")}
    if OMP_BEFORE in env:
        out.pop("OMP_NUM_THREADS", None)
        if env[OMP_BEFORE]:
            out["OMP_NUM_THREADS"] = env[OMP_BEFORE]
        del out[OMP_BEFORE]
    return out


def launched_by() -> int | None:
    """The pid of the `launch_local` that started this process, None when it was not."""
    value = os.environ.get(LAUNCHED, "")
    return int(value) if value.isdigit() else None


def finish_if_orphaned(poll_s: float = 2.0) -> None:
    """In rank 0 of a `launch_local` run: when the launcher is gone (killed, or the OOM killer), send
    this process SIGTERM once, so the run finishes gracefully (`training.FinishOnSignal`) rather
    than training on with no one to stop it. The other ranks follow rank 0 (a finish, or a collective
    that fails when it exits). A daemon thread; does nothing outside such a run."""
    parent = launched_by()
    if parent is None or launch_env().rank != 0:
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="finish-if-orphaned").start()


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM to every rank still running, SIGKILL to those left after `grace_s` seconds."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    for p in procs:
        if p.poll() is None:
            p.kill()
