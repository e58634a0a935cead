"""A process's memory, as /proc/PID/statm tells it: what --reload-on-rss, the stats and the logs show."""

from __future__ import annotations

import os

_PAGE = os.sysconf("SC_PAGE_SIZE")


def memory(pid: int | str = "self") -> tuple[int, int]:
    """(address space, resident memory) in bytes; zeros for a process gone meanwhile."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            size, resident = handle.read().split()[:2]
    except (OSError, ValueError):
        return 0, 0
    return int(size) * _PAGE, int(resident) * _PAGE
