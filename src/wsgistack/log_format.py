"""uWSGI's --logformat: the access log line built from `%(name)` variables, as uWSGI names them.

`logformat = %(addr) - %(user) [%(ltime)] "%(method) %(uri) %(proto)" %(status) %(size) "%(referer)" "%(uagent)"`
gives an Apache-style line. The format is compiled once into literal text and getters; a name wsgistack does
not know is a startup error (uWSGI would print it empty, expecting the app to set it through its `uwsgi`
module, which wsgistack does not have). Counters wsgistack has no notion of (read and write errors, modifiers)
are 0, `switches` 1 and `core` 0, as the default line says; `vars` and `pktsize` count as uWSGI does. `hsize` and
`headers` count the app's status line and headers as it gave them. With --logformat-strftime the format's text
goes through strftime, and %(ftime) is the answer's end time. Values from the network are escaped (log_safe),
or left to a json encoder to escape (as_text, log_encoders.py).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Callable

from wsgistack.memory import memory

_VARIABLE = re.compile(r"%\(([^)]*)\)")
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f"\\\u2028\u2029]')     # U+2028/9: line ends to JavaScript


def log_safe(value: str) -> str:
    """A value from the network as a log line may show it: one line, no terminal escape, valid inside a JSON
    string. Quotes and backslashes get a backslash, control characters are \\u00XX (as JSON writes them), and
    the bytes (given as latin-1 by PEP 3333) are shown as the UTF-8 they mostly are."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return value                            # the usual case
    return _UNSAFE.sub(_escape, as_text(value))


def as_text(value: str) -> str:
    """A value from the network as text, not escaped: for an encoder that escapes the whole line itself (json)."""
    return value if value.isascii() else value.encode("latin-1", "replace").decode("utf-8", "replace")


def _escape(match: re.Match) -> str:
    char = match[0]
    return "\\" + char if char in '"\\' else f"\\u{ord(char):04x}"


@dataclass(frozen=True)
class LoggedRequest:
    """What one log line may show of an answered request."""
    environ: dict
    status: int
    status_line: str
    headers: list
    body_bytes: int
    micros: int                 # response time
    started: float              # wall-clock time the request reached the app (epoch seconds)
    worker_number: int
    request_number: int
    address: str                # the client's, as the access log shows it (--log-x-forwarded-for)
    safe: Callable[[str], str] = log_safe   # how values from the network are written (as_text for json)


def cgi_variables(environ: dict) -> tuple[int, int]:
    """The request's CGI variables as uWSGI counts them in its log: 2 per variable (a key and a value), and the
    bytes of the uwsgi packet they would make."""
    count = size = 0
    for key, value in environ.items():
        if type(value) is str and not key.startswith("wsgi."):
            count += 2
            size += len(key) + len(value) + 4
    return count, size


def _environ(key: str, default: str = "-") -> Callable[[LoggedRequest], str]:
    """A request variable; missing or empty, `default`: "-" as uWSGI writes it (log parsers expect a field there)."""
    return lambda request: request.safe(str(request.environ.get(key) or default))


def head_size(status_line: str, headers) -> int:
    """The bytes of a response head as uWSGI counts them (its hsize): status line and the app's header fields."""
    return len(status_line) + 13 + sum(len(name) + len(value) + 4 for name, value in headers) if headers else 0


def _head_size(request: LoggedRequest) -> int:
    return head_size(request.status_line, request.headers)


def _memory(field: int, divisor: int = 1) -> Callable[[LoggedRequest], int]:
    """A getter of this process's address space (field 0) or resident memory (1), in bytes / divisor."""
    return lambda request: memory()[field] // divisor


_GETTERS: dict[str, Callable[[LoggedRequest], object]] = {
    "uri": _environ("REQUEST_URI"),
    "method": _environ("REQUEST_METHOD"),
    "user": _environ("REMOTE_USER"),
    "addr": lambda request: request.safe(request.address or "-"),
    "host": _environ("HTTP_HOST"),
    "proto": _environ("SERVER_PROTOCOL"),
    "uagent": _environ("HTTP_USER_AGENT"),
    "referer": _environ("HTTP_REFERER"),
    "cl": _environ("CONTENT_LENGTH", "0"),
    "status": lambda request: request.status,
    "micros": lambda request: request.micros,
    "msecs": lambda request: request.micros // 1000,
    "secs": lambda request: f"{request.micros / 1e6:.6f}",
    "time": lambda request: int(request.started),
    "tmsecs": lambda request: int(request.started * 1e3),
    "tmicros": lambda request: int(request.started * 1e6),
    "ctime": lambda request: time.ctime(request.started),
    "ltime": lambda request: time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(request.started)),
    "epoch": lambda request: int(time.time()),
    "rsize": lambda request: request.body_bytes,
    "hsize": _head_size,
    "size": lambda request: request.body_bytes + _head_size(request),
    "headers": lambda request: len(request.headers or ()),
    "vars": lambda request: cgi_variables(request.environ)[0],
    "pid": lambda request: os.getpid(),
    "wid": lambda request: request.worker_number,
    "core": lambda request: 0,
    "switches": lambda request: 1,
    "rerr": lambda request: 0,
    "werr": lambda request: 0,
    "ioerr": lambda request: 0,
    "pktsize": lambda request: cgi_variables(request.environ)[1],
    "modifier1": lambda request: 0,
    "modifier2": lambda request: 0,
    "rss": _memory(1),
    "vsz": _memory(0),
    "rssM": _memory(1, 1 << 20),
    "vszM": _memory(0, 1 << 20),
}


LTIME = "%d/%b/%Y:%H:%M:%S %z"


def compile_format(text: str, strftime: str | None = None) -> Callable[[LoggedRequest], str]:
    """The line maker for `text` (no newline); ValueError names a variable that does not exist. With `strftime`
    (uWSGI's --logformat-strftime, the format of --log-date), the format's own text goes through strftime (not
    the values: a %-escaped URI stays as sent) and %(ftime) is the time the answer ended in that format."""
    parts: list[str | Callable[[LoggedRequest], object]] = []
    position = 0
    for match in _VARIABLE.finditer(text):
        parts.append(_literal(text[position:match.start()], strftime is not None))
        name = match.group(1)
        if name == "ftime":
            date_format = strftime or LTIME
            parts.append(lambda request: time.strftime(date_format, time.localtime()))
        elif name.startswith("var."):
            parts.append(_environ(name[4:]))
        elif name in _GETTERS:
            parts.append(_GETTERS[name])
        else:
            raise ValueError(f"unknown variable %({name}) (known: {', '.join(sorted(_GETTERS))}, ftime, var.NAME)")
        position = match.end()
    parts.append(_literal(text[position:], strftime is not None))
    parts = [part for part in parts if part != ""]

    def line(request: LoggedRequest) -> str:
        return "".join(part if type(part) is str else str(part(request)) for part in parts)
    return line


def _literal(text: str, strftime: bool) -> str | Callable[[LoggedRequest], str]:
    if strftime and "%" in text:
        return lambda request: time.strftime(text, time.localtime())
    return text
