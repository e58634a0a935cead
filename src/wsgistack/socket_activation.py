"""systemd socket activation (sd_listen_fds(3)): listening sockets handed over as descriptors 3, 4, ...

As in uWSGI, an inherited socket serves only a configured address it is bound to (--http, --socket,
--fastcgi-socket ...): the configuration still says each socket's protocol, and a stray descriptor (an
ssh-agent's, say) is never served. The socket stays systemd's: it is never shut down, filtered or unlinked, so
connections that arrive while the service restarts wait in its queue for the next server.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from wsgistack.addresses import Address

FIRST_FD = 3          # SD_LISTEN_FDS_START
MAX_FDS = 1024        # a LISTEN_FDS beyond this is no systemd's


def _listening_stream(fd: int) -> socket.socket | None:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None                  # closed, or no socket
    try:
        if sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX) \
                and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return sock
    except OSError:
        pass
    sock.detach()
    return None


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.partition("%")[0]) == ipaddress.ip_address(b.partition("%")[0])
    except ValueError:
        return False


def _dual_stack(sock: socket.socket) -> bool:
    return sock.family == socket.AF_INET6 and not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)


class InheritedSockets:
    """The listening sockets systemd passed to this process, until configured addresses claim them."""

    def __init__(self, sockets: list[socket.socket], refused: list[str] | None = None):
        self.unclaimed = sockets
        self.passed = tuple(_describe(sock) for sock in sockets)
        self.refused = refused or []     # what was passed but cannot be served: said by close_unclaimed

    @classmethod
    def from_environment(cls, environ=os.environ) -> InheritedSockets:
        """Take LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES out of the environment (workers, daemons, hooks and the app
        must not take the descriptors for theirs) and the sockets they name, when they name this process.
        Descriptors in the range that are no listening stream socket are closed (sd_listen_fds(3): they are
        ours), and said."""
        pid, count = environ.pop("LISTEN_PID", ""), environ.pop("LISTEN_FDS", "")
        environ.pop("LISTEN_FDNAMES", None)
        if not (pid.isdigit() and int(pid) == os.getpid()):
            return cls([])           # none, or meant for another process (a shell that started us, say)
        if not count.isdigit():
            return cls([], [f"LISTEN_FDS={count!r} is no number of descriptors: none taken"])
        sockets, refused = [], []
        for fd in range(FIRST_FD, FIRST_FD + min(int(count), MAX_FDS)):
            sock = _listening_stream(fd)
            if sock is not None:
                sockets.append(sock)
                continue
            try:
                os.close(fd)
                refused.append(f"descriptor {fd} (no listening TCP or unix stream socket): closed")
            except OSError:
                pass                 # not open: nothing passed there
        return cls(sockets, refused)

    def take(self, address: Address) -> socket.socket | None:
        """The inherited socket bound to this address, if any (it is the address's from now on): one bound to
        exactly its IP first; for all IPv4 interfaces, else a dual-stack [::] one (systemd's ListenStream=PORT)."""
        for exact in (True, False):
            for sock in self.unclaimed:
                if self._serves(sock, address, exact):
                    self.unclaimed.remove(sock)
                    sock.set_inheritable(True)
                    return sock
        return None

    @staticmethod
    def _serves(sock: socket.socket, address: Address, exact: bool) -> bool:
        bound = sock.getsockname()
        if address.is_unix:
            return exact and sock.family == socket.AF_UNIX and isinstance(bound, str) and bound != "" and \
                os.path.realpath(bound) == os.path.realpath(address.path)
        if sock.family == socket.AF_UNIX or bound[1] != address.port or not address.port:
            return False
        any_ipv4 = address.host in ("", "0.0.0.0")
        if not exact:
            return any_ipv4 and bound[0] == "::" and _dual_stack(sock)
        if any_ipv4:
            return sock.family == socket.AF_INET and bound[0] == "0.0.0.0"
        try:
            infos = socket.getaddrinfo(address.host, address.port, address.family, socket.SOCK_STREAM)
        except OSError:
            return False
        return any(info[0] == sock.family and _same_ip(info[4][0], bound[0]) for info in infos)

    def close_unclaimed(self, warn) -> None:
        """Sockets no configured address claimed: said, and closed (systemd keeps its own copy)."""
        for sock in self.unclaimed:
            warn(f"wsgistack: systemd passed a socket on {_describe(sock)} that no --http/--socket/"
                 "--fastcgi-socket option names: not served")
            sock.close()
        for message in self.refused:
            warn(f"wsgistack: systemd socket activation: {message}")
        self.unclaimed = []
        self.refused = []


def _describe(sock: socket.socket) -> str:
    bound = sock.getsockname()
    if isinstance(bound, str) or isinstance(bound, bytes):
        return repr(bound)
    host = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
    return f"{host}:{bound[1]}"
