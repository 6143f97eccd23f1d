# shellcheck shell=bash
# Shared helpers of the load scripts (benches/load/*.sh) and of the fan-out baselines
# (benches/baselines/run.sh). Sourced, never run:
#
#   source "$(dirname "$0")/lib.sh"              # from benches/load/
#   source "$(dirname "$0")/../load/lib.sh"      # from benches/baselines/
#
# Sourcing it moves to the repository root (every path the scripts use is relative to it),
# raises the open-files limit to the hard limit (one descriptor per connection), and installs
# the traps: on exit the server started by `start_server` is stopped by its PID and the
# commands given to `on_exit` run; SIGINT and SIGTERM exit through the same path.
#
# What it provides:
#   die MESSAGE                     message on stderr, exit 1
#   in_list LIST WORD               whether WORD is one of the space-separated LIST
#   on_exit COMMAND                 run COMMAND (eval'd) when the script exits
#   pinned CPU SECS COMMAND...      COMMAND pinned to core CPU (taskset), killed after SECS (timeout)
#   release_binaries                SERVER_BIN and SIM_BIN: taken when both are given, built otherwise
#   frozen_release_binaries         the same, then copied aside and exported, for scripts that
#                                   call other scripts: every run uses the same two binaries
#   port_listening PORT             whether something listens on the loopback port PORT
#   start_server LOG COMM PORTS COMMAND...   a server pinned to $SRV_CPU under `timeout`,
#                                   returned once it listens; SERVER_PID is the server itself
#   stop_server                     stops it by its PID and waits for it
#   wait_for_log LOG REGEX SECS     prints the first line of LOG matching REGEX, waiting for it
#   pinned_cores_busy_pct           the busiest pinned core's busy share over 2 s (/proc/stat)
#   wait_quiet LABEL                waits (bounded) until the pinned cores are quiet; notes it in $RUN_LOG
#   run_header ROLE                 the lines that open a run log (commit, date, kernel, cores, rustc)
#   syncline_scenario_of PAIR       Syncline's scenarios.sh scenario for a baseline pair
#   run_baselines OUT SCENARIOS     the baselines' side of a same-run comparison
#   run_syncline OUT SCENARIOS      Syncline's side of it
#   compare_table DIR               the ratio table of a comparison directory (compare.py)
#   run_syncline_beside RUN BASELINES SCENARIO SUMMARY LABEL
#                                   Syncline through SCENARIO into RUN/syncline beside a copy of
#                                   the round's BASELINES; RUN/compare.md, and LABEL with its CPU
#                                   and latency lines appended to SUMMARY
#
# Variables the scripts set before using them:
#   SRV_CPU (0 unless set), LOAD_CPU (the load generator's core, 1 unless set); either may be
#   a taskset list of cores (e.g. 0-1: not pinned on a 2-core machine), set before sourcing,
#   RUN_LOG (the file where wait_quiet notes what it saw), SERVER_MAX_SECS (how long a server
#   may live), SERVER_READY_SECS (how long it may take to listen; 120 unless set),
#   QUIET_MAX_PCT (10) and QUIET_WAIT_SECS (how long wait_quiet waits at most).

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SRV_CPU=${SRV_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
QUIET_MAX_PCT=${QUIET_MAX_PCT:-10}
SERVER_READY_SECS=${SERVER_READY_SECS:-120}
SERVER_PID=
SERVER_TIMEOUT_PID=
EXIT_COMMANDS=()

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

die() {
  echo "$*" >&2
  exit 1
}

in_list() {
  [[ " $1 " == *" $2 "* ]]
}

on_exit() {
  EXIT_COMMANDS+=("$1")
}

run_exit_commands() {
  local command
  stop_server
  for command in "${EXIT_COMMANDS[@]}"; do
    eval "$command" || true
  done
}
trap run_exit_commands EXIT
trap 'exit 130' INT TERM

pinned() {
  local cpu=$1 secs=$2
  shift 2
  timeout "$secs" taskset -c "$cpu" "$@"
}

# The tree's own server and simulator, built here, unless both are given (e.g. a simulator
# built from another commit against the same server, or a tree edited during a run).
release_binaries() {
  if [[ -z ${SERVER_BIN:-} || -z ${SIM_BIN:-} ]]; then
    cargo build --release --locked -p syncline-server --bin syncline -p syncline-sim --bin syncline-sim
  fi
  SERVER_BIN=${SERVER_BIN:-target/release/syncline}
  SIM_BIN=${SIM_BIN:-target/release/syncline-sim}
  [[ -x $SERVER_BIN && -x $SIM_BIN ]] || die "no server or simulator binary at $SERVER_BIN, $SIM_BIN"
}

# release_binaries, then copies of both in a temporary directory (removed on exit), exported
# as SERVER_BIN and SIM_BIN: the scripts called after this use them, and a rebuild of the
# tree meanwhile does not change what runs. The copies keep their names, so the server's
# process name is the one start_server checks.
frozen_release_binaries() {
  local dir
  release_binaries
  dir=$(mktemp -d /tmp/syncline-load-binaries.XXXXXX)
  on_exit "rm -rf '$dir'"
  cp "$SERVER_BIN" "$SIM_BIN" "$dir/"
  export SERVER_BIN=$dir/${SERVER_BIN##*/} SIM_BIN=$dir/${SIM_BIN##*/}
}

port_listening() {
  ss -ltnH "sport = :$1" | grep -q LISTEN
}

all_ports_listening() {
  local port
  for port in "$@"; do
    port_listening "$port" || return 1
  done
}

# start_server LOG COMM PORTS COMMAND...: starts COMMAND pinned to core $SRV_CPU under
# `timeout $SERVER_MAX_SECS`, its output in LOG, and returns once every port of PORTS
# (space-separated) listens (at most $SERVER_READY_SECS), with SERVER_PID set to the server
# process itself, whose name must be COMM (`timeout` runs it as its child; taskset execs it).
# Exits the script if a port is taken before the start, or if the server exits or does not
# listen in time.
start_server() {
  local log=$1 comm=$2 ports=$3 port tries
  shift 3
  for port in $ports; do
    if port_listening "$port"; then die "port $port is already in use"; fi
  done
  timeout "$SERVER_MAX_SECS" taskset -c "$SRV_CPU" "$@" >"$log" 2>&1 &
  SERVER_TIMEOUT_PID=$!
  tries=$((SERVER_READY_SECS * 10))
  # shellcheck disable=SC2086 # PORTS is a list
  until all_ports_listening $ports; do
    kill -0 "$SERVER_TIMEOUT_PID" 2>/dev/null || die "the server exited; see $log"
    ((tries-- > 0)) || die "the server did not listen on $ports within $SERVER_READY_SECS s; see $log"
    sleep 0.1
  done
  SERVER_PID=$(pgrep -P "$SERVER_TIMEOUT_PID" | head -1)
  [[ -n $SERVER_PID && $(cat "/proc/$SERVER_PID/comm") == "$comm" ]] || die "pid ${SERVER_PID:-?} is not the server ($comm)"
  echo "server pid $SERVER_PID on core $SRV_CPU ($(taskset -pc "$SERVER_PID" | sed 's/.*: //'))" >&2
}

# Stops the server by its PID (or, if it never got that far, its `timeout`, which passes the
# signal on) and waits for it.
stop_server() {
  local pid=${SERVER_PID:-$SERVER_TIMEOUT_PID}
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
  fi
  if [[ -n $SERVER_TIMEOUT_PID ]]; then
    wait "$SERVER_TIMEOUT_PID" 2>/dev/null || true
  fi
  SERVER_PID=
  SERVER_TIMEOUT_PID=
}

wait_for_log() {
  local log=$1 regex=$2 tries=$(($3 * 10)) line
  while ((tries-- > 0)); do
    line=$(grep -aE -m1 "$regex" "$log" 2>/dev/null || true)
    if [[ -n $line ]]; then
      echo "$line"
      return
    fi
    sleep 0.1
  done
  echo "no line matching '$regex' in $log" >&2
  return 1
}

# cpu_numbers LIST: the cores of a taskset core list, one a line (0-2,5: 0 1 2 5).
cpu_numbers() {
  local part
  for part in ${1//,/ }; do
    if [[ $part == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
  done
}

# Busy share = (user+nice+system+irq+softirq+steal) / (that + idle+iowait), per core, from
# two /proc/stat readings 2 s apart; prints the largest among the cores of $SRV_CPU and
# $LOAD_CPU (each a core or a taskset list of cores).
pinned_cores_busy_pct() {
  local cores before after
  cores=$(cpu_numbers "$SRV_CPU,$LOAD_CPU" | sort -un | paste -sd'|')
  before=$(grep -E "^cpu($cores) " /proc/stat)
  sleep 2
  after=$(grep -E "^cpu($cores) " /proc/stat)
  paste <(echo "$before") <(echo "$after") | awk '
    { busy = ($13+$14+$15+$18+$19+$20) - ($2+$3+$4+$7+$8+$9)
      total = busy + ($16+$17) - ($5+$6)
      pct = total > 0 ? 100 * busy / total : 0
      if (pct > max) max = pct }
    END { printf "%.0f\n", max }'
}

# The numbers only mean something on an otherwise idle machine: waits (at most
# QUIET_WAIT_SECS) until neither pinned core is more than QUIET_MAX_PCT % busy, then notes
# what it saw and the load average in $RUN_LOG; runs anyway, with a warning, if they stay busy.
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

# run_header ROLE: commit (dirty when the tree differs from it outside benches/results),
# date, kernel, cores (ROLE names what runs on $LOAD_CPU), rustc.
run_header() {
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!benches/results' || echo ' (dirty)')"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "kernel: $(uname -sr)"
  echo "cpus: $(nproc), server on core $SRV_CPU, $1 on core $LOAD_CPU"
  echo "rustc: $(rustc --version)"
}

# Same-run comparisons (compare.sh, push-interval.sh): a baseline scenario (run.sh) and the
# scenarios.sh scenario that is Syncline's side of it.
#
#   fanout       1,000 subscribers x 1,000 messages at 100/s   Syncline: latency-1000x100
#   fanout-wide  10,000 subscribers x 100 messages at 10/s     Syncline: fanout-wide
#   burst        1,000 subscribers x 2,000 messages at once    Syncline: fanout-burst
#   idle         15,000 idle subscribers                       Syncline: idle
syncline_scenario_of() {
  case $1 in
    fanout) echo latency-1000x100 ;;
    fanout-wide) echo fanout-wide ;;
    burst) echo fanout-burst ;;
    idle) echo idle ;;
    *) die "unknown pair $1 (known: fanout fanout-wide burst idle)" ;;
  esac
}

# run_baselines OUT SCENARIOS: both baseline servers through SCENARIOS, appended to OUT (.jsonl).
run_baselines() {
  OUT=$1 SCENARIOS=$2 IDLE_CONNS=${IDLE_CONNS:-15000} benches/baselines/run.sh
}

# run_syncline OUT SCENARIOS: Syncline through SCENARIOS, one run each, reports in OUT (a directory).
run_syncline() {
  OUT=$1 SCENARIOS=$2 LATENCY_RUNS=1 IDLE_DEVICES=${IDLE_DEVICES:-15000} benches/load/scenarios.sh
}

compare_table() {
  python3 benches/load/compare.py "$1"
}

run_syncline_beside() {
  local run=$1 baselines=$2 scenario=$3 summary=$4 label=$5
  mkdir -p "$run/syncline"
  cp "$baselines" "$run/baselines.jsonl"
  run_syncline "$run/syncline" "$scenario"
  compare_table "$run" >"$run/compare.md"
  {
    echo "$label:"
    grep -E "CPU µs per delivery|latency p50|latency p99|RSS per idle" "$run/compare.md"
  } >>"$summary"
}
