"""Summaries of the raw runs and the RESULTS.md report."""

from __future__ import annotations

from statistics import median

from .load import PIPELINE_DEPTH, SHAPES
from .servers import REFERENCE, SERVERS

# (processes, peer, ratio): wsgistack's median req/s must be >= ratio x the peer's,
# on every shape marked `target` (the two header sets).
TARGETS = [
    (1, "FastWSGI", 0.8),
    (2, "bjoern", 1.0),
    (2, "Granian", 1.8),
    (2, "uWSGI", 2.0),
    (2, "gunicorn sync", 10.0),
]

MIB = 1024 * 1024


def _errors(runs: list[dict]) -> dict:
    total = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non_2xx_3xx": 0}
    for run in runs:
        for kind, count in run["socket_errors"].items():
            total[kind] += count
        total["non_2xx_3xx"] += run["non_2xx_3xx"]
    return total


def _median_of(runs: list[dict], get) -> float | None:
    values = [v for v in (get(r) for r in runs) if v is not None]
    return median(values) if values else None


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (processes, server, shape) that has runs: medians over rounds."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["processes"], run["server"], run["shape"]), []).append(run)
    rows = []
    for (processes, server, shape), group in groups.items():
        rows.append({
            "processes": processes, "server": server, "shape": shape, "rounds": len(group),
            "rps": median(r["rps"] for r in group),
            "rps_min": min(r["rps"] for r in group), "rps_max": max(r["rps"] for r in group),
            "p50_ms": _median_of(group, lambda r: r["latency_ms"].get("50")),
            "p99_ms": _median_of(group, lambda r: r["latency_ms"].get("99")),
            "rss_mib": _median_of(group, lambda r: r["rss_peak_bytes"] / MIB if r["rss_peak_bytes"] else None),
            "errors": _errors(group),
            "probes": sum(len(r.get("fresh_conn_ms", [])) for r in group),
            "probes_unanswered": sum(r.get("fresh_conn_ms", []).count(None) for r in group),
            "pipeline_depth": group[0].get("pipeline_depth"),
            "pipeline_answered": min((r["pipeline_answered"] for r in group if "pipeline_answered" in r), default=None),
        })
    for row in rows:
        ref = _find(rows, row["processes"], REFERENCE, row["shape"])
        comparable = ref and row["rps"] and not _pipelining_broken(row) and not _pipelining_broken(ref)
        row["ref_ratio"] = ref["rps"] / row["rps"] if comparable else None
    return rows


def _pipelining_broken(row: dict) -> bool:
    return bool(row["pipeline_depth"]) and row["pipeline_answered"] < row["pipeline_depth"]


def _find(rows: list[dict], processes: int, server: str, shape: str) -> dict | None:
    return next((r for r in rows if (r["processes"], r["server"], r["shape"]) == (processes, server, shape)), None)


# ---------------------------------------------------------------- formatting

def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "—" if value is None else fmt.format(value)


def _errors_cell(row: dict) -> str:
    parts = [f"{kind.replace('non_2xx_3xx', 'status ≥ 400')} {n:,}" for kind, n in row["errors"].items() if n]
    if row["probes_unanswered"]:
        parts.insert(0, f"**starves new connections**: {row['probes_unanswered']}/{row['probes']} "
                        "fresh-connection probes unanswered within 2 s")
    if _pipelining_broken(row):
        parts.insert(0, f"**pipelining broken**: answered {row['pipeline_answered']} of {row['pipeline_depth']} "
                        "pipelined requests")
    return ", ".join(parts) if parts else "0"


def _table(results: dict, processes: int) -> list[str]:
    rows, status = results["summary"], _status_by_server(results, processes)
    lines = [
        "| Shape | Server | req/s (median) | min – max | wsgistack ÷ server | p50 ms | p99 ms | RSS MiB "
        "| errors and anomalies |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for shape in SHAPES:
        for server in SERVERS:
            if server.name not in results["meta"]["servers"]:
                continue
            row = _find(rows, processes, server.name, shape.key)
            if row is None:
                lines.append(f"| {shape.title} | {server.name} | {status.get(server.name, 'no result')} | | | | | | |")
                continue
            cells = [shape.title, server.name, _num(row["rps"]), f"{_num(row['rps_min'])} – {_num(row['rps_max'])}",
                     _num(row["ref_ratio"], "{:.2f}×"), _num(row["p50_ms"], "{:.2f}"), _num(row["p99_ms"], "{:.2f}"),
                     _num(row["rss_mib"], "{:.1f}"), _errors_cell(row)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _status_by_server(results: dict, processes: int) -> dict[str, str]:
    status = {}
    for item in results["failures"]:
        if item["processes"] == processes:
            status.setdefault(item["server"], f"**failed** ({item['stage']}, see below)")
    for item in results["skipped"]:
        if item["processes"] == processes:
            status[item["server"]] = f"n/a: {item['reason']}"
    return status


def _targets(results: dict) -> list[str]:
    lines = ["| Config | Target | Shape | wsgistack ÷ peer | Met? |", "|---|---|---|--:|---|"]
    for processes, peer, ratio in TARGETS:
        if processes not in results["meta"]["configs"]:
            continue
        for shape in (s for s in SHAPES if s.target):
            ref = _find(results["summary"], processes, REFERENCE, shape.key)
            row = _find(results["summary"], processes, peer, shape.key)
            if ref and row:
                measured = ref["rps"] / row["rps"]
                met = "yes" if measured >= ratio else "**no**"
                cell = f"{measured:.2f}×"
            else:
                cell, met = "—", f"not measured ({'wsgistack' if not ref else peer} has no result)"
            lines.append(f"| {_config_title(processes)} | ≥ {ratio:g}× {peer} | {shape.title} | {cell} | {met} |")
    return lines


def _config_title(processes: int) -> str:
    return f"{processes} process" + ("es" if processes > 1 else "")


def _failures(results: dict) -> list[str]:
    lines, seen = [], set()
    for item in results["failures"]:
        if item["stage"] == "install":  # one install failure shows up once per configuration: list it once
            if (item["server"], item["reason"]) in seen:
                continue
            seen.add((item["server"], item["reason"]))
        where = f"{_config_title(item['processes'])}, round {item['round']}" if item.get("round") else "setup"
        lines += [f"- **{item['server']}** ({where}, {item['stage']}):", "", "  ```",
                  *("  " + line for line in item["reason"].splitlines()), "  ```", ""]
    server_dists = set(results["meta"]["servers"].values())
    for name, reason in results["meta"]["setup_errors"].items():
        if name in server_dists:
            continue  # already listed above as that server's install failure
        lines += [f"- setup of `{name}`:", "", "  ```", *("  " + line for line in reason.splitlines()), "  ```", ""]
    return lines or ["None."]


def markdown(results: dict) -> str:
    meta = results["meta"]
    machine = meta["machine"]
    out = [
        "# wsgistack benchmark results",
        "",
        f"Generated by `{meta['command']}` on {meta['started']} (took {meta['elapsed_s']:.0f} s).",
        f"Mode: **{meta['mode']}** — {meta['duration_s']} s per run, {meta['rounds']} round(s), "
        "median over rounds."
        + (" Quick mode is a smoke test: numbers are indicative only." if meta["mode"] == "quick" else "")
        + (" **The run was interrupted: results are partial.**" if meta.get("interrupted") else ""),
        "",
        "## Machine",
        "",
        f"- CPUs: {machine['nproc']} (`nproc`), {machine['cpu_model']}",
        f"- Kernel: {machine['kernel']}",
        f"- Python: {machine['python']}",
        f"- Load average (1/5/15 min) at start: {machine['loadavg_start']}, at end: {machine.get('loadavg_end', '?')}"
        " — anything else running on the machine disturbs the numbers.",
        f"- wrk: {meta['wrk_version']}",
        "- Versions: " + ", ".join(f"{dist} {meta['versions'].get(dist, 'not installed')}"
                                    for dist in dict.fromkeys(meta["servers"].values())),
        "",
        "## Method",
        "",
        "- Each server serves `bench/apps/hello.py` (13-byte `Hello, World!`, text/plain, Content-Length) "
        "on a free 127.0.0.1 port.",
        f"- Interleaved rounds: for each configuration, for round 1..{meta['rounds']}, for each server: start it, "
        f"wait for a 2xx, warm up {meta['warmup_s']} s, run the three shapes, stop it (SIGTERM, SIGKILL after 5 s).",
        f"- CPU pinning: {meta['pinning']}",
        "- RSS: peak of the sum of RSS over the server's whole process tree (every process in its session, "
        "masters included), sampled from /proc every second *during* the load run; median over rounds.",
        "- Latency: wrk's `--latency` distribution. With pipelining wrk records one sample per batch of "
        f"{PIPELINE_DEPTH} (from writing the batch to its last response), so compare those only with each other. "
        "`—` = wrk could not compute that percentile.",
        "- errors: wrk socket errors (connect/read/write; timeout = a response slower than wrk's 2 s timeout) "
        "and responses with status ≥ 400 (wrk's \"Non-2xx or 3xx\"), summed over rounds. "
        f"Before the pipelining run the harness also sends {PIPELINE_DEPTH} pipelined GETs in one write and counts the "
        "answers: wrk alone cannot see a server that drops pipelined requests (its connections just stall, "
        "with no error). And about once a second during every run it times a GET on a fresh connection: "
        "one not answered within 2 s means the server starves new clients while busy with wrk's 64 "
        "(e.g. a sync worker holding a keep-alive connection), which req/s and wrk's latency do not show.",
        "- wrk command lines (PORT is the server's port):",
        "",
        "```",
        *meta["wrk_commands"].values(),
        "```",
        "",
        "Server command lines (N = processes):",
        "",
        "```",
        *meta["server_commands"].values(),
        "```",
        "",
        *(f"- {name}: {note}" for name, note in meta["server_notes"].items() if note),
        "",
        "## Targets",
        "",
        *_targets(results),
        "",
    ]
    for processes in meta["configs"]:
        out += [f"## {_config_title(processes)}", "", *_table(results, processes), ""]
    out += ["![req/s per server and shape](results.png)", "", "## Failures", "", *_failures(results), ""]
    return "\n".join(out)
