"""With app threads, an HTTP worker takes a new connection only while one of its threads is free.

uvloop's server accepts every connection the kernel queued, at once: with its threads busy, a worker would hold
requests it cannot start, and a reload or recycle that stops it would cut them at --reload-mercy, while its
successor, idle, could have answered them. Left in the listening socket's queue instead, they go to whichever
worker of the slot accepts next: this one once a thread is free, or its successor (uWSGI's threads accept only
when free for the same reason). Connections already taken (keep-alive) go on being read and queued as before.
Accepting here costs a task per connection (uvloop's connect_accepted_socket): nothing for kept-alive clients.
"""

from __future__ import annotations

import errno
import logging
import socket

log = logging.getLogger("wsgistack")

ACCEPT_PAUSE = 0.5          # seconds without accepting after the process ran out of file descriptors
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class GatedAcceptor:
    """A listening socket accepted from while `threads.free()`; `threads` calls `wake()` (on the loop thread)
    when a thread frees up after saying none was free."""

    def __init__(self, loop, sock: socket.socket, protocol_factory, threads):
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        self.protocol_factory = protocol_factory
        self.threads = threads
        self.serving = False
        self.watching = False           # the socket is in the loop's epoll

    async def start_serving(self) -> None:
        self.sock.setblocking(False)
        self.serving = True
        self.threads.gates.append(self)
        self._watch()

    def close(self) -> None:
        """Stop accepting (a graceful stop: the master and the successor keep the socket open)."""
        self.serving = False
        self._unwatch()
        if self in self.threads.gates:
            self.threads.gates.remove(self)
        self.sock.close()

    def wake(self) -> None:
        if self.serving:
            self._watch()

    def _watch(self) -> None:
        if not self.watching:
            self.watching = True
            self.loop.add_reader(self.fd, self._accept)

    def _unwatch(self) -> None:
        if self.watching:
            self.watching = False
            self.loop.remove_reader(self.fd)

    def _accept(self) -> None:
        if not self.threads.free():
            self._unwatch()             # waits in the kernel's queue: wake() comes when a thread is free
            if self.threads.free():     # one freed up meanwhile, and saw this gate still watching
                self._watch()
            return
        # One connection per readiness: its request is queued for a thread before the next is taken.
        try:
            fd, _ = self.sock._accept()     # the C call: socket.socket's accept() costs as much again
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno == errno.EINVAL:               # no longer listening: the master stops the server
                self.serving = False
                self._unwatch()
            elif exc.errno in _RESOURCE_ERRORS:
                log.error("cannot accept connections: %s; pausing accept for %.1f s", exc, ACCEPT_PAUSE)
                self._unwatch()
                self.loop.call_later(ACCEPT_PAUSE, self.wake)
            else:
                log.info("accept() failed for one connection: %s", exc)
            return
        conn = socket.socket(self.family, socket.SOCK_STREAM, 0, fd)
        self.loop.create_task(self.loop.connect_accepted_socket(self.protocol_factory, conn)).add_done_callback(
            _report_failure)


def _report_failure(task) -> None:
    if not task.cancelled() and task.exception() is not None:   # the connection is lost, the server goes on
        log.warning("could not take a connection: %s", task.exception())
