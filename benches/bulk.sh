#!/usr/bin/env bash
# Bulk sync (issue 18): initial sync of RECORDS (1,000,000) records to a new device by bulk
# file against paged sync, records/s in the same run, and DEVICES (100) devices bulk-syncing
# at once (the server's CPU and peak RSS). All through `syncline-sim initial-sync`:
#
#   warm-up   one paged sync (the demo app's first subscribe loads the partition from its
#             channel: that load is not what either arm measures)
#   paged     REPEAT paged syncs from cursor 0 (page size PAGE_SIZE, window WINDOW)
#   bulk      REPEAT bulk syncs: BulkRequest, download, checksum check (ids and versions
#             read, as a device that keeps the file as its local store), then the log from
#             the file's sequence to caught_up. The first of the run writes the file, the
#             others reuse it (bulk.reuse_changes): both are reported.
#   bulk-parsed  the same, every record's typed-JSON fields parsed into the device's map (as
#             the Rust device library's in-memory replica does)
#   fleet     DEVICES bulk syncs at once, once, with the server's CPU and peak RSS
#
# The arms alternate PAIRS times (paged, bulk, paged, bulk, ...) so that a machine that gets
# busier does not favour one. One fresh server (the demo app with RECORDS accounts), pinned to
# $SRV_CPU, the simulator to $LOAD_CPU; every process bounded by `timeout`, the server stopped
# by its PID (benches/load/lib.sh); loopback only. Release binaries, built here unless given.
#
# Results: $OUT/run.txt (commit, machine, how quiet the cores were), $OUT/<arm>-<n>.json
# (each simulator report), $OUT/server.log, and $OUT/summary.txt (records/s of each arm).
#
# usage: benches/bulk.sh
# env: OUT (benches/results/bulk), RECORDS (1000000), REPEAT (3), PAIRS (2), DEVICES (100),
#      PAGE_SIZE (2000), WINDOW (8), SERVER_BIN and SIM_BIN, DEVICE_PORT (7750),
#      GRPC_PORT (7751), SRV_CPU (0), LOAD_CPU (1), QUIET_MAX_PCT (10), QUIET_WAIT_SECS (300),
#      ARMS ("paged bulk bulk-parsed fleet": the arms to run)
set -euo pipefail
# shellcheck source=load/lib.sh
source "$(dirname "$0")/load/lib.sh"

OUT=${OUT:-benches/results/bulk}
RECORDS=${RECORDS:-1000000}
REPEAT=${REPEAT:-3}
PAIRS=${PAIRS:-2}
DEVICES=${DEVICES:-100}
PAGE_SIZE=${PAGE_SIZE:-2000}
WINDOW=${WINDOW:-8}
DEVICE_PORT=${DEVICE_PORT:-7750}
GRPC_PORT=${GRPC_PORT:-7751}
QUIET_WAIT_SECS=${QUIET_WAIT_SECS:-300}
SERVER_MAX_SECS=3600
SIM_MAX_SECS=900
ARMS=${ARMS:-paged bulk bulk-parsed fleet}
wanted() { [[ " $ARMS " == *" $1 "* ]]; }

release_binaries
mkdir -p "$OUT"
RUN_LOG=$OUT/run.txt
{
  run_header simulator
  echo "records: $RECORDS, page size $PAGE_SIZE, window $WINDOW, repeat $REPEAT, pairs $PAIRS, fleet $DEVICES"
} >"$RUN_LOG"
DATA=$(mktemp -d /tmp/syncline-bulk.XXXXXX)
on_exit "rm -rf '$DATA'"
URL=ws://127.0.0.1:$DEVICE_PORT/v1/sync

sim() {
  pinned "$LOAD_CPU" $((SIM_MAX_SECS + 30)) "$SIM_BIN" initial-sync --url "$URL" --source Account \
    --page-size "$PAGE_SIZE" --window "$WINDOW" --server-pid "$SERVER_PID" --max-secs "$SIM_MAX_SECS" "$@"
}

# arm LABEL ARGS...: waits for quiet cores, runs the simulator, notes the load average after.
arm() {
  local label=$1
  shift
  wait_quiet "$label"
  echo "== $label"
  sim "$@"
  echo "$label: load average after the arm $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RUN_LOG"
}

SYNCLINE_DATA_DIR=$DATA SYNCLINE_DEVICE_ADDR=127.0.0.1:$DEVICE_PORT SYNCLINE_GRPC_ADDR=127.0.0.1:$GRPC_PORT \
  SYNCLINE_ADMIN_ADDR=127.0.0.1:0 SYNCLINE_DEMO_RECORDS=$RECORDS \
  start_server "$OUT/server.log" syncline "$DEVICE_PORT $GRPC_PORT" "$SERVER_BIN" serve

# The demo app imports its channel's records after the server listens: paged warm-up syncs
# (bounded) until one sees them all.
echo "== warm-up (until the demo partition holds $RECORDS records)"
for attempt in $(seq 1 60); do
  sim --repeat 1 --json-out "$OUT/warmup.json" >/dev/null
  seen=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['runs'][0]['records'])" "$OUT/warmup.json")
  echo "warm-up $attempt: $seen records"
  ((seen >= RECORDS)) && break
  ((attempt < 60)) || die "the demo partition never reached $RECORDS records"
  sleep 5
done
for pair in $(seq 1 "$PAIRS"); do
  if wanted paged; then arm "paged $pair" --repeat "$REPEAT" --json-out "$OUT/paged-$pair.json"; fi
  if wanted bulk; then arm "bulk $pair" --bulk --repeat "$REPEAT" --json-out "$OUT/bulk-$pair.json"; fi
  if wanted bulk-parsed; then
    arm "bulk-parsed $pair" --bulk --parse-fields --repeat "$REPEAT" --json-out "$OUT/bulk-parsed-$pair.json"
  fi
done
if wanted fleet; then
  arm "fleet: $DEVICES devices bulk-syncing at once" --bulk --devices "$DEVICES" --repeat 1 --json-out "$OUT/fleet.json"
fi
stop_server

python3 - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for path in sorted(out.glob("*.json")):
    report = json.loads(path.read_text())
    runs = report["runs"]
    rates = ", ".join(f"{run['records_per_sec']:.0f}" for run in runs)
    extra = ""
    if runs and runs[0].get("server_peak_rss_mb") is not None:
        extra = (f"; server CPU {runs[0]['server_cpu_secs']} s, peak RSS {runs[0]['server_peak_rss_mb']} MB"
                 f" (during the run at most {runs[0].get('server_rss_during_mb')} MB), simulator CPU {runs[0].get('sim_cpu_secs')} s")
    verified = all(run["verified"] for run in runs)
    parts = ""
    if runs and runs[0].get("bulk_download_secs") is not None:
        parts = "; BulkReady/download/check s per run: " + ", ".join(
            f"{run['bulk_ready_secs']}/{run['bulk_download_secs']}/{run['bulk_check_secs']}" for run in runs)
    print(f"{path.stem:10} records/s per run: {rates} (median {report['median_records_per_sec']:.0f}){extra}{parts}; verified: {verified}")
PY
