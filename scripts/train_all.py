"""Train the shipped checkpoints, back to back or several at once; write each `{preset}.pt` and its log into one folder.

    python scripts/train_all.py --out runs/                                # the full recipe, one preset at a time
    python scripts/train_all.py --out runs/ --parallel 10 --max-minutes 6  # all at once on one GPU, 6 min each
    python scripts/train_all.py --out /tmp/t --tiny                        # seconds a preset: checks the recipe
    python scripts/train_all.py --out runs/ --only nwm-linear-tetrominoes
    python scripts/train_all.py --out runs/ --resume --max-minutes 3   # 3 more minutes each, from *.pt.last

Each preset's line of RECIPE (with `--max-minutes` / `--resume` when given) is the `waveviz train`
command it runs; every log's first line repeats it. `checkpoints/README.md` says which runs made
each shipped file (one was made before this recipe, by hand). `--parallel N` runs N presets at once (one GPU
serves them all: these models are too small to fill it alone), each with `CPU cores / N` threads.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

COMMON = "--seed 0 --grad-clip 1.0 --epochs 300 --batch-size 32"
GENERATED = "--n-train 10000 --n-val 500 --n-test 1000"  # the paper's training-set size; fresh samples
RECIPE = {
    "nwm-linear-tetrominoes": f"{GENERATED} --amp {COMMON}",
    "nwm-fft-tetrominoes": f"{GENERATED} --amp {COMMON}",
    "nwm-last-tetrominoes": f"{GENERATED} --amp {COMMON}",
    "lstm-linear-tetrominoes": f"{GENERATED} --amp {COMMON}",
    "cnn8-tetrominoes": f"{GENERATED} --amp {COMMON}",
    "nwm-linear-mnist": f"--amp {COMMON}",  # the paper's 51,000 / 9,000 / 10,000 digits once fetched, else 4,000 / 500 / 500
    "lstm-linear-mnist": f"--amp {COMMON}",
    "nwm-fft-polygons": f"{GENERATED} --amp {COMMON}",  # T = 500, the paper's
    "nwm-linear-multi_mnist": f"{GENERATED} --amp {COMMON}",
    "unet3-multi_mnist": f"{GENERATED} {COMMON}",
}
TINY = "--n-train 8 --n-val 4 --n-test 4 --epochs 1 --batch-size 4"
TINY_SETS = {"nwm": " --set T=4 --set head=(8,)", "lstm": " --set T=4 --set head=(8,)", "cnn": " --set head=(8,)", "unet": ""}


def command(preset: str, flags: str, out: Path, device: str, max_minutes: float | None, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "waveviz", "train", preset, *shlex.split(flags), "--device", device]
    cmd.append("--resume" if resume else "--overwrite")
    if max_minutes:
        cmd += ["--max-minutes", f"{max_minutes:g}"]
    return cmd + ["--out", str(out / f"{preset}.pt")]


def last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--parallel", type=int, default=1, help="presets trained at once (default 1)")
    ap.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget of each preset's training")
    ap.add_argument("--resume", action="store_true", help="continue each preset from OUT/PRESET.pt.last where it exists")
    args = ap.parse_args()
    if args.parallel < 1 or (args.max_minutes is not None and not args.max_minutes > 0):
        ap.error("--parallel must be ≥ 1 and --max-minutes > 0")
    unknown = set(args.only or ()) - set(RECIPE)
    if unknown:
        ap.error(f"not in the recipe: {', '.join(sorted(unknown))}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    todo = []
    for preset, flags in RECIPE.items():
        if args.only and preset not in args.only:
            continue
        if args.tiny:
            family = next(f for f in TINY_SETS if preset.startswith(f))
            flags = TINY + TINY_SETS[family]
        todo.append((preset, command(preset, flags, out, args.device, args.max_minutes, args.resume)))
    threads = str(max(1, (os.cpu_count() or 1) // min(args.parallel, len(todo) or 1)))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}

    def run(preset: str, cmd: list[str]) -> int:
        t0 = time.time()
        with open(out / f"{preset}.log", "a" if args.resume else "w") as log:
            log.write(shlex.join(["waveviz", *cmd[3:]]) + "\n")
            log.flush()
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        print(f"{preset}: {'ok' if code == 0 else f'FAILED ({code})'} in {time.time() - t0:.0f}s — "
              f"{last_line(out / f'{preset}.log')}", flush=True)
        return code

    with ThreadPoolExecutor(max_workers=args.parallel) as pool:  # threads only wait on the processes
        codes = list(pool.map(lambda job: run(*job), todo))
    failed = [preset for (preset, _), code in zip(todo, codes) if code]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
