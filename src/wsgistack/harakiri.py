"""--harakiri: a request running longer than the limit ends its worker, visibly.

A watchdog thread in the worker sees the overdue request (timed by app_clock.py), logs it with the
Python stack of the thread running it, answers 504 if nothing was sent yet, and kills the worker; the
master logs the death and starts a replacement while the other workers keep serving. Only time spent
in app code counts: an inline stream paused for a slow client is not the app's fault.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback

from wsgistack.app_clock import AppClock

log = logging.getLogger("wsgistack")


class Harakiri:
    def __init__(self, limit: float, worker_number: int, clock: AppClock):
        self.limit = limit
        self.worker_number = worker_number
        self.clock = clock
        threading.Thread(target=self._watch, name="harakiri", daemon=True).start()

    def _watch(self) -> None:
        while True:
            time.sleep(min(0.5, self.limit / 4))
            now = time.monotonic()
            overdue = [(ident, exchange, now - started)
                       for ident, (started, exchange) in list(self.clock.running.items()) if now - started > self.limit]
            if overdue:
                self._fire(overdue)

    def _fire(self, overdue: list) -> None:
        """Log and answer every overdue request (each gets its 504, not only the first), then end the worker."""
        frames = sys._current_frames()
        for ident, exchange, duration in overdue:
            environ = exchange.environ
            frame = frames.get(ident)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(stack not available)\n"
            log.error("HARAKIRI: %s %s ran %.1f s (limit --harakiri %s) in worker %d (pid %d); "
                      "the stuck thread's stack:\n%s", environ.get("REQUEST_METHOD"), environ.get("REQUEST_URI"),
                      duration, _seconds(self.limit), self.worker_number, os.getpid(), stack.rstrip())
            if not exchange.head_sent:
                _answer_504(exchange.conn)
        for handler in log.handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _answer_504(conn) -> None:
    """Best effort, from this thread: the loop thread may be the one that is stuck."""
    try:
        fd = os.dup(conn.transport.get_extra_info("socket").fileno())
    except (AttributeError, OSError):
        return
    try:
        os.write(fd, conn.error_response(504, "the request took too long (harakiri)"))
    except OSError:
        pass
    finally:
        os.close(fd)


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)
