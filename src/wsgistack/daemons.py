"""--attach-daemon: commands the master runs beside the workers (a Celery worker, a queue consumer), as uWSGI's;
--smart-attach-daemon: services governed by their pidfile (memcached, redis), which outlive the server.

Each command runs in `/bin/sh -c`, with the master's environment and log (through log_relay.py when the
log is a file), no stdin and none of the server's sockets. An attached daemon that ends is started again:
at once if it ran for a while, else after a growing pause (1, 2, 4 ... 30 s), so a command that cannot
start does not spin. A reload restarts them (they run the
new code, as the workers do); a stop sends them SIGTERM, and SIGKILL to those still there after the grace
period. A smart daemon is started when the pid in its pidfile is not a running process, looked at every few
seconds; reloads and stops leave it alone, as uWSGI's "survives uWSGI stop and reload".
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
SMART_CHECK_SECONDS = 2.0    # how often a smart daemon's pidfile is looked at


@dataclass
class Daemon:
    command: str
    process: subprocess.Popen | None = None
    started: float = 0.0
    quick_exits: int = 0          # ends in a row after less than STEADY_SECONDS
    start_at: float = 0.0         # when to start it (again)


@dataclass
class SmartDaemon:
    pidfile: str
    command: str
    launcher: subprocess.Popen | None = None   # the command until it ends (a daemonizing one: at once)
    check_at: float = 0.0
    starts: int = 0               # starts in a row that did not leave a running pid behind


def smart_daemons(values: list[str]) -> list[SmartDaemon]:
    """--smart-attach-daemon values, `PIDFILE COMMAND`; ValueError for one that is not."""
    daemons = []
    for value in values:
        pidfile, _, command = value.strip().partition(" ")
        if not command.strip():
            raise ValueError(f"expected PIDFILE COMMAND, got {value!r}")
        daemons.append(SmartDaemon(pidfile, command.strip()))
    return daemons


class Daemons:
    def __init__(self, commands: list[str], smart: list[str] = (), output: int | None = None):
        self.output = output          # attached daemons' stdout and stderr (a LogRelay's pipe); None: the master's
        self.daemons = [Daemon(command) for command in commands]
        self.smart = smart_daemons(list(smart))          # checked by cli.py
        self.leaving: list[tuple[str, subprocess.Popen]] = []    # told to stop (reload, stop), not yet reaped
        self.stopping = False
        self.kill_at = 0.0

    def start_due(self) -> None:
        """Start the daemons not running whose time came (called by the master's loop)."""
        now = time.monotonic()
        for daemon in self.daemons:
            if daemon.process is None and not self.stopping and now >= daemon.start_at:
                self._start(daemon)
        for smart in self.smart:
            if smart.launcher is None and not self.stopping and now >= smart.check_at:
                self._check_smart(smart, now)

    def _check_smart(self, smart: SmartDaemon, now: float) -> None:
        if _running(_pid_in(smart.pidfile)):
            smart.starts = 0
            smart.check_at = now + SMART_CHECK_SECONDS
            return
        smart.starts += 1
        smart.check_at = now + min(SMART_CHECK_SECONDS * 2 ** (smart.starts - 1), MAX_PAUSE)
        log.info("smart daemon %r: no running pid in %s; starting it", smart.command, smart.pidfile)
        try:
            smart.launcher = start_command(smart.command)
        except OSError as exc:
            log.error("cannot start smart daemon %r: %s", smart.command, exc.strerror or exc)

    def _start(self, daemon: Daemon) -> None:
        try:
            daemon.process = start_command(daemon.command, self.output)
        except OSError as exc:
            log.error("cannot start daemon %r: %s", daemon.command, exc.strerror or exc)
            daemon.start_at = time.monotonic() + MAX_PAUSE
            return
        daemon.started = time.monotonic()
        log.info("daemon %r started (pid %d)", daemon.command, daemon.process.pid)

    def reaped(self, pid: int, status: int) -> bool:
        """The master reaped `pid`: True if it was one of ours (then started again in due time)."""
        for smart in self.smart:
            if smart.launcher is not None and smart.launcher.pid == pid:
                note_reaped(smart.launcher, status)
                smart.launcher = None           # daemonized (or, run in the foreground, ended): its pidfile tells
                return True
        for entry in self.leaving:
            if entry[1].pid == pid:
                self.leaving.remove(entry)
                note_reaped(entry[1], status)
                return True
        for daemon in self.daemons:
            if daemon.process is not None and daemon.process.pid == pid:
                note_reaped(daemon.process, status)
                daemon.process = None
                ran = time.monotonic() - daemon.started
                daemon.quick_exits = daemon.quick_exits + 1 if ran < STEADY_SECONDS else 0
                pause = min(2.0 ** (daemon.quick_exits - 1), MAX_PAUSE) if daemon.quick_exits else 0.0
                daemon.start_at = time.monotonic() + pause
                log.error("daemon %r (pid %d) %s after %.0f s; starting it again%s", daemon.command, pid,
                          _how(status), ran, f" in {pause:.0f} s" if pause else "")
                return True
        return False

    def restart(self, commands: list[str], smart: list[str], grace: float) -> None:
        """A reload: the running daemons are stopped (SIGTERM; SIGKILL after `grace`), those of the new
        configuration started at once. Smart daemons run on; the new configuration's are looked after."""
        self._let_go(grace)
        self.daemons = [Daemon(command) for command in commands]
        self.smart = smart_daemons(smart)
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
        """To the command and what it started: `cd x && celery ...` runs celery under a /bin/sh of its own."""
        for pid in [process.pid, *_descendants(process.pid)]:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def start_command(command: str, output: int | None = None) -> subprocess.Popen:
    """A command of the master's (daemons, cron) in `/bin/sh -c`: its environment, log (or `output`) and process
    group (a kill of the server's group reaches it), no stdin, none of its sockets. OSError if it cannot start."""
    return subprocess.Popen(command, shell=True, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                            close_fds=True)


def _descendants(pid: int) -> list[int]:
    """The processes `pid` started, and theirs (from /proc), deepest last."""
    found, queue = [], [pid]
    while queue and len(found) < 1000:
        parent = queue.pop(0)
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for thread in threads:
            try:
                with open(f"/proc/{parent}/task/{thread}/children") as handle:
                    children = [int(child) for child in handle.read().split()]
            except OSError:
                continue
            found += children
            queue += children
    return found


def note_reaped(process: subprocess.Popen, status: int) -> None:
    """The master's waitpid() reaped it: its status, so that Popen does not wait for it again."""
    process.returncode = os.waitstatus_to_exitcode(status)


def _pid_in(pidfile: str) -> int | None:
    try:
        with open(pidfile) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _running(pid: int | None) -> bool:
    """A live process (a zombie, ended but not reaped, is not)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"
