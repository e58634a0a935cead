"""The output of the master's commands (attached daemons, cron jobs) when the log is a file of ours.

They write to a pipe that the master copies into the log. A rotation (--log-maxsize, --touch-logrotate,
logrotate) then takes them to the new file with everyone else. A command that inherited the file itself
would write to the renamed file for ever, which only grows.
Lines are copied whole: the workers append to the same file, and a line must not be split by theirs. A
thread of its own copies them, so that a master busy elsewhere (a pre-app hook: a migration) never leaves a
daemon blocked on a full pipe; a line still unfinished after a second is written as it is.
"""

from __future__ import annotations

import os
import select
import threading
import time

from wsgistack.log_files import log_is_a_file

MAX_PARTIAL = 65536          # a line longer than this is copied in pieces rather than held
PARTIAL_WAIT = 1.0           # seconds an unfinished line waits for its end before it is written as it is


class LogRelay:
    def __init__(self):
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.read_fd, False)
        self.partial = b""
        self.partial_since = 0.0
        self.lock = threading.Lock()        # the thread's copying, and finish()'s
        threading.Thread(target=self._copy_for_ever, name="log-relay", daemon=True).start()

    def _copy_for_ever(self) -> None:
        while True:
            try:
                select.select([self.read_fd], [], [], PARTIAL_WAIT)
            except (OSError, ValueError):
                return                      # closed (a worker's copy of the master, or the end)
            with self.lock:
                self._copy(final=False)

    def _copy(self, final: bool) -> None:
        data = self.partial
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            data += chunk
        cut = data.rfind(b"\n") + 1
        stale = data and self.partial and time.monotonic() - self.partial_since > PARTIAL_WAIT
        if final or stale or len(data) - cut > MAX_PARTIAL:
            cut = len(data)
            if data and not data.endswith(b"\n"):
                data += b"\n"
                cut += 1
        if data[cut:] and not self.partial:
            self.partial_since = time.monotonic()
        self.partial = data[cut:]
        _write_all(memoryview(data)[:cut])

    def finish(self) -> None:
        """The commands are gone: their last words, an unfinished line included."""
        with self.lock:
            self._copy(final=True)

    def close_in_child(self) -> None:
        """A worker has no use for either end."""
        os.close(self.read_fd)
        os.close(self.write_fd)


def _write_all(view: memoryview) -> None:
    while view:
        try:
            view = view[os.write(2, view):]
        except OSError:
            return                  # the log cannot be written: as for our own lines, nothing else to do


def log_relay() -> LogRelay | None:
    """A relay when the log is a file the server rotates or reopens; else (a terminal, journald) the commands
    write to it directly."""
    return LogRelay() if log_is_a_file() else None
