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
# ratio table compare.md made by benches/load/compare.py. The server and simulator are built
# (or taken from SERVER_BIN and SIM_BIN) once, so every Syncline scenario of the run uses the
# same binaries. Every process is bounded by `timeout` in the scripts it calls; servers are
# stopped by their PIDs.
#
# usage: benches/load/compare.sh
# env: OUT (benches/results/compare), PAIRS ("fanout fanout-wide burst idle"),
#      EXTRA ("storm slow personal": Syncline-only scenarios run after the pairs; "" for none),
#      SERVER_BIN, SIM_BIN (see scenarios.sh), and the sizes and QUIET_WAIT_SECS of
#      benches/baselines/run.sh and benches/load/scenarios.sh (passed on)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

OUT=${OUT:-benches/results/compare}
PAIRS=${PAIRS:-fanout fanout-wide burst idle}
EXTRA=${EXTRA-storm slow personal}
for pair in $PAIRS; do syncline_scenario_of "$pair" >/dev/null; done
frozen_release_binaries
mkdir -p "$OUT/syncline"

for pair in $PAIRS; do
  run_baselines "$OUT/baselines.jsonl" "$pair"
  run_syncline "$OUT/syncline" "$(syncline_scenario_of "$pair")"
done
if [[ -n $EXTRA ]]; then
  run_syncline "$OUT/syncline" "$EXTRA"
fi
compare_table "$OUT" | tee "$OUT/compare.md"
