#!/usr/bin/env bash
# Runs the fan-out baselines (loopback only): a bare tokio-tungstenite broadcast server
# (`tt`, benches/baselines/tt-broadcast) and a minimal Node `ws` broadcast server (`node-ws`,
# benches/baselines/node-ws), each driven by `baseline-loadgen` through the same scenarios.
#
# For every scenario and server: a fresh server process pinned to core $SRV_CPU, the load
# generator pinned to core $LG_CPU, one JSON line appended to $OUT, the server stopped by its
# PID. Every process started here runs under `timeout`. Scenarios run one after the other
# with both servers back to back, so the two are measured minutes apart.
#
# Scenarios (sizes overridable, see below):
#   fanout       FANOUT_CONNS (1000) subscribers, FANOUT_MSGS (1000) messages at FANOUT_RATE (100)/s
#   fanout-wide  WIDE_CONNS (10000) subscribers, WIDE_MSGS (100) messages at WIDE_RATE (10)/s
#   burst        BURST_CONNS (1000) subscribers, BURST_MSGS (2000) messages as fast as possible
#   idle         IDLE_CONNS (15000) subscribers, IDLE_SECS (5) s idle: RSS per connection
#
# The numbers only mean something on an otherwise idle machine: before each run the script
# waits (at most QUIET_WAIT_SECS) until both pinned cores are under QUIET_MAX_PCT % busy, and
# notes what it saw (and the load average) in ${OUT%.jsonl}.txt.
#
# usage: benches/baselines/run.sh [--quick]
#   --quick  small sizes (a smoke test of a minute or two); results go to
#            target/baselines-quick.jsonl unless OUT is set
# env: OUT (benches/results/baselines/baselines.jsonl), SERVERS ("tt node-ws"),
#      SCENARIOS ("fanout fanout-wide burst idle"), PORT (9100), SRV_CPU (0), LG_CPU (1),
#      FANOUT_CONNS, FANOUT_MSGS, FANOUT_RATE, WIDE_CONNS, WIDE_MSGS, WIDE_RATE,
#      BURST_CONNS, BURST_MSGS, IDLE_CONNS, IDLE_SECS, QUIET_MAX_PCT (10), QUIET_WAIT_SECS (300)
set -euo pipefail

QUICK=0
for arg in "$@"; do
  case $arg in
    --quick) QUICK=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done
# Building, pinning, the quiet check and starting and stopping servers.
source "$(dirname "$0")/../load/lib.sh"

if ((QUICK)); then
  OUT=${OUT:-target/baselines-quick.jsonl}
  FANOUT_CONNS=${FANOUT_CONNS:-200} FANOUT_MSGS=${FANOUT_MSGS:-200} FANOUT_RATE=${FANOUT_RATE:-100}
  WIDE_CONNS=${WIDE_CONNS:-1000} WIDE_MSGS=${WIDE_MSGS:-20} WIDE_RATE=${WIDE_RATE:-10}
  BURST_CONNS=${BURST_CONNS:-200} BURST_MSGS=${BURST_MSGS:-500}
  IDLE_CONNS=${IDLE_CONNS:-1000} IDLE_SECS=${IDLE_SECS:-2}
  QUIET_WAIT_SECS=${QUIET_WAIT_SECS:-0}
fi
OUT=${OUT:-benches/results/baselines/baselines.jsonl}
SERVERS=${SERVERS:-tt node-ws}
SCENARIOS=${SCENARIOS:-fanout fanout-wide burst idle}
PORT=${PORT:-9100}
LG_CPU=${LG_CPU:-1}
LOAD_CPU=$LG_CPU
FANOUT_CONNS=${FANOUT_CONNS:-1000} FANOUT_MSGS=${FANOUT_MSGS:-1000} FANOUT_RATE=${FANOUT_RATE:-100}
WIDE_CONNS=${WIDE_CONNS:-10000} WIDE_MSGS=${WIDE_MSGS:-100} WIDE_RATE=${WIDE_RATE:-10}
BURST_CONNS=${BURST_CONNS:-1000} BURST_MSGS=${BURST_MSGS:-2000}
IDLE_CONNS=${IDLE_CONNS:-15000} IDLE_SECS=${IDLE_SECS:-5}
QUIET_WAIT_SECS=${QUIET_WAIT_SECS:-300}
# Hard limits (seconds): a server lives at most SERVER_MAX_SECS; the load generator stops
# itself after LG_MAX_SECS and `timeout` kills it LG_GRACE_SECS later if it has not.
SERVER_MAX_SECS=600
SERVER_READY_SECS=10
LG_MAX_SECS=300
LG_GRACE_SECS=30
LOGS=target/baselines-logs
RUN_LOG=${OUT%.jsonl}.txt
NODE_DIR=benches/baselines/node-ws

cargo build --release --locked -p syncline-benches --bin baseline-tt --bin baseline-loadgen
if in_list "$SERVERS" node-ws && [[ ! -d $NODE_DIR/node_modules/ws ]]; then
  (cd "$NODE_DIR" && timeout 300 npm ci --no-audit --no-fund)
fi
mkdir -p "$(dirname "$OUT")" "$LOGS"

# start_baseline NAME LOG: starts server NAME pinned to $SRV_CPU; sets SERVER_PID once it listens.
start_baseline() {
  case $1 in
    tt) start_server "$2" baseline-tt "$PORT" target/release/baseline-tt --port "$PORT" ;;
    node-ws) start_server "$2" node "$PORT" node "$NODE_DIR/server.js" "$PORT" ;;
    *) die "unknown server $1 (known: tt node-ws)" ;;
  esac
}

# run_one SERVER SCENARIO CONNS MSGS RATE IDLE_SECS
run_one() {
  local server=$1 scenario=$2
  echo "== $scenario $server: $3 subscribers, $4 messages at ${5}/s (0 = as fast as possible)" >&2
  wait_quiet "$scenario $server"
  start_baseline "$server" "$LOGS/$server-$scenario.log"
  if ! pinned "$LG_CPU" $((LG_MAX_SECS + LG_GRACE_SECS)) target/release/baseline-loadgen \
    --server "127.0.0.1:$PORT" --conns "$3" --msgs "$4" --rate "$5" --idle-secs "$6" \
    --server-pid "$SERVER_PID" --server-core "$SRV_CPU" --loadgen-core "$LG_CPU" \
    --label "$server" --scenario "$scenario" --json-out "$OUT" --max-secs "$LG_MAX_SECS" >/dev/null; then
    echo "$scenario $server: the load generator failed (no result)" | tee -a "$RUN_LOG" >&2
  fi
  stop_server
}

header=$(
  run_header "load generator"
  if in_list "$SERVERS" node-ws; then
    echo "node: $(node --version), ws $(node -p "require('./$NODE_DIR/node_modules/ws/package.json').version")"
  fi
  echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
)
echo "$header" | tee -a "$RUN_LOG"

for scenario in $SCENARIOS; do
  for server in $SERVERS; do
    case $scenario in
      fanout) run_one "$server" "$scenario" "$FANOUT_CONNS" "$FANOUT_MSGS" "$FANOUT_RATE" 2 ;;
      fanout-wide) run_one "$server" "$scenario" "$WIDE_CONNS" "$WIDE_MSGS" "$WIDE_RATE" 2 ;;
      burst) run_one "$server" "$scenario" "$BURST_CONNS" "$BURST_MSGS" 0 2 ;;
      idle) run_one "$server" "$scenario" "$IDLE_CONNS" 0 0 "$IDLE_SECS" ;;
      *) echo "unknown scenario $scenario (known: fanout fanout-wide burst idle)" >&2; exit 2 ;;
    esac
  done
done

echo "results appended to $OUT (run log: $RUN_LOG); table: python3 benches/baselines/table.py $OUT"
