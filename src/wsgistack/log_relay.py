"""The output of the master's commands (attached daemons, cron jobs) when the log is a file of ours.

They write to a pipe that the master copies into the log. A rotation (--log-maxsize, --touch-logrotate,
logrotate) then takes them to the new file with everyone else. A command that inherited the file itself
would write to the renamed file for ever, which only grows.
Lines are copied whole: the workers append to the same file, and a line must not be split by theirs.
"""

from __future__ import annotations

import os

from wsgistack.log_files import log_is_a_file

MAX_PARTIAL = 65536          # a line longer than this is copied in pieces rather than held
READS_PER_PUMP = 16          # bounded work per pass of the master's loop; the rest comes on the next pass


class LogRelay:
    def __init__(self):
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.read_fd, False)
        self.partial = b""

    def pump(self) -> None:
        """Copy into the log what the commands wrote, whole lines (a longer one in pieces)."""
        data = self.partial
        for _ in range(READS_PER_PUMP):
            try:
                chunk = os.read(self.read_fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        cut = data.rfind(b"\n") + 1
        if len(data) - cut > MAX_PARTIAL:
            cut = len(data)
        self.partial = data[cut:]
        view = memoryview(data)[:cut]
        while view:
            try:
                view = view[os.write(2, view):]
            except OSError:
                return                  # the log cannot be written: as for our own lines, nothing else to do

    def close_in_child(self) -> None:
        """A worker has no use for either end."""
        os.close(self.read_fd)
        os.close(self.write_fd)


def log_relay() -> LogRelay | None:
    """A relay when the log is a file the server rotates or reopens; else (a terminal, journald) the commands
    write to it directly."""
    return LogRelay() if log_is_a_file() else None
