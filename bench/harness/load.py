"""Load shapes, the wrk command line, running wrk and parsing its output."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from collections.abc import Callable

from .paths import PIPELINE_LUA
from .procs import pinned

CONNECTIONS = 64
THREADS = 1
PIPELINE_DEPTH = 16

# wrk itself always sends Host; these are the extra request headers.
MINIMAL_HEADERS = ("Accept: */*",)
BROWSER_HEADERS = (
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "Accept-Language: en-US,en;q=0.9,de;q=0.8",
    "Accept-Encoding: gzip, deflate, br",
    "Cookie: sessionid=3f9a1c0e7b2d4a6f8e1c3b5d7f9a2c4e; csrftoken=Yk2mP8qR4sT6vW0xZ1aB3cD5eF7gH9iJ; theme=dark",
    "Referer: http://127.0.0.1/index.html",
    "Connection: keep-alive",
    "Cache-Control: max-age=0",
    "Upgrade-Insecure-Requests: 1",
    "Sec-Fetch-Dest: document",
    "Sec-Fetch-Mode: navigate",
)


@dataclass(frozen=True)
class Shape:
    key: str
    title: str
    headers: tuple[str, ...]
    pipeline: int = 0  # requests per write; 0 = one request at a time
    target: bool = True  # counts for the targets (the two header sets do, pipelining does not)

    def wrk_args(self) -> list[str]:
        args = [a for h in self.headers for a in ("-H", h)]
        if self.pipeline:
            args += ["-s", str(PIPELINE_LUA)]
        return args

    def script_args(self) -> list[str]:
        return ["--", str(self.pipeline)] if self.pipeline else []


SHAPES: list[Shape] = [
    Shape("2hdr", f"{1 + len(MINIMAL_HEADERS)} headers", MINIMAL_HEADERS),
    Shape("12hdr", f"{1 + len(BROWSER_HEADERS)} browser headers", BROWSER_HEADERS),
    Shape("pipe16", f"pipelined x{PIPELINE_DEPTH}", MINIMAL_HEADERS, pipeline=PIPELINE_DEPTH, target=False),
]


def wrk_command(shape: Shape, url: str, duration: int, connections: int = CONNECTIONS) -> list[str]:
    return ["wrk", "-t", str(THREADS), "-c", str(connections), "-d", f"{duration}s", "--latency",
            *shape.wrk_args(), url, *shape.script_args()]


def run_wrk(argv: list[str], duration: int, cpus: set[int] | None,
            on_tick: Callable[[], None] = lambda: None, tick: float = 1.0) -> str:
    """Run wrk, calling on_tick about every `tick` seconds while it runs; return its stdout."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=pinned(cpus))
    deadline = duration + 30
    try:
        waited = 0.0
        while True:
            try:
                out, _ = proc.communicate(timeout=tick)
                break
            except subprocess.TimeoutExpired:
                waited += tick
                if waited > deadline:
                    raise RuntimeError(f"wrk did not finish within {deadline} s") from None
                on_tick()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}: {out.strip()[-400:]}")
    return out


def warm_up(url: str, seconds: int, cpus: set[int] | None = None) -> None:
    """A short wrk run (2 headers, 64 connections) whose result is thrown away."""
    run_wrk(wrk_command(SHAPES[0], url, seconds), seconds, cpus)


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([\d.]+)(us|ms|s|m|h)"


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def failed(run: dict) -> int:
    """Requests that failed: wrk's socket errors (connect, read, write, timeout) + non-2xx/3xx responses."""
    return sum(run["socket_errors"].values()) + run["non_2xx_3xx"]


def parse_wrk(text: str) -> dict:
    """req/s, latency percentiles (ms), request count, socket errors and non-2xx/3xx count."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not rps:
        raise ValueError(f"no Requests/sec in wrk output: {text.strip()[-400:]}")
    result = {
        "rps": float(rps.group(1)),
        # wrk prints 0.00us for a percentile it could not compute (e.g. too few samples): leave those out
        "latency_ms": {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+" + _TIME, text, re.M)
                       if float(v) > 0},
        "requests": int(re.search(r"(\d+) requests in", text).group(1)),
        "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0},
        "non_2xx_3xx": 0,
    }
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if errors:
        result["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups())))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        result["non_2xx_3xx"] = int(non2xx.group(1))
    return result
