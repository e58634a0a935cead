"""Debian's nginx as a test fixture: foreground, in its own temporary prefix (config, pid file, logs, temp
paths), on free loopback ports, stopped at teardown with bounded waits.

Missing nginx: the test fails when the environment variable CI is set (CI must run these tests), else skips.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import wait_for_port

# Debian installs the binary in /usr/sbin, which is not on an unprivileged user's PATH.
NGINX_PATHS = ("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx")
# The stock parameter files the seed's `include uwsgi_params;` means, as the distribution ships them.
STOCK_CONF_DIR = Path("/etc/nginx")
STOCK_INCLUDES = ("uwsgi_params", "fastcgi_params")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def require_nginx() -> str:
    """The nginx binary, or fail (under CI) / skip (elsewhere) with the reason."""
    for candidate in NGINX_PATHS:
        found = shutil.which(candidate)
        if found:
            missing = [name for name in STOCK_INCLUDES if not (STOCK_CONF_DIR / name).is_file()]
            if not missing:
                return found
            reason = f"nginx is installed but {', '.join(missing)} is missing from {STOCK_CONF_DIR}"
            break
    else:
        reason = "nginx is not installed (Debian: apt-get install nginx)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the nginx tests", pytrace=False)
    pytest.skip(reason)


def main_config(prefix: Path, http_block: str) -> str:
    """nginx.conf around `http_block` (upstreams and servers): everything nginx writes stays under prefix."""
    # As root, nginx's workers would switch to `nobody`, who cannot read a private temporary directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp_paths = "\n".join(f"    {kind}_temp_path {prefix / (kind + '_temp')};"
                           for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""{user}daemon off;
worker_processes 2;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} warn;
events {{
    worker_connections 1024;
}}
http {{
    default_type application/octet-stream;
    access_log {prefix / 'access.log'};
{temp_paths}
{http_block}
}}
"""


class Nginx:
    """One nginx master (and its workers) serving `http_block` from the prefix directory `prefix`."""

    def __init__(self, binary: str, prefix: Path, http_block: str, ports: list[int]):
        self.binary = binary
        self.prefix = prefix
        self.ports = ports
        prefix.mkdir(parents=True, exist_ok=True)
        for name in STOCK_INCLUDES:
            shutil.copy(STOCK_CONF_DIR / name, prefix / name)
        # The seed's error_page targets, so an nginx-made error page is recognisable in a failing test.
        (prefix / "html").mkdir(exist_ok=True)
        for page in ("404.html", "50x.html"):
            (prefix / "html" / page).write_text(f"nginx error page {page}\n")
        self.config = prefix / "nginx.conf"
        self.config.write_text(main_config(prefix, http_block))
        self.proc: subprocess.Popen | None = None

    def command(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(self.config), "-e", str(self.prefix / "error.log"),
                *extra]

    def start(self) -> None:
        check = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=START_TIMEOUT)
        if check.returncode != 0:
            raise AssertionError(f"nginx rejected its configuration:\n{check.stderr}\n{self.config.read_text()}")
        with open(self.prefix / "stderr.log", "wb") as output:
            self.proc = subprocess.Popen(self.command(), stdout=output, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            for port in self.ports:
                wait_for_port(port, timeout=START_TIMEOUT, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise AssertionError(f"nginx did not start: {exc}\n{self.error_log()}") from None

    def stop(self) -> None:
        """Fast shutdown (SIGTERM), then SIGKILL to the whole process group if it takes too long."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        try:           # workers that outlived the master must not leak into other tests
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(5)

    def error_log(self) -> str:
        parts = []
        for name in ("stderr.log", "error.log"):
            path = self.prefix / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)
