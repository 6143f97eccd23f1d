#!/usr/bin/env bash
# Starts a local Syncline cluster on loopback to try cluster mode: one redis-server (AOF,
# fsync always), the example CRM channel (examples/crm-channel, 2,000 accounts, user demo /
# demo) and three Syncline nodes sharing them, each with its own ports and data directory.
# Ctrl-C stops everything this script started (by PID) and removes its temporary directory.
#
# usage: examples/cluster/run.sh        (NODES=3, REDIS_PORT=7379, BASE_PORT=7710; SERVER_BIN and
#        CHANNEL_BIN: binaries to run instead of building release ones)
#
#   node i (0-based): devices  ws://127.0.0.1:$((BASE_PORT + i))/v1/sync
#                     gRPC     127.0.0.1:$((BASE_PORT + 10 + i))   (Ingest)
#                     admin    http://127.0.0.1:$((BASE_PORT + 20 + i))
# Needs redis-server on the PATH (apt-get install redis-server).
set -euo pipefail
cd "$(dirname "$0")/../.."

NODES=${NODES:-3}
REDIS_PORT=${REDIS_PORT:-7379}
BASE_PORT=${BASE_PORT:-7710}
CHANNEL_ADDR=127.0.0.1:7801

command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
if [[ -z ${SERVER_BIN:-} || -z ${CHANNEL_BIN:-} ]]; then
  cargo build --release --quiet -p syncline-server --bin syncline -p syncline-example-crm --bin crm-channel
fi
SYNCLINE=${SERVER_BIN:-target/release/syncline}
CHANNEL=${CHANNEL_BIN:-target/release/crm-channel}

work=$(mktemp -d /tmp/syncline-cluster.XXXXXX)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap stop EXIT
trap 'exit 130' INT TERM

# wait_for PORT WHAT LOG: until something listens on the loopback port (at most 60 s); else
# shows the end of LOG and stops.
wait_for() {
  for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$2 did not start listening on port $1; the end of its log:" >&2
  tail -20 "$3" >&2
  exit 1
}

mkdir -p "$work/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$work/redis" --appendonly yes \
  --appendfsync always --save "" --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
wait_for "$REDIS_PORT" redis-server "$work/redis.log"

"$CHANNEL" --db "$work/crm.db" --listen "$CHANNEL_ADDR" --seed 2000 >"$work/channel.log" 2>&1 &
pids+=($!)
wait_for "${CHANNEL_ADDR##*:}" crm-channel "$work/channel.log"

for i in $(seq 0 $((NODES - 1))); do
  mkdir -p "$work/node$i"
  SYNCLINE_DATA_DIR="$work/node$i" \
    SYNCLINE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/" \
    SYNCLINE_DEVICE_ADDR="127.0.0.1:$((BASE_PORT + i))" \
    SYNCLINE_GRPC_ADDR="127.0.0.1:$((BASE_PORT + 10 + i))" \
    SYNCLINE_ADMIN_ADDR="127.0.0.1:$((BASE_PORT + 20 + i))" \
    "$SYNCLINE" serve --config examples/cluster/cluster.toml >"$work/node$i.log" 2>&1 &
  pids+=($!)
done
for i in $(seq 0 $((NODES - 1))); do wait_for $((BASE_PORT + i)) "node $i" "$work/node$i.log"; done

echo "Syncline cluster: $NODES nodes on redis 127.0.0.1:$REDIS_PORT (logs in $work)"
for i in $(seq 0 $((NODES - 1))); do
  echo "  node $i: devices ws://127.0.0.1:$((BASE_PORT + i))/v1/sync  gRPC 127.0.0.1:$((BASE_PORT + 10 + i))  admin http://127.0.0.1:$((BASE_PORT + 20 + i))"
done
echo "Log in as demo / demo on any node, e.g.:"
echo "  cargo run --release -p syncline-sim -- initial-sync --url ws://127.0.0.1:$((BASE_PORT + 1))/v1/sync --user demo --password demo"
echo "Ctrl-C stops the cluster."
# Runs until Ctrl-C or until a process it started exits.
wait -n "${pids[@]}"
echo "a process of the cluster exited; stopping (logs in $work were removed: rerun to retry)" >&2
