"""The log file (--logto, --daemonize) rotated and reopened while the server serves, no line lost.

--log-maxsize and --touch-logrotate: the master renames the file and starts a new one, the workers follow
within a second. A file moved away by logrotate (or deleted) is reopened by every process on its own.
"""

from __future__ import annotations

import grp
import http.client
import os
import pwd
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from conftest import failed_start, wait_until


def get(port: int, path: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        assert conn.getresponse().read() is not None
    finally:
        conn.close()


def log_text(path: Path) -> str:
    """A log's text, or "" while there is none: a rotation renames the file, then the master opens the new one."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def logged_requests(directory: Path) -> list[str]:
    """The /n?i=… request lines in every file of the directory (the log and its rotated copies)."""
    found = []
    for path in directory.iterdir():
        found += re.findall(r"GET (/n\?i=\d+) =>", log_text(path))
    return found


def writing_to(server, path: Path) -> list[int]:
    """The server's processes (master, workers) with a descriptor still open on `path`, a log moved away: each
    reopens the log by its name on its own, a worker in its once-a-second sweep."""
    holders = []
    for pid in [server.pid, *server.workers()]:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                    holders.append(pid)
                    break
            except FileNotFoundError:
                pass                # closed meanwhile
    return holders


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
    # FILE.<epoch seconds>, and .1, .2, ... after it for more rotations within that second
    assert backups and all(re.fullmatch(r"app\.log\.\d{10}(\.\d+)?", name) for name in backups), backups
    assert "log rotated:" in log_text(logfile) + "".join(log_text(logs / name) for name in backups)
    assert server.stop() == 0


def test_touch_logrotate_with_a_backup_name(start_server, tmp_path):
    logfile, backup, trigger = tmp_path / "app.log", tmp_path / "app.log.old", tmp_path / "rotate"
    server = start_server("--logto", str(logfile), "--touch-logrotate", str(trigger), "--log-backupname",
                          str(backup))
    get(server.port, "/n?i=1")
    wait_until(lambda: "/n?i=1" in log_text(logfile), what="the first line")
    trigger.touch()
    wait_until(backup.exists, what="the rotated file")
    wait_until(lambda: not writing_to(server, backup), what="the worker writing to the new file")  # within a second
    get(server.port, "/n?i=2")
    wait_until(lambda: "/n?i=2" in log_text(logfile), what="the next line in the new file")
    assert "/n?i=1" in backup.read_text() and "/n?i=1" not in logfile.read_text()
    assert server.stop() == 0


def test_a_log_moved_away_by_logrotate_is_reopened(start_server, tmp_path):
    """logrotate's default (no copytruncate): rename the file; the server must start a new one by itself."""
    logfile = tmp_path / "app.log"
    server = start_server("-p", "2", "--logto", str(logfile))
    get(server.port, "/n?i=1")
    wait_until(lambda: "/n?i=1" in log_text(logfile), what="the first line")
    os.rename(logfile, tmp_path / "app.log.1")
    wait_until(logfile.exists, what="a new log file")
    wait_until(lambda: not writing_to(server, tmp_path / "app.log.1"), what="every process writing to the new file")
    for index in range(2, 8):                      # each worker serves some
        get(server.port, f"/n?i={index}")
    wait_until(lambda: len(logged_requests(tmp_path)) == 7, what="7 request lines")
    assert sorted(re.findall(r"GET (/n\?i=\d+)", logfile.read_text())) == [f"/n?i={i}" for i in range(2, 8)]
    os.kill(server.pid, 15)
    wait_until(lambda: "exiting with status 0" in log_text(logfile), what="the master's last line in the new file")


def test_a_log_that_cannot_be_reopened_is_said_once_and_writing_goes_on(start_server, tmp_path):
    """logrotate's `create` made a file the workers may not open (here: a directory at the path): lines go on to
    the rotated file, and that is said once (it was silent, and logrotate deletes that file later)."""
    logfile = tmp_path / "app.log"
    server = start_server("--logto", str(logfile))
    get(server.port, "/n?i=1")
    wait_until(lambda: "/n?i=1" in log_text(logfile), what="the first line")
    rotated = tmp_path / "app.log.1"
    os.rename(logfile, rotated)
    logfile.mkdir()
    wait_until(lambda: "cannot reopen the log" in log_text(rotated), what="the failure said")
    time.sleep(2.5)
    get(server.port, "/n?i=2")
    wait_until(lambda: "/n?i=2" in log_text(rotated), what="lines go on to the rotated file")
    assert log_text(rotated).count(f"cannot reopen the log {logfile}") == 2      # master and worker, once each
    assert "have logrotate create it for that user" in log_text(rotated)
    logfile.rmdir()
    wait_until(lambda: logfile.is_file() and f"the log {logfile} is written again" in log_text(logfile),
               what="the new log file once it can be opened")
    assert server.stop() == 0


def test_logfile_chmod_holds_for_the_file_made_after_logrotate_too(start_server, tmp_path):
    logfile = tmp_path / "app.log"
    server = start_server("--logto", str(logfile), "--logfile-chmod", "640")
    get(server.port, "/")
    assert logfile.stat().st_mode & 0o777 == 0o640
    os.rename(logfile, tmp_path / "app.log.1")
    wait_until(logfile.exists, what="a new log file")
    assert logfile.stat().st_mode & 0o777 == 0o640
    assert server.stop() == 0


def test_logfile_chown_gives_the_log_to_uid(start_server, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("--uid needs root to switch users, and this test does not run as root")
    logfile = tmp_path / "app.log"
    server = start_server("--logto", str(logfile), "--uid", "nobody", "--gid", "nogroup", "--logfile-chown",
                          app="whoami.py")
    get(server.port, "/")
    info = logfile.stat()
    assert (info.st_uid, info.st_gid) == (pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
    assert server.stop() == 0


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
    wait_until(lambda: not writing_to(server, tmp_path / "access.log.1"), what="every process writing to a new file")
    for index in range(2, 6):
        get(server.port, f"/n?i={index}")
    wait_until(lambda: access.exists() and "/n?i=5" in access.read_text(), what="a new access file")
    assert sorted(re.findall(r"GET (/n\?i=\d+)", access.read_text())) == [f"/n?i={i}" for i in range(2, 6)]
    assert server.stop() == 0


def test_a_logger_wsgistack_has_not_is_a_startup_error(tmp_path):
    ini, errors = failed_start(tmp_path, "logger = syslog:myapp")
    assert (f"{ini}:4: option 'logger': expected file:PATH or stdio, got 'syslog:myapp' "
            "(no other uWSGI logger is built in)") in errors


def test_rotations_within_one_second_keep_every_backup(start_server, tmp_path):
    """Backups are named FILE.<epoch seconds>: a second rotation within that second was renamed onto the first
    backup, whose lines were lost. Here a backup of each of the seconds to come exists already: the rotation must
    take a name of its own, and leave them alone."""
    logfile, trigger = tmp_path / "app.log", tmp_path / "rotate"
    trigger.touch()
    server = start_server("--logto", str(logfile), "--touch-logrotate", str(trigger))
    now = int(time.time())
    earlier = {tmp_path / f"app.log.{second}": f"an earlier backup of {second}\n" for second in range(now, now + 120)}
    for path, text in earlier.items():
        path.write_text(text)
    get(server.port, "/n?i=1")
    wait_until(lambda: "/n?i=1" in log_text(logfile), what="the first line")
    trigger.touch()
    backup, = wait_until(lambda: list(tmp_path.glob("app.log.*.1")), what="a backup with a name of its own")
    assert re.fullmatch(r"app\.log\.\d{10}\.1", backup.name) and "/n?i=1" in backup.read_text()
    assert all(path.read_text() == text for path, text in earlier.items())
    wait_until(lambda: "log rotated: " in log_text(logfile), what="the rotation said in the new file")
    assert server.stop() == 0


def test_a_log_directory_deleted_and_created_again_gets_a_new_log_not_a_rotation(start_server, tmp_path):
    """The master's log was then the deleted file, past --log-maxsize: it "rotated" the new file the workers had
    just started at the path ("log rotated: 1648 bytes moved", an almost empty backup)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    logfile = logs / "app.log"
    server = start_server("--logto", str(logfile), "--log-maxsize", "2000")
    get(server.port, "/n?i=0")
    wait_until(lambda: "/n?i=0" in log_text(logfile), what="the first line")
    shutil.rmtree(logs)
    for index in range(1, 30):                     # into the deleted file, past --log-maxsize
        get(server.port, f"/n?i={index}")
    logs.mkdir()
    wait_until(lambda: logfile.exists() and "is a new file" in log_text(logfile), what="the master in the new file")
    assert [path.name for path in logs.iterdir()] == ["app.log"]
    assert "log rotated" not in logfile.read_text()
    assert server.stop() == 0


def test_a_rotation_that_keeps_failing_is_said_once_until_one_succeeds(start_server, tmp_path):
    """Past --log-maxsize the master tries to rotate on every pass of its loop: a failure was logged every second,
    for ever."""
    logfile, backup = tmp_path / "app.log", tmp_path / "backup"
    backup.mkdir()                                  # a directory where the backup goes: each rename fails
    server = start_server("--logto", str(logfile), "--log-maxsize", "1000", "--log-backupname", str(backup))
    for index in range(10):
        get(server.port, f"/n?i={index}")
    wait_until(lambda: "cannot rotate the log" in log_text(logfile), what="the first failure")
    for count in range(1, 4):                       # each SIGUSR1 is one more pass of the master's loop
        os.kill(server.pid, signal.SIGUSR1)
        wait_until(lambda: log_text(logfile).count("status: master") == count, what=f"status {count}")
    assert logfile.read_text().count("cannot rotate the log") == 1
    backup.rmdir()
    wait_until(lambda: "log rotated: " in log_text(logfile), what="a rotation once it can")
    assert "can be rotated again" in logfile.read_text() and "cannot rotate" in backup.read_text()
    backup.unlink()
    backup.mkdir()                                  # failing again: said again
    # Requests until the worker writes to the new file (it follows within a second) and fills it past the limit.
    wait_until(lambda: get(server.port, "/more") or "cannot rotate the log" in log_text(logfile),
               what="the failure said again")
    assert server.stop() == 0


def test_log_maxsize_where_the_user_cannot_rotate_is_a_startup_error(tmp_path):
    """After --uid the master rotates as that user: a log directory it cannot write failed every second, for ever."""
    if os.geteuid() != 0:
        pytest.skip("--uid needs root to switch users, and this test does not run as root")
    logfile = tmp_path / "app.log"                  # tmp_path is root's, mode 700
    ini, _ = failed_start(tmp_path, "uid = nobody", "gid = nogroup", f"logto = {logfile}", "log-maxsize = 1000")
    assert (f"{ini}:7: option 'log-maxsize': the log {logfile} could not be rotated: user nobody cannot write its "
            f"directory {tmp_path}") in logfile.read_text()


def test_the_log_is_rotated_after_uid_where_the_user_may_write(start_server):
    if os.geteuid() != 0:
        pytest.skip("--uid needs root to switch users, and this test does not run as root")
    logs = Path(tempfile.mkdtemp(prefix="wsgistack-logs-"))      # not under tmp_path: root's, mode 700
    try:
        os.chown(logs, pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
        logfile, trigger = logs / "app.log", logs / "rotate"
        trigger.touch()
        server = start_server("--uid", "nobody", "--gid", "nogroup", "--logto", str(logfile), "--touch-logrotate",
                              str(trigger))
        get(server.port, "/n?i=1")
        wait_until(lambda: "/n?i=1" in log_text(logfile), what="the first line")
        trigger.touch()
        wait_until(lambda: "log rotated: " in log_text(logfile), what="the rotation")
        backup, = [path for path in logs.iterdir() if path.name.startswith("app.log.")]
        assert "/n?i=1" in backup.read_text()
        assert server.stop() == 0
    finally:
        shutil.rmtree(logs)
