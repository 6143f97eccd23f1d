#!/usr/bin/env bash
# Paged initial sync of RECORDS records, one server binary against another in the same run:
# benches/bulk.sh's paged arm (ARMS=paged) on a fresh server of each binary, alternating
# ROUNDS times, so that a machine that gets busier does not favour one. For a change to the
# paging path: BASE_SERVER_BIN is the build before it, SERVER_BIN the build with it; the same
# simulator (SIM_BIN) drives both.
#
# Results: $OUT/base-<round>/ and $OUT/new-<round>/ (bulk.sh's files for each), and
# $OUT/summary.txt: each run's records/s and the ratio of the medians, new ÷ base.
#
# usage: BASE_SERVER_BIN=<old syncline> SERVER_BIN=<new syncline> SIM_BIN=<syncline-sim> benches/paged-compare.sh
# env: OUT (benches/results/paged-compare), ROUNDS (2), and bulk.sh's RECORDS, REPEAT, PAGE_SIZE,
#      WINDOW, QUIET_WAIT_SECS, ports and cores
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BASE_SERVER_BIN:?the server binary before the change}" "${SERVER_BIN:?the server binary with it}" "${SIM_BIN:?}"
OUT=${OUT:-benches/results/paged-compare}
ROUNDS=${ROUNDS:-2}
mkdir -p "$OUT"
NEW_SERVER_BIN=$SERVER_BIN
for round in $(seq 1 "$ROUNDS"); do
  for side in base new; do
    bin=$NEW_SERVER_BIN
    [[ $side == base ]] && bin=$BASE_SERVER_BIN
    echo "== round $round: $side ($bin)"
    SERVER_BIN=$bin ARMS=paged PAIRS=1 OUT="$OUT/$side-$round" benches/bulk.sh
  done
done
python3 - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
rates = {}
for side in ("base", "new"):
    runs = [run for path in sorted(out.glob(f"{side}-*/paged-1.json")) for run in json.loads(path.read_text())["runs"]]
    rates[side] = [run["records_per_sec"] for run in runs]
    cpu = [run.get("server_cpu_secs") for run in runs]
    ok = all(run["verified"] for run in runs)
    print(f"{side}: records/s {', '.join(f'{r:.0f}' for r in rates[side])} (median {statistics.median(rates[side]):.0f});"
          f" server CPU s {cpu}; verified: {ok}")
print(f"new / base (medians): {statistics.median(rates['new']) / statistics.median(rates['base']):.2f}")
PY
