"""The stats server (uWSGI's --stats): for each connection, a JSON snapshot of the master and its workers.

The document has the fields of uWSGI's (core/master_utils.c), so what reads uWSGI's stats reads these:
uwsgitop, uwsgi_exporter, monitoring agents. Fields for things wsgistack has not (signals, locks, routed or
offloaded requests) are there, with zeros. The master answers from its own loop, one connection at a time:
it writes the document (`--stats-http`: as an HTTP response) and closes. Worker figures are at most a
second old: each worker reports its counters every second (worker.py `_report_load`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time

from wsgistack import __version__
from wsgistack.addresses import Address
from wsgistack.memory import memory

log = logging.getLogger("wsgistack")

# Seconds a stats client gets to take the document: the master supervises meanwhile, so not long.
SEND_TIMEOUT = 1.0
HTTP_HEAD = (b"HTTP/1.0 200 OK\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\n"
             b"Content-Type: application/json\r\n\r\n")


class StatsServer:
    def __init__(self, sock: socket.socket, address: Address, http: bool, minified: bool):
        self.sock = sock
        self.address = address
        self.http = http
        self.minified = minified
        sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def answer(self, document: dict) -> None:
        """Answer one waiting connection (the master's select() saw one) with `document`."""
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return                       # gone already, or nothing waiting after all
        with conn:
            conn.settimeout(SEND_TIMEOUT)
            text = json.dumps(document, separators=(",", ":")) if self.minified else json.dumps(document, indent=1)
            data = text.encode() + b"\n"
            try:
                if self.http:
                    _drain_request(conn)
                    data = HTTP_HEAD + data
                conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError as exc:
                log.info("stats client went away: %s", exc.strerror or exc)


def _drain_request(conn: socket.socket) -> None:
    """Read what the HTTP client sent (its request, unparsed): closing with it unread would reset the answer."""
    conn.settimeout(0.2)
    try:
        conn.recv(65536)
    except OSError:
        pass
    conn.settimeout(SEND_TIMEOUT)


def document(master) -> dict:
    """The snapshot, from the master's state and its workers' last reports."""
    now = time.time()
    listen_queue = master.backlog()
    workers = []
    by_number = {w.number: w for w in master.workers.values() if not w.stopping}
    for number in range(1, max([master.config.processes, master.wanted, *by_number]) + 1):
        worker = by_number.get(number)
        workers.append(_worker(worker, number, master, now) if worker is not None else _cheaped(number, master))
    return {
        "version": f"wsgistack {__version__}",
        "listen_queue": listen_queue,
        "listen_queue_errors": 0,
        "signal_queue": 0,
        "load": sum(1 for w in by_number.values() if w.threads_in_app),
        "pid": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "cwd": os.getcwd(),
        "locks": [],
        "sockets": [{"name": address.text, "proto": address.protocol, "queue": master.queued(address),
                     "max_queue": master.config.listen, "shared": int(master.shared(address)), "can_offload": 0}
                    for _, address in master.listeners],
        "workers": workers,
    }


def _worker(worker, number: int, master, now: float) -> dict:
    vsz, rss = memory(worker.pid)
    threads = master.config.threads
    return {
        "id": number, "pid": worker.pid, "accepting": int(worker.ready),
        "requests": master.slot_requests.get(number, 0) + worker.requests,
        "delta_requests": worker.requests, "exceptions": worker.exceptions, "harakiri_count": 0, "signals": 0,
        "signal_queue": 0, "status": "busy" if worker.threads_in_app else "idle", "rss": rss, "vsz": vsz,
        "running_time": int(worker.app_seconds * 1e6),
        "last_spawn": int(now - (time.monotonic() - worker.started)),
        "respawn_count": master.respawns.get(number, 0), "tx": worker.tx, "avg_rt": worker.avg_rt,
        "apps": [{"id": 0, "modifier1": 0, "mountpoint": "", "startup_time": 0, "requests": worker.requests,
                  "exceptions": worker.exceptions, "chdir": master.config.chdir}],
        "cores": [_core(index, index < worker.threads_in_app) for index in range(threads)],
    }


def _cheaped(number: int, master) -> dict:
    """A slot without a worker now (--cheaper, or SIGTTOU): as uWSGI lists a cheaped worker."""
    return {
        "id": number, "pid": 0, "accepting": 0, "requests": master.slot_requests.get(number, 0), "delta_requests": 0,
        "exceptions": 0, "harakiri_count": 0, "signals": 0, "signal_queue": 0, "status": "cheap", "rss": 0, "vsz": 0,
        "running_time": 0, "last_spawn": 0, "respawn_count": master.respawns.get(number, 0), "tx": 0, "avg_rt": 0,
        "apps": [], "cores": [],
    }


def _core(index: int, in_request: bool) -> dict:
    return {"id": index, "requests": 0, "static_requests": 0, "routed_requests": 0, "offloaded_requests": 0,
            "write_errors": 0, "read_errors": 0, "in_request": int(in_request), "vars": [], "req_info": {}}

