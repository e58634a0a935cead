"""Starting, probing, measuring and stopping server processes.

Every server is started as the leader of a new session (start_new_session), so
its whole process tree -- masters, forked workers, orphans whose parent already
died -- is findable by session id in /proc and can be signalled as one process
group. `running()` is a context manager: the tree is stopped on any exit,
including errors and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from collections.abc import Callable, Iterator

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class StartError(Exception):
    """The server exited or never answered; the message is the reason for the report."""


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all bound at once, so none is handed out twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def pinned(cpus: set[int] | None):
    """A preexec_fn pinning the child (and so its descendants) to `cpus`."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`, from /proc/PID/stat."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            pids.append(int(entry))
    return pids


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes used so far, from /proc/PID/stat (gone processes count 0)."""
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; utime, stime are fields 14, 15
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def port_open(port: int, timeout: float = 1.0) -> bool:
    """The port accepts a TCP connection: readiness of a server that does not speak HTTP (uwsgi, FastCGI)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def http_status(port: int, timeout: float = 1.0) -> str | None:
    """The status line answered to one GET over a fresh connection; None if none came."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = s.recv(128)
    except OSError:
        return None
    return head.split(b"\r\n", 1)[0].decode("latin-1") if head else None


def http_ok(port: int, timeout: float = 1.0) -> bool:
    """One GET over a fresh connection; True on any 2xx status line."""
    status = http_status(port, timeout) or ""
    return status.startswith("HTTP/1.") and status[9:10] == "2"


def fresh_connection_ms(port: int, timeout: float) -> float | None:
    """Milliseconds for connect + GET + 2xx on a new connection, None if not answered in `timeout`.
    Under load this shows whether a server still serves newcomers or starves them."""
    start = time.monotonic()
    return (time.monotonic() - start) * 1000 if http_ok(port, timeout) else None


def pipelined_answers(port: int, depth: int, timeout: float = 2.0) -> int:
    """Send `depth` GETs in one write; count the 2xx responses that come back within `timeout`.
    wrk cannot tell a server that drops pipelined requests (its connections just stall)."""
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n"
    received = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(request * depth)
            deadline = time.monotonic() + timeout
            while received.count(b" 200 ") < depth and time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += chunk
    except OSError:
        pass
    return received.count(b"HTTP/1.1 2") + received.count(b"HTTP/1.0 2")


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


Probe = Callable[[int], bool]  # port -> ready?


class ServerProcess:
    def __init__(self, argv: list[str], port: int, log_path: Path, cpus: set[int] | None,
                 env: dict[str, str] | None = None):
        self.argv, self.port, self.log_path = argv, port, log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True, preexec_fn=pinned(cpus),
                                             env={**os.environ, **env} if env else None)
            except OSError as e:
                raise StartError(f"cannot execute {argv[0]}: {e}") from e

    @property
    def sid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        return session_pids(self.sid)

    def rss(self) -> int:
        return rss_bytes(self.pids())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def failure(self, what: str) -> str:
        tail = log_tail(self.log_path)
        return f"{what}" + (f"; log tail:\n{tail}" if tail else " (no output)")

    def signal_master(self, sig: int) -> None:
        """`sig` to the process the harness started (the server's master)."""
        os.kill(self.proc.pid, sig)

    def wait_ready(self, timeout: float, probe: Probe = http_ok) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise StartError(self.failure(f"exited with status {self.proc.returncode} before serving"))
            if probe(self.port):
                return
            time.sleep(0.1)
        if probe is http_ok:
            what = f"no 2xx answer (last: {http_status(self.port) or 'none'})"
        else:
            what = "not accepting connections"
        raise StartError(self.failure(f"{what} on port {self.port} within {timeout:.0f} s"))

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL whatever is left after `timeout`."""
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
                self._signal_group(sig)
                if self._wait_gone(wait):
                    return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.sid, sig)
        for pid in self.pids():  # anything that left the group but not the session
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.proc.poll()  # reap the leader
            if not self.pids():
                return True
            time.sleep(0.05)
        return False


@contextlib.contextmanager
def running(argv: list[str], port: int, log_path: Path, cpus: set[int] | None, ready_timeout: float,
            probe: Probe = http_ok, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    server = ServerProcess(argv, port, log_path, cpus, env)
    try:
        server.wait_ready(ready_timeout, probe)
        yield server
    finally:
        server.stop()
