"""What every protocol connection shares: the queue of parsed requests, answering them in order
through an Exchange (wsgi.py), coalesced writes, writes from app threads with flow control, and closing.

Protocols (http.py, uwsgi.py, fastcgi.py) subclass `Connection`: they parse bytes into requests
(`environ, is_head, http11, keep_alive, stream`) and call `_start` / append to `pending`.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import select
import socket
import struct
import termios
import threading
from collections import deque
from contextvars import copy_context
from time import monotonic

from wsgistack.body import StreamingInput
from wsgistack.wsgi import Exchange

log = logging.getLogger("wsgistack")

# Pipelined requests parsed ahead of the one being answered; past this we stop reading the socket.
MAX_PENDING = 32
# Answers to pipelined requests coalesced before they go to the transport: past this, they are written, and
# once the transport holds more than its high-water mark the next requests wait for the client to read
# (nginx answers one pipelined request at a time): a client that sends and never reads cannot fill our memory.
MAX_BATCH = 32
# Seconds a closed connection keeps draining the client's bytes before it is closed anyway.
LINGER_TICKS = 3
# Bytes an app thread may have queued for the loop to write before it waits (per connection).
THREAD_WRITE_AHEAD = 1 << 20
# SO_LINGER on, timeout 0: close() sends a reset and drops what is unsent.
_LINGER_RESET = struct.pack("ii", 1, 0)


def add_server_address(environ: dict, transport) -> None:
    """SERVER_NAME and SERVER_PORT from the listening address the connection came in on."""
    local = transport.get_extra_info("sockname")
    if isinstance(local, tuple):
        environ["SERVER_NAME"] = local[0]
        environ["SERVER_PORT"] = str(local[1])
    else:                                   # unix socket
        environ["SERVER_NAME"] = local if isinstance(local, str) and local else "localhost"
        environ["SERVER_PORT"] = "0"


class Reject(Exception):
    """A request the server answers itself, with `status`, and then closes."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def tcp_socket(transport):
    """The transport's socket if it is TCP (unix sockets have neither resets nor corking), else None."""
    sock = transport.get_extra_info("socket")
    return sock if sock is not None and sock.family != socket.AF_UNIX else None


def _queued_bytes(transport, which: int) -> int:
    """Bytes the kernel holds on this connection: not read by us yet (FIONREAD), or not taken by the peer yet
    (TIOCOUTQ, SIOCOUTQ for a socket)."""
    sock = transport.get_extra_info("socket")
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), which, b"\0\0\0\0"))[0]
    except (AttributeError, OSError, ValueError):
        return 0


def _reset(transport) -> None:
    _reset_on_close(transport)
    transport.abort()


def _reset_on_close(transport) -> None:
    """The socket's close (ours, or the kernel's at exit) sends a reset, not a FIN."""
    sock = tcp_socket(transport)
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass                        # gone already


def _close_input(body) -> None:
    try:
        body.close()
    except OSError:                     # a temp file on a failing disk: the answer was sent all the same
        log.exception("closing a request body failed")


class Connection(asyncio.Protocol):
    """Subclasses provide `error_response(status, detail) -> bytes` in their protocol's framing."""

    exchange_class = Exchange
    peer_closed = False                  # the client sent EOF: no lingering needed once we answered
    read_all = False                     # every byte the client may send was read: no lingering needed
    reset = False                        # end with a TCP reset, not a FIN (reset_after_response)
    server_address_from_socket = True    # SERVER_NAME/PORT from the socket (gateways get them from the web server)
    # A connection per request (uwsgi): one socket shared by the workers, each accepting one connection at a
    # time and answering it off accept (direct.py); else one SO_REUSEPORT socket per worker, uvloop's accept.
    direct_accept = False
    # Accepted and served by an app thread (direct.ThreadAcceptor): what an app thread would ask the loop
    # thread to do is done right there, until the connection is closed or handed to the loop (leave_thread).
    owned_by_thread = False
    deferred: Exchange | None = None     # the request the owning thread runs once parsing returned
    send_stalled = 0                     # seconds an answer waited on a client that took none of it
    unsent_before = 0                    # bytes of answers the client had not taken at the last tick
    # A draining worker says `Connection: close` with its last answer; a protocol that cannot say it
    # (FastCGI) keeps the connection while the peer uses it, and closes it once idle (tick()).
    drains_when_idle = False
    file_sender = None                   # the sendfile under way (worker.sendfile): cancel() ends it

    def __init__(self, worker):
        self.worker = worker
        self.loop = worker.loop

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.conn_environ = self.worker.connection_environ(transport, self.server_address_from_socket)
        self.pending: deque = deque()
        self.active: Exchange | None = None
        self.closed = False
        self.closing = False             # answer what was read, then close (errors, shutdown, upgrade)
        self.write_paused = False
        self.reading_paused = False
        self.out: list[bytes] = []
        self.batching = False
        self.ticks = 0
        # Where an app thread writing a stream waits for the loop thread (none while a thread owns the connection).
        self.flow = threading.Condition() if self.worker.threaded and not self.owned_by_thread else None
        self.inflight = 0
        self.worker.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.worker.connections.discard(self)
        if self.flow is not None:
            with self.flow:
                self.flow.notify_all()
        self._close_paused_stream()
        self.pending.clear()
        self.worker.connection_closed(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.send_stalled = 0
        if self.flow is not None:
            with self.flow:
                self.flow.notify_all()
        self.kick()

    def _start(self, request: tuple) -> bool:
        """Hand one request to the app; False if the app is held by a helper thread (it waits in line)."""
        if self.closed:
            return False
        # body: the request's wsgi.input when it has one: a StreamingInput (Expect: 100-continue, the app runs
        # while it arrives) or the whole body (memory or temp file, closed with the exchange)
        environ, is_head, http11, keep_alive, body = request
        stream = None
        if body is not None and type(body) is StreamingInput:
            stream, body = body, None
        worker = self.worker
        app = worker.app
        responder = None
        threaded = worker.threaded or stream is not None     # a streaming body needs its own thread
        # Front handlers, before the app: static files (answered on this thread, or on the app thread that
        # owns the connection; never handed to the pool).
        if worker.static is not None and stream is None:
            responder = worker.static.responder(environ)
            if responder is not None:
                app = responder
                threaded = self.owned_by_thread
        # --threads 1: app code runs one request at a time. A helper-thread request also waits for one that lent
        # the app to the loop while its client is slow (the helper thread is still its).
        if (not worker.threaded and responder is None
                and (worker.app_busy or (stream is not None and worker.helpers))):
            self.pending.appendleft(request)
            worker.wait_for_app(self)
            return False
        if worker.compression is not None:
            app = worker.compression.wrap(app, environ)
        # Closing or draining: the last response on this connection. (Requests read before what closes it, a
        # half-close or a request answered with an error, are answered first: the last of them says so.)
        if (self.closing and not self.pending) or (worker.stopping and not self.drains_when_idle):
            keep_alive = False
        exchange = self.active = self.exchange_class(self, environ, app, is_head, http11, keep_alive)
        if body is not None:
            exchange.body = body
        if worker.times_requests:
            exchange.started = monotonic()
        if threaded:
            exchange.threaded = True
            if stream is not None:
                exchange.body_stream = stream
                if self.flow is None and not self.owned_by_thread:
                    self.flow = threading.Condition()   # --threads 1: this exchange's thread writes through it
            if self.owned_by_thread:
                self.deferred = exchange
            else:
                worker.submit(exchange)
        else:
            # A context of its own, entered again for every later step of this answer (a paused stream resumed by
            # another callback, its close()): a generator that sets a ContextVar and resets it at its end (Flask's
            # stream_with_context) must find the same context, which the loop's callbacks do not share.
            exchange.context = copy_context()
            exchange.context.run(exchange.run)
        return True

    def _run_pending(self) -> None:
        """Start queued requests in order, one at a time per connection."""
        while self.pending and self.active is None and not self.closed and not self.write_paused:
            item = self.pending.popleft()
            if type(item) is Reject:
                self.send_error(item.status, item.detail)
                self._close()
                return
            if not self._start(item):
                return
        if self.reading_paused and len(self.pending) <= MAX_PENDING // 2 and not self.closed:
            self._read_on()

    def _read_on(self) -> None:
        """The queue has room again: read more."""
        self.reading_paused = False
        self.transport.resume_reading()

    def exchange_done(self, exchange: Exchange) -> None:
        """Called on the loop thread when a response is complete (or abandoned)."""
        self.active = None
        if exchange.body is not None:
            _close_input(exchange.body)     # memory or temp file go with the request, not with the connection
        self.ticks = 0                  # the keep-alive wait starts now, not at the request's last byte
        worker = self.worker
        worker.request_done(exchange, self.owned_by_thread)
        if exchange.threaded and not worker.threaded and not exchange.app_released:
            worker.helper_done()
        if not exchange.keep_alive or self.closed or (self.closing and not self.pending):
            self._close()
        elif self.pending and not self.batching:
            self.batching = True
            self._run_pending()
            self.batching = False
            self._flush()

    def send_error(self, status: int, detail: str) -> None:
        """An answer of ours (not the app's) to the request under way, in this protocol's framing."""
        self.send(self.error_response(status, detail))

    def refuse(self, exchange: Exchange, status: int, detail: str) -> None:
        """This exchange will not run: answer it so, and close (what is pipelined after it is dropped)."""
        if exchange.body is not None:
            _close_input(exchange.body)     # a spooled body's temporary file goes now
        if not self.closed:
            self.send_error(status, detail)
            self.pending.clear()
            self.active = None
            self._close()

    def end_now(self, reset: bool) -> None:
        """End the connection at once (--harakiri: its thread is stuck in the app), nothing more sent: with a reset for
        an answer cut short, a close for one answered whole (a reset could destroy it unread)."""
        self.closed = self.closing = True
        if reset:
            _reset(self.transport)
        else:
            self.transport.close()

    def end_at_exit(self) -> None:
        """The worker exits with this connection's answer unfinished: the kernel's close sends a reset (a FIN would
        make a body delimited by the close look whole); nothing more is sent, a paused stream is closed."""
        _reset_on_close(self.transport)
        self.closed = True
        self._close_paused_stream()

    def _close_paused_stream(self) -> None:
        """A paused inline stream whose connection is lost: its close() must still run (a thread's runs there), once
        no helper thread runs app code (--threads 1); then it is counted and logged, as any answer cut short."""
        active = self.active
        if active is None or active.threaded or active.iterator is None or active.finished:
            return
        if self.worker.app_busy:
            self.worker.wait_for_app(self)          # kick() comes back here
        else:
            active.abandon()
            self.exchange_done(active)

    def kick(self) -> None:
        """Continue after a wait (slow client drained, app free again): a paused stream or the queue; or, for a
        connection lost meanwhile, the close() of its paused stream."""
        if self.closed:
            self._close_paused_stream()
            return
        active = self.active
        if active is not None:
            if (not active.threaded and active.iterator is not None and not active.finished
                    and not self.write_paused):
                if self.worker.app_busy:
                    self.worker.wait_for_app(self)
                else:
                    active.context.run(active.pump)
        elif self.pending:
            self.batching = True
            self._run_pending()
            self.batching = False
            self._flush()

    def abort_after_response(self) -> None:
        """The answer under way can only end with the connection: pipelined requests after it are dropped unanswered
        (a client retries those), as an answer written after a cut one would be read as part of it."""
        self.closing = True
        self.pending.clear()

    def reset_after_response(self) -> None:
        """A body that ends with the connection was cut short: close with a TCP reset, as a FIN would tell the
        peer (nginx, a cache) that the body is whole."""
        self.abort_after_response()
        self.reset = True

    def _close(self) -> None:
        """Lingering close, as nginx: send FIN after what is buffered, but keep reading (and dropping)
        until the client closes too, or LINGER_TICKS pass. Closing a socket with unread client bytes
        in it makes the kernel send a reset, which can destroy the response we just sent."""
        self._flush()
        self.pending.clear()
        if not self.closed:
            self.closed = self.closing = True   # from now on nothing is read, written or started
            self.ticks = 0
            if self.reset:
                _reset(self.transport)
            elif self.transport.can_write_eof() and not (self.peer_closed or self.read_all):
                self.transport.write_eof()
            else:
                self.transport.close()      # nothing more can come from the client: no reset to fear

    def _close_idle(self) -> None:
        """An idle connection (every request answered, no byte of a next one read) closes at once, as nginx's at
        its keep-alive timeout or its shutdown: with nothing of the client's unread no reset can destroy an
        answer, and a lingering close would only hold a stopping worker for LINGER_TICKS more. Not when a request
        waits unread: inline app code held the loop while it came, and the sweep runs before the loop reads."""
        if self.closed or _queued_bytes(self.transport, termios.FIONREAD):
            return
        if self.transport.get_write_buffer_size() or _queued_bytes(self.transport, termios.TIOCOUTQ):
            # The last answer is still on its way: a byte the client sends now would get a reset, which drops it
            self._close()
            return
        self.closed = self.closing = True
        self.ticks = 0
        self.transport.close()

    def send_stall_tick(self) -> bool:
        """--send-timeout, from tick(): True when the connection was just aborted because the client took nothing
        of an answer for that long (nginx's send_timeout: between two successive writes, so a slow client that
        keeps reading is never cut). Until then an app thread streaming to it waits, so a client that stops
        reading must not hold one for ever; nor may it hold a closed connection's answer and descriptor."""
        if self.file_sender is None:        # (a sendfile's progress resets the count itself)
            unsent = self.transport.get_write_buffer_size()
            progress = unsent < self.unsent_before
            self.unsent_before = unsent
            if not unsent or progress:
                self.send_stalled = 0
                return False
        self.send_stalled += 1
        # `>`: ticks are whole wall-clock seconds (the first may come at once), so this is (T, T + 1] seconds.
        if self.send_stalled <= self.worker.config.send_timeout:
            return False
        log.info("%s took nothing of an answer for over %d s (--send-timeout): connection closed",
                 self.conn_environ.get("REMOTE_ADDR", "the client"), self.worker.config.send_timeout)
        if self.file_sender is not None:
            self.file_sender.cancel()
        else:
            self.abort_after_response()     # nothing pipelined starts before uvloop reports the loss
            self.transport.abort()
        return True

    def linger_tick(self) -> None:
        """Called by tick() on a closed connection: give up on a client that does not close."""
        if self.ticks >= LINGER_TICKS and not self.transport.is_closing():
            self.transport.close()

    # --- writing (loop thread) ---
    def send(self, data: bytes) -> None:
        """Write; while answering a batch of pipelined requests, responses are coalesced into one write."""
        if self.batching:
            out = self.out
            out.append(data)
            if len(out) >= MAX_BATCH:
                self._flush()
        elif not self.closed:
            self.transport.write(data)

    def send_now(self, data: bytes) -> None:
        """Write a streamed chunk without waiting for the end of the batch."""
        if self.out:
            self._flush()
        if not self.closed:
            self.transport.write(data)

    def send_waiting(self, data: bytes) -> None:
        """Inline write() (PEP 3333's legacy callable): the app holds the loop, which cannot send what the socket
        does not take at once until the app returns, so a client reading slowly (or not at all) had the whole
        answer pile up in memory. It is sent here, waiting for the socket as a blocking server does (uWSGI,
        gunicorn's sync worker), at most --send-timeout without progress (then the connection is aborted).
        The answers batched before it (pipelined requests) leave the same way, first. Bytes already waiting in the
        transport must leave first too: then this one waits there (not bounded: the case of a socket that was
        full before this answer began)."""
        if self.closed:
            return
        transport = self.transport
        sock = None if transport.get_write_buffer_size() else transport.get_extra_info("socket")
        if sock is None:
            self.send_now(data)
            return
        if self.out:
            data = b"".join([*self.out, data])
            self.out.clear()
        fd, view, poller = sock.fileno(), memoryview(data), None
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                pass
            except OSError:
                transport.abort()           # the client is gone (reset, broken pipe)
                return
            if not view:
                break
            if poller is None:
                poller = select.poll()
                poller.register(fd, select.POLLOUT)
            if not poller.poll(self.worker.config.send_timeout * 1000):
                log.info("%s took nothing of an answer for %d s (--send-timeout): connection closed",
                         self.conn_environ.get("REMOTE_ADDR", "the client"), self.worker.config.send_timeout)
                transport.abort()
                return

    def _flush(self) -> None:
        if self.out:
            data = b"".join(self.out) if len(self.out) > 1 else self.out[0]
            self.out.clear()
            if not self.closed:
                self.transport.write(data)

    def send_file(self, head: bytes, fd: int, offset: int, count: int, on_done) -> None:
        self.send_now(head)
        if count and not self.closed:
            self.worker.sendfile(self, fd, offset, count, on_done)
        else:
            on_done(count)              # nothing to send, or the client is gone: none of it was sent

    # --- writing from an app thread ---
    def from_thread(self, function, *args) -> None:
        """Have the loop thread run a call an app thread makes (the owning thread runs it itself)."""
        if self.owned_by_thread:
            function(*args)
        else:
            self.loop.call_soon_threadsafe(function, *args)

    def leave_thread(self) -> None:
        """The owning thread lets go: the connection is closed already (the common end), or the loop thread
        takes it over (a request still arriving, a stream paced by the client, sendfile), as for any request
        an app thread runs; the thread may go on running the app."""
        if self.owned_by_thread:
            if self.flow is None and not self.closed:
                self.flow = threading.Condition()
            self.owned_by_thread = False
            self.transport.thread_pass_done()

    def from_thread_flow(self, data: bytes) -> None:
        """Queue a chunk from an app thread; wait while the client is slow (bounded memory per connection)."""
        if self.owned_by_thread:
            # The owning thread writes itself while the socket takes each chunk whole; once it does not (or the
            # client is gone), the loop takes the connection over and paces (or ends) the rest.
            self.send_now(data)
            if self.transport.get_write_buffer_size() or self.transport.is_closing():
                self.leave_thread()
            if self.closed:
                raise ConnectionResetError("client went away")
            return
        flow = self.flow
        lent = False
        with flow:
            while (self.write_paused or self.inflight > THREAD_WRITE_AHEAD) and not self.closed:
                if not lent and self._holds_the_app():
                    # --threads 1: the client reads slowly (or not at all); the worker's other requests go on
                    lent = True
                    self.worker.lend_app()
                flow.wait(1.0)
            closed = self.closed
            if not closed:
                self.inflight += len(data)
        if lent:
            self.worker.take_app_back()     # outside the lock: the loop may need it to write meanwhile
        if closed:
            raise ConnectionResetError("client went away")
        self.loop.call_soon_threadsafe(self._write_from_thread, data)

    def _holds_the_app(self) -> bool:
        """On the helper thread of --threads 1 (an Expect upload's request), which holds the app while it runs."""
        active = self.active
        return not self.worker.threaded and active is not None and not active.app_released

    def _write_from_thread(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)
        with self.flow:
            self.inflight -= len(data)
            self.flow.notify_all()

    # --- timers (one sweep a second per worker, no timer per request) ---
