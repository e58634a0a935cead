"""How long a worker's threads spend in app code: what --harakiri watches and --cheaper's busyness measures.

Only an Exchange's run() and pump() count (the app's call and its iteration): an inline stream paused for a
slow client, or a connection waiting for its next request, is not app time. The clock exists only when one
of those options is set; the Exchange class is then replaced by a timed subclass (zero cost otherwise).
"""

from __future__ import annotations

import threading
import time


class AppClock:
    def __init__(self):
        self.running: dict[int, tuple[float, object]] = {}    # thread ident -> (since, exchange)
        self.paused: dict[int, tuple[float, object]] = {}     # thread ident -> (app seconds so far, exchange)
        self.finished = 0.0          # seconds of app calls that returned

    def begin(self, exchange) -> bool:
        """Start the clock for this thread; False if it already runs (pump() inside run())."""
        ident = threading.get_ident()
        if ident in self.running:
            return False
        self.running[ident] = (time.monotonic(), exchange)
        return True

    def pause(self) -> None:
        """This thread's request waits on its client with the app lent to the loop (--threads 1): not app time
        until resume(). Its earlier app time still counts, for --harakiri too."""
        ident = threading.get_ident()
        entry = self.running.pop(ident, None)
        if entry is not None:
            elapsed = time.monotonic() - entry[0]
            self.finished += elapsed
            self.paused[ident] = (elapsed, entry[1])

    def resume(self) -> None:
        paused = self.paused.pop(threading.get_ident(), None)
        if paused is not None:
            elapsed, exchange = paused
            self.finished -= elapsed             # counted again in the running entry, as if never paused
            self.running[threading.get_ident()] = (time.monotonic() - elapsed, exchange)

    def end(self) -> None:
        entry = self.running.pop(threading.get_ident(), None)
        if entry is not None:
            self.finished += time.monotonic() - entry[0]

    def busy_seconds(self) -> float:
        """App time so far, the calls still running included (a request longer than a report is busy time)."""
        now = time.monotonic()
        return self.finished + sum(now - since for since, _ in list(self.running.values()))


def _timed(method):
    """Wrap an Exchange method so the worker's clock times it; a nested call (pump() in run()) is not re-timed."""
    def timed(self) -> None:
        clock = self.conn.worker.app_clock
        outermost = clock.begin(self)
        try:
            method(self)
        finally:
            if outermost:
                clock.end()
    return timed


class TimedMixin:
    """Marks an Exchange class whose run() and pump() are timed."""


def timed(exchange_class: type) -> type:
    """The exchange class with run() and pump() timed (once: an already timed class is returned as it is)."""
    if issubclass(exchange_class, TimedMixin):
        return exchange_class
    return type(f"Timed{exchange_class.__name__}", (TimedMixin, exchange_class),
                {"run": _timed(exchange_class.run), "pump": _timed(exchange_class.pump)})
