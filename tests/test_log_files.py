"""The log file (--logto, --daemonize) rotated and reopened while the server serves, no line lost.

--log-maxsize and --touch-logrotate: the master renames the file and starts a new one, the workers follow
within a second. A file moved away by logrotate (or deleted) is reopened by every process on its own.
"""

from __future__ import annotations

import http.client
import os
import re
import time
from pathlib import Path

from conftest import failed_start, wait_until


def get(port: int, path: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        assert conn.getresponse().read() is not None
    finally:
        conn.close()


def logged_requests(directory: Path) -> list[str]:
    """The /n?i=… request lines in every file of the directory (the log and its rotated copies)."""
    found = []
    for path in directory.iterdir():
        found += re.findall(r"GET (/n\?i=\d+) =>", path.read_text(errors="replace"))
    return found


def test_past_log_maxsize_the_log_is_rotated_and_no_line_is_lost(start_server, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    logfile = logs / "app.log"
    server = start_server("-p", "2", "--logto", str(logfile), "--log-maxsize", "3000")
    for index in range(60):                        # ~140 bytes a line: several rotations
        get(server.port, f"/n?i={index}")
        if index % 20 == 19:
            time.sleep(1.2)                        # the master looks every second
    wait_until(lambda: len(logged_requests(logs)) == 60, what="every request line in some file")
    assert sorted(logged_requests(logs)) == sorted(f"/n?i={index}" for index in range(60))
    backups = [path.name for path in logs.iterdir() if path != logfile]
    assert backups and all(re.fullmatch(r"app\.log\.\d{10}", name) for name in backups), backups
    assert "log rotated:" in logfile.read_text() + "".join((logs / name).read_text() for name in backups)
    assert server.stop() == 0


def test_touch_logrotate_with_a_backup_name(start_server, tmp_path):
    logfile, backup, trigger = tmp_path / "app.log", tmp_path / "app.log.old", tmp_path / "rotate"
    server = start_server("--logto", str(logfile), "--touch-logrotate", str(trigger), "--log-backupname",
                          str(backup))
    get(server.port, "/n?i=1")
    wait_until(lambda: "/n?i=1" in logfile.read_text(), what="the first line")
    trigger.touch()
    wait_until(backup.exists, what="the rotated file")
    time.sleep(1.5)                                # the worker follows within a second
    get(server.port, "/n?i=2")
    wait_until(lambda: "/n?i=2" in logfile.read_text(), what="the next line in the new file")
    assert "/n?i=1" in backup.read_text() and "/n?i=1" not in logfile.read_text()
    assert server.stop() == 0


def test_a_log_moved_away_by_logrotate_is_reopened(start_server, tmp_path):
    """logrotate's default (no copytruncate): rename the file; the server must start a new one by itself."""
    logfile = tmp_path / "app.log"
    server = start_server("-p", "2", "--logto", str(logfile))
    get(server.port, "/n?i=1")
    wait_until(lambda: "/n?i=1" in logfile.read_text(), what="the first line")
    os.rename(logfile, tmp_path / "app.log.1")
    wait_until(logfile.exists, what="a new log file")
    time.sleep(1.5)
    for index in range(2, 8):                      # each worker serves some
        get(server.port, f"/n?i={index}")
    wait_until(lambda: len(logged_requests(tmp_path)) == 7, what="7 request lines")
    assert sorted(re.findall(r"GET (/n\?i=\d+)", logfile.read_text())) == [f"/n?i={i}" for i in range(2, 8)]
    os.kill(server.pid, 15)
    wait_until(lambda: "exiting with status 0" in logfile.read_text(), what="the master's last line in the new file")


def test_req_logger_gives_the_access_log_a_file_of_its_own(start_server, tmp_path):
    """uWSGI's logger = file:PATH and req-logger = file:PATH: errors in one file, request lines in another;
    the access file is reopened too once logrotate moved it."""
    errors, access = tmp_path / "errors.log", tmp_path / "access.log"
    server = start_server("-p", "2", "--logger", f"file:{errors}", "--req-logger", f"file:{access}")
    get(server.port, "/n?i=1")
    get(server.port, "/error")
    wait_until(lambda: "GET /error =>" in access.read_text(), what="the request lines in their file")
    assert "boom: this traceback" in errors.read_text() and "GET /n?i=1 =>" not in errors.read_text()
    assert "Traceback" not in access.read_text()
    os.rename(access, tmp_path / "access.log.1")
    time.sleep(1.5)
    for index in range(2, 6):
        get(server.port, f"/n?i={index}")
    wait_until(lambda: access.exists() and "/n?i=5" in access.read_text(), what="a new access file")
    assert sorted(re.findall(r"GET (/n\?i=\d+)", access.read_text())) == [f"/n?i={i}" for i in range(2, 6)]
    assert server.stop() == 0


def test_a_logger_wsgistack_has_not_is_a_startup_error(tmp_path):
    ini, errors = failed_start(tmp_path, "logger = syslog:myapp")
    assert (f"{ini}:4: option 'logger': expected file:PATH or stdio, got 'syslog:myapp' "
            "(no other uWSGI logger is built in)") in errors
