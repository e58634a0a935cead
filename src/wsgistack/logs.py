"""Logging: the error log (Python logging) and the access log (one uWSGI-style line per request).

The access log is buffered on the event-loop thread and flushed once per loop iteration, so a busy
worker pays one write() per batch, not per request; an app thread answering a connection it accepted
itself writes its line at once (waking the loop thread for it would cost more).
"""

from __future__ import annotations

import logging
import os
import sys
import time


def setup_error_log(role: str) -> None:
    """Errors go to stderr (which --logto/--daemonize point at a file) with pid and role."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s [%(levelname)s] [{role} {os.getpid()}] %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger = logging.getLogger("wsgistack")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def redirect_output(path: str) -> None:
    """--logto: stdout and stderr (ours, the app's, any print) append to FILE, as uWSGI does."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


class AccessLog:
    """uWSGI's request line: [pid: P|worker: W|req: N] ADDR () [DATE] METHOD URI => generated B bytes
    in T msecs (PROTOCOL STATUS)."""

    def __init__(self, loop, worker_number: int):
        self.loop = loop
        self.prefix_pid = f"[pid: {os.getpid()}|worker: {worker_number}|req: "
        self.lines: list[str] = []
        self.flush_scheduled = False
        self.stamp_second = 0
        self.stamp = ""

    def request(self, environ: dict, status: int, body_bytes: int, started: float, count: int,
                on_thread: bool = False) -> None:
        now = time.time()
        if int(now) != self.stamp_second:
            self.stamp_second = int(now)
            self.stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(now))
        msecs = int((time.monotonic() - started) * 1000)
        line = (f"{self.prefix_pid}{count}] {environ.get('REMOTE_ADDR', '-')} () [{self.stamp}] "
                f"{environ['REQUEST_METHOD']} {environ['REQUEST_URI']} => generated {body_bytes} bytes in "
                f"{msecs} msecs ({environ['SERVER_PROTOCOL']} {status})\n")
        if on_thread:
            _write(line.encode("utf-8", "replace"))
            return
        self.lines.append(line)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.lines:
            data = "".join(self.lines).encode("utf-8", "replace")
            self.lines.clear()
            _write(data)


def _write(data: bytes) -> None:
    try:
        while data:
            data = data[os.write(2, data):]
    except OSError:
        pass   # a closed or full log must never take the worker down
