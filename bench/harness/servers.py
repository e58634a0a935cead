"""The server table: one entry per server under test.

To add a server, append a `Server` with a function that returns its argv for a
given port and number of processes. Everything else (install check, start,
readiness, stop, report rows, chart bars) is driven from this table.

Fields meant for later scenarios (graceful reload, a front proxy) belong here
too, e.g. a `reload_signal`, so that each scenario stays a loop over this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable

from .paths import APP_FILE, APP_MODULE, APPS, launcher, venv_bin, venv_python

HOST = "127.0.0.1"

Argv = Callable[[int, int], list[str]]  # (port, processes) -> argv


@dataclass(frozen=True)
class Server:
    name: str  # as shown in the report
    dist: str  # PyPI distribution: its version goes in the report, its install error fails the server
    argv: Argv
    multi_process: bool = True  # False: only run in the 1-process configuration
    default: bool = True  # False: run only when named with --servers (a variant kept for reference)
    notes: str = ""  # one line for the report: what was done to keep it fair

    @property
    def slug(self) -> str:
        return self.name.lower().replace(" ", "-")

    def supports(self, processes: int) -> bool:
        return processes == 1 or self.multi_process


def _wsgistack(port: int, n: int) -> list[str]:
    return [venv_bin("wsgistack"), "--http", f"{HOST}:{port}", "--wsgi-file", str(APP_FILE),
            "--processes", str(n), "--threads", "1", "--disable-logging"]


def _launcher(script: str) -> Argv:
    def argv(port: int, n: int) -> list[str]:
        return [venv_python(), launcher(script), "--host", HOST, "--port", str(port),
                "--processes", str(n), "--app", f"{APP_FILE}:application"]
    return argv


def _granian(port: int, n: int) -> list[str]:
    return [venv_bin("granian"), "--interface", "wsgi", "--http", "1", "--host", HOST, "--port", str(port),
            "--workers", str(n), "--no-access-log", "--log-level", "warning",
            "--working-dir", str(APPS), APP_MODULE]


def _uwsgi(*extra: str) -> Argv:
    def argv(port: int, n: int) -> list[str]:
        return [venv_bin("uwsgi"), "--http11-socket", f"{HOST}:{port}", "--wsgi-file", str(APP_FILE),
                "--master", "--processes", str(n), "--disable-logging", "--die-on-term", "--need-app",
                "--single-interpreter", *extra]
    return argv


def _gunicorn(*worker_args: str) -> Argv:
    def argv(port: int, n: int) -> list[str]:
        return [venv_bin("gunicorn"), "-w", str(n), *worker_args, "-b", f"{HOST}:{port}",
                "--chdir", str(APPS), "--log-level", "warning", APP_MODULE]
    return argv


SERVERS: list[Server] = [
    Server("wsgistack", "wsgistack", _wsgistack, notes="uWSGI-style flags, 1 thread per process, logging off"),
    Server("FastWSGI", "fastwsgi", _launcher("fastwsgi_server.py"),
           notes="launchers/fastwsgi_server.py: fastwsgi.run(workers=N) (SO_REUSEPORT per worker), TCP_NODELAY on"),
    Server("bjoern", "bjoern", _launcher("bjoern_server.py"),
           notes="launchers/bjoern_server.py: listen(), fork N-1 times, run() in each"),
    Server("Granian", "granian", _granian, notes="--interface wsgi --http 1, default runtime/blocking threads"),
    Server("uWSGI", "uwsgi", _uwsgi("--add-header", "Connection: close"),
           notes="--http11-socket, no threads, logging off, keep-alive off (see 'uWSGI keep-alive')"),
    Server("uWSGI keep-alive", "uwsgi", _uwsgi(), default=False,
           notes="as uWSGI but keep-alive on: each sync worker then holds one of wrk's connections and "
                 "starves the other 63 and any new client, so req/s measures N connections only"),
    Server("gunicorn sync", "gunicorn", _gunicorn("-k", "sync"), notes="sync worker closes every connection"),
    Server("gunicorn gthread", "gunicorn", _gunicorn("-k", "gthread", "--threads", "4"), notes="4 threads per worker"),
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
