#!/usr/bin/env bash
# Syncline side by side with the project's fan-out baselines, in one run: for each scenario the
# bare tokio-tungstenite broadcast loop (`tt`), the Node `ws` server and Syncline run back to
# back on the same machine (server pinned to one core, load generator to the other, each script
# waiting for quiet cores first), so that the ratios compare runs minutes apart rather than
# days. Then Syncline's scenarios that have no baseline counterpart (storm, slow, personal).
#
#   fanout       1,000 subscribers x 1,000 messages at 100/s   (baselines: fanout;  Syncline: latency-1000x100)
#   fanout-wide  10,000 subscribers x 100 messages at 10/s     (baselines: fanout-wide; Syncline: fanout-wide)
#   burst        1,000 subscribers x 2,000 messages at once    (baselines: burst;   Syncline: fanout-burst)
#   idle         15,000 idle subscribers                       (baselines: idle;    Syncline: idle)
#
# Results go to $OUT (benches/results/compare): baselines.jsonl, syncline/*.json, and the
# ratio table compare.md made by benches/load/compare.py. Every process is bounded by `timeout`
# in the scripts it calls; servers are stopped by their PIDs.
#
# usage: benches/load/compare.sh
# env: OUT (benches/results/compare), PAIRS ("fanout fanout-wide burst idle"),
#      EXTRA ("storm slow personal": Syncline-only scenarios run after the pairs; "" for none),
#      QUIET_WAIT_SECS (passed on)
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${OUT:-benches/results/compare}
PAIRS=${PAIRS:-fanout fanout-wide burst idle}
EXTRA=${EXTRA-storm slow personal}
mkdir -p "$OUT/syncline"

baselines() {
  OUT="$OUT/baselines.jsonl" SCENARIOS=$1 IDLE_CONNS=15000 benches/baselines/run.sh
}
syncline() {
  OUT="$OUT/syncline" SCENARIOS=$1 LATENCY_RUNS=1 IDLE_DEVICES=15000 benches/load/scenarios.sh
}

for pair in $PAIRS; do
  case $pair in
    fanout) baselines fanout; syncline latency-1000x100 ;;
    fanout-wide) baselines fanout-wide; syncline fanout-wide ;;
    burst) baselines burst; syncline fanout-burst ;;
    idle) baselines idle; syncline idle ;;
    *) echo "unknown pair $pair (known: fanout fanout-wide burst idle)" >&2; exit 2 ;;
  esac
done
if [[ -n $EXTRA ]]; then
  syncline "$EXTRA"
fi
python3 benches/load/compare.py "$OUT" | tee "$OUT/compare.md"
