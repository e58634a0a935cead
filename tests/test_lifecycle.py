"""The server's lifecycle, end to end with the real `wsgistack` command: the seed's uwsgi.ini files
(daemonized Django over the uwsgi protocol), pidfile, daemonize, vacuum, unix socket modes, uid/gid,
process titles, every signal, `--stop`/`--reload`, harakiri, recycling, crash recovery, sd_notify,
and reloads/recycles/stops under load.

Everything is bounded: every wait has a timeout, load runs for a fixed time on 127.0.0.1, and every
process started here is stopped at teardown (daemons through their pidfile, SIGKILL as a last resort).
"""

from __future__ import annotations

import grp
import http.client
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from rawhttp import RawConnection
from seed_configs import SEED_ANNOTATED, SEED_PLAIN
from conftest import APPS, WSGISTACK, free_port, wait_for_unix_socket, wait_until
from wsgistack.protocols.uwsgi_codec import encode_uwsgi_request

ROOT = Path(__file__).resolve().parent.parent
MMCSITE = ROOT / "examples" / "mmcsite"

# A tiny app whose answer says which version of its code runs (for reload tests).
VERSIONED_APP = '''\
import os

VERSION = {version!r}


def application(environ, start_response):
    body = f"{{os.getpid()}} {{VERSION}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


# --- helpers ---------------------------------------------------------------------------------------

def run_cli(*args, cwd=None, env=None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(WSGISTACK + [str(arg) for arg in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def get(port: int, path: str, timeout: float = 15.0) -> tuple[int, bytes]:
    """One request on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def serving(server, count: int, timeout: float = 30.0) -> set[int]:
    """Wait until `count` workers run and each has answered (start_server returns once the master
    listens, before the workers are ready); return their pids. Apps answer with their pid first."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = set(server.workers())
        if len(workers) == count and workers <= seen:
            return workers
        status, body = get(server.port, "/pid")
        assert status == 200, body
        seen.add(int(re.match(rb"\D*(\d+)", body)[1]))
    raise AssertionError(f"not all of {count} workers serving after {timeout} s: {server.workers()}, saw {seen}")


def successors(server, old: set[int], count: int, timeout: float = 20.0) -> set[int]:
    """After a reload: `count` workers, none of `old` left. "reload complete" is logged (and `--reload` returns)
    once the old workers were sent their SIGTERM: one the machine has not run since may still take a connection
    from the slot's socket it shares with its successor, and answer it with the old code."""
    return set(wait_until(lambda: (lambda w: w if len(w) == count and not w & old else None)(set(server.workers())),
                          timeout=timeout, what=f"{count} new workers alone"))


def master_caught_up(server) -> None:
    """The master logs some things before it does them (a slot steered clear once its worker cannot start): a SIGUSR1
    status line, which its loop writes only once done with what it was handling, says they are done."""
    count = server.log().count("status: master ")
    os.kill(server.pid, signal.SIGUSR1)
    wait_until(lambda: server.log().count("status: master ") > count, what="the master's status line")


def alive(pid: int) -> bool:
    """Running (a zombie, exited but not reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def proc_ids(pid: int, field: str) -> list[int]:
    """The four ids (real, effective, saved, filesystem) of the Uid: or Gid: line of /proc/PID/status."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return [int(value) for value in line.split()[1:]]
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def unused_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as handle:
        pid_max = int(handle.read())
    for pid in range(pid_max - 1, 300, -1):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    raise AssertionError("no free pid")


def is_listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def write_app(path: Path, version: str) -> None:
    path.write_text(VERSIONED_APP.format(version=version))


def uwsgi_get(port: int | Path, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """A GET over the uwsgi protocol (a TCP port or a unix socket), with the vars nginx's uwsgi_params send;
    (status, body)."""
    target, _, query = path.partition("?")
    variables = {"REQUEST_METHOD": "GET", "REQUEST_URI": path, "PATH_INFO": target, "QUERY_STRING": query,
                 "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "http", "SERVER_NAME": "127.0.0.1",
                 "SERVER_PORT": "8888", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000",
                 "HTTP_HOST": "127.0.0.1", "CONTENT_TYPE": "", "CONTENT_LENGTH": ""}
    with _connect(port, timeout) as sock:
        sock.sendall(encode_uwsgi_request(variables))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _connect(address: int | Path, timeout: float) -> socket.socket:
    if isinstance(address, int):
        return socket.create_connection(("127.0.0.1", address), timeout=timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(address))
    except OSError:
        sock.close()
        raise
    return sock


def unix_http_get(path: Path, target: str, timeout: float = 10.0) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class Outcome:
    thread: int
    sent: float                 # monotonic time the request was about to be written
    done: float = 0.0
    status: int | None = None
    body: bytes = b""
    error: str | None = None


class LoadClient:
    """Threads, each on a persistent HTTP/1.1 connection (reconnecting only when the server said
    `Connection: close`, or after an error), sending GETs back to back; every outcome is recorded.
    Bounded: it stops on stop() or after max_seconds."""

    def __init__(self, port: int, path: str = "/pid", threads: int = 4, max_seconds: float = 60.0):
        self.port, self.path, self.count, self.max_seconds = port, path, threads, max_seconds
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> "LoadClient":
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.halt.set()
        for thread in self.threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in self.threads), "load client threads did not stop"

    def _run(self, index: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        conn = None
        while not self.halt.is_set() and time.monotonic() < deadline:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            outcome = Outcome(index, time.monotonic())
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                outcome.body = response.read()
                outcome.status = response.status
                if response.will_close:
                    conn.close()
                    conn = None
            except Exception as exc:      # noqa: BLE001 - every failure is an outcome to count
                outcome.error = f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = None
            outcome.done = time.monotonic()
            with self.lock:
                self.outcomes.append(outcome)
            if outcome.error:
                time.sleep(0.05)          # bounded retry pace after a failure
        if conn is not None:
            conn.close()

    def snapshot(self) -> list[Outcome]:
        with self.lock:
            return list(self.outcomes)

    def ok(self) -> list[Outcome]:
        return [o for o in self.snapshot() if o.status == 200]

    def errors(self) -> list[Outcome]:
        return [o for o in self.snapshot() if o.error is not None or o.status != 200]


def start_wrk(port: int, path: str = "/pid", connections: int = 8, seconds: int = 120) -> subprocess.Popen:
    """wrk on keep-alive connections; stop it with SIGINT (it then prints its report)."""
    return subprocess.Popen(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                             f"http://127.0.0.1:{port}{path}"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)


def finish_wrk(proc: subprocess.Popen, interrupt: bool = True) -> dict:
    if interrupt and proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate(timeout=10)
        raise AssertionError(f"wrk did not finish:\n{output}")
    return parse_wrk(output)


def parse_wrk(output: str) -> dict:
    requests = re.search(r"(\d+) requests in", output)
    assert requests, f"no wrk report:\n{output}"
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    connect, read, write, timeout = (int(n) for n in errors.groups()) if errors else (0, 0, 0, 0)
    return {"requests": int(requests[1]), "connect": connect, "read": read, "write": write,
            "timeout": timeout, "non_2xx": int(non_2xx[1]) if non_2xx else 0, "output": output}


def assert_wrk_clean(report: dict, minimum_requests: int) -> None:
    counts = {key: report[key] for key in ("connect", "read", "write", "timeout", "non_2xx")}
    assert counts == dict.fromkeys(counts, 0), f"wrk saw failures {counts}:\n{report['output']}"
    assert report["requests"] >= minimum_requests, report["output"]


@pytest.fixture
def daemons():
    """Pidfiles of daemonized servers: whatever still runs at teardown is stopped (TERM, then KILL)."""
    pidfiles: list[Path] = []
    yield pidfiles
    for pidfile in pidfiles:
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        if not alive(pid) or "wsgistack" not in cmdline(pid):
            continue
        group = os.getpgid(pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if group != os.getpgid(0):      # the daemon's own process group (its session): workers too
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory) -> Path:
    """The demo's SQLite database, migrated once (`manage.py migrate`), copied by each test."""
    directory = tmp_path_factory.mktemp("mmcsite-db")
    db = directory / "db.sqlite3"
    result = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=MMCSITE,
                            env={**os.environ, "DEMO_DB": str(db)}, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return db


# --- the seed's uwsgi.ini files: a daemonized Django project over the uwsgi protocol ----------------

@pytest.mark.parametrize("seed", [SEED_PLAIN, SEED_ANNOTATED], ids=["plain", "annotated"])
def test_seed_uwsgi_ini_serves_django_daemonized_and_stops(seed, tmp_path, migrated_db, daemons):
    site = tmp_path / "mmcsite"           # laid out as the seed's /code/mmcsite
    shutil.copytree(MMCSITE, site, ignore=shutil.ignore_patterns("db.sqlite3", "uwsgi.ini", "__pycache__"))
    db = tmp_path / "db.sqlite3"
    shutil.copyfile(migrated_db, db)
    env = {**os.environ, "DEMO_DB": str(db)}
    assert subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "--check"], cwd=site, env=env,
                          capture_output=True, timeout=120).returncode == 0
    port = free_port()
    ini = seed.replace("/code/mmcsite", str(site)).replace("3031", str(port))
    (site / "uwsgi.ini").write_text(ini, encoding="utf-8")
    pidfile = site / "uwsgi.pid"
    daemons.append(pidfile)

    result = run_cli("--ini", "uwsgi.ini", cwd=site, env=env, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "ready" in result.stdout and "5 processes x 30 threads" in result.stdout, result.stdout
    # The seed names both wsgi-file (which does not exist there) and module: a warning, not a failure.
    assert re.search(rf"warning: wsgi-file '{re.escape(str(site))}/wsgi.py' does not exist; "
                     r"serving module 'mmcsite.wsgi'", result.stderr), result.stderr
    master = int(pidfile.read_text())
    assert alive(master) and "wsgistack master" in cmdline(master)
    assert os.getsid(master) != os.getsid(0), "a daemon is detached into its own session"

    status, body = uwsgi_get(port, "/")   # no retry: the command returned, so it is serving
    assert status == 200, body[:500]
    assert b"mmcsite on wsgistack" in body and b'id="count">0<' in body
    status, body = uwsgi_get(port, "/?record=1")
    assert status == 200 and b'id="count">1<' in body, body[:500]
    workers = wait_until(lambda: (lambda c: c if len(c) == 5 else None)(children(master)), timeout=60,
                         what="5 workers")
    log = (site / "uwsgi.log").read_text()
    assert "serving uwsgi on 0.0.0.0:" in log

    stop = run_cli("--stop", "uwsgi.pid", cwd=site, timeout=90)

    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert f"stopped (master {master})" in stop.stdout
    assert not alive(master)
    assert not any(alive(pid) for pid in workers)
    assert not is_listening(port)


# --- pidfile, daemonize, vacuum, unix sockets, uid/gid, titles --------------------------------------

def test_pidfile_is_written_by_the_master_and_vacuumed(start_server, tmp_path):
    pidfile = tmp_path / "server.pid"
    server = start_server("--pidfile", str(pidfile), "--vacuum", "-p", "2")
    wait_until(pidfile.exists, what="the pidfile (written just after the sockets are bound: they answer first)")
    assert pidfile.read_text() == f"{server.pid}\n"
    assert server.stop() == 0
    assert not pidfile.exists(), "--vacuum removes the pidfile on exit"


def test_pidfile_stays_without_vacuum(start_server, tmp_path):
    pidfile = tmp_path / "server.pid"
    server = start_server("--pidfile", str(pidfile))
    wait_until(pidfile.exists, what="the pidfile")
    assert int(pidfile.read_text()) == server.pid
    assert server.stop() == 0
    assert pidfile.exists()


def test_daemonize_returns_once_serving(tmp_path, daemons):
    port, logfile, pidfile = free_port(), tmp_path / "daemon.log", tmp_path / "daemon.pid"
    daemons.append(pidfile)

    result = run_cli("--http", f"127.0.0.1:{port}", "--wsgi-file", APPS / "basic.py", "-p", "2",
                     "--daemonize", logfile, "--pidfile", pidfile, "--vacuum")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("wsgistack: ready") and str(logfile) in result.stdout
    master = int(pidfile.read_text())
    assert os.getsid(master) != os.getsid(0)
    status, body = get(port, "/pid")      # no retry: serving when the command returned
    assert status == 200 and int(body) in children(master)
    wait_until(lambda: "GET /pid" in logfile.read_text(), what="the access log goes to the daemon's log file")

    stop = run_cli("--stop", pidfile)
    assert stop.returncode == 0 and f"stopped (master {master})" in stop.stdout, stop.stdout + stop.stderr
    assert not alive(master)
    assert not pidfile.exists()
    assert f"master {master} exiting with status 0" in logfile.read_text()


def test_daemonize_with_a_broken_app_fails_with_the_error(tmp_path, daemons):
    port, logfile, pidfile = free_port(), tmp_path / "daemon.log", tmp_path / "daemon.pid"
    daemons.append(pidfile)

    result = run_cli("--http", f"127.0.0.1:{port}", "--wsgi-file", APPS / "broken_import.py",
                     "--daemonize", logfile, "--pidfile", pidfile)

    assert result.returncode != 0
    assert "error" in result.stderr and "wsgi-file" in result.stderr
    assert "this app fails while being imported" in result.stderr, result.stderr
    assert str(logfile) in result.stderr
    assert "Traceback" in logfile.read_text()
    if pidfile.exists():
        wait_until(lambda: not alive(int(pidfile.read_text())), what="the failed daemon exits")
    wait_until(lambda: not is_listening(port), what="the port is released")


def test_daemonize_interrupted_while_waiting_leaves_the_daemon_starting(tmp_path, daemons):
    port, logfile, pidfile, go = free_port(), tmp_path / "daemon.log", tmp_path / "daemon.pid", tmp_path / "go"
    daemons.append(pidfile)
    app = tmp_path / "held_app.py"      # its import waits for the test's go-ahead (at most 20 s)
    app.write_text("import os, time\n"
                   f"deadline = time.monotonic() + 20\n"
                   f"while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:\n"
                   "    time.sleep(0.05)\n"
                   "def application(environ, start_response):\n"
                   "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                   "    return [b'up']\n")
    shell = subprocess.Popen(WSGISTACK + ["--http", f"127.0.0.1:{port}", "--wsgi-file", str(app),
                                          "--daemonize", str(logfile), "--pidfile", str(pidfile)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the daemon's pidfile")
        shell.send_signal(signal.SIGINT)            # Ctrl-C in the shell that waits for "ready"
        out, err = shell.communicate(timeout=10)
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait(5)
    assert shell.returncode == 130, out + err
    assert "interrupted; the daemon goes on starting" in err and "Traceback" not in err
    go.touch()
    wait_until(lambda: is_listening(port) and get(port, "/")[1] == b"up", timeout=20, what="the daemon serves")
    stop = run_cli("--stop", pidfile)
    assert stop.returncode == 0, stop.stdout + stop.stderr


def test_unix_socket_mode_and_vacuum(start_server, tmp_path):
    path = tmp_path / "app.sock"
    server = start_server("--http", str(path), "--chmod-socket", "640", "--vacuum", listen=False, wait=False)
    wait_until(lambda: path.exists() and b"200 OK" in unix_http_get(path, "/pid"), what="serving on the socket")
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert server.stop() == 0
    assert not path.exists(), "--vacuum removes unix sockets"


def test_unix_socket_chmod_666_from_ini(start_server, tmp_path):
    path = tmp_path / "uwsgi.sock"
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nsocket = {path}\nchmod-socket=666\nvacuum = true\n")
    server = start_server(str(ini), listen=False, wait=False)
    wait_until(lambda: path.exists(), what="the socket file")
    # From the bind on, a SIGTERM is held until the master's handler is in place, then handled: it never
    # kills the master by default action (seen in CI: stop() gave -15 and the socket was not vacuumed).
    assert _sigterm_blocked_or_caught(server.proc.pid)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666
    assert server.stop() == 0
    assert not path.exists()


def test_chown_socket_sets_the_owner_of_unix_sockets(start_server, tmp_path):
    path = tmp_path / "app.sock"
    if os.geteuid() == 0:        # CI: to another user, by name, as `chown-socket = www-data:www-data` is written
        owner, expected = "nobody:nogroup", (pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
    else:                        # without root, a process may only give its socket to itself (by number)
        owner, expected = f"{os.getuid()}:{os.getgid()}", (os.getuid(), os.getgid())
    start_server("--http", str(path), "--chown-socket", owner, listen=False, wait=False)
    wait_until(lambda: path.exists() and b"200 OK" in unix_http_get(path, "/pid"), what="serving on the socket")
    assert (path.stat().st_uid, path.stat().st_gid) == expected


def test_chown_socket_to_an_unknown_user_is_a_startup_error(tmp_path):
    result = run_cli("--http", tmp_path / "app.sock", "--wsgi-file", APPS / "basic.py",
                     "--chown-socket", "no-such-user-here:nogroup")
    assert result.returncode != 0
    assert "option 'chown-socket': no such user or group" in result.stderr, result.stderr


def test_home_puts_the_apps_virtualenv_first(start_server, tmp_path):
    """`home = /path/to/venv`, as most uWSGI Django configs have it: the app imports from that virtualenv,
    including what its .pth files add (editable installs)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = tmp_path / "venv" / "lib" / version / "site-packages"
    site_packages.mkdir(parents=True)
    (site_packages / "venvonly.py").write_text("WHERE = 'venv'\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "editable.py").write_text("WHERE = 'pth'\n")
    (site_packages / "project.pth").write_text(f"{tmp_path / 'src'}\n")
    app = tmp_path / "app.py"
    app.write_text("import editable, venvonly\n\ndef application(environ, start_response):\n"
                   "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                   "    return [(venvonly.WHERE + ' ' + editable.WHERE).encode()]\n")
    server = start_server("--wsgi-file", app, "--home", tmp_path / "venv", app=None)
    assert get(server.port, "/") == (200, b"venv pth")
    without = run_cli("--http", f"127.0.0.1:{free_port()}", "--wsgi-file", app)
    assert without.returncode != 0 and "No module named 'editable'" in without.stderr
    wrong = run_cli("--http", f"127.0.0.1:{free_port()}", "--wsgi-file", app, "--virtualenv", tmp_path / "src")
    assert wrong.returncode != 0
    assert f"option 'home': '{tmp_path / 'src'}' has no lib/{version}/site-packages" in wrong.stderr


@pytest.mark.parametrize("option", ["--touch-reload", "--touch-workers-reload"])
def test_touch_reload_reloads_when_a_file_is_touched_or_created(start_server, tmp_path, option):
    app, touched, created = tmp_path / "app.py", tmp_path / "reload.touch", tmp_path / "deploy.flag"
    write_app(app, "v1")
    touched.write_text("")
    server = start_server("--wsgi-file", app, option, touched, "--touch-reload", created, app=None)
    first = serving(server, 1)
    write_app(app, "v2")
    later = time.time_ns() + 10**9
    os.utime(touched, ns=(later, later))
    server.wait_log("reload complete: generation 2", timeout=20)
    second = successors(server, first, 1)
    assert get(server.port, "/")[1].endswith(b" v2")
    write_app(app, "v3")
    created.write_text("deploy")                 # a file that was not there counts when it appears
    server.wait_log("reload complete: generation 3", timeout=20)
    successors(server, second, 1)
    assert get(server.port, "/")[1].endswith(b" v3")
    assert f"{touched} touched: reloading" in server.log() and f"{created} touched: reloading" in server.log()
    time.sleep(2.5)                              # left alone: no more reloads
    assert "generation 4" not in server.log()
    assert server.stop() == 0


def test_touch_reload_with_a_broken_config_tries_once_per_touch(start_server, tmp_path):
    app, ini, touched = tmp_path / "app.py", tmp_path / "site.ini", tmp_path / "reload.touch"
    write_app(app, "v1")
    touched.write_text("")
    ini.write_text(f"[uwsgi]\nwsgi-file = {app}\ntouch-reload = {touched}\n")
    server = start_server(str(ini), app=None)
    serving(server, 1)
    ini.write_text(f"[uwsgi]\nwsgi-file = {app}\ntouch-reload = {touched}\nprocesses = none\n")
    later = time.time_ns() + 10**9
    os.utime(touched, ns=(later, later))
    server.wait_log("the configuration has an error", timeout=10)
    time.sleep(2.5)
    assert server.log().count("the configuration has an error") == 1
    assert get(server.port, "/")[1].endswith(b" v1")          # the old generation serves on
    assert server.stop() == 0


def test_py_autoreload_reloads_when_the_apps_code_changes(start_server, tmp_path):
    """A module the app imports is edited: reloaded. A broken edit keeps the old code serving; its fix reloads."""
    app, helper = tmp_path / "app.py", tmp_path / "helper.py"
    app.write_text("import helper\n\n\ndef application(environ, start_response):\n"
                   "    body = helper.VERSION.encode()\n"
                   "    start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n")

    def edit(text: str) -> None:
        helper.write_text(text)
        later = time.time_ns() + 10**9           # a new modification time, however coarse the file system's
        os.utime(helper, ns=(later, later))

    edit("VERSION = 'v1'\n")
    server = start_server("--wsgi-file", app, "--py-autoreload", "1", "--pythonpath", tmp_path, app=None)

    def serving_body() -> bytes:
        return get(server.port, "/")[1]

    wait_until(lambda: serving_body() == b"v1", what="v1")
    first = set(server.workers())
    edit("VERSION = 'v2'\n")
    server.wait_log("reload complete: generation 2", timeout=20)
    second = successors(server, first, 1)
    assert serving_body() == b"v2" and f"{helper} (module helper) changed: reloading" in server.log()
    edit("VERSION = \n")                         # a syntax error
    server.wait_log("reload failed, still serving the previous generation", timeout=20)
    assert serving_body() == b"v2"
    edit("VERSION = 'v3'\n")
    server.wait_log("reload complete: generation 4", timeout=20)
    successors(server, second, 1)
    assert serving_body() == b"v3"
    assert server.stop() == 0


def _sigterm_blocked_or_caught(pid: int) -> bool:
    fields = dict(line.split(":\t", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":\t" in line)
    bit = 1 << (signal.SIGTERM - 1)
    return bool((int(fields["SigBlk"], 16) | int(fields["SigCgt"], 16)) & bit)


def limits(pid: int) -> dict[str, str]:
    """/proc/PID/limits: limit name -> soft limit."""
    lines = open(f"/proc/{pid}/limits").read().splitlines()[1:]
    return {line[:26].strip(): line[26:47].strip() for line in lines}


def test_umask_max_fd_and_limit_as(start_server, tmp_path):
    pidfile, logfile = tmp_path / "app.pid", tmp_path / "app.log"
    server = start_server("--umask", "027", "--pidfile", str(pidfile), "--logto", str(logfile), "--max-fd", "4321",
                          "--limit-as", "8192")
    worker, = serving(server, 1)
    assert stat.S_IMODE(pidfile.stat().st_mode) == 0o640 and stat.S_IMODE(logfile.stat().st_mode) == 0o640
    assert limits(server.pid)["Max open files"] == "4321" and limits(worker)["Max open files"] == "4321"
    assert limits(worker)["Max address space"] == str(8192 << 20)
    assert limits(server.pid)["Max address space"] == "unlimited"       # the master's own is left alone
    assert server.stop() == 0


@pytest.mark.parametrize("flags, message", [
    (("--umask", "0o22"), "option 'umask': expected an octal mode like 022, got '0o22'"),
    (("--max-fd", "2000000000"), "option 'max-fd': cannot allow 2000000000 open files"),
])
def test_process_limits_that_cannot_be_set_are_startup_errors(flags, message):
    result = run_cli("--http", f"127.0.0.1:{free_port()}", "--wsgi-file", str(APPS / "basic.py"), *flags)
    assert result.returncode == 1 and message in result.stderr


def test_uid_and_gid_drop_privileges(start_server, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("--uid/--gid need root to switch users, and this test does not run as root")
    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    pidfile = tmp_path / "root-owned-dir.pid"       # tmp_path is root's, mode 700: written before the drop

    server = start_server("--uid", "nobody", "--gid", "nogroup", "--pidfile", str(pidfile), "-p", "2",
                          app="whoami.py")

    workers = serving(server, 2)
    status, body = get(server.port, "/")
    assert status == 200 and body.endswith(f"uid={nobody} gid={nogroup}".encode())
    for process in [server.pid, *workers]:
        assert proc_ids(process, "Uid") == [nobody] * 4, f"process {process}"
        assert proc_ids(process, "Gid") == [nogroup] * 4, f"process {process}"
    assert int(pidfile.read_text()) == server.pid
    # A worker added after the drop (SIGTTIN) cannot bind its own socket on root's port: it still serves.
    os.kill(server.pid, signal.SIGTTIN)
    workers = serving(server, 3)
    assert all(proc_ids(process, "Uid") == [nobody] * 4 for process in workers)
    assert server.stop() == 0


def test_process_titles(start_server):
    server = start_server("-p", "2")
    # the port answers (the kernel queues connections) as soon as it is bound, before the master renames itself
    wait_until(lambda: cmdline(server.pid) == "wsgistack master", what="master title")
    wait_until(lambda: sorted(cmdline(p) for p in server.workers()) == ["wsgistack worker 1", "wsgistack worker 2"],
               what="worker titles")


@pytest.mark.parametrize("flag, prefix", [("--procname-prefix", "shop-"), ("--procname-prefix-spaced", "shop ")])
def test_procname_prefix(start_server, flag, prefix):
    server = start_server("-p", "2", flag, prefix.strip())
    wait_until(lambda: cmdline(server.pid) == f"{prefix}wsgistack master", what="master title")
    wait_until(lambda: sorted(cmdline(p) for p in server.workers()) == [f"{prefix}wsgistack worker 1",
                                                                        f"{prefix}wsgistack worker 2"],
               what="worker titles")


# --- signals -----------------------------------------------------------------------------------------

def test_sighup_reloads_code_and_config_without_closing_the_port(start_server, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    write_app(site / "app.py", "v1")
    ini = tmp_path / "site.ini"       # relative paths everywhere, as in `cd /code && wsgistack site.ini`
    ini.write_text("[uwsgi]\nchdir = site\nwsgi-file = app.py\nprocesses = 2\n")
    server = start_server("site.ini", app=None, cwd=tmp_path)
    first = serving(server, 2)
    status, body = get(server.port, "/")
    assert status == 200 and body.endswith(b" v1")

    refused, stop_probe = [], threading.Event()

    def probe():        # the listening socket must accept throughout the reloads
        while not stop_probe.is_set():
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
            except OSError as exc:
                refused.append(repr(exc))
            time.sleep(0.02)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        write_app(site / "app.py", "v22")
        ini.write_text("[uwsgi]\nchdir = site\nwsgi-file = app.py\nprocesses = 3\n")
        os.kill(server.pid, signal.SIGHUP)
        server.wait_log("reload complete: generation 2", timeout=20)
        second = set(wait_until(lambda: (lambda w: w if len(w) == 3 and not w & first else None)(
            set(server.workers())), timeout=20, what="3 new workers (processes re-read from the ini)"))
        for _ in range(6):
            status, body = get(server.port, "/")
            assert status == 200 and body.endswith(b" v22") and int(body.split()[0]) in second

        write_app(site / "app.py", "v333")
        os.kill(server.pid, signal.SIGHUP)
        server.wait_log("reload complete: generation 3", timeout=20)
        third = set(wait_until(lambda: (lambda w: w if len(w) == 3 and not w & second else None)(
            set(server.workers())), timeout=20, what="a third generation"))
        status, body = get(server.port, "/")
        assert status == 200 and body.endswith(b" v333") and int(body.split()[0]) in third
    finally:
        stop_probe.set()
        prober.join(10)
    assert refused == []
    # the title is set just after "reload complete" is logged
    wait_until(lambda: cmdline(server.pid) == "wsgistack master (reloads: 2)", what="the master's title")
    assert "error" not in server.log().lower()
    assert server.stop() == 0


def test_reload_with_broken_code_keeps_the_old_generation(start_server, tmp_path):
    app, pidfile = tmp_path / "app.py", tmp_path / "server.pid"
    write_app(app, "v1")
    server = start_server("--pidfile", str(pidfile), "-p", "2", app=str(app))
    old = serving(server, 2)

    app.write_text("def application(environ, start_response:\n    return []\n")     # a SyntaxError
    result = run_cli("--reload", pidfile)

    assert result.returncode != 0
    assert "reload failed" in result.stderr and str(server.pid) in result.stderr, result.stdout + result.stderr
    assert "SyntaxError" in server.log() and "reload failed, still serving the previous generation" in server.log()
    for _ in range(4):
        status, body = get(server.port, "/")
        assert status == 200 and body.endswith(b" v1") and int(body.split()[0]) in old
    assert set(server.workers()) == old
    assert "last failed" in cmdline(server.pid)

    write_app(app, "v22")
    result = run_cli("--reload", pidfile)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"reloaded (master {server.pid}, reload 2)" in result.stdout
    successors(server, old, 2)
    status, body = get(server.port, "/")
    assert status == 200 and body.endswith(b" v22")
    assert server.stop() == 0


def test_reload_with_a_broken_config_keeps_serving(start_server, tmp_path):
    ini, pidfile = tmp_path / "site.ini", tmp_path / "server.pid"
    ini.write_text(f"[uwsgi]\nwsgi-file = {APPS / 'basic.py'}\nprocesses = 2\npidfile = {pidfile}\n")
    server = start_server(str(ini), app=None)
    old = serving(server, 2)

    ini.write_text(f"[uwsgi]\nwsgi-file = {APPS / 'basic.py'}\nprocesses = many\npidfile = {pidfile}\n")
    result = run_cli("--reload", pidfile)

    assert result.returncode != 0 and "reload failed" in result.stderr, result.stdout + result.stderr
    assert f"the configuration has an error: {ini}:3: option 'processes': " in server.log()
    assert set(server.workers()) == old
    assert get(server.port, "/pid")[0] == 200
    assert server.stop() == 0


@pytest.mark.parametrize("threads", ["1", "4"])
def test_sigterm_lets_the_request_in_flight_finish(start_server, threads):
    server = start_server("--threads", threads)
    serving(server, 1)
    outcome = {}

    def slow():
        try:
            outcome["response"] = get(server.port, "/sleep?t=2", timeout=20)
        except Exception as exc:     # noqa: BLE001
            outcome["response"] = repr(exc)

    client = threading.Thread(target=slow)
    client.start()
    wait_until(lambda: _sleeping_in_app(server), timeout=10, interval=0.02, what="the request in the app")
    os.kill(server.pid, signal.SIGTERM)
    client.join(20)
    assert outcome["response"] == (200, b"slept")
    assert server.proc.wait(20) == 0
    assert "SIGTERM: graceful stop" in server.log()


@pytest.mark.parametrize("threads", ["1", "4"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["INT", "QUIT"])
def test_sigint_and_sigquit_stop_fast(start_server, sig, threads):
    server = start_server("-p", "2", "--threads", threads)
    serving(server, 2)
    outcome = {}

    def slow():
        try:
            outcome["response"] = get(server.port, "/sleep?t=30", timeout=40)
        except Exception as exc:     # noqa: BLE001
            outcome["response"] = exc

    client = threading.Thread(target=slow)
    client.start()
    time.sleep(0.7)
    started = time.monotonic()
    os.kill(server.pid, sig)
    code = server.proc.wait(20)
    elapsed = time.monotonic() - started
    client.join(20)
    assert code == 0
    assert elapsed < 3.0, f"a fast stop took {elapsed:.1f} s"
    assert isinstance(outcome["response"], Exception), outcome["response"]     # aborted, not answered
    assert f"{sig.name}: fast stop" in server.log()


def test_sigttin_and_sigttou_add_and_remove_a_worker(start_server):
    server = start_server("-p", "2")
    serving(server, 2)
    os.kill(server.pid, signal.SIGTTIN)
    server.wait_log("SIGTTIN: one more worker (now 3)")
    serving(server, 3)
    # A reload re-reads the configuration (2 processes); its workers are forked while slot 3 still exists.
    os.kill(server.pid, signal.SIGHUP)
    server.wait_log("reload complete: generation 2")
    wait_until(lambda: len(server.workers()) == 2, what="the configured 2 workers")
    os.kill(server.pid, signal.SIGTTOU)
    server.wait_log("SIGTTOU: one worker less (now 1)")
    wait_until(lambda: len(server.workers()) == 1, what="1 worker")
    os.kill(server.pid, signal.SIGTTOU)     # never below one worker
    time.sleep(1.0)
    assert len(server.workers()) == 1
    assert server.log().count("SIGTTOU") == 1
    for _ in range(30):     # no connection lands on a given-up slot's socket, where nobody accepts
        status, body = get(server.port, "/pid", timeout=5)
        assert status == 200 and int(body) == server.workers()[0]
    assert server.stop() == 0


@pytest.mark.parametrize("how", ["sigttou", "reload-to-fewer"])
def test_a_slot_given_up_loses_no_connection(start_server, tmp_path, how):
    """Each worker has its own SO_REUSEPORT socket; when a slot goes for good, the connections the kernel had
    queued in it must still be answered, and no new one may land there (once reset: 3 of 21k in a load run)."""
    ini = tmp_path / "site.ini"
    ini.write_text(f"[uwsgi]\nwsgi-file = {APPS / 'basic.py'}\nprocesses = 3\n")
    server = start_server(str(ini), app=None)
    workers = serving(server, 3)
    # Idle kept-alive connections on every worker: a leaving worker then drains for a second or two, the
    # time its socket stays open with nobody accepting (else it exits at once and its socket closes early).
    idle, answered_by = [], set()
    for _ in range(60):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
        conn.request("GET", "/pid")
        answered_by.add(int(conn.getresponse().read()))
        idle.append(conn)
        if answered_by == workers:
            break
    assert answered_by == workers
    if how == "sigttou":
        os.kill(server.pid, signal.SIGTTOU)
        server.wait_log("SIGTTOU: one worker less (now 2)")
    else:
        ini.write_text(f"[uwsgi]\nwsgi-file = {APPS / 'basic.py'}\nprocesses = 2\n")
        os.kill(server.pid, signal.SIGHUP)
        server.wait_log("reload complete: generation 2", timeout=20)
    # From here on the leaving worker stops accepting; with per-worker sockets left alone, about one
    # connection in three would wait in its socket's queue until the master closes it, then be reset.
    clients = []
    try:
        for _ in range(30):
            client = socket.create_connection(("127.0.0.1", server.port), timeout=15)
            clients.append(client)
            client.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            time.sleep(0.02)
        wait_until(lambda: len(server.workers()) == 2, timeout=20, what="the given-up worker exits")
        for client in clients:
            answer = b""
            while chunk := client.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 "), answer
    finally:
        for client in clients:
            client.close()
        for conn in idle:
            conn.close()
    assert "exited with status 0" in server.log()
    assert server.stop() == 0


def test_sigusr1_logs_status(start_server):
    server = start_server("-p", "2")
    workers = serving(server, 2)
    os.kill(server.pid, signal.SIGUSR1)
    log = server.wait_log(f"status: master {server.pid}, generation 1, 2 workers")
    for pid in workers:
        server.wait_log(f"pid {pid} generation 1 ready")
    log = server.wait_log("status: worker 2 served")
    log = server.wait_log("status: worker 1 served")
    served = sum(int(n) for n in re.findall(r"status: worker \d served (\d+) requests", log))
    assert served >= 2 and served == len(re.findall(r"\] GET /pid => ", log))    # the access log's count
    assert server.stop() == 0


# --- wsgistack --stop / --reload ----------------------------------------------------------------------

def test_stop_command_waits_and_reports(start_server, tmp_path):
    pidfile = tmp_path / "server.pid"
    server = start_server("--pidfile", str(pidfile), "-p", "2")
    workers = serving(server, 2)
    result = run_cli("--stop", pidfile)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"wsgistack: stopped (master {server.pid})"
    assert not alive(server.pid) and not any(alive(pid) for pid in workers)
    assert server.proc.wait(5) == 0


def test_relative_pid_and_log_files_are_in_the_start_directory_not_the_chdir(start_server, tmp_path):
    """As uWSGI, which opens them before its chdir: `uwsgi --stop uwsgi.pid`, run where the server was started,
    finds the pidfile (it was written into the --chdir directory, and the stop said "no pidfile")."""
    deploy, code = tmp_path / "deploy", tmp_path / "code"
    deploy.mkdir()
    code.mkdir()
    server = start_server("--chdir", str(code), "--pidfile", "run.pid", "--logto", "app.log", cwd=deploy)
    assert get(server.port, "/pid")[0] == 200
    assert (deploy / "run.pid").read_text().strip() == str(server.pid)
    wait_until(lambda: "GET /pid" in (deploy / "app.log").read_text(), what="the access line in deploy/app.log")
    assert not (code / "run.pid").exists() and not (code / "app.log").exists()
    result = run_cli("--stop", "run.pid", cwd=deploy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert server.proc.wait(5) == 0


def test_reload_command_waits_and_reports(start_server, tmp_path):
    pidfile = tmp_path / "server.pid"
    server = start_server("--pidfile", str(pidfile), "-p", "2")
    old = serving(server, 2)
    result = run_cli("--reload", pidfile)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"wsgistack: reloaded (master {server.pid}, reload 1)"
    assert "reload complete: generation 2" in server.log()     # complete when the command returned
    wait_until(lambda: len(set(server.workers()) - old) == 2 and not set(server.workers()) & old,
               what="the new generation only")
    assert get(server.port, "/")[0] == 200
    assert server.stop() == 0


@pytest.mark.parametrize("command", ["--stop", "--reload"])
@pytest.mark.parametrize("case", ["missing", "dead-pid", "other-process", "garbage"])
def test_control_commands_refuse_a_bad_pidfile(tmp_path, command, case):
    pidfile = tmp_path / "server.pid"
    bystander = None
    if case == "dead-pid":
        pidfile.write_text(f"{unused_pid()}\n")
        expected = "is not running"
    elif case == "other-process":     # pid reuse: the pid now belongs to something else
        bystander = subprocess.Popen(["sleep", "30"])
        pidfile.write_text(f"{bystander.pid}\n")
        expected = "is not a wsgistack master"
    elif case == "garbage":
        pidfile.write_text("hello\n")
        expected = "does not hold a pid"
    else:
        expected = "no pidfile"
    try:
        result = run_cli(command, pidfile, timeout=30)
        assert result.returncode != 0
        assert expected in result.stderr and str(pidfile) in result.stderr, result.stderr
        if bystander is not None:
            time.sleep(0.2)
            assert bystander.poll() is None, "the other process must not be signalled"
    finally:
        if bystander is not None:
            bystander.kill()
            bystander.wait(5)


# --- harakiri, recycling, crashes ---------------------------------------------------------------------

@pytest.mark.parametrize("threads", ["1", "4"])
def test_harakiri_ends_a_stuck_request(start_server, threads):
    server = start_server("--harakiri", "2", "-p", "3", "--threads", threads)
    before = serving(server, 3)
    slow, fast, stop_fast = {}, [], threading.Event()

    def stuck():
        try:
            slow["response"] = get(server.port, "/sleep?t=30", timeout=40)
        except Exception as exc:     # noqa: BLE001
            slow["response"] = repr(exc)

    def quick():
        while not stop_fast.is_set():
            try:
                fast.append(get(server.port, "/pid", timeout=20)[0])
            except Exception as exc:     # noqa: BLE001
                fast.append(repr(exc))
            time.sleep(0.05)

    stuck_client, fast_client = threading.Thread(target=stuck), threading.Thread(target=quick)
    started = time.monotonic()
    stuck_client.start()
    # Once the stuck request is in the app: a connection its worker accepted in the same loop pass
    # (before the app blocked the loop) would die with the worker, as with uWSGI; later ones queue in
    # the slot's socket and the replacement serves them.
    time.sleep(0.5)
    fast_client.start()
    stuck_client.join(40)
    elapsed = time.monotonic() - started
    time.sleep(1.0)        # fast requests go on while the replacement starts
    stop_fast.set()
    fast_client.join(30)

    assert slow["response"][0] == 504, slow["response"]
    assert 2.0 <= elapsed < 10.0
    assert len(fast) > 10 and all(status == 200 for status in fast), fast
    log = server.wait_log("HARAKIRI")
    match = re.search(r"HARAKIRI: GET /sleep\?t=30 ran (\d+\.\d) s \(limit --harakiri 2\) in worker \d \(pid (\d+)\)",
                      log)
    assert match, log
    assert float(match[1]) >= 2.0
    dead = int(match[2])
    assert dead in before
    assert 'time.sleep(float(_qs(environ, "t", "1")))' in log.split("HARAKIRI", 1)[1]   # the stuck line
    after = wait_until(lambda: (lambda w: w if len(w) == 3 and dead not in w else None)(set(server.workers())),
                       what="a replacement worker")
    assert len(after - before) == 1
    assert server.stop() == 0


def retirements(log: str) -> list[tuple[int, str]]:
    return [(int(pid), reason) for pid, reason in re.findall(r"\(pid (\d+)\) retiring: (.*?); starting", log)]


def test_max_requests_with_delta_recycles_workers(start_server):
    server = start_server("-p", "2", "--max-requests", "5", "--max-requests-delta", "3", "--min-worker-lifetime", "0")
    served: dict[int, int] = {}
    for _ in range(40):
        status, body = get(server.port, "/pid")
        assert status == 200
        served[int(body)] = served.get(int(body), 0) + 1
    log = server.wait_log("retiring")
    time.sleep(0.5)
    retired = retirements(server.log())
    assert len(retired) >= 4, log
    for pid, reason in retired:
        count = int(re.match(r"served (\d+) requests \(--max-requests\)", reason)[1])
        assert 5 <= count <= 8 and served[pid] == count, (pid, reason, served)
    assert server.stop() == 0


def test_reload_on_rss_recycles_without_a_respawn_storm(start_server):
    server = start_server("-p", "2", "--reload-on-rss", "1", "--min-worker-lifetime", "0")
    load = LoadClient(server.port, "/pid", threads=3).start()
    time.sleep(4.0)
    load.stop()
    assert load.errors() == []
    assert len(load.ok()) > 20
    retired = retirements(server.log())
    assert retired and all("--reload-on-rss" in reason for _, reason in retired)
    served_by = {int(o.body) for o in load.ok()}
    assert len(served_by) >= 3, "workers were replaced"
    # A worker retires once it served (a fresh one is over 1 MB too): no retirement before a first request,
    # which would replace workers in a loop without ever serving.
    assert {pid for pid, _ in retired} <= served_by, (retired, served_by)
    assert server.stop() == 0


def test_reload_on_as_recycles_too(start_server):
    server = start_server("--reload-on-as", "1", "--min-worker-lifetime", "0")
    first, = serving(server, 1)
    get(server.port, "/pid")
    server.wait_log("--reload-on-as")
    wait_until(lambda: server.workers() and first not in server.workers(), what="a new worker")
    assert get(server.port, "/pid")[0] == 200
    assert server.stop() == 0


@pytest.mark.parametrize("flag", ["--evil-reload-on-rss", "--evil-reload-on-as"])
def test_evil_reload_kills_a_worker_over_the_limit_even_mid_request(start_server, flag):
    """uWSGI's evil variants: the master kills a worker past the limit at once, whatever it is doing (a worker
    blocked in a request never gets to check --reload-on-rss itself), and starts another."""
    server = start_server(flag, "1")
    first, = serving(server, 1)                         # over 1 MB from the start: killed within a second
    server.wait_log(f"({flag}): killing it")
    wait_until(lambda: server.workers() and first not in server.workers(), what="a replacement")
    assert f"worker 1 (pid {first}) killed by SIGKILL; starting a new one" in server.wait_log("starting a new one")
    assert server.stop() == 0


def test_max_requests_waits_for_the_min_worker_lifetime(start_server):
    """uWSGI's --min-worker-lifetime (10 s by default): --max-requests 1 under steady traffic forks no worker per
    request; the worker goes at its first request once old enough (or within a second, with none)."""
    server = start_server("--max-requests", "1", "--min-worker-lifetime", "3")
    first, = serving(server, 1)
    pids = {get(server.port, "/pid")[1] for _ in range(5)}
    assert pids == {str(first).encode()} and "retiring" not in server.log()
    server.wait_log("retiring: served", timeout=10)
    assert re.search(rf"\(pid {first}\) retiring: served \d+ requests \(--max-requests\)", server.log())


@pytest.mark.parametrize("threads", ["1", "4"])
def test_reload_on_exception_recycles_the_worker_whose_app_raised(start_server, threads):
    """Once --min-worker-lifetime has passed: an app raising on every request (its database down) forked a worker
    per request."""
    server = start_server("--reload-on-exception", "--threads", threads, "--min-worker-lifetime", "3")
    first, = serving(server, 1)
    for _ in range(3):
        assert get(server.port, "/error")[0] == 500
    assert "retiring" not in server.log() and server.workers() == [first]
    server.wait_log("retiring: an exception in the app (--reload-on-exception)", timeout=10)
    successors(server, {first}, 1)
    assert get(server.port, "/")[0] == 200
    assert server.stop() == 0


def test_max_worker_lifetime_delta_staggers_the_workers(start_server):
    server = start_server("-p", "2", "--max-worker-lifetime", "2", "--max-worker-lifetime-delta", "3")
    serving(server, 2)
    wait_until(lambda: len(retirements(server.log())) >= 2, timeout=20, what="both workers retired")
    reasons = re.findall(r"worker (\d) \(pid \d+\) retiring: lived (\d+) s", server.log())
    assert ("1", "2") in reasons and ("2", "5") in reasons, reasons
    assert server.stop() == 0


def test_max_worker_lifetime_recycles_without_failures(start_server):
    server = start_server("-p", "2", "--max-worker-lifetime", "2")
    first = serving(server, 2)
    load = LoadClient(server.port, "/pid", threads=3).start()
    try:
        wait_until(lambda: len(retirements(server.log())) >= 3, timeout=20, what="3 workers retired")
        time.sleep(1.0)
    finally:
        load.stop()
    assert load.errors() == []
    retired = retirements(server.log())
    assert {pid for pid, _ in retired} >= first
    assert all("--max-worker-lifetime" in reason for _, reason in retired)
    assert len({int(o.body) for o in load.ok()}) >= 3
    assert server.stop() == 0


def test_sigterm_during_constant_recycling_stops_every_worker(start_server):
    """With --max-requests 1 a worker is forked at every moment: a SIGTERM that reaches one just after its
    fork, or before its event loop runs, must still stop it (else the master waits for it). And a first
    worker that retires before the master saw it ready is no failed boot."""
    for _ in range(5):
        server = start_server("-p", "4", "--max-requests", "1", "--min-worker-lifetime", "0", "--disable-logging",
                              "--reload-mercy", "60")
        load = LoadClient(server.port, "/pid", threads=4).start()
        try:
            wait_until(lambda: len(load.ok()) >= 40, timeout=20,
                       what=f"load running ({len(load.ok())} ok, errors {load.errors()[:3]})")
            os.kill(server.pid, signal.SIGTERM)
            try:
                code = server.proc.wait(20)          # a worker left behind holds it --reload-mercy's 60 s
            except subprocess.TimeoutExpired:
                raise AssertionError(f"still running 20 s after SIGTERM; workers {server.workers()}:\n"
                                     f"{server.log()[-3000:]}") from None
        finally:
            load.stop()
        assert code == 0
        assert not server.workers()


def test_killed_worker_is_replaced_and_only_its_requests_fail(start_server):
    server = start_server("-p", "3")
    serving(server, 3)
    load = LoadClient(server.port, "/pid", threads=6).start()
    try:
        # every client thread answered too (a loaded machine may run some late): the worker of each one's connection
        wait_until(lambda: len(load.ok()) > 100 and {o.thread for o in load.ok()} == set(range(6)), what="load running")
        victims = {}
        for outcome in load.ok():            # the worker each client thread's connection is on
            victims[outcome.thread] = int(outcome.body)
        target = max(set(victims.values()), key=lambda pid: sum(1 for p in victims.values() if p == pid))
        on_target = {thread for thread, pid in victims.items() if pid == target}
        killed_at = time.monotonic()
        os.kill(target, signal.SIGKILL)
        replaced = wait_until(lambda: (lambda w: w if len(w) == 3 and target not in w else None)(
            set(server.workers())), timeout=10, interval=0.02, what="a replacement worker")
        replacement_time = time.monotonic() - killed_at
        time.sleep(1.5)
    finally:
        load.stop()
    errors = load.errors()
    assert replacement_time < 2.0, f"replaced after {replacement_time:.2f} s"
    assert len(errors) <= len(on_target), errors
    assert {o.thread for o in errors} <= on_target
    assert all(o.sent < killed_at + 1.0 for o in errors)
    assert len([o for o in load.ok() if o.sent > killed_at + replacement_time]) > 50
    assert len(replaced) == 3
    assert f"(pid {target}) killed by SIGKILL; starting a new one" in server.log()
    assert server.stop() == 0


# --- readiness: sd_notify -------------------------------------------------------------------------------

def receive_until(sock: socket.socket, field: str, seen: list[str]) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            message = sock.recv(4096).decode()
        except socket.timeout:
            break
        seen.append(message)
        if field in message.split("\n"):
            return message
    raise AssertionError(f"no {field} notification; got {seen}")


def test_sd_notify_ready_reloading_stopping(start_server, tmp_path):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        server = start_server("-p", "2", env={**os.environ, "NOTIFY_SOCKET": str(path)}, wait=False)
        seen: list[str] = []
        ready = receive_until(sock, "READY=1", seen)
        assert get(server.port, "/")[0] == 200       # READY=1 means serving
        assert f"MAINPID={server.pid}" in ready.split("\n")
        assert re.search(r"^STATUS=serving http on 127.0.0.1:\d+ with 2 processes", ready, re.M), ready

        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        os.kill(server.pid, signal.SIGHUP)
        reloading = dict(line.partition("=")[::2] for line in receive_until(sock, "RELOADING=1", seen).split("\n"))
        # sd_notify(3): RELOADING=1 comes with the CLOCK_MONOTONIC time in µs (Type=notify-reload relies on it)
        assert before <= int(reloading["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert reloading["STATUS"] == "reloading"
        reloaded = receive_until(sock, "READY=1", seen)
        assert "STATUS=reloaded (generation 2)" in reloaded
        assert "reload complete" in server.log()

        assert server.stop(signal.SIGTERM) == 0
        receive_until(sock, "STOPPING=1", seen)
        assert [m.split("\n")[0] for m in seen] == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]


# --- under load -------------------------------------------------------------------------------------------

def test_ten_reloads_under_load_lose_nothing(start_server, tmp_path):
    pidfile = tmp_path / "server.pid"
    server = start_server("-p", "2", "--pidfile", str(pidfile))
    wrk = start_wrk(server.port)
    try:
        time.sleep(1.0)
        for number in range(1, 11):
            result = run_cli("--reload", pidfile, timeout=60)
            assert result.returncode == 0, result.stdout + result.stderr
            assert f"reload {number})" in result.stdout
            time.sleep(1.0)
    finally:
        report = finish_wrk(wrk)
    assert server.log().count("reload complete") == 10
    assert_wrk_clean(report, minimum_requests=1000)
    assert server.stop() == 0


def test_max_requests_under_load_loses_nothing(start_server):
    server = start_server("-p", "4", "--max-requests", "50", "--max-requests-delta", "10", "--min-worker-lifetime", "0",
                          "--disable-logging")
    wrk = start_wrk(server.port, seconds=20)
    try:
        report = finish_wrk(wrk, interrupt=False)
    finally:
        if wrk.poll() is None:
            wrk.kill()
    assert_wrk_clean(report, minimum_requests=2000)
    retired = retirements(server.log())
    assert len(retired) >= report["requests"] // 60 - 8, (len(retired), report["requests"])
    wait_until(lambda: len(server.workers()) == 4, timeout=30, what="the retiring workers gone, 4 left")
    assert server.stop() == 0


def test_sigterm_under_load_answers_every_request_sent_before(start_server):
    server = start_server("-p", "2", "--threads", "4")
    load = LoadClient(server.port, "/sleep?t=0.3", threads=6).start()
    try:
        wait_until(lambda: len(load.ok()) >= 18 and {o.thread for o in load.ok()} == set(range(6)), timeout=20,
                   what="load running on every client thread")
        term_at = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        code = server.proc.wait(30)
    finally:
        load.stop()
    assert code == 0
    outcomes = load.snapshot()
    before = [o for o in outcomes if o.sent < term_at]
    failed_before = [o for o in before if o.status != 200 or o.body != b"slept"]
    assert failed_before == [], failed_before
    in_flight = [o for o in before if o.done > term_at]
    assert len(in_flight) >= 3, "requests in flight at SIGTERM were answered"
    errors = [o for o in outcomes if o.error]
    assert not any("IncompleteRead" in o.error for o in errors), "no response was cut short"
    assert all(o.status in (200, None) for o in outcomes)


# --- found by a hostile review of the master (each failed before its fix) ---

SLOW_IMPORT_APP = '''\
import os
import time

VERSION = {version!r}
time.sleep({delay})                  # a slow import: the reload's new workers take that long to be ready


def application(environ, start_response):
    body = f"{{os.getpid()}} {{VERSION}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def test_an_old_worker_that_dies_during_a_reload_leaves_no_extra_worker(start_server, tmp_path):
    """The new generation has a worker for its slot already: a successor for it as well was one worker too many,
    for good (3 then 4 workers for --processes 2)."""
    app = tmp_path / "app.py"
    app.write_text(SLOW_IMPORT_APP.format(version="v1", delay=0))
    server = start_server("-p", "2", app=str(app))
    old = serving(server, 2)
    app.write_text(SLOW_IMPORT_APP.format(version="v2", delay=2))
    os.kill(server.pid, signal.SIGHUP)
    server.wait_log("SIGHUP: reloading")
    victim = min(old)
    os.kill(victim, signal.SIGKILL)
    server.wait_log(f"(pid {victim}) killed by SIGKILL during the reload; its slot's new worker is starting")
    server.wait_log("reload complete", timeout=20)
    new = wait_until(lambda: (lambda w: w if len(w) == 2 and not w & old else None)(set(server.workers())),
                     timeout=20, what="the two new workers alone")
    time.sleep(1.5)
    assert set(server.workers()) == new
    assert get(server.port, "/")[1].endswith(b" v2")
    assert server.stop() == 0


def test_a_reload_asked_during_a_reload_follows_it(start_server, tmp_path):
    """A second `--reload` while the first one's workers start: its reload runs after (it was dropped, and the
    command reported the first one's success for it, the old code still serving)."""
    app, pidfile = tmp_path / "app.py", tmp_path / "server.pid"
    app.write_text(SLOW_IMPORT_APP.format(version="v1", delay=0))
    server = start_server("--pidfile", str(pidfile), "-p", "2", app=str(app))
    old = serving(server, 2)
    importing = tmp_path / "v2-importing"      # created as a worker starts importing v2, which takes 5 s:
    # long enough for a second --reload to start
    app.write_text(f"open({str(importing)!r}, 'a').close()\n" + SLOW_IMPORT_APP.format(version="v2", delay=5))
    first: dict = {}
    reloading = threading.Thread(target=lambda: first.update(result=run_cli("--reload", pidfile)))
    reloading.start()
    server.wait_log("SIGHUP: reloading")
    # Logged before its workers start: one that had not read app.py yet would import v3 and be ready at once.
    wait_until(importing.exists, what="the first reload's workers importing v2")
    staged = tmp_path / "app.py.new"       # replaced whole: the first reload's workers may be reading app.py now
    staged.write_text(SLOW_IMPORT_APP.format(version="v3", delay=0))
    os.replace(staged, app)
    second = run_cli("--reload", pidfile)
    reloading.join(60)
    assert first["result"].returncode == 0, first["result"].stderr
    assert second.returncode == 0 and "reload 2)" in second.stdout, second.stdout + second.stderr
    assert "SIGHUP during a reload: another reload follows once this one is done" in server.log()
    successors(server, old, 2)        # the second generation's workers gone too: 2 left, the third's
    assert get(server.port, "/")[1].endswith(b" v3")
    assert server.stop() == 0


def test_a_stop_during_a_reload_does_not_complete_it(start_server, tmp_path):
    app = tmp_path / "app.py"
    app.write_text(SLOW_IMPORT_APP.format(version="v1", delay=0))
    server = start_server("-p", "2", app=str(app))
    serving(server, 2)
    app.write_text(SLOW_IMPORT_APP.format(version="v2", delay=2))
    os.kill(server.pid, signal.SIGHUP)
    server.wait_log("SIGHUP: reloading")
    assert server.stop() == 0
    log = server.log_path.read_text()
    assert "SIGTERM: graceful stop" in log and "reload complete" not in log


@pytest.mark.parametrize("threads", ["1", "4"])
def test_a_stopping_server_takes_no_new_connection(start_server, threads):
    """Graceful stop: no socket takes a new connection any more, the workers' copies included (a worker inside an
    app call cannot close its own): one is not accepted (its SYN is dropped), and refused once the socket
    closes, rather than queued behind the drain and then reset."""
    server = start_server("-p", "2", "--threads", threads)
    serving(server, 2)
    slow: dict = {}
    client = threading.Thread(target=lambda: slow.update(response=get(server.port, "/sleep?t=3")))
    client.start()
    wait_until(lambda: _sleeping_in_app(server), timeout=10, interval=0.02, what="the slow request in the app")
    os.kill(server.pid, signal.SIGTERM)
    refused = wait_until(lambda: not is_listening(server.port), timeout=2, interval=0.05,
                         what="the port refusing connections")
    client.join(20)
    assert refused and slow["response"] == (200, b"slept")
    assert server.proc.wait(20) == 0


@pytest.mark.parametrize("protocol", ["http", "uwsgi", "http-unix", "uwsgi-unix"])
def test_a_graceful_stop_answers_the_connections_queued_behind_a_busy_worker(start_server, protocol, tmp_path):
    """SIGTERM while one inline request runs and more connections wait in the accept queue (the loop is busy):
    they were reset with their requests sent (nginx: 502, and no retry of a POST); now they are answered, then
    the server exits, and a connection tried meanwhile is not taken (TCP: refused once the socket closes; unix:
    the socket's file is gone at once)."""
    if protocol == "http":
        server = start_server("--threads", "1")
        port, ask = server.port, lambda path: get(server.port, path)
    else:
        port = free_port() if protocol == "uwsgi" else tmp_path / "app.sock"
        flag = "--socket" if protocol.startswith("uwsgi") else "--http"
        server = start_server(flag, f"127.0.0.1:{port}" if protocol == "uwsgi" else str(port), "--threads", "1",
                              listen=False, wait=False)
        if protocol == "uwsgi":
            wait_until(lambda: is_listening(port), timeout=15, what="the uwsgi socket")
            ask = lambda path: uwsgi_get(port, path)            # noqa: E731
        else:
            wait_for_unix_socket(str(port))
            ask = ((lambda path: uwsgi_get(port, path)) if protocol == "uwsgi-unix"
                   else (lambda path: (int(unix_http_get(port, path, timeout=30).split(b" ", 2)[1]), b"")))
        wait_until(server.workers, what="the worker")
        wait_until(lambda: ask("/pid")[0] == 200, timeout=15, what="an answer")
    if protocol == "http":
        serving(server, 1)
    answers: dict = {}

    def fetch(name: str, path: str) -> None:
        try:
            answers[name] = ask(path)[0]
        except Exception as exc:     # noqa: BLE001
            answers[name] = repr(exc)

    busy = threading.Thread(target=fetch, args=("busy", "/sleep?t=2"))
    busy.start()
    wait_until(lambda: server.workers() and _running_app(server), timeout=10, what="the slow request in the app")
    queued = [threading.Thread(target=fetch, args=(f"queued-{n}", "/pid")) for n in range(5)]
    for client in queued:
        client.start()
    wait_until(lambda: _accept_queue(port) == 5, timeout=10, what="five connections in the accept queue")
    os.kill(server.pid, signal.SIGTERM)
    server.wait_log("SIGTERM: graceful stop")
    if isinstance(port, int):
        # Logged just before the master has the kernel take no new connection: a probe that beat it was still
        # taken (harmless: closed at once); the next ones are not, within a probe's 1 s connect timeout each.
        wait_until(lambda: not is_listening(port), timeout=10, what="no new connection taken once the stop began")
    else:
        wait_until(lambda: not port.exists(), timeout=5, interval=0.05, what="the socket's file removed")
    for client in [busy, *queued]:
        client.join(30)
    assert answers == {"busy": 200, **{f"queued-{n}": 200 for n in range(5)}}, answers
    assert server.proc.wait(20) == 0


def _fill_a_slot_queue(server, path: str, batches: int, settle: float) -> tuple[dict, list[threading.Thread]]:
    """GET `path` from batches of 16 clients until some wait in a worker slot's accept queue (the kernel's hash may
    give a whole batch to the worker that answers), the others answered: (status or error by client, clients)."""
    answers: dict = {}

    def fetch(n: int) -> None:
        try:
            answers[n] = get(server.port, path, timeout=30)[0]
        except Exception as exc:     # noqa: BLE001
            answers[n] = repr(exc)

    clients: list[threading.Thread] = []
    for _ in range(batches):
        batch = [threading.Thread(target=fetch, args=(n,)) for n in range(len(clients), len(clients) + 16)]
        for client in batch:
            client.start()
        clients += batch
        wait_until(lambda: len(answers) >= len(clients) - _accept_queue(server.port), timeout=settle,
                   what="the answering worker's connections answered")
        if _accept_queue(server.port):
            return answers, clients
    raise AssertionError(f"no connection waits in a slot's queue: {answers}")


SLOW_BOOT_APP = """
import os, time
if os.path.exists({flag!r}):
    time.sleep({delay})             # this worker's import is slow: a stop comes while it boots

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


@pytest.mark.parametrize("processes", [1, 2])
def test_a_graceful_stop_answers_the_connections_queued_while_a_worker_boots(start_server, processes, tmp_path):
    """A worker died and its successor is still importing the app when SIGTERM comes: the connections queued in
    its slot meanwhile were reset (the booting worker died at once, its queue with it). Now it finishes its boot,
    answers them, and exits; the server exits 0."""
    flag = tmp_path / "slow"
    app = tmp_path / "slow_boot.py"
    app.write_text(SLOW_BOOT_APP.format(flag=str(flag), delay=5))
    server = start_server("--processes", str(processes), "--threads", "1", app=str(app))
    pids = serving(server, processes)
    flag.touch()
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    server.wait_log(f"(pid {victim}) killed by SIGKILL")
    # Every connection to the victim's slot now waits in its queue, for as long as the successor loads the app.
    answers, clients = _fill_a_slot_queue(server, "/", batches=3, settle=1.5)
    os.kill(server.pid, signal.SIGTERM)
    for client in clients:
        client.join(30)
    assert answers == {n: 200 for n in range(len(clients))}, answers
    assert server.proc.wait(20) == 0, server.log()


@pytest.mark.parametrize("protocol", ["http", "uwsgi"])
def test_a_stop_while_workers_start_leaves_no_traceback(start_server, protocol, tmp_path):
    """SIGTERM as soon as the master serves, while workers 2 and 3 still load the app: each finishes its start and
    stops without having listened. Their start_serving() ran after the stop closed the socket (EBADF tracebacks)."""
    port = free_port()
    flag = "--http" if protocol == "http" else "--socket"
    app = tmp_path / "slow_boot.py"
    app.write_text(SLOW_BOOT_APP.format(flag=str(app), delay=1))        # the flag file exists: every import is slow
    server = start_server(flag, f"127.0.0.1:{port}", "--processes", "3", "--threads", "4", listen=False, wait=False,
                          app=str(app))
    server.wait_log("serving")
    os.kill(server.pid, signal.SIGTERM)
    assert server.proc.wait(20) == 0
    log = server.log()
    assert "Traceback" not in log and "exception" not in log.lower(), log


def test_a_stop_does_not_wait_for_a_worker_still_loading_the_app_with_nothing_queued(start_server, tmp_path):
    """A respawned worker's import hangs, and nothing waits in its slot: a graceful stop no longer waits for it
    (--reload-mercy, then a kill): it exits at once."""
    flag = tmp_path / "slow"
    app = tmp_path / "slow_boot.py"
    app.write_text(SLOW_BOOT_APP.format(flag=str(flag), delay=60))
    server = start_server("--processes", "1", app=str(app))
    (victim,) = serving(server, 1)
    flag.touch()
    os.kill(victim, signal.SIGKILL)
    server.wait_log(f"(pid {victim}) killed by SIGKILL")
    wait_until(lambda: server.workers() and victim not in server.workers(), what="the successor loading the app")
    started = time.monotonic()
    os.kill(server.pid, signal.SIGTERM)
    assert server.proc.wait(20) == 0
    assert time.monotonic() - started < 5, server.log()


@pytest.mark.parametrize("order", ["crash first", "stop first"])
def test_a_graceful_stop_answers_the_queue_of_a_worker_that_crashed_at_the_same_moment(start_server, order):
    """A worker crashes with connections in its slot's queue as the stop begins: they were reset (no successor
    once stopping, or one killed by the SIGTERM before it could defer it). A successor now loads the app, answers
    them and stops."""
    server = start_server("--processes", "2", "--threads", "1")
    victim = max(serving(server, 2))
    os.kill(victim, signal.SIGSTOP)         # its slot's connections wait in its queue
    answers, clients = _fill_a_slot_queue(server, "/pid", batches=4, settle=10)
    if order == "crash first":
        os.kill(victim, signal.SIGKILL)
        os.kill(server.pid, signal.SIGTERM)
    else:
        os.kill(server.pid, signal.SIGTERM)
        os.kill(victim, signal.SIGKILL)
    for client in clients:
        client.join(30)
    assert answers == {n: 200 for n in range(len(clients))}, answers
    assert server.proc.wait(20) == 0, server.log()


def _sleeping_in_app(server) -> bool:
    """A /sleep request is in the app, whatever --threads: a thread of a worker is asleep (no --harakiri, --cheaper
    or --stats thread sleeps so there), and its access line is not written yet."""
    def wchan(pid: int, task: str) -> str:
        try:
            return Path(f"/proc/{pid}/task/{task}/wchan").read_text()
        except OSError:
            return ""

    def tasks(pid: int) -> list[str]:
        try:
            return os.listdir(f"/proc/{pid}/task")
        except OSError:
            return []

    return "GET /sleep" not in server.log() and any(
        wchan(pid, task) in ("hrtimer_nanosleep", "do_nanosleep") for pid in server.workers() for task in tasks(pid))


def _running_app(server) -> bool:
    """A request is in the app: the worker's only thread is asleep in it (state S, in hrtimer/futex)."""
    return "GET /sleep" not in server.log() and any(
        Path(f"/proc/{pid}/wchan").read_text() in ("hrtimer_nanosleep", "do_nanosleep", "futex_wait_queue")
        for pid in server.workers())


def _listening(port: int) -> bool:
    """A TCP socket listens on this loopback port (/proc/net/tcp: state 0A), seen without connecting to it."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            return True
    return False


def _accept_queue(port: int | Path) -> int:
    """Connections waiting in the accept queues of the listening sockets on this loopback port (ss -ltn), or in
    this unix socket's (ss -lx)."""
    if isinstance(port, Path):
        result = subprocess.run(["ss", "-Hlx", "src", str(port)], capture_output=True, text=True, timeout=10)
        return sum(int(line.split()[2]) for line in result.stdout.splitlines() if line.strip())
    result = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=10)
    return sum(int(line.split()[1]) for line in result.stdout.splitlines() if line.strip())


def test_a_worker_that_exits_with_status_3_after_serving_is_replaced(start_server):
    """Status 3 means "could not start" only from a worker that never got ready; a serving one that exits so
    (an extension's exit(3)) is replaced like any other, it once stopped the whole server."""
    server = start_server("-p", "2", app="extra.py")
    old = serving(server, 2)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        get(server.port, "/exit?code=3")
    server.wait_log("exited with status 3; starting a new one")
    wait_until(lambda: (lambda w: w if len(w) == 2 and w != old else None)(set(server.workers())),
               what="a replacement")
    assert get(server.port, "/pid")[0] == 200
    assert server.stop() == 0


def test_a_worker_that_crashes_leaves_the_python_stack_of_the_crash_in_the_log(start_server):
    """A segfault in app code (a C extension's bug) said only "killed by SIGSEGV": now the worker's Python stack at
    the crash (every thread's, as faulthandler writes it) comes before that line, naming the app's frame."""
    server = start_server("-p", "1", "--threads", "2", app="extra.py")
    serving(server, 1)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        get(server.port, "/segfault")
    log = server.wait_log("killed by SIGSEGV; starting a new one")
    assert "Fatal Python error: Segmentation fault" in log, log
    crash = log[log.index("Fatal Python error"):]
    assert "extra.py\", line" in crash and "in application" in crash, crash
    wait_until(lambda: get(server.port, "/pid")[0] == 200, what="the replacement serving")


@pytest.mark.parametrize("threads", ["1", "4"])
def test_harakiri_kills_a_worker_frozen_in_a_call_that_holds_the_gil(start_server, threads):
    """A runaway regex holds the GIL: the worker's watchdog thread cannot run, and the request went on for
    minutes. The master, not hearing from the watchdog for longer than the limit, has the worker write its
    threads' stacks and kills it; its successor serves."""
    server = start_server("--harakiri", "1", "-p", "1", "--threads", threads, app="extra.py")
    (old,) = serving(server, 1)
    started = time.monotonic()
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        get(server.port, "/redos?n=40", timeout=30)
    assert time.monotonic() - started < 15
    log = server.wait_log(f"(pid {old}) killed by SIGKILL; starting a new one")
    assert re.search(rf"HARAKIRI: worker 1 \(pid {old}\) has run no Python for [0-9.]+ s \(limit --harakiri 1\)", log)
    assert "in application" in log[log.index("has run no Python"):], log       # the stuck frame, dumped
    wait_until(lambda: get(server.port, "/pid")[0] == 200, what="the successor serving")


def test_a_master_held_up_by_a_reload_hook_kills_no_worker_as_frozen(start_server, tmp_path):
    """A pre-app hook (a migration) holds the master for longer than --harakiri + 2 s: it then read the workers'
    heartbeats as silent and killed every serving worker, a request in one of them lost."""
    flag = tmp_path / "slow-hook"
    server = start_server("--harakiri", "1", "-p", "2", "--threads", "2",
                          "--exec-pre-app", f"if [ -f {flag} ]; then sleep 4; fi")
    old = serving(server, 2)
    flag.touch()
    os.kill(server.pid, signal.SIGHUP)
    successors(server, old, 2, timeout=30)
    time.sleep(1.5)                  # a pass or two of the master's loop after the hook
    assert get(server.port, "/pid")[0] == 200
    log = server.log()
    assert "HARAKIRI" not in log and "SIGKILL" not in log, log


def test_harakiri_answers_every_overdue_request(start_server):
    """With --threads, each request past the limit gets its 504 and its log line, not only the first one, however
    far apart they started (the worker retires after the first, and waits for the others' own deadlines)."""
    server = start_server("--harakiri", "2", "-p", "1", "--threads", "4")
    serving(server, 1)
    answers: list = []

    def stuck():
        try:
            answers.append(get(server.port, "/sleep?t=30", timeout=30)[0])
        except Exception as exc:     # noqa: BLE001
            answers.append(repr(exc))

    clients = [threading.Thread(target=stuck) for _ in range(3)]
    for client in clients:
        client.start()
        time.sleep(0.3)              # apart: the first is overdue while the others are not yet
    for client in clients:
        client.join(40)
    assert answers == [504, 504, 504]
    assert server.wait_log("HARAKIRI").count("HARAKIRI: GET /sleep?t=30") == 3
    assert server.stop() == 0


@pytest.mark.parametrize("queued_by", ["http", "http-threads-accepting-uwsgi-too", "fastcgi"])
def test_requests_queued_behind_threads_all_stuck_past_harakiri_get_a_503_at_once(start_server, tmp_path, queued_by):
    """Every app thread is stuck past --harakiri: what waits for a thread can never start. It waited for the end
    of --reload-mercy and then got a reset; now a 503 (nginx or the client may try again: the successor serves).
    (With a uwsgi socket the threads also accept: another queue, app_threads.AcceptingAppThreads.)"""
    from test_fastcgi_server import Client, fastcgi_request, parse_cgi
    other_port = free_port()
    flags = {"http": [], "http-threads-accepting-uwsgi-too": ["--socket", f"127.0.0.1:{other_port}"],
             "fastcgi": ["--fastcgi-socket", f"127.0.0.1:{other_port}"]}[queued_by]
    server = start_server("--harakiri", "2", "-p", "1", "--threads", "2", "--reload-mercy", "20", *flags)
    serving(server, 1)
    release = tmp_path / "release"
    results: dict = {}

    def fetch(name, path):
        try:
            results[name] = get(server.port, path, timeout=30)[0], time.monotonic()
        except Exception as exc:     # noqa: BLE001
            results[name] = repr(exc), time.monotonic()

    def fetch_by_fastcgi():
        client = Client(other_port)
        try:
            client.send(fastcgi_request(1, "/", keep_conn=True))
            stdout, protocol_status = client.response(1)
            results["queued"] = parse_cgi(stdout)[0], time.monotonic()
            assert protocol_status == 0                 # FCGI_REQUEST_COMPLETE: nginx passes the 503 on
        finally:
            client.close()

    stuck = [threading.Thread(target=fetch, args=(n, f"/until?f={release}&t=25")) for n in ("stuck1", "stuck2")]
    for client in stuck:
        client.start()
    time.sleep(0.5)                  # both in the app threads (FIFO: the next request queues behind them)
    queued = threading.Thread(target=fetch_by_fastcgi if queued_by == "fastcgi" else fetch, args=() if
                              queued_by == "fastcgi" else ("queued", "/"))
    queued.start()
    try:
        queued.join(15)
        assert results["queued"][0] == 503, results
        assert results["queued"][1] - results["stuck1"][1] < 5     # with the 504s, not at the reload-mercy's end
        assert "turned away (503): every app thread of worker 1 is stuck past --harakiri" in server.log()
        assert wait_until(lambda: get(server.port, "/")[0] == 200, what="the successor serving")
    finally:
        release.touch()
        for client in stuck:
            client.join(30)
    assert [results[n][0] for n in ("stuck1", "stuck2")] == [504, 504]
    assert server.stop() == 0


def test_harakiri_lets_the_other_threads_finish_their_requests(start_server, tmp_path):
    """The stuck thread's worker goes, but a request another of its threads runs finishes first, as with a
    recycled worker (uWSGI and gunicorn kill the worker, and that request with it); the successor starts at once."""
    server = start_server("--harakiri", "6", "-p", "1", "--threads", "4")
    (old,) = serving(server, 1)
    release = tmp_path / "release"
    results: dict = {}

    def fetch(name, path):
        try:
            results[name] = get(server.port, path, timeout=30)
        except Exception as exc:     # noqa: BLE001
            results[name] = repr(exc)

    stuck = threading.Thread(target=fetch, args=("stuck", "/sleep?t=30"))
    stuck.start()
    time.sleep(3)                    # the innocent request's own deadline comes 3 s after the stuck one's
    innocent = threading.Thread(target=fetch, args=("innocent", f"/until?f={release}&t=20"))
    innocent.start()
    server.wait_log("HARAKIRI: GET /sleep?t=30", timeout=15)
    stuck.join(10)
    assert results["stuck"][0] == 504
    assert "innocent" not in results
    wait_until(lambda: set(server.workers()) - {old}, timeout=10, what="the successor, while the old worker drains")
    release.touch()
    innocent.join(10)
    assert results["innocent"] == (200, b"waited")
    wait_until(lambda: not alive(old), timeout=10, what="the old worker gone once drained")
    assert re.search(rf"\(pid {old}\) retiring: a request ran past --harakiri 6", server.log())
    assert server.log().count("HARAKIRI") == 1
    assert get(server.port, "/pid")[0] == 200
    assert server.stop() == 0


def test_harakiri_ends_a_threads_answer_for_the_client_and_the_log(start_server, tmp_path):
    """--threads: a stream cut by harakiri went on reaching the client from its stuck thread, ending whole (its last
    chunk, then a reset later); a request answered 504 was logged as the 200 its thread finished with later. Now the
    stream stops at the harakiri (a reset), and neither request gets an access line."""
    server = start_server("--harakiri", "3", "-p", "1", "--threads", "4")
    serving(server, 1)
    late: dict = {}
    sleeper = threading.Thread(target=lambda: late.update(answer=get(server.port, "/sleep?t=4", timeout=30)))
    sleeper.start()
    # Keeps the retiring worker, and so the stuck threads, alive until after the stream's and the sleep's end,
    # within the limit itself.
    keeper = threading.Timer(2.2, get, args=(server.port, "/sleep?t=2.9"), kwargs={"timeout": 30})
    keeper.start()
    received = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(b"GET /stream?n=16&delay=0.3&tag=cut HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    sleeper.join(20)
    keeper.join(30)
    assert late["answer"][0] == 504
    assert received.count(b"chunk ") < 16 and not received.endswith(b"0\r\n\r\n"), received
    log = server.wait_log("GET /sleep?t=2.9 =>")
    assert log.count("HARAKIRI") == 2, log
    assert "GET /sleep?t=4 =>" not in log and "GET /stream?n=16&delay=0.3&tag=cut =>" not in log, log


def test_workers_let_the_port_go_when_their_master_is_killed(start_server):
    """The OOM killer takes the master: its workers let go of the port at once (the kernel tells them), so a
    restarted server binds it even while an inline request runs on; they finish that request and exit."""
    server = start_server("-p", "2", "--threads", "1")
    orphans = serving(server, 2)
    slow: dict = {}
    client = threading.Thread(target=lambda: slow.update(response=get(server.port, "/sleep?t=6")))
    client.start()
    # in the app, not still queued: the workers' shutdown of the port resets what is queued
    wait_until(lambda: _sleeping_in_app(server), timeout=10, interval=0.02, what="the slow request in the app")
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(5)
    wait_until(lambda: not is_listening(server.port), timeout=3, what="the port let go")
    successor = start_server("--http", f"127.0.0.1:{server.port}", "-p", "1", listen=False, wait=False)
    wait_until(lambda: successor.workers() and is_listening(server.port), timeout=15, what="the successor")
    assert int(get(server.port, "/pid")[1]) in successor.workers()
    client.join(20)
    assert slow["response"] == (200, b"slept")
    wait_until(lambda: not any(alive(pid) for pid in orphans), timeout=15, what="the orphans gone")
    assert "the master is gone; stopping" in server.log()


# --- found by a review of the whole deployment (each failed before its fix) ---

def test_a_reload_that_would_need_new_sockets_says_so(start_server, tmp_path):
    """A reload cannot bind the address an edited ini adds: it fails, and `--reload` says why with status 1
    (it reported success, and nginx got 502 from the port that was never opened)."""
    ini, pidfile, other = tmp_path / "site.ini", tmp_path / "site.pid", free_port()
    ini.write_text(f"[uwsgi]\nwsgi-file = {APPS / 'basic.py'}\npidfile = {pidfile}\n")
    server = start_server(str(ini), app=None)
    serving(server, 1)
    ini.write_text(f"[uwsgi]\nwsgi-file = {APPS / 'basic.py'}\npidfile = {pidfile}\nhttp = 127.0.0.1:{other}\n")
    result = run_cli("--reload", pidfile)
    assert result.returncode == 1 and "reload failed" in result.stderr
    assert "the listen addresses changed" in server.log() and "a restart applies that" in server.log()
    assert get(server.port, "/pid")[0] == 200 and not is_listening(other)
    assert server.stop() == 0


def test_a_second_server_does_not_take_a_running_ones_pidfile(start_server, tmp_path):
    pidfile = tmp_path / "site.pid"
    first = start_server("--pidfile", str(pidfile), "--vacuum")
    serving(first, 1)
    result = run_cli("--http", f"127.0.0.1:{free_port()}", "--wsgi-file", APPS / "basic.py", "--pidfile", pidfile)
    assert result.returncode == 1
    assert f"names a running wsgistack master (pid {first.pid}): stop it first" in result.stderr
    assert pidfile.read_text().strip() == str(first.pid)
    assert run_cli("--stop", pidfile).returncode == 0 and not pidfile.exists()


def test_the_apps_logging_setup_does_not_silence_the_server(start_server, tmp_path):
    """Django's LOGGING runs dictConfig, which disables every logger it does not name: the server's tracebacks
    and harakiri lines were gone with it."""
    app = tmp_path / "app.py"
    app.write_text("import logging.config\nlogging.config.dictConfig({'version': 1})\n\n"
                   "def application(environ, start_response):\n    raise RuntimeError('the app broke')\n")
    server = start_server(app=str(app))
    assert get(server.port, "/")[0] == 500
    log = server.wait_log("RuntimeError: the app broke")
    assert "exception in the app" in log


def test_startup_warnings_reach_a_daemons_log(tmp_path, daemons):
    """Warnings printed before the log is open reach the log too: a daemon's operator reads the log."""
    port, logfile, pidfile, ini = free_port(), tmp_path / "daemon.log", tmp_path / "daemon.pid", tmp_path / "a.ini"
    daemons.append(pidfile)
    ini.write_text(f"[uwsgi]\nhttp = 127.0.0.1:{port}\nwsgi-file = {APPS / 'basic.py'}\nvacum = true\n"
                   f"daemonize = {logfile}\npidfile = {pidfile}\n")
    result = run_cli(ini)
    assert result.returncode == 0 and "option 'vacum': unknown option (ignored)" in result.stderr
    assert f"{ini}:4: option 'vacum': unknown option (ignored)" in logfile.read_text()


def test_the_apps_own_signal_handlers_are_left_alone(start_server, tmp_path):
    """SIGUSR2 and the like are the app's (the master-death signal the kernel sends is a real-time one)."""
    app, mark = tmp_path / "app.py", tmp_path / "usr2"
    app.write_text(f"import os, signal\nsignal.signal(signal.SIGUSR2, lambda *a: open({str(mark)!r}, 'w').close())\n"
                   "def application(environ, start_response):\n"
                   "    body = str(os.getpid()).encode()\n"
                   "    start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n")
    server = start_server(app=str(app))
    worker, = serving(server, 1)
    os.kill(worker, signal.SIGUSR2)
    wait_until(mark.exists, timeout=5, what="the app's SIGUSR2 handler ran")
    assert alive(worker) and server.stop() == 0


def test_a_failed_reload_keeps_serving_when_an_old_worker_died_meanwhile(start_server, tmp_path):
    """The emptied slot is started again with the code on disk; when that fails too (the broken deploy that
    failed the reload), the slot stays empty and the other old worker serves on: the server once stopped."""
    app = tmp_path / "app.py"
    app.write_text(SLOW_IMPORT_APP.format(version="v1", delay=0))
    server = start_server("-p", "2", app=str(app))
    old = serving(server, 2)
    app.write_text(SLOW_IMPORT_APP.format(version="v2", delay=1) + "raise RuntimeError('broken deploy')\n")
    os.kill(server.pid, signal.SIGHUP)
    server.wait_log("SIGHUP: reloading")
    victim = min(old)
    os.kill(victim, signal.SIGKILL)
    # Sent while the slot has no worker: some of them queue in its socket, which no worker accepts from.
    waiting = [socket.create_connection(("127.0.0.1", server.port), timeout=15) for _ in range(12)]
    for sock in waiting:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    server.wait_log("reload failed, still serving the previous generation", timeout=20)
    server.wait_log("its slot stays empty while the other workers serve", timeout=20)
    master_caught_up(server)                 # and steered new connections away from the empty slot
    assert server.proc.poll() is None
    # Each one is answered (by the other worker, or turned away with a 503), none left waiting for a reload.
    for sock in waiting:
        with sock:
            assert sock.recv(65536).split(b" ", 2)[1] in (b"200", b"503")
    (survivor,) = old - {victim}
    # New connections go to the serving worker only: none to the empty slot's socket (where they would wait).
    for _ in range(20):
        assert get(server.port, "/", timeout=5)[1] == f"{survivor} v1".encode()
    # A reload with code that starts fills the slot again, and it gets connections.
    app.write_text(SLOW_IMPORT_APP.format(version="v3", delay=0))
    os.kill(server.pid, signal.SIGHUP)
    server.wait_log("reload complete", timeout=20)
    successors(server, {survivor}, 2)
    answered = {get(server.port, "/", timeout=5)[1] for _ in range(40)}
    assert {body.split()[1] for body in answered} == {b"v3"} and len(answered) == 2
    assert server.stop() == 0


def test_a_daemonized_second_server_says_why_it_cannot_have_the_pidfile(tmp_path, daemons, start_server):
    pidfile = tmp_path / "site.pid"
    first = start_server("--pidfile", str(pidfile))
    serving(first, 1)
    result = run_cli("--http", f"127.0.0.1:{free_port()}", "--wsgi-file", APPS / "basic.py", "--pidfile", pidfile,
                     "--daemonize", tmp_path / "second.log")
    assert result.returncode == 1
    assert f"names a running wsgistack master (pid {first.pid}): stop it first" in result.stderr


# --- found by a second review: startup, signals during startup and reloads, sd_notify ---

# An app whose import waits while the file `gate` exists (a slow import, ended by the test), having created `started`.
GATED_APP = '''\
import os
import time

open({started!r}, "a").close()
while os.path.exists({gate!r}):
    time.sleep(0.02)


def application(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def gated_app(tmp_path: Path, closed: bool) -> tuple[Path, Path, Path]:
    """(the app, the file its import creates, the gate: remove it to let imports finish)."""
    app, started, gate = tmp_path / "gated.py", tmp_path / "import-started", tmp_path / "gate"
    app.write_text(GATED_APP.format(started=str(started), gate=str(gate)))
    if closed:
        gate.touch()
    return app, started, gate


def sigterm_pending(pid: int) -> bool:
    """A SIGTERM sent to the process and not handled yet (blocked meanwhile)."""
    with open(f"/proc/{pid}/status") as handle:
        pending = next(int(line.split()[1], 16) for line in handle if line.startswith("ShdPnd:"))
    return bool(pending & 1 << (signal.SIGTERM - 1))


@pytest.mark.parametrize("closed", ["<&-", ">&-", "2>&-", "<&- >&- 2>&-"])
@pytest.mark.parametrize("log_option", ["--daemonize", "--logto"])
def test_a_standard_descriptor_closed_at_start_is_dev_null(tmp_path, daemons, closed, log_option):
    """As uWSGI, a server started with fd 0, 1 or 2 closed serves: a listening socket took the free descriptor and
    --daemonize's dup2 closed it (ready, yet nothing listened), or sys.stdout was None and a flush() failed."""
    port, logfile, pidfile = free_port(), tmp_path / "server.log", tmp_path / "server.pid"
    daemons.append(pidfile)
    command = [*WSGISTACK, "--http", f"127.0.0.1:{port}", "--wsgi-file", str(APPS / "basic.py"), "--pidfile",
               str(pidfile), log_option, str(logfile)]
    shell = subprocess.Popen(["sh", "-c", f'exec "$@" {closed}', "sh", *command], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if log_option == "--daemonize":
            assert shell.wait(60) == 0, logfile.read_text()
        wait_until(lambda: is_listening(port) or shell.poll() not in (None, 0), timeout=30, what="listening")
        assert get(port, "/")[0] == 200
        master = int(pidfile.read_text())
        assert [os.readlink(f"/proc/{master}/fd/{fd}") for fd in (0, 1, 2)] == ["/dev/null", *[str(logfile)] * 2]
        result = run_cli("--stop", pidfile)
        assert result.returncode == 0, result.stdout + result.stderr
        assert not is_listening(port) and "Traceback" not in logfile.read_text()
        if log_option == "--logto":
            assert shell.wait(15) == 0
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait(5)


def test_the_pidfile_names_a_master_known_as_one_while_a_pre_app_hook_runs(start_server, tmp_path):
    """The pidfile was written before the master's title was set: during a slow --exec-pre-app (a migration),
    `--stop` said "stale pidfile ... not a wsgistack master", and a second server took the pidfile over."""
    pidfile, started, gate = tmp_path / "server.pid", tmp_path / "hook-started", tmp_path / "gate"
    gate.touch()
    server = start_server("--pidfile", str(pidfile), "--exec-pre-app",
                          f"touch {started}; while [ -e {gate} ]; do sleep 0.05; done")
    wait_until(started.exists, what="the pre-app hook running")
    assert pidfile.read_text().strip() == str(server.pid)
    second = run_cli("--http", f"127.0.0.1:{free_port()}", "--wsgi-file", APPS / "basic.py", "--pidfile", pidfile)
    assert second.returncode == 1 and f"names a running wsgistack master (pid {server.pid})" in second.stderr
    stopping = subprocess.Popen(WSGISTACK + ["--stop", str(pidfile)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True)
    wait_until(lambda: sigterm_pending(server.pid) or stopping.poll() is not None, what="--stop's SIGTERM sent")
    gate.unlink()                  # the hook ends; the master handles the SIGTERM held meanwhile
    out, err = stopping.communicate(timeout=60)
    assert stopping.returncode == 0 and out.strip() == f"wsgistack: stopped (master {server.pid})", out + err
    assert server.proc.wait(5) == 0


def test_a_sighup_while_the_first_worker_starts_reloads_once_it_is_ready(start_server, tmp_path):
    """It was handled at once: the reload started a worker in every slot, then the boot started slots 2..N again,
    a worker too many for good (3 for -p 2); and systemd got RELOADING=1 before READY=1."""
    app, started, gate = gated_app(tmp_path, closed=True)
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        server = start_server("-p", "2", app=str(app), env={**os.environ, "NOTIFY_SOCKET": str(path)})
        wait_until(started.exists, what="worker 1 importing the app")
        os.kill(server.pid, signal.SIGHUP)
        server.wait_log("SIGHUP")       # received, the first worker still importing
        gate.unlink()
        seen: list[str] = []
        for field in ("READY=1", "RELOADING=1", "READY=1"):
            receive_until(sock, field, seen)
        assert [message.split("\n")[0] for message in seen] == ["READY=1", "RELOADING=1", "READY=1"]
    server.wait_log("reload complete: generation 2")
    wait_until(lambda: len(server.workers()) == 2, timeout=20, what="2 workers, the old ones gone")
    os.kill(server.pid, signal.SIGUSR1)
    log = server.wait_log(f"status: master {server.pid}, generation 2, 2 workers")
    assert "SIGHUP while the first worker starts: done once it is ready" in log
    assert server.stop() == 0


@pytest.mark.parametrize("sig, expected", [(signal.SIGTTIN, 3), (signal.SIGTTOU, 1)])
def test_sigttin_or_sigttou_during_a_reload_is_done_once_it_is_over(start_server, tmp_path, sig, expected):
    """They were done at once, among two generations' slot numbers: SIGTTIN started slot 4 next to the old 1..3,
    leaving slot 3's socket without a worker (a quarter of new connections hung); SIGTTOU steered every connection
    away from a new worker that then served none."""
    app, _, gate = gated_app(tmp_path, closed=False)
    server = start_server("-p", "2", app=str(app))
    serving(server, 2)
    os.kill(server.pid, signal.SIGTTIN)
    old = serving(server, 3)
    gate.touch()                    # the reload's workers wait in their import
    os.kill(server.pid, signal.SIGHUP)
    server.wait_log("SIGHUP: reloading")
    received = server.log().count(sig.name)
    os.kill(server.pid, sig)
    wait_until(lambda: server.log().count(sig.name) > received, what=f"{sig.name} received")
    gate.unlink()

    def the_new_workers_alone() -> set[int] | None:
        workers = set(server.workers())
        return workers if len(workers) == expected and not workers & old else None

    server.wait_log("reload complete: generation 2", timeout=20)
    workers = wait_until(the_new_workers_alone, timeout=20, what=f"{expected} new workers alone")
    for _ in range(40):             # each new connection is answered, by one of them
        status, body = get(server.port, "/pid", timeout=5)
        assert status == 200 and int(body) in workers
    # Done after the reload, which set the 2 workers of its configuration.
    log = server.log()
    done = "SIGTTIN: one more worker (now 3)" if sig == signal.SIGTTIN else "SIGTTOU: one worker less (now 1)"
    assert f"{sig.name} during a reload: done once it is over" in log
    assert log.rfind(done) > log.find("reload complete")
    assert server.stop() == 0


def test_a_touch_while_the_first_worker_starts_is_not_lost(start_server, tmp_path):
    """The --touch-* files were noted once the first worker was ready: a touch before (or right after its first
    answer) was taken as the state to compare with, and lost."""
    app, started, gate = gated_app(tmp_path, closed=True)
    trigger = tmp_path / "reload-trigger"
    trigger.touch()
    os.utime(trigger, ns=(0, 0))
    server = start_server("--touch-reload", str(trigger), app=str(app))
    wait_until(started.exists, what="worker 1 importing the app")
    trigger.touch()
    gate.unlink()
    server.wait_log(f"{trigger} touched: reloading", timeout=15)
    server.wait_log("reload complete: generation 2", timeout=20)
    assert server.stop() == 0


def test_usage_errors_say_what_is_wrong(tmp_path):
    """No arguments: the usage on stderr, status 2 (a pipe reading stdout gets nothing to parse); a directory given as
    --wsgi-file is named as one (it said "no such file" of a path that exists)."""
    result = run_cli()
    assert result.returncode == 2 and result.stdout == "" and result.stderr.startswith("usage: wsgistack")
    result = run_cli("--http", f"127.0.0.1:{free_port()}", "--wsgi-file", tmp_path)
    assert result.returncode == 1
    assert f"option 'wsgi-file': a directory, not a Python file: '{tmp_path}'" in result.stderr, result.stderr


def test_a_replacement_that_cannot_start_leaves_its_slot_empty_while_others_serve(start_server, tmp_path):
    """The code on disk is broken (a deploy half done, a reload that failed) and a worker dies or is recycled: its
    successor cannot import the app. The other worker serves on, the slot steered clear; the server used to stop."""
    app = tmp_path / "app.py"
    app.write_text(SLOW_IMPORT_APP.format(version="v1", delay=0))
    server = start_server("-p", "2", app=str(app))
    victim, survivor = sorted(serving(server, 2))
    app.write_text("raise RuntimeError('broken deploy')\n")
    os.kill(victim, signal.SIGKILL)
    server.wait_log("its slot stays empty while the other workers serve", timeout=20)
    master_caught_up(server)                 # and steered new connections away from the empty slot
    assert server.proc.poll() is None
    answers = {get(server.port, "/", timeout=10) for _ in range(12)}
    assert answers == {(200, f"{survivor} v1".encode())}


def test_a_request_that_came_while_inline_app_code_held_the_loop_is_answered_at_a_stop_not_reset(start_server):
    """--threads 1: B's two answers leave before the worker handles the SIGTERM (its app code held the loop), so
    they keep the connection, and B sends its next request at once, while C's slow request holds the loop. The
    idle sweep runs before the loop reads: it once closed B as idle with that request unread (a reset)."""
    server = start_server("--threads", "1", "--reload-mercy", "10")
    serving(server, 1)

    def request(path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()

    with RawConnection(server.port, timeout=15) as b, RawConnection(server.port, timeout=15) as c:
        b.send(request("/sleep?t=1.5") + request("/"))
        time.sleep(0.1)
        c.send(request("/sleep?t=1.5") + request("/sleep?t=1.5"))
        time.sleep(0.2)
        os.kill(server.pid, signal.SIGTERM)
        answers = [b.read_response(), b.read_response()]
        assert [(a.status, a.header("Connection")) for a in answers] == [(200, None), (200, None)]
        b.send(request("/?n=3"))
        third = b.read_response()
        assert (third.status, third.header("Connection")) == (200, "close")
        last = c.read_response()        # after the SIGTERM: the last on its connection (RFC 9112 9.6)
        assert (last.status, last.header("Connection")) == (200, "close") and c.closed_by_server()
    assert server.proc.wait(20) == 0


def test_a_graceful_stop_with_nothing_queued_refuses_new_connections_at_once(start_server):
    """A proxy fails over to another upstream at once on a refused connection: with nothing queued the sockets are
    shut down at once (a dropped SYN held nginx 11 s, until the busy worker's request ended)."""
    server = start_server("--threads", "1")
    serving(server, 1)
    slow: dict = {}
    client = threading.Thread(target=lambda: slow.update(response=get(server.port, "/sleep?t=4")))
    client.start()
    wait_until(lambda: _running_app(server), timeout=10, what="the slow request in the app")
    os.kill(server.pid, signal.SIGTERM)
    server.wait_log("SIGTERM: graceful stop")
    started = time.monotonic()
    # Logged just before the shutdown: a connection tried before that would be taken, queued behind the busy
    # worker. Wait for the shutdown without connecting (the kernel's table), then a connection must be refused.
    wait_until(lambda: not _listening(server.port), timeout=3, interval=0.01, what="the listening socket shut down")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=3).close()
    assert time.monotonic() - started < 1.0     # at once, not once the 4 s request ended (the dropped-SYN bug)
    client.join(20)
    assert slow["response"] == (200, b"slept")
    assert server.proc.wait(20) == 0


# --- answers under way when a worker stops (found by reviews of the inline mode and of pipelining) ---

def test_an_upload_answered_after_sigterm_says_connection_close(start_server):
    """An Expect upload still streaming when the stop began: its answer keeps nothing alive (keep-alive was
    decided when it started, and the connection was then closed idle under a client about to reuse it)."""
    server = start_server("--threads", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue")
        os.kill(server.pid, signal.SIGTERM)
        server.wait_log("SIGTERM: graceful stop")
        sock.sendall(b"hello")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nConnection: close" in head, data
    assert server.proc.wait(20) == 0


def test_a_request_pipelined_behind_a_stream_is_answered_through_a_reload(start_server):
    """A reload (or a recycle) while an answer streams to a slow reader, a request pipelined behind it: the stream
    ended as it began (keep-alive), then the connection closed with the request read and never answered."""
    server = start_server("--threads", "1")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", server.port))
    sock.settimeout(10)
    with sock:
        sock.sendall(b"GET /stream?n=400000&delay=0&tag=first HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        os.kill(server.pid, signal.SIGHUP)
        server.wait_log("SIGHUP: reloading")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
            time.sleep(0.002)
    answers = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert answers == [b"200", b"200"], data[-300:]
    assert data.rpartition(b"HTTP/1.1 200 ")[2].partition(b"\r\n\r\n")[0].count(b"Connection: close") == 1
    assert server.stop() == 0


def test_an_answer_cut_at_the_stop_deadline_ends_with_a_reset(start_server, tmp_path):
    """--reload-mercy over with an answer still going to a client that reads nothing: a FIN would make a body
    delimited by the close (HTTP/1.0 here; uwsgi's always) look whole to nginx or a cache. It ends with a reset,
    its close() runs and it is logged."""
    close_log = tmp_path / "close.log"
    server = start_server("--threads", "1", "--reload-mercy", "2",
                          env={**os.environ, "WSGISTACK_TEST_CLOSE_LOG": str(close_log)})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    with sock:
        sock.sendall(b"GET /stream?n=5000000&delay=0&tag=cut HTTP/1.0\r\n\r\n")
        time.sleep(0.5)
        os.kill(server.pid, signal.SIGTERM)
        assert server.proc.wait(20) == 0
        sock.settimeout(10)
        with pytest.raises(ConnectionResetError):
            while sock.recv(1 << 20):
                pass
    assert "closed cut" in close_log.read_text()
    assert re.search(r"GET /stream\?n=5000000&delay=0&tag=cut => generated \d+ bytes", server.log())

