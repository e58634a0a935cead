"""uWSGI's --log-req-encoder: each access log line passed through a chain of encoders, in the order given.

The recipe copied into many production inis wraps --logformat's fields in a JSON object:

    log-req-encoder = format {"timestamp": "${strftime:%%Y-%%m-%%dT%%H:%%M:%%S}", "event": "request", ${msg}}
    log-req-encoder = nl

Encoders: `format TEMPLATE` and `json TEMPLATE` (the same, with ${msg} escaped for a JSON string), `prefix
TEXT`, `suffix TEXT`, `nl`. A template's variables: ${msg} (the line without its newline), ${msgnl}, ${unix},
${millis}, ${micros}, ${strftime:FORMAT} (local time). A line that does not end with a newline after the
chain gets one (uWSGI would run it into the next).
"""

from __future__ import annotations

import json
import re
import time
from typing import Callable

_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_CLOCK = {"unix": lambda: str(int(time.time())), "millis": lambda: str(int(time.time() * 1e3)),
          "micros": lambda: str(int(time.time() * 1e6))}

Encoder = Callable[[str], str]      # a line without its newline -> the encoded line


class EncoderChain:
    """The encoders of --log-req-encoder, applied in order to a line without its newline; the result ends with
    one."""

    def __init__(self, specs: list[str]):
        self.encoders = [_encoder(spec) for spec in specs]
        # A json encoder escapes the message itself: the line is then built from the values as they are
        # (escaped twice, a client's `"` would read `\"` once decoded).
        self.escapes = any(spec.strip().partition(" ")[0] == "json" for spec in specs)

    def __call__(self, line: str) -> str:
        line = line.removesuffix("\n")
        for encoder in self.encoders:
            line = encoder(line)
        return line if line.endswith("\n") else line + "\n"


def compile_encoders(specs: list[str]) -> EncoderChain | None:
    """The chain for these --log-req-encoder values, or None without any; ValueError says what is wrong."""
    return EncoderChain(specs) if specs else None


def check_encoder(spec: str) -> None:
    """ValueError for a --log-req-encoder value wsgistack cannot apply."""
    _encoder(spec)


def _encoder(spec: str) -> Encoder:
    name, _, argument = spec.lstrip().partition(" ")      # a prefix's own trailing space stays
    if ":" in name:
        raise ValueError(f"encoder {name!r}: encoders for named loggers are not built in (one access log)")
    if name == "nl":
        return lambda line: line + "\n"
    if name == "prefix":
        return lambda line: argument + line
    if name == "suffix":
        return lambda line: line + argument
    if name in ("format", "json"):
        return _template(argument, escape=name == "json")
    raise ValueError(f"unknown encoder {name!r} (built in: format, json, prefix, suffix, nl)")


def _template(template: str, escape: bool) -> Encoder:
    parts: list[str | Callable[[str], str]] = []
    position = 0
    for match in _VARIABLE.finditer(template):
        parts.append(template[position:match.start()])
        parts.append(_variable(match[1], escape))
        position = match.end()
    parts.append(template[position:])
    return lambda line: "".join(part if type(part) is str else part(line) for part in parts)


def _variable(name: str, escape: bool) -> Callable[[str], str]:
    if name in ("msg", "msgnl"):
        newline = name == "msgnl"

        def message(line: str) -> str:
            text = line + "\n" if newline else line
            return json.dumps(text)[1:-1] if escape else text
        return message
    if name in _CLOCK:
        clock = _CLOCK[name]
        return lambda line: clock()
    if name.startswith("strftime:"):
        date_format = name[len("strftime:"):]
        return lambda line: time.strftime(date_format, time.localtime())
    raise ValueError(f"unknown variable ${{{name}}} (known: msg, msgnl, unix, millis, micros, strftime:FORMAT)")
