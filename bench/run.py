#!/usr/bin/env python3
"""wsgistack benchmark: wsgistack against FastWSGI, bjoern, Granian, uWSGI and
gunicorn, driven by wrk over loopback. One command, sets itself up:

    bash bench/run.sh            # full: 10 s per run, 3 interleaved rounds
    bash bench/run.sh --quick    # smoke: 3 s per run, 1 round

Writes bench/out/results-*.json (raw), bench/RESULTS.md and bench/results.png.
See bench/README.md for what is measured and how to read it.
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

if sys.version_info < (3, 11):
    raise SystemExit("bench/run.py needs Python 3.11+")

from harness import load, procs, provision, report
from harness.paths import CHART_SCRIPT, LOGS, OUT, REPO, RESULTS_MD, RESULTS_PNG, venv_python
from harness.servers import Server, by_name

WARMUP_S = 1
READY_TIMEOUT_S = 20
PROBE_TIMEOUT_S = 2.0  # a fresh connection not answered within this, under load, counts as starved
WRK_CPU = 0  # with pinning: wrk on CPU 0, a 1-process server on CPU 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 s per run, 1 round (unless given explicitly)")
    p.add_argument("--duration", type=int, help="seconds per wrk run (default 10, quick 3)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    p.add_argument("--servers", help="comma list of servers (name or slug) to run, e.g. wsgistack,bjoern; "
                   "'all' adds the non-default variants (default: the default set)")
    p.add_argument("--configs", default="1,2", help="comma list of process counts (default 1,2)")
    p.add_argument("--no-pin", action="store_true", help="do not pin wrk / the 1-process server to CPUs")
    p.add_argument("--skip-setup", action="store_true", help="do not apt/pip install, use bench/.venv as it is")
    p.add_argument("--report-only", metavar="JSON", help="only re-render RESULTS.md and results.png from a raw JSON")
    args = p.parse_args(argv)
    args.duration = args.duration or (3 if args.quick else 10)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.configs = [int(c) for c in args.configs.split(",")]
    args.servers = by_name(args.servers.split(",") if args.servers else None)
    args.command = "bash bench/run.sh" + "".join(" " + shlex.quote(a) for a in argv)
    return args


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


def relative(argv: list[str]) -> str:
    return shlex.join(argv).replace(str(REPO) + "/", "")


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
        load.run_wrk(load.wrk_command(load.SHAPES[0], url, WARMUP_S), WARMUP_S, wrk_cpus)
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
    errors = sum(run["socket_errors"].values()) + run["non_2xx_3xx"]
    p50, p99 = (f"{run['latency_ms'][p]:7.2f}" if p in run["latency_ms"] else "      —" for p in ("50", "99"))
    print(f"    {run['shape']:<7} {run['rps']:>11,.0f} req/s   p50 {p50} ms   p99 {p99} ms"
          f"   RSS {run['rss_peak_bytes'] / 2**20:6.1f} MiB"
          f"   errors {errors:,}" + _notes(run), flush=True)


def _notes(run: dict) -> str:
    note = ""
    starved = run["fresh_conn_ms"].count(None)
    if starved:
        note += f"   STARVES NEW CONNECTIONS: {starved}/{len(run['fresh_conn_ms'])} probes unanswered"
    if run.get("pipeline_depth") and run["pipeline_answered"] < run["pipeline_depth"]:
        note += f"   PIPELINING BROKEN: {run['pipeline_answered']}/{run['pipeline_depth']} answered"
    return note


# ---------------------------------------------------------------- the whole run

def new_results(args, prov: provision.Provision) -> dict:
    return {
        "meta": {
            "command": args.command, "mode": "quick" if args.quick else "full",
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "started_stamp": time.strftime("%Y%m%d-%H%M%S"),
            "elapsed_s": 0.0,
            "duration_s": args.duration, "rounds": args.rounds, "warmup_s": WARMUP_S,
            "configs": args.configs, "machine": machine_info(), "pinning": pinning_text(not args.no_pin),
            "versions": prov.versions, "wrk_version": provision.wrk_version(), "setup_errors": prov.errors,
            "servers": {s.name: s.dist for s in args.servers},
            "server_notes": {s.name: s.notes for s in args.servers},
            "server_commands": {s.name: f"{s.name}: {relative(s.argv('PORT', 'N'))}" for s in args.servers},
            "wrk_commands": {sh.key: relative(load.wrk_command(sh, "http://127.0.0.1:PORT/", args.duration))
                             for sh in load.SHAPES},
            "shapes": {sh.key: sh.title for sh in load.SHAPES},
            "interrupted": False,
        },
        "runs": [], "failures": [], "skipped": [], "summary": [],
    }


def plan_skip(server: Server, processes: int, prov: provision.Provision, results: dict, failed: set) -> bool:
    """True if the server is not run in this configuration (recorded once per configuration)."""
    key = (server.name, processes)
    if key in failed:
        return True
    if not server.supports(processes):
        results["skipped"].append({"server": server.name, "processes": processes, "reason": "single-process only"})
    elif server.dist in prov.errors:
        results["failures"].append({"server": server.name, "processes": processes, "round": None,
                                    "stage": "install", "reason": prov.errors[server.dist]})
    else:
        return False
    failed.add(key)
    return True


def run_all(args, prov: provision.Provision, results: dict) -> None:
    failed: set[tuple[str, int]] = set()  # not to be retried in later rounds
    for processes in args.configs:
        for rnd in range(1, args.rounds + 1):
            for server in args.servers:
                if plan_skip(server, processes, prov, results, failed):
                    continue
                print(f"[{processes}p round {rnd}/{args.rounds}] {server.name}", flush=True)
                try:
                    bench_server(server, processes, rnd, args, results)
                except procs.StartError as e:
                    record_failure(results, server, processes, rnd, "start", str(e))
                    failed.add((server.name, processes))
                except Exception as e:  # a broken run must not end the benchmark
                    record_failure(results, server, processes, rnd, "run", f"{type(e).__name__}: {e}")
            write_outputs(results, chart=False)


def record_failure(results: dict, server: Server, processes: int, rnd: int, stage: str, reason: str) -> None:
    print(f"    FAILED ({stage}): {reason.splitlines()[0]}", flush=True)
    results["failures"].append({"server": server.name, "processes": processes, "round": rnd,
                                "stage": stage, "reason": reason})


def write_outputs(results: dict, chart: bool = True, json_path: Path | None = None) -> Path:
    results["summary"] = report.summarize(results["runs"])
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
    proc = subprocess.run([venv_python(), str(CHART_SCRIPT), str(json_path), str(RESULTS_PNG)],
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
        print(f"wrote {RESULTS_MD} and {RESULTS_PNG}")
        return 0
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT too: it may arrive ignored from a parent
        signal.signal(sig, raise_interrupt)
    print("setting up (apt, bench/.venv, pip) ...", flush=True)
    prov = provision.provision(skip=args.skip_setup)
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
    print(f"wrote {json_path}, {RESULTS_MD}, {RESULTS_PNG}")
    return 130 if results["meta"]["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
