#!/usr/bin/env python3
"""Print fan-out baseline results (JSON lines from baseline-loadgen) as markdown tables.

usage: python3 benches/baselines/table.py [--all] [FILE.jsonl ...]
  default: one row per server with the headline figures (the latest line of each
           server and scenario counts)
  --all  : one row per JSON line
FILE defaults to benches/results/baselines/baselines.jsonl."""
import json
import signal
import sys

signal.signal(signal.SIGPIPE, signal.SIG_DFL)
args = sys.argv[1:]
if "-h" in args or "--help" in args:
    print(__doc__)
    sys.exit(0)
show_all = "--all" in args
files = [a for a in args if not a.startswith("--")] or ["benches/results/baselines/baselines.jsonl"]
rows = []
for name in files:
    with open(name) as fh:
        rows += [json.loads(line) for line in fh if line.strip().startswith("{")]


def num(v, digits=1):
    return "–" if v is None else f"{v:,.{digits}f}"


def table(cols, lines):
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|")
    for line in lines:
        print("| " + " | ".join(line) + " |")


def size(r):
    rate = "max" if r["rate"] == 0 else f'{r["rate"]:g}/s'
    if r["msgs"] == 0:
        return f'{r["conns_target"]:,} idle'
    return f'{r["conns_target"]:,} × {r["msgs"]:,} @ {rate}'


if show_all:
    cols = ["server", "scenario", "N × M @ rate", "conns ok", "connect s", "RSS/idle conn kB", "peak RSS MB",
            "delivered/s", "lost", "p50 ms", "p99 ms", "max ms", "server CPU µs/msg (sys)",
            "server core µs/msg (softirq)", "loadgen CPU µs/msg", "other busy s", "load avg"]
    lines = []
    for r in rows:
        sys_frac = r.get("server_sys_frac")
        softirq = r.get("server_core_softirq_frac")
        lines.append([
            r["label"], r["scenario"], size(r), f'{r["conns"]:,}', num(r["connect_secs"], 2),
            num(r["rss_per_idle_conn_kb"]), num((r["server_hwm_kb"] or 0) / 1024),
            num(r["delivered_per_sec"], 0), f'{r["lost"]:,}', num(r["lat_p50_ms"]), num(r["lat_p99_ms"]),
            num(r["lat_max_ms"]),
            f'{num(r["server_cpu_us_per_msg"], 2)} ({num(100 * sys_frac, 0) if sys_frac is not None else "–"}%)',
            f'{num(r["server_core_us_per_msg"], 2)} ({num(100 * softirq, 0) if softirq is not None else "–"}%)',
            num(r["loadgen_cpu_us_per_msg"], 2), num(r["other_busy_s"], 2), num(r["loadavg_1m"], 2),
        ])
    table(cols, lines)
    sys.exit(0)

latest = {}
servers = []
for r in rows:
    latest[(r["label"], r["scenario"])] = r
    if r["label"] not in servers:
        servers.append(r["label"])


def get(server, scenario):
    return latest.get((server, scenario))


def field(server, scenario, key, digits=1):
    r = get(server, scenario)
    return num(r.get(key), digits) if r else "–"


def cpu(server, scenario):
    r = get(server, scenario)
    if not r:
        return "–"
    return f'{num(r["server_cpu_us_per_msg"], 2)} / {num(r["server_core_us_per_msg"], 2)}'


def latency(server, scenario):
    r = get(server, scenario)
    return f'{num(r["lat_p50_ms"])} / {num(r["lat_p99_ms"])}' if r else "–"


def label(scenario, fallback):
    r = next((r for r in rows if r["scenario"] == scenario), None)
    return size(r) if r else fallback


idle, fanout, wide, burst = (label("idle", "idle"), label("fanout", "fanout"), label("fanout-wide", "fanout-wide"),
                             label("burst", "burst"))
cols = ["server", f"RSS/conn kB ({idle})", f"µs/msg process / core ({fanout})", f"µs/msg process / core ({wide})",
        f"burst delivered/s ({burst})", f"p50 / p99 ms ({fanout})", f"p50 / p99 ms ({wide})", "lost"]
lines = []
for s in servers:
    lost = sum(r["lost"] for (label_, _), r in latest.items() if label_ == s)
    lines.append([s, field(s, "idle", "rss_per_idle_conn_kb"), cpu(s, "fanout"), cpu(s, "fanout-wide"),
                  field(s, "burst", "delivered_per_sec", 0), latency(s, "fanout"), latency(s, "fanout-wide"),
                  f"{lost:,}"])
table(cols, lines)
