#!/usr/bin/env bash
# One segment of a long training run under checkpoints/runs/: appends the command, the time and the
# hardware to checkpoints/runs/PRESET.log, then runs `waveviz train PRESET ARGS... --overwrite --out
# checkpoints/runs/PRESET.pt` (a segment replaces the run's model) with its output appended to the same log.
#   bash scripts/train_segment.sh nwm-linear-mnist --resume --max-minutes 60 --schedule-minutes 180
# NPROC=2 runs it data-parallel, one process per core (`--nproc`: same global batch, so the same run as
# one process up to rounding; `kill PID` on this script's process finishes it gracefully: docs/jobs.md).
# `python -m waveviz` from the repository root: this checkout's code even where the installed `waveviz`
# points elsewhere (an editable install from a deleted clone).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=$1; shift
log=checkpoints/runs/$preset.log
n=$(( $(grep -c '^# segment' "$log" 2>/dev/null || true) + 1 ))
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
{
  echo "# segment $n, $(date -u +%Y-%m-%dT%H:%M:%SZ): waveviz train $preset $* --out checkpoints/runs/$preset.pt"
  echo "# hardware: ${cpu:-unknown CPU}, $(env -u OMP_NUM_THREADS nproc) cores, ${NPROC:-1} process(es), torch $(python -c 'import torch; print(torch.__version__)'), git $(git rev-parse --short HEAD)"
} >> "$log"
exec python -m waveviz train "$preset" "$@" --nproc "${NPROC:-1}" --overwrite --out "checkpoints/runs/$preset.pt" >> "$log" 2>&1
