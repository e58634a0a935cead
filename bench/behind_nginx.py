"""Req/s and CPU per request of wsgistack and uWSGI behind nginx, with as many app threads as you like.

The nginx scenario of run.py measures the servers with 2 processes of 1 or 4 threads; deployments such
as the seed's uwsgi.ini run others (`processes = 5`, `threads = 30`). This runs nginx (harness/nginx.py)
in front of one app server over the uwsgi protocol, wrk against nginx, and reports req/s and the user and
system CPU time of the app server's processes per request (from /proc), alternating the servers.

    bench/.venv/bin/python bench/behind_nginx.py --threads 4 --rounds 2
    bench/.venv/bin/python bench/behind_nginx.py --app django --processes 2 --threads 30
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_per_request import cpu_ticks  # noqa: E402
from harness import apps, load, nginx, procs, servers  # noqa: E402

READY_TIMEOUT = 60.0


def server_argv(name: str, port: int, app: apps.App, processes: int, threads: int) -> list[str]:
    """As the nginx scenario starts them (harness/servers.py), with these processes and threads."""
    server, = servers.by_name([name])
    return server.argv(port, processes, app, "uwsgi", threads=threads)


def measure(name: str, app: apps.App, args, logs: Path) -> str:
    app_port, port = procs.free_ports(2)
    url = f"http://127.0.0.1:{port}/"
    argv = server_argv(name, app_port, app, args.processes, args.threads)
    with procs.running(argv, app_port, logs / f"{name}.log", None, READY_TIMEOUT, probe=procs.port_open,
                       env=app.env) as backend:
        with nginx.front(port, nginx.UPSTREAMS["uwsgi"], app_port, logs / "nginx.log", READY_TIMEOUT):
            load.warm_up(url, 1)
            pids = backend.pids()
            user0, system0 = cpu_ticks(pids)
            output = subprocess.run(["wrk", "-t1", "-c64", f"-d{args.seconds}s", url], capture_output=True,
                                    text=True, timeout=args.seconds + 30).stdout
            user1, system1 = cpu_ticks(pids)
    run = load.parse_wrk(output)
    tick = os.sysconf("SC_CLK_TCK")
    per_request = 1e6 / tick / max(run["requests"], 1)
    return (f"{name:10s} {run['requests'] / args.seconds:9,.0f} req/s   CPU/request: user "
            f"{(user1 - user0) * per_request:7.1f} µs, system {(system1 - system0) * per_request:7.1f} µs"
            f"   errors {load.failed(run)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--app", choices=sorted(apps.APPS_BY_KEY), default="hello")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--servers", default="wsgistack,uwsgi", help="comma list of wsgistack, uwsgi")
    args = parser.parse_args()
    app = apps.APPS_BY_KEY[args.app]
    apps.prepare(app)
    print(f"nginx -> app server over uwsgi, {app.title}, {args.processes} processes x {args.threads} threads, "
          f"wrk -c64 {args.seconds} s")
    with tempfile.TemporaryDirectory(prefix="wsgistack-behind-nginx-") as logs:
        for _ in range(args.rounds):
            for name in args.servers.split(","):
                print(measure(name, app, args, Path(logs)), flush=True)


if __name__ == "__main__":
    main()
