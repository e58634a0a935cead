"""--cheaper against the real server: workers started as load comes and stopped as it goes, nothing lost.

Load is concurrent slow requests (/sleep of tests/apps/basic.py), each on a new connection; every one
of them must be answered 200 while workers come and go. The algorithms' arithmetic is tested in
test_cheaper_unit.py; here, that the master and workers act on it.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time

import pytest

from conftest import failed_start, free_port, wait_for_port, wait_until
from wsgistack.protocols.uwsgi_codec import encode_uwsgi_request

SCALE_TIMEOUT = 30.0        # seconds a change of worker count may take (cycles of 1 s, a worker's start)


class SlowLoad:
    """`clients` threads, each sending GET /sleep?t=SECONDS on a new connection, again and again, until stopped
    (at most `limit` seconds). Counts the answers and the failures."""

    def __init__(self, port: int, clients: int, seconds: float, limit: float = 60.0):
        self.port, self.seconds = port, seconds
        self.deadline = time.monotonic() + limit
        self.done = threading.Event()
        self.answered = self.failed = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _client(self) -> None:
        while not self.done.is_set() and time.monotonic() < self.deadline:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("GET", f"/sleep?t={self.seconds}")
                ok = conn.getresponse().status == 200
            except OSError:
                ok = False
            finally:
                conn.close()
            with self.lock:
                if ok:
                    self.answered += 1
                else:
                    self.failed += 1

    def stop(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(timeout=40)


def worker_count(server, count: int) -> bool:
    return len(server.workers()) == count


@pytest.mark.parametrize("flags", [
    ("--cheaper-overload", "1"),
    ("--cheaper-algo", "busyness", "--cheaper-overload", "1", "--cheaper-busyness-multiplier", "2", "--threads", "2"),
], ids=["spare", "busyness-threads"])
def test_workers_follow_the_load(start_server, flags):
    server = start_server("-p", "3", "--cheaper", "1", "--disable-logging", *flags)
    server.wait_log("with 1 processes")
    wait_until(lambda: worker_count(server, 1), what="1 worker at first")
    load = SlowLoad(server.port, clients=8, seconds=0.2)
    try:
        wait_until(lambda: worker_count(server, 3), timeout=SCALE_TIMEOUT, what="3 workers under load")
    finally:
        load.stop()
    wait_until(lambda: worker_count(server, 1), timeout=SCALE_TIMEOUT, what="back to 1 worker without load")
    assert load.failed == 0 and load.answered > 20
    log = server.log()
    assert "starting 1 worker(s), now 3 of at most 3" in log and "one worker less, now 1 of at least 1" in log
    assert "Traceback" not in log and server.stop() == 0


def test_a_reload_keeps_as_many_workers_as_serve(start_server):
    server = start_server("-p", "4", "--cheaper", "1", "--cheaper-initial", "2", "--cheaper-algo", "manual")
    wait_until(lambda: worker_count(server, 2), what="cheaper-initial workers")
    os.kill(server.pid, signal.SIGTTIN)
    wait_until(lambda: worker_count(server, 3), what="a third worker (SIGTTIN)")
    before = set(server.workers())
    os.kill(server.pid, signal.SIGHUP)
    server.wait_log("reload complete: generation 2")
    wait_until(lambda: worker_count(server, 3) and not before & set(server.workers()), what="3 new workers")
    assert server.stop() == 0


def uwsgi_sleep(port: int, seconds: float) -> int:
    """A uwsgi request for /sleep; the answer's status."""
    path = f"/sleep?t={seconds}"
    packet = encode_uwsgi_request({"REQUEST_METHOD": "GET", "PATH_INFO": "/sleep", "QUERY_STRING": path[7:],
                                   "REQUEST_URI": path, "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "localhost",
                                   "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost"})
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(packet)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_backlog_of_a_uwsgi_socket_adds_workers(start_server):
    """Behind nginx's uwsgi_pass each worker accepts one connection at a time: the others wait in the socket's
    accept queue, which the backlog algorithm reads."""
    port = free_port()
    server = start_server("--socket", f"127.0.0.1:{port}", "-p", "3", "--cheaper", "1", "--cheaper-algo", "backlog",
                          "--cheaper-overload", "2", "--disable-logging", listen=False, wait=False)
    wait_for_port(port, proc=server.proc)
    server.wait_log("with 1 processes")
    statuses: list[int] = []
    clients = [threading.Thread(target=lambda: statuses.append(uwsgi_sleep(port, 1.0)), daemon=True)
               for _ in range(10)]
    for client in clients:
        client.start()
    server.wait_log("connections waiting to be accepted: starting 1 worker(s)", timeout=SCALE_TIMEOUT)
    for client in clients:
        client.join(timeout=60)
    assert statuses == [200] * 10
    wait_until(lambda: worker_count(server, 1), timeout=SCALE_TIMEOUT, what="back to 1 worker")
    assert server.stop() == 0


PRODUCTION_INI = """\
[uwsgi]
; uWSGI's "configuring for production" settings (the Bloomberg post), with fewer processes
strict = true
master = true
enable-threads = true
vacuum = true
single-interpreter = true
die-on-term = true
need-app = true

disable-logging = true
log-4xx = true
log-5xx = true

harakiri = 60
py-call-osafterfork = true

max-requests = 1000
max-worker-lifetime = 3600
reload-on-rss = 2048
worker-reload-mercy = 60

cheaper-algo = busyness
processes = 6
cheaper = 2
cheaper-initial = 3
cheaper-overload = 1
cheaper-step = 2

cheaper-busyness-multiplier = 30
cheaper-busyness-min = 20
cheaper-busyness-max = 70
cheaper-busyness-backlog-alert = 16
cheaper-busyness-backlog-step = 2

auto-procname = true
procname-prefix-spaced = myapp
"""


def test_the_production_config_of_uwsgis_docs_runs_as_written(start_server, tmp_path):
    ini = tmp_path / "uwsgi.ini"
    ini.write_text(PRODUCTION_INI)
    server = start_server(str(ini))
    server.wait_log("with 3 processes x 1 threads (cheaper, busyness: 2 to 6 processes as load asks)")
    wait_until(lambda: worker_count(server, 3), what="cheaper-initial workers")
    for path in ("/", "/status?code=404", "/environ"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", path)
        conn.getresponse().read()
        conn.close()
    log = server.wait_log("GET /status?code=404 =>")
    assert "GET / =>" not in log and "GET /environ =>" not in log and "warning" not in log
    assert server.stop() == 0


def test_a_cheaper_that_cannot_work_is_a_startup_error(tmp_path):
    ini, errors = failed_start(tmp_path, "processes = 4", "cheaper = 4")
    assert f"{ini}:5: option 'cheaper': must be lower than processes (4)" in errors
