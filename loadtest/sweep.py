"""Latency against throughput over a series of load levels, and where the knee is.

Each level is its own Locust run (so each has its own server-side split and generator check): a
list of user counts (closed loop: concurrency, as perf_analyzer's --concurrency-range) or of
arrival rates (open loop: offered load, as perf_analyzer's --request-rate-range). The table and the
plot put p50/p95/p99 against the achieved throughput.

The knee is the last level before median latency starts growing much faster than throughput (see
`find_knee`): up to it, more load buys throughput; past it, more load mostly queues, so latency
rises while throughput stays flat. The peak is the highest achieved throughput. If the knee is the
last level, the server was not saturated: extend the levels upward.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
from pathlib import Path
from typing import Any

from loadtest.runner import run

#: Past the knee, median latency grows more than this many times faster than throughput.
KNEE_ELASTICITY = 2.0
#: Latency changes below this share are noise between short runs, never a knee.
LATENCY_NOISE = 0.10
#: The CSV's columns, all numeric (reliable: 1 or 0; empty: not measured). `users` is the closed
#: loop level, `offered_rps` the open loop one (users then share it).
COLUMNS = ("users", "offered_rps", "rps", "images_per_s", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
           "max_ms", "error_rate", "queue_ms", "compute_ms", "client_and_network_ms", "avg_batch",
           "reliable")


def label(row: dict[str, Any]) -> str:
    """`8 users` or `40 req/s`: how a level is shown in the table and the plot."""
    if row.get("offered_rps") is not None:
        return f"{row['offered_rps']:g} req/s"
    return f"{row['users']:g} users"


def row_of(load: float, mode: str, users: int, report: dict[str, Any] | None) -> dict[str, Any]:
    """One table row from one run's report (a run without statistics gives an empty row)."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(users=int(load) if mode == "users" else users,
               offered_rps=load if mode == "rate" else None, reliable=0)
    if report is None:
        return row
    server, flow, lat = report.get("server", {}), report["throughput"], report["latency_ms"]
    row.update(
        rps=flow["requests_per_s"], images_per_s=flow["images_per_s"],
        p50_ms=lat["p50"], p90_ms=lat["p90"], p95_ms=lat["p95"], p99_ms=lat["p99"],
        max_ms=lat["max"], error_rate=flow["error_rate"], queue_ms=server.get("queue_ms"),
        compute_ms=server.get("compute_ms"),
        client_and_network_ms=server.get("client_and_network_ms"),
        avg_batch=server.get("avg_batch"), reliable=int(report["generator"]["reliable"]))
    return row


def overloaded(row: dict[str, Any]) -> bool:
    """Failed requests, or (open loop) an achieved rate below 95% of the offered one."""
    if (row.get("error_rate") or 0) > 0 or not row.get("rps"):
        return True
    return bool(row.get("offered_rps")) and row["rps"] < 0.95 * row["offered_rps"]


def find_knee(rows: list[dict[str, Any]], elasticity: float = KNEE_ELASTICITY) -> int | None:
    """Index of the last level before latency starts growing much faster than throughput.

    Walking up the healthy levels (no failures; open loop: the offered rate achieved) in the
    given order, a step from one level to the next "breaks" when the median latency rises by more
    than `elasticity` times the relative throughput gain (and by more than 10%, the noise of short
    runs). The knee is the level before the first break: up to it, more load buys throughput;
    past it, more load mostly queues. Medians are used because tails of short runs are noisy.
    """
    healthy = [i for i, r in enumerate(rows) if not overloaded(r) and r.get("p50_ms")]
    if not healthy:
        return None
    knee = healthy[0]
    for prev, cur in zip(healthy, healthy[1:], strict=False):
        a, b = rows[prev], rows[cur]
        gain = max((b["rps"] - a["rps"]) / a["rps"], 0.0)
        cost = (b["p50_ms"] - a["p50_ms"]) / a["p50_ms"]
        if cost > LATENCY_NOISE and cost > elasticity * gain:
            break
        knee = cur
    return knee


def find_peak(rows: list[dict[str, Any]]) -> int | None:
    candidates = [i for i, r in enumerate(rows) if r.get("rps")]
    return max(candidates, key=lambda i: rows[i]["rps"]) if candidates else None


def format_table(rows: list[dict[str, Any]], knee: int | None, peak: int | None) -> str:
    """A Markdown table, readable in a terminal and pasteable into a release note."""

    def cell(key: str, value: Any) -> str:
        if value is None:
            return "-"
        if key == "reliable":
            return "yes" if value else "NO"
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 1 else f"{value:.1f}"
        return str(value)

    head = ["load", "req/s", "img/s", "p50 ms", "p95 ms", "p99 ms", "errors", "queue ms",
            "compute ms", "client+net ms", "batch", "reliable", ""]
    keys = ["rps", "images_per_s", "p50_ms", "p95_ms", "p99_ms", "error_rate", "queue_ms",
            "compute_ms", "client_and_network_ms", "avg_batch", "reliable"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, row in enumerate(rows):
        marks = []
        if i == knee:
            marks.append("knee")
        if i == peak:
            marks.append("peak")
        if row.get("rps") is not None and overloaded(row):
            marks.append("overloaded")
        cells = [label(row)] + [cell(k, row.get(k)) for k in keys]
        lines.append("| " + " | ".join(cells + [", ".join(marks)]) + " |")
    return "\n".join(lines)


def figure(rows: list[dict[str, Any]], knee: int | None, title: str) -> Any:
    """p50/p95/p99 against achieved throughput, knee marked (a matplotlib Figure), or None."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in rows if r.get("rps")]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    x = [r["rps"] for r in points]
    # Colour, marker and line style all differ, so p95 and p99 stay apart in print and greyscale.
    for key, style, color in (("p50_ms", "o-", "tab:blue"), ("p95_ms", "s--", "tab:orange"),
                              ("p99_ms", "^:", "tab:red")):
        ax.plot(x, [r[key] for r in points], style, color=color, label=key.replace("_ms", ""),
                linewidth=1.6, markersize=5)
    for r in points:
        ax.annotate(label(r), (r["rps"], r["p99_ms"]), textcoords="offset points", xytext=(0, 8),
                    ha="center", fontsize=7, color="dimgray")
        if not r.get("reliable"):
            ax.plot([r["rps"]], [r["p95_ms"]], "x", color="black", markersize=10)
    # Room around the points, so no label sits on an axis.
    ax.set_ylim(0, max(r["p99_ms"] for r in points) * 1.25)
    ax.margins(x=0.12)
    if knee is not None and rows[knee].get("rps"):
        k = rows[knee]
        ax.axvline(k["rps"], color="gray", linestyle="--", linewidth=1)
        # The text sits inside the axes (axes fraction), right of the legend, away from the knee.
        right = (k["rps"] - min(x)) < (max(x) - min(x)) / 2 if max(x) > min(x) else True
        ax.annotate(f"knee: {label(k)}\n{k['rps']:.1f} req/s, p95 {k['p95_ms']:.0f} ms",
                    (k["rps"], k["p95_ms"]), xycoords="data", textcoords="axes fraction",
                    xytext=(0.55 if right else 0.25, 0.97), ha="left", va="top", fontsize=8,
                    bbox={"boxstyle": "round", "fc": "white", "ec": "gray", "alpha": 0.9},
                    arrowprops={"arrowstyle": "->", "color": "gray"})
    ax.set_xlabel("achieved throughput (requests/s)")
    ax.set_ylabel("latency (ms, exact percentiles)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(title="latency", loc="upper left")
    if any(not r.get("reliable") for r in points):
        ax.text(0.99, 0.01, "x: load generator limited this level (unreliable)",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="black")
    fig.tight_layout()
    return fig


def plot(rows: list[dict[str, Any]], knee: int | None, path: Path, title: str) -> Path | None:
    """The figure as a PNG at `path`; None without matplotlib or without a measured level."""
    try:
        import matplotlib.pyplot as plt

        fig = figure(rows, knee, title)
    except ImportError:
        return None
    if fig is None:
        return None
    fig.savefig(path)
    plt.close(fig)
    return path


def sweep(args: argparse.Namespace) -> int:
    """Run every level, write `<out>_sweep.{json,csv,md,png}`, print the table; 1 if a level broke.

    Each level's own report stays in `<out>_sweep_levels/` (its JSON; the Locust HTML and CSV
    only with --locust-html; the Locust log only when the level failed).
    """
    mode = "rate" if args.rates else "users"
    levels = [float(v) for v in (args.rates or args.users_list).split(",") if v]
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    level_dir = Path(f"{out}_sweep_levels")
    level_dir.mkdir(exist_ok=True)
    rows, reports, worst = [], [], 0
    for i, level in enumerate(levels):
        step = copy.copy(args)
        step.out = level_dir / f"level{i}"
        step.steps = None
        step.duration = args.step_duration
        step.locust_files = args.locust_html
        if mode == "rate":
            step.arrival_rate = level
            step.users = args.users
        else:
            step.arrival_rate = None
            step.users = int(level)
        step.spawn_rate = None
        code, report = run(step, quiet=True)
        if code == 0 and report is not None:
            Path(report["files"]["log"]).unlink(missing_ok=True)
        row = row_of(level, mode, args.users, report)
        rows.append(row)
        reports.append(f"{step.out}.json")
        if report is None or report["throughput"]["requests"] == 0:
            worst = 1
        print(f"  {label(row):>12}: {row['rps'] or 0:8.1f} req/s  p50 {row['p50_ms'] or 0:7.1f}  "
              f"p95 {row['p95_ms'] or 0:7.1f}  p99 {row['p99_ms'] or 0:7.1f} ms  "
              f"errors {row['error_rate'] or 0:.3f}{'' if row['reliable'] else '  (unreliable)'}",
              flush=True)
        if code == 5:  # the target is not there: every other level would say the same
            return code
    knee, peak = find_knee(rows), find_peak(rows)
    table = format_table(rows, knee, peak)
    title = (f"{args.model}: {args.user} user, batch {args.batch}, "
             f"{'open loop' if mode == 'rate' else 'closed loop'}, {args.step_duration} per level")
    png = plot(rows, knee, Path(f"{out}_sweep.png"), title)
    result = {"mode": mode, "rows": rows, "knee": knee, "peak": peak,
              "knee_passed": knee is not None and knee < len(rows) - 1,
              "reports": reports, "plot": str(png) if png else None, "config": vars_of(args)}
    Path(f"{out}_sweep.json").write_text(json.dumps(result, indent=2))
    Path(f"{out}_sweep.md").write_text(f"{title}\n\n{table}\n")
    with Path(f"{out}_sweep.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: r.get(k) for k in COLUMNS} for r in rows)
    print()
    print(table)
    if knee is not None:
        k = rows[knee]
        print(f"knee: {label(k)} -> {k['rps']:.1f} req/s ({k['images_per_s']:.1f} images/s) at "
              f"p50 {k['p50_ms']:.1f} / p95 {k['p95_ms']:.1f} ms")
        if knee == len(rows) - 1:
            print("knee not passed: throughput still grew at the last level; add higher levels")
    if peak is not None:
        p = rows[peak]
        print(f"peak: {label(p)} -> {p['rps']:.1f} req/s at p95 {p['p95_ms']:.1f} ms")
    print(f"sweep: {out}_sweep.md, {out}_sweep.csv, {out}_sweep.json"
          + (f", {png}" if png else " (no plot: matplotlib missing)"))
    return worst


def vars_of(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
            if k not in ("func", "users")}
