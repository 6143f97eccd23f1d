#!/usr/bin/env bash
# What `/metrics` costs, in one run (issue 15): the admin plane must not disturb push.
#
#   scrape  GET /metrics timed SCRAPES times with no device connected, then again with
#           SCRAPE_DEVICES (15,000) idle subscribed devices held by `syncline-sim idle`:
#           median, p99 and max scrape time and the body size, and their ratio.
#   fanout  same-run pairs of `syncline-sim fanout` (FANOUT_DEVICES devices x FANOUT_CHANGES
#           changes at FANOUT_RATE/s), the arms of ARMS: `after` (this tree, no admin client),
#           `console` (the web console's dashboard open in headless Chromium, its live stream
#           and charts updating every second, and /metrics scraped every second, through the
#           run), `events` (the dashboard's event stream held by curl and /metrics scraped: the
#           server-side load of `console` without a browser), `scraped` (/metrics only),
#           and, when BEFORE_BIN names a server built without
#           the instrumentation, `before`: latency p99 and server CPU per delivery of each
#           arm, the arms' order rotated every round.
#
# Each server is fresh (its own data directory), pinned to $SRV_CPU with the simulator and
# the scraper (curl) on $LOAD_CPU, bounded by `timeout`, on loopback ports, and stopped by its
# PID (benches/load/lib.sh). Results: $OUT/run.txt, scrape-*.txt (one "seconds bytes" line per
# scrape), fanout-<arm>-r<round>.json (syncline-sim reports) and $OUT/summary.md.
#
# usage: benches/metrics-scrape.sh
# env: OUT (benches/results/metrics-scrape), SERVER_BIN, SIM_BIN (built unless both given),
#      BEFORE_BIN (optional), SCRAPE_DEVICES (15000), SCRAPES (200), FANOUT_DEVICES (1000),
#      FANOUT_CHANGES (1500), FANOUT_RATE (100), ROUNDS (3), PARTS ("scrape fanout"),
#      ARMS ("after console events", plus "before" with BEFORE_BIN; also "scraped"),
#      QUIET_WAIT_SECS (120), DEVICE_PORT (7710; gRPC and admin take the next two),
#      BROWSER_CPU (the console arm's browser core: $LOAD_CPU), BROWSER_CPU_QUOTA_US (20000)
set -euo pipefail
source "$(dirname "$0")/load/lib.sh"

OUT=${OUT:-benches/results/metrics-scrape}
SCRAPE_DEVICES=${SCRAPE_DEVICES:-15000}
SCRAPES=${SCRAPES:-200}
FANOUT_DEVICES=${FANOUT_DEVICES:-1000}
FANOUT_CHANGES=${FANOUT_CHANGES:-1500}
FANOUT_RATE=${FANOUT_RATE:-100}
ROUNDS=${ROUNDS:-3}
PARTS=${PARTS:-scrape fanout}
ARMS=${ARMS:-after console events}
ADMIN_PASSWORD=bench-$RANDOM-$RANDOM-$RANDOM
QUIET_WAIT_SECS=${QUIET_WAIT_SECS:-120}
DEVICE_PORT=${DEVICE_PORT:-7710}
GRPC_PORT=$((DEVICE_PORT + 1))
ADMIN_PORT=$((DEVICE_PORT + 2))
SERVER_MAX_SECS=900
SIM_MAX_SECS=400
URL=ws://127.0.0.1:$DEVICE_PORT/v1/sync
GRPC=http://127.0.0.1:$GRPC_PORT
METRICS=http://127.0.0.1:$ADMIN_PORT/metrics
RUN_LOG=$OUT/run.txt

frozen_release_binaries
AFTER_BIN=$SERVER_BIN
if [[ -n ${BEFORE_BIN:-} ]]; then
  [[ -x $BEFORE_BIN ]] || die "BEFORE_BIN is not an executable: $BEFORE_BIN"
  # start_server checks the process name: the copy keeps this tree's binary name.
  before_dir=$(mktemp -d /tmp/syncline-metrics-before.XXXXXX)
  on_exit "rm -rf '$before_dir'"
  cp "$BEFORE_BIN" "$before_dir/${AFTER_BIN##*/}"
  BEFORE_BIN=$before_dir/${AFTER_BIN##*/}
fi
DATA_ROOT=$(mktemp -d /tmp/syncline-metrics-scrape.XXXXXX)
on_exit "rm -rf '$DATA_ROOT'"
DASHBOARD_PID=
on_exit '[[ -z $DASHBOARD_PID ]] || kill "$DASHBOARD_PID" 2>/dev/null'
mkdir -p "$OUT"
{
  run_header "simulator and scraper"
  echo "binaries: after $AFTER_BIN, before ${BEFORE_BIN:-none}, sim $SIM_BIN"
  echo "open files: $(ulimit -n)"
} >"$RUN_LOG"
cat "$RUN_LOG"

# start BINARY LOG: a fresh server with its own data directory and /metrics open.
start() {
  local data
  data=$(mktemp -d "$DATA_ROOT/data.XXXXXX")
  SYNCLINE_DATA_DIR=$data SYNCLINE_DEVICE_ADDR=127.0.0.1:$DEVICE_PORT SYNCLINE_GRPC_ADDR=127.0.0.1:$GRPC_PORT \
    SYNCLINE_ADMIN_ADDR=127.0.0.1:$ADMIN_PORT SYNCLINE_ADMIN_METRICS_PUBLIC=true SYNCLINE_DEMO_RECORDS=10000 \
    SYNCLINE_ADMIN_PASSWORD=$ADMIN_PASSWORD \
    start_server "$2" "$(basename "$1" | cut -c1-15)" "$DEVICE_PORT $GRPC_PORT $ADMIN_PORT" "$1" serve
}

sim() {
  pinned "$LOAD_CPU" $((SIM_MAX_SECS + 30)) "$SIM_BIN" "$@" --max-secs "$SIM_MAX_SECS"
}

# scrapes COUNT FILE: COUNT scrapes back to back, one "seconds bytes" line each, in FILE.
scrapes() {
  local i
  : >"$2"
  for ((i = 0; i < $1; i++)); do
    taskset -c "$LOAD_CPU" curl -sf -o /dev/null -w '%{time_total} %{size_download}\n' --max-time 10 "$METRICS" >>"$2"
  done
}

# connections: the server's open device connections, from /metrics (0 when unreadable).
connections() {
  curl -sf --max-time 10 "$METRICS" | awk '$1 == "syncline_connections" { print $2 }' || echo 0
}

# scrape_stats FILE: median, p99 and max time (ms) and median size of a scrapes file.
scrape_stats() {
  python3 - "$1" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
times = sorted(float(t) * 1000 for t, _ in rows)
sizes = [int(s) for _, s in rows]
p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
print(f"{len(times)} scrapes: median {statistics.median(times):.2f} ms, p99 {p99:.2f} ms, max {times[-1]:.2f} ms, body {statistics.median(sizes) / 1024:.1f} KiB")
EOF
}

if in_list "$PARTS" scrape; then
  echo "== scrape: 0 then $SCRAPE_DEVICES devices"
  wait_quiet scrape
  start "$AFTER_BIN" "$OUT/server-scrape.log"
  scrapes "$SCRAPES" "$OUT/scrape-0.txt"
  sim idle --url "$URL" --devices "$SCRAPE_DEVICES" --settle-secs 90 --server-pid "$SERVER_PID" \
    --json-out "$OUT/idle.json" >"$OUT/sim-idle.log" 2>&1 &
  idle_pid=$!
  for ((tries = 0; tries < 300; tries++)); do
    held=$(connections)
    held=${held:-0}
    if ((${held%.*} >= SCRAPE_DEVICES)); then break; fi
    kill -0 "$idle_pid" 2>/dev/null || die "syncline-sim idle ended early; see $OUT/sim-idle.log"
    sleep 1
  done
  echo "connections held: $held" | tee -a "$RUN_LOG"
  scrapes "$SCRAPES" "$OUT/scrape-$SCRAPE_DEVICES.txt"
  wait "$idle_pid" || echo "syncline-sim idle exited with $?" >>"$RUN_LOG"
  stop_server
  {
    echo "scrape, no device: $(scrape_stats "$OUT/scrape-0.txt")"
    echo "scrape, $held devices: $(scrape_stats "$OUT/scrape-$SCRAPE_DEVICES.txt")"
  } | tee -a "$OUT/summary.md"
fi

# The browser's CPU cap (cgroup v1 `cpu` controller), in µs per 100 ms period: the browser
# stands for an operator's browser, which runs on another machine. On this 2-core machine,
# uncapped, it takes the simulator's core, and the simulator's receive delays (what latency
# is measured with) would measure Chromium's rendering, not the server. The server serves
# everything the page asks for either way: the page's log lists its requests by path.
BROWSER_CPU_QUOTA_US=${BROWSER_CPU_QUOTA_US:-20000}
BROWSER_CGROUP=/sys/fs/cgroup/cpu/syncline-bench-browser-$$
if mkdir "$BROWSER_CGROUP" 2>/dev/null && [[ -w $BROWSER_CGROUP/cpu.cfs_quota_us ]]; then
  on_exit "rmdir '$BROWSER_CGROUP' 2>/dev/null"
  echo "browser: capped at $BROWSER_CPU_QUOTA_US µs per 100 ms of CPU ($BROWSER_CGROUP)" >>"$RUN_LOG"
else
  BROWSER_CGROUP=
  echo "browser: no cgroup v1 cpu controller to cap it; under SCHED_IDLE only" >>"$RUN_LOG"
fi

# The core the browser runs on: the simulator's (default) or the server's ($SRV_CPU), each a
# stand-in for an operator's machine that a 2-core box does not have.
BROWSER_CPU=${BROWSER_CPU:-$LOAD_CPU}
echo "browser: on core $BROWSER_CPU under SCHED_IDLE" >>"$RUN_LOG"

# dashboard LOG: the console's dashboard in headless Chromium on $BROWSER_CPU under SCHED_IDLE (it
# runs only when the core is otherwise idle, and a waking simulator preempts it at once), logged
# in and live (its PID in DASHBOARD_PID), then under the CPU cap above (it starts uncapped:
# the page loads before the simulator starts), for at most the simulator's whole run.
dashboard() {
  [[ -d server/console/node_modules/playwright-core ]] || (cd server/console && npm ci --no-audit --no-fund >/dev/null)
  # The cgroup is joined before exec, so the browser's processes start in it.
  taskset -c "$BROWSER_CPU" chrt --idle 0 bash -c \
    '[[ -z $1 ]] || echo $$ >"$1/cgroup.procs"; shift; exec node "$@"' _ "$BROWSER_CGROUP" \
    benches/load/console-dashboard.mjs "http://127.0.0.1:$ADMIN_PORT" "$ADMIN_PASSWORD" "$((SIM_MAX_SECS + 30))" \
    >"$1" 2>&1 &
  DASHBOARD_PID=$!
  local tries
  [[ -z $BROWSER_CGROUP ]] || echo -1 >"$BROWSER_CGROUP/cpu.cfs_quota_us"
  for ((tries = 0; tries < 600; tries++)); do
    if grep -q '^live$' "$1"; then
      [[ -z $BROWSER_CGROUP ]] || echo "$BROWSER_CPU_QUOTA_US" >"$BROWSER_CGROUP/cpu.cfs_quota_us"
      return 0
    fi
    kill -0 "$DASHBOARD_PID" 2>/dev/null || die "the dashboard did not come up; see $1"
    sleep 0.1
  done
  die "the dashboard was not live within a minute; see $1"
}

# events_stream LOG: the dashboard's server-side load without a browser: signs in as the
# console does (session cookie) and holds GET /v1/admin/events open with curl on $LOAD_CPU
# (its PID in DASHBOARD_PID), for at most the simulator's whole run.
events_stream() {
  local jar=$DATA_ROOT/cookies.txt
  taskset -c "$LOAD_CPU" curl -sf -o /dev/null -c "$jar" -H 'content-type: application/json' \
    -d "{\"name\":\"admin\",\"password\":\"$ADMIN_PASSWORD\"}" "http://127.0.0.1:$ADMIN_PORT/v1/admin/session" ||
    die "cannot sign in to the admin API"
  taskset -c "$LOAD_CPU" curl -sfN -b "$jar" --max-time "$((SIM_MAX_SECS + 30))" \
    "http://127.0.0.1:$ADMIN_PORT/v1/admin/events" >"$1" 2>&1 &
  DASHBOARD_PID=$!
}

# fanout_run ARM ROUND: one fanout run of ARM (before, after, scraped, console, events:
# /metrics scraped and the dashboard's event stream held by curl, no browser).
fanout_run() {
  local arm=$1 round=$2 binary=$AFTER_BIN scraper=
  DASHBOARD_PID=
  if [[ $arm == before ]]; then binary=$BEFORE_BIN; fi
  echo "== fanout round $round: $arm"
  wait_quiet "fanout $arm r$round"
  start "$binary" "$OUT/server-fanout-$arm-r$round.log"
  if [[ $arm == console ]]; then dashboard "$OUT/dashboard-r$round.log"; fi
  if [[ $arm == events ]]; then events_stream "$OUT/events-r$round.txt"; fi
  if [[ $arm == scraped || $arm == console || $arm == events ]]; then
    # Every second, for at most the simulator's whole run, by one curl process on a kept-alive
    # connection (as Prometheus scrapes; a curl started every second would cost the
    # simulator's core more than the scrape costs the server); stopped by its PID after it.
    local urls=()
    for ((i = 0; i < SIM_MAX_SECS; i++)); do urls+=("$METRICS"); done
    taskset -c "$LOAD_CPU" curl -s --rate 1/s --max-time 5 -w '%{stderr}%{time_total} %{size_download}\n' "${urls[@]}" \
      >/dev/null 2>"$OUT/scrape-fanout-$arm-r$round.txt" &
    scraper=$!
  fi
  sim fanout --url "$URL" --grpc "$GRPC" --devices "$FANOUT_DEVICES" --changes "$FANOUT_CHANGES" \
    --rate "$FANOUT_RATE" --server-pid "$SERVER_PID" --json-out "$OUT/fanout-$arm-r$round.json" \
    >"$OUT/sim-fanout-$arm-r$round.log" 2>&1
  if [[ -n $scraper ]]; then
    kill "$scraper" 2>/dev/null || true
    wait "$scraper" 2>/dev/null || true
  fi
  if [[ -n $DASHBOARD_PID ]]; then
    kill "$DASHBOARD_PID" 2>/dev/null || true
    wait "$DASHBOARD_PID" 2>/dev/null || true
  fi
  stop_server
}

if in_list "$PARTS" fanout; then
  arms=$ARMS
  if [[ -n ${BEFORE_BIN:-} ]] && ! in_list "$arms" before; then arms="before $arms"; fi
  read -r -a order <<<"$arms"
  for round in $(seq 1 "$ROUNDS"); do
    for ((k = 0; k < ${#order[@]}; k++)); do
      fanout_run "${order[$(((k + round - 1) % ${#order[@]}))]}" "$round"
    done
  done
  python3 - "$OUT" "$arms" <<'EOF' | tee -a "$OUT/summary.md"
import glob, json, os, statistics, sys
out, arms = sys.argv[1], sys.argv[2].split()
figures = {}
for arm in arms:
    for path in sorted(glob.glob(os.path.join(out, f"fanout-{arm}-r*.json"))):
        report = json.load(open(path))
        figures.setdefault(arm, []).append((report["latency"]["p99_ms"], report["server"]["cpu_us_per_delivered"]))
print("| arm | runs | latency p99 ms (each) | median | CPU µs/delivery (each) | median |")
print("|---|---|---|---|---|---|")
medians = {}
for arm in arms:
    rows = figures.get(arm, [])
    p99s, cpus = [r[0] for r in rows], [r[1] for r in rows]
    medians[arm] = (statistics.median(p99s), statistics.median(cpus))
    print(f"| {arm} | {len(rows)} | {', '.join(f'{v:.2f}' for v in p99s)} | {medians[arm][0]:.2f} | "
          f"{', '.join(f'{v:.2f}' for v in cpus)} | {medians[arm][1]:.2f} |")
def ratio(a, b):
    return f"p99 x{medians[a][0] / medians[b][0]:.3f}, CPU/delivery x{medians[a][1] / medians[b][1]:.3f}"
print()
for arm in ("scraped", "console", "events"):
    if arm in medians:
        print(f"{arm} / after: {ratio(arm, 'after')}")
if "before" in medians:
    print(f"after / before: {ratio('after', 'before')}")
EOF
  for file in "$OUT"/scrape-fanout-*.txt; do
    echo "scrapes during fanout ($(basename "$file")): $(scrape_stats "$file")" | tee -a "$OUT/summary.md"
  done
fi
