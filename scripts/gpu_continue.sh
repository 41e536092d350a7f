#!/usr/bin/env bash
# One prepared call on a lent GPU machine: continue, all at once, the paper-faithful runs a 2-core CPU
# cannot finish (Multi-MNIST first, then the MNIST ConvLSTM, Polygons at T = 500, and the MNIST and
# Tetrominoes NWMs still short of their targets), each from its latest weights, until a deadline.
# Runs from the repository root with the machine's own python3 (torch), no install: PYTHONPATH points
# at the checkout. That machine has no internet, so the MNIST digits travel with the working tree:
#
#   mkdir -p .gpu-data && cp "$(python -c 'from waveviz.data.fetch import mnist_cache_path as p; print(p())')" .gpu-data/
#   # then, with the device tool: carry [".gpu-data"], command:
#   bash scripts/gpu_continue.sh "$OUT" 480          # every run stopped 480 s after start; give the call
#                                                    # timeout_s ≥ 540 so that the packing after it happens
#   TINY=1 bash scripts/gpu_continue.sh /tmp/g 120   # each line on 8 images for a moment: checks them on a CPU
#
# OUTDIR gets four files (the device tool returns at most 8, 16 MiB each): env.txt, weights.tar
# (runs/gpu-continue/: each PRESET.pt with its test metrics and PRESET.log) and resume-1.tar,
# resume-2.tar (the PRESET.pt.last files, ~4× a .pt each, to continue with --resume). A second call on a
# machine still warm continues from those. Ship one by copying it to checkpoints/ when it beats the
# shipped file (`python scripts/readme_table.py` then regenerates the tables).
set -u
OUT=${1:?usage: gpu_continue.sh OUTDIR [SECONDS]}
END=${2:-480}
T0=$(date +%s)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[ -f .gpu-data/mnist.npz ] && export WAVEVIZ_DATA=$PWD/.gpu-data
PY=${PYTHON:-python3}
RUNS=runs/gpu-continue
mkdir -p "$OUT" "$RUNS"

# preset | where its weights start | its changes to the `fast` recipe (docs/training.md)
PLAN=(
  "nwm-linear-multi_mnist|checkpoints/nwm-linear-multi_mnist.pt|--lr 2e-3"
  "unet3-multi_mnist|checkpoints/unet3-multi_mnist.pt|--lr 2e-3"
  "lstm-linear-mnist|checkpoints/runs/lstm-linear-mnist.pt|--lr 2e-3"
  "nwm-fft-polygons|checkpoints/nwm-fft-polygons.pt|--lr 2e-3"
  "nwm-linear-mnist|checkpoints/nwm-linear-mnist.pt|--lr 1e-3"
  "nwm-fft-tetrominoes|checkpoints/nwm-fft-tetrominoes.pt|--lr 1e-3"
)
THREADS=$(( $(nproc) / ${#PLAN[@]} )); [ "$THREADS" -lt 1 ] && THREADS=1
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

{ nvidia-smi 2>&1 | head -15; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
  torch.cuda.get_device_name() if torch.cuda.is_available() else '')"; nproc
  echo "MNIST digits: ${WAVEVIZ_DATA:-none carried (MNIST presets fall back to the 5,000 bundled digits)}"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
HW=$($PY -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" 2>/dev/null)

# Start-up, data generation and the final test evaluation come on top of the training budget: the
# budget is what is left until END minus 90 s, and the hard stop 90 s after it.
LEFT=$(( END - ($(date +%s) - T0) - 90 ))
[ "$LEFT" -lt 20 ] && LEFT=20
MIN=$($PY -c "print(round($LEFT / 60, 2))")
if [ -n "${TINY:-}" ]; then
  SIZE="--n-train 8 --n-val 4 --n-test 4 --epochs 1 --batch-size 4 --val-images off"; DEVICE=auto; MIN=0.05
else
  SIZE=""; DEVICE=cuda
fi
echo "== [$(( $(date +%s) - T0 ))s] ${#PLAN[@]} runs at once, $MIN min of training each, $THREADS threads each"
PIDS=()
for line in "${PLAN[@]}"; do
  IFS='|' read -r preset init flags <<< "$line"
  cmd="$PY -m waveviz train $preset --init $init --resume $flags $SIZE --device $DEVICE --max-minutes $MIN --out $RUNS/$preset.pt"
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) on $HW: ${cmd#"$PY -m "}" >> "$RUNS/$preset.log"
  timeout $(( LEFT + 90 )) $cmd >> "$RUNS/$preset.log" 2>&1 &
  PIDS+=($!)
done
RC=0
for i in "${!PIDS[@]}"; do
  wait "${PIDS[$i]}"; code=$?
  IFS='|' read -r preset _ <<< "${PLAN[$i]}"
  echo "$preset: rc $code — $(grep -v '^\s*$' "$RUNS/$preset.log" | tail -1 | cut -c1-200)"
  [ "$code" -ne 0 ] && RC=1
done
tar cf "$OUT/weights.tar" "$RUNS"/*.pt "$RUNS"/*.log 2>/dev/null
LAST=("$RUNS"/*.pt.last); HALF=$(( (${#LAST[@]} + 1) / 2 ))
[ -e "${LAST[0]}" ] && tar cf "$OUT/resume-1.tar" "${LAST[@]:0:$HALF}"
[ "${#LAST[@]}" -gt "$HALF" ] && tar cf "$OUT/resume-2.tar" "${LAST[@]:$HALF}"
ls -l "$OUT"
echo "== [$(( $(date +%s) - T0 ))s] done (rc $RC; 124: stopped by the hard stop, the .pt then holds the best epoch so far)"
exit $RC
