#!/usr/bin/env bash
# Run `jaxtool train` on one or more GPU nodes (one process per node, all local GPUs per process).
#
# Single node (all GPUs of this machine):
#   launch/gpu_nodes.sh configs/diatool_dpo/llama3_8b.yaml run_dir=runs/x
#
# Several nodes: run the same command on every node with
#   COORDINATOR=host0:1234 NUM_NODES=4 NODE_RANK=<0..3> launch/gpu_nodes.sh CONFIG [key=value ...]
# (under SLURM, NODE_RANK/NUM_NODES default to SLURM_NODEID/SLURM_NNODES).
# The mesh in the recipe spans every GPU of every node (e.g. mesh.fsdp=-1).
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,11p' "$0"; exit 2; }
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
num_nodes=${NUM_NODES:-${SLURM_NNODES:-1}}
if [ "$num_nodes" -gt 1 ]; then
  : "${COORDINATOR:?set COORDINATOR=host:port (the address of node 0)}"
  export JAX_COORDINATOR_ADDRESS=$COORDINATOR
  export JAX_NUM_PROCESSES=$num_nodes
  export JAX_PROCESS_ID=${NODE_RANK:-${SLURM_NODEID:?set NODE_RANK}}
  exec jaxtool train "$@" --distributed
fi
exec jaxtool train "$@"
