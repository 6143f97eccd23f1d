#!/usr/bin/env bash
# Login storms (issue 13): `syncline-sim login-storm` (BURSTS bursts of LOGINS password logins
# sent at once, WRONG_PERCENT% of them with a wrong password, all for user `demo`) against a
# fresh server per setup, reading the server's RSS and thread count after each burst:
#
#   demo   `syncline serve` with no config: the demo app, logins checked by its CRM channel
#          (in the server's process, over loopback gRPC)
#   local  a config without the demo and a local user `demo` (password demo), added with
#          `syncline user add` before the server starts
#
# The server and the simulator share the machine's cores (no pinning: the server sizes its
# hashing threads from the cores it may use). Every process is bounded by `timeout`; the
# server is stopped by its PID. Loopback addresses only.
#
# Results: $OUT/$LABEL-<setup>.json (the simulator's report) and $OUT/$LABEL-<setup>.log (the
# server's log).
#
# usage: benches/login-storm.sh
# env: OUT (benches/results/login-storm), LABEL (after), SETUPS ("demo local"), SERVER_BIN and
#      SIM_BIN (both built here unless both are given; the server binary must be named
#      `syncline`), DEVICE_PORT (7740), GRPC_PORT (7741), BURSTS (10), LOGINS (200),
#      WRONG_PERCENT (50), PAUSE_MS (1000); SYNCLINE_* variables in the environment reach the
#      server (e.g. SYNCLINE_MAX_FAILED_LOGINS_PER_USER=0 to measure the pool alone).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benches/results/login-storm}
LABEL=${LABEL:-after}
SETUPS=${SETUPS:-demo local}
DEVICE_PORT=${DEVICE_PORT:-7740}
GRPC_PORT=${GRPC_PORT:-7741}
BURSTS=${BURSTS:-10}
LOGINS=${LOGINS:-200}
WRONG_PERCENT=${WRONG_PERCENT:-50}
PAUSE_MS=${PAUSE_MS:-1000}
# Hard limits (seconds): a server lives at most SERVER_MAX_SECS, a storm SIM_MAX_SECS.
SERVER_MAX_SECS=900
SIM_MAX_SECS=600

if [[ -z ${SERVER_BIN:-} || -z ${SIM_BIN:-} ]]; then
  cargo build --release --locked -p syncline-server --bin syncline -p syncline-sim --bin syncline-sim
fi
SERVER_BIN=${SERVER_BIN:-target/release/syncline}
SIM_BIN=${SIM_BIN:-target/release/syncline-sim}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
WORK=$(mktemp -d /tmp/syncline-login-storm.XXXXXX)

TIMEOUT_PID=
SERVER_PID=
stop_server() {
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ -n $TIMEOUT_PID ]]; then
    wait "$TIMEOUT_PID" 2>/dev/null || true
  fi
  SERVER_PID=
  TIMEOUT_PID=
}
cleanup() {
  stop_server
  rm -rf "$WORK"
}
trap cleanup EXIT

port_listening() {
  ss -ltnH "sport = :$1" | grep -q LISTEN
}

# Starts the server on data directory $2, logging to $1, with any further arguments passed
# to `syncline serve`; sets SERVER_PID once the device port listens.
start_server() {
  local log=$1 data=$2
  if port_listening "$DEVICE_PORT" || port_listening "$GRPC_PORT"; then
    echo "port $DEVICE_PORT or $GRPC_PORT is already in use" >&2
    exit 1
  fi
  SYNCLINE_DATA_DIR=$data SYNCLINE_DEVICE_ADDR=127.0.0.1:$DEVICE_PORT SYNCLINE_GRPC_ADDR=127.0.0.1:$GRPC_PORT \
    timeout "$SERVER_MAX_SECS" "$SERVER_BIN" serve "${@:3}" >"$log" 2>&1 &
  TIMEOUT_PID=$!
  # Readiness probe, bounded (the first start seeds the demo app): at most 120 s.
  for _ in $(seq 1 1200); do
    if port_listening "$DEVICE_PORT" && port_listening "$GRPC_PORT"; then break; fi
    if ! kill -0 "$TIMEOUT_PID" 2>/dev/null; then
      echo "the server exited; see $log" >&2
      exit 1
    fi
    sleep 0.1
  done
  port_listening "$DEVICE_PORT" && port_listening "$GRPC_PORT" || { echo "the server did not start; see $log" >&2; exit 1; }
  SERVER_PID=$(pgrep -P "$TIMEOUT_PID" | head -1)
  [[ $(cat "/proc/$SERVER_PID/comm") == syncline ]] || { echo "pid $SERVER_PID is not the server" >&2; exit 1; }
  echo "server pid $SERVER_PID"
}

for setup in $SETUPS; do
  data=$WORK/$setup
  mkdir -p "$data"
  case $setup in
    demo) args=() ;;
    local)
      cat >"$WORK/local.toml" <<EOF
[demo]
enabled = false

[sources.Account]
partitioning = "app"
EOF
      args=(--config "$WORK/local.toml")
      SYNCLINE_DATA_DIR=$data timeout 60 "$SERVER_BIN" user add --config "$WORK/local.toml" --password demo demo
      ;;
    *) echo "unknown setup $setup (known: demo local)" >&2; exit 2 ;;
  esac
  start_server "$OUT/$LABEL-$setup.log" "$data" "${args[@]}"
  timeout $((SIM_MAX_SECS + 30)) "$SIM_BIN" login-storm --url "ws://127.0.0.1:$DEVICE_PORT/v1/sync" \
    --server-pid "$SERVER_PID" --bursts "$BURSTS" --logins "$LOGINS" --wrong-percent "$WRONG_PERCENT" \
    --pause-ms "$PAUSE_MS" --max-secs "$SIM_MAX_SECS" --json-out "$OUT/$LABEL-$setup.json"
  stop_server
done
