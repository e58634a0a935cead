"""HttpConnection without sockets: bytes go in through data_received, the environ the app got comes out.

A real Worker object (never run) and a fake transport; the app runs inline (--threads 1).
"""

from __future__ import annotations

import os

import pytest

from wsgistack.config import Config
from wsgistack.protocols.connection import MAX_PENDING
from wsgistack.protocols.http import PARSE_SLICE, HttpConnection
from wsgistack.worker import Worker
from wsgistack.wsgi import base_environ


class FakeTransport:
    def __init__(self):
        self.written = b""
        self.closed = False             # closed, or half-closed (write_eof): the server said all it will

    def get_extra_info(self, name):
        return {"peername": ("192.0.2.7", 5555), "sockname": ("127.0.0.1", 8080)}.get(name)

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def serve(*reads: bytes, **limits) -> tuple[list[dict], FakeTransport]:
    """Feed `reads` to a fresh connection; return the environs the app saw (bodies read) and the transport."""
    seen, conn, transport = connect(**limits)
    for data in reads:
        conn.data_received(data)
    return seen, transport


def connect(loop=None, **limits) -> tuple[list[dict], HttpConnection, FakeTransport]:
    """A fresh connection: (the environs its app will see, the connection, its transport)."""
    config = Config()
    for name, value in limits.items():
        setattr(config, name, value)
    seen = []

    def app(environ, start_response):
        environ["body"] = environ["wsgi.input"].read()
        seen.append(environ)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    worker = Worker(config, [], 1, -1, os.getpid())
    worker.loop = loop                  # inline app: the loop is used only where a test gives one
    worker.app = app
    worker.base_environ = base_environ(multithread=False, multiprocess=False)
    worker.access_log = None
    worker.date_header = b"Date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
    HttpConnection.configure(config)
    conn = HttpConnection(worker)
    transport = FakeTransport()
    conn.connection_made(transport)
    return seen, conn, transport


def environ_for(head: bytes, body: bytes = b"") -> dict:
    """The environ of one request, checked to be identical when the bytes arrive one at a time."""
    raw = head + b"\r\n" + body
    (environ,), _ = serve(raw)
    (dribbled,), _ = serve(*[raw[i:i + 1] for i in range(len(raw))])
    assert {k: v for k, v in dribbled.items() if k != "wsgi.input"} == \
           {k: v for k, v in environ.items() if k != "wsgi.input"}
    return environ


@pytest.mark.parametrize("target, path, query", [
    (b"/plain?a=1&b=2", "/plain", "a=1&b=2"),
    (b"/caf%C3%A9?x=%C3%A9", "/caf\u00c3\u00a9", "x=%C3%A9"),   # decoded bytes as latin-1; query raw
    (b"/a%2Fb/%2e%2e/c", "/a/b/../c", ""),
    (b"/%ff%FF", "/\u00ff\u00ff", ""),
    (b"*", "*", ""),
    (b"http://example.com:81/x/%41?q", "/x/A", "q"),
])
def test_target(target, path, query):
    method = b"OPTIONS" if target == b"*" else b"GET"
    environ = environ_for(b"%s %s HTTP/1.1\r\nHost: h\r\n" % (method, target))
    assert environ["PATH_INFO"] == path
    assert environ["QUERY_STRING"] == query
    assert environ["REQUEST_URI"] == target.decode("latin-1")
    assert environ["SCRIPT_NAME"] == ""


def test_absolute_form_authority_is_the_host():
    environ = environ_for(b"GET http://example.com:81/x HTTP/1.1\r\nHost: other\r\n")
    assert environ["HTTP_HOST"] == "example.com:81"


def test_headers_become_cgi_keys():
    environ = environ_for(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                          b"accept: a\r\nACCEPT: b\r\nCookie: c=1\r\nCookie: d=2\r\nX-Custom-Thing:  v  \r\n"
                          b"X-Latin: caf\xe9\r\nX_Under_Score: dropped\r\nX-Empty:\r\n", b"abc")
    assert environ["CONTENT_TYPE"] == "text/plain"
    assert environ["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in environ and "HTTP_CONTENT_LENGTH" not in environ
    assert environ["HTTP_ACCEPT"] == "a, b"               # repeated fields joined with ", "
    assert environ["HTTP_COOKIE"] == "c=1; d=2"           # except cookies: "; " (RFC 6265)
    assert environ["HTTP_X_CUSTOM_THING"] == "v"          # surrounding whitespace is not part of a value
    assert environ["HTTP_X_LATIN"] == "caf\u00e9"         # obs-text, as latin-1
    assert environ["HTTP_X_EMPTY"] == ""
    assert "HTTP_X_UNDER_SCORE" not in environ
    assert environ["body"] == b"abc"
    assert all(type(v) is str for k, v in environ.items() if k.isupper())


def test_request_keys():
    environ = environ_for(b"PROPFIND /dav HTTP/1.0\r\n")
    assert environ["REQUEST_METHOD"] == "PROPFIND"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("192.0.2.7", "5555")
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("127.0.0.1", "8080")
    assert "CONTENT_LENGTH" not in environ and environ["body"] == b""


def test_chunked_body_with_extensions_and_trailers():
    environ = environ_for(b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n",
                          b"2;x=y\r\nab\r\n1\r\nc\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert environ["body"] == b"abc"
    assert "HTTP_X_TRAILER" not in environ
    assert "CONTENT_LENGTH" not in environ


def test_pipelined_requests_in_one_read():
    seen, transport = serve(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n"
                            b"xyGET /3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /4 HTTP/1.1\r\n\r\n")
    assert [(e["PATH_INFO"], e["body"]) for e in seen] == [("/1", b""), ("/2", b"xy"), ("/3", b"")]
    assert transport.written.count(b"HTTP/1.1 200 OK") == 3
    assert transport.closed


@pytest.mark.parametrize("raw, status", [
    (b"GET / HTTP/1.1\r\nHost: h\r\n\r\nG@T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\n\r\nFOO / HTTP/1.1\r\nHost: h\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n", 400),
])
def test_second_request_rejected(raw, status):
    seen, transport = serve(raw)
    assert len(seen) == 1
    assert transport.written.count(b"HTTP/1.1 ") == 2
    assert b"HTTP/1.1 %d " % status in transport.written
    assert transport.closed


FIELD_90 = b"X-A: " + b"a" * 90 + b"\r\n"


@pytest.mark.parametrize("reads, status", [
    ([b"GET /" + b"a" * 120 + b" HTTP/1.1\r\n"], 414),
    ([b"GET / HTTP/1.1\r\nX-A: " + b"a" * 120 + b"\r\n\r\n"], 431),
    ([b"GET / HTTP/1.1\r\n" + b"X-A: a\r\n" * 6 + b"\r\n"], 431),
    ([b"GET / HTTP/1.1\r\nHost: h\r\n" + FIELD_90 * 3 + b"\r\n"], 431),     # a whole head in one read
    ([b"GET / HTTP/1.1\r\nHost: h\r\nX-A: " + b" " * 300], 431),    # unparsed bytes count too
    ([b"GET / HTTP/1.1\r\nHost: h\r\n"] + [FIELD_90] * 3, 431),               # a head in many reads
])
def test_limits(reads, status):
    limits = dict(limit_request_line=100, limit_request_field_size=100, limit_request_fields=5,
                  limit_request_head=250)
    seen, transport = serve(*reads, **limits)
    assert not seen
    assert transport.written.startswith(b"HTTP/1.1 %d " % status), transport.written
    assert transport.closed


def test_head_limit_is_per_request_not_per_read():
    """Many small pipelined requests in one read are not one big head, even if the last one is cut."""
    batch = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" * 20
    seen, transport = serve(batch + b"GET /last HTTP/1.1\r\n", b"Host: h\r\n\r\n", limit_request_head=250)
    assert len(seen) == 21 and seen[-1]["PATH_INFO"] == "/last"
    assert not transport.closed


class FakeLoop:
    def __init__(self):
        self.callbacks = []

    def call_soon(self, callback, *args):
        self.callbacks.append((callback, args))

    def run(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            if not self.callbacks:
                return
            callback, args = self.callbacks.pop(0)
            callback(*args)
        raise AssertionError("the loop never ran out of callbacks")


def test_a_read_of_many_pipelined_requests_is_parsed_only_as_far_as_the_queue_has_room():
    """Answers stalled (a client that reads nothing): 2,000 pipelined requests in one read must not all become
    environs (2 MB of them) at once; MAX_PENDING plus a slice's worth wait, the rest stays bytes until read on."""
    loop = FakeLoop()
    seen, conn, transport = connect(loop)
    conn.pause_writing()
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    conn.data_received(request * 2000)
    assert len(conn.pending) <= MAX_PENDING + PARSE_SLICE // len(request) + 1
    assert conn.unparsed and not transport.reading
    conn.resume_writing()
    loop.run()
    assert len(seen) == 2000 and transport.written.count(b"HTTP/1.1 200 OK\r\n") == 2000
    assert not conn.unparsed and not conn.pending and transport.reading


def test_a_body_known_by_its_length_is_parsed_in_one_piece_then_the_rest_in_slices():
    loop = FakeLoop()
    seen, conn, transport = connect(loop)
    body = os.urandom(300_000)
    slices = []
    parse = conn.data_received
    conn.data_received = lambda data, whole=False: (slices.append(len(data)), parse(data, whole))
    conn.data_received(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n" + body
                       + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
    assert [environ["PATH_INFO"] for environ in seen] == ["/up", "/next", "/next", "/next"]
    assert seen[0]["body"] == body and not loop.callbacks
    assert len(slices) == 4         # the read; its first slice; the rest of the body; the requests after it
