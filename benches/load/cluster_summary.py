#!/usr/bin/env python3
"""Summarizes a benches/cluster.sh run directory as Markdown: medians over rounds per arm.

usage: cluster_summary.py DIR
"""

import glob
import json
import os
import re
import statistics
import sys


def load(pattern):
    """Returns {arm: [report, ...]} for files DIR/<pattern> whose name gives the arm."""
    arms = {}
    for path in sorted(glob.glob(pattern)):
        name = os.path.basename(path)[: -len(".json")]
        arm = re.sub(r"-r\d+$", "", name)
        with open(path, encoding="utf-8") as handle:
            arms.setdefault(arm, []).append(json.load(handle))
    return arms


def median(reports, pick):
    values = [pick(report) for report in reports]
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else float("nan")


def ingest_table(directory):
    arms = load(os.path.join(directory, "ingest-*.json"))
    if not arms:
        return []
    base = any(arm.startswith("ingest-redis_base-") for arm in arms)
    lines = ["## Ingest (records/s through Ingest/Push, no device; median of rounds)", ""]
    header = "| batch | embedded records/s | redis records/s | redis / embedded | embedded call p99 ms | redis call p99 ms |"
    rule = "|---:|---:|---:|---:|---:|---:|"
    if base:
        header += " redis (base build) records/s | redis / base |"
        rule += "---:|---:|"
    lines += [header, rule]
    batches = sorted({int(re.search(r"-b(\d+)$", arm).group(1)) for arm in arms})
    for batch in batches:
        embedded = arms.get(f"ingest-embedded-b{batch}", [])
        redis = arms.get(f"ingest-redis-b{batch}", [])
        e_rate = median(embedded, lambda r: r["records_per_sec"])
        r_rate = median(redis, lambda r: r["records_per_sec"])
        e_p99 = median(embedded, lambda r: r["call_latency"]["p99_ms"])
        r_p99 = median(redis, lambda r: r["call_latency"]["p99_ms"])
        row = f"| {batch} | {e_rate:,.0f} | {r_rate:,.0f} | {r_rate / e_rate:.2f} | {e_p99:.2f} | {r_p99:.2f} |"
        if base:
            b_rate = median(arms.get(f"ingest-redis_base-b{batch}", []), lambda r: r["records_per_sec"])
            row += f" {b_rate:,.0f} | {r_rate / b_rate:.2f} |"
        lines.append(row)
    return lines + [""]


def fanout_rows(arms, names):
    rows = ["| arm | rounds | latency p50 ms | p99 ms | deliveries/s | lost | extra | node-0 CPU µs/delivery |"]
    rows += ["|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        reports = arms.get(name, [])
        if not reports:
            continue
        rows.append(
            "| {} | {} | {:.2f} | {:.2f} | {:,.0f} | {} | {} | {:.2f} |".format(
                name,
                len(reports),
                median(reports, lambda r: r["latency"]["p50_ms"]),
                median(reports, lambda r: r["latency"]["p99_ms"]),
                median(reports, lambda r: r["delivered_per_sec"]),
                sum(r["lost"] for r in reports),
                sum(r["extra"] for r in reports),
                median(reports, lambda r: (r.get("server") or {}).get("cpu_us_per_delivered")),
            )
        )
    return rows


def herd_table(directory):
    """The catch-up herd: the same burst with each `device.catch_up_reads`."""
    arms = load(os.path.join(directory, "herd-*.json"))
    if not arms:
        return []
    lines = ["## Catch-up herd (burst to devices on one Redis node; by `device.catch_up_reads`)", ""]
    lines += ["| arm | rounds | deliveries/s | via catch-up | catch-ups | live p99 ms | peak RSS MiB | node CPU s | lost | extra |"]
    lines += ["|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in sorted(arms):
        reports = arms[name]
        lines.append(
            "| {} | {} | {:,.0f} | {:,.0f} | {:,.0f} | {:.0f} | {:.0f} | {:.2f} | {} | {} |".format(
                name,
                len(reports),
                median(reports, lambda r: r["delivered_per_sec"]),
                median(reports, lambda r: r["delivered_catchup"]),
                median(reports, lambda r: r["fleet"]["recatchups"]),
                median(reports, lambda r: r["latency"]["p99_ms"]),
                median(reports, lambda r: r["server"]["memory_after"]["peak_rss_kb"] / 1024),
                median(reports, lambda r: r["server"]["cpu_secs"]),
                sum(r["lost"] for r in reports),
                sum(r["extra"] for r in reports),
            )
        )
    return lines + [""]


def failover_table(directory):
    """One row per round of the failover arm: node 2 killed mid-run, its devices resumed elsewhere."""
    rounds = sorted(glob.glob(os.path.join(directory, "failover-r*.json")))
    if not rounds:
        return []
    lines = ["## Failover (node 2 of three killed with SIGKILL mid-run; times from the kill)", ""]
    lines += ["| round | devices | moved | all connected again ms | caught up p50 ms | p99 ms | max ms | lost | extra | duplicate seqs | missing seqs |"]
    lines += ["|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for path in rounds:
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
        failover = report.get("failover") or {}
        reconnected = failover.get("reconnected") or {}
        caught_up = failover.get("caught_up") or {}
        fleet = report["fleet"]
        lines.append(
            "| {} | {} | {} | {:.0f} | {:.0f} | {:.0f} | {:.0f} | {} | {} | {} | {} |".format(
                os.path.basename(path)[: -len(".json")],
                report["params"]["devices"],
                failover.get("devices_dropped", 0),
                reconnected.get("max_ms", float("nan")),
                caught_up.get("p50_ms", float("nan")),
                caught_up.get("p99_ms", float("nan")),
                caught_up.get("max_ms", float("nan")),
                report["lost"],
                report["extra"],
                fleet["duplicate_seqs"],
                fleet["missing_seqs"],
            )
        )
    return lines + [""]


def main():
    directory = sys.argv[1]
    lines = ["# Cluster mode on Redis: same-run comparison", ""]
    lines += ingest_table(directory)
    push = load(os.path.join(directory, "push-*.json"))
    if push:
        lines += ["## Push latency (Ingest at node 0; devices on node 0, or on nodes 1 and 2 for `cross` and `cross-cluster`)", ""]
        arms = ["push-embedded", "push-redis-1", "push-cross"]
        if "push-cross-cluster" in push:
            arms.append("push-cross-cluster")
        lines += fanout_rows(push, arms)
        single = median(push.get("push-redis-1", []), lambda r: r["latency"]["p99_ms"])
        lines.append("")
        for arm, what in [("push-cross", "cross-node"), ("push-cross-cluster", "cross-node on Redis Cluster")]:
            if arm in push:
                cross = median(push[arm], lambda r: r["latency"]["p99_ms"])
                lines.append(f"{what} p99 / single-node (Redis) p99: {cross / single:.2f} (target at most 2)")
        lines.append("")
    spread = load(os.path.join(directory, "spread-*.json"))
    if spread:
        lines += ["## Aggregate deliveries (burst; devices on one node against spread over three)", ""]
        lines += fanout_rows(spread, ["spread-1", "spread-3"])
        one = median(spread.get("spread-1", []), lambda r: r["delivered_per_sec"])
        three = median(spread.get("spread-3", []), lambda r: r["delivered_per_sec"])
        lines += ["", f"three nodes / one node deliveries/s: {three / one:.2f}", ""]
    lines += herd_table(directory)
    lines += failover_table(directory)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
