#!/usr/bin/env bash
# Convert the checkpoints of a jaxtool training run into Hugging Face directories, ready for
# benchmark inference (transformers, vLLM, BFCL's own runner, ...).
#
#   launch/convert_to_hf.sh RUN_DIR [--latest] [--out DIR] [--dtype float32|bfloat16|float16] [--overwrite]
#
#   RUN_DIR     a run directory written by `jaxtool train` (it holds checkpoints/)
#   --latest    convert only the newest step (default: every step)
#   --out DIR   where to write (default: RUN_DIR/hf_steps); one sub-directory per step: step_<N>
#   --dtype     safetensors dtype (default: the dtype of the model the run started from)
#
# LoRA runs store adapters only; each step is merged into the run's base model on the way out.
set -euo pipefail

usage() { sed -n '2,13p' "$0"; exit "${1:-0}"; }
[ $# -ge 1 ] || usage 2
run_dir=$1; shift
latest=0; out=""; dtype=(); overwrite=()
while [ $# -gt 0 ]; do
  case "$1" in
    --latest) latest=1 ;;
    --out) out=$2; shift ;;
    --dtype) dtype=(--dtype "$2"); shift ;;
    --overwrite) overwrite=(--overwrite) ;;
    -h|--help) usage 0 ;;
    *) echo "convert_to_hf.sh: unknown argument $1" >&2; usage 2 ;;
  esac
  shift
done
ckpt="$run_dir/checkpoints"
if [ ! -f "$ckpt/jaxtool.json" ]; then
  echo "convert_to_hf.sh: $ckpt is not a jaxtool checkpoint directory (no jaxtool.json)" >&2
  exit 2
fi
out=${out:-$run_dir/hf_steps}
steps=$(find "$ckpt" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9]+' -printf '%f\n' | sort -n)
if [ -z "$steps" ]; then
  echo "convert_to_hf.sh: $ckpt holds no finished checkpoint step" >&2
  exit 2
fi
[ "$latest" = 1 ] && steps=$(echo "$steps" | tail -n 1)
for step in $steps; do
  echo "== step $step -> $out/step_$step"
  jaxtool convert orbax-to-hf --ckpt "$ckpt" --step "$step" --out "$out/step_$step" "${dtype[@]}" "${overwrite[@]}"
done
