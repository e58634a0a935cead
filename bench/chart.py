#!/usr/bin/env python3
"""Grouped bar chart of median req/s: one panel per configuration, one group per
load shape, one bar per server. Reads the "summary" of a raw results JSON.

    bench/.venv/bin/python bench/chart.py bench/out/latest.json bench/results.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402


def short(value: float) -> str:
    if value >= 9950:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


def missing_label(results: dict, server: str, processes: int) -> str:
    if any(f["server"] == server and f["processes"] == processes for f in results["failures"]):
        return "failed"
    return "n/a"


def broken(row: dict) -> bool:
    return bool(row.get("pipeline_depth")) and row["pipeline_answered"] < row["pipeline_depth"]


def panel(ax, results: dict, processes: int) -> None:
    meta = results["meta"]
    servers, shapes = list(meta["servers"]), list(meta["shapes"])
    rows = {(r["server"], r["shape"]): r for r in results["summary"] if r["processes"] == processes}
    width = 0.84 / len(servers)
    for i, server in enumerate(servers):
        for s, shape in enumerate(shapes):
            x = s + (i - (len(servers) - 1) / 2) * width
            row = rows.get((server, shape))
            value = row["rps"] if row else 0
            ax.bar(x, value, width, color=f"C{i}", label=server if s == 0 else None,
                   edgecolor="black" if server == "wsgistack" else "white", linewidth=1.2,
                   hatch="//" if row and broken(row) else None)
            if row:
                label = short(value) + (" broken" if broken(row) else "")
            else:
                label = missing_label(results, server, processes)
            ax.annotate(label, (x, value), ha="center", va="bottom", fontsize=6.5, rotation=90,
                        xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(shapes)), [meta["shapes"][s] for s in shapes])
    ax.set_title(f"{processes} process{'es' if processes > 1 else ''}")
    ax.set_ylabel("requests/s (median over rounds)")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: short(v)))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.margins(y=0.18)


def main(src: str, dst: str) -> None:
    with open(src) as f:
        results = json.load(f)
    meta = results["meta"]
    configs = meta["configs"]
    fig, axes = plt.subplots(1, len(configs), figsize=(max(10, 7 * len(configs)), 5.5), squeeze=False)
    for ax, processes in zip(axes[0], configs):
        panel(ax, results, processes)
    fig.suptitle(f"Hello-world WSGI over loopback: wrk -t1 -c64, {meta['duration_s']} s per run, "
                 f"{meta['rounds']} round(s) ({meta['mode']}), {meta['machine']['nproc']} CPUs, {meta['started']}\n"
                 "hatched = server answers only the first of 16 pipelined requests", fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:3])
