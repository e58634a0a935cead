"""The master: forks and supervises workers, and turns signals into actions.

Signal handlers only enqueue (gunicorn's arbiter style); the main loop dispatches each one to
a `handle_<name>` method, so what every signal does is read in one place. The master never
imports the app: workers do, after fork, so a reload always runs freshly imported code. The
listening sockets (one per worker slot, see addresses.py) stay open for the master's whole life,
so no connection is refused during a reload or a recycle: it waits in its slot's backlog for the
successor. A slot given up for good is first steered clear of new connections (reuseport.py) and
closed only once its worker accepted what was queued in it.
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
from email.utils import formatdate
from typing import Callable

from wsgistack import __version__, stats
from wsgistack.addresses import Address, bind_sibling, remove_socket_file
from wsgistack.cheaper import Cheaper, WorkerLoad
from wsgistack.config import Config, ConfigError
from wsgistack.cron import Cron
from wsgistack.daemon import READY, report
from wsgistack.daemons import Daemons
from wsgistack.hooks import run_hooks
from wsgistack.log_files import log_size, reopen_log_if_moved, rotate_log
from wsgistack.log_relay import log_relay
from wsgistack.memory import memory
from wsgistack.notify import sd_notify, sd_notify_reloading
from wsgistack.proctitle import set_title
from wsgistack.protocols import connection_class
from wsgistack.protocols.http import http_error_response
from wsgistack.reuseport import queue_length, refuse_new_connections, refuses_new_connections, steer
from wsgistack.stats import StatsServer
from wsgistack.harakiri import HEARTBEAT
from wsgistack.worker import STACK_DUMP_SIGNAL, worker_main

log = logging.getLogger("wsgistack")

HANDLED_SIGNALS = ("SIGCHLD", "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGTTIN", "SIGTTOU", "SIGUSR1")
# What these handlers do changes the set of workers: asked while that set is being built, they wait (_must_wait).
RESHAPING = ("hup", "ttin", "ttou")
FAST_STOP_GRACE = 5.0        # seconds workers get to exit on SIGINT/SIGQUIT before SIGKILL
KILL_MARGIN = 5.0            # beyond reload-mercy, before a draining worker is killed
STOP_KILL_MARGIN = 2.0       # the same on a graceful stop: its own deadline comes at its next tick, within a second
# --harakiri: a worker whose watchdog has been silent this long past the limit is frozen (a call holding the GIL);
# more than the watchdog's own reaction (its tick, at most 0.5 s) plus a pass of this loop (at most 1 s).
FROZEN_MARGIN = 2.0
STACK_DUMP_WAIT = 0.5        # for a frozen worker's stacks to be written before it is killed
RELOAD_START_TIMEOUT = 60.0  # at least this long (or reload-mercy) for a reload's new workers to be ready
RESPAWN_INTERVAL = 1.0       # a slot whose workers die this soon after their start, twice in a row, waits as long
# A slot given up: its socket gets no new connections from now on, but a handshake the kernel began
# for it before still ends in its queue (an RTT later); its worker goes on accepting for this long.
SLOT_SETTLE = 1.0
TURN_AWAY_BATCH = 64         # connections an empty slot's queue is relieved of per pass of the master's loop


def hold_signals() -> None:
    """From the first bind until Master.run installs its handlers, a SIGTERM (`--stop` as soon as the pidfile
    or socket appears) waits instead of killing the master by default action, skipping vacuum and exit 0."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _handled())


def _handled() -> list[signal.Signals]:
    return [getattr(signal, name) for name in HANDLED_SIGNALS]


@dataclass(eq=False)              # one per process: compared (`in self.replaced`) by identity
class WorkerProcess:
    pid: int
    number: int
    generation: int
    started: float
    ready: bool = False
    # What it reports every second with --cheaper or --stats (worker.py _report_load): busy time so far and
    # whether busy then (cheaper.py), app time so far, threads in the app then, requests answered, body bytes
    # sent, app exceptions, average response time (µs).
    busy_seconds: float | None = None
    busy_now: bool = False
    app_seconds: float = 0.0
    threads_in_app: int = 0
    requests: int = 0
    tx: int = 0
    exceptions: int = 0
    avg_rt: int = 0
    error: str | None = None
    stopping: bool = False
    kill_at: float = 0.0      # a draining worker still alive then is killed
    heard_at: float = 0.0     # --harakiri: its watchdog's last heartbeat
    frozen_kill_at: float = 0.0   # found frozen (no heartbeat): killed then, once it wrote its stacks
    release_at: float = 0.0   # its slot is given up: told to stop once past this and the slot's queue is empty
    refill: bool = False      # started in a slot emptied during a failed reload (its code may not start either)


class Master:
    def __init__(self, config: Config, listeners: list[tuple[socket.socket, Address]],
                 reload_config: Callable[[], Config], report_fd: int | None = None, stats: StatsServer | None = None):
        self.config = config
        self.listeners = listeners
        self.stats = stats
        self.reload_config = reload_config
        self.report_fd = report_fd
        self.workers: dict[int, WorkerProcess] = {}
        self.signals: list[int] = []
        self.held_signals: list[int] = []      # received while they must wait (_must_wait), in their order
        self.stopping = False
        self.exit_code = 0
        self.booted = False
        self.generation = 1
        self.reloads = 0
        self.last_reload_failed = False
        self.replaced: list[WorkerProcess] = []   # old workers that stop once the new generation is ready
        self.reloading = False
        self.reload_deadline = 0.0             # a reload whose new workers are not ready by then is abandoned
        self.reload_again = False              # a SIGHUP came during a reload: another one follows it
        self.wanted_before_reload: int | None = None   # workers serving when its new workers were started
        self.respawn_due: dict[int, float] = {}   # worker slot -> when its throttled respawn may start
        self.quick_deaths: dict[int, int] = {}    # worker slot -> its workers in a row that died within a second
        self.touch_reload = self.touch_logrotate = self.touch_logreopen = Touches([])
        # Workers wanted now: --processes, or with --cheaper what load asks for (SIGTTIN/SIGTTOU change it too).
        self.cheaper = Cheaper.from_config(config)
        self.wanted = self.cheaper.initial if self.cheaper else config.processes
        self.next_second = 0.0                 # the loop's once-a-second checks (memory limits, --cheaper)
        self.frozen_checked = time.monotonic()     # the last look for frozen workers (_kill_frozen)
        # Smart daemons outlive the master: they keep the log file itself (a relay would die with the master).
        self.log_relay = log_relay()
        output = self.log_relay.write_fd if self.log_relay is not None else None
        self.daemons = Daemons(config.attach_daemon, config.smart_attach_daemon, output)
        self.cron = Cron(config.cron, config.unique_cron, output)
        self.signal_meanings: dict[int, str] = {}     # --hook-master-start unix_signal: signal -> handler name
        self.respawns: dict[int, int] = {}        # worker slot -> workers started in it after the first
        self.slot_requests: dict[int, int] = {}   # worker slot -> requests its workers served before the current one
        # Listening sockets per worker slot (worker number). A slot's sockets live as long as the master,
        # so a successor (reload, recycle, crash) accepts what queued while its predecessor was leaving.
        self.slots: dict[int, list[tuple[socket.socket, Address]]] = {1: listeners}
        # Each port's SO_REUSEPORT group in the kernel's order (the indexes steer() takes): a socket that
        # starts listening is appended; one that closes is replaced by the last.
        self.reuseport_groups: dict[str, list[socket.socket]] = {
            address.text: [sock] for sock, address in listeners if not self.shared(address)}
        self.steered: set[str] = set()
        # Slots left without a worker until a reload fills them (their code on disk does not start, see
        # _worker_exited): steered clear of new connections, and what queued in them is turned away.
        self.empty_slots: set[int] = set()
        self.draining_sockets: list[socket.socket] = []    # graceful stop: queued connections still taken
        self.drain_until = 0.0
        # Bound now, before cli.py drops privileges (--uid): the kernel lets only the same user join a port.
        for number in range(2, self.wanted + 1):
            self.slot_listeners(number)

    # --- main loop ---
    def run(self) -> int:
        self.pid = os.getpid()
        self._title()
        self._watch_touches()           # now: a touch while the first worker starts (or right after) counts
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.status_r, self.status_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.status_r, False)
        self._status_buffer = b""
        for name in HANDLED_SIGNALS:
            signal.signal(getattr(signal, name), self._enqueue)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _handled())     # what arrived since hold_signals() runs now
        try:
            self.signal_meanings = run_hooks(self.config, "master-start")
        except ConfigError as exc:
            print(f"wsgistack: error: {exc}", file=sys.stderr, flush=True)
            report(self.report_fd, str(exc).encode())
            return 1
        if not self._boot_first_worker():
            report(self.report_fd, (self._boot_error or "the first worker did not start").encode())
            return self.exit_code
        for number in range(2, self.wanted + 1):
            self.spawn(number)
        self.booted = True
        addresses = ", ".join(f"{a.protocol} on {a.text}" + (f" (port {sock.getsockname()[1]})" if a.port == 0 else "")
                              for sock, a in self.listeners)
        status = f"serving {addresses} with {self.wanted} processes x {self.config.threads} threads"
        if self.cheaper:
            status += (f" (cheaper, {self.cheaper.name}: {self.cheaper.minimum} to {self.cheaper.maximum} "
                       f"processes as load asks)")
        log.info("wsgistack %s: master %d %s", __version__, self.pid, status)
        report(self.report_fd, READY + f" (master {self.pid}) {status}".encode())
        self.report_fd = None
        sd_notify("READY=1", f"STATUS={status}", f"MAINPID={self.pid}")
        self._release_held_signals()    # a SIGHUP during the boot reloads now, after READY=1
        self._run_post_app_hooks()
        self.daemons.start_due()
        while self.workers or self.daemons.running() or not self.stopping:
            releasing = any(worker.release_at for worker in self.workers.values())
            self._wait(0.05 if releasing or self.draining_sockets else 1.0)
            self._read_status()         # first: a SIGUSR1 status or a SIGCHLD then sees the latest state
            self._dispatch_signals()
            self._check_touched()
            self._check_log()
            self._finish_reload()
            self._check_reload_deadline()
            self._respawn_due()
            if releasing:
                self._release_given_up()
            if self.draining_sockets:
                self._drain_queues()
            if self.empty_slots:
                self._turn_away_queued()
            self._kill_overdue()
            self._kill_frozen()
            if time.monotonic() >= self.next_second:
                self.next_second = time.monotonic() + 1.0
                self._kill_memory_hogs()
                self._adapt()
            self.daemons.start_due()
            self.daemons.kill_overdue()
            if not self.stopping:
                self.cron.run_due()
        if self.log_relay is not None:
            self.log_relay.finish()        # the daemons' last words
        log.info("master %d exiting with status %d", self.pid, self.exit_code)
        return self.exit_code

    def _boot_first_worker(self) -> bool:
        """Worker 1 proves the app loads; only then do the others start (no respawn storm on a broken app)."""
        self._boot_error: str | None = None
        worker = self.spawn(1)
        while not worker.ready:
            self._wait(0.5)
            self._read_status()
            self._dispatch_signals()
            # Gone without having been ready is a failed boot; a ready one may already have served its
            # --max-requests and retired (its successor is starting), which is no failure.
            if (worker.pid not in self.workers and not worker.ready) or self.stopping:
                if self.exit_code == 0 and not self.stopping:
                    self.exit_code = 1
                self._kill_all(signal.SIGKILL)
                self._reap_all_blocking()
                return False
        return True

    def _title(self) -> None:
        suffix = ""
        if self.reloads or self.reloading:
            suffix = (f" (reloads: {self.reloads}{', last failed' if self.last_reload_failed else ''}"
                      f"{', reloading' if self.reloading else ''})")
        set_title(self.config, f"master{suffix}")

    def _wait(self, timeout: float) -> None:
        watched = [self.wake_r, self.status_r] + ([self.stats] if self.stats is not None else [])
        try:
            readable, _, _ = select.select(watched, [], [], timeout)
        except InterruptedError:
            return
        if self.stats is not None and self.stats in readable:
            self._read_status()           # the workers' latest figures first
            self.stats.answer(stats.document(self))
        if self.wake_r in readable:
            try:
                while os.read(self.wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def _enqueue(self, signum, frame) -> None:
        self.signals.append(signum)
        self._wake()

    def _wake(self) -> None:
        """The main loop's wait ends at once."""
        try:
            os.write(self.wake_w, b".")
        except BlockingIOError:
            pass

    def _dispatch_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            name = self.signal_meanings.get(signum) or signal.Signals(signum).name[3:].lower()
            if self._must_wait(signum, name):
                self.held_signals.append(signum)
            else:
                getattr(self, f"handle_{name}")()

    def _must_wait(self, signum: int, name: str) -> bool:
        """A reload or a worker more or less waits while the workers are being started: slot numbers would be
        chosen among two sets (the boot's and a reload's, or two generations), leaving a slot with two workers or
        a slot's socket with none. A SIGHUP during a reload has a meaning of its own (another reload follows)."""
        if self.stopping or name not in RESHAPING:
            return False
        if not self.booted:
            log.info("%s while the first worker starts: done once it is ready", signal.Signals(signum).name)
            return True
        if self.reloading and name != "hup":
            log.info("%s during a reload: done once it is over", signal.Signals(signum).name)
            return True
        return False

    def _release_held_signals(self) -> None:
        """The signals _must_wait held are handled now, by the main loop, in the order they came."""
        if self.held_signals:
            self.signals[:0] = self.held_signals
            self.held_signals = []
            self._wake()

    # --- workers ---
    @staticmethod
    def shared(address: Address) -> bool:
        """One socket for all the workers (unix sockets, systemd's, uwsgi), not one per slot."""
        return address.is_unix or address.inherited or connection_class(address.protocol).direct_accept

    def slot_listeners(self, number: int) -> list[tuple[socket.socket, Address]]:
        if number not in self.slots:
            siblings: list[tuple[socket.socket, Address]] = []
            try:
                for sock, address in self.listeners:
                    siblings.append((sock if self.shared(address) else bind_sibling(sock, self.config.listen),
                                     address))
            except OSError as exc:
                # A slot added after privileges were dropped (SIGTTIN, a reload with more processes): the
                # kernel refuses that user a socket on root's port. Share worker 1's sockets instead.
                log.warning("worker %d shares worker 1's listening sockets (no socket of its own: %s)", number,
                            exc.strerror or exc)
                for sock, address in siblings:
                    if sock is not self._original(address):
                        sock.close()
                siblings = list(self.listeners)
            for sock, address in siblings:
                if sock is not self._original(address) and not self.shared(address):
                    self.reuseport_groups[address.text].append(sock)
            self.slots[number] = siblings
        return self.slots[number]

    def _original(self, address: Address) -> socket.socket | None:
        return next((sock for sock, original in self.listeners if original is address), None)

    def _close_slot(self, number: int) -> None:
        """A slot given up (SIGTTOU, fewer processes): its sockets leave the port's group once its worker is
        gone (steered clear of new connections before, see _give_up_slot: nothing is left queued in them)."""
        for sock, address in self._own_sockets(number):
            group = self.reuseport_groups[address.text]
            group[group.index(sock)] = group[-1]
            group.pop()
            sock.close()
        self.slots.pop(number, None)

    def _own_sockets(self, number: int) -> list[tuple[socket.socket, Address]]:
        """The slot's sockets that close with it (not shared, not worker 1's)."""
        return [(sock, address) for sock, address in self.slots.get(number, [])
                if not self.shared(address) and sock is not self._original(address)]

    def _steer(self) -> bool:
        """New connections only to the slots that keep a worker (numbers up to --processes). False if the
        kernel cannot be told (a slot given up then loses what queues in it between its worker's stop and
        its close, as before)."""
        kept = {sock for number, pairs in self.slots.items() if number <= self.wanted and number not in self.empty_slots
                for sock, _ in pairs}
        for text, group in self.reuseport_groups.items():
            indexes = [index for index, sock in enumerate(group) if sock in kept]
            if len(indexes) == len(group) and text not in self.steered:
                continue                 # every socket serves: the kernel's own choice is as good
            try:
                steer(group[0], indexes)
            except OSError as exc:
                log.warning("cannot steer new connections away from a worker slot being given up: %s",
                            exc.strerror or exc)
                return False
            self.steered.add(text)
        return True

    def _give_up_slot(self, worker: WorkerProcess) -> None:
        """Stop a worker whose slot closes after it (SIGTTOU, fewer processes after a reload): first steer
        new connections away, let it accept what is queued, then tell it to stop (_release_given_up)."""
        self._mark_stopping(worker)
        if self._own_sockets(worker.number) and self._steer():
            worker.release_at = time.monotonic() + SLOT_SETTLE
            worker.kill_at = 0.0           # set when it is told to stop
        else:
            self._signal(worker, signal.SIGTERM)

    def _release_given_up(self) -> None:
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if not worker.release_at or now < worker.release_at:
                continue
            queued = sum(queue_length(sock) for sock, _ in self._own_sockets(worker.number))
            if queued and now < worker.release_at + self.config.reload_mercy:
                continue                 # a busy worker gets to them; bounded by reload-mercy
            worker.release_at = 0.0
            self._mark_stopping(worker)
            self._signal(worker, signal.SIGTERM)

    def _drain_queues(self) -> None:
        """Graceful stop: a socket whose queue the workers emptied (a worker busy in the app empties its own once
        that request is done) is shut down, so that new connections are refused at once rather than dropped; at
        the end of the grace period, whatever is left."""
        overdue = time.monotonic() > self.drain_until
        for sock in list(self.draining_sockets):
            if overdue or not queue_length(sock):
                self.draining_sockets.remove(sock)
                _shut(sock)

    def _turn_away_queued(self) -> None:
        """Connections in an empty slot's queue (since before it was steered clear, or where the kernel cannot
        be told) get a 503 (HTTP) or are closed, rather than a wait for the next reload."""
        serving = {sock for number, pairs in self.slots.items() if number not in self.empty_slots for sock, _ in pairs}
        for number in self.empty_slots:
            for sock, address in self.slots.get(number, []):
                if self.shared(address) or sock in serving:
                    continue
                for _ in range(min(queue_length(sock), TURN_AWAY_BATCH)):
                    try:
                        conn, _ = sock.accept()
                    except OSError:
                        break
                    _turn_away(conn, address.protocol == "http")

    def spawn(self, number: int) -> WorkerProcess:
        listeners = self.slot_listeners(number)
        if number in self.empty_slots:
            self.empty_slots.discard(number)
            self._steer()               # new connections for it again: they wait in its queue while it starts
        if number in self.slot_requests:
            self.respawns[number] = self.respawns.get(number, 0) + 1
        else:
            self.slot_requests[number] = 0
        # Signals are blocked across fork: one sent to the new worker before it reset the master's handlers
        # (a SIGTERM right after a recycle) would run the master's handler in the worker and be lost.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _handled())
        try:
            pid = os.fork()
            if pid == 0:
                self._become_worker(number, listeners, mask)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        worker = WorkerProcess(pid, number, self.generation, time.monotonic())
        self.workers[pid] = worker
        return worker

    def _become_worker(self, number: int, listeners, mask) -> None:
        code = 1
        try:
            for name in HANDLED_SIGNALS:
                signal.signal(getattr(signal, name), signal.SIG_DFL)
            # What arrived meanwhile is delivered now, but a SIGTERM: by default it would end a worker that may
            # have connections to answer in its slot's queue; the worker takes it once its handler is in place.
            signal.pthread_sigmask(signal.SIG_SETMASK, {*mask, signal.SIGTERM})
            for fd in (self.wake_r, self.wake_w, self.status_r):
                os.close(fd)
            if self.stats is not None:
                self.stats.sock.close()
            if self.log_relay is not None:
                self.log_relay.close_in_child()
            # Other slots' sockets must not live on in this worker: a slot given up (SIGTTOU) would stay
            # in the port's SO_REUSEPORT group, and connections the kernel sends there would never be accepted.
            own = {sock.fileno() for sock, _ in listeners}
            for slot in self.slots.values():
                for sock, _ in slot:
                    if sock.fileno() not in own:
                        sock.close()
            if self.report_fd is not None:
                os.close(self.report_fd)
            code = worker_main(self.config, listeners, number, self.status_w, self.pid)
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
            kind, _, detail = message.partition(" ")
            if kind == HEARTBEAT:
                worker.heard_at = time.monotonic()
            elif kind == "ready":
                worker.ready = True
            elif kind == "error":
                worker.error = detail
            elif kind == "retiring":
                self._replace_retiring(worker, detail)
            elif kind == "load":
                self._note_load(worker, detail)

    @staticmethod
    def _note_load(worker: WorkerProcess, report: str) -> None:
        figures = dict(item.partition("=")[::2] for item in report.split())
        worker.busy_seconds = float(figures["busy"])
        worker.busy_now = figures["busy_now"] == "1"
        worker.app_seconds = float(figures["app_time"])
        worker.threads_in_app = int(figures["app"])
        worker.requests = int(figures["requests"])
        worker.tx = int(figures.get("tx", 0))
        worker.exceptions = int(figures.get("exceptions", 0))
        worker.avg_rt = int(figures.get("avg_rt", 0))

    def _replace_retiring(self, worker: WorkerProcess, reason: str) -> None:
        """The worker stopped accepting (max-requests, RSS, lifetime): start its successor right away."""
        if worker.stopping or self.stopping:
            return
        if worker in self.replaced:     # during a reload: the new generation's worker of its slot is starting
            log.info("worker %d (pid %d) retiring: %s; its slot's new worker is starting", worker.number,
                     worker.pid, reason)
            self.replaced.remove(worker)
            self._mark_stopping(worker)
            return
        log.info("worker %d (pid %d) retiring: %s; starting its replacement", worker.number, worker.pid, reason)
        self._mark_stopping(worker)
        self.spawn(worker.number)

    def _mark_stopping(self, worker: WorkerProcess) -> None:
        worker.stopping = True
        worker.kill_at = time.monotonic() + self.config.reload_mercy + KILL_MARGIN

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.stopping and worker.kill_at and now > worker.kill_at:
                log.error("worker %d (pid %d) did not finish within reload-mercy; killing it", worker.number,
                          worker.pid)
                worker.kill_at = 0.0
                self._signal(worker, signal.SIGKILL)

    def _kill_frozen(self) -> None:
        """--harakiri's backstop: the worker's own watchdog needs the GIL, which a C call or a runaway regex can
        hold for ever (every request of that worker then waits). Silent for longer than the limit, the worker
        writes its threads' stacks (faulthandler, without the GIL), is killed and replaced, as uWSGI's master
        does."""
        limit = self.config.harakiri
        now = time.monotonic()
        # This loop itself was held up (a hook running a migration, the whole group paused by SIGSTOP): the
        # workers' silence says nothing then; they get the limit afresh.
        away = now - self.frozen_checked > FROZEN_MARGIN
        self.frozen_checked = now
        self._read_status()             # heartbeats written while this pass did other things
        for worker in list(self.workers.values()):
            if away and worker.heard_at:
                worker.heard_at = now
            if worker.frozen_kill_at:
                if worker.heard_at > worker.frozen_kill_at - STACK_DUMP_WAIT:
                    worker.frozen_kill_at = 0.0         # it spoke after all
                elif now > worker.frozen_kill_at:
                    worker.frozen_kill_at = 0.0
                    self._signal(worker, signal.SIGKILL)
            elif limit and worker.heard_at and not worker.stopping and now - worker.heard_at > limit + FROZEN_MARGIN:
                log.error("HARAKIRI: worker %d (pid %d) has run no Python for %.1f s (limit --harakiri %s): a call "
                          "holding the GIL (C code, a runaway regex); its threads' stacks follow, then it is killed",
                          worker.number, worker.pid, now - worker.heard_at, f"{limit:g}")
                self._signal(worker, STACK_DUMP_SIGNAL)
                worker.frozen_kill_at = now + STACK_DUMP_WAIT

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._read_status()      # its last words ("ready", "retiring", a boot error) come first
            worker = self.workers.pop(pid, None)
            if worker is not None:
                self.slot_requests[worker.number] = self.slot_requests.get(worker.number, 0) + worker.requests
                self._worker_exited(worker, status)
            elif not self.daemons.reaped(pid, status):
                self.cron.reaped(pid, status)

    def _worker_exited(self, worker: WorkerProcess, status: int) -> None:
        if os.WIFSIGNALED(status):
            how = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        else:
            how = f"exited with status {os.WEXITSTATUS(status)}"
        if worker.stopping or self.stopping:
            log.info("worker %d (pid %d) %s", worker.number, worker.pid, how)
            if self.stopping and status != 0:
                self._answer_slot_queue(worker.number)
            if worker.number > self.wanted and worker.number != 1 and not any(
                    w.number == worker.number for w in self.workers.values()):
                self._close_slot(worker.number)
            return
        if worker in self.replaced:
            # A worker of the previous generation, during a reload: the new generation's worker of its
            # slot is starting already (a successor for it as well would be one worker too many).
            self.replaced.remove(worker)
            log.error("worker %d (pid %d) %s during the reload; its slot's new worker is starting", worker.number,
                      worker.pid, how)
            return
        if not worker.ready:
            message = worker.error or f"worker {worker.number} could not start ({how})"
            if (worker.refill or (self.booted and not self.reloading)) and any(
                    w.ready and not w.stopping for w in self.workers.values()):
                # The code on disk (that failed a reload, or was changed without one) does not start: a recycled
                # or respawned worker's successor fails as the reload's did. The others serve on, this slot
                # stays empty until a reload brings code that starts (stopping would take the server down).
                log.error("%s; its slot stays empty while the other workers serve (a reload fills it)", message)
                self.empty_slots.add(worker.number)
                self._steer()
                return
            if self.reloading:
                self._abandon_reload(message)
                return
            self._boot_error = message
            print(f"wsgistack: error: {message}", file=sys.stderr, flush=True)
            if self.booted:
                log.error("a replacement worker failed to start; stopping instead of respawning in a loop")
            self.exit_code = 1
            self._begin_stop(signal.SIGTERM, self.config.reload_mercy)
            return
        lived = time.monotonic() - worker.started
        quick = self.quick_deaths[worker.number] = self.quick_deaths.get(worker.number, 0) + 1 if (
            lived < RESPAWN_INTERVAL) else 0
        if quick > 1:
            # As uWSGI's "respawning too fast": workers that die as soon as they start are not restarted in a loop.
            log.error("worker %d (pid %d) %s %.2f s after it started, as the one before it; starting a new one in "
                      "%.0f s", worker.number, worker.pid, how, lived, RESPAWN_INTERVAL)
            self.respawn_due[worker.number] = time.monotonic() + RESPAWN_INTERVAL
            return
        log.error("worker %d (pid %d) %s; starting a new one", worker.number, worker.pid, how)
        self.spawn(worker.number)

    def _answer_slot_queue(self, number: int) -> None:
        """Graceful stop: a worker died (a crash just before the stop) with connections waiting in its slot's own
        socket, which no other worker accepts from: a successor loads the app, answers them, and stops."""
        if any(w.number == number for w in self.workers.values()) or time.monotonic() >= self.drain_until:
            return
        queued = sum(queue_length(sock) for sock, address in self.slots.get(number, [])
                     if sock in self.draining_sockets and not self.shared(address))
        if not queued:
            return
        log.info("worker %d's slot holds %d connections: a successor answers them before the stop ends", number,
                 queued)
        successor = self.spawn(number)
        successor.stopping = True
        successor.kill_at = self.drain_until + STOP_KILL_MARGIN
        self._signal(successor, signal.SIGTERM)     # taken once it loaded the app (worker.py _stop_after_boot)

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for number, due in list(self.respawn_due.items()):
            if self.stopping:
                self.respawn_due.clear()
            elif now >= due:
                del self.respawn_due[number]
                if number <= self.wanted and not any(w.number == number and not w.stopping
                                                     for w in self.workers.values()):
                    self.spawn(number)

    def _signal(self, worker: WorkerProcess, sig: int) -> None:
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass

    def _kill_all(self, sig: int) -> None:
        for worker in list(self.workers.values()):
            self._signal(worker, sig)

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
            sd_notify("STOPPING=1")
            self.replaced = []
            self.reloading = self.reload_again = False
            self.wanted_before_reload = None
            self.respawn_due.clear()
            # No socket takes a new connection from now on, the workers' copies included (a worker still inside
            # an app call cannot close its own yet). A TCP socket with connections queued first only drops new
            # SYNs while the workers accept what is queued (_drain_queues), within the grace period.
            graceful = worker_signal == signal.SIGTERM
            self.draining_sockets = [sock for pairs in self.slots.values() for sock, address in pairs
                                     if not _stop_listening(sock, address, graceful)]
            self.drain_until = time.monotonic() + grace
            self.daemons.stop(grace)
            for worker in self.workers.values():
                self._mark_stopping(worker)
                # graceful: the worker ends by itself at its deadline, resetting what it could not finish (a FIN
                # would make a cut body look whole); SIGKILL only for one stuck in app code past that
                worker.kill_at = time.monotonic() + grace + (STOP_KILL_MARGIN if graceful else 0.0)
                worker.release_at = 0.0
        self._kill_all(worker_signal)

    # --- signal handlers: one method per signal ---
    def handle_chld(self) -> None:
        self._reap()

    def handle_term(self) -> None:
        log.info("SIGTERM: graceful stop (in-flight requests finish, up to %d s)", self.config.reload_mercy)
        self._begin_stop(signal.SIGTERM, self.config.reload_mercy)

    def handle_int(self) -> None:
        log.info("SIGINT: fast stop")
        self._begin_stop(signal.SIGINT, FAST_STOP_GRACE)

    def handle_quit(self) -> None:
        log.info("SIGQUIT: fast stop")
        self._begin_stop(signal.SIGQUIT, FAST_STOP_GRACE)

    def handle_ttin(self) -> None:
        if not self.stopping:
            log.info("SIGTTIN: one more worker (now %d)", self.wanted + 1)
            self._add_worker()

    def handle_ttou(self) -> None:
        if not self.stopping and self.wanted > 1:
            log.info("SIGTTOU: one worker less (now %d)", self.wanted - 1)
            self._remove_worker()

    def _add_worker(self) -> None:
        self.wanted += 1
        numbers = {w.number for w in self.workers.values() if not w.stopping}
        number = next(n for n in range(1, len(numbers) + 2) if n not in numbers)
        self.spawn(number)
        if self.steered:
            self._steer()

    def _remove_worker(self) -> None:
        """The worker of the highest slot stops, once new connections are steered away from it."""
        active = [w for w in self.workers.values() if not w.stopping]
        if len(active) > 1:
            self.wanted -= 1
            worker = max(active, key=lambda w: w.number)
            log.info("stopping worker %d (pid %d)", worker.number, worker.pid)
            self._give_up_slot(worker)

    def _kill_memory_hogs(self) -> None:
        """--evil-reload-on-rss, --evil-reload-on-as: a worker past the limit is killed at once (its requests
        fail), checked about once a second; the replacement is started as for any worker that died."""
        config = self.config
        if not (config.evil_reload_on_rss or config.evil_reload_on_as):
            return
        for worker in list(self.workers.values()):
            if worker.stopping or not worker.ready:
                continue
            size, resident = (value >> 20 for value in memory(worker.pid))
            if config.evil_reload_on_rss and resident > config.evil_reload_on_rss:
                why = f"resident memory {resident} MB over {config.evil_reload_on_rss} MB (--evil-reload-on-rss)"
            elif config.evil_reload_on_as and size > config.evil_reload_on_as:
                why = f"address space {size} MB over {config.evil_reload_on_as} MB (--evil-reload-on-as)"
            else:
                continue
            log.error("worker %d (pid %d): %s: killing it", worker.number, worker.pid, why)
            self._signal(worker, signal.SIGKILL)

    # --- --cheaper: as many workers as load asks for ---
    def _adapt(self) -> None:
        if self.cheaper is None or self.stopping or self.reloading:
            return
        now = time.monotonic()
        active = [w for w in self.workers.values() if not w.stopping]
        if len(active) != self.wanted or not all(w.ready for w in active):
            return                      # a worker starting or being replaced: its load is not known yet
        loads = [WorkerLoad(w.pid, w.busy_seconds, w.busy_now) for w in active]
        change, reason = self.cheaper.decide(now, loads, self.backlog())
        if change > 0:
            log.info("cheaper (%s): %s: starting %d worker(s), now %d of at most %d", self.cheaper.name, reason,
                     change, self.wanted + change, self.cheaper.maximum)
            for _ in range(change):
                self._add_worker()
        elif change < 0:
            log.info("cheaper (%s): %s: one worker less, now %d of at least %d", self.cheaper.name, reason,
                     self.wanted - 1, self.cheaper.minimum)
            self._remove_worker()
        elif reason:
            log.info("cheaper (%s): %s", self.cheaper.name, reason)

    def backlog(self) -> int:
        """Connections waiting in the accept queues of the serving slots' TCP sockets."""
        return sum(self.queued(address) for _, address in self.listeners)

    def queued(self, address: Address) -> int:
        """Connections waiting in the accept queues of this address's serving sockets."""
        socks = {sock for number, pairs in self.slots.items() if number <= self.wanted
                 for sock, slot_address in pairs if slot_address is address}
        return sum(queue_length(sock) for sock in socks)

    def handle_usr1(self) -> None:
        now = time.monotonic()
        log.info("status: master %d, generation %d, %d workers", self.pid, self.generation, len(self.workers))
        for worker in sorted(self.workers.values(), key=lambda w: (w.number, w.generation)):
            state = "stopping" if worker.stopping else ("ready" if worker.ready else "starting")
            log.info("status: worker %d pid %d generation %d %s, up %.0f s", worker.number, worker.pid,
                     worker.generation, state, now - worker.started)
            if worker.ready:        # a starting worker has no handler yet: SIGUSR1 would kill it
                self._signal(worker, signal.SIGUSR1)    # each worker logs its own counters

    def handle_hup(self) -> None:
        """Graceful reload: re-read the config, start a new generation with freshly imported code,
        and stop the old one only once the new one is ready."""
        if self.stopping:
            return
        if self.reloading:
            log.info("SIGHUP during a reload: another reload follows once this one is done")
            self.reload_again = True
            return
        self.reloading = True
        self._title()                   # "reloading": `--reload` then knows its reload comes after this one
        log.info("SIGHUP: reloading")
        sd_notify_reloading("reloading")
        try:
            config = self.reload_config()
        except ConfigError as exc:
            self._abandon_reload(f"the configuration has an error: {exc}")
            return
        listening, wanted = [a.text for _, a in self.listeners], _listen_texts(config)
        if listening != wanted:
            # Said as a failed reload (`--reload` exits 1), not as a warning nobody reads: a server that went on
            # without the new port would look reloaded while nginx gets 502 from it.
            self._abandon_reload(f"the listen addresses changed ({', '.join(listening)} -> {', '.join(wanted)}): "
                                 f"a restart applies that, a reload cannot")
            return
        try:
            run_hooks(config, "pre-app")          # the new configuration's, before its workers import the app
        except ConfigError as exc:
            self._abandon_reload(f"a pre-app hook failed: {exc}")
            return
        if config.stats != (self.stats.address.text if self.stats is not None else ""):
            log.warning("the stats address changed in the configuration: a restart is needed to apply that")
        self.wanted_before_reload = self.wanted
        self.config = config
        self._watch_touches()           # the --touch-* files of the configuration just read
        self.reload_deadline = time.monotonic() + max(RELOAD_START_TIMEOUT, config.reload_mercy)
        self.replaced = [w for w in self.workers.values() if not w.stopping]
        self.generation += 1
        self.cheaper = Cheaper.from_config(config)     # checked by reload_config: no error here
        # With --cheaper the new generation starts as many workers as serve now, within the new bounds.
        self.wanted = (min(max(len(self.replaced), self.cheaper.minimum), self.cheaper.maximum) if self.cheaper
                       else config.processes)
        for number in range(1, self.wanted + 1):
            self.spawn(number)
        if self.steered:
            self._steer()               # slots new to this generation get connections too

    def _run_post_app_hooks(self) -> None:
        try:
            run_hooks(self.config, "post-app")
        except ConfigError as exc:
            log.error("a post-app hook failed (the workers serve anyway): %s", exc)

    # --- --touch-reload, --touch-logrotate, --touch-logreopen; --log-maxsize ---
    def _watch_touches(self) -> None:
        self.touch_reload = Touches(self.config.touch_reload)
        self.touch_logrotate = Touches(self.config.touch_logrotate)
        self.touch_logreopen = Touches(self.config.touch_logreopen)

    def _check_touched(self) -> None:
        """A --touch-reload file modified, touched or created since it was noted: reload, as SIGHUP does."""
        if self.reloading or self.stopping:
            return          # a reload under way: a touch meanwhile is seen once it is done
        changed = self.touch_reload.changed()       # noted again: once per touch, also when the reload fails
        if changed:
            log.info("%s touched: reloading", ", ".join(changed))
            self.handle_hup()

    def _check_log(self) -> None:
        """Rotate the log file past --log-maxsize or on a touch; reopen it on a touch, or once moved away."""
        rotate = self.touch_logrotate.changed() or (self.config.log_maxsize and log_size() > self.config.log_maxsize)
        if rotate:
            rotate_log(self.config.log_backupname)
        else:
            reopen_log_if_moved(force=bool(self.touch_logreopen.changed()))

    def _finish_reload(self) -> None:
        new = [w for w in self.workers.values() if w.generation == self.generation and not w.stopping]
        if not self.reloading or self.stopping or not all(w.ready for w in new):
            return
        for worker in self.replaced:
            if worker.number > self.wanted:
                self._give_up_slot(worker)
            else:
                self._mark_stopping(worker)        # its successor accepts from the same slot
                self._signal(worker, signal.SIGTERM)
        log.info("reload complete: generation %d serving; %d old workers finishing", self.generation,
                 len(self.replaced))
        self.daemons.restart(self.config.attach_daemon, self.config.smart_attach_daemon,  # on the new code too
                             self.config.reload_mercy)
        self.cron.replace(self.config.cron, self.config.unique_cron)
        self._run_post_app_hooks()
        self.replaced = []
        self.wanted_before_reload = None
        self.reloading = False
        self.reloads += 1
        self.last_reload_failed = False
        self._title()
        sd_notify("READY=1", f"STATUS=reloaded (generation {self.generation})")
        self._release_held_signals()
        self._reload_again()

    def _reload_again(self) -> None:
        if self.reload_again and not self.stopping:
            self.reload_again = False
            self.handle_hup()

    def _check_reload_deadline(self) -> None:
        if self.reloading and not self.stopping and time.monotonic() > self.reload_deadline:
            starting = sum(1 for w in self.workers.values() if w.generation == self.generation and not w.ready)
            self._abandon_reload(f"{starting} new worker(s) not ready after "
                                 f"{max(RELOAD_START_TIMEOUT, self.config.reload_mercy):.0f} s")

    def _abandon_reload(self, message: str) -> None:
        """The new code or config does not start: keep serving with the old workers rather than going down."""
        log.error("reload failed, still serving the previous generation: %s", message)
        if self.wanted_before_reload is not None:      # its workers were started
            for worker in list(self.workers.values()):
                if worker.generation == self.generation and not worker.stopping:
                    if worker.ready:
                        self._mark_stopping(worker)     # serving already: what it runs finishes
                        self._signal(worker, signal.SIGTERM)
                    else:
                        worker.stopping = True
                        self._signal(worker, signal.SIGKILL)
            # As many workers as serve: slots the new configuration added close with their workers. (The new
            # configuration stays: the master applied its directory, environment and paths already.)
            self.wanted = self.wanted_before_reload
            if self.steered:
                self._steer()
            # An old worker that died or retired meanwhile left its slot to the new generation: give it one now
            # (if the code on disk cannot start, that is said, and the slot stays empty while others serve).
            serving = {w.number for w in self.workers.values() if not w.stopping}
            for number in range(1, self.wanted + 1):
                if number not in serving:
                    log.info("worker %d starts again in its slot, emptied during the failed reload", number)
                    self.spawn(number).refill = True
        self.wanted_before_reload = None
        self.replaced = []
        self.reloading = False
        self.reloads += 1
        self.last_reload_failed = True
        self._title()
        sd_notify("READY=1", "STATUS=reload failed; serving the previous generation")
        self._release_held_signals()
        self._reload_again()


def _stop_listening(sock: socket.socket, address: Address, graceful: bool) -> bool:
    """Shut the socket down (a new connection is refused at once, which a client or proxy may retry elsewhere)
    and close it: True. Or, on a graceful stop of a socket with connections queued, only make sure no new one
    comes (the kernel drops new SYNs; a unix socket's file is removed), so that the workers accept the queued ones
    (worker._close_servers) instead of their reset: False, the master shuts it down once its queue is empty
    (_drain_queues). systemd's socket is only closed: what is queued there waits for the next server."""
    if address.inherited:
        sock.close()
        return True
    if graceful and queue_length(sock):
        if refuses_new_connections(sock):
            return False                # a shared socket, met in another slot already
        if not address.is_unix or remove_socket_file(address.path):
            try:
                refuse_new_connections(sock)     # on a unix socket, only the mark the workers look for
                return False
            except OSError:
                pass
    _shut(sock)
    return True


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _turn_away(conn: socket.socket, http: bool) -> None:
    """Best effort, never blocking the master: the request is read first (closing over unread bytes would
    be a reset, which can destroy the answer), then the 503 goes out with the FIN."""
    with conn:
        conn.setblocking(False)
        try:
            try:
                conn.recv(65536)
            except BlockingIOError:
                pass                    # nothing sent yet
            if http:
                date = f"Date: {formatdate(usegmt=True)}\r\n".encode()
                conn.send(http_error_response(503, "no worker in this slot (the code on disk does not start)", date))
        except OSError:
            pass


class Touches:
    """Files whose modification (a touch, a creation) is a command: the times noted, and which changed since."""

    def __init__(self, paths: list[str]):
        self.noted = {path: _modified(path) for path in paths}

    def changed(self) -> list[str]:
        """The files modified, touched or created since noted (noted again: each touch counts once)."""
        changed = [path for path, seen in self.noted.items() if _modified(path) not in (None, seen)]
        for path in changed:
            self.noted[path] = _modified(path)
        return changed


def _modified(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _listen_texts(config: Config) -> list[str]:
    return [*config.http, *config.socket, *config.fastcgi_socket]
