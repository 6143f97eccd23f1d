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
# The server and the simulator share the machine's cores: SRV_CPU and LOAD_CPU default to
# every core (the server sizes its hashing threads from the cores it may use). Before each
# storm the script waits (bounded) until those cores are quiet. Every process is bounded by
# `timeout`; the server is stopped by its PID. Loopback addresses only. The helpers (server
# start and stop, quiet wait, binaries) are benches/load/lib.sh's.
#
# Results: $OUT/$LABEL-<setup>.json (the simulator's report), $OUT/$LABEL-<setup>.log (the
# server's log) and $OUT/$LABEL-run.txt (commit, machine, how quiet the cores were).
#
# usage: benches/login-storm.sh
# env: OUT (benches/results/login-storm), LABEL (after), SETUPS ("demo local"), SERVER_BIN and
#      SIM_BIN (both built here unless both are given; the server binary must be named
#      `syncline`), DEVICE_PORT (7740), GRPC_PORT (7741), BURSTS (10), LOGINS (200),
#      WRONG_PERCENT (50), PAUSE_MS (1000), SRV_CPU and LOAD_CPU (all cores), QUIET_MAX_PCT
#      (10), QUIET_WAIT_SECS (300); SYNCLINE_* variables in the environment reach the server
#      (e.g. SYNCLINE_MAX_FAILED_LOGINS_PER_USER=0 to measure the pool alone).
set -euo pipefail
ALL_CORES=0-$(($(nproc) - 1))
SRV_CPU=${SRV_CPU:-$ALL_CORES}
LOAD_CPU=${LOAD_CPU:-$ALL_CORES}
# shellcheck source=load/lib.sh
source "$(dirname "$0")/load/lib.sh"

OUT=${OUT:-benches/results/login-storm}
LABEL=${LABEL:-after}
SETUPS=${SETUPS:-demo local}
DEVICE_PORT=${DEVICE_PORT:-7740}
GRPC_PORT=${GRPC_PORT:-7741}
BURSTS=${BURSTS:-10}
LOGINS=${LOGINS:-200}
WRONG_PERCENT=${WRONG_PERCENT:-50}
PAUSE_MS=${PAUSE_MS:-1000}
QUIET_WAIT_SECS=${QUIET_WAIT_SECS:-300}
# Hard limits (seconds): a server lives at most SERVER_MAX_SECS, a storm SIM_MAX_SECS.
SERVER_MAX_SECS=900
SIM_MAX_SECS=600

release_binaries
mkdir -p "$OUT"
RUN_LOG=$OUT/$LABEL-run.txt
run_header simulator >"$RUN_LOG"
WORK=$(mktemp -d /tmp/syncline-login-storm.XXXXXX)
on_exit "rm -rf '$WORK'"

for setup in $SETUPS; do
  data=$WORK/$setup
  mkdir -p "$data"
  case $setup in
    demo) args=() ;;
    local)
      cat >"$WORK/local.toml" <<TOML
[demo]
enabled = false

[sources.Account]
partitioning = "app"
TOML
      args=(--config "$WORK/local.toml")
      SYNCLINE_DATA_DIR=$data timeout 60 "$SERVER_BIN" user add --config "$WORK/local.toml" --password demo demo
      ;;
    *) die "unknown setup $setup (known: demo local)" ;;
  esac
  wait_quiet "login-storm $setup"
  SYNCLINE_DATA_DIR=$data SYNCLINE_DEVICE_ADDR=127.0.0.1:$DEVICE_PORT SYNCLINE_GRPC_ADDR=127.0.0.1:$GRPC_PORT SYNCLINE_ADMIN_ADDR=127.0.0.1:0 \
    start_server "$OUT/$LABEL-$setup.log" syncline "$DEVICE_PORT $GRPC_PORT" "$SERVER_BIN" serve "${args[@]}"
  pinned "$LOAD_CPU" $((SIM_MAX_SECS + 30)) "$SIM_BIN" login-storm --url "ws://127.0.0.1:$DEVICE_PORT/v1/sync" \
    --server-pid "$SERVER_PID" --bursts "$BURSTS" --logins "$LOGINS" --wrong-percent "$WRONG_PERCENT" \
    --pause-ms "$PAUSE_MS" --max-secs "$SIM_MAX_SECS" --json-out "$OUT/$LABEL-$setup.json"
  stop_server
done
