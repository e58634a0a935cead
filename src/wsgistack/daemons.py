"""--attach-daemon: commands the master runs beside the workers (a Celery worker, a queue consumer), as uWSGI's.

Each command runs in `/bin/sh -c`, with the master's environment and log, no stdin and none of the server's
sockets. One that ends is started again: at once if it ran for a while, else after a growing pause (1, 2,
4 ... 30 s), so a command that cannot start does not spin. A reload restarts them (they run the new code, as
the workers do); a stop sends them SIGTERM, and SIGKILL to those still there after the grace period.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass

log = logging.getLogger("wsgistack")

STEADY_SECONDS = 10.0        # a daemon that ran this long is started again at once
MAX_PAUSE = 30.0


@dataclass
class Daemon:
    command: str
    process: subprocess.Popen | None = None
    started: float = 0.0
    quick_exits: int = 0          # ends in a row after less than STEADY_SECONDS
    start_at: float = 0.0         # when to start it (again)


class Daemons:
    def __init__(self, commands: list[str]):
        self.daemons = [Daemon(command) for command in commands]
        self.leaving: list[tuple[str, subprocess.Popen]] = []    # told to stop (reload, stop), not yet reaped
        self.stopping = False
        self.kill_at = 0.0

    def start_due(self) -> None:
        """Start the daemons not running whose time came (called by the master's loop)."""
        now = time.monotonic()
        for daemon in self.daemons:
            if daemon.process is None and not self.stopping and now >= daemon.start_at:
                self._start(daemon)

    def _start(self, daemon: Daemon) -> None:
        try:
            daemon.process = subprocess.Popen(daemon.command, shell=True, stdin=subprocess.DEVNULL, close_fds=True)
        except OSError as exc:
            log.error("cannot start daemon %r: %s", daemon.command, exc.strerror or exc)
            daemon.start_at = time.monotonic() + MAX_PAUSE
            return
        daemon.started = time.monotonic()
        log.info("daemon %r started (pid %d)", daemon.command, daemon.process.pid)

    def reaped(self, pid: int, status: int) -> bool:
        """The master reaped `pid`: True if it was one of ours (then started again in due time)."""
        for entry in self.leaving:
            if entry[1].pid == pid:
                self.leaving.remove(entry)
                entry[1].returncode = os.waitstatus_to_exitcode(status)    # reaped: Popen must not wait again
                return True
        for daemon in self.daemons:
            if daemon.process is not None and daemon.process.pid == pid:
                daemon.process.returncode = os.waitstatus_to_exitcode(status)
                daemon.process = None
                ran = time.monotonic() - daemon.started
                daemon.quick_exits = daemon.quick_exits + 1 if ran < STEADY_SECONDS else 0
                pause = min(2.0 ** (daemon.quick_exits - 1), MAX_PAUSE) if daemon.quick_exits else 0.0
                daemon.start_at = time.monotonic() + pause
                log.error("daemon %r (pid %d) %s after %.0f s; starting it again%s", daemon.command, pid,
                          _how(status), ran, f" in {pause:.0f} s" if pause else "")
                return True
        return False

    def restart(self, commands: list[str], grace: float) -> None:
        """A reload: the running daemons are stopped (SIGTERM; SIGKILL after `grace`), those of the new
        configuration started at once."""
        self._let_go(grace)
        self.daemons = [Daemon(command) for command in commands]
        self.start_due()

    def stop(self, grace: float) -> None:
        """SIGTERM to every daemon; those still running after `grace` seconds get SIGKILL (kill_overdue)."""
        self.stopping = True
        self._let_go(grace)

    def _let_go(self, grace: float) -> None:
        for daemon in self.daemons:
            if daemon.process is not None:
                self.leaving.append((daemon.command, daemon.process))
                self._signal(daemon.process, signal.SIGTERM)
                daemon.process = None
        self.kill_at = time.monotonic() + grace

    def kill_overdue(self) -> None:
        if self.leaving and self.kill_at and time.monotonic() > self.kill_at:
            self.kill_at = 0.0
            for command, process in self.leaving:
                log.error("daemon %r (pid %d) still running; killing it", command, process.pid)
                self._signal(process, signal.SIGKILL)

    def running(self) -> bool:
        return bool(self.leaving) or any(daemon.process is not None for daemon in self.daemons)

    @staticmethod
    def _signal(process: subprocess.Popen, sig: int) -> None:
        try:
            os.kill(process.pid, sig)
        except ProcessLookupError:
            pass


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"
