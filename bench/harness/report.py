"""Summaries of the raw runs and the RESULTS.md report: the throughput scenario's
sections (method, targets, one table per configuration), then the reload and nginx
scenarios' sections, then failures. Sections of scenarios that did not run are left out."""

from __future__ import annotations

from statistics import median

from .load import PIPELINE_DEPTH, SHAPES
from .reload import exit_text
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

# nginx scenario, (app, ratio): every nginx -> wsgistack variant's median req/s must be >= ratio x nginx -> uWSGI's.
NGINX_TARGETS = [("hello", 1.3), ("django", 1.0)]

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


def _groups(runs: list[dict], *fields: str) -> dict[tuple, list[dict]]:
    """Runs grouped by the values of `fields`, in order of first appearance."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(tuple(run[f] for f in fields), []).append(run)
    return groups


def _rate_stats(group: list[dict]) -> dict:
    """req/s median and range, median p50/p99 latency, errors summed: over the rounds of one group."""
    return {
        "rounds": len(group),
        "rps": median(r["rps"] for r in group),
        "rps_min": min(r["rps"] for r in group), "rps_max": max(r["rps"] for r in group),
        "p50_ms": _median_of(group, lambda r: r["latency_ms"].get("50")),
        "p99_ms": _median_of(group, lambda r: r["latency_ms"].get("99")),
        "errors": _errors(group),
    }


def summarize(runs: list[dict]) -> list[dict]:
    """Throughput: one row per (processes, server, shape) that has runs: medians over rounds."""
    rows = []
    for (processes, server, shape), group in _groups(runs, "processes", "server", "shape").items():
        rows.append({
            "processes": processes, "server": server, "shape": shape, **_rate_stats(group),
            "rss_mib": _median_of(group, lambda r: r["rss_peak_bytes"] / MIB if r["rss_peak_bytes"] else None),
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


def summarize_reloads(runs: list[dict]) -> list[dict]:
    """Reload: one row per server, counts summed over rounds."""
    return [{
        "server": server, "processes": group[0]["processes"], "rounds": len(group),
        "reloads_sent": sum(r["reloads_sent"] for r in group), "requests": sum(r["requests"] for r in group),
        "failed": sum(r["failed"] for r in group), "failed_per_round": [r["failed"] for r in group],
        "errors": _errors(group), "new_processes": [r["new_processes"] for r in group],
        "serving_after": all(r["serving_after"] for r in group),
        "master_exits": [r.get("master_exit") for r in group if r.get("master_exit") is not None],
    } for (server,), group in _groups(runs, "server").items()]


def summarize_nginx(runs: list[dict], reference: str | None) -> list[dict]:
    """nginx: one row per (app, variant): medians over rounds, req/s ÷ the reference variant's."""
    rows = [{"app": app, "server": server, "backend": group[0]["backend"], **_rate_stats(group),
             "app_cpu_us": _median_of(group, lambda r: r.get("app_cpu_us")),
             "nginx_cpu_us": _median_of(group, lambda r: r.get("nginx_cpu_us"))}
            for (app, server), group in _groups(runs, "app", "server").items()]
    for row in rows:
        ref = next((r for r in rows if (r["app"], r["server"]) == (row["app"], reference)), None)
        row["ref_ratio"] = row["rps"] / ref["rps"] if ref and ref["rps"] else None
    return rows


def _pipelining_broken(row: dict) -> bool:
    return bool(row["pipeline_depth"]) and row["pipeline_answered"] < row["pipeline_depth"]


def _find(rows: list[dict], processes: int, server: str, shape: str) -> dict | None:
    return next((r for r in rows if (r["processes"], r["server"], r["shape"]) == (processes, server, shape)), None)


# ---------------------------------------------------------------- formatting

def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "—" if value is None else fmt.format(value)


def _error_kinds(errors: dict) -> list[str]:
    return [f"{kind.replace('non_2xx_3xx', 'status ≥ 400')} {n:,}" for kind, n in errors.items() if n]


def _errors_cell(row: dict) -> str:
    parts = _error_kinds(row["errors"])
    if row["probes_unanswered"]:
        parts.insert(0, f"**starves new connections**: {row['probes_unanswered']}/{row['probes']} "
                        "fresh-connection probes unanswered within 2 s")
    if _pipelining_broken(row):
        parts.insert(0, f"**pipelining broken**: answered {row['pipeline_answered']} of {row['pipeline_depth']} "
                        "pipelined requests")
    return ", ".join(parts) if parts else "0"


def _table(results: dict, processes: int) -> list[str]:
    rows, status = results["summary"], _status(results, "throughput", processes=processes)
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


def _status(results: dict, scenario: str, **match) -> dict[str, str]:
    """Why a server of `scenario` (and e.g. processes=2 or app="hello") has no row: failed or n/a."""
    def matches(item: dict) -> bool:
        return item.get("scenario", "throughput") == scenario and all(item.get(k) == v for k, v in match.items())

    status = {}
    for item in filter(matches, results["failures"]):
        status.setdefault(item["server"], f"**failed** ({item['stage']}, see below)")
    for item in filter(matches, results["skipped"]):
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
        lines += [f"- **{item['server']}** ({_where(item)}, {item['stage']}):", "", "  ```",
                  *("  " + line for line in item["reason"].splitlines()), "  ```", ""]
    server_dists = set(results["meta"]["servers"].values())
    for name, reason in results["meta"]["setup_errors"].items():
        if name in server_dists:
            continue  # already listed above as that server's install failure
        lines += [f"- setup of `{name}`:", "", "  ```", *("  " + line for line in reason.splitlines()), "  ```", ""]
    return lines or ["None."]


def _where(item: dict) -> str:
    scenario = item.get("scenario", "throughput")
    if scenario == "throughput":
        place = _config_title(item["processes"])
    elif scenario == "reload":
        place = f"reload scenario, {item['processes']} workers"
    else:
        place = f"nginx scenario, {item['app']}"
    return f"{place}, " + (f"round {item['round']}" if item.get("round") else "setup")


def markdown(results: dict) -> str:
    meta = results["meta"]
    scenarios = meta.get("scenarios", ["throughput"])
    out = _header(results)
    if "throughput" in scenarios:
        out += _throughput_sections(results)
    if "reload" in scenarios and meta.get("reload"):
        out += _reload_section(results)
    if "nginx" in scenarios and meta.get("nginx"):
        out += _nginx_section(results)
    out += ["## Failures", "", *_failures(results), ""]
    return "\n".join(out)


def _header(results: dict) -> list[str]:
    meta = results["meta"]
    machine = meta["machine"]
    dists = list(dict.fromkeys(meta["servers"].values())) + (["django"] if meta.get("nginx") else [])
    nginx = [f"- nginx: {meta['nginx']['nginx_version']}"] if meta.get("nginx") else []
    return [
        "# wsgistack benchmark results",
        "",
        f"Generated by `{meta['command']}` on {meta['started']} (took {meta['elapsed_s']:.0f} s).",
        "Scenarios: " + ", ".join(meta.get("scenarios", ["throughput"])) + ". "
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
        *nginx,
        "- Versions: " + ", ".join(f"{dist} {meta['versions'].get(dist, 'not installed')}" for dist in dists),
        "",
    ]


def _throughput_sections(results: dict) -> list[str]:
    meta = results["meta"]
    out = [
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
    return out + ["![req/s per server and shape](results.png)", ""]


# ---------------------------------------------------------------- scenario "reload"

def _reload_section(results: dict) -> list[str]:
    meta, rmeta = results["meta"], results["meta"]["reload"]
    return [
        "## Requests failed during reloads",
        "",
        f"- Each server that has a graceful reload runs with {rmeta['workers']} workers and serves the hello world "
        f"under wrk for {rmeta['duration_s']} s: `{rmeta['wrk_command']}` (1 thread, 32 keep-alive connections). "
        f"From {rmeta['first_at_s']:g} s on, the harness sends {rmeta['reloads']} reloads "
        f"{rmeta['interval_s']:g} s apart to the server's master (the process it started), after a "
        f"{meta['warmup_s']} s warm-up; {meta['rounds']} round(s), interleaved, no CPU pinning.",
        "- **failed** = wrk's socket errors (connect, read, write, timeout) + responses with status ≥ 400; "
        "requests and failed are summed over rounds.",
        "- **new processes** (per round): pids that appeared in the server's session during the run (listed every "
        "0.5 s, so a very short-lived one can be missed) — evidence that the reloads really replaced workers; "
        "a server ignoring the signal would show 0 failed and 0 new processes. **serving after**: a GET after "
        "the run is answered 2xx (if not, how its master ended; once it is gone, wrk's errors against the closed "
        "port count as failed too, so the number then says little beyond \"went down\").",
        f"- Target: 0 failed for {REFERENCE}.",
        "",
        *_reload_table(results),
        "",
        "Server command lines (PORT = a free port) and reload mechanisms:",
        "",
        "```",
        *(f"{name}: {cmd}" for name, cmd in rmeta["commands"].items()),
        "```",
        "",
        *(f"- {name}: {note}" for name, note in rmeta["notes"].items()),
        "",
    ]


def _reload_table(results: dict) -> list[str]:
    rmeta, status = results["meta"]["reload"], _status(results, "reload")
    rows = {row["server"]: row for row in results.get("reload_summary", [])}
    lines = ["| Server | Reload command | Reloads sent | Requests | Failed | Failed per round | Kinds "
             "| New processes | Serving after |", "|---|---|--:|--:|--:|--:|---|--:|---|"]
    for server in results["meta"]["servers"]:
        row = rows.get(server)
        if row is None:
            lines.append(f"| {server} | {status.get(server, 'no result')} | | | | | | | |")
            continue
        failed = f"**{row['failed']:,}**" if row["failed"] else "0"
        lines.append(f"| {server} | `{rmeta['reload_commands'][server]}` | {row['reloads_sent']} | "
                     f"{row['requests']:,} | {failed} | {' / '.join(f'{n:,}' for n in row['failed_per_round'])} | "
                     f"{', '.join(_error_kinds(row['errors'])) or '—'} | "
                     f"{' / '.join(map(str, row['new_processes']))} | {_after_cell(row)} |")
    return lines


def _after_cell(row: dict) -> str:
    if row["serving_after"]:
        return "yes"
    return "**no**" + "".join(f", {exit_text(status)}" for status in dict.fromkeys(row.get("master_exits", [])))


# ---------------------------------------------------------------- scenario "nginx"

def _nginx_section(results: dict) -> list[str]:
    meta, nmeta = results["meta"], results["meta"]["nginx"]
    out = [
        "## nginx in front",
        "",
        f"- nginx {nmeta['nginx_version']} (Debian's `/usr/sbin/nginx`) in the foreground, `worker_processes 1`, "
        "no access log, its config, pid file and temp paths in a temporary prefix; in front of an app server "
        f"with {nmeta['processes']} processes (1 thread each, unless the variant names its threads) on a free "
        "127.0.0.1 port. No CPU pinning: wrk, nginx and the app processes share the CPUs.",
        "- Apps: " + "; ".join(f"*{title}*" for title in nmeta["apps"].values())
        + ". The Django page is `examples/mmcsite`'s `/`: a template listing the 10 most recent rows of a "
        "SQLite table (seeded with 10) plus a COUNT query, DEBUG off, in a fresh database migrated before the "
        "scenario (environment: " + "; ".join(f"`{env}`" for env in nmeta.get("app_env", {}).values()) + ").",
        f"- wrk against nginx: `{nmeta['wrk_command']}`. For each app, for each round, for each variant: start the "
        f"app server, then nginx, wait for a 2xx through nginx, warm up {meta['warmup_s']} s, measure, stop both.",
        f"- ratio = req/s ÷ {nmeta['reference']}'s req/s (same app). errors as above (socket errors + status ≥ 400). "
        "app / nginx CPU µs/req: user + system CPU time of the app server's processes / of nginx during the run "
        "(/proc), divided by the requests wrk counted (median over rounds): where each request's cost goes."
        f" Targets: every nginx → {REFERENCE} variant "
        + ", ".join(f"≥ {ratio:g}× on {nmeta['apps'].get(app, app)}" for app, ratio in NGINX_TARGETS)
        + " (a threaded variant: × uWSGI with as many threads).",
        "",
        "### Targets",
        "",
        *_nginx_targets(results),
        "",
    ]
    for app, title in nmeta["apps"].items():
        out += [f"### {title}", "", *_nginx_table(results, app), ""]
    return out + [
        "![req/s behind nginx](results-nginx.png)",
        "",
        "nginx.conf (PREFIX = its temporary directory, PORT = nginx's port, APP_PORT = the app server's), "
        f"started as `{nmeta['nginx_command']}`:",
        "",
        "```nginx",
        *nmeta["config"].splitlines(),
        "```",
        "",
        "Per variant, `upstream app` and `location /` are:",
        "",
        *_nginx_blocks(nmeta),
        "App server command lines:",
        "",
        "```",
        *(f"{variant} [{app}]: {cmd}" for app, cmds in nmeta["commands"].items() for variant, cmd in cmds.items()),
        "```",
        "",
    ]


def _nginx_blocks(nmeta: dict) -> list[str]:
    lines = []
    for title, block in nmeta["blocks"].items():
        lines += [f"- {title}:", "", "  ```nginx", *(f"  {line}" for line in block), "  ```", ""]
    return lines


def _nginx_table(results: dict, app: str) -> list[str]:
    nmeta, status = results["meta"]["nginx"], _status(results, "nginx", app=app)
    rows = {row["server"]: row for row in results.get("nginx_summary", []) if row["app"] == app}
    lines = [f"| Variant | req/s (median) | min – max | ÷ {nmeta['reference']} | p50 ms | p99 ms "
             "| app CPU µs/req | nginx CPU µs/req | errors |",
             "|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for variant in nmeta["variants"]:
        row = rows.get(variant)
        if row is None:
            reason = status.get(variant) or status.get("every server", "no result")
            lines.append(f"| {variant} | {reason} | | | | | | | |")
            continue
        cells = [variant, _num(row["rps"]), f"{_num(row['rps_min'])} – {_num(row['rps_max'])}",
                 _num(row["ref_ratio"], "{:.2f}×"), _num(row["p50_ms"], "{:.2f}"), _num(row["p99_ms"], "{:.2f}"),
                 _num(row.get("app_cpu_us"), "{:.1f}"), _num(row.get("nginx_cpu_us"), "{:.1f}"),
                 ", ".join(_error_kinds(row["errors"])) or "0"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _nginx_targets(results: dict) -> list[str]:
    nmeta = results["meta"]["nginx"]
    rows = results.get("nginx_summary", [])
    lines = ["| App | Variant | Target | measured | Met? |", "|---|---|---|--:|---|"]
    for app, ratio in NGINX_TARGETS:
        if app not in nmeta["apps"]:
            continue
        status = _status(results, "nginx", app=app)
        for variant in (v for v in nmeta["variants"] if nmeta["backends"][v] == REFERENCE):
            reference = nmeta.get("references", {}).get(variant, nmeta["reference"])
            row = next((r for r in rows if (r["app"], r["server"]) == (app, variant)), None)
            ref = next((r for r in rows if (r["app"], r["server"]) == (app, reference)), None)
            if row and ref and ref["rps"]:
                measured = row["rps"] / ref["rps"]
                cell, met = f"{measured:.2f}×", "yes" if measured >= ratio else "**no**"
            else:
                why = "no reference result" if row else status.get(variant, "no result")
                cell, met = "—", f"not measured ({why})"
            lines.append(f"| {nmeta['apps'][app]} | {variant} | ≥ {ratio:g}× {reference} | {cell} | {met} |")
    return lines
