"""Logging: the error log (Python logging) and the access log (one uWSGI-style line per request).

The access log is buffered on the event-loop thread and flushed once per loop iteration, so a busy
worker pays one write() per batch, not per request; an app thread answering a connection it accepted
itself writes its line at once (waking the loop thread for it would cost more). Log files: log_files.py.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from wsgistack.config import ConfigError
from wsgistack.log_files import request_log_fd
from wsgistack.log_encoders import check_encoder, compile_encoders
from wsgistack.log_format import LTIME, LoggedRequest, as_text, cgi_variables, compile_format, head_size, log_safe
from wsgistack.memory import memory


class _PrefixedFormatter(logging.Formatter):
    """--log-prefix: before each of the server's own lines, through strftime as in uWSGI (`[%Y %H:%M] `)."""

    def __init__(self, prefix: str, *args):
        super().__init__(*args)
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        return time.strftime(self.prefix, time.localtime(record.created)) + super().format(record)


def setup_error_log(role: str, prefix: str = "") -> None:
    """Errors go to stderr (which --logto/--daemonize point at a file) with pid and role (after --log-prefix)."""
    handler = logging.StreamHandler(sys.stderr)
    line_format = f"%(asctime)s [%(levelname)s] [{role} {os.getpid()}] %(message)s", "%Y-%m-%d %H:%M:%S"
    handler.setFormatter(_PrefixedFormatter(prefix, *line_format) if prefix else logging.Formatter(*line_format))
    logger = logging.getLogger("wsgistack")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


class LogFilter:
    """With --disable-logging, the requests still logged (uWSGI's log-4xx, log-5xx, log-slow, log-big, log-zero)."""

    def __init__(self, client_errors: bool, server_errors: bool, slow_msecs: int, big_bytes: int, empty: bool):
        self.client_errors = client_errors
        self.server_errors = server_errors
        self.slow_msecs = slow_msecs
        self.big_bytes = big_bytes
        self.empty = empty

    @classmethod
    def from_config(cls, config) -> LogFilter | None:
        """None when no request is to be logged at all."""
        log_filter = cls(config.log_4xx, config.log_5xx, config.log_slow, config.log_big, config.log_zero)
        if not (log_filter.client_errors or log_filter.server_errors or log_filter.slow_msecs or log_filter.big_bytes
                or log_filter.empty):
            return None
        return log_filter

    def wants(self, status: int, body_bytes: int, msecs: int) -> bool:
        return ((self.client_errors and 400 <= status <= 499) or (self.server_errors and 500 <= status <= 599)
                or (self.slow_msecs and msecs >= self.slow_msecs) or (self.big_bytes and body_bytes >= self.big_bytes)
                or (self.empty and body_bytes == 0))


def _line_format(config):
    if not config.logformat:
        return None
    # `log-date = true` (uWSGI's bare form, common in inis) means the default format
    date_format = "" if config.log_date.lower() in ("true", "yes", "on", "1") else config.log_date
    return compile_format(config.logformat, (date_format or LTIME) if config.logformat_strftime else None)


def access_log_for(config, loop, worker_number: int) -> AccessLog | None:
    """The worker's access log: every request, only the ones a --log-* option asks for, or none."""
    log_filter = LogFilter.from_config(config) if config.disable_logging else None
    if config.disable_logging and log_filter is None:
        return None
    return AccessLog(loop, worker_number, log_filter, _line_format(config), config.memory_report,   # checked by cli
                     config.log_x_forwarded_for, compile_encoders(config.log_req_encoder), config.log_micros)


def check_log_format(config) -> None:
    """--logformat with an unknown variable, or an encoder wsgistack has not, is a startup error naming option,
    file and line."""
    try:
        _line_format(config)
    except ValueError as exc:
        raise ConfigError(str(exc), option="logformat", **config.where("logformat")) from None
    for spec in config.log_req_encoder:
        try:
            check_encoder(spec)
        except ValueError as exc:
            raise ConfigError(str(exc), option="log-req-encoder", **config.where("log-req-encoder", spec)) from None


class AccessLog:
    """uWSGI's request line, field for field (the grok and fluentd patterns written for it match):
    [pid: P|app: 0|req: N/N] ADDR () {V vars in B bytes} [DATE] METHOD URI => generated B bytes in T msecs
    (PROTOCOL STATUS) H headers in B bytes (1 switches on core 0); or the line of --logformat (log_format.py).
    Where uWSGI counts across workers (the second N), this is the worker's count: there is no shared counter."""

    def __init__(self, loop, worker_number: int, only: LogFilter | None = None, line_format=None,
                 memory_report: bool = False, forwarded_for: bool = False, encode=None, micros: bool = False):
        self.loop = loop
        self.encode = encode             # --log-req-encoder's chain (log_encoders.py)
        self.safe = as_text if encode is not None and encode.escapes else log_safe
        self.micros = micros             # --log-micros: `in N micros` rather than msecs
        self.forwarded_for = forwarded_for   # the address shown is X-Forwarded-For's first (behind a proxy)
        self.only = only
        self.line_format = line_format
        self.memory_report = memory_report
        self.memory = ""                 # --memory-report's prefix, read once a second
        self.worker_number = worker_number
        self.prefix_pid = f"[pid: {os.getpid()}|app: 0|req: "
        self.lines: list[str] = []
        self.flush_scheduled = False
        self.stamp_second = 0
        self.stamp = ""

    def request(self, exchange, count: int, on_thread: bool = False) -> None:
        environ, status, body_bytes = exchange.environ, exchange.code, exchange.body_bytes
        seconds = time.monotonic() - exchange.started
        msecs = int(seconds * 1000)
        if self.only is not None and not self.only.wants(status, body_bytes, msecs):
            return
        now = time.time()
        address = environ.get("REMOTE_ADDR", "-")
        if self.forwarded_for and "HTTP_X_FORWARDED_FOR" in environ:
            address = environ["HTTP_X_FORWARDED_FOR"].partition(",")[0].strip()
        if self.line_format is not None:
            line = self.line_format(LoggedRequest(environ, status, exchange.status or "", exchange.headers or [],
                                                  body_bytes, int(seconds * 1e6), now - seconds, self.worker_number,
                                                  count, address, self.safe)) + "\n"
        else:
            if int(now) != self.stamp_second:
                self.stamp_second = int(now)
                self.stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(now))
                if self.memory_report:
                    self.memory = _memory_prefix()
            safe = self.safe
            request = safe(f"{environ['REQUEST_METHOD']} {environ['REQUEST_URI']}")   # no forged lines
            variables, variables_size = cgi_variables(environ)
            headers = exchange.headers or ()
            took = f"{int(seconds * 1e6)} micros" if self.micros else f"{msecs} msecs"
            user = environ.get("REMOTE_USER")
            line = (f"{self.memory}{self.prefix_pid}{count}/{count}] {safe(address)} ({safe(user) if user else ''}) "
                    f"{{{variables} vars in {variables_size} bytes}} [{self.stamp}] "
                    f"{request} => generated {body_bytes} bytes in {took} "
                    f"({safe(environ['SERVER_PROTOCOL'])} {status}) {len(headers)} headers in "
                    f"{head_size(exchange.status or '', headers)} bytes (1 switches on core 0)\n")
        if self.encode is not None:
            line = self.encode(line)
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


def _memory_prefix() -> str:
    """uWSGI's --memory-report words: `{address space usage: B bytes/MMB} {rss usage: B bytes/MMB} `."""
    size, resident = memory()
    return f"{{address space usage: {size} bytes/{size >> 20}MB}} {{rss usage: {resident} bytes/{resident >> 20}MB}} "


def _write(data: bytes) -> None:
    fd = request_log_fd()             # stderr, or the file of --req-logger
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass   # a closed or full log must never take the worker down
