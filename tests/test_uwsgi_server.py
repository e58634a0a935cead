"""The uwsgi socket (--socket) of the real server, over raw sockets: packets are built with the codec's
encoder, answers are read until the server closes (uwsgi is one request per connection)."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

from conftest import APPS, WSGISTACK, free_port, wait_for_port, wait_for_unix_socket
from wsgistack.protocols.uwsgi_codec import encode_uwsgi_request

NGINX_VARS = {   # what nginx's stock uwsgi_params send for a GET from 203.0.113.7 (empty CONTENT_* included)
    "QUERY_STRING": "", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "", "CONTENT_LENGTH": "",
    "REQUEST_URI": "/environ", "PATH_INFO": "/environ", "DOCUMENT_ROOT": "/srv/www", "SERVER_PROTOCOL": "HTTP/1.1",
    "REQUEST_SCHEME": "http", "REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "51234", "SERVER_PORT": "8888",
    "SERVER_NAME": "example.test", "HTTP_HOST": "example.test", "HTTP_USER_AGENT": "test-agent/1.0",
}
TIMEOUT = 10.0


def request_vars(path: str, **overrides: str) -> dict[str, str]:
    target, _, query = path.partition("?")
    return {**NGINX_VARS, "PATH_INFO": target, "REQUEST_URI": path, "QUERY_STRING": query, **overrides}


def exchange(address, *parts: bytes, pause: float = 0.0, half_close: bool = False) -> tuple[bytes, float]:
    """Send `parts` (with a pause between them), read until the server closes; (answer, seconds until EOF).
    A read that times out fails the test: the server must close a uwsgi connection after answering."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(address)
        started = time.monotonic()
        for index, part in enumerate(parts):
            if index and pause:
                time.sleep(pause)
            sock.sendall(part)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks), time.monotonic() - started


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, f"no complete response head in {data[:200]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), status_line
    headers = {}
    for line in lines:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return int(status_line.split()[1]), headers, body


@pytest.fixture
def start_uwsgi(start_server):
    """start_uwsgi(*flags, app="basic.py") -> (server, ("127.0.0.1", port)) with --socket on that port."""
    def start(*flags: str, app: str = "basic.py", bind: str = "127.0.0.1"):
        port = free_port()
        server = start_server("--socket", f"{bind}:{port}", *flags, app=app)
        wait_for_port(port, proc=server.proc)
        return server, ("127.0.0.1", port)
    return start


@pytest.fixture(params=["1", "4"], ids=["inline", "threads"])
def threads(request) -> str:
    """--threads: the loop thread accepts and answers (1), or the app thread that accepted (4, app_threads.py)."""
    return request.param


@pytest.fixture
def uwsgi(start_uwsgi, threads):
    """A uwsgi socket served with the app on the loop thread (--threads 1) and on app threads."""
    return start_uwsgi("--threads", threads)


def test_vars_become_the_environ(uwsgi):
    server, address = uwsgi
    answer, _ = exchange(address, encode_uwsgi_request(request_vars("/environ?a=1&b=%C3%A9")))
    status, headers, body = parse_response(answer)
    assert status == 200
    assert headers["connection"] == "close"
    environ = json.loads(body)
    # The web server's vars win over what the socket says: REMOTE_ADDR is the client's, not nginx's.
    for name in ("REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME", "SERVER_PORT", "DOCUMENT_ROOT", "REQUEST_SCHEME",
                 "HTTP_HOST", "HTTP_USER_AGENT", "SERVER_PROTOCOL"):
        assert environ[name] == NGINX_VARS[name], name
    assert environ["PATH_INFO"] == "/environ"
    assert environ["QUERY_STRING"] == "a=1&b=%C3%A9"
    assert environ["REQUEST_URI"] == "/environ?a=1&b=%C3%A9"
    assert environ["SCRIPT_NAME"] == ""
    assert environ["wsgi.url_scheme"] == "http"
    assert "CONTENT_LENGTH" not in environ and "CONTENT_TYPE" not in environ   # nginx sends them empty
    assert environ["wsgi.input.class"] == "EmptyInput"


@pytest.mark.parametrize("scheme_vars, scheme", [
    ({"HTTPS": "on"}, "https"), ({"REQUEST_SCHEME": "https"}, "https"), ({"HTTPS": "1"}, "https"),
    ({"UWSGI_SCHEME": "https"}, "https"),                        # uWSGI's own: `uwsgi_param UWSGI_SCHEME $scheme;`
    ({"UWSGI_SCHEME": "http", "HTTPS": "on"}, "http"),           # ... which decides first, as in uWSGI
    # a TLS-terminating balancer before nginx (`REQUEST_SCHEME` is nginx's own `$scheme`), as uWSGI takes it
    ({"HTTP_X_FORWARDED_PROTO": "https", "REQUEST_SCHEME": "http"}, "https"),
    ({"HTTP_X_FORWARDED_SSL": "on"}, "https"),
    ({"HTTP_X_FORWARDED_PROTO": "http", "HTTPS": "on"}, "https"),  # nginx's own TLS says more than a header
    ({"HTTP_X_FORWARDED_PROTO": "gopher"}, "http"),
])
def test_the_scheme_from_the_vars(start_uwsgi, scheme_vars, scheme):
    _, address = start_uwsgi()
    answer, _ = exchange(address, encode_uwsgi_request(request_vars("/environ", **scheme_vars)))
    assert json.loads(parse_response(answer)[2])["wsgi.url_scheme"] == scheme


def test_content_type_and_length_are_not_repeated_as_http_vars(start_uwsgi):
    """nginx passes every request header as HTTP_* besides uwsgi_params' CONTENT_TYPE and CONTENT_LENGTH: the
    environ names them once (RFC 3875 4.1.18), as on the http socket, or wsgiref.validate fails every POST."""
    _, address = start_uwsgi()
    body = b"a=1"
    variables = request_vars("/environ", REQUEST_METHOD="POST", CONTENT_LENGTH="3", HTTP_CONTENT_LENGTH="3",
                             CONTENT_TYPE="application/x-www-form-urlencoded",
                             HTTP_CONTENT_TYPE="application/x-www-form-urlencoded")
    environ = json.loads(parse_response(exchange(address, encode_uwsgi_request(variables, body))[0])[2])
    assert (environ["CONTENT_LENGTH"], environ["CONTENT_TYPE"]) == ("3", "application/x-www-form-urlencoded")
    assert "HTTP_CONTENT_LENGTH" not in environ and "HTTP_CONTENT_TYPE" not in environ


def test_an_empty_packet_is_no_request(start_uwsgi):
    """Four zero bytes (no vars at all) once ran the app as `GET` of nothing; uWSGI skips them too."""
    server, address = start_uwsgi()
    assert exchange(address, b"\0\0\0\0")[0] == b""
    log = server.wait_log("empty vars block")
    assert "=> generated" not in log


def test_missing_vars_get_defaults(start_uwsgi):
    _, address = start_uwsgi()
    answer, _ = exchange(address, encode_uwsgi_request({"PATH_INFO": "/environ", "QUERY_STRING": "x=1"}))
    environ = json.loads(parse_response(answer)[2])
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["REQUEST_URI"] == "/environ?x=1"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"          # from the socket when the vars don't say
    assert environ["SERVER_NAME"] == address[0] and environ["SERVER_PORT"] == str(address[1])   # likewise
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.0"


SERVER_WSGI_KEYS = {"wsgi.version", "wsgi.url_scheme", "wsgi.errors", "wsgi.multithread", "wsgi.multiprocess",
                    "wsgi.run_once", "wsgi.input_terminated", "wsgi.file_wrapper", "wsgi.input", "wsgi.input.class"}


def test_wsgi_keys_cannot_be_set_by_vars(start_uwsgi):
    _, address = start_uwsgi()
    packet = encode_uwsgi_request(request_vars("/environ", **{"wsgi.url_scheme": "https", "wsgi.run_once": "1",
                                                              "wsgi.custom": "x"}))
    environ = json.loads(parse_response(exchange(address, packet)[0])[2])
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.run_once"] is False
    assert not any(key.startswith("wsgi.") and key not in SERVER_WSGI_KEYS for key in environ)


def test_body_by_content_length(uwsgi):
    _, address = uwsgi
    body = os.urandom(200_000)
    packet = encode_uwsgi_request(request_vars("/echo", REQUEST_METHOD="POST", CONTENT_LENGTH=str(len(body)),
                                               CONTENT_TYPE="application/octet-stream"))
    # The head and the body arrive in pieces, with pauses: the app must still see the whole body at once.
    answer, _ = exchange(address, packet[:3], packet[3:20], packet[20:], body[:1000], body[1000:], pause=0.05)
    status, headers, echoed = parse_response(answer)
    assert status == 200 and echoed == body


def test_large_body_is_spooled(start_uwsgi, threads):
    """With app threads, the thread that accepted finds only the first part: the loop reads the rest and
    gives the request to an app thread."""
    _, address = start_uwsgi("--post-buffering", "65536", "--threads", threads)
    body = os.urandom(3 * 1024 * 1024)
    packet = encode_uwsgi_request(request_vars("/echo-len", REQUEST_METHOD="POST", CONTENT_LENGTH=str(len(body))))
    answer, _ = exchange(address, packet, body)
    assert parse_response(answer)[2] == f"{len(body)} {body[:16].hex()} {body[-16:].hex()}".encode()


def chunked(body: bytes, size: int) -> bytes:
    pieces = [b"%x;ext=1\r\n%b\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return b"".join(pieces) + b"0\r\nX-Trailer: dropped\r\n\r\n"


def test_chunked_body_forwarded_by_a_router(uwsgi):
    _, address = uwsgi
    body = os.urandom(50_000)
    te = {"REQUEST_METHOD": "POST", "HTTP_TRANSFER_ENCODING": "chunked"}       # and no CONTENT_LENGTH
    answer, _ = exchange(address, encode_uwsgi_request(request_vars("/echo", **te)), chunked(body, 7000), pause=0.05)
    assert parse_response(answer)[2] == body
    # Once de-chunked, the length is known: apps that read CONTENT_LENGTH bytes (Django) see the body.
    answer, _ = exchange(address, encode_uwsgi_request(request_vars("/environ", **te), chunked(body, 7000)))
    assert json.loads(parse_response(answer)[2])["CONTENT_LENGTH"] == str(len(body))


def test_modifier1_30_strips_script_name(start_uwsgi):
    _, address = start_uwsgi()
    packet = encode_uwsgi_request(request_vars("/app/environ", SCRIPT_NAME="/app"), modifier1=30)
    environ = json.loads(parse_response(exchange(address, packet)[0])[2])
    assert environ["SCRIPT_NAME"] == "/app"
    assert environ["PATH_INFO"] == "/environ"


def test_other_modifier1_refused(start_uwsgi, threads):
    server, address = start_uwsgi("--threads", threads)
    answer, _ = exchange(address, encode_uwsgi_request(request_vars("/environ"), modifier1=5))
    assert answer == b""
    log = server.wait_log("modifier1 5 is not served")
    assert "/environ =>" not in log


def test_vars_block_larger_than_buffer_size(start_uwsgi):
    vars_ = request_vars("/environ", HTTP_COOKIE="c=" + "x" * 5000)
    server, address = start_uwsgi()
    assert exchange(address, encode_uwsgi_request(vars_))[0] == b""
    assert "exceeds --buffer-size 4096" in server.wait_log("--buffer-size")
    server, address = start_uwsgi("--buffer-size", "8192")
    assert json.loads(parse_response(exchange(address, encode_uwsgi_request(vars_))[0])[2])["HTTP_COOKIE"] \
        == vars_["HTTP_COOKIE"]


def test_buffer_size_65536_is_taken_as_uwsgi_takes_it(start_uwsgi, tmp_path):
    """`buffer-size = 65536` is in many production inis (uWSGI caps it at 65535); a vars block near that passes.
    More is a mistake, said with the file and line."""
    vars_ = request_vars("/environ", HTTP_COOKIE="c=" + "x" * 60000)
    server, address = start_uwsgi("--buffer-size", "65536")
    assert json.loads(parse_response(exchange(address, encode_uwsgi_request(vars_))[0])[2])["HTTP_COOKIE"] \
        == vars_["HTTP_COOKIE"]
    ini = tmp_path / "big.ini"
    ini.write_text(f"[uwsgi]\nsocket = 127.0.0.1:{free_port()}\nwsgi-file = {APPS / 'basic.py'}\nbuffer-size = 65537\n")
    result = subprocess.run([*WSGISTACK, "--ini", str(ini)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"{ini}:4: option 'buffer-size': must be between 1 and 65536" in result.stderr, result.stderr


def test_http_request_on_the_uwsgi_port(start_uwsgi, threads):
    server, address = start_uwsgi("--threads", threads)
    answer, _ = exchange(address, b"GET /environ HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = parse_response(answer)
    assert status == 400 and b"uwsgi socket" in body
    log = server.wait_log("received an HTTP request")
    assert "uwsgi_pass" in log and "/environ =>" not in log


@pytest.mark.parametrize("packet, message", [
    (b"\x00\x10", "before the whole request arrived"),
    (encode_uwsgi_request(request_vars("/environ"))[:40], "before the whole request arrived"),
    (encode_uwsgi_request(request_vars("/echo", REQUEST_METHOD="POST", CONTENT_LENGTH="100")) + b"x" * 50,
     "before the whole request arrived"),
    (b"\x00\x0a\x00\x00" + b"\xc8\x00KEY\x03\x00abc", "malformed uwsgi vars"),        # a key size past the block
    (b"\x00\x06\x00\x00" + b"\x01\x00K\x05\x00a", "malformed uwsgi vars"),           # a value size past the block
    (encode_uwsgi_request(request_vars("/echo", CONTENT_LENGTH="-1")), "invalid CONTENT_LENGTH"),
], ids=["header", "vars", "body", "key-size", "value-size", "content-length"])
def test_malformed_packets_never_reach_the_app(start_uwsgi, packet, message, threads):
    server, address = start_uwsgi("--threads", threads)
    answer, _ = exchange(address, packet, half_close=True)
    assert answer == b""
    log = server.wait_log(message)
    assert "=> generated" not in log


def test_bytes_after_the_body_are_refused(uwsgi):
    server, address = uwsgi
    packet = encode_uwsgi_request(request_vars("/echo", REQUEST_METHOD="POST", CONTENT_LENGTH="2"), b"okEXTRA")
    assert exchange(address, packet)[0] == b""
    assert "=> generated" not in server.wait_log("unexpected bytes after the request body")


def test_dynamic_app_vars_are_ignored(start_uwsgi, tmp_path):
    marker = tmp_path / "loaded"
    evil = tmp_path / "evil_app.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\napplication = None\n")
    server, address = start_uwsgi()
    vars_ = request_vars("/environ", UWSGI_SCRIPT="evil_app", UWSGI_MODULE="evil_app", UWSGI_CALLABLE="application",
                         UWSGI_FILE=str(evil), UWSGI_PYHOME=str(tmp_path), UWSGI_CHDIR=str(tmp_path),
                         UWSGI_SETENV="PYTHONPATH=" + str(tmp_path))
    status, _, body = parse_response(exchange(address, encode_uwsgi_request(vars_))[0])
    assert status == 200
    environ = json.loads(body)
    assert not [name for name in environ if name.startswith("UWSGI_")]
    assert not marker.exists()
    log = server.wait_log("never loads code")
    assert "UWSGI_SCRIPT" in log and "UWSGI_FILE" in log


def test_allow_from_refuses_other_peers(start_uwsgi, threads):
    server, address = start_uwsgi("--threads", threads, "--uwsgi-allow-from", "10.0.0.0/8",
                                  "--uwsgi-allow-from", "192.168.0.1")
    try:
        assert exchange(address, encode_uwsgi_request(request_vars("/environ")))[0] == b""
    except ConnectionResetError:        # closed with the request unread: the kernel may answer with a reset
        pass
    log = server.wait_log("refused a uwsgi connection from 127.0.0.1")
    assert "--uwsgi-allow-from" in log and "/environ =>" not in log


def test_default_allows_loopback_on_all_interfaces(start_server):
    # The seed's `socket = 0.0.0.0:3031` with nginx on the same host: nginx connects from 127.0.0.1.
    port = free_port()
    server = start_server("--uwsgi-socket", f"0.0.0.0:{port}")
    wait_for_port(port, proc=server.proc)
    assert parse_response(exchange(("127.0.0.1", port), encode_uwsgi_request(request_vars("/environ")))[0])[0] == 200


def test_unix_socket_with_chmod(start_server, tmp_path):
    path = str(tmp_path / "app.sock")
    start_server("-s", path, "--chmod-socket", "660")
    wait_for_unix_socket(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    answer, _ = exchange(path, encode_uwsgi_request(request_vars("/environ")))
    environ = json.loads(parse_response(answer)[2])
    assert environ["REMOTE_ADDR"] == "203.0.113.7"   # unix sockets have no peer address: the vars say it


def test_app_error_is_a_500_in_http_form(uwsgi):
    server, address = uwsgi
    status, headers, body = parse_response(exchange(address, encode_uwsgi_request(request_vars("/error")))[0])
    assert status == 500 and body == b"Internal Server Error"
    assert headers["connection"] == "close"
    server.wait_log("boom: this traceback belongs in the error log only")


def test_response_framing(uwsgi):
    _, address = uwsgi
    # Unknown length: no chunked encoding on the uwsgi protocol, the end of the body is the close.
    status, headers, body = parse_response(exchange(address, encode_uwsgi_request(
        request_vars("/stream?n=3&delay=0")))[0])
    assert body == b"chunk 0\nchunk 1\nchunk 2\n"
    assert "transfer-encoding" not in headers and "content-length" not in headers
    status, headers, body = parse_response(exchange(address, encode_uwsgi_request(
        request_vars("/big?size=300000")))[0])
    assert headers["content-length"] == "300000" and body == b"x" * 300000
    status, headers, body = parse_response(exchange(address, encode_uwsgi_request(
        request_vars("/big?size=1000", REQUEST_METHOD="HEAD")))[0])
    assert headers["content-length"] == "1000" and body == b""
    status, headers, body = parse_response(exchange(address, encode_uwsgi_request(request_vars("/file")))[0])
    assert body == (APPS / "basic.py").read_bytes()


def test_streamed_response_to_a_slow_reader_arrives_whole(uwsgi):
    """8 MB in 64 kB chunks to a client that reads slowly at first: the socket fills up, and the rest is paced
    by the event loop (with app threads: the thread that wrote the first chunks hands the connection over)."""
    _, address = uwsgi
    size = 8 * 1024 * 1024
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(encode_uwsgi_request(request_vars(f"/big?size={size}")))
        chunks = []
        for _ in range(8):                  # slow at first: the server's writes stop going through at once
            time.sleep(0.1)
            chunks.append(sock.recv(65536))
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    status, headers, body = parse_response(b"".join(chunks))
    assert status == 200 and headers["content-length"] == str(size)
    assert len(body) == size and body.count(b"x") == size


def test_client_abort_still_closes_the_iterable(start_server, tmp_path):
    close_log = tmp_path / "close.log"
    port = free_port()
    start_server("--socket", f"127.0.0.1:{port}", "--threads", "4",
                 env={**os.environ, "WSGISTACK_TEST_CLOSE_LOG": str(close_log)})
    wait_for_port(port)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        # 400 chunks, 20 ms apart: 8 s if nobody stops the app
        sock.sendall(encode_uwsgi_request(request_vars("/stream?n=400&delay=0.02&tag=aborted")))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not (close_log.exists() and "closed aborted" in close_log.read_text()):
        time.sleep(0.05)
    assert "closed aborted" in close_log.read_text()
    assert time.monotonic() - started < 6, "the abort must reach the app, not wait for its end"


def test_limit_post(start_uwsgi, threads):
    server, address = start_uwsgi("--threads", threads, "--limit-post", "1000")
    packet = encode_uwsgi_request(request_vars("/echo", REQUEST_METHOD="POST", CONTENT_LENGTH="5000"))
    status, headers, body = parse_response(exchange(address, packet)[0])
    assert status == 413 and b"--limit-post" in body
    chunked_packet = encode_uwsgi_request(request_vars("/echo", REQUEST_METHOD="POST",
                                                       HTTP_TRANSFER_ENCODING="chunked"), chunked(b"y" * 3000, 500))
    assert parse_response(exchange(address, chunked_packet)[0])[0] == 413
    assert "=> generated" not in server.log()


def test_stalled_packet_times_out(start_uwsgi, threads):
    server, address = start_uwsgi("--threads", threads, "--header-timeout", "1")
    answer, elapsed = exchange(address, encode_uwsgi_request(request_vars("/environ"))[:30])
    assert answer == b"" and elapsed < 5
    server.wait_log("no complete request head in time")


def test_graceful_stop_finishes_the_request(start_uwsgi):
    server, address = start_uwsgi("--threads", "4")
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(encode_uwsgi_request(request_vars("/sleep?t=1")))
        time.sleep(0.3)
        server.proc.terminate()
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert parse_response(answer)[2] == b"slept"
    assert server.proc.wait(10) == 0


def test_harakiri_answers_504(start_uwsgi):
    server, address = start_uwsgi("--threads", "2", "--harakiri", "1")
    status, _, body = parse_response(exchange(address, encode_uwsgi_request(request_vars("/sleep?t=10")))[0])
    assert status == 504 and b"harakiri" in body
    server.wait_log("HARAKIRI")


# --- accepting (direct.py): the worker accepts and answers a uwsgi connection itself, handing to uvloop what
# --- it cannot finish at once; all workers take connections from one shared socket, one at a time

def test_request_sent_after_a_silent_connect(start_server, tmp_path, threads):
    """TCP: the kernel holds the connection until its first bytes (TCP_DEFER_ACCEPT). Unix socket: the first
    read finds nothing, and the connection goes on on an event-loop transport."""
    port = free_port()
    path = str(tmp_path / "app.sock")
    start_server("--socket", f"127.0.0.1:{port}", "--socket", path, "--threads", threads, listen=False, wait=False)
    wait_for_port(port)
    wait_for_unix_socket(path)
    for address in (("127.0.0.1", port), path):
        family = socket.AF_UNIX if address == path else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(address)
            time.sleep(0.3)
            sock.sendall(encode_uwsgi_request(request_vars("/environ")))
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status, _, body = parse_response(answer)
        assert status == 200 and json.loads(body)["PATH_INFO"] == "/environ", address


def test_next_connection_goes_to_a_free_worker(start_uwsgi):
    """Three slow requests on three single-threaded workers run side by side: a busy worker does not take
    a connection another worker is free for (with a socket per worker, the kernel's hash would pile some
    on one worker: all three on different ones only 2 times in 9)."""
    server, address = start_uwsgi("--processes", "3", "--threads", "1")
    # All three in their event loops: the master passes SIGUSR1 on to ready workers, which log their counters.
    deadline = time.monotonic() + TIMEOUT
    while set(re.findall(r"status: worker (\d) served", server.log())) != {"1", "2", "3"}:
        assert time.monotonic() < deadline, server.log()
        os.kill(server.pid, signal.SIGUSR1)
        time.sleep(0.2)
    socks = []
    started = time.monotonic()
    try:
        for _ in range(3):
            sock = socket.create_connection(address, timeout=TIMEOUT)
            socks.append(sock)
            sock.sendall(encode_uwsgi_request(request_vars("/sleep?t=1")))
            time.sleep(0.05)                        # one at a time, as requests come from nginx
        for sock in socks:
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            assert parse_response(answer)[2] == b"slept"
    finally:
        for sock in socks:
            sock.close()
    assert time.monotonic() - started < 1.8


def test_out_of_file_descriptors_pauses_accepting(start_uwsgi, threads):
    """A flood of connections past the worker's file limit: accept() fails (EMFILE), the worker says so and
    pauses accepting instead of spinning on the ready socket; once descriptors are free it serves again."""
    server, address = start_uwsgi("--processes", "1", "--threads", threads)
    assert parse_response(exchange(address, encode_uwsgi_request(request_vars("/environ")))[0])[0] == 200
    worker = server.workers()[0]                    # serving: all its own descriptors are open
    in_use = len(os.listdir(f"/proc/{worker}/fd"))
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (in_use + 8, in_use + 8))
    flood = []
    try:
        for _ in range(20):                         # each sends a first byte: accepted, then waits for the rest
            sock = socket.create_connection(address, timeout=TIMEOUT)
            sock.sendall(b"\x00")
            flood.append(sock)
        server.wait_log("cannot accept connections")
    finally:
        for sock in flood:
            sock.close()
    status, _, body = parse_response(exchange(address, encode_uwsgi_request(request_vars("/environ")))[0])
    assert status == 200 and json.loads(body)["PATH_INFO"] == "/environ"
    assert server.log().count("cannot accept connections") < 10     # paused, not retried in a loop


# --- app threads (--threads > 1) accept, read and answer a uwsgi connection themselves (app_threads.py) ---

def slow_requests(address, count: int, seconds: float) -> list[float]:
    """`count` uwsgi requests for /sleep sent at once; the seconds until each was answered, in order."""
    socks = [socket.create_connection(address, timeout=TIMEOUT) for _ in range(count)]
    started = time.monotonic()
    try:
        for sock in socks:
            sock.sendall(encode_uwsgi_request(request_vars(f"/sleep?t={seconds}")))
        finished = []
        for sock in socks:
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            assert parse_response(answer)[2] == b"slept"
            finished.append(time.monotonic() - started)
        return sorted(finished)
    finally:
        for sock in socks:
            sock.close()


def test_app_threads_run_slow_requests_side_by_side_up_to_their_number(start_uwsgi):
    server, address = start_uwsgi("--processes", "1", "--threads", "3")
    assert parse_response(exchange(address, encode_uwsgi_request(request_vars("/pid")))[0])[0] == 200
    assert slow_requests(address, 3, 1.0)[-1] < 1.8             # three threads: side by side
    finished = slow_requests(address, 4, 1.0)
    assert finished[2] < 1.8 and finished[3] >= 1.9, finished    # the fourth waits for a free thread


class UwsgiLoad:
    """Client threads sending uwsgi requests for /pid, a connection each, as nginx does, a few ms apart (the
    test reads the server's log while this runs: a log of millions of lines would make that slow);
    every outcome is recorded. Bounded: stop() or max_seconds."""

    def __init__(self, address, clients: int = 4, max_seconds: float = 60.0):
        self.address = address
        self.max_seconds = max_seconds
        self.answered: list[int] = []           # the pid of the worker that answered
        self.failures: list[str] = []
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        packet = encode_uwsgi_request(request_vars("/pid"))
        while not self.halt.is_set() and time.monotonic() < deadline:
            try:
                status, _, body = parse_response(exchange(self.address, packet)[0])
                assert status == 200, status
                self.answered.append(int(body))
            except Exception as exc:           # noqa: BLE001 - every failure is an outcome to count
                self.failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.003)

    def stop(self) -> None:
        self.halt.set()
        for thread in self.threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in self.threads), "load client threads did not stop"


def test_app_threads_lose_nothing_through_reloads_and_recycling(start_uwsgi):
    """Workers that stop accepting (a reload, --max-requests reached on an app thread) while their threads
    accept and answer connections: no connection is dropped, and every request has its access-log line."""
    server, address = start_uwsgi("--processes", "2", "--threads", "4", "--max-requests", "150",
                                  "--min-worker-lifetime", "0")
    load = UwsgiLoad(address)
    try:
        for number in range(1, 4):
            time.sleep(0.7)
            os.kill(server.pid, signal.SIGHUP)
            deadline = time.monotonic() + 30
            while server.log().count("reload complete") < number:
                assert time.monotonic() < deadline, server.log()[-3000:]
                time.sleep(0.05)
        time.sleep(0.7)
    finally:
        load.stop()
    assert load.failures == []
    assert len(load.answered) > 300
    log = server.log()
    assert "--max-requests" in log and len(set(load.answered)) >= 6, "workers were replaced"
    deadline = time.monotonic() + TIMEOUT
    while server.log().count("GET /pid => generated") < len(load.answered):    # the last lines may still come
        assert time.monotonic() < deadline, (server.log().count("GET /pid => generated"), len(load.answered))
        time.sleep(0.05)
    assert server.log().count("GET /pid => generated") == len(load.answered)
    assert server.stop() == 0


def test_answers_do_not_name_the_server(start_uwsgi):
    """Behind nginx the answer is nginx's, which names itself or not (server_tokens), as uWSGI's answers are."""
    _, address = start_uwsgi()
    status, headers, _ = parse_response(exchange(address, encode_uwsgi_request(request_vars("/")))[0])
    assert status == 200 and "server" not in headers


def test_a_forged_line_in_the_vars_stays_one_escaped_log_line(start_uwsgi):
    """A CR/LF (or a terminal escape) in a var the access log shows must not write a second, forged line."""
    server, address = start_uwsgi()
    forged = "/x\n[pid: 1|worker: 1|req: 1] 6.6.6.6 () [x] GET /forged => generated 0 bytes\x1b[2J"
    exchange(address, encode_uwsgi_request(request_vars("/", REQUEST_URI=forged)))
    log = server.wait_log("GET /x")
    line, = [line for line in log.splitlines() if "GET /x" in line]
    assert "\\u000a[pid: 1|worker: 1|req: 1] 6.6.6.6" in line and "\\u001b[2J" in line
    assert "\x1b" not in log and not any(line.startswith("[pid: 1|") for line in log.splitlines())


def test_an_open_uwsgi_socket_says_who_it_answers(start_server):
    """0.0.0.0 (the seed's socket) is usually bound for a web server elsewhere, which the default refuses: said
    at startup, with the option to use."""
    port = free_port()
    server = start_server("--socket", f"0.0.0.0:{port}")
    wait_for_port(port, proc=server.proc)
    server.wait_log(f"uwsgi on 0.0.0.0:{port} answers loopback peers only (a web server on this host); for one "
                    f"elsewhere, list its address in --uwsgi-allow-from")


def test_a_head_trickled_byte_by_byte_times_out_too(start_uwsgi):
    """--header-timeout counts from the head's first byte (a byte a second kept the connection for ever)."""
    server, address = start_uwsgi("--header-timeout", "2")
    packet = encode_uwsgi_request(request_vars("/environ"))
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        started = time.monotonic()
        closed = False
        for byte in packet[:12]:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.5)
            sock.setblocking(False)
            try:
                closed = sock.recv(1) == b""
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed = True
            sock.setblocking(True)
            if closed:
                break
    assert closed and time.monotonic() - started < 5
    server.wait_log("no complete request head in time")


def test_a_file_sent_by_sendfile_frees_its_app_thread(start_uwsgi, tmp_path):
    """With app threads, the loop sends a wsgi.file_wrapper file and the thread is free at once (it waited for
    the whole transfer: two slow downloads held both threads, and nothing else was answered)."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as handle:
        handle.truncate(512 << 20)                     # sparse
    server, address = start_uwsgi("--threads", "2", app="extra.py")
    slow = []
    try:
        for _ in range(2):
            sock = socket.create_connection(address, timeout=TIMEOUT)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(encode_uwsgi_request(request_vars(f"/wrap?path={big}")))
            sock.recv(100)                              # the answer began; nothing more is read
            slow.append(sock)
        answer, elapsed = exchange(address, encode_uwsgi_request(request_vars("/")))
        assert parse_response(answer)[2] == b"Hello, World!" and elapsed < 3
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.parametrize("script_name, location", [("/app", "/app/docs/guide/?v=1"), ("/", "/docs/guide/?v=1")])
def test_the_index_slash_redirect_keeps_the_mount_nginx_names_in_script_name(start_uwsgi, tmp_path, script_name,
                                                                             location):
    """`location /app/ { uwsgi_param SCRIPT_NAME /app; ... }`: PATH_INFO is what follows the mount, and a
    redirect to PATH_INFO alone sent the browser out of it (nginx's own directory redirect keeps the whole URI)."""
    (tmp_path / "docs" / "guide").mkdir(parents=True)
    (tmp_path / "docs" / "guide" / "index.html").write_text("<p>guide</p>")
    _, address = start_uwsgi("--static-map", f"/docs={tmp_path / 'docs'}", "--static-index", "index.html")
    answer, _ = exchange(address, encode_uwsgi_request(request_vars(
        "/docs/guide?v=1", SCRIPT_NAME=script_name, REQUEST_URI=location.replace("/?", "?"))))
    status, headers, _ = parse_response(answer)
    assert (status, headers["location"]) == (301, location)       # "//docs/...": another host
