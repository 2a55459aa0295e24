#!/usr/bin/env bash
# `jaxtool train` on every worker of a Cloud TPU VM slice (v4 / v5e / v5p / v6e), one process per
# worker (host), all in one JAX job: `--distributed` makes jaxtool call jax.distributed.initialize(),
# which finds the slice's workers by itself. The recipe's mesh (mesh.data/fsdp/tensor, one of them
# -1) spans every chip of the slice.
#
#   launch/tpu_pod.sh [options] TPU_NAME ZONE [PROJECT] -- CONFIG [key=value ...]
#   launch/tpu_pod.sh --local N [options] -- CONFIG [key=value ...]     # N worker processes on this machine
#
# run_dir must be a path that every worker sees (a Filestore/NFS or gcsfuse mount at the same path):
# each worker writes its own shards of every checkpoint into it.
#
# Options:
#   --dry-run          print every command (gcloud and per-worker), run nothing
#   --install          copy this repository to every worker (REPO) and pip install "jax[tpu]" + it
#   --repo DIR         the repository on the workers (default: jaxtool, i.e. ~/jaxtool)
#   --log-dir DIR      worker logs DIR/worker-<hostname>.log on each worker (default RUN_DIR/logs or logs)
#   --env KEY=VALUE    extra environment for every worker (repeatable), e.g. LIBTPU_INIT_ARGS=...
#   --max-restarts K   after a failure (not a preemption), rerun on every worker with --resume, up to K times
#   --local N          emulate the slice with N processes here (coordinator 127.0.0.1; tests run this)
#   --accelerator-type TYPE  the slice's type as in `gcloud ... create --accelerator-type` (v4-32, v5p-16,
#                      v5litepod-256, v6e-64, ...): with --dry-run, check that the recipe's mesh spans the
#                      slice's chips and workers (with --local N: N processes of one device each)
#
# Preemption: a maintenance event or a spot/preemptible reclaim sends SIGTERM to the workers' jaxtool
# processes: they agree on one step, save one checkpoint and exit 3. SIGTERM/SIGINT to this script are
# forwarded the same way to every worker. Every run gets --resume, so rerunning the same command (on
# the recreated slice) continues from the last complete checkpoint.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=launch/_workers.sh
source "$here/_workers.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2; }
dry=0 install=0 repo=jaxtool log_dir="" restarts=0 local_n="" project=() envs=() acc_type=""
pos=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1; shift ;;
    --install) install=1; shift ;;
    --repo) repo=${2:?--repo DIR}; shift 2 ;;
    --log-dir) log_dir=${2:?--log-dir DIR}; shift 2 ;;
    --env) envs+=("${2:?--env KEY=VALUE}"); shift 2 ;;
    --max-restarts) restarts=${2:?--max-restarts K}; shift 2 ;;
    --local) local_n=${2:?--local N}; shift 2 ;;
    --project) project=(--project "${2:?--project P}"); shift 2 ;;
    --accelerator-type) acc_type=${2:?--accelerator-type TYPE}; shift 2 ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) echo "tpu_pod.sh: unknown option $1" >&2; exit 2 ;;
    *) pos+=("$1"); shift ;;
  esac
done
[ $# -ge 1 ] || usage
# accept the older form `-- jaxtool train CONFIG ...`
if [ "$1" = jaxtool ] && [ "${2:-}" = train ]; then shift 2; fi
[ $# -ge 1 ] || usage
if [ -z "$local_n" ]; then
  [ "${#pos[@]}" -ge 2 ] || { echo "tpu_pod.sh: give TPU_NAME ZONE (or --local N)" >&2; exit 2; }
  name=${pos[0]} zone=${pos[1]}
  [ "${#pos[@]}" -lt 3 ] || project=(--project "${pos[2]}")
fi
case "$restarts${local_n}" in *[!0-9]*) echo "tpu_pod.sh: --max-restarts/--local take integers" >&2; exit 2 ;; esac
for kv in "${envs[@]+"${envs[@]}"}"; do
  case "$kv" in [A-Za-z_]*=*) ;; *) echo "tpu_pod.sh: --env expects KEY=VALUE, got $kv" >&2; exit 2 ;; esac
done
if [ -z "$log_dir" ]; then
  log_dir=logs
  for a in "$@"; do case "$a" in run_dir=*) log_dir="${a#run_dir=}/logs" ;; esac; done
fi
export JT_DRY_RUN=$dry
run() { if [ "$dry" = 1 ]; then jt_print "$@"; else "$@"; fi; }

if [ -n "$acc_type" ]; then
  topo=$(jt_tpu_topology "$acc_type") || exit 2   # "DEVICES WORKERS"
  read -r tpu_devices tpu_workers <<< "$topo"
fi
if [ "$dry" = 1 ]; then  # the recipe's mesh must span every chip of every worker
  if [ -n "$local_n" ]; then
    jt_check_mesh "$(jt_local_devices "$local_n")" "$local_n" "$@" || { echo "tpu_pod.sh: the recipe's mesh does not fit this launch (above)" >&2; exit 2; }
  elif [ -n "$acc_type" ]; then
    echo "# $acc_type: $tpu_devices JAX devices (chips) on $tpu_workers worker(s)"
    jt_check_mesh "$tpu_devices" "$tpu_workers" "$@" || { echo "tpu_pod.sh: the recipe's mesh does not fit $acc_type (above)" >&2; exit 2; }
  else
    echo "# mesh not checked: add --accelerator-type TYPE (the slice's type, e.g. v5p-16) to check it against the slice" >&2
  fi
fi

if [ -n "$local_n" ]; then
  [ "$local_n" -ge 1 ] || { echo "tpu_pod.sh: --local N needs N >= 1" >&2; exit 2; }
  jaxtool_cmd=(${JAXTOOL:-jaxtool})
  train=("${jaxtool_cmd[@]}" train "$@" --distributed --resume)
  [ "${#envs[@]}" -eq 0 ] || train=(env "${envs[@]}" "${train[@]}")
  echo "# tpu_pod.sh: local emulation, $local_n worker processes, logs in $log_dir"
  attempt=0
  while true; do
    rc=0
    jt_local_workers "127.0.0.1:${PORT:-$(jt_free_port)}" "$local_n" 0 "$local_n" "$log_dir" "${train[@]}" || rc=$?
    [ "$rc" -eq 0 ] && exit 0
    if [ "$JT_SIGNALLED" = 1 ] || [ "$rc" -eq 3 ] || [ "$attempt" -ge "$restarts" ]; then exit "$rc"; fi
    attempt=$((attempt + 1))
    echo "tpu_pod.sh: a worker failed (exit $rc); restart $attempt/$restarts from the last complete checkpoint"
  done
fi

gc=(gcloud compute tpus tpu-vm)
where=(--zone "$zone" "${project[@]+"${project[@]}"}")
# the program each worker runs: its log and pid file under LOG_DIR, named by the worker's hostname
worker_train=$(jt_print jaxtool train "$@" --distributed --resume)
[ "${#envs[@]}" -eq 0 ] || worker_train="$(jt_print env "${envs[@]}") $worker_train"
ld=$(jt_quote "$log_dir")
worker_cmd="cd $(jt_quote "$repo") && mkdir -p $ld && w=\$(hostname) && ($worker_train >> $ld/worker-\$w.log 2>&1 & echo \$! > $ld/worker-\$w.pid; wait \$!); rc=\$?; tail -n 3 $ld/worker-\$w.log | sed \"s/^/[\$w] /\"; exit \$rc"
stop_cmd="cd $(jt_quote "$repo") && kill -TERM \$(cat $ld/worker-\$(hostname).pid) 2>/dev/null || true"

case "$log_dir" in /*) shown=$log_dir ;; *) shown=$repo/$log_dir ;; esac
echo "# tpu_pod.sh: slice $name ($zone), every worker; logs $shown/worker-<hostname>.log on each worker"
run "${gc[@]}" describe "$name" "${where[@]}" --format='value(state,acceleratorType)'
if [ "$install" = 1 ]; then
  run "${gc[@]}" scp --recurse "$(dirname "$here")" "$name:$repo" "${where[@]}" --worker=all
  run "${gc[@]}" ssh "$name" "${where[@]}" --worker=all \
    --command "pip install -U \"jax[tpu]\" && pip install -e $(jt_quote "$repo")"
fi

on_signal() {
  JT_SIGNALLED=1
  echo "tpu_pod.sh: signal: asking every worker to save a checkpoint and stop"
  "${gc[@]}" ssh "$name" "${where[@]}" --worker=all --command "$stop_cmd" || true
}
if [ "$dry" = 1 ]; then
  run "${gc[@]}" ssh "$name" "${where[@]}" --worker=all --command "$worker_cmd"
  echo "# on SIGTERM/SIGINT to this script:"
  run "${gc[@]}" ssh "$name" "${where[@]}" --worker=all --command "$stop_cmd"
  echo "# watch worker 0: $(jt_print "${gc[@]}" ssh "$name" "${where[@]}" --worker=0 --command "tail -f $(jt_quote "$shown")/worker-*.log")"
  exit 0
fi
trap on_signal TERM INT
attempt=0
while true; do
  rc=0
  "${gc[@]}" ssh "$name" "${where[@]}" --worker=all --command "$worker_cmd" & pid=$!
  while true; do st=0; wait "$pid" || st=$?; [ "$st" -gt 128 ] && kill -0 "$pid" 2>/dev/null && continue; break; done
  rc=$st
  [ "$rc" -eq 0 ] && exit 0
  if [ "$JT_SIGNALLED" = 1 ] || [ "$attempt" -ge "$restarts" ]; then
    echo "tpu_pod.sh: exit $rc; rerun the same command (on the recreated slice, after a preemption) to resume" >&2
    exit "$rc"
  fi
  state=$("${gc[@]}" describe "$name" "${where[@]}" --format='value(state)' || echo UNKNOWN)
  if [ "$state" != READY ]; then
    echo "tpu_pod.sh: slice $name is $state (preempted?): recreate it, then rerun this command to resume" >&2
    exit "$rc"
  fi
  attempt=$((attempt + 1))
  echo "tpu_pod.sh: a worker failed (exit $rc); restart $attempt/$restarts from the last complete checkpoint"
done
