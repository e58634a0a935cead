"""HTTP/1.1 behaviour of the real server, seen by real clients: http.client, raw sockets, curl and wrk.

Every test starts its own `wsgistack` (tests/apps/basic.py) on a free loopback port.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime

import pytest

from conftest import APPS, raw_request, responses_in, wait_until
from rawhttp import THREAD_MODES, RawConnection, close_log_env, get, wait_file_contains

STREAM_BODY = b"".join(b"chunk %d\n" % i for i in range(5))


def environ_of(conn: http.client.HTTPConnection) -> dict:
    conn.request("GET", "/environ")
    response = conn.getresponse()
    assert response.status == 200
    return json.loads(response.read())


# --- keep-alive ---

def test_keep_alive_reuses_one_connection(server):
    conn = server.connection()
    try:
        environs = [environ_of(conn) for _ in range(4)]
        assert conn.sock is not None, "the server closed a keep-alive connection"
    finally:
        conn.close()
    assert len({env["REMOTE_PORT"] for env in environs}) == 1


def test_connection_close_closes(server):
    with RawConnection(server.port) as conn:
        conn.request("GET", "/", {"Connection": "close"})
        response = conn.read_response()
        assert response.status == 200 and response.body == b"Hello, World!"
        assert response.header("Connection") == "close"
        assert conn.closed_by_server()


def test_http10_closes_by_default(server):
    with RawConnection(server.port) as conn:
        conn.request("GET", "/", version="HTTP/1.0")
        response = conn.read_response()
        assert response.status == 200 and response.body == b"Hello, World!"
        assert (response.header("Connection") or "close").lower() == "close"
        assert conn.closed_by_server()


def test_http10_keep_alive_when_asked(server):
    with RawConnection(server.port) as conn:
        for _ in range(3):
            conn.request("GET", "/", {"Connection": "keep-alive"}, version="HTTP/1.0")
            response = conn.read_response()
            assert response.status == 200 and response.body == b"Hello, World!"
            assert response.header("Connection").lower() == "keep-alive"
        assert not conn.closed_by_server(timeout=0.3)


@pytest.mark.parametrize("path", ["/", "/sleep?t=2.5"], ids=["quick", "after-a-long-request"])
def test_idle_keep_alive_connection_is_closed_after_the_timeout(start_server, path):
    server = start_server("--keepalive-timeout", "1", "--threads", "4")
    with RawConnection(server.port) as conn:
        conn.request("GET", path)
        assert conn.read_response().status == 200
        # Idle time counts from the end of the response: a client reusing the connection at once
        # must not race a close.
        assert not conn.closed_by_server(timeout=0.7), "closed before being idle for 1 s"
        assert conn.closed_by_server(timeout=5.0), "an idle connection outlived --keepalive-timeout 1"


def test_a_graceful_stop_closes_an_idle_keep_alive_connection_outright(start_server):
    """As nginx at its shutdown: no lingering close for a connection with nothing unread (it would hold the stop
    3 s more for every client that keeps its connection open, as pools and health checkers do). Nothing reads
    the client's next bytes then: they get a reset, not an ACK into a lingering socket."""
    server = start_server()
    with RawConnection(server.port) as conn:
        conn.request("GET", "/")
        assert conn.read_response().status == 200
        server.proc.send_signal(signal.SIGTERM)
        assert conn.closed_by_server(timeout=10.0)
        with pytest.raises((BrokenPipeError, ConnectionResetError)):    # within a second: a lingering close
            for _ in range(10):                                             # would ACK them for 2-3 s
                conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                time.sleep(0.1)
        assert server.proc.wait(10) == 0


def test_an_idle_close_while_the_last_answer_is_still_on_its_way_lingers(start_server):
    """The app is done with the answer, but megabytes of it still wait in the socket for a slow reader when the
    keep-alive timeout closes the connection. Closed outright, the client's next request drew a reset that
    dropped the rest of the answer; a lingering close (as nginx's) delivers it whole, then ends."""
    server = start_server("--keepalive-timeout", "1")
    size = 4 << 20
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.connect(("127.0.0.1", server.port))
        sock.settimeout(10)
        sock.sendall(b"GET /big?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        data, deadline = b"", time.monotonic() + 20
        while "GET /big?size=" not in server.log() and time.monotonic() < deadline:   # logged: the app is done
            data += sock.recv(16384)
            time.sleep(0.01)
        assert len(data) < size, "the answer left the server's buffers before the app was done: nothing to test"
        time.sleep(2.5)                  # idle past the keep-alive timeout, the rest of the answer unread
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        while chunk := sock.recv(1 << 20):
            data += chunk
        assert len(data.partition(b"\r\n\r\n")[2]) == size, f"the answer was cut at {len(data)} bytes"


def stalled_download(port: int, path: str, repeat: int = 1, then: bytes = b"") -> socket.socket:
    """A client that asks for a big answer (`repeat` times, then sends `then`) and reads nothing of it (a tiny
    receive window)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * repeat + then)
    return sock


@pytest.mark.parametrize("threads", ["1", "2"])
def test_clients_that_stop_reading_do_not_hold_the_app_threads(start_server, threads, tmp_path):
    """Two clients stop reading a streamed answer (and one a file sent by sendfile): with two app threads
    both would wait on them for ever. --send-timeout closes them, the threads serve others again."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "big.bin").write_bytes(b"x" * (40 << 20))          # more than the socket buffers hold
    env, close_log = close_log_env(tmp_path)
    server = start_server("--threads", threads, "--send-timeout", "2", "--static-map", f"/files={files}", env=env)
    stalled = [stalled_download(server.port, "/big?size=400000000&tag=stalled") for _ in range(2)]
    stalled.append(stalled_download(server.port, "/files/big.bin"))
    try:
        time.sleep(1)
        started = time.monotonic()
        assert get(server.port, "/").status == 200
        assert time.monotonic() - started < 8
        log = server.wait_log("took nothing of an answer for over 2 s (--send-timeout)")
        wait_until(lambda: server.log().count("--send-timeout") == 3, what="all 3 stalled clients closed")
        # (the app writes the file as its close() runs, which may come after the log line)
        wait_until(lambda: close_log.exists() and close_log.read_text().count("closed stalled") == 2,
                   what="close() ran for both")
    finally:
        for sock in stalled:
            sock.close()
    assert "Traceback" not in log
    assert server.stop() == 0


# --- HEAD ---

def headers_but_date(response) -> list[tuple[str, str]]:
    return sorted((name.lower(), value) for name, value in response.headers if name.lower() != "date")


@pytest.mark.parametrize("path", ["/", "/big?size=100000", "/file"])
def test_head_has_the_headers_of_get_and_no_body(server, path):
    got = get(server.port, path)
    with RawConnection(server.port) as conn:
        conn.request("HEAD", path)
        head = conn.read_response("HEAD")
        # The next response must start right after the head: any body byte would break it.
        conn.request("GET", "/")
        after = conn.read_response()
    assert head.status == got.status == 200
    assert head.header("Content-Length") == got.header("Content-Length") == str(len(got.body))
    assert headers_but_date(head) == headers_but_date(got)
    assert after.status == 200 and after.body == b"Hello, World!"


def test_head_of_a_framework_that_strips_the_body_claims_no_length(server):
    """Werkzeug, Bottle and WebOb answer HEAD with an empty iterable: a Content-Length: 0 computed from it would
    be false (the GET is a stream of unknown length), and RFC 9110, section 8.6, forbids that."""
    got = get(server.port, "/head-stripped")
    assert got.header("Transfer-Encoding") == "chunked" and got.body == b"streamed body"
    with RawConnection(server.port) as conn:
        conn.request("HEAD", "/head-stripped")
        head = conn.read_response("HEAD")
        conn.request("GET", "/")
        after = conn.read_response()
    assert head.status == 200 and not head.has("Content-Length") and not head.has("Transfer-Encoding")
    assert after.body == b"Hello, World!"


# --- Expect: 100-continue ---

def expect_head(path: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
            f"Expect: 100-continue\r\n\r\n").encode()


@THREAD_MODES
def test_expect_100_continue_before_the_body(start_server, threads):
    server = start_server("--threads", threads)
    body = b"the body, sent only after 100 Continue"
    with RawConnection(server.port) as conn:
        conn.send(expect_head("/echo", len(body)))
        interim = conn.read_head()
        assert interim.status == 100 and interim.version == "HTTP/1.1"
        conn.send(body)
        response = conn.read_response()
        assert response.status == 200 and response.body == body
        conn.request("GET", "/")          # still usable
        assert conn.read_response().body == b"Hello, World!"


@THREAD_MODES
def test_expect_100_continue_not_sent_when_the_app_does_not_read(start_server, threads):
    server = start_server("--threads", threads)
    with RawConnection(server.port) as conn:
        conn.send(expect_head("/no-read", 1000))
        response = conn.read_response()
        assert response.status == 401, f"got {response.status} before the final response"
        assert response.body == b"denied"
        assert response.header("Connection") == "close"     # RFC 9110 10.1.1: say so when not reading on
        assert conn.closed_by_server(), "the unread body would be parsed as the next request"


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_streamed_body_that_stops_coming_frees_its_app_thread(start_server, threads):
    """With Expect: 100-continue the app reads the body on an app thread as it arrives. Two clients that send
    part of it and stop would hold both threads of --threads 2: --body-timeout answers them 408."""
    server = start_server("--threads", threads, "--body-timeout", "2")
    stalled = []
    for _ in range(2):
        conn = RawConnection(server.port)
        conn.send(expect_head("/echo", 1000))
        assert conn.read_head().status == 100
        conn.send(b"only part of it")
        stalled.append(conn)
    try:
        time.sleep(0.5)
        assert get(server.port, "/").status == 200          # inline (--threads 1), or after the timeout
        for conn in stalled:
            response = conn.read_response()
            assert response.status == 408 and conn.closed_by_server()
    finally:
        for conn in stalled:
            conn.close()
    assert "request body stalled" in server.log()
    assert server.stop() == 0


# --- chunked request bodies ---

def test_chunked_request_environ(server):
    response = get(server.port, "/environ", "POST", {"Transfer-Encoding": "chunked"},
                   b"5\r\nhello\r\n0\r\n\r\n")
    environ = json.loads(response.body)
    assert "CONTENT_LENGTH" not in environ
    assert environ["wsgi.input_terminated"] is True


def test_chunked_request_with_extensions_and_trailers(server):
    body = b"5;name=value\r\nhello\r\n6;flag\r\n world\r\n0\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n"
    with RawConnection(server.port) as conn:
        conn.request("POST", "/echo", {"Transfer-Encoding": "chunked"}, body)
        response = conn.read_response()
        assert response.status == 200 and response.body == b"hello world"
        conn.request("GET", "/")
        assert conn.read_response().body == b"Hello, World!"


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def summary(body: bytes) -> bytes:
    """What /echo-len answers."""
    return f"{len(body)} {body[:16].hex()} {body[-16:].hex()}".encode()


@pytest.mark.parametrize("path, expected", [("/echo-len", summary), ("/echo", lambda body: body)])
def test_big_chunked_upload_spools_and_arrives_intact(start_server, path, expected):
    server = start_server("--post-buffering", "65536")
    body = payload(5 * 1024 * 1024)
    pieces = (body[i:i + 100_000] for i in range(0, len(body), 100_000))
    conn = server.connection(timeout=30)
    try:
        conn.request("POST", path, body=pieces, encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == expected(body)
    finally:
        conn.close()


# --- response framing ---

def test_chunked_response_without_content_length(server):
    response = get(server.port, "/stream?n=5&delay=0")
    assert response.header("Transfer-Encoding") == "chunked"
    assert not response.has("Content-Length")
    assert response.body == STREAM_BODY


def test_http10_response_without_content_length_is_close_delimited(server):
    with RawConnection(server.port) as conn:
        conn.request("GET", "/stream?n=5&delay=0", version="HTTP/1.0")
        response = conn.read_head()
        assert response.status == 200
        assert not response.has("Transfer-Encoding") and not response.has("Content-Length")
        assert conn.read_until_close() == STREAM_BODY


@THREAD_MODES
def test_streaming_sends_chunks_as_produced(start_server, threads):
    server = start_server("--threads", threads)
    with RawConnection(server.port) as conn:
        started = time.monotonic()
        conn.request("GET", "/stream?n=5&delay=0.3")
        assert conn.read_head().header("Transfer-Encoding") == "chunked"
        size = int(conn.read_line(), 16)
        assert conn.read_exact(size) == b"chunk 0\n"
        first = time.monotonic() - started
        conn.read_line()
        rest = conn.read_chunked()
        total = time.monotonic() - started
    assert rest == STREAM_BODY[len(b"chunk 0\n"):]
    assert first < 1.0, f"first chunk after {first:.2f}s: the response was buffered"
    assert total >= 1.2


@THREAD_MODES
def test_body_shorter_than_content_length_closes(start_server, threads):
    server = start_server("--threads", threads)
    with RawConnection(server.port) as conn:
        conn.request("GET", "/short")
        head = conn.read_head()
        assert head.header("Content-Length") == "100"
        assert conn.read_until_close() == b"only twenty bytes!!!"
    conn = server.connection()
    try:
        conn.request("GET", "/short")
        with pytest.raises(http.client.IncompleteRead):
            conn.getresponse().read()
    finally:
        conn.close()
    server.wait_log("less than its Content-Length")


@THREAD_MODES
def test_body_longer_than_content_length_is_truncated_and_closes(start_server, threads):
    server = start_server("--threads", threads)
    with RawConnection(server.port) as conn:
        conn.request("GET", "/long")
        assert conn.read_head().header("Content-Length") == "5"
        assert conn.read_until_close() == b"12345"
    server.wait_log("more than its Content-Length")


def test_date_and_server_headers(server):
    response = get(server.port, "/")
    assert response.header("Server") == "wsgistack"
    date = parsedate_to_datetime(response.header("Date"))
    assert abs(date.timestamp() - time.time()) < 3600


@THREAD_MODES
def test_big_response_arrives_intact(start_server, threads):
    server = start_server("--threads", threads)
    size = 10 * 1024 * 1024
    status, headers, body = server.get(f"/big?size={size}")
    assert status == 200 and headers["Content-Length"] == str(size)
    assert len(body) == size and body.count(b"x") == size


@THREAD_MODES
def test_slow_reader_gets_everything(start_server, threads):
    server = start_server("--threads", threads)
    size = 20 * 1000 * 1000
    with RawConnection(server.port) as conn:
        conn.request("GET", f"/big?size={size}")
        assert conn.read_head().header("Content-Length") == str(size)
        received = conn.read_exact(100_000)
        for _ in range(3):              # the server's socket buffer fills: its writes must pause, not fail
            time.sleep(0.4)
            received += conn.read_exact(100_000)
        received += conn.read_exact(size - len(received))
        assert received.count(b"x") == size
        conn.request("GET", "/")
        assert conn.read_response().body == b"Hello, World!"


@THREAD_MODES
def test_pipelined_responses_of_every_framing_in_order(start_server, threads):
    server = start_server("--threads", threads)
    file_bytes = (APPS / "basic.py").read_bytes()
    expected = [
        ("GET", "/", b"Hello, World!"),
        ("GET", "/file", file_bytes),                              # sendfile
        ("GET", "/stream?n=5&delay=0", STREAM_BODY),               # chunked
        ("GET", "/write", b"from write, then iterable"),           # write()
        ("HEAD", "/big?size=300000", b""),
        ("GET", "/big?size=300000", b"x" * 300000),
        ("POST", "/echo", b"posted"),
        ("GET", "/status?code=204", b""),
        ("GET", "/exc-info", b"oops"),
        ("GET", "/file", file_bytes),
    ]
    with RawConnection(server.port) as conn:
        conn.send(b"".join(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
            + (b"Content-Length: %d\r\n\r\n%b" % (len(body), body) if method == "POST" else b"\r\n")
            for method, path, body in expected))
        for method, path, body in expected:
            assert conn.read_response(method).body == body, f"{method} {path}"
        assert not conn.closed_by_server(timeout=0.2)


# --- client aborts ---

@THREAD_MODES
@pytest.mark.parametrize("path", ["/big?size=50000000", "/stream?n=50&delay=0.1"])
def test_client_abort_closes_the_iterable(start_server, tmp_path, threads, path):
    env, close_log = close_log_env(tmp_path)
    server = start_server("--threads", threads, env=env)
    tag = f"abort-{threads}-{path[1:4]}"
    with RawConnection(server.port) as conn:
        conn.request("GET", f"{path}&tag={tag}")
        conn.read_head()
        conn.read_exact(8)
    wait_file_contains(close_log, f"closed {tag}\n", timeout=10)
    assert get(server.port, "/").body == b"Hello, World!", "the worker is still serving"


# --- curl ---

def curl(*args: str) -> bytes:
    result = subprocess.run(["curl", "-s", "-S", "--max-time", "20", *args], capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def split_curl_response(output: bytes) -> tuple[bytes, bytes]:
    head, _, body = output.partition(b"\r\n\r\n")
    return head, body


def test_curl_get(server):
    head, body = split_curl_response(curl("-i", f"http://127.0.0.1:{server.port}/"))
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 13" in head and b"Server: wsgistack" in head
    assert body == b"Hello, World!"


@pytest.mark.parametrize("extra", [[], ["-H", "Transfer-Encoding: chunked"]], ids=["length", "chunked"])
def test_curl_upload(server, tmp_path, extra):
    data = payload(300_000, seed=2)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(data)
    assert curl("--data-binary", f"@{upload}", *extra, f"http://127.0.0.1:{server.port}/echo") == data


def test_curl_http10(server):
    base = f"http://127.0.0.1:{server.port}"
    head, body = split_curl_response(curl("--http1.0", "-i", f"{base}/"))
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"Hello, World!"
    head, body = split_curl_response(curl("--http1.0", "-i", f"{base}/stream?n=5&delay=0"))
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert body == STREAM_BODY


# --- load ---

@pytest.mark.parametrize("flags", [[], ["--processes", "2", "--threads", "4"]], ids=["default", "p2t4"])
def test_wrk_run_without_errors(start_server, flags):
    server = start_server(*flags, "--disable-logging")
    result = subprocess.run(["wrk", "-t1", "-c16", "-d2s", f"http://127.0.0.1:{server.port}/"],
                            capture_output=True, text=True, timeout=30)
    output = result.stdout
    assert result.returncode == 0, result.stderr
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    assert requests > 100, output
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    assert errors is None or set(errors.groups()) == {"0"}, output
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    assert non_2xx is None or non_2xx.group(1) == "0", output


# --- processes and threads ---

def test_two_processes_both_serve(start_server):
    server = start_server("--processes", "2")
    pids = set()
    for _ in range(300):
        pids.add(int(server.get("/pid")[2]))
        if len(pids) == 2:
            break
    assert len(pids) == 2, f"only {pids} answered 300 fresh connections"
    assert pids <= set(server.workers())


def sleep_in_parallel(connections: list[http.client.HTTPConnection]) -> float:
    """GET /sleep?t=1 on each connection at once; the elapsed seconds."""
    def sleep(conn):
        conn.request("GET", "/sleep?t=1")
        response = conn.getresponse()
        return response.status, response.read()

    started = time.monotonic()
    with ThreadPoolExecutor(len(connections)) as pool:
        results = list(pool.map(sleep, connections))
    elapsed = time.monotonic() - started
    for conn in connections:
        conn.close()
    assert results == [(200, b"slept")] * len(connections)
    return elapsed


def connections_to_distinct_workers(server, count: int, tries: int = 300) -> list[http.client.HTTPConnection]:
    """Keep-alive connections, one per worker: which worker accepts a connection is the kernel's choice."""
    by_pid: dict[int, http.client.HTTPConnection] = {}
    for _ in range(tries):
        conn = server.connection()
        conn.request("GET", "/pid")
        pid = int(conn.getresponse().read())
        if pid in by_pid:
            conn.close()
        else:
            by_pid[pid] = conn
        if len(by_pid) == count:
            return list(by_pid.values())
    raise AssertionError(f"only workers {sorted(by_pid)} accepted {tries} connections")


@pytest.mark.parametrize("threads, count, check", [
    ("4", 4, lambda elapsed: elapsed < 2.0),
    ("1", 2, lambda elapsed: elapsed >= 2.0),
], ids=["threads-overlap", "inline-serializes"])
def test_concurrency_in_one_process(start_server, threads, count, check):
    server = start_server("--processes", "1", "--threads", threads)
    elapsed = sleep_in_parallel([server.connection() for _ in range(count)])
    assert check(elapsed), f"{count} concurrent /sleep?t=1 took {elapsed:.2f}s"


def test_two_processes_overlap(start_server):
    server = start_server("--processes", "2", "--threads", "1")
    elapsed = sleep_in_parallel(connections_to_distinct_workers(server, 2))
    assert elapsed < 1.8, f"2 concurrent /sleep?t=1 on two workers took {elapsed:.2f}s"


# --- found by a hostile review (each failed before its fix) ---

def _resident_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@THREAD_MODES
def test_a_client_that_pipelines_and_never_reads_cannot_fill_the_workers_memory(start_server, threads):
    """nginx answers pipelined requests one at a time, reading the next once the answer went out. A client
    sending 3000 requests for 64 KiB answers and reading none once grew a worker by ~150 MB (190 MB of
    answers for 110 kB sent); now the worker stops taking requests while the client's socket is full."""
    server = start_server("--threads", threads)
    worker, = wait_until(server.workers, what="the worker")
    assert server.get("/")[0] == 200               # ready: its memory is that of a serving worker
    before = _resident_kib(worker)
    request = b"GET /big?size=65536 HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        unsent, deadline = memoryview(request * 3000), time.monotonic() + 3
        while unsent and time.monotonic() < deadline:    # what the kernel takes: the server may stop reading
            try:
                unsent = unsent[sock.send(unsent):]
            except BlockingIOError:
                time.sleep(0.05)
        time.sleep(1.5)
        grown = _resident_kib(worker) - before
    assert grown < 40 * 1024, f"the worker grew by {grown} KiB"
    assert server.get("/")[0] == 200


@THREAD_MODES
def test_tiny_pipelined_requests_behind_a_stalled_answer_wait_as_bytes_not_as_environs(start_server, threads):
    """A read of 128 KiB of tiny pipelined requests behind an answer the client does not read once became ~5,000
    environs at once (2.6 MB per connection, 77 kB in nginx); now MAX_PENDING wait and the rest stay bytes. Every
    answer still comes, in order, once the client reads."""
    server = start_server("--threads", threads)
    worker, = wait_until(server.workers, what="the worker")
    assert server.get("/")[0] == 200
    before = _resident_kib(worker)
    tiny = b"GET /?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    count = (128 << 10) // len(tiny)
    clients = []
    try:
        for _ in range(20):
            clients.append(stalled_download(server.port, "/big?size=1000000", then=tiny * count))
            clients[-1].settimeout(10)
        time.sleep(1.5)
        grown = _resident_kib(worker) - before
        assert grown < 20 * 1024, f"the worker grew by {grown} KiB"
        data, deadline = b"", time.monotonic() + 20
        while data.count(b"HTTP/1.1 200 OK\r\n") < count + 1 and time.monotonic() < deadline:
            data += clients[0].recv(1 << 20)
        assert data.count(b"HTTP/1.1 200 OK\r\n") == count + 1
        assert data.endswith(b"Hello, World!")
    finally:
        for sock in clients:
            sock.close()


@THREAD_MODES
@pytest.mark.parametrize("last", ["close", "bad"])
def test_requests_pipelined_before_the_one_that_ends_the_connection_are_all_answered(start_server, threads, last):
    """RFC 9112 9.6 (and nginx): a connection closes after the request that says `close`, or after the error answer
    to a bad one, not before the requests sent ahead of it. With app threads, those still queued once lost
    keep-alive and the connection closed after the next answer."""
    server = start_server("--threads", threads)
    ending = (b"GET /?n=last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" if last == "close"
              else b"GET /?n=last HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
    data = raw_request(server.port, b"GET /sleep?t=0.3 HTTP/1.1\r\nHost: x\r\n\r\n"
                       + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 50 + ending
                       + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 5, timeout=15)
    assert responses_in(data) == [200] * (52 if last == "close" else 51) + ([] if last == "close" else [400])
    assert data.count(b"Connection: close") == 1


def test_the_servers_own_error_answers_carry_a_date(server):
    """RFC 9110 6.6.1: an origin server with a clock sends Date, in its own 4xx answers too."""
    with RawConnection(server.port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
        response = conn.read_response()
    assert response.status == 400
    assert parsedate_to_datetime(response.header("Date")).year >= 2024


@pytest.mark.parametrize("framing, body", [({"Content-Length": "5"}, b"hello"),
                                           ({"Transfer-Encoding": "chunked"}, b"5\r\nhello\r\n0\r\n\r\n")])
def test_an_upgrade_request_keeps_its_body(server, framing, body):
    """`curl --http2 -d ...` on http:// asks to switch to h2c: we never switch, so the request is served as
    sent, body included (llhttp skips it, which once gave the app an empty body), then the connection closes."""
    with RawConnection(server.port) as conn:
        conn.request("POST", "/echo", {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
                                       "HTTP2-Settings": "AAMAAABkAAQCAAAAAAIAAAAA", **framing}, body)
        response = conn.read_response()
        assert (response.status, response.body) == (200, b"hello")
        assert conn.closed_by_server()


@pytest.mark.parametrize("threads", ["1", "2", "4"])
def test_uploads_that_never_come_do_not_hold_the_app(start_server, threads):
    """Expect: 100-continue clients that get 100 and send nothing: an app thread waiting on each must not leave
    the worker without one for other requests. With --threads N, N-1 such uploads stream to the app at most (the
    next ones get 100 from the loop, which buffers their bodies, as nginx); with 1 thread, the app is lent to the
    loop while it waits. (One such client once froze a --threads 1 worker for --body-timeout.)"""
    server = start_server("--threads", threads)
    pinned = []
    try:
        for _ in range(4):
            conn = RawConnection(server.port)
            conn.send(expect_head("/echo", 1000))
            assert conn.read_head().status == 100
            pinned.append(conn)
        started = time.monotonic()
        assert get(server.port, "/").body == b"Hello, World!"
        assert time.monotonic() - started < 2
        pinned[0].send(b"x" * 1000)                     # the first one's app still gets its whole body
        assert pinned[0].read_response().body == b"x" * 1000
    finally:
        for conn in pinned:
            conn.close()


@pytest.mark.parametrize("threads", ["1", "4"])
def test_an_upload_faster_than_the_app_reads_waits_for_it(start_server, threads):
    """An Expect: 100-continue body streams to the app as it reads: past a read-ahead of 1 MB the worker stops
    reading the client (it once buffered a 2 GB upload in memory as fast as it came)."""
    server = start_server("--threads", threads, app="extra.py")
    worker, = wait_until(server.workers, what="the worker")
    assert server.get("/")[0] == 200               # ready: its memory is that of a serving worker
    before = _resident_kib(worker)
    size = 40 << 20
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(expect_head("/slow-read", size))
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.setblocking(False)
        unsent, deadline = memoryview(b"x" * size), time.monotonic() + 2
        while unsent and time.monotonic() < deadline:
            try:
                unsent = unsent[sock.send(unsent):]
            except BlockingIOError:
                time.sleep(0.01)
        grown = _resident_kib(worker) - before
        assert unsent, "the whole upload went into the worker in 2 s"
    assert grown < 16 * 1024, f"the worker grew by {grown} KiB"
    assert server.get("/")[0] == 200


def test_the_temp_file_of_an_upload_cut_short_is_closed_at_once(start_server):
    """A body spooled to a temp file (past --post-buffering) whose client went away: the file goes with the
    connection, not when the garbage collector gets to it (40 such uploads once held 150 MB of /tmp)."""
    server = start_server("--post-buffering", "65536")
    worker, = wait_until(server.workers, what="the worker")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n" + b"y" * 1_000_000)
        wait_until(lambda: spooled_files(worker), what="the body spooled")
    wait_until(lambda: not spooled_files(worker), timeout=5, what="the temp file closed")


def spooled_files(worker: int) -> list[str]:
    """The worker's open unnamed temp files (request bodies past --post-buffering)."""
    targets = []
    for fd in os.listdir(f"/proc/{worker}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{worker}/fd/{fd}"))
        except FileNotFoundError:
            pass                        # closed meanwhile
    return [target for target in targets if target.startswith(tempfile.gettempdir() + "/#")]


@pytest.mark.parametrize("threads", ["1", "4"])
def test_a_request_body_is_freed_once_answered(start_server, threads):
    """The temp file of a spooled upload is closed with its answer, not when the client's next request (or the
    garbage collector) comes: 40 sequential 25 MB uploads once held 650 MB of /tmp."""
    server = start_server("--post-buffering", "65536", "--threads", threads)
    worker, = wait_until(server.workers, what="the worker")
    with RawConnection(server.port) as conn:         # kept open, idle after its answer
        conn.request("POST", "/echo-len", {"Content-Length": "300000"}, b"y" * 300_000)
        assert conn.read_response().body.startswith(b"300000 ")
        wait_until(lambda: not spooled_files(worker), timeout=5, what="the temp file closed after the answer")


def test_a_closed_answer_the_client_does_not_take_is_given_up_after_the_send_timeout(start_server):
    """`Connection: close` (or HTTP/1.0) and a client that reads nothing of a big answer: the connection was
    never timed out once closed, its descriptor and buffered answer held for good (nginx: send_timeout)."""
    server = start_server("--send-timeout", "1")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    with sock:
        sock.sendall(b"GET /big?size=20000000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        server.wait_log("took nothing of an answer for over 1 s (--send-timeout)", timeout=10)
    assert server.get("/")[0] == 200


@pytest.mark.parametrize("threads", ["1", "4"])
def test_a_sendfile_given_up_starts_no_pipelined_request(start_server, tmp_path, threads):
    """--send-timeout during a sendfile with requests pipelined behind it: the next one started on the aborted
    connection (uvloop reports the loss a pass later) and held its file and a dup of the socket until the client
    closed, 2 descriptors per such client for as long as it liked."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "big.bin").write_bytes(b"x" * 270_000)
    server = start_server("--threads", threads, "--send-timeout", "2", "--static-map", f"/files={files}")
    assert server.get("/files/big.bin")[0] == 200          # the worker has opened all it keeps open
    worker, = server.workers()
    baseline = len(os.listdir(f"/proc/{worker}/fd"))
    clients = []
    try:
        for _ in range(5):
            clients.append(stalled_download(server.port, "/files/big.bin", repeat=30))
        wait_until(lambda: server.log().count("(--send-timeout)") == 5, timeout=20, what="5 send timeouts")
        # the clients still hold their ends: the worker must hold nothing of theirs
        wait_until(lambda: len(os.listdir(f"/proc/{worker}/fd")) <= baseline, timeout=10,
                   what=f"the worker back to {baseline} descriptors")
    finally:
        for sock in clients:
            sock.close()
    assert server.get("/")[0] == 200


def test_a_slow_steady_reader_of_one_big_body_is_not_cut(start_server):
    """--send-timeout counts between two successive writes (nginx), not until the app's one big chunk is sent:
    a client reading 2.5 MB/s of a 12 MB one-piece answer (Django's HttpResponse) was cut after a few MB."""
    server = start_server("--send-timeout", "1")
    body = os.urandom(12 << 20)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", server.port))
    sock.settimeout(10)
    with sock:                          # kept alive: the connection is not closing, its answer is paused
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        received = bytearray()
        deadline = time.monotonic() + 60
        while not received.endswith(body) and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
            time.sleep(0.025)
    assert received.endswith(body) and len(received) - len(body) < 1000, len(received)
    assert "--send-timeout" not in server.log()


def test_a_one_second_header_timeout_is_never_under_a_second(start_server):
    """Timeouts are counted in the worker's once-a-second sweeps, and the first sweep can come at once: a head
    sent in two pieces 0.6 s apart got a 408 under --header-timeout 1 about every other time."""
    server = start_server("--header-timeout", "1")
    for _ in range(5):
        with RawConnection(server.port) as conn:
            conn.send(b"GET /pid HTTP/1.1\r\n")
            time.sleep(0.6)
            conn.send(b"Host: x\r\n\r\n")
            assert conn.read_response().status == 200


def test_an_upload_the_app_does_not_read_still_gets_its_answer(start_server):
    """A client that sends its whole body before reading (http.client does, Expect or not) while the app answers
    401 without reading it: past the 1 MB read-ahead the worker had stopped reading, and its lingering close
    then reset the connection, answer unread. The linger reads and drops the rest, as nginx's does."""
    server = start_server()
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(expect_head("/no-read", 8 << 20))
        sock.sendall(b"z" * (8 << 20))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401 ") and answer.endswith(b"denied")


def test_port_zero_is_served_on_the_port_the_kernel_chose_and_the_log_names_it(start_server):
    """`http = :0` (a port picked by the kernel, handy in tests and containers): the startup line names the port."""
    server = start_server("--http", "127.0.0.1:0", "-p", "2", listen=False, wait=False)
    log = server.wait_log("serving http on 127.0.0.1:0 (port ", timeout=15)
    port = int(re.search(r"127\.0\.0\.1:0 \(port (\d+)\)", log)[1])
    assert port != 0
    for _ in range(6):
        assert get(port, "/pid").status == 200


@pytest.mark.parametrize("threads", ["1", "4"])
def test_a_half_close_after_pipelined_requests_still_gets_every_answer(start_server, threads):
    """shutdown(SHUT_WR) after the requests means "no more requests", not "fewer answers": with app threads (or an
    Expect upload on its own thread) only the first two were answered, the rest dropped without a word. nginx answers
    all of them."""
    server = start_server("--threads", threads)
    upload = (b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello")
    for first in (b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n", upload):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(first + b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", data) if code != b"100"]
        assert statuses == [200] * 4, data


def test_no_answer_follows_an_answer_cut_short_on_a_pipelined_connection(server):
    """An app error after the head went out ends the answer with the connection; the next pipelined request is
    left unanswered (the client retries it) rather than answered into the cut body, where it would be read as body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /error-after-start HTTP/1.1\r\nHost: x\r\n\r\nGET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and data.count(b"HTTP/1.1 ") == 1, data


def test_a_unix_socket_without_chmod_socket_has_the_umasks_mode(start_server, tmp_path):
    """As uWSGI: the umask decides (--umask, or the service's). A 0666 default let any local user connect and, on a
    uwsgi socket, set REMOTE_USER and REMOTE_ADDR."""
    path = tmp_path / "app.sock"
    umask = os.umask(0o027)
    try:
        start_server("--http", str(path), listen=False, wait=False)
    finally:
        os.umask(umask)
    wait_until(path.exists, what="the socket")
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o750)


def test_a_late_sweep_does_not_shorten_the_keep_alive_timeout(start_server):
    """An inline request across a second boundary delays the worker's once-a-second sweep; the next one came 0.2 s
    later, and both counted: a --keepalive-timeout 1 connection was closed after 0.3 s idle."""
    server = start_server("--threads", "1", "--keepalive-timeout", "1")
    for _ in range(2):
        deadline = time.monotonic() + 5
        while not 0.9 <= time.time() % 1 < 0.95 and time.monotonic() < deadline:     # the app runs across x+1.0
            time.sleep(0.005)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /sleep?t=0.8 HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"slept"):
                data += sock.recv(4096)
            answered = time.monotonic()
            assert sock.recv(4096) == b""
            assert time.monotonic() - answered > 0.85


# --- found by a review of the day's changes (each failed before) ---

def test_an_expect_upload_whose_stream_the_client_cuts_leaves_the_worker_serving(start_server):
    """--threads 1: an Expect: 100-continue upload (curl sends one for any body over 1 MB) runs on a helper thread;
    its client gone mid-stream, the loop closed the stream itself, the thread never gave the app back, and the
    worker answered no request again."""
    server = start_server("--threads", "1")
    body = b"u" * 100_000
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(expect_head("/stream?n=2000&delay=0.01", len(body)) + body)   # curl's, after its 1 s wait
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")       # the stream has begun
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    for _ in range(3):
        assert get(server.port, "/pid").status == 200


def test_an_expect_uploads_file_answer_does_not_hold_the_app_during_the_send(start_server, tmp_path):
    """--threads 1: an Expect upload answered with wsgi.file_wrapper: its app is done once the send begins; another
    request waited for the whole transfer to a slow client (up to --send-timeout)."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"f" * (40 << 20))
    server = start_server("--threads", "1", app="extra.py")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    with sock:
        sock.sendall(expect_head(f"/wrap?path={big}", 5) + b"hello")      # then reads nothing of the 40 MB
        time.sleep(0.5)                                  # the send under way, the client's window full
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/environ/x")
        assert conn.getresponse().status == 200
        conn.close()
        assert time.monotonic() - started < 3


def test_an_http09_request_after_a_keep_alive_request_is_answered_at_once(start_server):
    """llhttp keeps the first request's version for the next line: the HTTP/0.9 check looked at that."""
    server = start_server()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\nGET /\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [b"200", b"400"], data


# --- --threads 1: the helper thread of Expect uploads (found by a review of the inline mode; each failed before) ---

def test_an_expect_requests_slow_reader_does_not_hold_the_worker(start_server):
    """--threads 1: the helper thread writing an Expect request's answer to a client that reads nothing held the
    app (and so the whole worker) until --send-timeout: it lends the app to the loop while it waits, as it does
    while it waits for the upload's bytes."""
    server = start_server("--threads", "1", "--send-timeout", "30")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    with sock:
        sock.sendall(expect_head("/big?size=33554432", 5) + b"hello")          # then reads nothing of it
        time.sleep(1)
        started = time.monotonic()
        assert get(server.port, "/pid").status == 200
        assert time.monotonic() - started < 3


def test_harakiri_does_not_count_the_wait_for_an_expect_upload(start_server):
    """The app waiting for an Expect upload's bytes is lent to the loop: not app time. A 6 s upload under
    --harakiri 3 got a 504 and the worker killed (without Expect the loop buffers the body: no harakiri)."""
    server = start_server("--threads", "1", "--harakiri", "3")
    piece = b"u" * 6000
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(expect_head("/echo", len(piece) * 10))
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue")
        for _ in range(10):
            sock.sendall(piece)
            time.sleep(0.6)
        data = b""
        while len(data) < len(piece) * 10 or b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    assert "HARAKIRI" not in server.log()


def test_two_expect_requests_never_run_app_code_with_an_inline_one(start_server, tmp_path):
    """--threads 1 runs one request's app code at a time. An Expect request queued behind a paused stream, and
    another one's upload on the helper thread: when that one ended, the first ran on the helper thread while the
    loop ran inline requests."""
    env, close_log = close_log_env(tmp_path)
    server = start_server("--threads", "1", env=env, app="extra.py")
    first = socket.socket()
    first.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    first.connect(("127.0.0.1", server.port))
    with first, socket.create_connection(("127.0.0.1", server.port), timeout=10) as second:
        first.sendall(b"GET /big?size=33554432 HTTP/1.1\r\nHost: x\r\n\r\n"
                      + expect_head("/span?t=2&tag=S1", 5) + b"hello")     # queued behind the paused stream
        time.sleep(0.5)
        second.sendall(expect_head("/span?t=0&tag=S2", 5))
        assert second.recv(64).startswith(b"HTTP/1.1 100 Continue")        # S2's app waits for its body
        first.settimeout(10)
        received = 0
        while received < 33554432:                                          # the stream ends: S1 may start
            received += len(first.recv(1 << 20))
        time.sleep(0.3)
        second.sendall(b"hello")                                            # S2 ends: S1 runs (2 s)
        time.sleep(0.5)
        assert get(server.port, "/span?t=0.5&tag=Z").status == 200
        wait_file_contains(close_log, "end S1", timeout=15)
    spans = {}
    for line in close_log.read_text().split("\n"):
        if line.startswith(("begin ", "end ")):
            event, tag, moment = line.split()
            spans.setdefault(tag, {})[event] = float(moment)
    overlapping = [(a, b) for a in spans for b in spans if a < b
                   and spans[a]["begin"] < spans[b]["end"] and spans[b]["begin"] < spans[a]["end"]]
    assert set(spans) == {"S1", "S2", "Z"} and not overlapping, spans


@pytest.mark.parametrize("flags, headers, scheme", [
    ((), {"X-Forwarded-Proto": "https"}, "https"),             # a proxy on loopback (gunicorn's default trust)
    ((), {"X-Forwarded-Ssl": "on"}, "https"),
    ((), {"X-Forwarded-Proto": "https, http"}, "https"),       # the first (nearest the client) hop's
    ((), {}, "http"),
    (("--forwarded-allow-ips", "10.9.9.9"), {"X-Forwarded-Proto": "https"}, "http"),   # not from this peer
    (("--forwarded-allow-ips", "*"), {"X-Forwarded-Proto": "https"}, "https"),
    (("--forwarded-allow-ips", "10.0.0.0/8, 127.0.0.0/8"), {"X-Forwarded-Proto": "https"}, "https"),   # networks
    (("--forwarded-allow-ips", ""), {"X-Forwarded-Proto": "https"}, "http"),                          # nobody
])
def test_a_trusted_proxy_says_the_scheme(start_server, flags, headers, scheme):
    """An app behind a proxy that ends TLS builds https links and redirects (Django's is_secure(), Flask's
    url_for(_external=True)) from wsgi.url_scheme: from the peers --forwarded-allow-ips trusts (loopback by
    default), X-Forwarded-Proto / X-Forwarded-Ssl set it, as gunicorn and uWSGI do."""
    server = start_server(*flags)
    status, _, body = server.get("/environ", headers=headers)
    assert status == 200 and json.loads(body)["wsgi.url_scheme"] == scheme


def test_a_new_connection_is_not_starved_by_kept_alive_clients_that_keep_the_threads_busy(start_server):
    """Eight kept-alive clients keep both app threads busy (each sends its next request as soon as it has an
    answer): a new connection still gets its turn among theirs, in about their latency (an accept held back while
    no thread was free kept it waiting for as long as they went on)."""
    server = start_server("--threads", "2")
    stop = time.monotonic() + 4.0
    served = []

    def busy_client() -> None:
        conn = server.connection(timeout=10)
        try:
            while time.monotonic() < stop:
                conn.request("GET", "/sleep?t=0.05")
                served.append(conn.getresponse().read())
        finally:
            conn.close()

    clients = [threading.Thread(target=busy_client) for _ in range(8)]
    for client in clients:
        client.start()
    time.sleep(1.0)
    started = time.monotonic()
    status, _, body = server.get("/pid")
    waited = time.monotonic() - started
    for client in clients:
        client.join(15)
    assert status == 200 and waited < 2.0, waited
    assert len(served) > 20


def test_forwarded_allow_ips_that_are_no_address_are_a_startup_error(tmp_path):
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp = 127.0.0.1:0\nwsgi-file = {APPS / 'basic.py'}\nforwarded-allow-ips = localhost\n")
    result = subprocess.run([sys.executable, "-m", "wsgistack", "--ini", str(ini)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1
    assert f"{ini}:4: option 'forwarded-allow-ips': 'localhost' is not an IP address or CIDR network" in result.stderr


def test_a_peer_allow_list_takes_scoped_ipv6_peers_and_refuses_what_is_no_address():
    """A link-local client's address carries its scope (fe80::1%eth0): ip_address() refused it, and the connection
    failed in connection_made (HTTP sockets check --forwarded-allow-ips for every peer)."""
    from wsgistack.protocols.gateway import PeerAllowList

    allowed = PeerAllowList.from_option(["fe80::/10", "127.0.0.1"], "forwarded-allow-ips")
    assert [allowed.allows(peer) for peer in ("fe80::1%eth0", "127.0.0.1", "10.0.0.1", "not-an-ip", "")] == [
        True, True, False, False, True]
