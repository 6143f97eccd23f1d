#!/usr/bin/env bash
# Two builds of the Syncline server side by side in one run, beside the fan-out baselines: each
# round runs the baselines (`tt`, Node `ws`) once per pair, then Syncline with the `before`
# build and with the `after` build (the order reversed on even rounds, so neither build always
# runs first), each a fresh server pinned to one core with the same simulator on the other (see
# benches/load/compare.sh). This is how a change that must not cost anything (a refactoring)
# is checked: the two builds' ratios to `tt` in the same round, and to each other.
#
#   fanout  1,000 devices x 1,000 changes at 100/s  (baselines: fanout; Syncline: latency-1000x100)
#   idle    15,000 idle devices                     (baselines: idle;   Syncline: idle)
#   (and fanout-wide, burst: see compare.sh)
#
# Results: $OUT/r<round>/<build>-<pair>/ (baselines.jsonl, syncline/*.json, compare.md made by
# benches/load/compare.py), and one block per round, pair and build in $OUT/summary.md.
#
# usage: BEFORE_BIN=path/to/old/syncline AFTER_BIN=path/to/new/syncline benches/load/ab.sh
# env: BEFORE_BIN, AFTER_BIN (server binaries; AFTER_BIN defaults to this tree's release build),
#      SIM_BIN (this tree's release build unless set), OUT (benches/results/ab), PAIRS
#      ("fanout idle"), ROUNDS (2), and the sizes and QUIET_WAIT_SECS of benches/baselines/run.sh
#      and benches/load/scenarios.sh (passed on)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

OUT=${OUT:-benches/results/ab}
PAIRS=${PAIRS:-fanout idle}
ROUNDS=${ROUNDS:-2}
[[ -n ${BEFORE_BIN:-} && -x $BEFORE_BIN ]] || die "BEFORE_BIN must name the older server binary"
for pair in $PAIRS; do syncline_scenario_of "$pair" >/dev/null; done
# This tree's server and simulator, frozen: the tree may change while the rounds run.
SERVER_BIN=${AFTER_BIN:-}
frozen_release_binaries
AFTER_BIN=$SERVER_BIN
# A copy, as frozen_release_binaries makes; start_server checks the process name, so the copy
# keeps the server binary's name.
before_dir=$(mktemp -d /tmp/syncline-before-bin.XXXXXX)
on_exit "rm -rf '$before_dir'"
cp "$BEFORE_BIN" "$before_dir/${AFTER_BIN##*/}"
BEFORE_BIN=$before_dir/${AFTER_BIN##*/}

mkdir -p "$OUT"
: >"$OUT/summary.md"
for round in $(seq 1 "$ROUNDS"); do
  dir=$OUT/r$round
  builds="before after"
  if ((round % 2 == 0)); then builds="after before"; fi
  for pair in $PAIRS; do
    mkdir -p "$dir"
    run_baselines "$dir/baselines-$pair.jsonl" "$pair"
    for build in $builds; do
      bin=$AFTER_BIN
      if [[ $build == before ]]; then bin=$BEFORE_BIN; fi
      SERVER_BIN=$bin run_syncline_beside "$dir/$build-$pair" "$dir/baselines-$pair.jsonl" \
        "$(syncline_scenario_of "$pair")" "$OUT/summary.md" "round $round, $pair, $build"
    done
  done
done
python3 benches/load/ab.py "$OUT" | tee "$OUT/ab.md"
