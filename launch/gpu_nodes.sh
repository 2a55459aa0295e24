#!/usr/bin/env bash
# `jaxtool train` on GPU nodes: one process per GPU, every process in one JAX job (--distributed);
# the recipe's mesh (mesh.data/fsdp/tensor, one of them -1) spans every GPU of every node.
#
#   launch/gpu_nodes.sh [options] CONFIG [key=value ...]
#
# Where the cluster comes from:
#   SLURM (inside sbatch/salloc): srun starts one task per GPU on every node; JAX reads the
#       coordinator, process ids and local GPU from SLURM_* itself. Add `#SBATCH --requeue` and
#       `#SBATCH --signal=B:TERM@120` so a preempted or timed-out job saves and comes back.
#   plain multi-node: run this on every node with
#       COORDINATOR=host0:8476 NUM_NODES=2 NODE_RANK=<0|1> launch/gpu_nodes.sh CONFIG ...
#       (process id = NODE_RANK * GPUS_PER_NODE + local GPU; JAX_NUM_PROCESSES = NUM_NODES * GPUS_PER_NODE)
#   one node: all GPUs of this machine (coordinator 127.0.0.1); `--local N` forces N processes
#       (on a CPU-only machine with JAX_PLATFORMS=cpu it emulates N hosts: that is what tests run).
#
# Options:
#   --dry-run          print every command, run nothing
#   --local N          N processes on this machine
#   --gpus-per-node G  processes per node (default: GPUs listed by nvidia-smi, else 1)
#   --log-dir DIR      one log per worker: DIR/worker<process id>.log (default RUN_DIR/logs or ./logs)
#   --install          pip install "jax[cuda12]" and this repository on every node first
#   --max-restarts K   after a failure (not our own SIGTERM), restart every worker with --resume, up to K times
#   --port P           coordinator port for one-node / --local runs (default: a free port)
#
# Every run gets --resume (a rerun or a requeued job continues from the last complete checkpoint; a
# fresh run_dir starts at step 0). SIGTERM/SIGINT to this script are forwarded to every worker: each
# finishes its step, the workers agree on one step, save one checkpoint and exit 3.
# JAXTOOL (default `jaxtool`) is the command that runs jaxtool, e.g. JAXTOOL="python -m jaxtool".
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=launch/_workers.sh
source "$here/_workers.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2; }
dry=0 local_n="" gpn=${GPUS_PER_NODE:-} log_dir="" install=0 restarts=0 port=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1; shift ;;
    --local) local_n=${2:?--local N}; shift 2 ;;
    --gpus-per-node) gpn=${2:?--gpus-per-node G}; shift 2 ;;
    --log-dir) log_dir=${2:?--log-dir DIR}; shift 2 ;;
    --install) install=1; shift ;;
    --max-restarts) restarts=${2:?--max-restarts K}; shift 2 ;;
    --port) port=${2:?--port P}; shift 2 ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) echo "gpu_nodes.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage
export JT_DRY_RUN=$dry
jaxtool_cmd=(${JAXTOOL:-jaxtool})
train=("${jaxtool_cmd[@]}" train "$@" --distributed --resume)
if [ -z "$log_dir" ]; then
  log_dir=logs
  for a in "$@"; do case "$a" in run_dir=*) log_dir="${a#run_dir=}/logs" ;; esac; done
fi
run() { if [ "$dry" = 1 ]; then jt_print "$@"; else "$@"; fi; }

if [ -n "$local_n" ]; then
  mode=local; nodes=1; rank=0; gpn=$local_n
elif [ -n "${SLURM_JOB_ID:-}" ] && [ -z "${COORDINATOR:-}" ]; then
  mode=slurm; nodes=${SLURM_NNODES:-${SLURM_JOB_NUM_NODES:-1}}
elif [ -n "${COORDINATOR:-}" ] || [ "${NUM_NODES:-1}" -gt 1 ]; then
  mode=nodes; nodes=${NUM_NODES:?set NUM_NODES (how many nodes run this script)}
  rank=${NODE_RANK:?set NODE_RANK (0..NUM_NODES-1; node 0 hosts the coordinator)}
  : "${COORDINATOR:?set COORDINATOR=host:port of node 0}"
else
  mode=local; nodes=1; rank=0
fi
if [ -z "$gpn" ]; then
  gpn=1
  if command -v nvidia-smi >/dev/null 2>&1; then gpn=$(nvidia-smi -L | grep -c '^GPU' || true); [ "$gpn" -ge 1 ] || gpn=1; fi
fi
case "$gpn$restarts" in *[!0-9]*) echo "gpu_nodes.sh: --local/--gpus-per-node/--max-restarts take integers" >&2; exit 2 ;; esac
[ "$gpn" -ge 1 ] || { echo "gpu_nodes.sh: need at least one process per node" >&2; exit 2; }
if [ -n "$port" ]; then
  case "$port" in *[!0-9]*) echo "gpu_nodes.sh: --port takes a number, got $port" >&2; exit 2 ;; esac
  [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || { echo "gpu_nodes.sh: --port $port is not in 1..65535" >&2; exit 2; }
  if [ "$mode" = local ] && [ "$dry" != 1 ] && ! jt_port_free "$port"; then
    echo "gpu_nodes.sh: coordinator port $port on 127.0.0.1 is already in use (another run's coordinator?);" \
         "pick another --port, or leave --port out for a free one" >&2
    exit 2
  fi
fi
[ "$mode" != nodes ] || [ "$rank" -lt "$nodes" ] || { echo "gpu_nodes.sh: NODE_RANK=$rank is not below NUM_NODES=$nodes" >&2; exit 2; }

echo "# gpu_nodes.sh: mode $mode, $nodes node(s) x $gpn process(es), logs in $log_dir"
if [ "$dry" = 1 ]; then  # one GPU per process (CPU emulation: XLA_FLAGS' device count): the mesh must fit
  jt_check_mesh "$(jt_local_devices $((nodes * gpn)))" $((nodes * gpn)) "$@" || { echo "gpu_nodes.sh: the recipe's mesh does not fit this launch (above)" >&2; exit 2; }
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
[ "$dry" = 1 ] && echo "export XLA_PYTHON_CLIENT_MEM_FRACTION=$XLA_PYTHON_CLIENT_MEM_FRACTION"

if [ "$install" = 1 ]; then
  inst=(bash -c "pip install -U \"jax[cuda12]\" && pip install -e $(jt_quote "$(dirname "$here")")")
  if [ "$mode" = slurm ]; then run srun --ntasks-per-node=1 "${inst[@]}"; else run "${inst[@]}"; fi
fi

attempt=0
JT_SIGNALLED=0
trap 'JT_SIGNALLED=1; jt_forward TERM' TERM
while true; do
  rc=0
  case "$mode" in
    slurm)
      [ "$dry" = 1 ] || mkdir -p "$log_dir"
      cmd=(srun --nodes="$nodes" --ntasks-per-node="$gpn" --gpus-per-task=1 --kill-on-bad-exit=1
           --output="$log_dir/worker%t.log" "${train[@]}")
      if [ "$dry" = 1 ]; then jt_print "${cmd[@]}"; else
        "${cmd[@]}" & JT_PIDS=($!)
        trap 'JT_SIGNALLED=1; jt_forward TERM' TERM
        while true; do st=0; wait "${JT_PIDS[0]}" || st=$?; [ "$st" -gt 128 ] && kill -0 "${JT_PIDS[0]}" 2>/dev/null && continue; break; done
        rc=$st
      fi ;;
    nodes)
      jt_local_workers "$COORDINATOR" $((nodes * gpn)) $((rank * gpn)) "$gpn" "$log_dir" "${train[@]}" || rc=$? ;;
    local)
      coord="127.0.0.1:${port:-$(jt_free_port)}"
      jt_local_workers "$coord" "$gpn" 0 "$gpn" "$log_dir" "${train[@]}" || rc=$? ;;
  esac
  trap 'JT_SIGNALLED=1; jt_forward TERM' TERM
  [ "$rc" -eq 0 ] && exit 0
  if [ "$JT_SIGNALLED" = 1 ] || [ "$rc" -eq 3 ]; then
    echo "gpu_nodes.sh: stopped by a signal (exit $rc); rerun the same command to resume from the last checkpoint"
    exit "$rc"
  fi
  if [ "$attempt" -ge "$restarts" ]; then
    echo "gpu_nodes.sh: a worker failed (exit $rc); see $log_dir/worker*.log" >&2
    exit "$rc"
  fi
  attempt=$((attempt + 1))
  echo "gpu_nodes.sh: a worker failed (exit $rc); restart $attempt/$restarts from the last complete checkpoint"
done
