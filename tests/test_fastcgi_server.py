"""The FastCGI socket (--fastcgi-socket) of the real server, over raw sockets: requests are built with the
codec's encoders, records read back with a small decoder here (every read has a deadline)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time

import pytest

from conftest import APPS, free_port, wait_for_port, wait_for_unix_socket, wait_until
from wsgistack.protocols.fastcgi_codec import (ProtocolStatus, RecordType, Role, decode_name_value_pairs,
                                               encode_abort_request, encode_begin_request, encode_get_values,
                                               encode_params, encode_stdin)

NGINX_PARAMS = {   # nginx's stock fastcgi_params for a GET from 203.0.113.7: the path is SCRIPT_NAME, no PATH_INFO
    "QUERY_STRING": "", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "", "CONTENT_LENGTH": "",
    "SCRIPT_NAME": "/environ", "REQUEST_URI": "/environ", "DOCUMENT_URI": "/environ", "DOCUMENT_ROOT": "/srv/www",
    "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "http", "GATEWAY_INTERFACE": "CGI/1.1",
    "SERVER_SOFTWARE": "nginx/1.22.1", "REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "51234", "REMOTE_USER": "",
    "SERVER_ADDR": "127.0.0.1", "SERVER_PORT": "8888", "SERVER_NAME": "example.test", "REDIRECT_STATUS": "200",
    "HTTP_HOST": "example.test",
}
TIMEOUT = 10.0
_HEADER = struct.Struct(">BBHHBx")
_END_REQUEST = struct.Struct(">IB3x")


def request_params(path: str, **overrides: str) -> dict[str, str]:
    target, _, query = path.partition("?")
    return {**NGINX_PARAMS, "SCRIPT_NAME": target, "DOCUMENT_URI": target, "REQUEST_URI": path,
            "QUERY_STRING": query, **overrides}


def fastcgi_request(request_id: int, path: str, body: bytes = b"", keep_conn: bool = False, **params: str) -> bytes:
    if body:
        params.setdefault("CONTENT_LENGTH", str(len(body)))
        params.setdefault("REQUEST_METHOD", "POST")
    return (encode_begin_request(request_id, keep_conn=keep_conn)
            + encode_params(request_id, request_params(path, **params)) + encode_stdin(request_id, body))


class Client:
    """A FastCGI web server's side of one connection (to a TCP port or a unix socket path)."""

    def __init__(self, address: int | str):
        if isinstance(address, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(TIMEOUT)
            self.sock.connect(address)
        else:
            self.sock = socket.create_connection(("127.0.0.1", address), timeout=TIMEOUT)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def record(self) -> tuple[int, int, bytes] | None:
        """The next record (type, request id, content), or None when the server closed the connection."""
        while True:
            if len(self.buffer) >= _HEADER.size:
                version, kind, request_id, length, padding = _HEADER.unpack_from(self.buffer)
                assert version == 1, self.buffer[:32]
                end = _HEADER.size + length + padding
                if len(self.buffer) >= end:
                    content = self.buffer[_HEADER.size:_HEADER.size + length]
                    self.buffer = self.buffer[end:]
                    return kind, request_id, content
            chunk = self.sock.recv(65536)
            if not chunk:
                assert not self.buffer, f"the connection closed in the middle of a record: {self.buffer[:32]!r}"
                return None
            self.buffer += chunk

    def response(self, request_id: int) -> tuple[bytes, int | None]:
        """STDOUT of `request_id` up to its END_REQUEST: (stdout, protocolStatus), or (stdout, None) on close."""
        stdout = []
        while (record := self.record()) is not None:
            kind, rid, content = record
            assert rid == request_id, record
            if kind == RecordType.STDOUT:
                stdout.append(content)
            elif kind == RecordType.END_REQUEST:
                app_status, protocol_status = _END_REQUEST.unpack(content)
                assert stdout[-1] == b"", "STDOUT must be closed by an empty record before END_REQUEST"
                return b"".join(stdout), protocol_status
            else:
                raise AssertionError(f"unexpected record {record}")
        return b"".join(stdout), None

    def closed_by_server(self, wait: float = 2.0) -> bool:
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(TIMEOUT)


def parse_cgi(stdout: bytes) -> tuple[int, dict[str, str], bytes]:
    head, separator, body = stdout.partition(b"\r\n\r\n")
    assert separator, f"no complete CGI head in {stdout[:200]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("Status: "), status_line       # CGI form, never an HTTP status line
    headers = {}
    for line in lines:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return int(status_line.split()[1]), headers, body


def ask(address: int | str, request_id: int, path: str, **kwargs) -> tuple[int, dict[str, str], bytes]:
    client = Client(address)
    try:
        client.send(fastcgi_request(request_id, path, **kwargs))
        stdout, protocol_status = client.response(request_id)
        assert protocol_status == ProtocolStatus.REQUEST_COMPLETE
        assert client.closed_by_server(), "without FCGI_KEEP_CONN the server closes after END_REQUEST"
        return parse_cgi(stdout)
    finally:
        client.close()


@pytest.fixture
def start_fastcgi(start_server):
    """start_fastcgi(*flags) -> (server, port) with --fastcgi-socket on that port."""
    def start(*flags: str, env=None):
        port = free_port()
        server = start_server("--fastcgi-socket", f"127.0.0.1:{port}", *flags, env=env)
        wait_for_port(port, proc=server.proc)
        return server, port
    return start


@pytest.fixture(params=["1", "4"], ids=["inline", "threads"])
def fastcgi(request, start_fastcgi):
    return start_fastcgi("--threads", request.param)


def test_stock_nginx_params(fastcgi):
    _, port = fastcgi
    status, headers, body = ask(port, 1, "/environ?a=%C3%A9")
    assert status == 200 and "connection" not in headers
    environ = json.loads(body)
    # nginx's stock params name the whole path SCRIPT_NAME: for a WSGI app at / that is PATH_INFO.
    assert environ["PATH_INFO"] == "/environ" and environ["SCRIPT_NAME"] == ""
    assert environ["QUERY_STRING"] == "a=%C3%A9"
    for name in ("REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME", "SERVER_PORT", "DOCUMENT_ROOT", "HTTP_HOST"):
        assert environ[name] == NGINX_PARAMS[name], name
    assert environ["wsgi.url_scheme"] == "http"
    assert "CONTENT_LENGTH" not in environ and "CONTENT_TYPE" not in environ


def test_wsgi_keys_cannot_be_set_by_params(start_fastcgi):
    _, port = start_fastcgi()
    environ = json.loads(ask(port, 1, "/environ", **{"wsgi.url_scheme": "https", "wsgi.run_once": "1",
                                                      "wsgi.custom": "x"})[2])
    assert environ["wsgi.url_scheme"] == "http" and environ["wsgi.run_once"] is False
    assert "wsgi.custom" not in environ


def test_unix_socket(start_server, tmp_path):
    path = str(tmp_path / "fcgi.sock")
    start_server("--fastcgi-socket", path)
    wait_for_unix_socket(path)
    environ = json.loads(ask(path, 1, "/environ")[2])
    assert environ["PATH_INFO"] == "/environ" and environ["REMOTE_ADDR"] == NGINX_PARAMS["REMOTE_ADDR"]


def test_split_path_info_is_kept(start_fastcgi):
    _, port = start_fastcgi()
    environ = json.loads(ask(port, 1, "/app/environ", SCRIPT_NAME="/app", PATH_INFO="/environ", HTTPS="on")[2])
    assert environ["SCRIPT_NAME"] == "/app" and environ["PATH_INFO"] == "/environ"
    assert environ["wsgi.url_scheme"] == "https"


def test_body_in_many_stdin_records(fastcgi):
    _, port = fastcgi
    body = os.urandom(300_000)                 # several 64 KiB STDIN records
    status, headers, echoed = ask(port, 7, "/echo", body=body)
    assert status == 200 and echoed == body and headers["content-length"] == str(len(body))


def test_body_without_content_length(start_fastcgi):
    _, port = start_fastcgi()
    environ = json.loads(ask(port, 1, "/environ", body=b"z" * 1234, CONTENT_LENGTH="")[2])
    assert environ["CONTENT_LENGTH"] == "1234"


def test_keep_conn_serves_requests_in_turn(fastcgi):
    _, port = fastcgi
    client = Client(port)
    try:
        for request_id, path in ((1, "/echo"), (2, "/stream?n=3&delay=0"), (1, "/big?size=200000")):
            client.send(fastcgi_request(request_id, path, body=b"ping" if path == "/echo" else b"", keep_conn=True))
            stdout, protocol_status = client.response(request_id)
            assert protocol_status == ProtocolStatus.REQUEST_COMPLETE
            status, headers, body = parse_cgi(stdout)
            assert status == 200
        assert body == b"x" * 200000
        assert not client.closed_by_server(wait=0.5), "FCGI_KEEP_CONN: the connection stays open"
    finally:
        client.close()


def test_multiplexing_is_refused(start_fastcgi):
    _, port = start_fastcgi("--threads", "4")
    client = Client(port)
    try:
        client.send(encode_begin_request(1, keep_conn=True) + encode_params(1, request_params("/sleep?t=0.3")))
        client.send(encode_begin_request(2, keep_conn=True))
        kind, request_id, content = client.record()
        assert (kind, request_id) == (RecordType.END_REQUEST, 2)
        assert _END_REQUEST.unpack(content)[1] == ProtocolStatus.CANT_MPX_CONN
        client.send(encode_stdin(1, b""))
        stdout, protocol_status = client.response(1)
        assert protocol_status == ProtocolStatus.REQUEST_COMPLETE and parse_cgi(stdout)[2] == b"slept"
    finally:
        client.close()


def test_get_values(start_fastcgi):
    _, port = start_fastcgi("--processes", "2", "--threads", "3")
    client = Client(port)
    try:
        client.send(encode_get_values(["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS", "UNKNOWN"]))
        kind, request_id, content = client.record()
        assert (kind, request_id) == (RecordType.GET_VALUES_RESULT, 0)
        assert decode_name_value_pairs(content, "reply") == {"FCGI_MAX_CONNS": "6", "FCGI_MAX_REQS": "6",
                                                             "FCGI_MPXS_CONNS": "0"}
    finally:
        client.close()


def test_unknown_role_is_refused(start_fastcgi):
    _, port = start_fastcgi()
    client = Client(port)
    try:
        client.send(encode_begin_request(3, role=Role.AUTHORIZER))
        kind, request_id, content = client.record()
        assert (kind, request_id) == (RecordType.END_REQUEST, 3)
        assert _END_REQUEST.unpack(content)[1] == ProtocolStatus.UNKNOWN_ROLE
        assert client.closed_by_server()
    finally:
        client.close()


def wait_for_text(path, text: str, timeout: float = TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path} after {timeout}s")


def test_abort_while_the_app_streams(start_fastcgi, tmp_path):
    close_log = tmp_path / "close.log"
    _, port = start_fastcgi("--threads", "4", env={**os.environ, "WSGISTACK_TEST_CLOSE_LOG": str(close_log)})
    client = Client(port)
    try:
        client.send(fastcgi_request(5, "/stream?n=500&delay=0.02&tag=fcgi-abort", keep_conn=True))
        kind, request_id, content = client.record()
        assert kind == RecordType.STDOUT and content.startswith(b"Status: 200 OK")
        started = time.monotonic()
        client.send(encode_abort_request(5))
        _, protocol_status = client.response(5)          # STDOUT already on its way, then END_REQUEST
        assert protocol_status == ProtocolStatus.REQUEST_COMPLETE
        assert time.monotonic() - started < 5, "the app must stop, not stream its 10 s to the end"
        wait_for_text(close_log, "closed fcgi-abort")
        # The kept connection serves the next request.
        client.send(fastcgi_request(6, "/echo", body=b"after", keep_conn=True))
        assert parse_cgi(client.response(6)[0])[2] == b"after"
    finally:
        client.close()


def test_abort_while_an_inline_stream_waits_for_the_reader(start_fastcgi, tmp_path):
    close_log = tmp_path / "close.log"
    _, port = start_fastcgi("--threads", "1", env={**os.environ, "WSGISTACK_TEST_CLOSE_LOG": str(close_log)})
    client = Client(port)
    try:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.send(fastcgi_request(5, f"/big?size={200 * 1024 * 1024}&tag=inline-abort", keep_conn=True))
        time.sleep(0.5)                 # unread: the socket fills and the stream pauses on the loop thread
        client.send(encode_abort_request(5))
        stdout, protocol_status = client.response(5)
        assert protocol_status == ProtocolStatus.REQUEST_COMPLETE
        assert len(stdout) < 100 * 1024 * 1024
        wait_for_text(close_log, "closed inline-abort")
        client.send(fastcgi_request(6, "/echo", body=b"after", keep_conn=True))
        assert parse_cgi(client.response(6)[0])[2] == b"after"
    finally:
        client.close()


def test_abort_before_the_app_runs(fastcgi):
    server, port = fastcgi
    client = Client(port)
    try:
        client.send(encode_begin_request(9, keep_conn=True) + encode_params(9, request_params(
            "/echo", REQUEST_METHOD="POST", CONTENT_LENGTH="1000")) + encode_stdin(9, b"a" * 100, end_stream=False))
        client.send(encode_abort_request(9))
        stdout, protocol_status = client.response(9)
        assert stdout == b"" and protocol_status == ProtocolStatus.REQUEST_COMPLETE
        client.send(encode_stdin(9, b"b" * 900))               # late records of the aborted request: ignored
        client.send(fastcgi_request(10, "/echo", body=b"next", keep_conn=True))
        assert parse_cgi(client.response(10)[0])[2] == b"next"
    finally:
        client.close()
    assert server.wait_log("/echo => generated 4 bytes").count("POST /echo =>") == 1   # the aborted one never ran


def test_peer_closing_mid_response_still_closes_the_iterable(start_fastcgi, tmp_path):
    close_log = tmp_path / "close.log"
    _, port = start_fastcgi("--threads", "4", env={**os.environ, "WSGISTACK_TEST_CLOSE_LOG": str(close_log)})
    client = Client(port)
    client.send(fastcgi_request(1, "/stream?n=500&delay=0.02&tag=fcgi-gone"))
    assert client.record()[0] == RecordType.STDOUT
    client.close()
    wait_for_text(close_log, "closed fcgi-gone")


def test_app_error_is_a_500_in_cgi_form(fastcgi):
    server, port = fastcgi
    status, headers, body = ask(port, 1, "/error")
    assert status == 500 and body == b"Internal Server Error"
    assert "connection" not in headers
    server.wait_log("boom: this traceback belongs in the error log only")


def test_error_after_the_head_ends_without_end_request(start_fastcgi):
    server, port = start_fastcgi()
    client = Client(port)
    try:
        client.send(fastcgi_request(1, "/error-after-start", keep_conn=True))
        stdout, protocol_status = client.response(1)
        # A cut response must not look complete: the server closes without END_REQUEST, nginx reports it.
        assert protocol_status is None and stdout.endswith(b"partial")
    finally:
        client.close()


def test_response_framing(fastcgi):
    _, port = fastcgi
    status, headers, body = ask(port, 1, "/stream?n=3&delay=0")
    assert body == b"chunk 0\nchunk 1\nchunk 2\n" and "transfer-encoding" not in headers
    status, headers, body = ask(port, 1, "/big?size=1000", REQUEST_METHOD="HEAD")
    assert headers["content-length"] == "1000" and body == b""
    status, headers, body = ask(port, 1, "/file")                 # wsgi.file_wrapper: no sendfile() here
    assert body == (APPS / "basic.py").read_bytes()
    status, headers, body = ask(port, 1, "/status?code=204")
    assert status == 204 and body == b""


def test_http_request_on_the_fastcgi_port(start_fastcgi):
    server, port = start_fastcgi()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert "fastcgi_pass" in server.wait_log("received an HTTP request")


def test_allow_from_refuses_other_peers(start_fastcgi):
    server, port = start_fastcgi("--fastcgi-allow-from", "10.0.0.0/8")
    client = Client(port)
    try:
        client.send(fastcgi_request(1, "/environ"))
        try:
            assert client.record() is None
        except ConnectionResetError:    # closed with the request unread: the kernel may answer with a reset
            pass
    finally:
        client.close()
    log = server.wait_log("refused a FastCGI connection from 127.0.0.1")
    assert "--fastcgi-allow-from" in log and "=> generated" not in log


def test_limit_post(start_fastcgi):
    server, port = start_fastcgi("--limit-post", "1000")
    status, _, body = ask(port, 1, "/echo", body=b"q" * 5000)
    assert status == 413 and b"--limit-post" in body
    status, _, body = ask(port, 1, "/echo", body=b"q" * 5000, CONTENT_LENGTH="")
    assert status == 413
    assert "=> generated" not in server.log()


def test_truncated_request_is_logged(start_fastcgi):
    server, port = start_fastcgi()
    client = Client(port)
    try:
        client.send(fastcgi_request(1, "/environ")[:30])
        client.sock.shutdown(socket.SHUT_WR)
        assert client.closed_by_server()
    finally:
        client.close()
    assert "=> generated" not in server.wait_log("in the middle of a request")


def test_graceful_stop_finishes_the_request_then_closes(start_fastcgi):
    server, port = start_fastcgi("--threads", "4")
    client = Client(port)
    try:
        client.send(fastcgi_request(1, "/sleep?t=1", keep_conn=True))
        time.sleep(0.3)
        server.proc.terminate()
        stdout, protocol_status = client.response(1)
        assert protocol_status == ProtocolStatus.REQUEST_COMPLETE and parse_cgi(stdout)[2] == b"slept"
        assert client.closed_by_server(wait=5), "a draining worker closes kept connections once idle"
    finally:
        client.close()
    assert server.proc.wait(10) == 0


def test_harakiri_answers_504_in_fastcgi_framing(start_fastcgi):
    server, port = start_fastcgi("--threads", "2", "--harakiri", "1")
    client = Client(port)
    try:
        client.send(fastcgi_request(1, "/sleep?t=10", keep_conn=True))
        stdout, protocol_status = client.response(1)
        assert protocol_status == ProtocolStatus.REQUEST_COMPLETE
        assert parse_cgi(stdout)[0] == 504
    finally:
        client.close()
    server.wait_log("HARAKIRI")


# --- found by a hostile review (each failed before its fix) ---

def test_a_kept_connection_is_served_on_while_its_worker_drains(start_fastcgi):
    """nginx caches an FCGI_KEEP_CONN connection on END_REQUEST and may send the next request at once: a
    draining (reloaded, recycled) worker that closed right after its answer lost that request, a 502 for a
    POST. The worker answers what comes, and closes the connection once it idles."""
    server, port = start_fastcgi("--threads", "4")
    client = Client(port)
    try:
        client.send(fastcgi_request(1, "/sleep?t=0.6", keep_conn=True))
        time.sleep(0.3)
        os.kill(server.pid, signal.SIGHUP)          # the worker drains once the new one is ready
        assert parse_cgi(client.response(1)[0])[2] == b"slept"
        server.wait_log("reload complete")
        # Right after each END_REQUEST, as nginx under load; well within the drain's first second (DRAIN_GRACE),
        # after which the worker closes a busy connection with an answer.
        for _ in range(3):
            client.send(fastcgi_request(1, "/echo", body=b"post body", keep_conn=True))
            stdout, protocol_status = client.response(1)
            assert protocol_status == ProtocolStatus.REQUEST_COMPLETE and parse_cgi(stdout)[2] == b"post body"
        assert client.closed_by_server(wait=5), "once idle, the draining worker closes the connection"
    finally:
        client.close()


@pytest.mark.parametrize("declared, body, complaint", [
    ("-5", b"abc", "invalid CONTENT_LENGTH '-5'"),
    ("abc", b"abc", "invalid CONTENT_LENGTH 'abc'"),
    ("10", b"abc", "STDIN carried 3 bytes of a body whose CONTENT_LENGTH is 10"),
    ("2", b"abcdef", "STDIN carried 6 bytes of a body whose CONTENT_LENGTH is 2"),
])
def test_a_content_length_that_lies_is_refused(start_fastcgi, declared, body, complaint):
    """As on the uwsgi socket: CONTENT_LENGTH is digits and the length of STDIN, or the request never reaches
    the app (the connection closes, the log says why)."""
    server, port = start_fastcgi()
    client = Client(port)
    try:
        client.send(fastcgi_request(1, "/echo", body=body, CONTENT_LENGTH=declared))
        assert client.response(1) == (b"", None)
    finally:
        client.close()
    log = server.wait_log(complaint)
    assert "POST /echo =>" not in log


def test_answers_do_not_name_the_server(fastcgi):
    _, port = fastcgi
    status, headers, _ = ask(port, 1, "/")
    assert status == 200 and "server" not in headers


def test_a_kept_connection_busy_through_the_drain_is_closed_between_answers(start_fastcgi):
    """nginx reusing the connection every few milliseconds never leaves it idle: it is closed with an answer
    (its FIN with END_REQUEST) a second into the drain, not cut under a request at the --reload-mercy deadline."""
    server, port = start_fastcgi("--reload-mercy", "3")
    client = Client(port)
    answered, started = 0, time.monotonic()
    try:
        client.send(fastcgi_request(1, "/", keep_conn=True))
        assert client.response(1)[1] == ProtocolStatus.REQUEST_COMPLETE
        os.kill(server.pid, signal.SIGHUP)
        server.wait_log("reload complete")
        while time.monotonic() - started < 10:
            time.sleep(0.02)
            client.send(fastcgi_request(1, "/echo", body=b"post", keep_conn=True))
            stdout, protocol_status = client.response(1)
            if protocol_status is None:
                break                     # closed: this request never reached the worker (nginx would retry)
            assert parse_cgi(stdout)[2] == b"post"
            answered += 1
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        client.close()
    assert answered > 10 and time.monotonic() - started < 4.5
    assert "graceful stop timed out" not in server.log()


def test_a_peer_that_takes_no_answers_is_read_no_more(start_fastcgi):
    """Management records answered into a socket nobody reads: the worker stops reading the peer, so the answers
    cannot fill its memory (a flood of FCGI_GET_VALUES grew a worker by 10 MB a second)."""
    server, port = start_fastcgi()
    worker, = wait_until(server.workers, what="the worker")
    assert ask(port, 1, "/")[0] == 200                    # ready: its memory is that of a serving worker

    def resident() -> int:
        return int(next(line for line in open(f"/proc/{worker}/status") if line.startswith("VmRSS")).split()[1])

    before = resident()
    flood = encode_get_values(["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"]) * 1000
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        sent, deadline = 0, time.monotonic() + 3
        while time.monotonic() < deadline and sent < 200 << 20:
            try:
                sent += sock.send(flood)
            except BlockingIOError:
                time.sleep(0.01)
        grown = resident() - before
    assert sent < 200 << 20, "the worker read everything"
    assert grown < 32 * 1024, f"the worker grew by {grown} KiB"
    assert ask(port, 1, "/")[0] == 200


def cut_answer(port: int, path: str) -> tuple[bytes, str]:
    """A request without FCGI_KEEP_CONN whose answer is cut short: (its STDOUT, how the connection ended:
    "FIN" or "reset"). No END_REQUEST may come: the answer is not whole."""
    client = Client(port)
    stdout = []
    try:
        client.send(fastcgi_request(1, path))
        while (record := client.record()) is not None:
            assert record[0] == RecordType.STDOUT, record
            stdout.append(record[2])
        end = "FIN"
    except ConnectionResetError:
        end = "reset"
    finally:
        client.close()
    return b"".join(stdout), end


@pytest.mark.parametrize("path", ["/error-after-start", "/short"])
def test_a_cut_answer_without_keep_conn_ends_with_a_reset(fastcgi, path):
    """Without FCGI_KEEP_CONN (nginx's default) nginx takes the close for the end of the answer, END_REQUEST or
    not: a FIN after the STDOUT of an app that raised midway, or sent less than its Content-Length, made the cut
    answer look whole (a chunked answer ended by nginx's last chunk, one fastcgi_cache stores; or a client left
    waiting for the bytes promised). Only a reset tells nginx the answer was cut."""
    server, port = fastcgi
    stdout, end = cut_answer(port, path)
    assert end == "reset", stdout
    server.wait_log("boom mid-stream" if path == "/error-after-start" else "less than its Content-Length")


def test_a_script_name_set_in_nginx_is_where_the_app_is_mounted(start_fastcgi):
    """`fastcgi_param SCRIPT_NAME /prefix;` after the stock fastcgi_params (which send no PATH_INFO): SCRIPT_NAME
    is where the app is mounted, PATH_INFO the rest of DOCUMENT_URI. Every URL under the prefix reached the app
    as PATH_INFO "/prefix", SCRIPT_NAME empty."""
    _, port = start_fastcgi()
    for script_name in ("/app", "/app/"):
        environ = json.loads(ask(port, 1, "/app/environ?x=1", SCRIPT_NAME=script_name)[2])
        assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", "/environ")
        assert (environ["REQUEST_URI"], environ["QUERY_STRING"]) == ("/app/environ?x=1", "x=1")
    # A SCRIPT_NAME that is no whole-segment prefix of the path mounts nothing: the path is PATH_INFO.
    environ = json.loads(ask(port, 1, "/environ", SCRIPT_NAME="/env")[2])
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("", "/environ")
