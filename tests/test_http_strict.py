"""HTTP/1.1 strictness and security (RFC 9112): raw bytes in, exact status out, and nothing smuggled.

Every malformed request is followed by a valid `GET /pid` on the same connection: a server that
misframes the bad request would answer that one too. So each rejection asserts the exact status,
that it is the *only* response, and that the server closed the connection afterwards.

Servers are module-scoped (one per set of flags); every socket wait is bounded.
"""

from __future__ import annotations

import json
import re
import socket
import time

import pytest

from conftest import APPS, ServerProcess, free_port, responses_in, wait_for_port

SMUGGLED = b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n"
LIMIT_POST = 1000
SLOW = ("--header-timeout", "2", "--body-timeout", "2", "--keepalive-timeout", "2")
SMALL_LIMITS = ("--limit-request-line", "200", "--limit-request-field-size", "300",
                "--limit-request-fields", "10", "--limit-request-head", "1000")


# --- servers and raw I/O ---

@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    """serve(*flags) -> port of a module-scoped server running tests/apps/basic.py with those flags."""
    servers: dict[tuple, ServerProcess] = {}

    def get(*flags: str) -> int:
        if flags not in servers:
            port = free_port()
            log = tmp_path_factory.mktemp("strict") / "server.log"
            server = ServerProcess(["--http", f"127.0.0.1:{port}", "--wsgi-file", str(APPS / "basic.py"),
                                    *flags], port, log)
            servers[flags] = server
            try:
                wait_for_port(port, proc=server.proc)
            except Exception:
                raise AssertionError(f"server did not start:\n{server.log()}")
        return servers[flags].port

    yield get
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def port(serve) -> int:
    return serve("--limit-post", str(LIMIT_POST))


class Reply:
    """Everything the server sent on one connection, and whether it closed it."""

    def __init__(self, data: bytes, closed: bool, elapsed: float):
        self.data, self.closed, self.elapsed = data, closed, elapsed

    @property
    def statuses(self) -> list[int]:
        return responses_in(self.data)

    def bodies(self) -> list[bytes]:
        return [body for _, body in split_responses(self.data)]

    def __repr__(self) -> str:
        return f"Reply(closed={self.closed}, elapsed={self.elapsed:.2f}, data={self.data[:600]!r})"


def exchange(port: int, *parts: bytes, pause: float = 0.0, timeout: float = 5.0) -> Reply:
    """Send `parts` with `pause` seconds between them (reading meanwhile: a server may answer and close
    before the last part), then read until the server closes or `timeout` seconds from the start."""
    start = time.monotonic()
    deadline = start + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = b""
        for index, part in enumerate(parts):
            if index and pause:
                early = read_all(sock, min(deadline, time.monotonic() + pause), start)
                data += early.data
                if early.closed:
                    return Reply(data, True, early.elapsed)
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break                       # closed: what it sent before is still readable
        rest = read_all(sock, deadline, start)
        return Reply(data + rest.data, rest.closed, rest.elapsed)


def read_all(sock: socket.socket, deadline: float, start: float) -> Reply:
    """Read until the peer closes (closed=True) or the deadline (closed=False)."""
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Reply(data, False, time.monotonic() - start)
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return Reply(data, False, time.monotonic() - start)
        except ConnectionResetError:
            return Reply(data, True, time.monotonic() - start)
        if not chunk:
            return Reply(data, True, time.monotonic() - start)
        data += chunk


def split_responses(data: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each Content-Length-framed response in a stream (every response used here is)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {data[:200]!r}"
        length = re.search(rb"\r\nContent-Length: (\d+)", head, re.I)
        assert length, f"response without Content-Length: {head!r}"
        size = int(length[1])
        out.append((int(head[9:12]), rest[:size]))
        data = rest[size:]
    return out


def request(target: bytes = b"/", headers: bytes = b"", body: bytes = b"", method: bytes = b"GET",
            version: bytes = b"HTTP/1.1", host: bytes | None = b"t") -> bytes:
    line = b"%s %s %s\r\n" % (method, target, version)
    return line + (b"Host: %s\r\n" % host if host is not None else b"") + headers + b"\r\n" + body


def post(headers: bytes, body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return request(b"/echo", headers, body, b"POST", version)


def assert_rejected(port: int, raw: bytes, status: int) -> Reply:
    """`raw` then a valid request on the same connection: exactly one response, `status`, then close."""
    reply = exchange(port, raw + SMUGGLED)
    assert reply.statuses == [status], reply
    assert reply.closed, reply
    assert b"Connection: close\r\n" in reply.data, reply
    return reply


def environ_of(port: int, target: bytes, headers: bytes = b"", **kwargs) -> dict:
    """The environ the app got for this request (sent with `Connection: close`: one response, then close)."""
    reply = exchange(port, request(target, headers + b"Connection: close\r\n", **kwargs))
    assert reply.statuses == [200], reply
    assert reply.closed, reply
    return json.loads(reply.bodies()[0])


def case(name: str, raw: bytes, status: int):
    return pytest.param(raw, status, id=name)


# --- message framing: Content-Length and Transfer-Encoding (request smuggling) ---

FRAMING = [
    case("CL+TE", post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400),
    case("TE+CL", post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"), 400),
    case("CL duplicate same", post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"), 400),
    case("CL duplicate different", post(b"Content-Length: 3\r\nContent-Length: 30\r\n", b"abc"), 400),
    case("CL +3", post(b"Content-Length: +3\r\n", b"abc"), 400),
    case("CL -3", post(b"Content-Length: -3\r\n", b"abc"), 400),
    case("CL 0x3", post(b"Content-Length: 0x3\r\n", b"abc"), 400),
    case("CL list", post(b"Content-Length: 3, 3\r\n", b"abc"), 400),
    case("CL empty", post(b"Content-Length: \r\n", b"abc"), 400),
    case("CL two numbers", post(b"Content-Length:  3 3\r\n", b"abc"), 400),
    case("CL overflow", post(b"Content-Length: 99999999999999999999999\r\n", b"abc"), 400),
    case("TE gzip", post(b"Transfer-Encoding: gzip\r\n", b"abc"), 501),
    case("TE identity", post(b"Transfer-Encoding: identity\r\n", b"abc"), 501),
    case("TE gzip, chunked", post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501),
    case("TE chunked, gzip", post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"), 400),
    case("TE xchunked", post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), 501),
    case("TE chunkedx", post(b"Transfer-Encoding: chunkedx\r\n", b"0\r\n\r\n"), 501),
    case("TE duplicate", post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400),
    case("TE gzip then chunked headers", post(b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                                              b"0\r\n\r\n"), 501),
    case("TE on HTTP/1.0", post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", b"HTTP/1.0"), 400),
    case("Expect other than 100-continue", request(headers=b"Expect: 200-ok\r\n"), 417),
    case("upgrade (h2c) is not switched to", request(headers=b"Connection: Upgrade\r\nUpgrade: h2c\r\n"), 200),
    case("CONNECT tunnel", request(b"example.com:443", method=b"CONNECT"), 400),
]


@pytest.mark.parametrize("raw, status", FRAMING)
def test_framing_is_strict(port, raw, status):
    assert_rejected(port, raw, status)


# --- chunked bodies ---

def chunked(body: bytes) -> bytes:
    return post(b"Transfer-Encoding: chunked\r\n", body)


CHUNKS = [
    case("size zz", chunked(b"zz\r\nabc\r\n0\r\n\r\n"), 400),
    case("size -3", chunked(b"-3\r\nabc\r\n0\r\n\r\n"), 400),
    case("size overflow", chunked(b"ffffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"), 400),
    case("size empty", chunked(b"\r\nabc\r\n0\r\n\r\n"), 400),
    case("extension with a control char", chunked(b"3;a=\x01b\r\nabc\r\n0\r\n\r\n"), 400),
    case("extension with NUL", chunked(b"3;a\x00\r\nabc\r\n0\r\n\r\n"), 400),
    case("data longer than its size", chunked(b"3\r\nabcX\r\n0\r\n\r\n"), 400),
    case("no CRLF after data", chunked(b"3\r\nabc0\r\n\r\n"), 400),
    case("bare LF after size", chunked(b"3\nabc\r\n0\r\n\r\n"), 400),
    case("bare LF after data", chunked(b"3\r\nabc\n0\r\n\r\n"), 400),
    case("bare LF after last chunk", chunked(b"3\r\nabc\r\n0\n\n"), 400),
]


@pytest.mark.parametrize("raw, status", CHUNKS)
def test_chunked_framing_is_strict(port, raw, status):
    assert_rejected(port, raw, status)


@pytest.mark.parametrize("body", [
    pytest.param(b"3\r\nabc\r\n0\r\n\r\n", id="plain"),
    pytest.param(b"1\r\na\r\n2;ext=1;q=\"x\"\r\nbc\r\n0\r\n\r\n", id="extensions"),
    pytest.param(b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nHost: evil\r\n\r\n", id="trailers"),
    pytest.param(b"03\r\nabc\r\n000\r\n\r\n", id="leading zeros"),
])
def test_valid_chunked_bodies_are_read_and_trailers_ignored(port, body):
    reply = exchange(port, chunked(body) + request(b"/environ", b"Connection: close\r\n"))
    assert reply.statuses == [200, 200], reply
    echoed, environ = reply.bodies()
    assert echoed == b"abc"
    environ = json.loads(environ)
    assert environ["HTTP_HOST"] == "t"              # a trailer never leaks into the next request
    assert "HTTP_X_TRAILER" not in environ


def test_trailer_section_is_bounded(port):
    trailers = b"".join(b"X-T%d: %s\r\n" % (i, b"v" * 1000) for i in range(40))     # ~40 KB > 32 KB
    raw = post(b"Transfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n")
    assert_rejected(port, raw + request(b"/pid"), 431)


def test_a_trailer_field_that_never_ends_is_bounded(port):
    """Its bytes pile up inside the parser until the field ends: the connection is refused after 32 KB."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(post(b"Transfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\nX-Trailer: "))
        deadline = time.monotonic() + 10
        try:
            for _ in range(64):                    # 64 x 4 KB = 256 KB, far past the 32 KB head limit
                sock.sendall(b"v" * 4096)
                time.sleep(0.01)
        except OSError:
            pass                                   # refused and closed while we were still sending
        reply = read_all(sock, deadline, time.monotonic())
    assert reply.statuses == [431], reply


@pytest.mark.parametrize("headers", [
    b"Transfer-Encoding: Chunked\r\n",
    b"Transfer-Encoding:chunked\r\n",
    b"Transfer-Encoding: chunked  \r\n",
], ids=repr)
def test_chunked_coding_name_is_case_and_whitespace_insensitive(port, headers):
    reply = exchange(port, post(headers, b"3\r\nabc\r\n0\r\n\r\n") + request(b"/pid", b"Connection: close\r\n"))
    assert reply.statuses == [200, 200], reply
    assert reply.bodies()[0] == b"abc"


# --- head syntax ---

HEAD_SYNTAX = [
    case("bare LF everywhere", b"GET / HTTP/1.1\nHost: t\n\n", 400),
    case("bare LF after a header", b"GET / HTTP/1.1\r\nHost: t\n\r\n", 400),
    case("bare CR after the request line", b"GET / HTTP/1.1\rHost: t\r\n\r\n", 400),
    case("bare CR in a header line", b"GET / HTTP/1.1\r\nHost: t\rX-A: b\r\n\r\n", 400),
    case("obs-fold with space", request(headers=b"X-A: a\r\n b\r\n"), 400),
    case("obs-fold with tab", request(headers=b"X-A: a\r\n\tb\r\n"), 400),
    case("whitespace before the first header", b"GET / HTTP/1.1\r\n Host: t\r\n\r\n", 400),
    case("space before the colon", request(headers=b"X-A : b\r\n"), 400),
    case("tab before the colon", request(headers=b"X-A\t: b\r\n"), 400),
    case("space before colon on Content-Length",
         request(b"/echo", b"Content-Length : 3\r\n", b"abc", b"POST"), 400),
    case("empty header name", request(headers=b": b\r\n"), 400),
    case("header without a colon", request(headers=b"X-A b\r\n"), 400),
    case("control char in a name", request(headers=b"X\x01A: b\r\n"), 400),
    case("NUL in a name", request(headers=b"X\x00A: b\r\n"), 400),
    case("DEL in a name", request(headers=b"X\x7fA: b\r\n"), 400),
    case("separator in a name", request(headers=b"X(A): b\r\n"), 400),
    case("control char in a value", request(headers=b"X-A: a\x01b\r\n"), 400),
    case("NUL in a value", request(headers=b"X-A: a\x00b\r\n"), 400),
    case("DEL in a value", request(headers=b"X-A: a\x7fb\r\n"), 400),
    case("ESC in a value", request(headers=b"X-A: a\x1bb\r\n"), 400),
]


@pytest.mark.parametrize("raw, status", HEAD_SYNTAX)
def test_head_syntax_is_strict(port, raw, status):
    assert_rejected(port, raw, status)


# --- request line ---

REQUEST_LINE = [
    case("invalid method token", request(method=b"G@T"), 400),
    case("method with a slash", request(method=b"GE/T"), 400),
    case("unknown method", request(method=b"FOO"), 501),
    case("lower-case method (methods are case-sensitive)", request(method=b"get"), 501),
    case("HTTP/1.2 (well-formed, not ours)", request(version=b"HTTP/1.2"), 505),
    case("HTTP/2.0", request(version=b"HTTP/2.0"), 505),
    case("HTTP/3.0", request(version=b"HTTP/3.0"), 505),
    case("HTTP/1.10 (one digit each)", request(version=b"HTTP/1.10"), 400),
    case("HTTX/1.1", request(version=b"HTTX/1.1"), 400),
    case("lower-case http/1.1", request(version=b"http/1.1"), 400),
    case("HTTP/0.9 version", request(version=b"HTTP/0.9"), 400),
    case("no version (HTTP/0.9 request)", b"GET /\r\n\r\n", 400),
    case("space in the target", request(b"/a b"), 400),
    case("trailing space after the version", b"GET / HTTP/1.1 \r\nHost: t\r\n\r\n", 400),
    case("control char in the target", request(b"/a\x01b"), 400),
    case("NUL in the target", request(b"/a\x00b"), 400),
    case("an encoded NUL in the path", request(b"/a%00b"), 400),
    case("a path climbing above /", request(b"/../../etc/passwd"), 400),
    case("an encoded path climbing above /", request(b"/a/%2e%2e/%2e%2e/etc"), 400),
    case("the asterisk for another method than OPTIONS", request(b"*"), 400),
    case("CONNECT (no proxy here)", request(b"/x", method=b"CONNECT"), 501),
    case("user information in an absolute target", request(b"http://user:pw@t/x"), 400),
]


@pytest.mark.parametrize("raw, status", REQUEST_LINE)
def test_request_line_is_strict(port, raw, status):
    assert_rejected(port, raw, status)


# --- Host ---

@pytest.mark.parametrize("raw, status", [
    case("HTTP/1.1 without Host", request(host=None), 400),
    case("two Host headers", request(headers=b"Host: u\r\n"), 400),
    case("two Host headers, one empty", request(headers=b"Host: \r\n"), 400),
    case("an empty Host", request(host=b""), 400),
    case("a space in Host", request(host=b"a b"), 400),
    case("a path in Host", request(host=b"evil.example/x?"), 400),
    case("dots only", request(host=b".."), 400),
    case("a port that is no number", request(host=b"t:80x"), 400),
])
def test_host_rules(port, raw, status):
    """RFC 9112 3.2: 400 for a Host no URL could have (apps build links and redirects from it), as nginx."""
    assert_rejected(port, raw, status)


@pytest.mark.parametrize("host", [b"example.com", b"example.com:8080", b"[::1]:8000", b"127.0.0.1",
                                  b"xn--bcher-kva.de"])
def test_valid_hosts_are_served(port, host):
    assert exchange(port, request(b"/pid", host=host)).statuses == [200]


def test_http10_without_host_is_served(port):
    reply = exchange(port, request(b"/environ", version=b"HTTP/1.0", host=None))
    assert reply.statuses == [200], reply
    assert reply.closed
    environ = json.loads(reply.bodies()[0])
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert "HTTP_HOST" not in environ


def test_header_names_with_underscores_are_dropped(port):
    environ = environ_of(port, b"/environ", b"X_Forwarded_For: evil\r\nX-Forwarded-For: good\r\nContent_Type: evil\r\n")
    assert environ["HTTP_X_FORWARDED_FOR"] == "good"
    assert "CONTENT_TYPE" not in environ
    environ = environ_of(port, b"/environ", b"X-Forwarded-For: good\r\nX_Forwarded_For: evil\r\n")
    assert environ["HTTP_X_FORWARDED_FOR"] == "good"
    environ = environ_of(port, b"/environ", b"X_Real_Ip: evil\r\n")     # one dropped name, nothing repeated
    assert not any("REAL" in key for key in environ) and "" not in environ


# --- size limits (defaults, and the same limits configured smaller) ---

def headers_of(count: int, size: int) -> bytes:
    """`count` header fields whose name + value are `size` bytes each."""
    return b"".join(b"X-%04d: %s\r\n" % (i, b"v" * (size - 6)) for i in range(count))


LIMITS = [
    # (server flags, name, raw request, status)
    ((), "target of 8000 bytes", request(b"/" + b"a" * 7999), 200),
    ((), "target of 8190 bytes", request(b"/" + b"a" * 8189), 200),
    ((), "target of 8191 bytes", request(b"/" + b"a" * 8190), 414),
    ((), "target of 9000 bytes", request(b"/" + b"a" * 8999), 414),
    ((), "header of 8000 bytes", request(headers=headers_of(1, 8000)), 200),
    ((), "header of 8190 bytes", request(headers=headers_of(1, 8190)), 200),
    ((), "header of 9000 bytes", request(headers=headers_of(1, 9000)), 431),
    ((), "header name of 9000 bytes", request(headers=b"X" * 9000 + b": v\r\n"), 431),
    ((), "100 header fields", request(headers=headers_of(99, 20)), 200),
    ((), "101 header fields", request(headers=headers_of(100, 20)), 431),
    ((), "head of 32000 bytes", request(headers=headers_of(4, 8000)), 200),
    ((), "head of 40000 bytes in 8000-byte fields", request(headers=headers_of(5, 8000)), 431),
    ((), "head of 64000 bytes in 8000-byte fields", request(headers=headers_of(8, 8000)), 431),
    (SMALL_LIMITS, "small: target of 200 bytes", request(b"/" + b"a" * 199), 200),
    (SMALL_LIMITS, "small: target of 201 bytes", request(b"/" + b"a" * 200), 414),
    (SMALL_LIMITS, "small: header of 300 bytes", request(headers=headers_of(1, 300)), 200),
    (SMALL_LIMITS, "small: header of 301 bytes", request(headers=headers_of(1, 301)), 431),
    (SMALL_LIMITS, "small: 10 header fields", request(headers=headers_of(9, 20)), 200),
    (SMALL_LIMITS, "small: 11 header fields", request(headers=headers_of(10, 20)), 431),
    (SMALL_LIMITS, "small: head of 900 bytes", request(headers=headers_of(3, 280)), 200),
    (SMALL_LIMITS, "small: head of 1200 bytes", request(headers=headers_of(4, 280)), 431),
]


@pytest.mark.parametrize("flags, raw, status", [pytest.param(f, r, s, id=n) for f, n, r, s in LIMITS])
def test_head_limits(serve, flags, raw, status):
    port = serve(*flags)
    if status == 200:
        reply = exchange(port, raw + request(b"/pid", b"Connection: close\r\n"))
        assert reply.statuses == [200, 200], reply    # within the limit, and the connection is still usable
        assert reply.bodies()[0] == b"Hello, World!"
    else:
        assert_rejected(port, raw, status)


def test_head_limit_counts_a_head_sent_in_pieces(serve):
    """A head dribbled in many small reads is measured as a whole."""
    port = serve(*SMALL_LIMITS)
    head = request(headers=headers_of(4, 280))
    pieces = [head[i:i + 50] for i in range(0, len(head), 50)]
    reply = exchange(port, *pieces, pause=0.01)
    assert reply.statuses == [431], reply
    assert reply.closed


def test_field_limit_counts_a_field_split_after_a_pipelined_request(serve):
    """The second head starts in the read that ends the first; its 320-byte field ends in a small read."""
    port = serve(*SMALL_LIMITS)
    second = request(b"/pid", headers_of(1, 320))
    reply = exchange(port, request(b"/pid") + second[:-20], second[-20:], pause=0.05)
    assert reply.statuses == [200, 431], reply
    assert reply.closed


def test_body_over_limit_post_is_refused_before_it_is_read(port):
    head = post(b"Content-Length: %d\r\n" % (5 * LIMIT_POST))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)                         # the head only: the answer must not wait for the body
        reply = read_all(sock, time.monotonic() + 5, time.monotonic())
    assert reply.statuses == [413], reply
    assert reply.closed
    assert reply.elapsed < 2, reply


@pytest.mark.parametrize("raw, status, echoed", [
    pytest.param(post(b"Content-Length: %d\r\n" % LIMIT_POST, b"x" * LIMIT_POST), 200, LIMIT_POST, id="CL at limit"),
    pytest.param(post(b"Content-Length: %d\r\n" % (LIMIT_POST + 1), b"x" * (LIMIT_POST + 1)), 413, 0,
                 id="CL over limit"),
    pytest.param(chunked(b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (600, b"x" * 600, 400, b"y" * 400)), 200, LIMIT_POST,
                 id="chunked at limit"),
    pytest.param(chunked(b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (600, b"x" * 600, 401, b"y" * 401)), 413, 0,
                 id="chunked over limit"),
    pytest.param(chunked(b"%x\r\n%s\r\n0\r\n\r\n" % (5000, b"x" * 5000)), 413, 0, id="one chunk over limit"),
])
def test_limit_post(port, raw, status, echoed):
    if status == 413:
        assert_rejected(port, raw, 413)
    else:
        reply = exchange(port, raw + request(b"/pid", b"Connection: close\r\n"))
        assert reply.statuses == [200, 200], reply
        assert len(reply.bodies()[0]) == echoed


def test_chunked_over_limit_post_with_expect_gets_one_response(port):
    """With `Expect: 100-continue` the app already runs while the body streams in: still one final answer."""
    head = post(b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n")
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (5000, b"x" * 5000)
    reply = exchange(port, head, body + SMUGGLED, pause=0.3)
    final = [status for status in reply.statuses if status != 100]
    assert final == [413], reply
    assert reply.closed


# --- slow and idle clients ---
# Timeouts of 2 s, counted by the worker's once-a-second sweep, so they fire 1..3 s after the last byte.
# Firing in under a second (the lower bounds below) means the sweep ran more than once in a second.

def test_head_sent_too_slowly_gets_408(serve):
    port = serve(*SLOW)
    head = request(headers=b"X-Slow: " + b"a" * 40 + b"\r\n")
    reply = exchange(port, *[head[i:i + 1] for i in range(len(head))], pause=0.25, timeout=8)
    assert reply.statuses == [408], reply
    assert reply.closed
    assert 1 <= reply.elapsed <= 4.5, reply


def test_empty_lines_only_do_not_keep_a_connection_open(serve):
    """Endless CRLFs before a request line (tolerated one at a time by RFC 9112 §2.2) are a slow head too."""
    port = serve(*SLOW)
    reply = exchange(port, *[b"\r\n"] * 30, pause=0.25, timeout=8)
    assert reply.statuses == [408], reply
    assert reply.closed
    assert 1 <= reply.elapsed <= 4.5, reply


def test_stalled_body_gets_408(serve):
    port = serve(*SLOW)
    reply = exchange(port, post(b"Content-Length: 10\r\n", b"abc"), timeout=6)
    assert reply.statuses == [408], reply
    assert reply.closed
    assert 1 <= reply.elapsed <= 4, reply


def test_idle_keep_alive_connection_is_closed(serve):
    port = serve(*SLOW)
    with socket.create_connection(("127.0.0.1", port), timeout=6) as sock:
        sock.sendall(request(b"/pid"))
        first = sock.recv(65536)
        assert responses_in(first) == [200]
        reply = read_all(sock, time.monotonic() + 6, time.monotonic())
    assert reply.data == b"" and reply.closed, reply
    assert 1 <= reply.elapsed <= 4, reply


def test_silent_connection_is_closed(serve):
    port = serve(*SLOW)
    reply = exchange(port, timeout=6)
    assert reply.data == b"" and reply.closed, reply
    assert 1 <= reply.elapsed <= 4, reply


def test_active_keep_alive_connection_is_not_cut(serve):
    """Requests every 0.4 s for 4 s on a connection with a 2 s idle timeout: it stays open."""
    port = serve(*SLOW)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(10):
            sock.sendall(request(b"/pid"))
            answer = sock.recv(65536)
            assert responses_in(answer) == [200], answer
            time.sleep(0.4)


# --- pipelining ---

def test_pipelined_requests_are_answered_in_order(port):
    reply = exchange(port, b"".join(request(b"/environ?n=%d" % i) for i in range(3))
                     + request(b"/environ?n=3", b"Connection: close\r\n"))
    assert reply.statuses == [200] * 4, reply
    assert reply.closed
    assert [json.loads(body)["QUERY_STRING"] for body in reply.bodies()] == [f"n={i}" for i in range(4)]


def test_pipelined_valid_then_malformed(port):
    reply = exchange(port, request(b"/pid") + request(method=b"G@T") + SMUGGLED)
    assert reply.statuses == [200, 400], reply
    assert reply.closed


def test_pipelined_valid_then_bad_header(port):
    reply = exchange(port, request(b"/pid") + request(headers=b"X-A : b\r\n") + SMUGGLED)
    assert reply.statuses == [200, 400], reply
    assert reply.closed


def test_nothing_is_answered_after_connection_close(port):
    reply = exchange(port, request(b"/pid", b"Connection: close\r\n") + SMUGGLED + SMUGGLED)
    assert reply.statuses == [200], reply
    assert reply.closed


def test_long_pipeline_split_mid_request_is_not_mistaken_for_a_huge_head(port):
    """1200 small pipelined requests (~40 KB, more than --limit-request-head) with the last one cut in two."""
    batch = request(b"/pid") * 1199 + request(b"/", b"Connection: close\r\n")
    reply = exchange(port, batch[:-20], batch[-20:], pause=0.3, timeout=10)
    assert reply.statuses == [200] * 1200, (len(reply.statuses), set(reply.statuses), reply.data[-300:])
    assert reply.closed


# --- request targets (tests/apps/dump.py answers any target with its environ) ---

@pytest.fixture(scope="module")
def dump_port(serve) -> int:
    return serve("--wsgi-file", str(APPS / "dump.py"))


@pytest.mark.parametrize("target, path, query", [
    (b"/a/%2e%2e/b", "/a/../b", ""),
    (b"/a/../b", "/a/../b", ""),
    (b"//double//slash/", "//double//slash/", ""),
    (b"/a%2Fb", "/a/b", ""),
    (b"/caf%C3%A9", "/caf\u00c3\u00a9", ""),           # the decoded bytes, as latin-1 (PEP 3333)
    (b"/%FFx", "/\u00ffx", ""),                         # (an encoded NUL is a 400: REQUEST_LINE)
    (b"/p?q=%20&r=a%2Fb", "/p", "q=%20&r=a%2Fb"),       # the query string stays raw
    (b"/p?", "/p", ""),
    (b"/p??a", "/p", "?a"),
    (b"http://example.com/x?y=1", "/x", "y=1"),
    (b"http://example.com", "/", ""),
    (b"*", "*", ""),
], ids=lambda value: value.decode("latin-1") if isinstance(value, bytes) else None)
def test_target_is_percent_decoded_but_not_normalized(dump_port, target, path, query):
    method = b"OPTIONS" if target == b"*" else b"GET"
    environ = environ_of(dump_port, target, method=method)
    assert environ["PATH_INFO"] == path
    assert environ["QUERY_STRING"] == query
    assert environ["REQUEST_URI"] == target.decode("latin-1")
    assert environ["REQUEST_METHOD"] == method.decode()


@pytest.mark.parametrize("target, host", [
    (b"http://example.com/x?y=1", "example.com"),
    (b"http://example.com:8080/x", "example.com:8080"),
    (b"http://[::1]:8080/x", "[::1]:8080"),             # an IPv6 literal keeps its brackets, as in Host
    (b"/x", "t"),
])
def test_absolute_form_authority_replaces_host(dump_port, target, host):
    environ = environ_of(dump_port, target)
    assert environ["HTTP_HOST"] == host


# --- found by a differential review against nginx (each failed before) ---

@pytest.mark.parametrize("target", [b"http://a..b/x", b"http://../x", b"http://a%2fb/x"])
def test_an_absolute_form_authority_is_checked_as_host_is(port, target):
    """It replaces Host, so it gets Host's rules: the app built its links from `a..b`."""
    assert_rejected(port, request(target), 400)


@pytest.mark.parametrize("target", [b"/a%zz", b"/a%", b"/a%4", b"/a%%30", b"/ok/%G1"])
def test_a_percent_not_followed_by_two_hex_digits_is_a_400(port, target):
    """As nginx: /a%zz and /a%25zz both reached the app as PATH_INFO /a%zz, which no rule could tell apart."""
    assert_rejected(port, request(target), 400)


def test_an_http09_request_is_answered_at_once(serve):
    """`GET /` and a newline is a whole HTTP/0.9 request: a 400 now, not a 408 after the header timeout."""
    reply = exchange(serve(*SLOW), b"GET /\r\n", timeout=1.5)
    assert reply.closed and reply.statuses == [400], reply
    assert b"HTTP/0.9" in reply.data
    reply = exchange(serve(*SLOW), b"GET /", b"\n", pause=0.2, timeout=1.5)     # the line ending on its own
    assert reply.closed and reply.statuses == [400], reply


@pytest.mark.parametrize("body", [
    b"5 \r\nhello\r\n0\r\n\r\n",                            # whitespace after a bare size
    b"5\r\nhello\r\n0\r\nno colon\x00\r\n\r\n",              # a trailer that is no field
    b"5\r\nhello\r\n0\r\nX: a\r\n folded\r\n\r\n",            # obs-fold in a trailer
    b"5\r\nhello\r\n0\r\n" + b"X: %s\r\n" % (b"v" * 8000) * 5 + b"\r\n",   # trailers past the head limit
])
def test_an_upgrade_requests_body_is_framed_as_strictly_as_any(port, body):
    """llhttp leaves an Upgrade request's body to us: its chunked framing was laxer than llhttp's."""
    headers = b"Transfer-Encoding: chunked\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
    reply = exchange(port, request(b"/echo", headers, body, b"POST"))
    assert reply.statuses in ([400], [431]) and reply.closed, reply


def test_options_asterisk_on_the_basic_app(port):
    reply = exchange(port, request(b"*", method=b"OPTIONS", headers=b"Connection: close\r\n"))
    assert reply.statuses == [200], reply
    assert reply.bodies() == [b"Hello, World!"]
