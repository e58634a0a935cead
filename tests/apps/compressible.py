"""Answers of every shape compression meets (tests/test_compression.py): whole bodies, streams, write(), files."""

import os
import sys
import time

PAGE = b"<html><body>" + b"<p>compress me, compress me</p>" * 60 + b"</body></html>"
JSON = b'{"items": [' + b'"compress me",' * 100 + b'"end"]}'


class IterFails:
    """An iterable whose __iter__ raises: the Exchange answers 500, and its close() must still run (PEP 3333)."""

    def __iter__(self):
        raise RuntimeError("__iter__ failed")

    def close(self):
        if os.environ.get("COMPRESSIBLE_CLOSE_LOG"):
            with open(os.environ["COMPRESSIBLE_CLOSE_LOG"], "a") as log:
                log.write("closed /iter-fails\n")


class LateStart:
    """start_response called at the first iteration, as PEP 3333 allows; each close() is logged (to count them)."""

    def __init__(self, path: str, start_response, kind: str):
        self.path = path
        self.start_response = start_response
        self.kind = kind

    def __iter__(self):
        if self.path == "/late-start-fails":
            raise RuntimeError("failed before start_response")
        self.start_response("200 OK", [("Content-Type", self.kind)])
        yield PAGE[:1000]
        yield PAGE[1000:]

    def close(self):
        if os.environ.get("COMPRESSIBLE_CLOSE_LOG"):
            with open(os.environ["COMPRESSIBLE_CLOSE_LOG"], "a") as log:
                log.write(f"closed {self.path}\n")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    html = [("Content-Type", "text/html; charset=utf-8")]
    if path == "/page":
        start_response("200 OK", html + [("Content-Length", str(len(PAGE))), ("ETag", '"v1"'), ("Vary", "Cookie")])
        return [PAGE]
    if path == "/tiny":
        start_response("200 OK", html + [("Content-Length", "10")])
        return [b"<p>tiny</p"]
    if path == "/json":
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(JSON)))])
        return [JSON]
    if path == "/stream":
        start_response("200 OK", html)

        def chunks():
            for index in range(3):
                yield b"<p>chunk %d</p>" % index * 20
                time.sleep(0.4)
        return chunks()
    if path == "/write":
        write = start_response("200 OK", html)
        write(PAGE[:1000])
        write(PAGE[1000:])
        return []
    if path == "/encoded":
        start_response("200 OK", html + [("Content-Encoding", "br")])
        return [PAGE]
    if path == "/partial":
        start_response("206 Partial Content", html + [("Content-Range", f"bytes 0-99/{len(PAGE)}")])
        return [PAGE[:100]]
    if path == "/missing":
        start_response("404 Not Found", html)
        return [PAGE]
    if path == "/file":
        start_response("200 OK", html)
        return environ["wsgi.file_wrapper"](open(os.environ["COMPRESSIBLE_FILE"], "rb"))
    if path in ("/stream-short", "/stream-long"):     # a declared length the stream does not keep
        start_response("200 OK", html + [("Content-Length", str(len(PAGE)))])
        cut = len(PAGE) // 2 if path == "/stream-short" else len(PAGE)
        extra = b"" if path == "/stream-short" else b"<p>more</p>"
        return iter([PAGE[:cut], extra])
    if path == "/write-short":
        write = start_response("200 OK", html + [("Content-Length", str(len(PAGE)))])
        write(PAGE[:100])
        return []
    if path == "/stream-exact":
        start_response("200 OK", html + [("Content-Length", str(len(PAGE)))])
        return iter([PAGE[:100], PAGE[100:]])
    if path in ("/late-start", "/late-start-fails", "/late-start-png"):
        return LateStart(path, start_response, "image/png" if path == "/late-start-png" else "text/html")
    if path == "/late-start-gen":

        def late():
            start_response("200 OK", html)
            yield PAGE
        return late()
    if path == "/iter-fails":
        return IterFails()
    if path == "/error-page":           # an error middleware: the 200's body fails, a 500 page replaces it
        start_response("200 OK", html)

        def guarded():
            try:
                raise ValueError("the template failed")
                yield PAGE
            except ValueError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
                yield b"the page failed to render\n"
        return guarded()
    if path == "/wrong-length":
        start_response("200 OK", html + [("Content-Length", "10")])
        return [PAGE]
    start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
    return [b"unknown path"]
