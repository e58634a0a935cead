"""Which of a port's SO_REUSEPORT sockets the kernel gives new connections to (Linux).

Without a program the kernel picks a socket of the port's group by a hash of each connection, and
closing a socket resets the connections queued in it: nothing else can accept them. So before a
worker slot is given up (SIGTTOU, a reload with fewer processes), the master attaches a classic BPF
program that picks only among the sockets that stay; the leaving worker accepts what is already
queued for it, and its socket is closed empty.
"""

from __future__ import annotations

import ctypes
import socket
import struct

from wsgistack.unix_queue import queued_unix_connections

SO_ATTACH_REUSEPORT_CBPF = 51           # asm-generic/socket.h (x86, arm); not exported by Python's socket
_LOAD_RANDOM = (0x20, 0, 0, 0xFFFFF000 + 56)     # ld [SKF_AD_OFF + SKF_AD_RANDOM]: a random u32 in A
_MOD = 0x94                             # BPF_ALU | BPF_MOD | BPF_K
_JUMP_IF_EQUAL = 0x15                   # BPF_JMP | BPF_JEQ | BPF_K
_RETURN = 0x06                          # BPF_RET | BPF_K: the index of the socket in the group
_TCPI_UNACKED = 24                      # struct tcp_info: on a listening socket, its accept queue's length


class _Instruction(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_Instruction))]


def steer(sock: socket.socket, indexes: list[int]) -> None:
    """New connections to `sock`'s port go, at random, to the group's sockets at these `indexes` (the kernel
    keeps the group in the order the sockets started listening; one that leaves is replaced by the last).
    Raises OSError where the kernel has no such program."""
    program = [_LOAD_RANDOM, (_MOD, 0, 0, len(indexes))]
    for choice, index in enumerate(indexes):
        program += [(_JUMP_IF_EQUAL, 0, 1, choice), (_RETURN, 0, 0, index)]
    program.append((_RETURN, 0, 0, 0xFFFFFFFF))       # not reached; past the group: the kernel's own hash
    instructions = (_Instruction * len(program))(*(_Instruction(*fields) for fields in program))
    header = _Program(len(program), ctypes.cast(instructions, ctypes.POINTER(_Instruction)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(header))   # the kernel copies it


def queued_connections(sock: socket.socket) -> int:
    """Connections waiting in a listening TCP socket's accept queue."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("I", info, _TCPI_UNACKED)[0]


def queue_length(sock: socket.socket) -> int:
    """Connections waiting in a listening socket's accept queue (TCP or unix), or 0 where the kernel does not
    say (one closed meanwhile, a kernel without sock_diag for unix sockets)."""
    try:
        if sock.family == socket.AF_UNIX:
            return queued_unix_connections(sock)
        return queued_connections(sock)
    except OSError:
        return 0


SO_ATTACH_FILTER = 26                   # also SO_GET_FILTER: the socket's classic BPF filter
_DROP = (_RETURN, 0, 0, 0)              # ret #0: the packet is dropped


def refuse_new_connections(sock: socket.socket) -> None:
    """The whole server stops: the kernel drops every new SYN for this listening socket, and leaves the
    connections already queued in it to be accepted (a shutdown() would reset them, requests sent). A client
    trying now is refused once the socket closes. Raises OSError where the kernel has no such filter. (A unix
    socket's connections are queued without the filter: there it is only a mark, its file is what goes.)"""
    instructions = (_Instruction * 1)(_Instruction(*_DROP))
    header = _Program(1, ctypes.cast(instructions, ctypes.POINTER(_Instruction)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(header))


def refuses_new_connections(sock: socket.socket) -> bool:
    """True once refuse_new_connections() was applied to the socket (by the master, in any process)."""
    try:
        # With a buffer (the kernel writes whole instructions: an int-sized one would overflow)
        return bool(sock.getsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, 64))
    except OSError:
        return False
