#!/usr/bin/env bash
# Pretraining on the lent GPU machine (DESIGN.md 4), run from the repository root:
#   OUT=/path/to/out bash scripts/train_gpu.sh
# One call: a ~30 s smoke phase on the same code path, a short throughput probe, then a timed run of
# the base preset fed by generator processes on the machine's CPU cores. Weights are written to
# $OUT/base every ~2 minutes (a cut-off run still returns something) and, just before the learning
# rate decays, to $OUT/base-predecay (the weights to continue from next time). It continues from
# checkpoints/base-predecay when that exists, with a fresh data seed. Uses only what that machine has
# (numpy, scipy, sympy, torch, safetensors, tqdm, numba) with PYTHONPATH=.
set -euo pipefail
OUT=${OUT:?set OUT to the output folder}
TRAIN_S=${TRAIN_S:-360}
WORKERS=${WORKERS:-$(( $(nproc) * 3 / 4 ))}  # generation at ~2,000 samples/s per core outruns the GPU; spare cores feed it
SEED=${SEED:-$(( $(date +%s) % 1000000 ))}
PRESET=${PRESET:-base}
# continue from the weights saved before the last run's decay (see README, Training)
INIT=${INIT:-checkpoints/base-predecay}
# the copy on the GPU machine has no .git: pass the commit in (ODEFORMER_GIT_COMMIT=$(git rev-parse HEAD))
export ODEFORMER_GIT_COMMIT=${ODEFORMER_GIT_COMMIT:-unknown}
# dx/dt input features (README, "The CPU model"): a model without them gets its input layer widened with
# zero weights, so it starts out computing what it did
DERIVS=${DERIVS:-1}
DERIV_PROBE=(); DERIV_TRAIN=()
[ "$DERIVS" = 1 ] && DERIV_PROBE=(--derivatives) && DERIV_TRAIN=(--set input_derivatives=true --set add_input_derivatives=true)
SMOKE=${SMOKE:-1}
PROBE_S=${PROBE_S:-12}
export PYTHONPATH=.
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
echo "kernel $(uname -r), nproc $(nproc), cpu.max $(cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo none)," \
     "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}, $(python -c 'import sys,numba,numpy,torch;print(sys.version.split()[0],"numba",numba.__version__,"numpy",numpy.__version__,"torch",torch.__version__)')"
(nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$OUT/gpu_util.csv" 2>/dev/null &) || true

if [ "$SMOKE" = 1 ]; then
  echo "== smoke phase"
  timeout 120 python -m odeformer.train --preset test --out /tmp/odeformer-smoke --set max_steps=30 \
      --set workers=2 --set eval_interval=30 --set eval_systems=4 --set save_interval_s=1e9
fi
if [ "$PROBE_S" != 0 ]; then
  echo "== throughput probe"
  timeout 150 python bench/train_throughput.py --preset "$PRESET" --seconds "$PROBE_S" --workers "$WORKERS" \
      "${DERIV_PROBE[@]}" --out "$OUT/throughput.json" || echo "throughput probe failed"
fi

echo "== training $PRESET for ${TRAIN_S}s, seed $SEED, $WORKERS generator workers"
INIT_ARGS=()
[ -f "$INIT/config.json" ] && INIT_ARGS=(--init "$INIT")
timeout $(( TRAIN_S + 150 )) python -m odeformer.train --preset "$PRESET" --out "$OUT/base" "${INIT_ARGS[@]}" "${DERIV_TRAIN[@]}" \
    --set seed="$SEED" --set workers="$WORKERS" --set max_steps=10000000 --set max_time_s="$TRAIN_S" \
    --set save_interval_s=120 --set dtype_save=bfloat16 --set eval_interval=4000 --set eval_systems=100 \
    --set log="$OUT/metrics.jsonl" 2>&1 | tr '\r' '\n' | grep -v '^train: ' | tail -40
ls -la "$OUT" "$OUT"/base*
