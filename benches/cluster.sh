#!/usr/bin/env bash
# Cluster mode on Redis (issue 16), in one run, every arm on fresh servers and a fresh Redis:
#
#   ingest   `syncline-sim ingest` (records/s through Ingest/Push, no device) at batch sizes
#            INGEST_BATCHES against one node on the embedded store and one node on Redis
#            (AOF, appendfsync always), alternating, ROUNDS times; INGEST_IN_FLIGHT calls in
#            flight at once. With BASE_SERVER_BIN, a third arm `redis_base` runs that build on
#            Redis too.
#   push     `syncline-sim fanout`, FANOUT_DEVICES devices x FANOUT_CHANGES changes at
#            FANOUT_RATE/s, arms alternating ROUNDS times: `embedded` (one node on the embedded
#            store), `redis-1` (one node on Redis: devices and Ingest on it) and `cross` (three
#            nodes on one Redis: Ingest at node 0, the devices on nodes 1 and 2, so every
#            change crosses the node bus) and, with CLUSTER_ARM=1, `cross-cluster` (the same
#            three nodes on a Redis Cluster of three primaries: sharded pub/sub, `SPUBLISH`):
#            push latency p50/p99 of each.
#   spread   `syncline-sim fanout --rate 0` (a burst of SPREAD_CHANGES changes to
#            SPREAD_DEVICES devices): deliveries/s with the devices on one Redis node against
#            spread over three nodes (`spread-1`, `spread-3`), alternating, ROUNDS times.
#   herd     the `spread-1` burst (SPREAD_DEVICES devices on one Redis node, SPREAD_CHANGES
#            changes at once: most devices fall behind and catch up from the log together)
#            with `device.catch_up_reads` at each of HERD_READS, alternating, ROUNDS times:
#            deliveries/s, the node's peak RSS, CPU and catch-ups of each. With BASE_SERVER_BIN
#            (a build before a change), an arm `herd-base` runs that server at its defaults
#            in each round too.
#   failover `syncline-sim fanout` over three nodes on one Redis (AOF), FAILOVER_DEVICES
#            devices spread over all three (`--url` with the three endpoints: a device whose
#            node dies resumes on the next, as behind a load balancer), FAILOVER_CHANGES
#            changes at FAILOVER_RATE/s through Ingest at node 0; FAILOVER_KILL_AFTER seconds
#            into the writes the simulator kills node 2 with SIGKILL (`--kill-pid`): time from
#            the kill until every device of node 2 is connected again and until each is caught
#            up to the head on another node (p50/p99/max), deliveries lost and duplicated.
#            ROUNDS times, each on a fresh Redis and fresh nodes.
#
# Redis and every node run on $SRV_CPU (default: core 0), the simulator on $LOAD_CPU (core 1):
# on this 2-core machine three nodes share one core with Redis, so `spread-3` measures the
# cost of the bus, not extra capacity. Each process is bounded by `timeout` and stopped by
# its PID. Results: $OUT/<part>-<arm>-<batch or round>.json, $OUT/run.txt, $OUT/summary.md.
#
# usage: benches/cluster.sh
# env: OUT (benches/results/cluster), PARTS ("ingest push spread"), ROUNDS (3),
#      INGEST_BATCHES ("1 100 1000"), INGEST_RECORDS_1 (3000), INGEST_RECORDS (100000),
#      INGEST_IN_FLIGHT (1),
#      FANOUT_DEVICES (1000), FANOUT_CHANGES (1000), FANOUT_RATE (100), SPREAD_DEVICES (1500),
#      SPREAD_CHANGES (1000), FAILOVER_DEVICES (3000), FAILOVER_CHANGES (600), FAILOVER_RATE (20),
#      HERD_READS ("512 0": as many as tokio's blocking threads, and the default of four per
#      core), BASE_SERVER_BIN (none), FAILOVER_KILL_AFTER (10), BASE_PORT (7740),
#      REDIS_PORT (7739), CLUSTER_ARM (0), REDIS_CLUSTER_PORT (7730: the cluster's primaries on it and the next two ports, their
#      cluster buses 20 below), SERVER_BIN, SIM_BIN
set -euo pipefail
source "$(dirname "$0")/load/lib.sh"

OUT=${OUT:-benches/results/cluster}
PARTS=${PARTS:-ingest push spread}
ROUNDS=${ROUNDS:-3}
INGEST_BATCHES=${INGEST_BATCHES:-1 100 1000}
INGEST_RECORDS_1=${INGEST_RECORDS_1:-3000}
INGEST_RECORDS=${INGEST_RECORDS:-100000}
INGEST_IN_FLIGHT=${INGEST_IN_FLIGHT:-1}
FANOUT_DEVICES=${FANOUT_DEVICES:-1000}
FANOUT_CHANGES=${FANOUT_CHANGES:-1000}
FANOUT_RATE=${FANOUT_RATE:-100}
SPREAD_DEVICES=${SPREAD_DEVICES:-1500}
SPREAD_CHANGES=${SPREAD_CHANGES:-1000}
FAILOVER_DEVICES=${FAILOVER_DEVICES:-3000}
FAILOVER_CHANGES=${FAILOVER_CHANGES:-600}
FAILOVER_RATE=${FAILOVER_RATE:-20}
FAILOVER_KILL_AFTER=${FAILOVER_KILL_AFTER:-10}
HERD_READS=${HERD_READS:-512 0}
# Extra environment of the nodes the next `cluster` starts (an arm's setting).
NODE_ENV=()
BASE_PORT=${BASE_PORT:-7740}
REDIS_PORT=${REDIS_PORT:-7739}
CLUSTER_ARM=${CLUSTER_ARM:-0}
REDIS_CLUSTER_PORT=${REDIS_CLUSTER_PORT:-7730}
REDIS_CLUSTER_PRIMARIES=3
SERVER_MAX_SECS=600
SIM_MAX_SECS=300
QUIET_WAIT_SECS=${QUIET_WAIT_SECS:-60}
RUN_LOG=$OUT/run.txt
USER_NAME=bench
USER_PASSWORD=bench-$RANDOM-$RANDOM

command -v redis-server >/dev/null || die "redis-server is not installed (apt-get install redis-server)"
frozen_release_binaries
if [[ -n ${BASE_SERVER_BIN:-} ]]; then
  # A frozen copy too, under the server's own name (the process name the scripts check).
  base_dir=$(mktemp -d /tmp/syncline-base-binary.XXXXXX)
  on_exit "rm -rf '$base_dir'"
  cp "$BASE_SERVER_BIN" "$base_dir/syncline"
  BASE_SERVER_BIN=$base_dir/syncline
fi
WORK=$(mktemp -d /tmp/syncline-cluster-bench.XXXXXX)
on_exit "rm -rf '$WORK'"
on_exit 'stop_all'
mkdir -p "$OUT"
{
  run_header "simulator"
  echo "binaries: server $SERVER_BIN, sim $SIM_BIN; redis: $(redis-server --version | head -1)"
} >"$RUN_LOG"
cat "$RUN_LOG"

# One config for every node: a source the simulator pushes to through Ingest, no demo app.
cat >"$WORK/node.toml" <<EOF
[sources.Account]
partitioning = "app"
capture = "ingest"
EOF

PIDS=()

# spawn LOG COMMAND...: COMMAND pinned to $SRV_CPU under `timeout`, its `timeout` PID kept.
spawn() {
  local log=$1
  shift
  timeout "$SERVER_MAX_SECS" taskset -c "$SRV_CPU" "$@" >"$log" 2>&1 &
  PIDS+=($!)
}

# wait_port PORT: until something listens on it (at most 60 s).
wait_port() {
  local tries=600
  until port_listening "$1"; do
    ((tries-- > 0)) || die "nothing listens on port $1 after 60 s (logs in $WORK)"
    sleep 0.1
  done
}

# Stops every process started with spawn (SIGTERM to each `timeout`, which passes it on).
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

start_redis() {
  rm -rf "$WORK/redis" && mkdir -p "$WORK/redis"
  spawn "$WORK/redis.log" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" \
    --appendonly yes --appendfsync always --save "" --daemonize no
  wait_port "$REDIS_PORT"
}

# start_redis_cluster: three durable primaries joined by `redis-cli --cluster create`, ready
# when every primary reports `cluster_state:ok` (at most 60 s).
start_redis_cluster() {
  local i port tries
  local -a addresses=()
  for ((i = 0; i < REDIS_CLUSTER_PRIMARIES; i++)); do
    port=$((REDIS_CLUSTER_PORT + i))
    rm -rf "$WORK/redis-$i" && mkdir -p "$WORK/redis-$i"
    spawn "$WORK/redis-$i.log" redis-server --port "$port" --bind 127.0.0.1 --dir "$WORK/redis-$i" \
      --appendonly yes --appendfsync always --save "" --daemonize no \
      --cluster-enabled yes --cluster-port $((port - 20)) --cluster-config-file nodes.conf
    wait_port "$port"
    addresses+=("127.0.0.1:$port")
  done
  redis-cli --cluster create "${addresses[@]}" --cluster-replicas 0 --cluster-yes </dev/null >"$WORK/cluster-create.log" 2>&1 ||
    die "redis-cli --cluster create failed (log in $WORK/cluster-create.log)"
  for ((i = 0; i < REDIS_CLUSTER_PRIMARIES; i++)); do
    tries=600
    until redis-cli -p $((REDIS_CLUSTER_PORT + i)) cluster info 2>/dev/null | grep -q cluster_state:ok; do
      ((tries-- > 0)) || die "the Redis Cluster is not ok after 60 s (logs in $WORK)"
      sleep 0.1
    done
  done
}

# redis_cluster_urls: the cluster's seed URLs, comma-separated.
redis_cluster_urls() {
  local i urls=()
  for ((i = 0; i < REDIS_CLUSTER_PRIMARIES; i++)); do urls+=("redis://127.0.0.1:$((REDIS_CLUSTER_PORT + i))/"); done
  (IFS=,; echo "${urls[*]}")
}

# node_ports I: the device, gRPC and admin ports of node I.
device_port() { echo $((BASE_PORT + 3 * $1)); }
grpc_port() { echo $((BASE_PORT + 3 * $1 + 1)); }

# start_node I BACKEND: node I on "embedded", "redis" or "redis-cluster", its own data directory.
start_node() {
  local i=$1 backend=$2 data=$WORK/node$1
  rm -rf "$data" && mkdir -p "$data"
  local -a env=(SYNCLINE_DATA_DIR="$data" SYNCLINE_DEVICE_ADDR=127.0.0.1:"$(device_port "$i")"
    SYNCLINE_GRPC_ADDR=127.0.0.1:"$(grpc_port "$i")" SYNCLINE_ADMIN_ADDR=127.0.0.1:$((BASE_PORT + 3 * i + 2))
    SYNCLINE_STORE_BACKEND="${backend%-cluster}")
  [[ $backend == redis ]] && env+=(SYNCLINE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/")
  [[ $backend == redis-cluster ]] && env+=(SYNCLINE_REDIS_CLUSTER_URLS="$(redis_cluster_urls)")
  env+=("${NODE_ENV[@]}")
  env "${env[@]}" "$SERVER_BIN" user add "$USER_NAME" --config "$WORK/node.toml" --password "$USER_PASSWORD" \
    >/dev/null 2>&1 || true
  spawn "$WORK/node$i.log" env "${env[@]}" "$SERVER_BIN" serve --config "$WORK/node.toml"
  wait_port "$(device_port "$i")"
  wait_port "$(grpc_port "$i")"
}

# node_pid I: the server process of node I (the child of its `timeout`'s taskset exec).
node_pid() {
  local port
  port=$(device_port "$1")
  ss -ltnpH "sport = :$port" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1
}

# cluster BACKEND NODES: a fresh cluster of NODES nodes (and a fresh Redis or Redis Cluster
# when BACKEND is redis or redis-cluster).
cluster() {
  local backend=$1 nodes=$2 i
  stop_all
  [[ $backend == redis ]] && start_redis
  [[ $backend == redis-cluster ]] && start_redis_cluster
  for ((i = 0; i < nodes; i++)); do start_node "$i" "$backend"; done
}

sim() {
  taskset -c "$LOAD_CPU" timeout "$SIM_MAX_SECS" "$SIM_BIN" "$@"
}

url() { echo "ws://127.0.0.1:$(device_port "$1")/v1/sync"; }

part_ingest() {
  local round arm backend batch records
  local arms="embedded redis"
  [[ -n ${BASE_SERVER_BIN:-} ]] && arms+=" redis_base"
  for ((round = 1; round <= ROUNDS; round++)); do
    for arm in $arms; do
      for batch in $INGEST_BATCHES; do
        records=$INGEST_RECORDS
        ((batch == 1)) && records=$INGEST_RECORDS_1
        backend=${arm%_base}
        if [[ $arm == redis_base ]]; then
          with_base_server cluster "$backend" 1
        else
          cluster "$backend" 1
        fi
        wait_quiet "ingest $arm batch $batch round $round"
        sim ingest --grpc "http://127.0.0.1:$(grpc_port 0)" --batch "$batch" --records "$records" \
          --in-flight "$INGEST_IN_FLIGHT" --server-pid "$(node_pid 0)" --json-out "$OUT/ingest-$arm-b$batch-r$round.json"
      done
    done
  done
}

# with_base_server COMMAND...: COMMAND with BASE_SERVER_BIN as the server binary.
with_base_server() {
  local server=$SERVER_BIN
  SERVER_BIN=$BASE_SERVER_BIN
  "$@"
  SERVER_BIN=$server
}

# fanout ARM DEVICES CHANGES RATE FILE URL_ARGS...: one fanout run with Ingest at node 0.
fanout() {
  local arm=$1 devices=$2 changes=$3 rate=$4 file=$5
  shift 5
  wait_quiet "$arm"
  sim fanout "$@" --user "$USER_NAME" --password "$USER_PASSWORD" --devices "$devices" \
    --changes "$changes" --rate "$rate" --grpc "http://127.0.0.1:$(grpc_port 0)" \
    --server-pid "$(node_pid 0)" --json-out "$file"
}

part_push() {
  local round
  for ((round = 1; round <= ROUNDS; round++)); do
    cluster embedded 1
    fanout embedded "$FANOUT_DEVICES" "$FANOUT_CHANGES" "$FANOUT_RATE" "$OUT/push-embedded-r$round.json" --url "$(url 0)"
    cluster redis 1
    fanout redis-1 "$FANOUT_DEVICES" "$FANOUT_CHANGES" "$FANOUT_RATE" "$OUT/push-redis-1-r$round.json" --url "$(url 0)"
    cluster redis 3
    fanout cross "$FANOUT_DEVICES" "$FANOUT_CHANGES" "$FANOUT_RATE" "$OUT/push-cross-r$round.json" \
      --url "$(url 1)" --also-url "$(url 2)"
    if [[ $CLUSTER_ARM == 1 ]]; then
      cluster redis-cluster 3
      fanout cross-cluster "$FANOUT_DEVICES" "$FANOUT_CHANGES" "$FANOUT_RATE" "$OUT/push-cross-cluster-r$round.json" \
        --url "$(url 1)" --also-url "$(url 2)"
    fi
  done
}

part_spread() {
  local round
  for ((round = 1; round <= ROUNDS; round++)); do
    cluster redis 1
    fanout spread-1 "$SPREAD_DEVICES" "$SPREAD_CHANGES" 0 "$OUT/spread-1-r$round.json" --url "$(url 0)"
    cluster redis 3
    fanout spread-3 "$SPREAD_DEVICES" "$SPREAD_CHANGES" 0 "$OUT/spread-3-r$round.json" \
      --url "$(url 0)" --also-url "$(url 1)" --also-url "$(url 2)"
  done
}

part_herd() {
  local round reads
  for ((round = 1; round <= ROUNDS; round++)); do
    for reads in $HERD_READS; do
      NODE_ENV=(SYNCLINE_CATCH_UP_READS="$reads")
      cluster redis 1
      NODE_ENV=()
      fanout "herd-reads$reads" "$SPREAD_DEVICES" "$SPREAD_CHANGES" 0 "$OUT/herd-reads$reads-r$round.json" --url "$(url 0)"
    done
    if [[ -n ${BASE_SERVER_BIN:-} ]]; then
      with_base_server cluster redis 1
      fanout herd-base "$SPREAD_DEVICES" "$SPREAD_CHANGES" 0 "$OUT/herd-base-r$round.json" --url "$(url 0)"
    fi
  done
}

part_failover() {
  local round victim
  for ((round = 1; round <= ROUNDS; round++)); do
    cluster redis 3
    victim=$(node_pid 2)
    [[ -n $victim ]] || die "no server process on node 2's port"
    echo "failover round $round: load average $(cut -d' ' -f1-3 /proc/loadavg) before the run" | tee -a "$RUN_LOG"
    fanout failover "$FAILOVER_DEVICES" "$FAILOVER_CHANGES" "$FAILOVER_RATE" "$OUT/failover-r$round.json" \
      --url "$(url 0),$(url 1),$(url 2)" --kill-pid "$victim" --kill-after-secs "$FAILOVER_KILL_AFTER"
    echo "failover round $round: load average $(cut -d' ' -f1-3 /proc/loadavg) after the run" | tee -a "$RUN_LOG"
  done
}

for part in $PARTS; do
  case $part in
    ingest) part_ingest ;;
    push) part_push ;;
    spread) part_spread ;;
    herd) part_herd ;;
    failover) part_failover ;;
    *) die "unknown part $part (ingest, push, spread, herd, failover)" ;;
  esac
done
stop_all
python3 "$(dirname "$0")/load/cluster_summary.py" "$OUT" | tee "$OUT/summary.md"
