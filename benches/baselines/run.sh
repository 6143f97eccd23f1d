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
# env: OUT (benches/results/baselines.jsonl), SERVERS ("tt node-ws"),
#      SCENARIOS ("fanout fanout-wide burst idle"), PORT (9100), SRV_CPU (0), LG_CPU (1),
#      FANOUT_CONNS, FANOUT_MSGS, FANOUT_RATE, WIDE_CONNS, WIDE_MSGS, WIDE_RATE,
#      BURST_CONNS, BURST_MSGS, IDLE_CONNS, IDLE_SECS, QUIET_MAX_PCT (10), QUIET_WAIT_SECS (300)
set -euo pipefail
cd "$(dirname "$0")/../.."

QUICK=0
for arg in "$@"; do
  case $arg in
    --quick) QUICK=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

if ((QUICK)); then
  OUT=${OUT:-target/baselines-quick.jsonl}
  FANOUT_CONNS=${FANOUT_CONNS:-200} FANOUT_MSGS=${FANOUT_MSGS:-200} FANOUT_RATE=${FANOUT_RATE:-100}
  WIDE_CONNS=${WIDE_CONNS:-1000} WIDE_MSGS=${WIDE_MSGS:-20} WIDE_RATE=${WIDE_RATE:-10}
  BURST_CONNS=${BURST_CONNS:-200} BURST_MSGS=${BURST_MSGS:-500}
  IDLE_CONNS=${IDLE_CONNS:-1000} IDLE_SECS=${IDLE_SECS:-2}
  QUIET_WAIT_SECS=${QUIET_WAIT_SECS:-0}
fi
OUT=${OUT:-benches/results/baselines.jsonl}
SERVERS=${SERVERS:-tt node-ws}
SCENARIOS=${SCENARIOS:-fanout fanout-wide burst idle}
PORT=${PORT:-9100}
SRV_CPU=${SRV_CPU:-0}
LG_CPU=${LG_CPU:-1}
FANOUT_CONNS=${FANOUT_CONNS:-1000} FANOUT_MSGS=${FANOUT_MSGS:-1000} FANOUT_RATE=${FANOUT_RATE:-100}
WIDE_CONNS=${WIDE_CONNS:-10000} WIDE_MSGS=${WIDE_MSGS:-100} WIDE_RATE=${WIDE_RATE:-10}
BURST_CONNS=${BURST_CONNS:-1000} BURST_MSGS=${BURST_MSGS:-2000}
IDLE_CONNS=${IDLE_CONNS:-15000} IDLE_SECS=${IDLE_SECS:-5}
QUIET_MAX_PCT=${QUIET_MAX_PCT:-10}
QUIET_WAIT_SECS=${QUIET_WAIT_SECS:-300}
# Hard limits (seconds): a server lives at most SERVER_MAX_SECS; the load generator stops
# itself after LG_MAX_SECS and `timeout` kills it LG_GRACE_SECS later if it has not.
SERVER_MAX_SECS=600
LG_MAX_SECS=300
LG_GRACE_SECS=30
LOGS=target/baselines-logs
RUN_LOG=${OUT%.jsonl}.txt
NODE_DIR=benches/baselines/node-ws

cargo build --release --locked -p syncline-benches --bin baseline-tt --bin baseline-loadgen
if [[ " $SERVERS " == *" node-ws "* && ! -d $NODE_DIR/node_modules/ws ]]; then
  (cd "$NODE_DIR" && timeout 300 npm ci --no-audit --no-fund)
fi
mkdir -p "$(dirname "$OUT")" "$LOGS"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

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
trap stop_server EXIT
trap 'exit 130' INT TERM

port_listening() {
  ss -ltnH "sport = :$PORT" | grep -q LISTEN
}

# start_server NAME LOG: starts server NAME pinned to $SRV_CPU; sets SERVER_PID once it listens.
start_server() {
  local cmd comm
  case $1 in
    tt) cmd=(target/release/baseline-tt --port "$PORT"); comm=baseline-tt ;;
    node-ws) cmd=(node "$NODE_DIR/server.js" "$PORT"); comm=node ;;
    *) echo "unknown server $1 (known: tt node-ws)" >&2; exit 2 ;;
  esac
  if port_listening; then
    echo "port $PORT is already in use" >&2
    exit 1
  fi
  timeout "$SERVER_MAX_SECS" taskset -c "$SRV_CPU" "${cmd[@]}" >"$2" 2>&1 &
  TIMEOUT_PID=$!
  for _ in $(seq 1 100); do
    if port_listening; then break; fi
    if ! kill -0 "$TIMEOUT_PID" 2>/dev/null; then
      echo "server $1 exited; see $2" >&2
      exit 1
    fi
    sleep 0.1
  done
  port_listening || { echo "server $1 did not start; see $2" >&2; exit 1; }
  # `timeout` runs the server as its child (taskset execs it): measure the server itself.
  SERVER_PID=$(pgrep -P "$TIMEOUT_PID" | head -1)
  [[ $(cat "/proc/$SERVER_PID/comm") == "$comm" ]] || { echo "pid $SERVER_PID is not the $1 server" >&2; exit 1; }
}

# Prints the busier of the two pinned cores' busy share (%) over 2 s, from /proc/stat.
pinned_cores_busy_pct() {
  local before after
  before=$(grep -E "^cpu($SRV_CPU|$LG_CPU) " /proc/stat)
  sleep 2
  after=$(grep -E "^cpu($SRV_CPU|$LG_CPU) " /proc/stat)
  paste <(echo "$before") <(echo "$after") | awk '
    { busy = ($13+$14+$15+$18+$19+$20) - ($2+$3+$4+$7+$8+$9)
      total = busy + ($16+$17) - ($5+$6)
      pct = total > 0 ? 100 * busy / total : 0
      if (pct > max) max = pct }
    END { printf "%.0f\n", max }'
}

# Waits (at most QUIET_WAIT_SECS) until nothing else keeps the pinned cores busy; notes the
# outcome in the run log.
wait_quiet() {
  local label=$1 waited=0 busy
  while :; do
    busy=$(pinned_cores_busy_pct)
    if ((busy <= QUIET_MAX_PCT)); then break; fi
    if ((waited >= QUIET_WAIT_SECS)); then
      echo "$label: WARNING pinned cores still ${busy}% busy after ${waited} s (load average $(cut -d' ' -f1-3 /proc/loadavg)); running anyway" | tee -a "$RUN_LOG" >&2
      return
    fi
    echo "$label: pinned cores ${busy}% busy with other work; waiting" >&2
    sleep 8
    waited=$((waited + 10))
  done
  echo "$label: pinned cores ${busy}% busy before the start (waited ${waited} s, load average $(cut -d' ' -f1-3 /proc/loadavg))" >>"$RUN_LOG"
}

# run_one SERVER SCENARIO CONNS MSGS RATE IDLE_SECS
run_one() {
  local server=$1 scenario=$2
  echo "== $scenario $server: $3 subscribers, $4 messages at ${5}/s (0 = as fast as possible)" >&2
  wait_quiet "$scenario $server"
  start_server "$server" "$LOGS/$server-$scenario.log"
  if ! timeout $((LG_MAX_SECS + LG_GRACE_SECS)) taskset -c "$LG_CPU" target/release/baseline-loadgen \
    --server "127.0.0.1:$PORT" --conns "$3" --msgs "$4" --rate "$5" --idle-secs "$6" \
    --server-pid "$SERVER_PID" --server-core "$SRV_CPU" --loadgen-core "$LG_CPU" \
    --label "$server" --scenario "$scenario" --json-out "$OUT" --max-secs "$LG_MAX_SECS" >/dev/null; then
    echo "$scenario $server: the load generator failed (no result)" | tee -a "$RUN_LOG" >&2
  fi
  stop_server
}

header=$(
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!benches/results' || echo ' (dirty)')"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "kernel: $(uname -sr)"
  echo "cpus: $(nproc), server on core $SRV_CPU, load generator on core $LG_CPU"
  echo "rustc: $(rustc --version)"
  if [[ " $SERVERS " == *" node-ws "* ]]; then
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
