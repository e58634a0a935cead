"""--stats (stats.py): uWSGI's stats server, read as uwsgitop and monitoring tools read it, from the real server.

Worker figures reach the master once a second, so each check waits (bounded) for the document to show them.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from conftest import failed_start, free_port, wait_until

# Every field uwsgitop and uWSGI's other readers take from a worker (uWSGI's core/master_utils.c).
WORKER_FIELDS = {"id", "pid", "accepting", "requests", "delta_requests", "exceptions", "harakiri_count", "signals",
                 "signal_queue", "status", "rss", "vsz", "running_time", "last_spawn", "respawn_count", "tx", "avg_rt",
                 "apps", "cores"}


def read_stats(address) -> dict:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(address)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data)


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_the_document_counts_what_the_workers_did(start_server):
    stats_port = free_port()
    server = start_server("-p", "2", "--threads", "2", "--stats", f"127.0.0.1:{stats_port}")
    for path in ["/"] * 9 + ["/error"]:
        get(server.port, path)
    address = ("127.0.0.1", stats_port)
    stats = wait_until(lambda: (lambda doc: doc if sum(w["requests"] for w in doc["workers"]) == 10 else None)(
        read_stats(address)), what="10 requests in the stats")
    workers = stats["workers"]
    assert {w["pid"] for w in workers} == set(server.workers()) and [w["id"] for w in workers] == [1, 2]
    assert all(WORKER_FIELDS <= set(w) for w in workers)
    assert all(w["status"] == "idle" and w["accepting"] == 1 and w["rss"] > 1_000_000 and len(w["cores"]) == 2
               for w in workers)
    assert sum(w["exceptions"] for w in workers) == 1
    assert sum(w["tx"] for w in workers) == 9 * len(b"Hello, World!") + len(b"Internal Server Error")
    assert stats["pid"] == server.pid and stats["version"].startswith("wsgistack ")
    assert stats["sockets"] == [{"name": f"127.0.0.1:{server.port}", "proto": "http", "queue": 0, "max_queue": 1024,
                                 "shared": 0, "can_offload": 0}]
    assert server.stop() == 0


def test_a_worker_in_a_request_is_busy(start_server, tmp_path):
    path = str(tmp_path / "stats.sock")
    server = start_server("--stats", path)
    wait_until(lambda: read_stats(path)["workers"][0]["pid"] in server.workers(), what="stats on the unix socket")
    slow = threading.Thread(target=get, args=(server.port, "/sleep?t=3"), daemon=True)
    slow.start()
    stats = wait_until(lambda: (lambda doc: doc if doc["workers"][0]["status"] == "busy" else None)(read_stats(path)),
                       what="a busy worker")
    assert stats["load"] == 1 and stats["workers"][0]["cores"][0]["in_request"] == 1
    slow.join(timeout=30)
    wait_until(lambda: read_stats(path)["workers"][0]["status"] == "idle", what="idle again")
    assert read_stats(path)["workers"][0]["running_time"] >= 2_900_000        # µs in app code
    assert server.stop() == 0


def test_over_http_and_with_cheaper_slots(start_server):
    stats_port = free_port()
    server = start_server("-p", "3", "--cheaper", "1", "--cheaper-algo", "manual", "--stats", f"127.0.0.1:{stats_port}",
                          "--stats-http", "--stats-minified")
    conn = http.client.HTTPConnection("127.0.0.1", stats_port, timeout=10)
    conn.request("GET", "/")
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 200 and response.getheader("Content-Type") == "application/json"
    assert body.count(b"\n") == 1                                           # minified: one line
    workers = json.loads(body)["workers"]
    assert [w["status"] for w in workers][1:] == ["cheap", "cheap"] and workers[0]["pid"] == server.workers()[0]
    assert server.stop() == 0


@pytest.mark.parametrize("address, message", [
    ("nowhere", "option 'stats': bad address 'nowhere': expected host:port, :port or a unix socket path"),
    ("in-use", "option 'stats': cannot listen on '127.0.0.1:{port}': address already in use"),
])
def test_an_address_that_cannot_work_is_a_startup_error(tmp_path, address, message):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ini, errors = failed_start(tmp_path, f"stats = {f'127.0.0.1:{port}' if address == 'in-use' else address}")
    assert f"{ini}:4: {message.format(port=port)}" in errors


def test_an_http_client_that_sends_nothing_still_gets_the_document(start_server):
    """uWSGI's stats-http answers without reading a request; so do we, after waiting a moment for one (an
    unread request closed on would reset the answer)."""
    stats_port = free_port()
    server = start_server("--stats", f"127.0.0.1:{stats_port}", "--stats-http")
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", stats_port), timeout=10) as sock:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert time.monotonic() - started < 2
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK") and json.loads(body)["workers"][0]["pid"] == server.workers()[0]
    assert server.stop() == 0
