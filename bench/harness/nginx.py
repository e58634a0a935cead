"""Scenario "nginx": Debian's nginx in front of an app server. The upstream table (how
nginx talks to the app server), the config, nginx as a foreground process in its own
temporary prefix, and one measured turn: app server with PROCESSES processes, nginx
in front, wrk (1 thread, 64 connections, 2 headers) against nginx. The app servers run
1 thread per process, except in the "uwsgi-threads" variant: THREADS app threads per
process, as deployments such as the seed's uwsgi.ini do (`threads = 30`).

nginx runs with `worker_processes 1`, `daemon off`, errors to stderr (so they land in
the harness's log of it), no access log; its config, pid file and temp paths live in
a temporary directory removed when it stops. It is started and stopped like any
server (harness/procs.py), its readiness being a 2xx answered through it by the app.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator

from . import load, procs
from .apps import App
from .servers import Server

NGINX = "/usr/sbin/nginx"  # Debian's; not on an unprivileged PATH
PARAMS_DIR = Path("/etc/nginx")  # the stock uwsgi_params / fastcgi_params
UPSTREAM_KEEPALIVE = 32
PROCESSES = 2  # of each app server
THREADS = 4  # app threads per process in the threaded variant


@dataclass(frozen=True)
class Upstream:
    key: str  # what the server table's `nginx` field names
    listen: str  # the app server's protocol: http | uwsgi | fastcgi (its argv's `listen`)
    location: tuple[str, ...]  # directives of `location /` (upstream `app`)
    keepalive: bool = False  # keep idle upstream connections (`keepalive N` in the upstream block)
    threads: int = 1  # app threads per process (the server's argv takes `threads`)

    @property
    def title(self) -> str:
        return self.listen + (" keep-alive" if self.keepalive else "") + (f", {self.threads} threads"
                                                                         if self.threads > 1 else "")


UPSTREAMS = {u.key: u for u in [
    Upstream("uwsgi", "uwsgi", (f"include {PARAMS_DIR / 'uwsgi_params'};", "uwsgi_pass app;")),
    Upstream("uwsgi-threads", "uwsgi", (f"include {PARAMS_DIR / 'uwsgi_params'};", "uwsgi_pass app;"),
             threads=THREADS),
    Upstream("fastcgi", "fastcgi", (f"include {PARAMS_DIR / 'fastcgi_params'};", "fastcgi_keep_conn on;",
                                    "fastcgi_pass app;"), keepalive=True),
    # as gunicorn's docs deploy it: HTTP/1.0 to the app, a new connection per request
    Upstream("http", "http", ("proxy_set_header Host $http_host;", "proxy_pass http://app;")),
    Upstream("http-keepalive", "http", ("proxy_http_version 1.1;", 'proxy_set_header Connection "";',
                                        "proxy_set_header Host $http_host;", "proxy_pass http://app;"),
             keepalive=True),
]}


def upstream_lines(upstream: Upstream, app_port: int | str) -> list[str]:
    keepalive = [f"    keepalive {UPSTREAM_KEEPALIVE};"] if upstream.keepalive else []
    return ["upstream app {", f"    server 127.0.0.1:{app_port};", *keepalive, "}"]


def location_lines(upstream: Upstream) -> list[str]:
    return ["location / {", *(f"    {line}" for line in upstream.location), "}"]


def upstream_block(upstream: Upstream, app_port: int | str) -> list[str]:
    """The parts of the config that differ between the variants (shown in the report)."""
    return upstream_lines(upstream, app_port) + location_lines(upstream)


def config(prefix: Path, port: int | str, upstream: Upstream, app_port: int | str) -> str:
    return skeleton(prefix, port, upstream_lines(upstream, app_port), location_lines(upstream))


def skeleton(prefix: Path, port: int | str, http_lines: list[str], server_lines: list[str],
             workers: int = 1) -> str:
    """nginx.conf in the foreground, everything it writes under `prefix`, one server on 127.0.0.1:port."""
    # As root, the worker would switch to `nobody`, who cannot read the private temporary prefix.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp_paths = "".join(f"    {kind}_temp_path {prefix / kind};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"{user}daemon off;\nworker_processes {workers};\npid {prefix / 'nginx.pid'};\nerror_log stderr warn;\n"
            "events {\n    worker_connections 1024;\n}\n"
            f"http {{\n    access_log off;\n{temp_paths}"
            + "".join(f"    {line}\n" for line in http_lines)
            + f"    server {{\n        listen 127.0.0.1:{port};\n"
            + "".join(f"        {line}\n" for line in server_lines)
            + "    }\n}\n")


def argv(prefix: Path | str, conf: Path | str) -> list[str]:
    return [NGINX, "-p", str(prefix), "-c", str(conf), "-e", "stderr"]


def version() -> str:
    try:
        out = subprocess.run([NGINX, "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    except OSError:
        return "missing"
    return out.strip().split("/", 1)[-1] or "unknown"


@contextlib.contextmanager
def front(port: int, upstream: Upstream, app_port: int, log: Path,
          ready_timeout: float) -> Iterator[procs.ServerProcess]:
    """nginx on `port` proxying to 127.0.0.1:app_port, ready once a GET through it is answered 2xx."""
    with tempfile.TemporaryDirectory(prefix="wsgistack-bench-nginx-") as tmp:
        prefix = Path(tmp)
        conf = prefix / "nginx.conf"
        conf.write_text(config(prefix, port, upstream, app_port))
        with procs.running(argv(prefix, conf), port, log, None, ready_timeout) as proc:
            yield proc


def variant_name(server_name: str, upstream: Upstream) -> str:
    return f"nginx → {server_name} ({upstream.title})"


REFERENCE = variant_name("uWSGI", UPSTREAMS["uwsgi"])  # the variant every ratio is taken against


def reference_for(upstream: Upstream) -> str:
    """The variant a target compares with: uWSGI with as many threads (1 thread: REFERENCE)."""
    return variant_name("uWSGI", upstream) if upstream.threads > 1 else REFERENCE


def variants(servers: list[Server]) -> list[tuple[Server, Upstream]]:
    """(server, upstream) for each upstream key in each server's `nginx` field, in table order."""
    return [(server, UPSTREAMS[key]) for server in servers for key in server.nginx]


def backend_argv(server: Server, upstream: Upstream, app: App, port: int | str) -> list[str]:
    if upstream.threads > 1:        # only the servers whose `nginx` field names a threaded upstream take it
        return server.argv(port, PROCESSES, app, upstream.listen, threads=upstream.threads)
    return server.argv(port, PROCESSES, app, upstream.listen)


def run_one(server: Server, upstream: Upstream, app: App, duration: int, log_stem: Path,
            ready_timeout: float, warmup_s: int) -> dict:
    """Start the app server, nginx in front of it, warm up, one wrk run against nginx, stop both."""
    app_port, port = procs.free_ports(2)
    url = f"http://127.0.0.1:{port}/"
    with procs.running(backend_argv(server, upstream, app, app_port), app_port, Path(f"{log_stem}-app.log"), None,
                       ready_timeout, probe=procs.port_open, env=app.env) as backend:
        try:
            with front(port, upstream, app_port, Path(f"{log_stem}-nginx.log"), ready_timeout) as proxy:
                load.warm_up(url, warmup_s)
                # CPU time of each side during the run: where a request's cost goes (nginx's own share
                # differs by protocol: uwsgi opens a connection per request, the kept ones do not).
                backend_pids, proxy_pids = backend.pids(), proxy.pids()
                cpu_before = procs.cpu_seconds(backend_pids), procs.cpu_seconds(proxy_pids)
                output = load.run_wrk(load.wrk_command(load.SHAPES[0], url, duration), duration, None)
                cpu_after = procs.cpu_seconds(backend_pids), procs.cpu_seconds(proxy_pids)
                _check_alive(backend, server.name)
                _check_alive(proxy, "nginx")
        except procs.StartError as e:  # nginx answered no 2xx: the app server's log says why, if anything does
            state = f"exited (status {backend.proc.returncode})" if not backend.alive() else "still running"
            raise procs.StartError(f"nginx: {e}\n{backend.failure(f'{server.name}: {state}')}") from e
    run = load.parse_wrk(output)
    per_request = 1e6 / run["requests"] if run["requests"] else 0.0
    return {**run, "failed": load.failed(run), "wrk_output": output,
            "app_cpu_us": (cpu_after[0] - cpu_before[0]) * per_request,
            "nginx_cpu_us": (cpu_after[1] - cpu_before[1]) * per_request}


def _check_alive(proc: procs.ServerProcess, name: str) -> None:
    if not proc.alive():
        raise RuntimeError(proc.failure(f"{name} exited (status {proc.proc.returncode}) during the load run"))
