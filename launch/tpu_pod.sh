#!/usr/bin/env bash
# Run one jaxtool command on every worker of a Cloud TPU VM slice (v4/v5e/v5p/v6e pods).
# Each worker runs the same program; `--distributed` makes jaxtool call jax.distributed.initialize(),
# which discovers the pod on TPU by itself. The mesh in the recipe (mesh.data/fsdp/tensor, one of
# them -1) spans all chips of all workers.
#
#   launch/tpu_pod.sh TPU_NAME ZONE [PROJECT] -- jaxtool train configs/diatool_dpo/llama3_8b.yaml run_dir=gs://...
#
# Prepare each worker once (same command on all):
#   launch/tpu_pod.sh NAME ZONE -- 'pip install "jax[tpu]" && pip install -e /path/to/jaxtool'
set -euo pipefail
[ $# -ge 4 ] || { sed -n '2,11p' "$0"; exit 2; }
name=$1; zone=$2; shift 2
project=()
if [ "$1" != "--" ]; then project=(--project "$1"); shift; fi
[ "$1" = "--" ] || { echo "tpu_pod.sh: expected -- before the command" >&2; exit 2; }
shift
cmd="$*"
case "$cmd" in
  "jaxtool train"*) cmd="$cmd --distributed" ;;
esac
exec gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" "${project[@]}" --worker=all --command "$cmd"
