#!/usr/bin/env python3
"""Ratio table of one benches/load/compare.sh run: Syncline against the fan-out baselines.

usage: python3 benches/load/compare.py DIR
  DIR holds baselines.jsonl (baseline-loadgen lines) and syncline/*.json (syncline-sim
  reports). For each scenario: server CPU per delivered message, latency p50/p99/max,
  deliveries per second, lost, and idle RSS per connection, with Syncline's ratio to
  each baseline (Syncline / baseline: below 1 is better for CPU, latency and memory, above
  1 for deliveries per second)."""
import json
import os
import signal
import sys

signal.signal(signal.SIGPIPE, signal.SIG_DFL)

# scenario -> Syncline report file (in DIR/syncline)
SYNCLINE_FILES = {
    "fanout": "latency-1000x100-1.json",
    "fanout-wide": "latency-10000x10.json",
    "burst": "fanout-burst-1000x2000.json",
    "idle": "idle.json",
}
BASELINES = ["tt", "node-ws"]


def load_baselines(path):
    latest = {}
    if not os.path.exists(path):
        return latest
    with open(path) as fh:
        for line in fh:
            if line.strip().startswith("{"):
                row = json.loads(line)
                latest[(row["label"], row["scenario"])] = row
    return latest


def syncline_row(report):
    """The figures of a syncline-sim report, named like the baseline's."""
    if report.get("scenario") == "idle":
        return {"rss_per_idle_conn_kb": report.get("rss_kb_per_device"), "conns": report["ramp_up"]["caught_up"]}
    latency = report.get("latency", {})
    server = report.get("server", {})
    return {
        "server_cpu_us_per_msg": server.get("cpu_us_per_delivered"),
        "lat_p50_ms": latency.get("p50_ms"),
        "lat_p99_ms": latency.get("p99_ms"),
        "lat_max_ms": latency.get("max_ms"),
        "delivered_per_sec": report.get("delivered_per_sec"),
        "lost": report.get("lost"),
        "other_busy_s": report.get("other_busy_secs"),
    }


def fmt(value, digits=2):
    if value is None:
        return "–"
    if isinstance(value, (int, float)) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def ratio(ours, theirs):
    if ours is None or theirs in (None, 0):
        return "–"
    return f"{ours / theirs:.2f}×"


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return
    root = args[0]
    baselines = load_baselines(os.path.join(root, "baselines.jsonl"))
    print("| scenario | figure | Syncline | tt | node-ws | Syncline ÷ tt | Syncline ÷ node-ws |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for scenario, filename in SYNCLINE_FILES.items():
        path = os.path.join(root, "syncline", filename)
        if not os.path.exists(path):
            continue
        with open(path) as fh:
            ours = syncline_row(json.load(fh))
        theirs = {label: baselines.get((label, scenario), {}) for label in BASELINES}
        if scenario == "idle":
            figures = [("RSS per idle connection, KB", "rss_per_idle_conn_kb")]
        else:
            figures = [
                ("server CPU µs per delivery", "server_cpu_us_per_msg"),
                ("latency p50 ms", "lat_p50_ms"),
                ("latency p99 ms", "lat_p99_ms"),
                ("latency max ms", "lat_max_ms"),
                ("deliveries per second", "delivered_per_sec"),
                ("lost", "lost"),
                ("other busy core s (noise)", "other_busy_s"),
            ]
        for name, key in figures:
            cells = [fmt(ours.get(key))] + [fmt(theirs[label].get(key)) for label in BASELINES]
            ratios = ["", ""] if key in ("lost", "other_busy_s") else [
                ratio(ours.get(key), theirs[label].get(key)) for label in BASELINES
            ]
            print(f"| {scenario} | {name} | " + " | ".join(cells + ratios) + " |")


if __name__ == "__main__":
    main()
