"""Static files: wsgistack's --static-map against uWSGI's --static-map and nginx's own `location … alias`.

The seed serves /static with `uwsgi --http … --static-map=/static=static`, and later with nginx in front. This
runs each of the three with PROCESSES processes (nginx: as many workers, Debian's `sendfile on; tcp_nopush on`)
serving the same two files, and wrk (1 thread, 64 keep-alive connections) against each in interleaved rounds:
a 1 KiB stylesheet (per-request cost) and a 1 MiB file (bytes moved). Prints the median req/s and the ratios.

    bench/.venv/bin/python bench/static_files.py --rounds 3 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import load, nginx, procs, servers  # noqa: E402

READY_TIMEOUT = 30.0
FILES = {"1 KiB": ("site.css", 1024), "1 MiB": ("video.bin", 1024 * 1024)}


def server_argv(name: str, port: int, processes: int, docroot: Path) -> list[str]:
    """The throughput scenario's command line (harness/servers.py), plus the static map."""
    server, = servers.by_name([name])
    return [*server.argv(port, processes), "--static-map", f"/static={docroot}"]


def nginx_config(prefix: Path, port: int, processes: int, docroot: Path) -> str:
    return nginx.skeleton(prefix, port, ["sendfile on;", "tcp_nopush on;"],
                          ["location /static/ {", f"    alias {docroot}/;", "}"], workers=processes)


def measure(name: str, docroot: Path, args, logs: Path) -> dict[str, float]:
    port, = procs.free_ports(1)
    if name == "nginx":
        prefix = Path(tempfile.mkdtemp(prefix="wsgistack-bench-static-", dir=logs))
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(prefix, port, args.processes, docroot))
        argv = nginx.argv(prefix, conf)
    else:
        argv = server_argv(name, port, args.processes, docroot)
    results = {}
    with procs.running(argv, port, logs / f"{name}.log", None, READY_TIMEOUT, probe=procs.port_open):
        for label, (file_name, _) in FILES.items():
            url = f"http://127.0.0.1:{port}/static/{file_name}"
            load.warm_up(url, 1)
            output = subprocess.run(["wrk", "-t1", "-c64", f"-d{args.seconds}s", url], capture_output=True,
                                    text=True, timeout=args.seconds + 30).stdout
            run = load.parse_wrk(output)
            if load.failed(run):
                raise RuntimeError(f"{name}: {load.failed(run)} failed requests for {url}:\n{output}")
            results[label] = run["rps"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--servers", default="wsgistack,uWSGI,nginx", help="comma list of wsgistack, uWSGI, nginx")
    args = parser.parse_args()
    names = args.servers.split(",")
    with tempfile.TemporaryDirectory(prefix="wsgistack-bench-static-") as tmp:
        docroot = Path(tmp) / "static"
        docroot.mkdir()
        for file_name, size in FILES.values():
            (docroot / file_name).write_bytes(os.urandom(size))
        rps: dict[str, dict[str, list[float]]] = {name: {label: [] for label in FILES} for name in names}
        for round_number in range(args.rounds):
            for name in names:
                for label, value in measure(name, docroot, args, Path(tmp)).items():
                    rps[name][label].append(value)
                print(f"round {round_number + 1}: {name:10s} "
                      + "  ".join(f"{label} {rps[name][label][-1]:9,.0f} req/s" for label in FILES), flush=True)
    print(f"\nmedian of {args.rounds} rounds, {args.processes} processes, wrk -t1 -c64 -d{args.seconds}s:")
    for label in FILES:
        base = statistics.median(rps[names[0]][label])
        print(f"  {label}: " + "  ".join(f"{name} {statistics.median(values[label]):,.0f} req/s "
                                         f"({base / statistics.median(values[label]):.2f}x)"
                                         for name, values in rps.items()))


if __name__ == "__main__":
    main()
