"""systemd socket activation: the test plays systemd, holding listening sockets and passing them to the real
server as descriptors 3, 4, ... with LISTEN_PID and LISTEN_FDS, the way a .socket unit does."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from conftest import APPS, ServerProcess, free_port

# Runs as the server's process (LISTEN_PID must name it, so the variables are set after the fork): moves the
# sockets to descriptors 3.. and becomes `wsgistack ARGS`.
LAUNCHER = """
import fcntl, os, sys
fds = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 100) for fd in sys.argv[1].split(",")]
for target, fd in enumerate(fds, 3):
    os.dup2(fd, target)
os.environ.update(LISTEN_PID=sys.argv[2] or str(os.getpid()), LISTEN_FDS=str(len(fds)), LISTEN_FDNAMES="web")
os.execv(sys.executable, [sys.executable, "-m", "wsgistack", *sys.argv[3:]])
"""


class ActivatedServer(ServerProcess):
    def __init__(self, sockets: list[socket.socket], args: list[str], log_path, listen_pid: str = ""):
        self.port = None
        self.log_path = log_path
        self.log_file = open(log_path, "wb")
        fds = [sock.fileno() for sock in sockets]
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, ",".join(map(str, fds)), listen_pid, *args],
                                     stdout=self.log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     pass_fds=fds, start_new_session=True)


@pytest.fixture
def activate(tmp_path):
    started: list[ActivatedServer] = []

    def start(sockets, *args: str, listen_pid: str = "") -> ActivatedServer:
        server = ActivatedServer(sockets, ["--wsgi-file", str(APPS / "basic.py"), *args],
                                 tmp_path / f"server-{len(started)}.log", listen_pid)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def tcp_listener(host: str = "127.0.0.1") -> tuple[socket.socket, int]:
    """systemd's default: no SO_REUSEPORT (so a server that bound the port itself would fail)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, free_port()))
    sock.listen(64)
    return sock, sock.getsockname()[1]


def get(connect, path: str = "/", timeout: float = 15.0) -> tuple[int, bytes]:
    """One request on a connection from `connect()`: (status, body). A connection made before any server
    runs waits in the socket's queue: the timeout covers the server's start."""
    with connect() as sock:
        sock.settimeout(timeout)
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def listening(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


def test_a_socket_from_systemd_serves_its_address_and_waits_for_the_next_server_across_a_restart(activate):
    listener, port = tcp_listener()
    with listener:
        connect = lambda: socket.create_connection(("127.0.0.1", port), timeout=5)   # noqa: E731
        first = activate([listener], "--http", f"127.0.0.1:{port}", "--processes", "2")
        for _ in range(4):
            assert get(connect) == (200, b"Hello, World!")
        environ = json.loads(get(connect, "/process-environ")[1])
        assert not {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} & set(environ)   # the app's descriptors are not
        assert first.stop() == 0
        assert "not served" not in first.log_path.read_text()
        # systemd's socket was only closed by the server: still listening, nothing queued in it is lost
        assert listening(listener)
        waiting = connect()
        waiting.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        second = activate([listener], "--http", f"127.0.0.1:{port}")
        waiting.settimeout(15)
        with waiting:
            answer = b""
            while chunk := waiting.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"Hello, World!"), answer
        assert second.stop() == 0


def test_a_unix_socket_from_systemd_is_neither_chowned_nor_unlinked(activate, tmp_path):
    path = str(tmp_path / "app.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    with listener:
        def connect():
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(path)
            return sock
        server = activate([listener], "--http", path, "--vacuum", "--chmod-socket", "600")
        assert get(connect) == (200, b"Hello, World!")
        mode = (tmp_path / "app.sock").stat().st_mode & 0o777
        assert server.stop() == 0
        assert (tmp_path / "app.sock").exists() and listening(listener)
        assert (tmp_path / "app.sock").stat().st_mode & 0o777 == mode


def test_all_interfaces_match_systemds_socket_for_the_port_and_a_socket_nobody_names_is_said(activate):
    everywhere, port = tcp_listener("0.0.0.0")
    other, other_port = tcp_listener()
    with everywhere, other:
        server = activate([other, everywhere], "--http", f":{port}")
        assert get(lambda: socket.create_connection(("127.0.0.1", port), timeout=5)) == (200, b"Hello, World!")
        log = server.wait_log("that no --http/--socket/--fastcgi-socket option names: not served")
        assert f"127.0.0.1:{other_port}" in log


def test_sockets_meant_for_another_process_are_left_alone(activate):
    listener, port = tcp_listener()
    with listener:
        # LISTEN_PID names another process: the descriptors are not ours, and binding the port itself fails
        server = activate([listener], "--http", f"127.0.0.1:{port}", listen_pid="1")
        assert server.proc.wait(30) == 1
        assert f"cannot listen on '127.0.0.1:{port}': address already in use" in server.log()


def test_uwsgi_sockets_from_systemd_are_shared_by_the_workers(activate):
    from wsgistack.protocols.uwsgi_codec import encode_uwsgi_request
    listener, port = tcp_listener()
    with listener:
        server = activate([listener], "--socket", f"127.0.0.1:{port}", "--processes", "2")
        for _ in range(6):
            with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
                sock.sendall(encode_uwsgi_request({"REQUEST_METHOD": "GET", "PATH_INFO": "/",
                                                   "SERVER_PROTOCOL": "HTTP/1.0", "REMOTE_ADDR": "127.0.0.1",
                                                   "SERVER_NAME": "x", "SERVER_PORT": "80"}))
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            assert data.split(b" ", 2)[1] == b"200" and data.endswith(b"Hello, World!"), data
        assert server.stop() == 0
