# Shared by launch/tpu_pod.sh and launch/gpu_nodes.sh (sourced, not run): start worker processes on
# this host, one log and one pid file per worker, forward SIGTERM/SIGINT (a preemption notice,
# `scancel`, Ctrl-C) to every worker, wait for all of them.
#
#   jt_local_workers COORDINATOR NUM_PROCESSES FIRST_ID COUNT LOG_DIR CMD...
#
# Worker i (FIRST_ID <= i < FIRST_ID+COUNT) runs CMD with JAX_COORDINATOR_ADDRESS=COORDINATOR,
# JAX_NUM_PROCESSES, JAX_PROCESS_ID=i and JAX_LOCAL_DEVICE_IDS=i-FIRST_ID (its GPU on this host),
# stdout+stderr appended to LOG_DIR/worker<i>.log (a restart continues it), its pid in LOG_DIR/worker<i>.pid. With JT_DRY_RUN=1 the
# commands are printed instead. Returns 0 if every worker exited 0, else the first non-zero code
# (3 = stopped by a signal after saving a checkpoint).

JT_PIDS=()
JT_SIGNALLED=0

jt_quote() {  # one word, quoted for a POSIX shell only when it needs it
  case "$1" in
    "" | *[!A-Za-z0-9_./:=@%+,-]*) printf "'%s'" "${1//\'/\'\\\'\'}" ;;
    *) printf '%s' "$1" ;;
  esac
}

jt_print() {  # print a command line, quoted so that it can be pasted into a shell
  local out="" a
  for a in "$@"; do out+="$(jt_quote "$a") "; done
  echo "${out% }"
}

jt_free_port() {
  "${PYTHON:-python3}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

jt_check_mesh() {  # jt_check_mesh DEVICES PROCESSES CONFIG [key=value ...]: the recipe's mesh fits (dry runs)
  local ndev=$1 nproc=$2; shift 2
  "${PYTHON:-python3}" - "$ndev" "$nproc" "$@" <<'PY'
import sys
ndev, nproc, args = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
try:
    from jaxtool.config import load_config
    from jaxtool.errors import JaxtoolError
    from jaxtool.sharding import mesh_sizes
except ImportError:
    print("# mesh not checked: jaxtool is not importable here", file=sys.stderr)
    sys.exit(0)
path = next((a for a in args if "=" not in a and not a.startswith("-")), None)
overrides = [a for a in args if "=" in a and not a.startswith("-")]
import os
if path and not os.path.isfile(path):
    print(f"# mesh not checked: no recipe file {path} here", file=sys.stderr)
    sys.exit(0)
try:
    m = load_config(path, overrides).mesh
    sizes = mesh_sizes(m.data, m.fsdp, m.tensor, devices=list(range(ndev)))
    n = sizes[0] * sizes[1] * sizes[2]
    if n < ndev and nproc > 1:
        raise SystemExit(f"mesh data×fsdp×tensor = {n} leaves devices idle: a multi-process mesh must span all "
                         f"{ndev} devices ({nproc} processes); set one of mesh.data/fsdp/tensor to -1")
except JaxtoolError as e:
    raise SystemExit(f"{e} [{nproc} processes, {ndev} devices]")
print(f"# mesh data={sizes[0]} fsdp={sizes[1]} tensor={sizes[2]} spans {ndev} devices of {nproc} processes")
PY
}

jt_tpu_topology() {  # jt_tpu_topology TYPE -> "DEVICES WORKERS" of a Cloud TPU slice type (v5p-16 -> "8 2")
  # v2/v3: the number is TensorCores, one JAX device per core, 8 per worker. v4/v5p: the number is
  # TensorCores, 2 per chip, one JAX device per chip (megacore), 4 chips per worker. v5e
  # (v5litepod-N) / v6e: the number is chips, one device each, 1, 4 or 8 chips on one worker, else 4
  # per worker.
  local t=$1 gen n dev hosts
  gen=${t%-*} n=${t##*-}
  case "$n" in "" | *[!0-9]*) n="" ;; esac
  case "$gen" in
    v2 | v3) [ -z "$n" ] || { dev=$n; hosts=$(( n / 8 )); } ;;
    v4 | v5p) [ -z "$n" ] || { dev=$(( n / 2 )); hosts=$(( n / 8 )); } ;;
    v5litepod | v5e | v6e) [ -z "$n" ] || { dev=$n; if [ "$n" -le 8 ]; then hosts=1; else hosts=$(( n / 4 )); fi; } ;;
    *) n="" ;;
  esac
  if [ -z "$n" ] || [ "${dev:-0}" -lt 1 ]; then
    echo "--accelerator-type $t: expected a Cloud TPU type such as v4-32, v5p-16, v5litepod-256 or v6e-64" >&2
    return 2
  fi
  [ "$hosts" -ge 1 ] || hosts=1
  echo "$dev $hosts"
}

jt_local_devices() {  # devices of N local processes: N (one GPU each); on CPU (JAX_PLATFORMS=cpu) N times K
  local k=1 f                    # of XLA_FLAGS=--xla_force_host_platform_device_count=K (emulated hosts)
  [ "${JAX_PLATFORMS:-}" = cpu ] || { echo "$1"; return; }
  for f in ${XLA_FLAGS:-}; do
    case "$f" in --xla_force_host_platform_device_count=*) k=${f#*=} ;; esac
  done
  case "$k" in "" | *[!0-9]*) k=1 ;; esac
  echo $(( $1 * k ))
}

jt_port_free() {  # exit 0 when nothing listens on 127.0.0.1:$1
  "${PYTHON:-python3}" -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

jt_forward() {  # forward a signal to every live worker
  local sig=$1 p
  for p in "${JT_PIDS[@]}"; do kill -s "$sig" "$p" 2>/dev/null || true; done
}

jt_local_workers() {
  local coord=$1 nproc=$2 first=$3 count=$4 logdir=$5
  shift 5
  local i local_id pid rc=0 st st2
  JT_PIDS=()
  [ "${JT_DRY_RUN:-0}" = 1 ] || mkdir -p "$logdir"
  for ((local_id = 0; local_id < count; local_id++)); do
    i=$((first + local_id))
    if [ "${JT_DRY_RUN:-0}" = 1 ]; then
      echo "$(jt_print env JAX_COORDINATOR_ADDRESS="$coord" JAX_NUM_PROCESSES="$nproc" JAX_PROCESS_ID="$i" \
        JAX_LOCAL_DEVICE_IDS="$local_id" "$@") >> $(jt_quote "$logdir/worker$i.log") 2>&1 &"
      continue
    fi
    echo "=== $(date -u +%FT%TZ) worker $i of $nproc: $(jt_print "$@")" >>"$logdir/worker$i.log"
    JAX_COORDINATOR_ADDRESS="$coord" JAX_NUM_PROCESSES="$nproc" JAX_PROCESS_ID="$i" JAX_LOCAL_DEVICE_IDS="$local_id" \
      "$@" >>"$logdir/worker$i.log" 2>&1 </dev/null &
    pid=$!
    JT_PIDS+=("$pid")
    echo "$pid" >"$logdir/worker$i.pid"
    echo "worker $i: pid $pid, log $logdir/worker$i.log"
  done
  [ "${JT_DRY_RUN:-0}" = 1 ] && { echo "wait  # SIGTERM/SIGINT to this script are forwarded to every worker"; return 0; }
  trap 'JT_SIGNALLED=1; echo "launch: SIGTERM: forwarding to every worker (each saves a checkpoint and stops)"; jt_forward TERM' TERM
  trap 'JT_SIGNALLED=1; echo "launch: SIGINT: forwarding to every worker"; jt_forward INT' INT
  for local_id in "${!JT_PIDS[@]}"; do
    pid=${JT_PIDS[$local_id]}
    while true; do
      st=0
      wait "$pid" || st=$?
      # `wait` also returns (status > 128) when a trapped signal arrives: the worker is still running
      if [ "$st" -gt 128 ] && kill -0 "$pid" 2>/dev/null; then continue; fi
      if [ "$st" -gt 128 ]; then  # the signal and the exit crossed: fetch the status bash kept (127: none)
        st2=0
        wait "$pid" 2>/dev/null || st2=$?
        [ "$st2" -eq 127 ] || st=$st2
      fi
      break
    done
    echo "worker $((first + local_id)): exit $st"
    if [ "$st" -ne 0 ] && [ "$rc" -eq 0 ]; then rc=$st; fi
  done
  trap - TERM INT
  return "$rc"
}
