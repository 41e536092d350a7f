#!/usr/bin/env bash
# One prepared call on a lent GPU machine: benchmark the fast engine against the reference (issue #5),
# then train every shipped preset at once until a deadline (issue #6) while the engine's CUDA tests
# run beside them. Runs from the repository root with the machine's own python3 (torch + triton),
# no install: PYTHONPATH points at the checkout.
#
#   bash scripts/gpu_session.sh OUTDIR [SECONDS]     # everything done SECONDS (default 500) after start
#   TINY=1 bash scripts/gpu_session.sh /tmp/g 120    # the same steps at toy size, to check on a CPU
#
# OUTDIR gets env.txt, bench.{json,md,log}, test_engine.log, train.log and runs.tar (the checkpoints,
# their .last resume files and logs of runs/gpu/).
set -u
OUT=${1:?usage: gpu_session.sh OUTDIR [SECONDS]}
END=${2:-500}
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
RUNS=runs/gpu
mkdir -p "$OUT" "$RUNS"
if [ -n "${TINY:-}" ]; then
  BENCH="--preset nwm-linear-tetrominoes --batch 2 --set T=6 --steps 2 --inference-runs 2"
  TRAIN="--tiny"; TESTS=(tests/engine/test_engine.py -k "cuda or backend_choice")
else
  BENCH="--preset nwm-linear-tetrominoes --preset nwm-linear-multi_mnist --batch 64 --steps 5 --inference-runs 20"
  TRAIN=""; TESTS=(tests/engine/test_engine.py)
fi

{ nvidia-smi 2>&1 | head -15; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
  torch.cuda.get_device_name() if torch.cuda.is_available() else '')"; $PY -c "import triton; print('triton', triton.__version__)";
  nproc; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== [$(elapsed)s] bench (alone on the device; reference, fast and fast-bf16)"
timeout 210 $PY -m waveviz bench $BENCH --json "$OUT/bench.json" --markdown "$OUT/bench.md" > "$OUT/bench.log" 2>&1
echo "bench rc $?"

# Start-up of 10 processes, data generation (≤ 35 s for Polygons' 11,500 images), validating the
# partial last epoch and the final test evaluation come on top of each preset's training budget:
# the budget is what is left until END minus 100 s for those, and the hard stop 100 s after it.
LEFT=$(( END - $(elapsed) - 100 ))
[ "$LEFT" -lt 30 ] && LEFT=30
MIN=$($PY -c "print(round($LEFT / 60, 2))")
echo "== [$(elapsed)s] training, $MIN min each"
timeout $(( LEFT + 100 )) $PY scripts/train_all.py --out "$RUNS" --parallel 10 --max-minutes "$MIN" $TRAIN > "$OUT/train.log" 2>&1 &
TRAIN_PID=$!

echo "== [$(elapsed)s] engine tests beside training"
timeout 240 $PY -m pytest "${TESTS[@]}" -q -p no:cacheprovider > "$OUT/test_engine.log" 2>&1
echo "engine tests rc $?"; tail -3 "$OUT/test_engine.log"

wait $TRAIN_PID
RC=$?
echo "== [$(elapsed)s] training rc $RC (124: stopped by timeout; the .pt files then hold each run's best epoch so far)"
cat "$OUT/train.log"
tar cf "$OUT/runs.tar" "$RUNS"
cat "$OUT/bench.md" 2>/dev/null || tail -20 "$OUT/bench.log"
echo "== [$(elapsed)s] done"
