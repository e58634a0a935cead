"""The master: binds the sockets, forks and supervises workers, and turns signals into actions.

Signal handlers only enqueue (gunicorn's arbiter style); the main loop dispatches each one to
a `handle_<name>` method, so what every signal does is read in one place. The master never
imports the app: workers do, after fork, so a reload always runs freshly imported code.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass

from wsgistack import __version__
from wsgistack.addresses import Address
from wsgistack.config import Config
from wsgistack.worker import EXIT_BOOT_FAILED, worker_main

log = logging.getLogger("wsgistack")

HANDLED_SIGNALS = ("SIGCHLD", "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP")
FAST_STOP_GRACE = 5.0        # seconds workers get to exit on SIGINT/SIGQUIT before SIGKILL
GRACEFUL_STOP_MERCY = 30.0   # seconds in-flight requests get on SIGTERM (uWSGI's reload-mercy default)


@dataclass
class WorkerProcess:
    pid: int
    number: int
    generation: int
    ready: bool = False
    error: str | None = None
    stopping: bool = False


class Master:
    def __init__(self, config: Config, listeners: list[tuple[socket.socket, Address]]):
        self.config = config
        self.listeners = listeners
        self.workers: dict[int, WorkerProcess] = {}
        self.signals: list[int] = []
        self.stopping = False
        self.exit_code = 0
        self.booted = False
        self.generation = 1
        self.replaced: list[WorkerProcess] = []   # old workers that stop once the new generation is ready

    # --- main loop ---
    def run(self) -> int:
        self.pid = os.getpid()
        try:
            from setproctitle import setproctitle
            setproctitle("wsgistack master")
        except ImportError:
            pass
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.status_r, self.status_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.status_r, False)
        for name in HANDLED_SIGNALS:
            signal.signal(getattr(signal, name), self._enqueue)
        self._status_buffer = b""
        if not self._boot_first_worker():
            return self.exit_code
        for number in range(2, self.config.processes + 1):
            self.spawn(number)
        self.booted = True
        while self.workers or not self.stopping:
            self._wait(1.0)
            self._dispatch_signals()
            self._read_status()
            self._finish_reload()
            if self.stopping and time.monotonic() > self.kill_deadline:
                self._kill_all(signal.SIGKILL)
        log.info("master %d exiting with status %d", self.pid, self.exit_code)
        return self.exit_code

    def _boot_first_worker(self) -> bool:
        """Worker 1 proves the app loads; only then do the others start (no respawn storm on a broken app)."""
        worker = self.spawn(1)
        while not worker.ready:
            self._wait(0.5)
            self._read_status()
            self._dispatch_signals()
            if worker.pid not in self.workers or self.stopping:
                if self.exit_code == 0 and not self.stopping:
                    self.exit_code = 1
                self._kill_all(signal.SIGKILL)
                self._reap_all_blocking()
                return False
        addresses = ", ".join(f"{a.protocol} on {a.text}" for _, a in self.listeners)
        log.info("wsgistack %s: master %d serving %s with %d processes x %d threads", __version__, self.pid,
                 addresses, self.config.processes, self.config.threads)
        return True

    def _wait(self, timeout: float) -> None:
        try:
            readable, _, _ = select.select([self.wake_r, self.status_r], [], [], timeout)
        except InterruptedError:
            return
        if self.wake_r in readable:
            try:
                while os.read(self.wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def _enqueue(self, signum, frame) -> None:
        self.signals.append(signum)
        try:
            os.write(self.wake_w, b".")
        except BlockingIOError:
            pass

    def _dispatch_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            name = signal.Signals(signum).name[3:].lower()
            getattr(self, f"handle_{name}")()

    # --- workers ---
    def spawn(self, number: int) -> WorkerProcess:
        pid = os.fork()
        if pid == 0:
            self._become_worker(number)
        worker = WorkerProcess(pid, number, self.generation)
        self.workers[pid] = worker
        return worker

    def _become_worker(self, number: int) -> None:
        code = 1
        try:
            for name in HANDLED_SIGNALS:
                signal.signal(getattr(signal, name), signal.SIG_DFL)
            os.close(self.wake_r)
            os.close(self.wake_w)
            os.close(self.status_r)
            code = worker_main(self.config, self.listeners, number, self.status_w, self.pid)
        finally:
            os._exit(code)

    def _read_status(self) -> None:
        try:
            while chunk := os.read(self.status_r, 65536):
                self._status_buffer += chunk
        except BlockingIOError:
            pass
        *lines, self._status_buffer = self._status_buffer.split(b"\n")
        for line in lines:
            pid_text, _, message = line.decode("utf-8", "replace").partition(" ")
            worker = self.workers.get(int(pid_text)) if pid_text.isdigit() else None
            if worker is None:
                continue
            if message == "ready":
                worker.ready = True
            elif message.startswith("error "):
                worker.error = message[len("error "):]

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is not None:
                self._worker_exited(worker, status)

    def _worker_exited(self, worker: WorkerProcess, status: int) -> None:
        self._read_status()      # a boot error may still be in the pipe
        if os.WIFSIGNALED(status):
            how = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        else:
            how = f"exited with status {os.WEXITSTATUS(status)}"
        if worker.stopping or self.stopping:
            log.info("worker %d (pid %d) %s", worker.number, worker.pid, how)
            return
        if not worker.ready or (os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_BOOT_FAILED):
            message = worker.error or f"worker {worker.number} could not start ({how})"
            if self.replaced:
                self._abandon_reload(message)
                return
            print(f"wsgistack: error: {message}", file=sys.stderr, flush=True)
            if self.booted:
                log.error("a replacement worker failed to start; stopping instead of respawning in a loop")
            self.exit_code = 1
            self._begin_stop(signal.SIGTERM, GRACEFUL_STOP_MERCY)
            return
        log.error("worker %d (pid %d) %s; starting a new one", worker.number, worker.pid, how)
        self.spawn(worker.number)

    def _kill_all(self, sig: int) -> None:
        for worker in list(self.workers.values()):
            try:
                os.kill(worker.pid, sig)
            except ProcessLookupError:
                pass

    def _reap_all_blocking(self) -> None:
        for pid in list(self.workers):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.workers.pop(pid, None)

    def _begin_stop(self, worker_signal: int, grace: float) -> None:
        if not self.stopping:
            self.stopping = True
            self.kill_deadline = time.monotonic() + grace
            for worker in self.workers.values():
                worker.stopping = True
        self._kill_all(worker_signal)

    # --- signal handlers: one method per signal ---
    def handle_chld(self) -> None:
        self._reap()

    def handle_term(self) -> None:
        log.info("SIGTERM: graceful stop (in-flight requests finish, up to %.0f s)", GRACEFUL_STOP_MERCY)
        self._begin_stop(signal.SIGTERM, GRACEFUL_STOP_MERCY)

    def handle_int(self) -> None:
        log.info("SIGINT: fast stop")
        self._begin_stop(signal.SIGINT, FAST_STOP_GRACE)

    def handle_quit(self) -> None:
        log.info("SIGQUIT: fast stop")
        self._begin_stop(signal.SIGQUIT, FAST_STOP_GRACE)

    def handle_hup(self) -> None:
        """Graceful reload: a new generation with freshly imported code; the old one stops once it is ready.

        The listening sockets never close, so a connection arriving meanwhile waits in the backlog.
        """
        if self.stopping or self.replaced:
            return
        log.info("SIGHUP: starting a new generation of workers")
        self.replaced = [w for w in self.workers.values() if not w.stopping]
        self.generation += 1
        for worker in self.replaced:
            self.spawn(worker.number)

    def _finish_reload(self) -> None:
        new = [w for w in self.workers.values() if w.generation == self.generation]
        if not self.replaced or not all(w.ready for w in new):
            return
        for worker in self.replaced:
            worker.stopping = True
            try:
                os.kill(worker.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        log.info("reload complete: generation %d serving; %d old workers finishing", self.generation,
                 len(self.replaced))
        self.replaced = []

    def _abandon_reload(self, message: str) -> None:
        """The new code does not start: keep serving with the old workers rather than going down."""
        log.error("reload failed, still serving the previous generation: %s", message)
        for worker in self.workers.values():
            if worker.generation == self.generation:
                worker.stopping = True
                try:
                    os.kill(worker.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.generation -= 1
        self.replaced = []
