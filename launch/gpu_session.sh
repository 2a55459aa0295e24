#!/usr/bin/env bash
# One accelerator session of checks (used on a lent H200; any CUDA machine works):
#   kernels (launch/gpu_check.py), XLA memory of the 1B SFT / 8B LoRA DPO steps, and `jaxtool bench sft`
#   on the Llama-3.2-1B shape side by side with PyTorch (eager, then torch.compile).
# Usage: OUT=DIR launch/gpu_session.sh [part...]   parts: check mem sft sft_compile mcts (default: check mem sft)
set -u
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-.} PYTHONUNBUFFERED=1
parts=${*:-check mem sft}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
for p in $parts; do
  case $p in
    check) timeout 200 python3 launch/gpu_check.py --out "$OUT/check" > "$OUT/check.log" 2>&1; tail -25 "$OUT/check.log" ;;
    mem) timeout 200 python3 launch/gpu_memory_check.py --out "$OUT/mem.json" 2>&1 | grep -v -i warn | tail -4 ;;
    sft|sft_compile)
      # JAX gets what its step needs (from mem.json, else 60%), PyTorch the rest of the GPU
      frac=$(python3 -c "import json; r=json.load(open('$OUT/mem.json'))[0]; print(min(0.8, max(0.3, (r['temp_gib']+r['argument_gib']+10)/139)))" 2>/dev/null || echo 0.6)
      extra=""; [ "$p" = sft_compile ] && extra="--torch-compile"
      echo "XLA_PYTHON_CLIENT_MEM_FRACTION=$frac $extra"
      XLA_PYTHON_CLIENT_MEM_FRACTION=$frac timeout 300 python3 -m jaxtool bench sft --shape llama3.2-1b \
        --dtypes bfloat16 --grid 8x2048 --repeats 3 $extra --out "$OUT/$p" 2>&1 | grep -v -i warn | tail -14 ;;
    mcts) timeout 300 python3 -m jaxtool bench mcts --out "$OUT/mcts" 2>&1 | grep -v -i warn | tail -20 ;;
  esac
done
