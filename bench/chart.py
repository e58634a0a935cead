#!/usr/bin/env python3
"""Bar charts of median req/s from a raw results JSON:

- throughput (its "summary"): one panel per configuration, one group per load shape, one bar per server;
- nginx in front (its "nginx_summary"), a second PNG: one panel per app, one bar per variant,
  labelled with req/s and the ratio to nginx -> uWSGI.

Each is drawn only if its scenario ran.

    bench/.venv/bin/python bench/chart.py bench/out/latest.json bench/results.png [bench/results-nginx.png]
"""

import json
import sys
import textwrap

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


def missing_label(results: dict, server: str, **where) -> str:
    """"failed" if the server has a failure where it has no bar (same scenario and e.g. processes), else "n/a"."""
    scenario = "nginx" if "app" in where else "throughput"
    for f in results["failures"]:
        if f.get("scenario", "throughput") == scenario and f["server"] in (server, "every server") \
                and all(f.get(k) == v for k, v in where.items()):
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
                label = missing_label(results, server, processes=processes)
            ax.annotate(label, (x, value), ha="center", va="bottom", fontsize=6.5, rotation=90,
                        xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(shapes)), [meta["shapes"][s] for s in shapes])
    ax.set_title(f"{processes} process{'es' if processes > 1 else ''}")
    ax.set_ylabel("requests/s (median over rounds)")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: short(v)))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.margins(y=0.18)


def nginx_panel(ax, results: dict, app: str) -> None:
    nmeta = results["meta"]["nginx"]
    rows = {r["server"]: r for r in results["nginx_summary"] if r["app"] == app}
    variants, servers = nmeta["variants"], list(results["meta"]["servers"])
    for i, variant in enumerate(variants):
        row = rows.get(variant)
        value = row["rps"] if row else 0
        backend = nmeta["backends"][variant]
        ax.bar(i, value, 0.7, color=f"C{servers.index(backend)}",  # each server's colour in the throughput chart
               edgecolor="black" if backend == "wsgistack" else "white", linewidth=1.2)
        if row:
            label = short(value) + (f"\n{row['ref_ratio']:.2f}×" if row["ref_ratio"] is not None else "")
        else:
            label = missing_label(results, variant, app=app)
        ax.annotate(label, (i, value), ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    labels = [textwrap.fill(v.removeprefix("nginx → "), 14, break_on_hyphens=False) for v in variants]
    ax.set_xticks(range(len(variants)), labels, fontsize=8)
    ax.set_title(nmeta["apps"][app])
    ax.set_ylabel("requests/s through nginx (median over rounds)")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: short(v)))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.margins(y=0.2)


def nginx_chart(results: dict, dst: str) -> None:
    meta, nmeta = results["meta"], results["meta"]["nginx"]
    apps = list(nmeta["apps"])
    fig, axes = plt.subplots(1, len(apps), figsize=(max(8, 7.5 * len(apps)), 5.5), squeeze=False)
    for ax, app in zip(axes[0], apps):
        nginx_panel(ax, results, app)
    fig.suptitle(f"nginx {nmeta['nginx_version']} (1 worker) in front of {nmeta['processes']} app processes: "
                 f"wrk -t1 -c64 against nginx, {nmeta['duration_s']} s per run, {meta['rounds']} round(s) "
                 f"({meta['mode']}), {meta['machine']['nproc']} CPUs, {meta['started']}\n"
                 f"above each bar: req/s and the ratio to {nmeta['reference']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


def main(src: str, dst: str, nginx_dst: str | None = None) -> None:
    with open(src) as f:
        results = json.load(f)
    meta = results["meta"]
    if nginx_dst and meta.get("nginx"):
        nginx_chart(results, nginx_dst)
    if "throughput" in meta.get("scenarios", ["throughput"]):
        throughput_chart(results, dst)


def throughput_chart(results: dict, dst: str) -> None:
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
    main(*sys.argv[1:4])
