"""CPU time per request of one server process, split into user and system time.

The server (1 process) is pinned to CPU 1 and wrk to CPU 0, as in the benchmark's 1-process
configuration; user + system time of the server's processes (from /proc) over a wrk run, divided by
the requests wrk counted. Req/s moves with whatever else the machine does; CPU per request much less,
so it is the figure to compare before and after a change. Uses bench/.venv (run bench/run.sh once).

    python3 bench/cpu_per_request.py wsgistack FastWSGI --shape 12hdr --seconds 5
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.load import SHAPES, wrk_command  # noqa: E402
from harness.procs import pinned, session_pids  # noqa: E402
from harness.servers import by_name  # noqa: E402

SERVER_CPU, WRK_CPU = {1}, {0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_ticks(pids: list[int]) -> tuple[int, int]:
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user, system


def wait_for(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def measure(server, shape, seconds: int) -> str:
    port = free_port()
    proc = subprocess.Popen(server.argv(port, 1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=pinned(SERVER_CPU))
    try:
        wait_for(port)
        url = f"http://127.0.0.1:{port}/"
        subprocess.run(wrk_command(shape, url, 1), capture_output=True, preexec_fn=pinned(WRK_CPU), timeout=30)
        pids = session_pids(proc.pid)
        user0, system0 = cpu_ticks(pids)
        output = subprocess.run(wrk_command(shape, url, seconds), capture_output=True, text=True,
                                preexec_fn=pinned(WRK_CPU), timeout=seconds + 30).stdout
        user1, system1 = cpu_ticks(pids)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    per_request = 1e6 / os.sysconf("SC_CLK_TCK") / requests
    user, system = (user1 - user0) * per_request, (system1 - system0) * per_request
    return (f"{server.name:12s} {shape.key:6s} {rate / 1000:7.1f}k req/s   CPU/request {user + system:6.2f} µs "
            f"(user {user:5.2f}, system {system:5.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("servers", nargs="*", default=["wsgistack", "FastWSGI"])
    parser.add_argument("--shape", action="append", choices=[s.key for s in SHAPES if not s.pipeline],
                        help="load shape (repeatable; default 2hdr and 12hdr)")
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    shapes = [s for s in SHAPES if s.key in (args.shape or ["2hdr", "12hdr"])]
    for server in by_name(args.servers):
        for shape in shapes:
            print(measure(server, shape, args.seconds), flush=True)


if __name__ == "__main__":
    main()
