"""systemd socket activation: the test plays systemd, holding listening sockets and passing them to the real
server as descriptors 3, 4, ... with LISTEN_PID and LISTEN_FDS, the way a .socket unit does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import APPS, ServerProcess, free_port

# Runs as the server's process (LISTEN_PID must name it, so the variables are set after the fork): moves the
# sockets to descriptors 3.. and becomes `wsgistack ARGS`.
LAUNCHER = """
import fcntl, os, sys
passed = [int(fd) for fd in sys.argv[1].split(",")]
fds = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in passed]
for target, fd in enumerate(fds, 3):
    os.dup2(fd, target)
for fd in {*passed, *fds} - set(range(3, 3 + len(fds))):   # as systemd: only 3.. hold them
    os.close(fd)
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


def dual_stack_listener(port: int) -> socket.socket:
    """systemd's ListenStream=PORT: [::]:PORT taking IPv4 too."""
    sock = socket.socket(socket.AF_INET6)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    sock.listen(16)
    return sock


@pytest.mark.parametrize("spelling", [":{port}", "0.0.0.0:{port}"])
@pytest.mark.parametrize("passed", ["ipv4", "dual-stack"])
def test_all_interfaces_match_systemds_socket_for_the_port_and_a_socket_nobody_names_is_said(activate, spelling,
                                                                                             passed):
    if passed == "ipv4":
        everywhere, port = tcp_listener("0.0.0.0")
    else:
        port = free_port()
        everywhere = dual_stack_listener(port)
    other, other_port = tcp_listener()
    with everywhere, other:
        server = activate([other, everywhere], "--http", spelling.format(port=port))
        assert get(lambda: socket.create_connection(("127.0.0.1", port), timeout=5)) == (200, b"Hello, World!")
        log = server.wait_log("that no --http/--socket/--fastcgi-socket option names: not served")
        assert f"127.0.0.1:{other_port}" in log


def test_ipv4_everywhere_takes_the_ipv4_socket_before_an_ipv6_one_on_the_same_port(activate):
    """BindIPv6Only=ipv6-only and two ListenStream lines: [::]:P first, then 0.0.0.0:P. `:P` means IPv4 (as when
    wsgistack binds it): it takes 0.0.0.0, whatever the order, and `[::]:P` the other."""
    port = free_port()
    ipv6 = socket.socket(socket.AF_INET6)
    ipv6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    ipv6.bind(("::", port))
    ipv6.listen(16)
    ipv4 = socket.socket()
    ipv4.bind(("0.0.0.0", port))
    ipv4.listen(16)
    with ipv6, ipv4:
        server = activate([ipv6, ipv4], "--http", f":{port}", "--http", f"[::]:{port}")
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            def connect(family=family, host=host):
                sock = socket.socket(family)
                sock.settimeout(5)
                sock.connect((host, port))
                return sock
            assert get(connect) == (200, b"Hello, World!")
        assert "not served" not in server.log()


def test_descriptors_that_are_no_listening_socket_are_closed_and_said_and_no_hook_sees_the_variables(
        activate, tmp_path):
    listener, port = tcp_listener()
    datagram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    datagram.bind(("127.0.0.1", 0))
    hook_env = tmp_path / "asap.env"
    with listener, datagram, open(tmp_path / "plain", "w") as plain:
        server = activate([listener, datagram, plain], "--http", f"127.0.0.1:{port}",
                          "--exec-asap", f"env > {hook_env}")
        assert get(lambda: socket.create_connection(("127.0.0.1", port), timeout=5)) == (200, b"Hello, World!")
        log = server.log()
        for fd in (4, 5):
            assert f"systemd socket activation: descriptor {fd} (no listening TCP or unix stream socket): closed" \
                in log
        passed = {os.readlink(f"/proc/self/fd/{sock.fileno()}") for sock in (datagram, plain)}
        for process in (server.pid, *server.workers()):
            held = set()
            for fd in os.listdir(f"/proc/{process}/fd"):
                try:
                    held.add(os.readlink(f"/proc/{process}/fd/{fd}"))
                except OSError:
                    pass
            assert not passed & held, f"process {process} still holds {passed & held}"
        assert "LISTEN_" not in hook_env.read_text()


def test_an_address_no_passed_socket_is_bound_to_says_which_were_passed(activate):
    listener, port = tcp_listener()
    taken, taken_port = tcp_listener()
    with listener, taken:
        server = activate([listener], "--http", f"127.0.0.1:{taken_port}")
        assert server.proc.wait(30) == 1
        assert (f"cannot listen on '127.0.0.1:{taken_port}': address already in use (systemd passed sockets on "
                f"127.0.0.1:{port}, none bound to this address)") in server.log_path.read_text()


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
