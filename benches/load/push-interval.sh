#!/usr/bin/env bash
# Syncline at several `device.push_interval_ms` settings beside the fan-out baselines, in one
# run: each round runs the baselines (`tt`, Node `ws`) once, then Syncline at each interval
# (the order reversed on even rounds, so no setting always runs first), each a fresh server
# pinned to one core with its load generator on the other (see benches/load/compare.sh). Every
# process is bounded by `timeout` in the scripts called; servers are stopped by their PIDs.
#
#   fanout       1,000 devices x 1,000 changes at 100/s  (baselines: fanout; Syncline: latency-1000x100)
#   fanout-wide  10,000 devices x 100 changes at 10/s    (baselines: fanout-wide; Syncline: fanout-wide)
#
# Results: $OUT/r<round>/i<interval>/ (baselines.jsonl, syncline/*.json, compare.md made by
# benches/load/compare.py), and one line per round and interval in $OUT/summary.md.
#
# usage: benches/load/push-interval.sh
# env: OUT (benches/results/push-interval), PAIR (fanout), INTERVALS ("0 10 15 20"),
#      ROUNDS (2), SERVER_BIN, SIM_BIN (see scenarios.sh), and the sizes and QUIET_WAIT_SECS
#      of benches/baselines/run.sh and benches/load/scenarios.sh (passed on)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

OUT=${OUT:-benches/results/push-interval}
PAIR=${PAIR:-fanout}
INTERVALS=${INTERVALS:-0 10 15 20}
ROUNDS=${ROUNDS:-2}
case $PAIR in
  fanout | fanout-wide) syncline_scenario=$(syncline_scenario_of "$PAIR") ;;
  *) die "unknown pair $PAIR (known: fanout fanout-wide)" ;;
esac
# Built once: the tree may change while the rounds run.
frozen_release_binaries

mkdir -p "$OUT"
: >"$OUT/summary.md"
for round in $(seq 1 "$ROUNDS"); do
  dir=$OUT/r$round
  mkdir -p "$dir"
  run_baselines "$dir/baselines.jsonl" "$PAIR"
  intervals=$INTERVALS
  if ((round % 2 == 0)); then intervals=$(tr ' ' '\n' <<<"$INTERVALS" | tac | tr '\n' ' '); fi
  for interval in $intervals; do
    SYNCLINE_PUSH_INTERVAL_MS=$interval run_syncline_beside "$dir/i$interval" "$dir/baselines.jsonl" \
      "$syncline_scenario" "$OUT/summary.md" "round $round, push_interval_ms $interval"
  done
done
cat "$OUT/summary.md"
