"""Shared fixtures: start the real `wsgistack` command on a free loopback port, and always stop it.

Every wait is bounded; every process started here is stopped (SIGTERM, then SIGKILL) at teardown.
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
APPS = TESTS / "apps"
WSGISTACK = [sys.executable, "-m", "wsgistack"]
DEMO = TESTS.parent / "examples" / "mmcsite"


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()     # this session's ports: one not bound yet is still free to the kernel


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range: a port the kernel hands out (bind to 0)
    can be taken by a client connection's local end before the server binds it ("address in use").
    Never the same one twice in a session: a test asking for several ports before starting anything would
    otherwise get a repeat now and then."""
    low = _ephemeral_ports()[0]
    for _ in range(200):
        port = random.randint(max(1024, low - 12000), low - 1)
        if port in _handed_out:
            continue
        _handed_out.add(port)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:           # a crowded range: fall back to the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1", proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def failed_start(tmp_path: Path, *lines: str) -> tuple[Path, str]:
    """Start wsgistack on an ini file: [uwsgi], an HTTP port, tests/apps/basic.py (lines 1-3), then `lines` (from
    line 4). It must refuse to start, with status 1: (the ini file, what it wrote to stderr)."""
    ini = tmp_path / "uwsgi.ini"
    ini.write_text("".join(f"{line}\n" for line in ("[uwsgi]", f"http = 127.0.0.1:{free_port()}",
                                                     f"wsgi-file = {APPS / 'basic.py'}", *lines)))
    result = subprocess.run(WSGISTACK + [str(ini)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, result
    return ini, result.stderr


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """The predicate's first true value, polled until the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not true after {timeout} s")


def wait_for_unix_socket(path: str, timeout: float = 15.0) -> None:
    """The server binds its sockets one after another: a TCP port that answers does not mean a unix
    socket named later is there yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(path)
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {path} after {timeout}s")


class ServerProcess:
    """A running `wsgistack` process; `log()` reads everything it wrote to stderr."""

    def __init__(self, args: list[str], port: int | None, log_path: Path, cwd: Path | None = None,
                 env: dict | None = None):
        self.port = port
        self.log_path = log_path
        self.log_file = open(log_path, "wb")
        self.proc = subprocess.Popen(WSGISTACK + args, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=cwd, env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            content = self.log()
            if text in content:
                return content
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the server log after {timeout}s:\n{self.log()}")

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path: str, headers: dict | None = None, method: str = "GET", body=None):
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def workers(self) -> list[int]:
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        try:   # workers that outlived their master (a bug) must not leak into other tests
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log_file.close()
        return self.proc.returncode


@pytest.fixture
def start_server(tmp_path):
    """start_server(*flags, app="basic.py") -> a listening ServerProcess (stopped at teardown)."""
    started: list[ServerProcess] = []

    def start(*flags: str, app: str | None = "basic.py", wait: bool = True, cwd=None, env=None,
              listen: bool = True) -> ServerProcess:
        port = free_port()
        args = []
        if listen:
            args += ["--http", f"127.0.0.1:{port}"]
        if app is not None:
            args += ["--wsgi-file", str(APPS / app)]
        args += list(flags)
        server = ServerProcess(args, port, tmp_path / f"server-{len(started)}.log", cwd=cwd, env=env)
        started.append(server)
        if wait:
            try:
                wait_for_port(port, proc=server.proc)
            except Exception:
                raise AssertionError(f"server did not start:\n{server.log()}")
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_server) -> ServerProcess:
    return start_server()


def raw_request(port: int, data: bytes, timeout: float = 5.0, read_until_close: bool = True) -> bytes:
    """Send raw bytes; return everything received until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_close:
                break
        return b"".join(chunks)


def responses_in(data: bytes) -> list[int]:
    """Status codes of every response in a byte stream (for pipelining and smuggling checks)."""
    import re
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory) -> dict:
    """Environment for serving the Django demo (examples/mmcsite) on a freshly migrated temp database."""
    env = dict(os.environ, DEMO_DB=str(tmp_path_factory.mktemp("django") / "db.sqlite3"),
               DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=DEMO, env=env, check=True,
                   timeout=120)
    return env
