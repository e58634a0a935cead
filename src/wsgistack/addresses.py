"""Listen addresses: parsing `host:port`, `:port`, `[::1]:port`, `/path.sock`, `unix:/path.sock`, and binding them.

Binding happens in the master, before any worker exists; workers inherit the sockets.
TCP sockets carry SO_REUSEPORT so that each worker slot can get a sibling socket on the same
port: the kernel then spreads new connections over the slots evenly, where one shared socket
lets whichever worker wakes first accept a whole burst (measured: 1 of 4 workers took all 16
of wrk's connections). Unix sockets stay shared: SO_REUSEPORT does not apply to them. So do uwsgi
sockets, whose connections carry one request each: there the next free worker should take the next one,
one at a time (see Connection.direct_accept and direct.py).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass

from wsgistack.config.errors import ConfigError


@dataclass(frozen=True)
class Address:
    protocol: str              # "http", "uwsgi" or "fastcgi"
    text: str                  # as the user wrote it, for messages
    host: str | None = None    # TCP: "" means all interfaces
    port: int | None = None
    path: str | None = None    # unix socket path
    inherited: bool = False    # systemd's socket (socket_activation.py): never shut down, filtered or unlinked

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    @property
    def family(self) -> int:
        if self.is_unix:
            return socket.AF_UNIX
        return socket.AF_INET6 if self.host and ":" in self.host else socket.AF_INET


def parse_address(text: str, protocol: str, option: str) -> Address:
    raw = text.strip()
    if raw.startswith("unix:"):
        raw = raw[len("unix:"):]
        if not raw:
            raise ConfigError(f"empty unix socket path in {text!r}", option=option)
        return Address(protocol, text, path=raw)
    if raw.startswith(("/", "./", "../")) or raw.endswith(".sock"):
        return Address(protocol, text, path=raw)
    if raw.startswith("["):
        host, bracket, rest = raw[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ConfigError(f"bad address {text!r}: expected [ipv6]:port", option=option)
        port_text = rest[1:]
    else:
        host, colon, port_text = raw.rpartition(":")
        if not colon:
            raise ConfigError(f"bad address {text!r}: expected host:port, :port or a unix socket path",
                              option=option)
        if ":" in host:
            raise ConfigError(f"bad address {text!r}: write IPv6 addresses as [addr]:port", option=option)
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5) or int(port_text) > 65535:
        raise ConfigError(f"bad port in {text!r}: expected 0-65535", option=option)
    if host in ("*", "0"):
        host = ""
    return Address(protocol, text, host=host, port=int(port_text))


def bind(address: Address, backlog: int, chmod: str, option: str,
         systemd_sockets: tuple[str, ...] = ()) -> socket.socket:
    """Create, bind and listen; errors name the option and the address (and the sockets systemd passed, none of
    which is bound to this address: the usual reason it is in use then)."""
    try:
        if address.is_unix:
            return _bind_unix(address, backlog, chmod)
        return _bind_tcp(address, backlog)
    except OSError as exc:
        reason = {errno.EADDRINUSE: "address already in use",
                  errno.EADDRNOTAVAIL: "address not available on this machine",
                  errno.EACCES: "permission denied"}.get(exc.errno, exc.strerror or str(exc))
        if exc.errno == errno.EADDRINUSE and systemd_sockets:
            reason += f" (systemd passed sockets on {', '.join(systemd_sockets)}, none bound to this address)"
        raise ConfigError(f"cannot listen on {address.text!r}: {reason}", option=option) from None


def _bind_tcp(address: Address, backlog: int) -> socket.socket:
    host = address.host or ""
    infos = socket.getaddrinfo(host or None, address.port, address.family if host else socket.AF_INET,
                               socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    # SO_REUSEPORT would let us join another server's port silently: first prove nobody listens there.
    with _tcp_socket(family, reuse_port=False) as probe:
        probe.bind(sockaddr)
        sockaddr = probe.getsockname()          # port 0: keep the port the kernel chose
    return _listen_tcp(family, sockaddr, backlog)


def bind_sibling(sock: socket.socket, backlog: int) -> socket.socket:
    """Another listening socket on the same TCP address, for one more worker slot."""
    return _listen_tcp(sock.family, sock.getsockname(), backlog)


def _listen_tcp(family: int, sockaddr, backlog: int) -> socket.socket:
    return _listen(_tcp_socket(family, reuse_port=True), sockaddr, backlog)


def _listen(sock: socket.socket, sockaddr, backlog: int, chmod: str = "") -> socket.socket:
    """Bind and listen, inheritable by the workers; the socket is closed if any step fails."""
    try:
        sock.bind(sockaddr)
        if chmod:
            os.chmod(sockaddr, int(chmod, 8))
        sock.listen(backlog)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def _tcp_socket(family: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


# unix socket path -> (absolute path, device, inode) of the file this server bound there
_bound_files: dict[str, tuple[str, int, int]] = {}


def _bind_unix(address: Address, backlog: int, chmod: str) -> socket.socket:
    path = address.path
    assert path is not None
    _remove_stale_unix_socket(path)
    # Without --chmod-socket the umask decides, as in uWSGI: a 666 default let any local user speak uwsgi to
    # the app and set REMOTE_USER and REMOTE_ADDR as it liked.
    sock = _listen(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), path, backlog, chmod)
    info = os.stat(path)
    _bound_files[path] = (os.path.abspath(path), info.st_dev, info.st_ino)
    return sock


def remove_socket_file(path: str) -> bool:
    """Remove a unix socket's file if it is still the one this server bound (not one a newer server bound there
    since): True if it was removed. A connect() to the path then fails at once."""
    absolute, device, inode = _bound_files.get(path, ("", 0, 0))
    try:
        info = os.stat(absolute)
        if (info.st_dev, info.st_ino) != (device, inode):
            return False
        os.unlink(absolute)
    except OSError:
        return False
    return True


def _remove_stale_unix_socket(path: str) -> None:
    """A socket file left by a dead server is replaced; a live one means the address is in use."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "a file that is not a socket exists there")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "address already in use")
