"""--harakiri: a request running longer than the limit ends its worker, visibly.

A watchdog thread in the worker sees the overdue request (timed by app_clock.py), logs it with the
Python stack of the thread running it and answers 504 if nothing was sent yet. A stuck thread cannot be
stopped, so the worker goes: at once when the stuck thread is the loop's (nothing else can run), else it
retires, as a recycled worker does: the master starts its successor at once, and the requests its other
threads are running finish first (each under the same limit) rather than die with it. Only time spent in
app code counts: an inline stream paused for a slow client is not the app's fault.

The watchdog needs the GIL, which a C call or a runaway regex may hold for ever: it also tells the master it
is alive (HEARTBEAT), and the master ends a worker it has not heard from for longer than the limit (master.py).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
import traceback

from wsgistack.app_clock import AppClock

log = logging.getLogger("wsgistack")


HEARTBEAT = "alive"


class Harakiri:
    def __init__(self, limit: float, worker, clock: AppClock):
        self.limit = limit
        self.worker = worker
        self.clock = clock
        self.answered: dict[int, object] = {}   # the exchanges answered (by id: an exchange may define __eq__)
        self.cut: set[int] = set()              # those of them whose head was sent: cut short, not answered 504
        self.loop_thread = threading.get_ident()
        # The first heartbeat now, before the worker says it is ready: a request that takes the GIL at once must
        # still find the master counting.
        worker.report(HEARTBEAT)
        threading.Thread(target=self._watch, name="harakiri", daemon=True).start()

    def _watch(self) -> None:
        while True:
            time.sleep(min(0.5, self.limit / 4))
            self.worker.report(HEARTBEAT)
            now = time.monotonic()
            overdue = [(ident, exchange, now - started)
                       for ident, (started, exchange) in list(self.clock.running.items())
                       if now - started > self.limit and id(exchange) not in self.answered]
            if overdue:
                self._fire(overdue)

    def _fire(self, overdue: list) -> None:
        """Log and answer every overdue request (each gets its 504, not only the first), then end the worker."""
        self._answer(overdue)
        for handler in log.handlers:
            handler.flush()
        if not self.worker.threaded or any(ident == self.loop_thread for ident, _, _ in overdue):
            os.kill(os.getpid(), signal.SIGKILL)        # the loop or the only app thread is stuck: nothing else
        exchanges = [exchange for _, exchange, _ in overdue]
        self.worker.loop.call_soon_threadsafe(self.worker.abandon, exchanges,
                                              f"a request ran past --harakiri {_seconds(self.limit)}")

    def ended(self, exchange) -> bool:
        return id(exchange) in self.answered

    def _answer(self, overdue: list) -> None:
        frames = sys._current_frames()
        for ident, exchange, duration in overdue:
            environ = exchange.environ
            frame = frames.get(ident)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(stack not available)\n"
            log.error("HARAKIRI: %s %s ran %.1f s (limit --harakiri %s) in worker %d (pid %d); "
                      "the stuck thread's stack:\n%s", environ.get("REQUEST_METHOD"), environ.get("REQUEST_URI"),
                      duration, _seconds(self.limit), self.worker.number, os.getpid(), stack.rstrip())
            self.answered[id(exchange)] = exchange
            if exchange.head_sent:
                self.cut.add(id(exchange))
            _end(exchange.conn, None if exchange.head_sent else
                 exchange.conn.error_response(504, "the request took too long (harakiri)"))


def _end(conn, answer: bytes | None) -> None:
    """Send the 504 and end the connection for the client now: whatever its stuck thread does later fails.
    Best effort, from this thread: the loop thread may be the one that is stuck. An answer cut short (its
    head was sent) ends with a reset when the worker exits: a FIN would make a close-delimited body look whole."""
    try:
        fd = os.dup(conn.transport.get_extra_info("socket").fileno())
    except (AttributeError, OSError):
        return
    sock = socket.socket(fileno=fd)
    try:
        if answer is None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            os.write(fd, answer)        # the socket is the loop's, non-blocking; a short answer fits its buffer
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)
