"""Scenario "reload": requests that fail while a server is gracefully reloaded under load.

The server runs with N workers under wrk (1 thread, 32 keep-alive connections, 2 headers);
after FIRST_AT_S the harness sends the server's reload signal (servers.py) to its master,
`count` times, `interval` apart, and wrk goes on for TAIL_S after the last one. Failed
requests = wrk's socket errors + non-2xx/3xx answers. So that a server ignoring the signal
cannot pass for one reloading without a hitch, the harness also counts the processes that
appear in the server's session during the run (new workers), and checks it still answers
at the end.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from . import load, procs
from .servers import Server

CONNECTIONS = 32
FIRST_AT_S = 2.0  # into the wrk run
TAIL_S = 4.0  # wrk goes on this long after the last reload
SAMPLE_S = 0.5  # how often the server's processes are listed
TICK_S = 0.1


@dataclass(frozen=True)
class Schedule:
    count: int  # reloads
    interval: float  # seconds between two

    def at(self, index: int) -> float:
        """Seconds into the wrk run at which reload number `index` (0-based) is sent."""
        return FIRST_AT_S + index * self.interval

    @property
    def duration(self) -> int:
        """wrk's run (10 reloads 1 s apart: 15 s)."""
        return math.ceil(self.at(self.count - 1) + TAIL_S)


def wrk_command(port: int | str, schedule: Schedule) -> list[str]:
    return load.wrk_command(load.SHAPES[0], f"http://127.0.0.1:{port}/", schedule.duration, CONNECTIONS)


def reload_command(server: Server) -> str:
    return f"kill -{server.reload_signal.name.removeprefix('SIG')} <master pid>" if server.reload_signal else "n/a"


class Reloader:
    """wrk's on_tick: sends the reload signals on schedule (while the master lives) and notes every pid
    of the server's session."""

    def __init__(self, proc: procs.ServerProcess, server: Server, schedule: Schedule):
        self.proc, self.signal, self.schedule = proc, server.reload_signal, schedule
        self.start = time.monotonic()
        self.sent, self.last_sample = 0, 0.0
        self.initial = set(proc.pids())
        self.seen = set(self.initial)

    def __call__(self) -> None:
        elapsed = time.monotonic() - self.start
        due = self.sent < self.schedule.count and elapsed >= self.schedule.at(self.sent)
        if due and self.proc.alive():
            self.proc.signal_master(self.signal)
            self.sent += 1
        if elapsed - self.last_sample >= SAMPLE_S:
            self.seen.update(self.proc.pids())
            self.last_sample = elapsed

    @property
    def new_processes(self) -> int:
        return len(self.seen - self.initial)


def run_one(server: Server, workers: int, schedule: Schedule, log: Path, ready_timeout: float,
            warmup_s: int) -> dict:
    """One server, one round: start, warm up, wrk with the reloads, check it still serves, stop."""
    port = procs.free_port()
    with procs.running(server.argv(port, workers), port, log, None, ready_timeout) as proc:
        load.warm_up(f"http://127.0.0.1:{port}/", warmup_s)
        reloader = Reloader(proc, server, schedule)
        output = load.run_wrk(wrk_command(port, schedule), schedule.duration, None, on_tick=reloader, tick=TICK_S)
        serving = proc.alive() and procs.http_ok(port, timeout=2.0)
        exit_status = proc.proc.poll()  # None: the master still runs
        run = load.parse_wrk(output)
    return {**run, "failed": load.failed(run), "reloads_sent": reloader.sent,
            "new_processes": reloader.new_processes, "serving_after": serving, "master_exit": exit_status,
            "wrk_output": output}


def exit_text(status: int | None) -> str:
    """How the master ended, as subprocess reports it (negative: killed by that signal)."""
    if status is None:
        return "master running"
    if status < 0:
        return f"master killed by {signal.Signals(-status).name}"
    return f"master exited with status {status}"
