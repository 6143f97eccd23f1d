#!/usr/bin/env python3
"""After ÷ before table of one benches/load/ab.sh run.

usage: python3 benches/load/ab.py DIR
  DIR holds r<round>/<build>-<pair>/syncline/*.json (build: before, after). For each pair and
  figure: both builds' value in every round, the after ÷ before ratio per round, and the
  median ratio over the rounds (below 1: the after build is better for CPU, latency and
  memory). Each round's builds ran back to back, so only the ratios mean anything."""
import glob
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import SYNCLINE_FILES, fmt, syncline_row  # noqa: E402

FIGURES = {
    "fanout": [("server CPU µs per delivery", "server_cpu_us_per_msg"), ("latency p50 ms", "lat_p50_ms"),
               ("latency p99 ms", "lat_p99_ms"), ("deliveries per second", "delivered_per_sec"), ("lost", "lost")],
    "idle": [("RSS per idle connection, KB", "rss_per_idle_conn_kb")],
}
FIGURES["fanout-wide"] = FIGURES["burst"] = FIGURES["fanout"]


def row(root, build, pair):
    path = os.path.join(root, f"{build}-{pair}", "syncline", SYNCLINE_FILES[pair])
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return syncline_row(json.load(fh))


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return
    rounds = sorted(glob.glob(os.path.join(sys.argv[1], "r*")), key=lambda p: int(p.rsplit("r", 1)[1]))
    print("| pair | figure | before, per round | after, per round | after ÷ before, per round | median |")
    print("|---|---|---|---|---|---:|")
    for pair, figures in FIGURES.items():
        runs = [(row(r, "before", pair), row(r, "after", pair)) for r in rounds]
        runs = [(b, a) for b, a in runs if b and a]
        if not runs:
            continue
        for name, key in figures:
            ratios = [a[key] / b[key] for b, a in runs if key != "lost" and b.get(key) and a.get(key) is not None]
            cells = [
                ", ".join(fmt(b.get(key)) for b, _ in runs),
                ", ".join(fmt(a.get(key)) for _, a in runs),
                ", ".join(f"{r:.2f}" for r in ratios),
                f"{statistics.median(ratios):.2f}×" if ratios else "",
            ]
            print(f"| {pair} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
