"""A worker's app threads (`--threads N`): a fixed pool, bounded, no Future per request.

`AppThreads` run jobs from the event loop: requests the loop read (HTTP, FastCGI). A worker with a uwsgi
socket has `AcceptingAppThreads`, which also accept, read and answer new uwsgi connections by themselves
(direct.ThreadAcceptor): nginx sends a uwsgi request whole, and a request that never leaves its thread
does not cross the GIL from the loop thread to an app thread and back (behind nginx, 2 processes x 4
threads, hello world: 9k req/s handed over, 15k served by the thread; uWSGI 17k).
"""

from __future__ import annotations

import logging
import os
import queue
import select
import threading
from collections import deque

log = logging.getLogger("wsgistack")


class AppThreads:
    """App threads fed by a queue (jobs only)."""

    def __init__(self, count: int, name: str):
        self.jobs = queue.SimpleQueue()
        self._start(count, name)

    def _start(self, count: int, name: str) -> None:
        for index in range(count):
            threading.Thread(target=self._serve, name=f"{name}-{index + 1}", daemon=True).start()

    def submit(self, job) -> None:
        """Run `job()` on an app thread (from the loop thread)."""
        self.jobs.put(job)

    def take_queued(self) -> list:
        """The jobs no thread has begun, taken from the queue (from the loop thread): none of them runs now."""
        taken = []
        while True:
            try:
                taken.append(self.jobs.get_nowait())
            except queue.Empty:
                return taken

    def _serve(self) -> None:
        while True:                      # daemon threads: they end with the process
            self.jobs.get()()


class AcceptingAppThreads(AppThreads):
    """App threads taking turns waiting for work: a job from the loop, or a connection on a uwsgi socket.

    One thread of the worker waits at a time (leader/followers, as uWSGI's threads take turns in accept()),
    the others wait for their turn on a lock: a new connection wakes one thread, and none in a worker whose
    waiting thread is still busy taking its turn (it needs the GIL another thread holds), which leaves the
    connection to a worker whose threads are idle. (With every idle thread in epoll, the first worker's
    threads took nearly all connections, fighting over its GIL while the other worker idled.) The listening
    socket is in each worker's epoll with EPOLLEXCLUSIVE: a connection wakes one worker, not all.
    """

    def __init__(self, count: int, name: str):
        self.jobs: deque = deque()
        # A semaphore: each job adds one, the thread taking a job reads one.
        self.job_ready = os.eventfd(0, os.EFD_SEMAPHORE | os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.acceptors: dict[int, object] = {}      # listening fd -> its ThreadAcceptor
        self.poller = select.epoll()
        self.poller.register(self.job_ready, select.EPOLLIN)
        self.turn = threading.Lock()                # held by the one thread waiting for work
        self._start(count, name)

    def submit(self, job) -> None:
        self.jobs.append(job)
        os.eventfd_write(self.job_ready, 1)

    def accept_on(self, acceptor) -> None:
        """Accept on this listening socket from now on (the waiting thread sees it at once: epoll allows it)."""
        self.acceptors[acceptor.fd] = acceptor
        self.poller.register(acceptor.fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)

    def take_queued(self) -> list:
        # Each job is one count of the semaphore: whoever reads a count (a thread, or this) takes one job.
        taken = []
        while True:
            try:
                os.eventfd_read(self.job_ready)
            except BlockingIOError:
                return taken
            taken.append(self.jobs.popleft())

    def stop_accepting_on(self, acceptor) -> None:
        self.acceptors.pop(acceptor.fd, None)
        try:
            self.poller.unregister(acceptor.fd)
        except OSError:
            pass

    def _serve(self) -> None:
        while True:
            try:
                with self.turn:
                    work = self._wait_for_work()
                work()
            except Exception:
                log.exception("unexpected error on an app thread")

    def _wait_for_work(self):
        job_ready = self.job_ready
        while True:
            for fd, _events in self.poller.poll():
                if fd == job_ready:
                    try:
                        os.eventfd_read(job_ready)
                    except BlockingIOError:
                        continue            # take_queued() took the job
                    return self.jobs.popleft()
                acceptor = self.acceptors.get(fd)
                if acceptor is not None:        # else: no longer accepted on (graceful stop)
                    work = acceptor.accept()
                    if work is not None:
                        return work
