"""Connections served straight off accept(), before (and mostly without) an event-loop transport.

nginx's `uwsgi_pass` opens a connection per request and sends the whole request at once. For such a
connection a uvloop transport costs more than the request: accept, TCP_NODELAY, getsockname, getpeername,
an epoll registration, a loop pass for the data, the epoll removal, close (strace: 11 syscalls per request;
uWSGI makes 5). Here the worker accepts by itself, reads at once (TCP_DEFER_ACCEPT makes the kernel hold a
connection until its first bytes came), and runs the protocol on a `DirectTransport` that writes with
send(): a connection answered in that first pass costs accept, recv, send, close.

A connection whose protocol read all it will ever read (`read_all`: a whole uwsgi request) but whose answer
comes later (an app thread) stays on the DirectTransport: the answer is sent, the socket closed, from the
loop thread as usual. Any other (a request still arriving, an answer the socket could not take at once, a
lingering close) is handed to uvloop with `connect_accepted_socket`, together with what it had queued, and
goes on there like any other. The protocol code never knows which transport it got.

With app threads (`--threads` > 1) the first pass is an app thread's (`ThreadAcceptor`, fed by
app_threads.py): it accepts, reads, runs the app and answers by itself, the connection being "owned by the
thread" (Connection.owned_by_thread) until it is closed there or handed to the loop thread, which then
goes on with it as above.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import functools
import logging
import socket
import threading
import time

log = logging.getLogger("wsgistack")

# The first read: a request from nginx fits easily; malloc serves it without an mmap (unlike uvloop's 256 kB).
FIRST_READ = 65536
# Seconds to stop accepting after the process ran out of file descriptors (EMFILE), instead of spinning.
ACCEPT_PAUSE = 0.5
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# TCP_DEFER_ACCEPT: the kernel holds a new connection this long for its first bytes (uWSGI's default
# --socket-timeout, which uWSGI uses for it); one silent for longer is accepted, and our timeouts apply.
DEFER_ACCEPT_SECONDS = 4

# DirectTransport states
_DIRECT = 0      # writes go straight to the socket
_HANDING = 1     # waiting for uvloop's transport: writes and requests are queued
_DONE = 2        # handed over (the protocol holds uvloop's transport now) or closed here


class DirectTransport(asyncio.Transport):
    """The transport a protocol sees during the first pass, and after it until closed or handed over."""

    __slots__ = ("loop", "sock", "peer", "protocol", "state", "first_pass", "queued", "closing", "eof_wanted",
                 "aborted", "read_paused", "paused_protocol", "sends", "lost_error")

    def __init__(self, loop, sock: _socket.socket, peer, protocol):
        self.loop = loop
        self.sock = sock
        self.peer = peer
        self.protocol = protocol
        self.state = _DIRECT
        self.first_pass = True              # connection_lost then comes from first_pass_done, not call_soon
        self.queued: list[bytes] = []       # bytes the socket did not take yet, in order
        self.closing = False
        self.eof_wanted = False             # write_eof() was asked (a lingering close): needs reading on
        self.aborted = False
        self.read_paused = False
        self.paused_protocol = False        # we called protocol.pause_writing()
        self.sends = 0
        self.lost_error: BaseException | None = None

    # --- asyncio.WriteTransport ---
    def write(self, data) -> None:
        if self.closing or self.state == _DONE:
            return                          # as uvloop: writes after close() or write_eof() are dropped
        if self.state != _DIRECT or self.queued:
            self.queued.append(bytes(data))
            return
        self.sends += 1
        if self.sends == 2 and self.sock.family != socket.AF_UNIX:
            # a second small write must not wait for the first one's ACK (Nagle); uvloop sets this for every connection
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sent = self.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._broken(exc)
            return
        if sent < len(data):
            self.queued.append(bytes(data[sent:]))
            if not self.paused_protocol:
                self.paused_protocol = True     # the socket is full: streams wait until uvloop drained it
                self.protocol.pause_writing()
            if not self.first_pass:
                self._hand_over()

    def writelines(self, chunks) -> None:
        self.write(b"".join(chunks))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self.closing:
            return
        self.closing = self.eof_wanted = True     # done by uvloop's transport, which then reads on (lingering)
        if not self.first_pass and self.state == _DIRECT:
            self._hand_over()

    def get_write_buffer_size(self) -> int:
        return sum(map(len, self.queued))

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass

    def abort(self) -> None:
        self.closing = self.aborted = True
        self.eof_wanted = False
        self.queued.clear()
        if self.state == _DIRECT:
            self._close_socket()

    # --- asyncio.BaseTransport / ReadTransport ---
    def close(self) -> None:
        if self.closing and not self.eof_wanted:
            return
        self.closing = True
        self.eof_wanted = False
        if self.state == _DIRECT and not self.queued:
            self._close_socket()

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        self.read_paused = False

    def is_reading(self) -> bool:
        return not self.read_paused and not self.closing

    def get_extra_info(self, name: str, default=None):
        if name == "peername":
            return self.peer
        if name == "sockname":
            try:
                return self.sock.getsockname()
            except OSError:
                return default
        if name == "socket":
            self.sock.setblocking(False)    # for sendfile from the loop (accept() gave a blocking socket)
            return self.sock
        return default

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def get_protocol(self):
        return self.protocol

    # --- ending here ---
    def _broken(self, exc: BaseException) -> None:
        """The peer is gone (reset, broken pipe): like uvloop, the protocol learns it from connection_lost."""
        self.lost_error = exc
        self.closing = self.aborted = True
        self.queued.clear()
        self._close_socket()

    def _close_socket(self) -> None:
        self.state = _DONE
        try:
            self.sock.close()
        except OSError:
            pass
        if not self.first_pass:
            self.loop.call_soon(self._lost)      # as asyncio: never from inside the protocol's own call

    def _lost(self) -> None:
        protocol, self.protocol = self.protocol, None      # no cycle left for the garbage collector
        protocol.connection_lost(self.lost_error)

    def thread_pass_done(self) -> None:
        """The app thread that accepted the connection is done with it: closed there (the common end, no loop
        involved), or the loop thread takes it over from here, as after a first pass of its own."""
        if self.state == _DONE:
            self.first_pass = False
            self._lost()
        else:
            self.loop.call_soon_threadsafe(self.first_pass_done)

    def first_pass_done(self) -> None:
        """The protocol handled what the first read brought: end here, stay, or hand the connection to uvloop."""
        self.first_pass = False
        if self.state == _DONE:
            self._lost()
        elif self.queued or self.eof_wanted or not getattr(self.protocol, "read_all", False):
            self._hand_over()
        # else: the request was read whole; its answer (an app thread's) is sent from here when it comes

    # --- handing over to uvloop ---
    def _hand_over(self) -> None:
        self.state = _HANDING
        sock = self.sock
        # uvloop wants a socket.socket; it sets the descriptor non-blocking and closes it with its transport
        self.sock = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: _Takeover(self), self.sock)
        except Exception as exc:            # no transport: the connection is lost, and the protocol must know
            if self.state != _DONE:
                log.warning("could not hand a connection to the event loop: %s", exc)
                self.lost_error = exc
                self._close_socket()

    def _take_over(self, transport) -> None:
        """uvloop's transport reads now: it gets the protocol, the queued bytes and what was asked meanwhile.
        (Called after its connection_made, which starts reading: a pause_reading() there would be undone.)"""
        if self.state == _DONE:
            return                          # lost meanwhile (_Takeover.connection_lost)
        self.state = _DONE
        protocol, self.protocol = self.protocol, None
        transport.set_protocol(protocol)
        protocol.transport = transport
        if self.read_paused:
            transport.pause_reading()
        if self.queued:
            transport.write(b"".join(self.queued))
            self.queued.clear()
        if self.paused_protocol and transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[1]:
            protocol.resume_writing()       # else uvloop paused it too, and resumes it once drained
        if self.aborted:
            transport.abort()
        elif self.eof_wanted:
            transport.write_eof()
        elif self.closing:
            transport.close()


class _Takeover(asyncio.Protocol):
    """The protocol uvloop's transport starts with: passes on what comes before the connection's own
    protocol takes its place (one loop pass later)."""

    def __init__(self, direct: DirectTransport):
        self.direct = direct

    def connection_made(self, transport) -> None:
        self.direct.loop.call_soon(self.direct._take_over, transport)

    def data_received(self, data: bytes) -> None:
        self.direct.protocol.data_received(data)

    def eof_received(self):
        return self.direct.protocol.eof_received()

    def connection_lost(self, exc) -> None:
        direct = self.direct
        if direct.state != _DONE:
            direct.state = _DONE
            direct.lost_error = exc
            direct._lost()


class DirectAcceptor:
    """Accepts on one listening socket and gives each connection its first pass (see the module docstring)."""

    def __init__(self, loop, sock: socket.socket, protocol_factory):
        self.loop = loop
        self.sock = sock
        self.protocol_factory = protocol_factory
        self.family = sock.family           # socket.socket's family is a Python property: read it once
        self.serving = False

    async def start_serving(self) -> None:
        _prepare_listening(self.sock)
        self.serving = True
        self.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting (graceful stop); the master and the other workers keep the socket open."""
        if self.serving:
            self.serving = False
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _accept(self) -> None:
        # One connection per readiness: the socket is shared, and the next connection should go to
        # whichever worker is free first (uWSGI's model), not to the one that woke first.
        try:
            fd, peer = self.sock._accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno == errno.EINVAL:       # no longer listening: the master stops the server
                self.serving = False
                self.loop.remove_reader(self.sock.fileno())
            elif exc.errno in _RESOURCE_ERRORS:
                log.error("cannot accept connections: %s; pausing accept for %.1f s", exc, ACCEPT_PAUSE)
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(ACCEPT_PAUSE, self._resume)
            else:
                # ECONNABORTED, or a network error of one pending connection passed on by accept() (accept(2)
                # says to treat those as EAGAIN): that connection is gone, the socket stays ready for the next
                log.info("accept() failed for one connection: %s", exc)
            return
        # _socket.socket: the C type, without socket.socket's Python layer (this one is never a file)
        self._first_pass(_socket.socket(self.family, socket.SOCK_STREAM, 0, fd), peer)

    def _resume(self) -> None:
        if self.serving:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def _first_pass(self, sock: _socket.socket, peer) -> None:
        protocol = self.protocol_factory()
        transport = DirectTransport(self.loop, sock, peer, protocol)
        protocol.connection_made(transport)
        if not transport.closing:
            _read_first(sock, transport, protocol)
        transport.first_pass_done()


class ThreadAcceptor:
    """A listening socket the app threads accept on (`--threads` > 1; see the module docstring).
    Created, started and closed on the loop thread; `accept` runs on the app thread whose turn it is."""

    def __init__(self, loop, sock: socket.socket, protocol_factory, threads):
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.protocol_factory = protocol_factory
        self.threads = threads
        self.family = sock.family
        self.serving = False
        # Held from accept() until the connection is registered with the worker: once close() returned, no
        # connection can be accepted unseen by the drain that follows it (graceful stop).
        self.lock = threading.Lock()

    async def start_serving(self) -> None:
        _prepare_listening(self.sock)
        self.serving = True
        self.threads.accept_on(self)

    def close(self) -> None:
        with self.lock:
            if self.serving:
                self.serving = False
                self.threads.stop_accepting_on(self)
            self.sock.close()

    def accept(self):
        """Accept one connection (on the app thread whose turn it is to wait): a callable that serves it,
        or None."""
        with self.lock:
            if not self.serving:
                return None
            try:
                fd, peer = self.sock._accept()
            except (BlockingIOError, InterruptedError):
                return None                 # another worker took it
            except OSError as exc:
                error = exc
            else:
                sock = _socket.socket(self.family, socket.SOCK_STREAM, 0, fd)
                protocol = self.protocol_factory()
                protocol.owned_by_thread = True
                transport = DirectTransport(self.loop, sock, peer, protocol)
                protocol.connection_made(transport)
                return functools.partial(_serve_on_thread, sock, transport, protocol)
        if error.errno == errno.EINVAL:         # no longer listening: the master stops the server
            with self.lock:
                if self.serving:
                    self.serving = False
                    self.threads.stop_accepting_on(self)
        elif error.errno in _RESOURCE_ERRORS:
            log.error("cannot accept connections: %s; pausing accept for %.1f s", error, ACCEPT_PAUSE)
            time.sleep(ACCEPT_PAUSE)
        else:
            log.info("accept() failed for one connection: %s", error)
        return None


def _serve_on_thread(sock: _socket.socket, transport: DirectTransport, protocol) -> None:
    """Read a connection an app thread accepted and, when the request came whole, run its app and answer."""
    try:
        if not transport.closing:
            _read_first(sock, transport, protocol)
            exchange = protocol.deferred
            if exchange is not None:
                protocol.deferred = None
                exchange.run()
    finally:
        protocol.leave_thread()         # closed here (the common end), or on to the loop thread


def _prepare_listening(sock: socket.socket) -> None:
    sock.setblocking(False)     # the workers share the socket: several may wake for one connection
    if sock.family != socket.AF_UNIX:
        # Only a connection whose first bytes arrived wakes us: the first read then finds the request.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_SECONDS)


def _read_first(sock: _socket.socket, transport: DirectTransport, protocol) -> None:
    """The first read, at once: with TCP_DEFER_ACCEPT the request is there."""
    try:
        data = sock.recv(FIRST_READ, socket.MSG_DONTWAIT)
    except BlockingIOError:
        data = None                 # nothing yet (a unix socket has no deferred accept): uvloop waits
    except OSError as exc:
        transport._broken(exc)
        data = None
    if data:
        protocol.data_received(data)
    elif data is not None and transport.state == _DIRECT and not protocol.eof_received():
        transport.close()           # the peer closed before sending anything
