"""The accept queue of a listening unix socket, as the kernel's sock_diag tells it (`ss -xl`'s Recv-Q).

A listening TCP socket says its queue in TCP_INFO (reuseport.queued_connections); a unix socket has no such
option, and SIOCINQ refuses a listening one. One netlink request about the socket's inode answers instead.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
TCP_LISTEN = 10                  # the state a listening unix socket is in, too
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_RQLEN = 4              # attribute: (queued connections, backlog) for a listening socket
NO_COOKIE = 0xFFFFFFFF
_HEADER = struct.Struct("=IHHII")                # struct nlmsghdr
_REQUEST = struct.Struct("=BBHIII2I")            # struct unix_diag_req
_MESSAGE_SIZE = 16                               # struct unix_diag_msg, which the attributes follow


def queued_unix_connections(sock: socket.socket) -> int:
    """Connections waiting in a listening unix socket's accept queue; OSError where the kernel cannot tell."""
    inode = os.fstat(sock.fileno()).st_ino
    request = _REQUEST.pack(socket.AF_UNIX, 0, 0, 1 << TCP_LISTEN, inode, UDIAG_SHOW_RQLEN, NO_COOKIE, NO_COOKIE)
    header = _HEADER.pack(_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as netlink:
        netlink.sendto(header + request, (0, 0))      # answered within the call: the recv does not wait
        reply = netlink.recv(4096)
    length, kind, _, _, _ = _HEADER.unpack_from(reply)
    if kind == NLMSG_ERROR:
        code = -struct.unpack_from("=i", reply, _HEADER.size)[0]
        raise OSError(code, os.strerror(code))
    position, end = _HEADER.size + _MESSAGE_SIZE, min(length, len(reply))
    while position + 4 <= end:
        size, kind = struct.unpack_from("=HH", reply, position)
        if kind == UNIX_DIAG_RQLEN and size >= 8:
            return struct.unpack_from("=I", reply, position + 4)[0]
        if size < 4:
            break
        position += (size + 3) & ~3
    raise OSError(errno.ENODATA, "no queue length in the kernel's answer")
