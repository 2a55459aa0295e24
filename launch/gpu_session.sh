#!/usr/bin/env bash
# One accelerator session of checks (any CUDA card; sized from the card's own memory):
#   kernels (launch/gpu_check.py), XLA memory of the 1B SFT / 8B LoRA DPO steps, and `jaxtool bench sft`
#   on the Llama-3.2-1B shape: first the JAX side alone, then the PyTorch side alone (eager, or
#   torch.compile with sft_compile), never both on the card at once; the two are joined into one table.
# Usage: OUT=DIR launch/gpu_session.sh [--dry-run] [part...]
#   parts: check mem sft sft_compile mcts (default: check mem sft)
#   --dry-run: print each command (with the memory fraction computed for this card) instead of running it.
#   SHAPE (default llama3.2-1b), GRID (8x2048), DTYPES (bfloat16), REPEATS (3): the sft benchmark's shape.
# The JAX side's XLA_PYTHON_CLIENT_MEM_FRACTION = (the 1B step's XLA memory, first row of mem.json, + 6 GiB headroom)
# / the card's memory (nvidia-smi), between 0.5 and 0.95; a step that cannot fit is reported, not run.
set -u
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${OUT:-runs/gpu}
SHAPE=${SHAPE:-llama3.2-1b} GRID=${GRID:-8x2048} DTYPES=${DTYPES:-bfloat16} REPEATS=${REPEATS:-3}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-.} PYTHONUNBUFFERED=1
parts=${*:-check mem sft}

run() {  # run a command line, or print it under --dry-run
  if [ "$DRY" = 1 ]; then echo "+ $*"; else bash -c "$*"; fi
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
card_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1 | tr -d ' ')
case "$card_mib" in ''|*[!0-9.]*) echo "no GPU memory reading from nvidia-smi; assuming 80 GiB"; card_mib=81920 ;; esac
[ "$DRY" = 1 ] || python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
for p in $parts; do
  case $p in
    check) run "timeout 200 python3 launch/gpu_check.py --out '$OUT/check' > '$OUT/check.log' 2>&1; tail -25 '$OUT/check.log'" ;;
    mem) run "timeout 200 python3 launch/gpu_memory_check.py --out '$OUT/mem.json' 2>&1 | grep -v -i warn | tail -4" ;;
    sft|sft_compile)
      read -r frac fits need card_gib <<< "$(python3 -c "from jaxtool.bench import session_memory_fraction as f; print(f('$OUT/mem.json', $card_mib))")"
      echo "card ${card_gib} GiB; the JAX step needs ${need} GiB (XLA, $OUT/mem.json): XLA_PYTHON_CLIENT_MEM_FRACTION=$frac (fits: $fits)"
      if [ "$fits" = no ]; then
        echo "the JAX step does not fit this card: rerun with a smaller GRID or --remat full"; continue
      fi
      extra=""; [ "$p" = sft_compile ] && extra="--torch-compile"
      common="--shape $SHAPE --dtypes $DTYPES --grid $GRID --repeats $REPEATS"
      # 1) the JAX side alone, with the fraction its step needs
      run "XLA_PYTHON_CLIENT_MEM_FRACTION=$frac timeout 300 python3 -m jaxtool bench sft $common --no-torch --out '$OUT/$p/jax' 2>&1 | grep -v -i warn | tail -8"
      # 2) then the PyTorch side alone (JAX kept off the GPU in that process: the card is PyTorch's)
      run "JAX_PLATFORMS=cpu timeout 300 python3 -m jaxtool bench sft $common --torch-only $extra --out '$OUT/$p/torch' 2>&1 | grep -v -i warn | tail -8"
      # 3) one table of both
      run "python3 -c \"from jaxtool.bench import merge_sides; merge_sides('$OUT/$p/jax', '$OUT/$p/torch', '$OUT/$p')\"" ;;
    mcts) run "timeout 300 python3 -m jaxtool bench mcts --out '$OUT/mcts' 2>&1 | grep -v -i warn | tail -20" ;;
    *) echo "unknown part $p (check mem sft sft_compile mcts)"; exit 2 ;;
  esac
done
