#!/usr/bin/env bash
# Multi-process training on one machine's CPU: N JAX processes x D simulated devices each, gloo collectives.
# The same code path as a multi-host pod (jax.distributed, per-process data shards, global arrays, Orbax
# multi-process checkpoints), small enough for a laptop or CI.
#
#   launch/local_multiprocess.sh [-n PROCESSES] [-d DEVICES_PER_PROCESS] [-p PORT] [-l LOG_DIR] \
#       CONFIG [key=value ...] [--resume]
#   launch/local_multiprocess.sh -n 2 -d 4 configs/train/tiny_qwen3_vl.yaml steps=10 out_dir=runs/mp
#
# Process 0 prints to this terminal; process i > 0 logs to LOG_DIR/process_<i>.log (default: a temp dir).
# If one process fails, the others are stopped and the exit status is the first failure's.
set -euo pipefail

N=2
D=4
PORT=""
LOG_DIR=""
while getopts "n:d:p:l:h" opt; do
  case "$opt" in
    n) N="$OPTARG" ;;
    d) D="$OPTARG" ;;
    p) PORT="$OPTARG" ;;
    l) LOG_DIR="$OPTARG" ;;
    h) sed -n '2,12p' "$0"; exit 0 ;;
    *) sed -n '2,12p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -lt 1 ]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi

PYTHON="${PYTHON:-python}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "$PORT" ]; then
  PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
LOG_DIR="${LOG_DIR:-$(mktemp -d -t stvl_mp_XXXXXX)}"
mkdir -p "$LOG_DIR"
echo "launching $N processes x $D CPU devices (coordinator 127.0.0.1:$PORT, logs in $LOG_DIR)" >&2

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup INT TERM

for ((i = 0; i < N; i++)); do
  (
    export JAX_PLATFORMS=cpu
    export XLA_FLAGS="--xla_force_host_platform_device_count=$D ${XLA_FLAGS:-}"
    export JAX_COORDINATOR_ADDRESS="127.0.0.1:$PORT" JAX_NUM_PROCESSES="$N" JAX_PROCESS_ID="$i"
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    if [ "$i" -eq 0 ]; then
      exec "$PYTHON" -m stvl_jax.cli train "$@"
    else
      exec "$PYTHON" -m stvl_jax.cli train "$@" > "$LOG_DIR/process_$i.log" 2>&1
    fi
  ) &
  pids+=($!)
done

status=0
remaining=${#pids[@]}
while [ "$remaining" -gt 0 ]; do
  # wait for whichever process ends first; on a failure stop the rest (they would block in a collective)
  if wait -n; then
    remaining=$((remaining - 1))
  else
    code=$?
    [ "$status" -eq 0 ] && status=$code
    echo "a process failed (exit $code); stopping the others. Logs: $LOG_DIR" >&2
    cleanup
    wait || true
    remaining=0
  fi
done
exit "$status"
