"""The basic app plus what test_wsgi.py needs on top: /environ/<any path> (the environ of a
non-ASCII or encoded path, with every key name), and responses that fail, each returning an
iterable that records its close() (PEP 3333: the server calls close() whatever happened).
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from basic import CLOSE_LOG, Tracked, _qs  # noqa: E402
from basic import application as _basic  # noqa: E402


class RaisesMidway(Tracked):
    def __iter__(self):
        yield b"first part"
        raise RuntimeError("boom while iterating")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    tag = _qs(environ, "tag", path.strip("/"))
    if path.startswith("/environ/"):
        data = {k: v for k, v in environ.items() if isinstance(v, (str, int, bool, tuple))}
        data["keys"] = sorted(environ)
        data["non_str_cgi"] = [k for k, v in environ.items() if "." not in k and not isinstance(v, str)]
        errors = environ["wsgi.errors"]
        data["errors_ok"] = all(callable(getattr(errors, m, None)) for m in ("write", "writelines", "flush"))
        body = json.dumps(data).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/raise-midway":          # error after the head went out
        start_response("200 OK", [("Content-Type", "text/plain")])
        return RaisesMidway([], tag)
    if path == "/raise-first":           # error before anything was sent: a clean 500
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return RaisesFirst([], tag)
    if path == "/str-chunk":             # yields str, not bytes
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked(["not bytes"], tag)
    if path == "/bad-header-tracked":    # invalid header: 500, and the iterable is still closed
        start_response("200 OK", [("X-Injected", "a\r\nSet-Cookie: evil=1")])
        return Tracked([b"never sent"], tag)
    if path == "/long-stream":           # many chunks past the declared Content-Length
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return Tracked([b"1234567890"] * 50, tag)
    if path == "/write-long":            # write() past the declared Content-Length
        write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        write(b"1234567890")
        return []
    if path == "/exc-info-after-head":   # too late to replace the response: start_response re-raises
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"sent")
        try:
            raise ValueError("too late to replace")
        except ValueError:
            start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"never sent"]
    if path == "/read-once":             # one read of CONTENT_LENGTH bytes, as Django's LimitedStream does
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked([b"%d" % len(body)], tag)
    if path == "/lines":                 # readline() over the body: the line lengths
        stream, lengths = environ["wsgi.input"], []
        while line := stream.readline():
            lengths.append(str(len(line)))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [" ".join(lengths).encode()]
    if path == "/slow-read":             # reads its body slowly: 64 KiB every 10 ms
        stream, total = environ["wsgi.input"], 0
        while chunk := stream.read(65536):
            total += len(chunk)
            time.sleep(0.01)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d" % total]
    if path == "/wrap":                  # a file of the test's by wsgi.file_wrapper (sendfile)
        handle = open(_qs(environ, "path", ""), "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](handle)
    if path == "/span":                  # reads its body, sleeps t s; notes when that app code began and ended
        environ["wsgi.input"].read()
        with open(CLOSE_LOG, "a") as log:
            log.write(f"begin {tag} {time.monotonic()}\n")
        time.sleep(float(_qs(environ, "t", "0")))
        with open(CLOSE_LOG, "a") as log:
            log.write(f"end {tag} {time.monotonic()}\n")
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    if path == "/exit":                  # the worker process ends, with the status asked (a C extension's exit())
        os._exit(int(_qs(environ, "code", "3")))
    if path == "/redos":                 # a runaway regex: minutes of C code that never lets go of the GIL
        import re
        re.match(r"(a+)+$", "a" * int(_qs(environ, "n", "30")) + "b")
    if path == "/segfault":              # a C extension's crash: SIGSEGV in the app's own code
        import ctypes
        ctypes.string_at(0)
    if path == "/late-write":            # keeps write() and calls it after returning, from another thread
        write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])

        def late():
            time.sleep(0.3)
            try:
                write(b"LATE")
                outcome = "accepted"
            except Exception as exc:
                outcome = f"raised {type(exc).__name__}"
            if CLOSE_LOG:
                with open(CLOSE_LOG, "a") as log:
                    log.write(f"late write {outcome}\n")
        threading.Thread(target=late).start()
        return [b"done"]
    return _basic(environ, start_response)


class RaisesFirst(Tracked):
    def __iter__(self):
        raise RuntimeError("boom before the first chunk")
        yield b""   # noqa: unreachable (makes this a generator)
