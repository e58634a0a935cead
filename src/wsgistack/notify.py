"""systemd readiness (sd_notify) without a dependency: one datagram to $NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("wsgistack")


def sd_notify(*fields: str) -> None:
    """Send e.g. sd_notify("READY=1", "STATUS=serving"); a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):           # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), address)
    except OSError as exc:
        log.warning("could not notify systemd at %s: %s", address, exc)


def sd_notify_reloading(status: str) -> None:
    """RELOADING=1 with the CLOCK_MONOTONIC time (µs) the reload began, in one message as sd_notify(3) asks: the
    service manager synchronizes its reload cycles (Type=notify-reload) on that time."""
    now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    sd_notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}", f"STATUS={status}")
