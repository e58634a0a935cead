#!/usr/bin/env python3
"""wsgistack benchmark: wsgistack against FastWSGI, bjoern, Granian, uWSGI and
gunicorn, driven by wrk over loopback. One command, sets itself up:

    bash bench/run.sh            # full: 10 s per run, 3 interleaved rounds
    bash bench/run.sh --quick    # smoke: 3 s per run, 1 round

Scenarios (--scenarios, default all): throughput (hello world, 1 and 2 processes,
three load shapes), reload (requests failed during graceful reloads under load),
nginx (nginx in front of the app servers, hello world and a Django page).

Writes bench/out/results-*.json (raw), bench/RESULTS.md, bench/results.png and
bench/results-nginx.png. See bench/README.md for what is measured and how to read it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable
from functools import partial

if sys.version_info < (3, 11):
    raise SystemExit("bench/run.py needs Python 3.11+")

from harness import apps, load, nginx, procs, provision, reload, report
from harness.paths import CHART_SCRIPT, LOGS, OUT, RESULTS_MD, RESULTS_NGINX_PNG, RESULTS_PNG, relative, venv_python
from harness.servers import Server, by_name

WARMUP_S = 1
READY_TIMEOUT_S = 20
PROBE_TIMEOUT_S = 2.0  # a fresh connection not answered within this, under load, counts as starved
WRK_CPU = 0  # with pinning: wrk on CPU 0, a 1-process server on CPU 1
SCENARIOS = ("throughput", "reload", "nginx")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 s per run, 1 round (unless given explicitly)")
    p.add_argument("--duration", type=int, help="seconds per wrk run (default 10, quick 3)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    p.add_argument("--servers", help="comma list of servers (name or slug) to run, e.g. wsgistack,bjoern; "
                   "'all' adds the non-default variants (default: the default set)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma list of scenarios to run (default all: {','.join(SCENARIOS)})")
    p.add_argument("--configs", default="1,2", help="throughput: comma list of process counts (default 1,2)")
    p.add_argument("--reloads", type=int, help="reload: graceful reloads per run (default 10, quick 4)")
    p.add_argument("--reload-interval", type=float, default=1.0, help="reload: seconds between two (default 1)")
    p.add_argument("--reload-workers", type=int, default=2, help="reload: worker processes (default 2)")
    p.add_argument("--apps", default="hello,django", help="nginx: comma list of apps (default hello,django)")
    p.add_argument("--no-pin", action="store_true", help="do not pin wrk / the 1-process server to CPUs")
    p.add_argument("--skip-setup", action="store_true", help="do not apt/pip install, use bench/.venv as it is")
    p.add_argument("--report-only", metavar="JSON", help="only re-render RESULTS.md and the charts from a raw JSON")
    args = p.parse_args(argv)
    args.duration = args.duration or (3 if args.quick else 10)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.configs = [int(c) for c in args.configs.split(",")]
    args.scenarios = _pick(args.scenarios, SCENARIOS, "scenario")
    args.apps = [apps.APPS_BY_KEY[key] for key in _pick(args.apps, tuple(apps.APPS_BY_KEY), "app")]
    args.reload_schedule = reload.Schedule(args.reloads or (4 if args.quick else 10), args.reload_interval)
    args.servers = by_name(args.servers.split(",") if args.servers else None)
    args.command = "bash bench/run.sh" + "".join(" " + shlex.quote(a) for a in argv)
    return args


def _pick(text: str, known: tuple[str, ...], what: str) -> list[str]:
    picked = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in picked if item not in known]
    if unknown or not picked:
        raise SystemExit(f"unknown {what}(s): {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}")
    return [item for item in known if item in picked]  # in the canonical order


# ---------------------------------------------------------------- environment facts

def cpu_plan(pin: bool, processes: int) -> tuple[set[int] | None, set[int] | None]:
    """(wrk CPUs, server CPUs). 1 process: wrk and server get a core each; more: server unpinned."""
    if not pin or (os.cpu_count() or 1) < 2:
        return None, None
    return {WRK_CPU}, ({1 - WRK_CPU} if processes == 1 else None)


def pinning_text(pin: bool) -> str:
    if not pin or (os.cpu_count() or 1) < 2:
        return "none (wrk and servers share all CPUs)."
    return (f"wrk (1 thread) pinned to CPU {WRK_CPU}; in the 1-process configuration the server's whole "
            f"process tree is pinned to CPU {1 - WRK_CPU}; with 2 processes the server is not pinned "
            "(it shares both CPUs with wrk).")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict:
    python = subprocess.run([venv_python(), "-VV"], stdout=subprocess.PIPE, text=True).stdout.strip() \
        if Path(venv_python()).exists() else sys.version
    return {"nproc": os.cpu_count(), "cpu_model": cpu_model(), "kernel": f"{platform.system()} {platform.release()}",
            "python": python.replace("\n", " "), "loadavg_start": loadavg()}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ---------------------------------------------------------------- one server, one round

def measure(proc: procs.ServerProcess, argv: list[str], duration: int, wrk_cpus) -> dict:
    """One wrk run; meanwhile, about once a second, sample the tree's RSS and time a fresh connection."""
    peak, probes = 0, []

    def sample() -> None:
        nonlocal peak
        peak = max(peak, proc.rss())
        probes.append(procs.fresh_connection_ms(proc.port, PROBE_TIMEOUT_S))

    output = load.run_wrk(argv, duration, wrk_cpus, on_tick=sample)
    if not peak:
        peak = proc.rss()
    return {**load.parse_wrk(output), "rss_peak_bytes": peak, "fresh_conn_ms": probes, "wrk_output": output}


def bench_server(server: Server, processes: int, rnd: int, args, results: dict) -> None:
    """Start the server, warm it up, run every shape, stop it. Runs are appended as they finish."""
    wrk_cpus, server_cpus = cpu_plan(not args.no_pin, processes)
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}/"
    log = LOGS / f"{server.slug}-p{processes}-r{rnd}.log"
    with procs.running(server.argv(port, processes), port, log, server_cpus, READY_TIMEOUT_S) as proc:
        load.warm_up(url, WARMUP_S, wrk_cpus)
        for shape in load.SHAPES:
            probe = procs.pipelined_answers(port, shape.pipeline) if shape.pipeline else None
            run = measure(proc, load.wrk_command(shape, url, args.duration), args.duration, wrk_cpus)
            run.update(server=server.name, processes=processes, round=rnd, shape=shape.key)
            if shape.pipeline:
                run.update(pipeline_depth=shape.pipeline, pipeline_answered=probe)
            results["runs"].append(run)
            print_run(run)
            if not proc.alive():
                raise RuntimeError(proc.failure(f"server exited (status {proc.proc.returncode}) during the load run"))


def print_run(run: dict) -> None:
    print(f"    {run['shape']:<7} {_rate(run)}   RSS {run['rss_peak_bytes'] / 2**20:6.1f} MiB"
          f"   errors {load.failed(run):,}" + _notes(run), flush=True)


def _rate(run: dict) -> str:
    p50, p99 = (f"{run['latency_ms'][p]:7.2f}" if p in run["latency_ms"] else "      —" for p in ("50", "99"))
    return f"{run['rps']:>11,.0f} req/s   p50 {p50} ms   p99 {p99} ms"


def _notes(run: dict) -> str:
    note = ""
    starved = run["fresh_conn_ms"].count(None)
    if starved:
        note += f"   STARVES NEW CONNECTIONS: {starved}/{len(run['fresh_conn_ms'])} probes unanswered"
    if run.get("pipeline_depth") and run["pipeline_answered"] < run["pipeline_depth"]:
        note += f"   PIPELINING BROKEN: {run['pipeline_answered']}/{run['pipeline_depth']} answered"
    return note


# ---------------------------------------------------------------- scenario "reload"

def bench_reload(server: Server, rnd: int, args, results: dict) -> None:
    log = LOGS / f"reload-{server.slug}-r{rnd}.log"
    run = reload.run_one(server, args.reload_workers, args.reload_schedule, log, READY_TIMEOUT_S, WARMUP_S)
    run.update(server=server.name, processes=args.reload_workers, round=rnd)
    results["reload_runs"].append(run)
    after = "yes" if run["serving_after"] else f"NO ({reload.exit_text(run['master_exit'])})"
    print(f"    {run['reloads_sent']} reloads   {run['requests']:,} requests   failed {run['failed']:,}"
          f"   new processes {run['new_processes']}   serving after: {after}", flush=True)


def reload_meta(args) -> dict:
    servers, schedule = [s for s in args.servers if s.reload_signal], args.reload_schedule
    return {
        "workers": args.reload_workers, "reloads": schedule.count, "interval_s": schedule.interval,
        "first_at_s": reload.FIRST_AT_S, "duration_s": schedule.duration,
        "wrk_command": relative(reload.wrk_command("PORT", schedule)),
        "commands": {s.name: relative(s.argv("PORT", args.reload_workers)) for s in servers},
        "reload_commands": {s.name: reload.reload_command(s) for s in servers},
        "notes": {s.name: s.reload_notes for s in args.servers if s.reload_notes},
    }


# ---------------------------------------------------------------- scenario "nginx"

def bench_nginx(server: Server, upstream: nginx.Upstream, app: apps.App, rnd: int, args, results: dict) -> None:
    name = nginx.variant_name(server.name, upstream)
    log_stem = LOGS / f"nginx-{server.slug}-{upstream.key}-{app.key}-r{rnd}"
    run = nginx.run_one(server, upstream, app, args.duration, log_stem, READY_TIMEOUT_S, WARMUP_S)
    run.update(server=name, backend=server.name, app=app.key, round=rnd)
    results["nginx_runs"].append(run)
    print(f"    {_rate(run)}   errors {run['failed']:,}", flush=True)


def nginx_meta(args) -> dict:
    variants = nginx.variants(args.servers)
    return {
        "processes": nginx.PROCESSES, "duration_s": args.duration, "nginx_version": nginx.version(),
        "reference": nginx.REFERENCE, "apps": {app.key: app.title for app in args.apps},
        "wrk_command": relative(load.wrk_command(load.SHAPES[0], "http://127.0.0.1:PORT/", args.duration)),
        "variants": [nginx.variant_name(s.name, u) for s, u in variants],
        "backends": {nginx.variant_name(s.name, u): s.name for s, u in variants},
        "references": {nginx.variant_name(s.name, u): nginx.reference_for(u) for s, u in variants},
        "commands": {app.key: {nginx.variant_name(s.name, u): relative(nginx.backend_argv(s, u, app, "APP_PORT"))
                               for s, u in variants} for app in args.apps},
        "app_env": {app.key: relative([f"{k}={v}" for k, v in app.env.items()]) for app in args.apps if app.env},
        "blocks": {u.title: nginx.upstream_block(u, "APP_PORT") for u in dict.fromkeys(u for _, u in variants)},
        "config": nginx.config(Path("PREFIX"), "PORT", nginx.UPSTREAMS["uwsgi"], "APP_PORT"),
        "nginx_command": relative(nginx.argv("PREFIX", "PREFIX/nginx.conf")),
    }


# ---------------------------------------------------------------- the whole run

def new_results(args, prov: provision.Provision) -> dict:
    return {
        "meta": {
            "command": args.command, "mode": "quick" if args.quick else "full",
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "started_stamp": time.strftime("%Y%m%d-%H%M%S"),
            "elapsed_s": 0.0, "scenarios": args.scenarios,
            "duration_s": args.duration, "rounds": args.rounds, "warmup_s": WARMUP_S,
            "configs": args.configs if "throughput" in args.scenarios else [],
            "machine": machine_info(), "pinning": pinning_text(not args.no_pin),
            "versions": prov.versions, "wrk_version": provision.wrk_version(), "setup_errors": prov.errors,
            "servers": {s.name: s.dist for s in args.servers},
            "server_notes": {s.name: s.notes for s in args.servers},
            "server_commands": {s.name: f"{s.name}: {relative(s.argv('PORT', 'N'))}" for s in args.servers},
            "wrk_commands": {sh.key: relative(load.wrk_command(sh, "http://127.0.0.1:PORT/", args.duration))
                             for sh in load.SHAPES},
            "shapes": {sh.key: sh.title for sh in load.SHAPES},
            "reload": reload_meta(args) if "reload" in args.scenarios else None,
            "nginx": nginx_meta(args) if "nginx" in args.scenarios else None,
            "interrupted": False,
        },
        "runs": [], "reload_runs": [], "nginx_runs": [], "failures": [], "skipped": [],
        "summary": [], "reload_summary": [], "nginx_summary": [],
    }


def _key(where: dict) -> tuple:
    """What a failure rules out for later rounds: everything but the round."""
    return tuple(v for k, v in where.items() if k != "round")


def plan_skip(where: dict, server: Server, prov: provision.Provision, results: dict, failed: set,
              unsupported: str | None = None) -> bool:
    """True if the server does not run here (recorded once: not supported, or not installed)."""
    key = _key(where)
    if key in failed:
        return True
    if unsupported:
        results["skipped"].append({**where, "round": None, "reason": unsupported})
    elif server.dist in prov.errors:
        results["failures"].append({**where, "round": None, "stage": "install", "reason": prov.errors[server.dist]})
    else:
        return False
    failed.add(key)
    return True


def guarded(results: dict, failed: set, where: dict, turn: Callable[[], None]) -> None:
    """One server's turn: an error is recorded, never raised; a start failure also skips its later rounds."""
    try:
        turn()
    except procs.StartError as e:
        record_failure(results, where, "start", str(e))
        failed.add(_key(where))
    except Exception as e:  # a broken run must not end the benchmark
        record_failure(results, where, "run", f"{type(e).__name__}: {e}")


def run_throughput(args, prov: provision.Provision, results: dict, failed: set) -> None:
    for processes in args.configs:
        for rnd in range(1, args.rounds + 1):
            for server in args.servers:
                where = {"scenario": "throughput", "server": server.name, "processes": processes, "round": rnd}
                unsupported = None if server.supports(processes) else "single-process only"
                if plan_skip(where, server, prov, results, failed, unsupported):
                    continue
                print(f"[{processes}p round {rnd}/{args.rounds}] {server.name}", flush=True)
                guarded(results, failed, where, partial(bench_server, server, processes, rnd, args, results))
            write_outputs(results, chart=False)


def run_reloads(args, prov: provision.Provision, results: dict, failed: set) -> None:
    for rnd in range(1, args.rounds + 1):
        for server in args.servers:
            where = {"scenario": "reload", "server": server.name, "processes": args.reload_workers, "round": rnd}
            unsupported = None if server.reload_signal else (server.reload_notes or "no graceful reload")
            if plan_skip(where, server, prov, results, failed, unsupported):
                continue
            print(f"[reload round {rnd}/{args.rounds}] {server.name}: {args.reload_schedule.count} x "
                  f"{reload.reload_command(server)}", flush=True)
            guarded(results, failed, where, partial(bench_reload, server, rnd, args, results))
        write_outputs(results, chart=False)


def run_nginx(args, prov: provision.Provision, results: dict, failed: set) -> None:
    if "nginx" in prov.errors:
        print("nginx scenario skipped: nginx is not installed (see RESULTS.md, Failures)", flush=True)
        return
    for app in args.apps:
        if not prepare_app(app, results):
            continue
        for rnd in range(1, args.rounds + 1):
            for server, upstream in nginx.variants(args.servers):
                name = nginx.variant_name(server.name, upstream)
                where = {"scenario": "nginx", "server": name, "app": app.key, "round": rnd}
                if plan_skip(where, server, prov, results, failed):
                    continue
                print(f"[nginx {app.key} round {rnd}/{args.rounds}] {name}", flush=True)
                guarded(results, failed, where, partial(bench_nginx, server, upstream, app, rnd, args, results))
            write_outputs(results, chart=False)


def prepare_app(app: apps.App, results: dict) -> bool:
    try:
        apps.prepare(app)
        return True
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        record_failure(results, {"scenario": "nginx", "server": "every server", "app": app.key, "round": None},
                       "prepare", str(e))
        return False


RUNNERS = {"throughput": run_throughput, "reload": run_reloads, "nginx": run_nginx}


def run_all(args, prov: provision.Provision, results: dict) -> None:
    failed: set[tuple] = set()  # not to be retried in later rounds
    for scenario in args.scenarios:
        RUNNERS[scenario](args, prov, results, failed)


def record_failure(results: dict, where: dict, stage: str, reason: str) -> None:
    print(f"    FAILED ({stage}): {reason.splitlines()[0]}", flush=True)
    results["failures"].append({**where, "stage": stage, "reason": reason})


def write_outputs(results: dict, chart: bool = True, json_path: Path | None = None) -> Path:
    results["summary"] = report.summarize(results["runs"])
    results["reload_summary"] = report.summarize_reloads(results.get("reload_runs", []))
    results["nginx_summary"] = report.summarize_nginx(results.get("nginx_runs", []),
                                                      (results["meta"].get("nginx") or {}).get("reference"))
    OUT.mkdir(parents=True, exist_ok=True)
    if json_path is None:
        stamp = results["meta"]["started_stamp"]
        json_path = OUT / f"results-{stamp}.json"
        json_path.write_text(json.dumps(results, indent=1))
        (OUT / "latest.json").write_text(json.dumps(results, indent=1))
    RESULTS_MD.write_text(report.markdown(results))
    if chart:
        draw_chart(json_path)
    return json_path


def draw_chart(json_path: Path) -> None:
    proc = subprocess.run([venv_python(), str(CHART_SCRIPT), str(json_path), str(RESULTS_PNG), str(RESULTS_NGINX_PNG)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        print(f"chart not drawn: {proc.stdout.strip()[-400:]}", file=sys.stderr)


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.report_only:
        path = Path(args.report_only)
        write_outputs(json.loads(path.read_text()), json_path=path)
        print(f"wrote {RESULTS_MD} and the chart(s)")
        return 0
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT too: it may arrive ignored from a parent
        signal.signal(sig, raise_interrupt)
    print("setting up (apt, bench/.venv, pip) ...", flush=True)
    prov = provision.provision(skip=args.skip_setup, nginx="nginx" in args.scenarios)
    for name, reason in prov.errors.items():
        print(f"setup: {name}: {reason.splitlines()[0]}", file=sys.stderr)
    results = new_results(args, prov)
    t0 = time.monotonic()
    try:
        run_all(args, prov, results)
    except KeyboardInterrupt:
        results["meta"]["interrupted"] = True
        print("interrupted: writing partial results", file=sys.stderr)
    finally:
        results["meta"]["elapsed_s"] = time.monotonic() - t0
        results["meta"]["machine"]["loadavg_end"] = loadavg()
        json_path = write_outputs(results)
    print(f"wrote {json_path}, {RESULTS_MD} and the chart(s)")
    return 130 if results["meta"]["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
