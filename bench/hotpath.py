"""Python-only cost of one request through wsgistack's protocol code, without sockets or an event loop.

A fake transport and worker stand in for uvloop; the hello-world app answers. What is measured is
the work of our own Python per request (parsing callbacks, environ, Exchange, response head) —
the part profiling showed we can change — not syscalls or uvloop. Use it before and after a change
to the hot path; compare whole-server figures with `bench/run.sh` (or CPU per request, below).

    .venv/bin/python bench/hotpath.py            # all three protocols
    taskset -c 1 .venv/bin/python bench/hotpath.py http --requests 300000

Shapes: HTTP keep-alive GET with wrk's 2 headers and with 12 browser headers (bench/harness/load.py);
uwsgi: one connection per request with nginx's stock uwsgi_params; FastCGI: a kept connection
(fastcgi_keep_conn on) with nginx's stock fastcgi_params. Best of 5 runs, microseconds of this process's CPU
time per request (not wall time: other work on the machine then hardly moves the figure).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench"), str(ROOT / "bench" / "apps")]

from harness.load import BROWSER_HEADERS, MINIMAL_HEADERS  # noqa: E402
from hello import application  # noqa: E402

from wsgistack import worker  # noqa: E402
from wsgistack.protocols import fastcgi_codec  # noqa: E402
from wsgistack.protocols.fastcgi import FastCGIConnection  # noqa: E402
from wsgistack.protocols.http import HttpConnection  # noqa: E402
from wsgistack.protocols.uwsgi import UwsgiConnection  # noqa: E402
from wsgistack.protocols.uwsgi_codec import encode_uwsgi_request  # noqa: E402
from wsgistack.wsgi import base_environ  # noqa: E402

NGINX_VARS = {  # what nginx's stock uwsgi_params / fastcgi_params send for `GET /` (values as nginx fills them)
    "QUERY_STRING": "", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "", "CONTENT_LENGTH": "", "REQUEST_URI": "/",
    "PATH_INFO": "/", "DOCUMENT_ROOT": "/usr/share/nginx/html", "SERVER_PROTOCOL": "HTTP/1.1",
    "REQUEST_SCHEME": "http", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "SERVER_PORT": "8080",
    "SERVER_NAME": "localhost", "HTTP_HOST": "127.0.0.1", "HTTP_ACCEPT": "*/*",
}
FASTCGI_EXTRA = {"SCRIPT_NAME": "/", "DOCUMENT_URI": "/", "GATEWAY_INTERFACE": "CGI/1.1",
                 "SERVER_SOFTWARE": "nginx/1.22.1", "SERVER_ADDR": "127.0.0.1", "REDIRECT_STATUS": "200"}


class Config:
    limit_request_line = limit_request_field_size = 8190
    limit_request_fields = 100
    limit_request_head = 32768
    limit_post = 0
    post_buffering = 1 << 20
    buffer_size = 4096
    uwsgi_allow_from: list = []
    forwarded_allow_ips = "127.0.0.1,::1"
    fastcgi_allow_from: list = []
    processes = threads = 1


class Transport:
    def __init__(self):
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def get_extra_info(self, name: str):
        return ("127.0.0.1", 8000) if name == "sockname" else ("127.0.0.1", 40000)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


class Worker:
    threaded = app_busy = stopping = False
    static = compression = None
    requests = retire_after = 0
    access_log = counters = harakiri = None
    times_requests = False
    request_done = worker.Worker.request_done      # counting (and logging, when on) as a worker does
    date_header = b"Date: Sat, 21 Nov 2026 10:00:00 GMT\r\n"

    def __init__(self):
        self.loop = None
        self.app = application
        self.config = Config()
        self.connections: set = set()
        self.request_numbers = itertools.count(1)
        self.base_environ = base_environ(multithread=False, multiprocess=False)

    def connection_environ(self, transport, server_address: bool = True) -> dict:
        environ = self.base_environ.copy()
        environ.update(REMOTE_ADDR="127.0.0.1", REMOTE_PORT="40000")
        if server_address:
            environ.update(SERVER_NAME="127.0.0.1", SERVER_PORT="8000")
        return environ

    def connection_closed(self, conn) -> None:
        pass


def http_request(headers: tuple[str, ...]) -> bytes:
    lines = ["GET / HTTP/1.1", "Host: 127.0.0.1:8000", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def time_http(request: bytes, count: int) -> float:
    worker = Worker()
    HttpConnection.configure(worker.config)
    conn, transport = HttpConnection(worker), Transport()
    conn.connection_made(transport)
    receive = conn.data_received
    started = time.process_time()
    for _ in range(count):
        receive(request)
    elapsed = time.process_time() - started
    assert transport.writes == count, transport.writes
    return elapsed


def time_uwsgi(count: int) -> float:
    worker = Worker()
    UwsgiConnection.configure(worker.config)
    packet = encode_uwsgi_request(NGINX_VARS)
    started = time.process_time()
    for _ in range(count):       # uwsgi: a connection per request, as nginx's uwsgi_pass opens them
        conn, transport = UwsgiConnection(worker), Transport()
        conn.connection_made(transport)
        conn.data_received(packet)
        conn.connection_lost(None)
    elapsed = time.process_time() - started
    assert transport.writes == 1, transport.writes
    return elapsed


def time_fastcgi(count: int) -> float:
    worker = Worker()
    FastCGIConnection.configure(worker.config)
    request = (fastcgi_codec.encode_begin_request(1, keep_conn=True)
               + fastcgi_codec.encode_params(1, {**NGINX_VARS, **FASTCGI_EXTRA}) + fastcgi_codec.encode_stdin(1, b""))
    conn, transport = FastCGIConnection(worker), Transport()
    conn.connection_made(transport)
    started = time.process_time()
    for _ in range(count):
        conn.data_received(request)
    elapsed = time.process_time() - started
    assert transport.writes == count, transport.writes
    return elapsed


CASES = {
    "http": [("HTTP, 2 headers", lambda n: time_http(http_request(MINIMAL_HEADERS), n)),
             ("HTTP, 12 browser headers", lambda n: time_http(http_request(BROWSER_HEADERS), n))],
    "uwsgi": [("uwsgi, connection + request", time_uwsgi)],
    "fastcgi": [("FastCGI, kept connection", time_fastcgi)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("protocols", nargs="*", help=f"some of {', '.join(CASES)} (default: all)")
    parser.add_argument("--requests", type=int, default=100_000, help="requests per run (default 100000)")
    args = parser.parse_args()
    unknown = set(args.protocols) - set(CASES)
    if unknown:
        parser.error(f"unknown protocol(s): {', '.join(sorted(unknown))}")
    for protocol in args.protocols or CASES:
        for title, measure in CASES[protocol]:
            measure(1000)        # warm the caches (env keys, heads, status codes)
            best = min(measure(args.requests) for _ in range(5))
            print(f"{title:30s} {best / args.requests * 1e6:6.2f} µs/request")


if __name__ == "__main__":
    main()
