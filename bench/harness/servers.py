"""The server table: one entry per server under test.

To add a server, append a `Server` with a function that returns its argv for a
given port, number of processes, app and listening protocol. Everything else
(install check, start, readiness, stop, report rows, chart bars) is driven from
this table, in every scenario:

- throughput: every server, HTTP, the hello world;
- reload: the servers with a `reload_signal`, sent to the master (the process the harness started);
- nginx: each server once per key in `nginx` (an upstream of harness/nginx.py: how nginx talks to it).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from collections.abc import Callable

from .apps import HELLO, App
from .paths import launcher, venv_bin, venv_python

HOST = "127.0.0.1"

Argv = Callable[..., list[str]]  # (port, processes, app=HELLO, listen="http"[, threads]) -> argv


@dataclass(frozen=True)
class Server:
    name: str  # as shown in the report
    dist: str  # PyPI distribution: its version goes in the report, its install error fails the server
    argv: Argv
    multi_process: bool = True  # False: only run in the 1-process configuration
    default: bool = True  # False: run only when named with --servers (a variant kept for reference)
    notes: str = ""  # one line for the report: what was done to keep it fair
    reload_signal: signal.Signals | None = None  # graceful reload: this signal to the master; None = has none
    reload_notes: str = ""  # the reload scenario's line for the report (flags, mechanism)
    nginx: tuple[str, ...] = ()  # upstream keys (harness/nginx.py) this server is run behind nginx with

    @property
    def slug(self) -> str:
        return self.name.lower().replace(" ", "-")

    def supports(self, processes: int) -> bool:
        return processes == 1 or self.multi_process


def _listen_flag(flags: dict[str, str], listen: str) -> str:
    if listen not in flags:
        raise ValueError(f"cannot listen for {listen!r} (only {', '.join(flags)})")
    return flags[listen]


def _http_only(listen: str) -> None:
    _listen_flag({"http": ""}, listen)


def _wsgistack(port: int, n: int, app: App = HELLO, listen: str = "http", threads: int = 1) -> list[str]:
    flag = _listen_flag({"http": "--http", "uwsgi": "--socket", "fastcgi": "--fastcgi-socket"}, listen)
    return [venv_bin("wsgistack"), flag, f"{HOST}:{port}", *app.uwsgi_args(),
            "--processes", str(n), "--threads", str(threads), "--disable-logging"]


def _launcher(script: str) -> Argv:
    def argv(port: int, n: int, app: App = HELLO, listen: str = "http") -> list[str]:
        _http_only(listen)
        return [venv_python(), launcher(script), "--host", HOST, "--port", str(port),
                "--processes", str(n), "--app", f"{app.file}:application"]
    return argv


def _granian(port: int, n: int, app: App = HELLO, listen: str = "http") -> list[str]:
    _http_only(listen)
    return [venv_bin("granian"), "--interface", "wsgi", "--http", "1", "--host", HOST, "--port", str(port),
            "--workers", str(n), "--no-access-log", "--log-level", "warning",
            "--working-dir", str(app.directory), app.target]


def _uwsgi(*http_extra: str) -> Argv:
    """`http_extra` only applies to its HTTP socket (behind nginx it speaks the uwsgi protocol)."""
    def argv(port: int, n: int, app: App = HELLO, listen: str = "http", threads: int = 1) -> list[str]:
        flag = _listen_flag({"http": "--http11-socket", "uwsgi": "--socket"}, listen)
        return [venv_bin("uwsgi"), flag, f"{HOST}:{port}", *app.uwsgi_args(),
                "--master", "--processes", str(n), *(("--threads", str(threads)) if threads > 1 else ()),
                "--disable-logging", "--die-on-term", "--need-app", "--single-interpreter",
                *(http_extra if listen == "http" else ())]
    return argv


def _gunicorn(*worker_args: str) -> Argv:
    def argv(port: int, n: int, app: App = HELLO, listen: str = "http") -> list[str]:
        _http_only(listen)
        return [venv_bin("gunicorn"), "-w", str(n), *worker_args, "-b", f"{HOST}:{port}",
                "--chdir", str(app.directory), "--log-level", "warning", app.target]
    return argv


_GUNICORN_HUP = ("the arbiter re-reads its config, starts new workers (which import the app afresh: no "
                 "--preload) and gracefully stops the old ones (--graceful-timeout, default 30 s)")

SERVERS: list[Server] = [
    Server("wsgistack", "wsgistack", _wsgistack, notes="uWSGI-style flags, 1 thread per process, logging off",
           reload_signal=signal.SIGHUP,
           reload_notes="starts a new generation of workers with freshly imported code and stops the old ones "
                        "only once the new ones serve (`wsgistack --reload PIDFILE` sends the same SIGHUP and waits)",
           nginx=("uwsgi", "uwsgi-threads", "fastcgi", "http-keepalive")),
    Server("FastWSGI", "fastwsgi", _launcher("fastwsgi_server.py"),
           notes="launchers/fastwsgi_server.py: fastwsgi.run(workers=N) (SO_REUSEPORT per worker), TCP_NODELAY on",
           reload_notes="no graceful reload mechanism"),
    Server("bjoern", "bjoern", _launcher("bjoern_server.py"),
           notes="launchers/bjoern_server.py: listen(), fork N-1 times, run() in each",
           reload_notes="no graceful reload mechanism"),
    Server("Granian", "granian", _granian, notes="--interface wsgi --http 1, default runtime/blocking threads",
           reload_signal=signal.SIGHUP,
           reload_notes="SIGHUP respawns the workers one at a time: start a new one, wait --respawn-interval "
                        "(default 3.5 s), stop the old one; a HUP arriving meanwhile is merged into one more "
                        "reload (its --reload flag is a file watcher for development, not a signal)"),
    Server("uWSGI", "uwsgi", _uwsgi("--add-header", "Connection: close"),
           notes="--http11-socket, no threads, logging off, keep-alive off (see 'uWSGI keep-alive')",
           reload_signal=signal.SIGHUP,
           reload_notes="--master (needed for reloads) and --die-on-term (SIGTERM stops, SIGHUP reloads): the "
                        "workers finish their requests (--worker-reload-mercy, default 60 s), then the master "
                        "re-execs itself keeping the listening socket; new connections wait in its backlog. "
                        "(uWSGI's one-worker-at-a-time alternative, chain reload: --lazy-apps + --touch-chain-reload "
                        "or the master FIFO's `c`, is not a signal and not measured here)",
           nginx=("uwsgi", "uwsgi-threads")),
    Server("uWSGI keep-alive", "uwsgi", _uwsgi(), default=False,
           notes="as uWSGI but keep-alive on: each sync worker then holds one of wrk's connections and "
                 "starves the other 63 and any new client, so req/s measures N connections only",
           reload_signal=signal.SIGHUP, reload_notes="as uWSGI"),
    Server("gunicorn sync", "gunicorn", _gunicorn("-k", "sync"), notes="sync worker closes every connection",
           reload_signal=signal.SIGHUP, reload_notes=_GUNICORN_HUP, nginx=("http",)),
    Server("gunicorn gthread", "gunicorn", _gunicorn("-k", "gthread", "--threads", "4"), notes="4 threads per worker",
           reload_signal=signal.SIGHUP, reload_notes=_GUNICORN_HUP),
]

REFERENCE = "wsgistack"  # the server all ratios are taken against


def by_name(names: list[str] | None) -> list[Server]:
    """The servers to run: the default ones, or those named (by name or slug; "all" = every one)."""
    if not names:
        return [s for s in SERVERS if s.default]
    wanted = {n.strip().lower() for n in names}
    if "all" in wanted:
        return SERVERS
    picked = [s for s in SERVERS if s.name.lower() in wanted or s.slug in wanted]
    unknown = wanted - {s.name.lower() for s in picked} - {s.slug for s in picked}
    if unknown:
        known = ", ".join(s.slug for s in SERVERS)
        raise SystemExit(f"unknown server(s): {', '.join(sorted(unknown))}; known: {known}")
    return picked
