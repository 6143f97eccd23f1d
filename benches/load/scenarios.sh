#!/usr/bin/env bash
# Runs the syncline-sim load scenarios against release builds on this machine (loopback only):
# the server pinned to one core, the simulator to another, a fresh server process per scenario
# (so one scenario's memory does not show in the next one's readings) on one fresh temporary
# data directory with the demo app. JSON results go to $OUT; every process started here is
# bounded by `timeout` and the server is stopped by its PID.
#
# Scenarios: initial-sync (one device, whole partition, repeated); fanout (`syncline-sim
# fanout`, formerly `latency`, which still works as an alias; the result files keep their
# latency-* names) with 1 device at 10/s (the commit-and-push floor), 1,000 devices at 10/s,
# and 1,000 devices x 1,000 changes at 100/s (LATENCY_RUNS times: it sits at one core's
# saturation point, where runs vary); fanout-wide: WIDE_DEVICES (10,000) devices x WIDE_CHANGES
# changes at WIDE_RATE (10)/s; fanout-burst: FANOUT_DEVICES devices x FANOUT_CHANGES
# changes pushed back to back (--rate 0), for deliveries per second; idle with 10,000
# devices; storm: STORM_DEVICES devices caught up all disconnect and resume at once, with
# STORM_CHANGES changes ingested during the outage; slow: SLOW_DEVICES devices at SLOW_RATE
# changes/s for two phases of SLOW_PHASE_SECS, SLOW_STALLED_PERCENT of them not reading in
# the second. Through the demo app's CRM channel (which runs inside the server
# process on a loopback port the server logs at start; sources captured with `watch`):
# latency-channel runs 1,000 devices x 1,000 changes at 100/s written with the channel's
# Create (the backend commit) and, as the baseline of the same script run, the same load
# pushed with Ingest, alternating, CHANNEL_RUNS times each; mutations-open sends device
# mutations (creates) from MUT_WRITERS writers at MUT_RATE/s with MUT_DEVICES subscribers
# receiving them back; mutations-max does the same in a closed loop (MUT_IN_FLIGHT
# outstanding per writer) for the most mutations per second sustained. personal runs one
# device per user, each logged in with a backend token the simulator mints and synced to its
# own partition of a user-partitioned ingest source, with changes pushed round-robin over the
# users' partitions: PERSONAL_USERS users at PERSONAL_RATE/s, then PERSONAL_MANY_USERS at
# PERSONAL_MANY_RATE/s, each for PERSONAL_SECS seconds (its server runs with its own config
# and data directory: the secret and the source, no demo app).
#
# The numbers are only meaningful on an otherwise idle machine: before each scenario the
# script waits (bounded) until both pinned cores are quiet, and records what it saw in
# $OUT/run.txt. Building, pinning, the quiet check and starting and stopping servers are
# benches/load/lib.sh's.
#
# usage: benches/load/scenarios.sh
# env: OUT (benches/results/scenarios), SRV_CPU (0), SIM_CPU (1), DEVICE_PORT (7700), GRPC_PORT (7701),
#      RECORDS (10000 demo Account records), LATENCY_DEVICES (1000), LATENCY_CHANGES (1000),
#      LATENCY_RATE (100), LATENCY_RUNS (3), SYNC_REPEAT (10), IDLE_DEVICES (10000),
#      SETTLE_SECS (5), QUIET_MAX_PCT (10), QUIET_WAIT_SECS (900), CHANNEL_RUNS (2),
#      MUT_DEVICES (100), MUT_WRITERS (10), MUT_RATE (50), MUT_COUNT (1000), MUT_IN_FLIGHT (8),
#      MUT_MAX_COUNT (3000), WIDE_DEVICES (10000), WIDE_CHANGES (100), WIDE_RATE (10),
#      FANOUT_DEVICES (1000), FANOUT_CHANGES (2000), FANOUT_IN_FLIGHT (2000: every push of
#      the burst pending at once, one record each, so the store groups them as it can),
#      STORM_DEVICES (10000),
#      STORM_CHANGES (0), SLOW_DEVICES (1000), SLOW_RATE (100), SLOW_PHASE_SECS (10),
#      SLOW_STALLED_PERCENT (10), SLOW_PAD_BYTES (1024: filler per record, so stalled
#      sockets fill), SLOW_PAGE_SIZE (0: the server's default; large pads need smaller pages), PERSONAL_USERS (1000), PERSONAL_RATE (100),
#      PERSONAL_MANY_USERS (10000), PERSONAL_MANY_RATE (10), PERSONAL_SECS (30),
#      SERVER_BIN (target/release/syncline), SIM_BIN (target/release/syncline-sim): when both
#      are given nothing is built (e.g. a simulator of another commit against the same server),
#      SCENARIOS ("initial-sync latency-floor latency-1000x10 latency-1000x100 fanout-wide
#                 fanout-burst idle storm slow personal latency-channel mutations-open
#                 mutations-max": which to run)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

OUT=${OUT:-benches/results/scenarios}
SIM_CPU=${SIM_CPU:-1}
LOAD_CPU=$SIM_CPU
DEVICE_PORT=${DEVICE_PORT:-7700}
GRPC_PORT=${GRPC_PORT:-7701}
RECORDS=${RECORDS:-10000}
LATENCY_DEVICES=${LATENCY_DEVICES:-1000}
LATENCY_CHANGES=${LATENCY_CHANGES:-1000}
LATENCY_RATE=${LATENCY_RATE:-100}
LATENCY_RUNS=${LATENCY_RUNS:-3}
SYNC_REPEAT=${SYNC_REPEAT:-10}
IDLE_DEVICES=${IDLE_DEVICES:-10000}
CHANNEL_RUNS=${CHANNEL_RUNS:-2}
MUT_DEVICES=${MUT_DEVICES:-100}
MUT_WRITERS=${MUT_WRITERS:-10}
MUT_RATE=${MUT_RATE:-50}
MUT_COUNT=${MUT_COUNT:-1000}
MUT_IN_FLIGHT=${MUT_IN_FLIGHT:-8}
MUT_MAX_COUNT=${MUT_MAX_COUNT:-3000}
WIDE_DEVICES=${WIDE_DEVICES:-10000}
WIDE_CHANGES=${WIDE_CHANGES:-100}
WIDE_RATE=${WIDE_RATE:-10}
FANOUT_DEVICES=${FANOUT_DEVICES:-1000}
FANOUT_CHANGES=${FANOUT_CHANGES:-2000}
FANOUT_IN_FLIGHT=${FANOUT_IN_FLIGHT:-2000}
STORM_DEVICES=${STORM_DEVICES:-10000}
STORM_CHANGES=${STORM_CHANGES:-0}
SLOW_DEVICES=${SLOW_DEVICES:-1000}
SLOW_RATE=${SLOW_RATE:-100}
SLOW_PHASE_SECS=${SLOW_PHASE_SECS:-10}
SLOW_STALLED_PERCENT=${SLOW_STALLED_PERCENT:-10}
SLOW_PAD_BYTES=${SLOW_PAD_BYTES:-1024}
SLOW_PAGE_SIZE=${SLOW_PAGE_SIZE:-0}
PERSONAL_USERS=${PERSONAL_USERS:-1000}
PERSONAL_RATE=${PERSONAL_RATE:-100}
PERSONAL_MANY_USERS=${PERSONAL_MANY_USERS:-10000}
PERSONAL_MANY_RATE=${PERSONAL_MANY_RATE:-10}
PERSONAL_SECS=${PERSONAL_SECS:-30}
SETTLE_SECS=${SETTLE_SECS:-5}
QUIET_WAIT_SECS=${QUIET_WAIT_SECS:-900}
SCENARIOS=${SCENARIOS:-initial-sync latency-floor latency-1000x10 latency-1000x100 fanout-wide fanout-burst idle storm slow personal latency-channel mutations-open mutations-max}
# Hard limits (seconds): a server process lives at most SERVER_MAX_SECS; each scenario stops
# itself after its --max-secs, and `timeout` kills it SIM_GRACE_SECS later if it has not.
SERVER_MAX_SECS=900
SCENARIO_MAX_SECS=300
SIM_GRACE_SECS=30

URL=ws://127.0.0.1:$DEVICE_PORT/v1/sync
GRPC=http://127.0.0.1:$GRPC_PORT
RUN_LOG=$OUT/run.txt
release_binaries
SERVER_COMM=${SERVER_BIN##*/}
SERVER_COMM=${SERVER_COMM:0:15}
mkdir -p "$OUT"
DATA=$(mktemp -d /tmp/syncline-scenarios.XXXXXX)
on_exit "rm -rf '$DATA'"

# start_syncline LOG [SERVE_ARGS...]: a fresh server process on $DATA (the demo app with
# $RECORDS records) pinned to core $SRV_CPU; further arguments go to `syncline serve` (e.g.
# --config FILE --data-dir DIR). Sets SERVER_PID once both ports listen (the first start
# seeds the demo app, so it may take a while).
start_syncline() {
  local log=$1
  shift
  SYNCLINE_DATA_DIR=$DATA SYNCLINE_DEVICE_ADDR=127.0.0.1:$DEVICE_PORT SYNCLINE_GRPC_ADDR=127.0.0.1:$GRPC_PORT SYNCLINE_ADMIN_ADDR=127.0.0.1:0 \
    SYNCLINE_DEMO_RECORDS=$RECORDS start_server "$log" "$SERVER_COMM" "$DEVICE_PORT $GRPC_PORT" "$SERVER_BIN" serve "$@"
}

# Prints the demo CRM channel's gRPC URL, which the server logs at start (on a port of its
# choosing), from the server log $1.
demo_channel_url() {
  wait_for_log "$1" 'demo app.*http://127\.0\.0\.1:[0-9]+' 10 | grep -oE 'http://127\.0\.0\.1:[0-9]+' | head -1
}

selected() {
  in_list "$SCENARIOS" "$1"
}

sim() {
  pinned "$SIM_CPU" $((SCENARIO_MAX_SECS + SIM_GRACE_SECS)) "$SIM_BIN" "$@" --max-secs "$SCENARIO_MAX_SECS"
}

{
  run_header simulator
  echo "binaries: $SERVER_BIN, $SIM_BIN"
  echo "demo records: $RECORDS"
} >"$RUN_LOG"
cat "$RUN_LOG"

if selected initial-sync; then
  echo "== initial-sync"
  wait_quiet initial-sync
  start_syncline "$OUT/server-initial-sync.log"
  sim initial-sync --url "$URL" --source Account --page-size 500 --window 4 --repeat "$SYNC_REPEAT" \
    --server-pid "$SERVER_PID" --json-out "$OUT/initial-sync.json"
  stop_server
fi

# latency NAME DEVICES CHANGES RATE [VIA]: the fanout scenario; VIA ingest (default) pushes
# with Ingest; channel creates the records through the demo CRM channel.
latency() {
  local via=${5:-ingest} log="$OUT/server-latency-$1.log" channel_args=()
  echo "== fanout $1: $2 devices x $3 changes at $4/s via $via"
  wait_quiet "latency $1"
  start_syncline "$log"
  if [[ $via == channel ]]; then
    channel_args=(--via channel --channel "$(demo_channel_url "$log")")
  fi
  sim fanout --url "$URL" --grpc "$GRPC" "${channel_args[@]}" --devices "$2" --changes "$3" --rate "$4" \
    --server-pid "$SERVER_PID" --json-out "$OUT/latency-$1.json"
  stop_server
}
if selected latency-floor; then
  latency floor 1 100 10
fi
if selected latency-1000x10; then
  latency "${LATENCY_DEVICES}x10" "$LATENCY_DEVICES" 100 10
fi
if selected fanout-wide; then
  latency "${WIDE_DEVICES}x${WIDE_RATE}" "$WIDE_DEVICES" "$WIDE_CHANGES" "$WIDE_RATE"
fi
if selected latency-1000x100; then
  for run in $(seq 1 "$LATENCY_RUNS"); do
    latency "${LATENCY_DEVICES}x${LATENCY_RATE}-$run" "$LATENCY_DEVICES" "$LATENCY_CHANGES" "$LATENCY_RATE"
  done
fi

if selected fanout-burst; then
  echo "== fanout-burst: $FANOUT_DEVICES devices x $FANOUT_CHANGES changes back to back"
  wait_quiet fanout-burst
  start_syncline "$OUT/server-fanout-burst.log"
  sim fanout --url "$URL" --grpc "$GRPC" --devices "$FANOUT_DEVICES" --changes "$FANOUT_CHANGES" --rate 0 \
    --max-in-flight "$FANOUT_IN_FLIGHT" --server-pid "$SERVER_PID" --json-out "$OUT/fanout-burst-${FANOUT_DEVICES}x${FANOUT_CHANGES}.json"
  stop_server
fi

if selected latency-channel; then
  for run in $(seq 1 "$CHANNEL_RUNS"); do
    for via in ingest channel; do
      latency "$via-${LATENCY_DEVICES}x${LATENCY_RATE}-$run" "$LATENCY_DEVICES" "$LATENCY_CHANGES" "$LATENCY_RATE" "$via"
    done
  done
fi

# mutations NAME COUNT RATE IN_FLIGHT: MUT_WRITERS writers, MUT_DEVICES subscribers.
mutations() {
  echo "== mutations $1: $2 creates from $MUT_WRITERS writers at rate $3 (0: closed loop), $4 in flight per writer"
  wait_quiet "mutations $1"
  start_syncline "$OUT/server-mutations-$1.log"
  sim mutations --url "$URL" --devices "$MUT_DEVICES" --writers "$MUT_WRITERS" --mutations "$2" --rate "$3" \
    --in-flight "$4" --server-pid "$SERVER_PID" --json-out "$OUT/mutations-$1.json"
  stop_server
}
if selected mutations-open; then
  # In flight: enough that a writer never waits at this rate unless the server falls behind.
  mutations "open-${MUT_RATE}" "$MUT_COUNT" "$MUT_RATE" 64
fi
if selected mutations-max; then
  mutations "max-${MUT_WRITERS}x${MUT_IN_FLIGHT}" "$MUT_MAX_COUNT" 0 "$MUT_IN_FLIGHT"
fi

if selected idle; then
  echo "== idle"
  wait_quiet idle
  start_syncline "$OUT/server-idle.log"
  sim idle --url "$URL" --devices "$IDLE_DEVICES" --settle-secs "$SETTLE_SECS" --server-pid "$SERVER_PID" \
    --json-out "$OUT/idle.json"
  stop_server
fi

if selected storm; then
  echo "== storm: $STORM_DEVICES devices disconnect and resume at once, $STORM_CHANGES changes during"
  wait_quiet storm
  start_syncline "$OUT/server-storm.log"
  sim storm --url "$URL" --grpc "$GRPC" --devices "$STORM_DEVICES" --changes-during "$STORM_CHANGES" \
    --server-pid "$SERVER_PID" --json-out "$OUT/storm-$STORM_DEVICES.json"
  stop_server
fi

if selected slow; then
  echo "== slow: $SLOW_DEVICES devices at $SLOW_RATE/s, $SLOW_STALLED_PERCENT% stalled in the second phase"
  wait_quiet slow
  start_syncline "$OUT/server-slow.log"
  sim slow --url "$URL" --grpc "$GRPC" --devices "$SLOW_DEVICES" --rate "$SLOW_RATE" \
    --phase-secs "$SLOW_PHASE_SECS" --stalled-percent "$SLOW_STALLED_PERCENT" \
    --pad-bytes "$SLOW_PAD_BYTES" --page-size "$SLOW_PAGE_SIZE" \
    --server-pid "$SERVER_PID" --json-out "$OUT/slow-$SLOW_DEVICES-pad$SLOW_PAD_BYTES.json"
  stop_server
fi

# personal NAME USERS RATE: USERS devices, one per user (backend-token logins), RATE changes/s
# for PERSONAL_SECS seconds over their partitions.
personal() {
  local dir="$DATA/personal-$1" secret
  echo "== personal $1: $2 users x $3 changes/s for $PERSONAL_SECS s"
  wait_quiet "personal $1"
  mkdir -p "$dir"
  secret=$(head -c 48 /dev/urandom | base64 -w0)
  cat >"$dir/syncline.toml" <<TOML
[auth]
backend_token_secret = "$secret"
[sources.Personal]
partitioning = "user"
capture = "ingest"
TOML
  start_syncline "$OUT/server-personal-$1.log" --config "$dir/syncline.toml" --data-dir "$dir"
  SYNCLINE_BACKEND_TOKEN_SECRET=$secret sim personal --url "$URL" --grpc "$GRPC" --source Personal \
    --users "$2" --rate "$3" --changes $(($3 * PERSONAL_SECS)) --server-pid "$SERVER_PID" \
    --json-out "$OUT/personal-$1.json"
  stop_server
}
if selected personal; then
  personal "${PERSONAL_USERS}x${PERSONAL_RATE}" "$PERSONAL_USERS" "$PERSONAL_RATE"
  personal "${PERSONAL_MANY_USERS}x${PERSONAL_MANY_RATE}" "$PERSONAL_MANY_USERS" "$PERSONAL_MANY_RATE"
fi

echo "results in $OUT"
