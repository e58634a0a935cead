"""The test app: one route per behaviour the tests need. Never used in production."""

import contextvars
import json
import os
import sys
import time
from urllib.parse import parse_qs

CLOSE_LOG = os.environ.get("WSGISTACK_TEST_CLOSE_LOG")
REQUEST_VAR = contextvars.ContextVar("request")     # as Flask's request context, for /ctxvar-stream


def _qs(environ, name, default):
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


class Tracked:
    """An iterable that records its close() in a file (to check close() runs even on aborts)."""

    def __init__(self, chunks, tag, delay=0.0):
        self.chunks, self.tag, self.delay = chunks, tag, delay

    def __iter__(self):
        for chunk in self.chunks:
            if self.delay:
                time.sleep(self.delay)
            yield chunk

    def close(self):
        if CLOSE_LOG:
            with open(CLOSE_LOG, "a") as log:
                log.write(f"closed {self.tag}\n")


def _read_body(environ):
    """The whole body, as PEP 3333 allows: read(size) until b"" (wsgi.input_terminated)."""
    stream, parts = environ["wsgi.input"], []
    while chunk := stream.read(65536):
        parts.append(chunk)
    return b"".join(parts)


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/environ":
        data = {k: v for k, v in environ.items() if isinstance(v, (str, int, bool, tuple))}
        data["wsgi.input.class"] = type(environ["wsgi.input"]).__name__
        body = json.dumps(data).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/process-environ":       # the worker process's own os.environ
        body = json.dumps(dict(os.environ)).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/echo":
        body = _read_body(environ)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/echo-len":
        body = _read_body(environ)
        text = f"{len(body)} {body[:16].hex()} {body[-16:].hex()}".encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [text]
    if path == "/no-read":
        start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("Content-Length", "6")])
        return [b"denied"]
    if path == "/stream":
        count = int(_qs(environ, "n", "5"))
        delay = float(_qs(environ, "delay", "0.2"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked([b"chunk %d\n" % i for i in range(count)], _qs(environ, "tag", "stream"), delay)
    if path == "/big":
        size = int(_qs(environ, "size", str(10 * 1024 * 1024)))
        block = b"x" * 65536
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return Tracked([block] * (size // 65536) + [b"x" * (size % 65536)], _qs(environ, "tag", "big"))
    if path == "/big-list":         # the whole body at once, as Django's HttpResponse
        body = b"x" * int(_qs(environ, "size", "1000"))
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/sleep":
        time.sleep(float(_qs(environ, "t", "1")))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"slept"]
    if path == "/until":            # returns once the test creates file f (at most t seconds)
        deadline = time.monotonic() + float(_qs(environ, "t", "10"))
        while not os.path.exists(_qs(environ, "f", "")) and time.monotonic() < deadline:
            time.sleep(0.02)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
        return [b"waited"]
    if path == "/error":
        raise RuntimeError("boom: this traceback belongs in the error log only")
    if path == "/error-after-start":
        def gen():
            yield b"partial"
            raise RuntimeError("boom mid-stream")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/bad-header":
        start_response("200 OK", [("X-Injected", "a\r\nSet-Cookie: evil=1")])
        return [b"never sent"]
    if path == "/bad-header-nul":
        start_response("200 OK", [("X-Nul", "a\x00b")])
        return [b"never sent"]
    if path == "/bad-header-name":
        start_response("200 OK", [("X Bad", "v")])
        return [b"never sent"]
    if path == "/short":   # declares more than it sends
        start_response("200 OK", [("Content-Length", "100")])
        return [b"only twenty bytes!!!"]
    if path == "/long":    # sends more than it declares
        start_response("200 OK", [("Content-Length", "5")])
        return [b"12345", b"67890"]
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"from write, ")
        return [b"then iterable"]
    if path == "/write-on":        # write() 64 KiB blocks for a while; notes whether a write raised
        write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
        outcome = "finished"
        try:
            for _ in range(int(_qs(environ, "n", "200"))):
                write(b"x" * 65536)
                time.sleep(0.01)
        except OSError as exc:
            outcome = f"raised {type(exc).__name__}"
        if CLOSE_LOG:
            with open(CLOSE_LOG, "a") as log:
                log.write(f"write-on {outcome}\n")
        return []
    if path == "/file":
        handle = open(__file__, "rb")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](handle, 8192)
    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("replaced")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"),
                                                       ("Content-Length", "4")], sys.exc_info())
        return [b"oops"]
    if path == "/status":
        code = _qs(environ, "code", "204")
        if _qs(environ, "length", ""):      # Django's CommonMiddleware gives every answer one, 204 too
            start_response(f"{code} Status", [("Content-Type", "text/plain"),
                                              ("Content-Length", _qs(environ, "length", ""))])
            return [b""]
        start_response(f"{code} Status", [("Content-Type", "text/plain")])
        return [b"body that must not be sent for 204/304"]
    if path == "/ctxvar-stream":    # sets a ContextVar in the app and resets it at the stream's end (Flask's
        token = REQUEST_VAR.set(path)   # stream_with_context): the whole stream must run in one context
        blocks = int(_qs(environ, "blocks", "96"))

        def generate():
            try:
                for _ in range(blocks):
                    yield b"x" * 65536
            finally:
                REQUEST_VAR.reset(token)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return generate()
    if path == "/head-stripped":    # as Werkzeug, Bottle and WebOb answer HEAD: GET's headers, no body at all
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [] if environ["REQUEST_METHOD"] == "HEAD" else iter([b"streamed ", b"body"])
    if path == "/pid":
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
