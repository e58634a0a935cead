"""A worker process: one event loop (uvloop) owning every socket, and the app on a bounded thread pool
(app_threads.py; on a uwsgi socket its threads accept and answer by themselves) or inline on the loop
thread (`--threads 1`, measured fastest: no handoff at all).

What lives here: loading the app after fork, serving the inherited listening sockets, the
one-second sweep (timeouts, Date header), sendfile, graceful and fast stop.
Supervision lives in master.py; protocols in protocols/.
"""

from __future__ import annotations

import asyncio
import ctypes
import faulthandler
import functools
import gc
import itertools
import logging
import math
import os
import random
import resource
import signal
import socket
import sys
import threading
import time
from email.utils import formatdate

from wsgistack import wsgi
from wsgistack.addresses import Address
from wsgistack.app_clock import AppClock, timed
from wsgistack.app_loader import load_app
from wsgistack.app_threads import AcceptingAppThreads, AppThreads
from wsgistack.autoreload import watch_modules
from wsgistack.cheaper import SATURATED, busy_time
from wsgistack.compression import Compression
from wsgistack.config import Config, ConfigError
from wsgistack.direct import DirectAcceptor, ThreadAcceptor
from wsgistack.harakiri import Harakiri
from wsgistack.log_files import reopen_log_if_moved
from wsgistack.logs import access_log_for, setup_error_log
from wsgistack.memory import memory
from wsgistack.proctitle import set_title
from wsgistack.protocols import connection_class
from wsgistack.protocols.connection import Connection, add_server_address
from wsgistack.reuseport import queue_length, refuses_new_connections
from wsgistack.static import StaticFiles
from wsgistack.wsgi import base_environ

try:
    import uvloop
except ImportError:      # still runs on plain asyncio, only slower
    uvloop = None

log = logging.getLogger("wsgistack")
_RAISED = "an exception in the app (--reload-on-exception)"

# Sent by the kernel when the master dies (prctl PR_SET_PDEATHSIG); a real-time signal nobody else sends, so that
# the app keeps SIGUSR2 and the others for itself.
MASTER_DEATH_SIGNAL = signal.SIGRTMIN + 1
# Sent by the master to a worker frozen past --harakiri: faulthandler writes every thread's stack, GIL or not.
STACK_DUMP_SIGNAL = signal.SIGRTMIN + 2
_PR_SET_PDEATHSIG = 1
EXIT_BOOT_FAILED = 3     # tells the master "this worker could not start": never respawn in a loop
LOAD_REPORT_INTERVAL = 1.0   # seconds between --cheaper load reports to the master
SWEEP_GAP = 0.9              # at least this long between two counts of the connections' timeouts
QUEUE_CHECK = 0.05           # stopping: how often the listening sockets' queues are looked at until empty


class Worker:
    def __init__(self, config: Config, listeners: list[tuple[socket.socket, Address]], number: int,
                 status_fd: int, master_pid: int):
        self.config = config
        self.listeners = listeners
        self.number = number
        self.status_fd = status_fd
        self.master_pid = master_pid
        self.threaded = config.threads > 1
        self.connections: set[Connection] = set()
        self.servers: list = []
        self.starting: dict = {}         # server -> its start_serving() task (cancelled if a stop comes first)
        self.closed_servers: set = set()
        self.accepting = False           # stopping, but taking the connections still queued (_close_servers)
        self.serving = False             # the servers were started (a SIGTERM may come before)
        self.requests = 0
        self.request_numbers = itertools.count(1)     # next() is atomic: app threads count requests too
        self.stopping = False
        self.stop_asked = False          # a SIGTERM came while the app loaded (_stop_after_boot)
        self.stop_deadline = 0.0
        self.date_header = b""
        self.threads: AppThreads | None = None
        self.all_threads_stuck = False   # --harakiri: every app thread is in an overdue request (abandon)
        self.app_has_raised = False      # --reload-on-exception: retire once --min-worker-lifetime has passed
        self.turned_away = 0             # requests answered 503 by turn_away
        # --threads 1: a helper-thread exchange (Expect: 100-continue) holds the app; inline work waits.
        self.app_busy = False
        self.helpers = 0                 # --threads 1: helper-thread exchanges not done; one at a time
        self.waiting: list[Connection] = []
        self.streams = 0                 # Expect: 100-continue bodies streaming to the app (may_stream)
        self.static: StaticFiles | None = None      # static files answered before the app
        self.compression: Compression | None = None  # gzip for the answers
        self.started = time.monotonic()
        self.last_sweep = 0.0                        # when the connections' timeouts were last counted (_tick)
        self.harakiri: Harakiri | None = None
        self.app_clock: AppClock | None = None       # time in app code, for --harakiri, --cheaper and --stats
        # --stats: bytes sent, app exceptions, average response time (as uWSGI's stats server counts them)
        self.counters: RequestCounters | None = None
        self.times_requests = False                   # Exchange.started is set (access log, --stats)
        # --max-requests plus a per-worker random delta, so workers do not all recycle at once.
        self.retire_after = (config.max_requests + random.randint(0, config.max_requests_delta)
                             if config.max_requests else 0)

    # --- process entry point (after fork) ---
    def run(self) -> int:
        setup_error_log(f"worker {self.number}", self.config.log_prefix)
        # A crash in C code (an extension's segfault, abort()) leaves every thread's Python stack in the error log,
        # the app's frame among them, as uWSGI's backtrace does; the master then says which worker died. fd 2 is
        # the log (a reopened log is dup2'ed onto it).
        faulthandler.enable(file=sys.stderr, all_threads=True)
        faulthandler.register(STACK_DUMP_SIGNAL, file=sys.stderr, all_threads=True)
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_DFL)
        # A graceful stop while the app loads: connections may wait in this slot's queue already (its previous
        # worker died or retired), and they die with the last copy of the socket. The boot goes on, what is
        # queued is answered, then the worker stops (the master kills one whose boot outlasts the grace period).
        signal.signal(signal.SIGTERM, self._stop_after_boot)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])     # held since the fork (master.spawn)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)       # a status request while starting is no reason to die
        set_title(self.config, f"worker {self.number}")
        if self.config.limit_as:          # before the app is imported: its memory counts (checked by cli.py)
            resource.setrlimit(resource.RLIMIT_AS, (self.config.limit_as << 20,) * 2)
        try:
            self.app = load_app(self.config)
            # An app's logging setup must not silence the server's own lines (harakiri, tracebacks): Django's
            # LOGGING runs dictConfig, which disables every logger it does not name.
            log.disabled = False
            self.compression = Compression.from_config(self.config)
            self.static = StaticFiles.from_config(self.config, self.compression)
        except ConfigError as exc:
            self.report(f"error {exc}")
            return EXIT_BOOT_FAILED
        # What the app's import left (Django: its modules, settings, URLconf) lives as long as the worker:
        # out of the cyclic GC's sight, full collections stop walking it again and again. Measured with
        # callgrind on the demo's Django page: 100k fewer instructions per request (1.4%). Garbage from
        # the import is collected first, so nothing collectable is frozen.
        gc.collect()
        gc.freeze()
        self.loop = uvloop.new_event_loop() if uvloop else asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.base_environ = base_environ(multithread=self.threaded, multiprocess=self.config.processes > 1)
        if self.config.wsgi_disable_file_wrapper:
            del self.base_environ["wsgi.file_wrapper"]
        wsgi.configure(self.config)
        self.access_log = access_log_for(self.config, self.loop, self.number)
        if self.threaded:
            accepting = any(connection_class(address.protocol).direct_accept for _, address in self.listeners)
            self.threads = (AcceptingAppThreads if accepting else AppThreads)(self.config.threads, "app")
        if self.config.harakiri or self.config.cheaper or self.config.stats:
            self.app_clock = AppClock()
        if self.config.stats:
            self.counters = RequestCounters()
        self.times_requests = self.access_log is not None or self.counters is not None
        if self.config.harakiri:
            self.harakiri = Harakiri(self.config.harakiri, self, self.app_clock)
        self._tick()                     # the Date header exists before the first connection
        self.loop.run_until_complete(self._listen())
        # Plain handlers, not loop.add_signal_handler(): uvloop only dispatches signals while it runs, and
        # one arriving before run_forever() (a SIGTERM just after a recycled worker's fork) would be lost,
        # leaving the master waiting. These run in the main thread as soon as it runs Python code.
        signal.signal(signal.SIGTERM, lambda signum, frame: self.loop.call_soon_threadsafe(self.stop_gracefully))
        signal.signal(signal.SIGUSR1, lambda signum, frame: self.loop.call_soon_threadsafe(self.log_status))
        # Fast stop: exits from the handler, even while inline app code blocks the loop.
        signal.signal(signal.SIGINT, self._stop_now)
        signal.signal(signal.SIGQUIT, self._stop_now)
        # The kernel says when the master dies (SIGKILL, the OOM killer): the port is let go at once, even while
        # inline app code holds the loop thread (a restart would find it taken until that request ended).
        signal.signal(MASTER_DEATH_SIGNAL, self._master_died)
        _ask_for_signal_on_parent_death(MASTER_DEATH_SIGNAL)
        if os.getppid() != self.master_pid:
            self._master_died()                 # already, before the kernel was asked
        if self.config.py_autoreload and self.number == 1:
            watch_modules(self.config.py_autoreload, self.master_pid)     # the code as loaded, before serving
        self.report("ready")
        if self.config.cheaper or self.config.stats:
            threading.Thread(target=self._report_load, name="load-report", daemon=True).start()
        self.loop.call_soon(self._start_serving)
        if self.stop_asked:
            self.loop.call_soon(self.stop_gracefully)
        try:
            self.loop.run_forever()
        finally:
            if self.access_log is not None:
                self.access_log.flush()
        return 0

    def _stop_after_boot(self, signum, frame) -> None:
        if not any(queue_length(sock) for sock, _ in self.listeners):
            os._exit(0)                 # nothing waits for this worker: no reason to wait for the app to load
        self.stop_asked = True

    async def _listen(self) -> None:
        for sock, address in self.listeners:
            protocol_class = connection_class(address.protocol)
            protocol_class.configure(self.config)
            if self.app_clock is not None:
                protocol_class.exchange_class = timed(protocol_class.exchange_class)
            factory = functools.partial(protocol_class, self)
            if protocol_class.direct_accept:
                if self.threaded:       # the app threads accept, read and answer themselves (app_threads.py)
                    self.servers.append(ThreadAcceptor(self.loop, sock, factory, self.threads))
                else:
                    self.servers.append(DirectAcceptor(self.loop, sock, factory))
                continue
            if address.is_unix:
                server = await self.loop.create_unix_server(factory, sock=sock, backlog=self.config.listen,
                                                            start_serving=False)
            else:
                server = await self.loop.create_server(factory, sock=sock, backlog=self.config.listen,
                                                       start_serving=False)
            self.servers.append(server)

    def _start_serving(self) -> None:
        # WSGI apps are synchronous: inline app code must not see this loop as "running" in its thread,
        # or Django refuses every database call (SynchronousOnlyOperation) and asyncio.run() fails.
        # Done once, before the first connection: nothing of ours asks for the running loop later.
        asyncio._set_running_loop(None)
        if self.stopping:                # a SIGTERM came first: the servers are closed already
            return
        self.serving = True
        for server in self.servers:
            self.starting[server] = self.loop.create_task(server.start_serving())

    def report(self, message: str) -> None:
        try:
            os.write(self.status_fd, f"{os.getpid()} {message}\n".encode("utf-8", "replace")[:4000])
        except OSError:
            pass

    def _report_load(self) -> None:
        """--cheaper, --stats: every second, how busy this worker was (cheaper.py), its app time and the threads
        in the app now, and the request counters (stats.py), from a thread of its own, so that a request
        holding the loop thread still shows as load."""
        clock, counters, threads = self.app_clock, self.counters, self.config.threads
        busy = 0.0
        app_before, cpu_before, before = clock.busy_seconds(), _cpu_seconds(), time.monotonic()
        while True:
            time.sleep(LOAD_REPORT_INTERVAL)
            app, cpu, now = clock.busy_seconds(), _cpu_seconds(), time.monotonic()
            busy += busy_time(app - app_before, cpu - cpu_before, threads)
            busy_now = bool(clock.running) or cpu - cpu_before >= SATURATED * (now - before)
            app_before, cpu_before, before = app, cpu, now
            line = (f"load busy={busy:.6f} busy_now={int(busy_now)} app_time={app:.6f} app={len(clock.running)} "
                    f"requests={self.requests}")
            if counters is not None:
                line += f" tx={counters.tx} exceptions={counters.exceptions} avg_rt={counters.average_micros}"
            self.report(line)

    # --- per-connection environ ---
    def connection_environ(self, transport, server_address: bool = True) -> dict:
        """The environ keys a connection's requests share. `server_address=False` leaves out SERVER_NAME and
        SERVER_PORT (a web server in front sends its own; see add_server_address): one syscall less."""
        environ = self.base_environ.copy()
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            environ["REMOTE_ADDR"] = peer[0]
            environ["REMOTE_PORT"] = str(peer[1])
        else:                                   # unix socket: no peer address
            environ["REMOTE_ADDR"] = ""
        if server_address:
            add_server_address(environ, transport)
        return environ

    # --- running the app ---
    def submit(self, exchange) -> None:
        if self.all_threads_stuck:
            self.turn_away(exchange)
            return
        if self.threads is None:
            self.threads = AppThreads(1, "app-helper")
        if not self.threaded:
            self.app_busy = True
            self.helpers += 1
        self.threads.submit(exchange.run)

    def helper_done(self) -> None:
        """--threads 1: a helper-thread exchange gave the app back for good (its end, or its file handed to the
        loop's sendfile)."""
        self.helpers -= 1
        self.app_released()

    def lend_app(self) -> None:
        """--threads 1, on the helper thread: its request waits for the client (an upload's next bytes, room in the
        socket for its answer), so the loop may run other requests meanwhile. Not app time (--harakiri, --cheaper),
        as an inline answer paused for a slow client is not."""
        if self.app_clock is not None:
            self.app_clock.pause()
        self.loop.call_soon_threadsafe(self.app_released)

    def take_app_back(self) -> None:
        """The helper thread's wait is over: it runs app code again once no inline request does."""
        granted = threading.Event()
        self.loop.call_soon_threadsafe(self.reclaim_app, granted.set)
        granted.wait()
        if self.app_clock is not None:
            self.app_clock.resume()

    def may_stream(self) -> bool:
        """May an Expect: 100-continue body stream to the app (100 sent once it reads)? An app thread waiting on a
        client's upload must not be the last one: with --threads N, N-1 such uploads at most; with 1, one, as it
        lends the app to the loop while it waits (StreamingInput). Past that, the loop sends 100 itself and
        buffers the body, as nginx does."""
        if self.threaded:
            return self.streams < self.config.threads - 1
        # --threads 1: one helper thread runs such requests; while it runs one (its body whole, or lent to the
        # loop while it waits), the next upload is buffered and answered inline, one app call at a time.
        return self.streams == 0 and not self.app_busy

    def stream_started(self) -> None:
        self.streams += 1

    def stream_ended(self) -> None:
        self.streams -= 1

    def reclaim_app(self, granted) -> None:
        """The app thread of a streamed body (--threads 1) got its bytes: it runs app code again once no inline
        request does (this runs between the loop's callbacks, so none does now)."""
        self.app_busy = True
        granted()

    def wait_for_app(self, conn: Connection) -> None:
        if conn not in self.waiting:
            self.waiting.append(conn)

    def app_released(self) -> None:
        """The helper-thread exchange finished: connections that waited for the app go on, in order."""
        self.app_busy = False
        waiting, self.waiting = self.waiting, []
        for conn in waiting:
            conn.kick()

    def request_done(self, exchange, on_thread: bool) -> None:
        """Count and log an answered request; `on_thread`: called by the app thread that owns the connection."""
        if self.harakiri is not None and self.harakiri.ended(exchange):
            return      # harakiri logged it, answered 504 or cut: not the 200 its thread may finish with later
        number = self.requests = next(self.request_numbers)
        if number == self.retire_after and self._lived_min_lifetime():    # else _check_recycle, once it has
            reason = f"served {number} requests (--max-requests)"
            if on_thread:
                self.loop.call_soon_threadsafe(self.retire, reason)
            else:
                self.retire(reason)
        if self.counters is not None:
            self.counters.count(exchange)
        if self.access_log is not None:
            self.access_log.request(exchange, number, on_thread)

    def connection_closed(self, conn: Connection) -> None:
        """Called on the loop thread, or on the app thread that owned the connection."""
        if self.stopping and not self.connections:
            self._stop_when_drained()

    def _stop_when_drained(self) -> None:
        # Not at once: a connection uvloop accepted just before its server closed gets connection_made()
        # from the ready queue, and stopping before that abandons it, request unanswered (a test saw
        # "Remote end closed connection without response" during --max-worker-lifetime recycling).
        # One pass later (the queue is FIFO) it has registered, or there was none. Thread-safe: an app
        # thread closing the connection it owned calls this too.
        self.loop.call_soon_threadsafe(self._stop_if_drained)

    def _stop_if_drained(self) -> None:
        if not self.connections and not self.accepting:
            self.loop.stop()

    # --- sendfile: zero-copy for wsgi.file_wrapper over a real file ---
    def sendfile(self, conn: Connection, fd: int, offset: int, count: int, on_done) -> None:
        """Send `count` bytes of the file from `offset`, paced by the socket; then on_done(bytes not sent)."""
        # A dup of the socket: the transport owns the original fd in the loop's poller.
        out_fd = os.dup(conn.transport.get_extra_info("socket").fileno())
        position = [offset, count]

        def finish(complete: bool) -> None:
            conn.file_sender = None
            self.loop.remove_writer(out_fd)
            os.close(out_fd)
            if not complete and not conn.closed:
                # A truncated body can only be signalled by closing. Closed from now on: uvloop tells the protocol
                # only on a later pass, and meanwhile a pipelined request must not start a send on the dead socket
                # (its file and a dup of the socket were held until the client closed).
                conn.abort_after_response()
                conn.transport.abort()
                conn.closed = True
            on_done(position[1])

        def step() -> None:
            if conn.closed:
                return finish(False)
            if conn.transport.get_write_buffer_size():
                return                      # the head is still queued; wait for writability
            while position[1] > 0:
                try:
                    sent = os.sendfile(out_fd, fd, position[0], min(position[1], 1 << 22))
                except BlockingIOError:
                    return
                except OSError as exc:
                    log.info("sendfile stopped: %s", exc)
                    return finish(False)
                if sent == 0:
                    log.error("file shrank while being sent; connection closed")
                    return finish(False)
                position[0] += sent
                position[1] -= sent
                conn.send_stalled = 0
            finish(True)

        conn.file_sender = FileSender(finish)
        self.loop.add_writer(out_fd, step)
        step()

    # --- timers ---
    def _tick(self) -> None:
        now = time.time()
        second = math.floor(now + 0.1)   # a timer firing a little early still belongs to this second
        self.date_header = f"Date: {formatdate(second, usegmt=True)}\r\n".encode()
        # Every timeout counts these sweeps: they are at least SWEEP_GAP apart, also after a late timer (inline
        # app code held the loop past a second boundary), whose successor comes sooner to keep Date on time.
        monotonic_now = time.monotonic()
        if monotonic_now - self.last_sweep >= SWEEP_GAP:
            self.last_sweep = monotonic_now
            for conn in list(self.connections):
                if not conn.owned_by_thread:        # an app thread is at work on it: nothing to time out
                    conn.tick()
        self._check_recycle()
        reopen_log_if_moved()            # rotated by the master (--log-maxsize), or moved by logrotate
        if self.stopping and time.monotonic() > self.stop_deadline:
            log.warning("graceful stop timed out with %d connections open", len(self.connections))
            self._cut_answers_under_way()
            self.loop.stop()
        elif os.getppid() != self.master_pid:
            self._master_gone()
        self.loop.call_later(second + 1 - now, self._tick)     # aligned: the Date header changes on time

    def _cut_answers_under_way(self) -> None:
        """The graceful stop's deadline: answers not done end with a reset at exit (a FIN would make a body
        delimited by the close, as HTTP/1.0's and uwsgi's are, look whole to nginx or a cache); a paused inline
        stream's close() runs, and the request is logged."""
        for conn in list(self.connections):
            if conn.active is not None and not conn.closed:
                conn.end_at_exit()

    # --- recycling and stopping ---
    def _check_recycle(self) -> None:
        if self.stopping:
            return
        config = self.config
        lifetime = config.max_worker_lifetime + (self.number - 1) * config.max_worker_lifetime_delta
        if config.max_worker_lifetime and time.monotonic() - self.started > lifetime:
            self.retire(f"lived {lifetime} s (--max-worker-lifetime)")
        elif not self._lived_min_lifetime():
            return
        elif self.requests >= self.retire_after > 0:       # reached before --min-worker-lifetime
            self.retire(f"served {self.requests} requests (--max-requests)")
        elif self.app_has_raised:
            self.retire(_RAISED)
        elif (config.reload_on_rss or config.reload_on_as) and self.requests:
            # Only once it served (as uWSGI checks after a request): a fresh worker already over the
            # limit would otherwise retire before accepting anything, and be replaced in a loop.
            size, resident = (value >> 20 for value in memory())
            if config.reload_on_rss and resident > config.reload_on_rss:
                self.retire(f"resident memory {resident} MB over {config.reload_on_rss} MB (--reload-on-rss)")
            elif config.reload_on_as and size > config.reload_on_as:
                self.retire(f"address space {size} MB over {config.reload_on_as} MB (--reload-on-as)")

    def app_raised(self) -> None:
        """--reload-on-exception, on the loop thread: retire now, or once --min-worker-lifetime has passed (an app
        that raises on every request, its database down say, would fork a worker per request)."""
        self.app_has_raised = True
        if self._lived_min_lifetime():
            self.retire(_RAISED)

    def _lived_min_lifetime(self) -> bool:
        return time.monotonic() - self.started >= self.config.min_worker_lifetime

    def retire(self, reason: str) -> None:
        """Recycle: the master starts a successor at once; this worker finishes what it has, then exits."""
        if self.stopping:
            return
        self.report(f"retiring {reason}")
        self.stop_gracefully()

    def abandon(self, exchanges: list, reason: str) -> None:
        """--harakiri answered these exchanges (504) or cut them (their head was sent); their threads stay stuck in
        the app. Their connections end now: nothing the threads produce later reaches the client (a cut one ends
        with a reset). The worker retires without waiting for them: what its other threads run finishes first."""
        for exchange in exchanges:
            conn = exchange.conn
            self.connections.discard(conn)
            if not conn.closed:
                conn.end_now(reset=id(exchange) in self.harakiri.cut)
        self.retire(reason)
        stuck = sum(1 for _, running in list(self.app_clock.running.values()) if self.harakiri.ended(running))
        if stuck >= self.config.threads:
            # No thread will take what waits for one: a 503 now (a client or nginx may try again, reaching the
            # successor), not a reset at the end of --reload-mercy. What comes later is answered so at once too.
            self.all_threads_stuck = True
            for job in self.threads.take_queued():
                self.turn_away(job.__self__)
        if not self.connections:
            self._stop_when_drained()

    def turn_away(self, exchange) -> None:
        """An exchange no app thread will run: 503, and its connection closes (said once per worker: in an
        outage every request would say it)."""
        if not self.turned_away:
            log.warning("%s %s and what comes after it turned away (503): every app thread of worker %d is stuck "
                        "past --harakiri", exchange.environ.get("REQUEST_METHOD"),
                        exchange.environ.get("REQUEST_URI"), self.number)
        self.turned_away += 1
        exchange.conn.refuse(exchange, 503, "every app thread is stuck; try again")

    def stop_gracefully(self) -> None:
        """Stop accepting (the other workers and the successor still do), finish what was read, then exit."""
        if self.stopping:
            return
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.config.reload_mercy
        # Connections drain by themselves: responses now say `Connection: close` (those under way too, whose head
        # is not sent yet: Exchange._head), and idle ones are closed by their tick() after a second without a
        # request (never mid-request: no resets).
        self._close_servers()

    def _close_servers(self) -> None:
        """Stop accepting. When the whole server stops, the master has had the kernel take no new connection
        (reuseport.refuse_new_connections) and leaves what is queued to the workers: that is accepted first,
        as a listening socket's last close resets its queue, requests sent. (On a reload or a recycle the
        socket lives on: the successor takes what comes.) Checked again until then, within the graceful stop."""
        self.accepting = False
        for server, (sock, _) in zip(self.servers, self.listeners):
            if server in self.closed_servers:
                continue
            if (self.serving and refuses_new_connections(sock) and queue_length(sock)
                    and time.monotonic() < self.stop_deadline):
                self.accepting = True
            else:
                start = self.starting.pop(server, None)
                if start is not None and not start.done():
                    start.cancel()      # a SIGTERM right after the start: it would listen on a closed socket
                server.close()
                self.closed_servers.add(server)
        if self.accepting:
            self.loop.call_later(QUEUE_CHECK, self._close_servers)
        elif not self.connections:
            self._stop_when_drained()

    def _master_died(self, signum=None, frame=None) -> None:
        if os.getppid() == self.master_pid:
            return                      # not the kernel's word: the master lives
        for sock, address in self.listeners:
            if address.inherited:
                continue                # systemd's: it lives on for the next server
            try:
                sock.shutdown(socket.SHUT_RDWR)      # stops listening, for every process holding the socket
            except OSError:
                pass
        self.loop.call_soon_threadsafe(self._master_gone)

    def _master_gone(self) -> None:
        if not self.stopping:
            log.error("the master is gone; stopping")
            self.stop_gracefully()

    def _stop_now(self, signum, frame) -> None:
        """SIGINT/SIGQUIT: fast stop, in-flight requests are abandoned."""
        try:
            if self.access_log is not None:
                self.access_log.flush()
            sys.stderr.flush()
        finally:
            os._exit(0)

    def log_status(self) -> None:
        active = sum(1 for conn in self.connections if conn.active is not None)
        log.info("status: worker %d served %d requests; %d connections open, %d requests running; RSS %.0f MB",
                 self.number, self.requests, len(self.connections), active, memory()[1] / 1048576)


def _cpu_seconds() -> float:
    """User and system CPU time of this process, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class FileSender:
    """A sendfile under way on a connection: what --send-timeout cancels (Connection.send_stall_tick)."""

    def __init__(self, finish):
        self.finish = finish

    def cancel(self) -> None:
        self.finish(False)


class RequestCounters:
    """--stats: what uWSGI's stats server counts per worker besides requests (app threads count too: locked)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.tx = 0                     # body bytes sent
        self.exceptions = 0             # exceptions raised by the app
        self.average_micros = 0         # response time, averaged as uWSGI does: (average + last) / 2

    def count(self, exchange) -> None:
        micros = int((time.monotonic() - exchange.started) * 1e6)
        with self.lock:
            self.tx += exchange.body_bytes
            self.average_micros = (self.average_micros + micros) // 2

    def exception(self) -> None:
        with self.lock:
            self.exceptions += 1


def _ask_for_signal_on_parent_death(signum: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):
        pass                            # not Linux: the once-a-second check (_tick) still sees it


def worker_main(config: Config, listeners, number: int, status_fd: int, master_pid: int) -> int:
    try:
        return Worker(config, listeners, number, status_fd, master_pid).run()
    except BaseException:
        log.exception("worker %d crashed", number)
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
