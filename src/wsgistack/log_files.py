"""The log files: stdout and stderr appending to the file of --logto, --daemonize or --logger file:PATH, and
the access log's own file (--req-logger file:PATH). The master rotates the first (--log-maxsize,
--touch-logrotate); every process reopens either once it was moved away (the rotation, logrotate) or deleted.

Process-wide state, as the descriptors are: workers inherit it with them.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from wsgistack.config import Config, ConfigError

_log_path: str | None = None                  # where stdout and stderr append, absolute; None: not a file of ours
_request_log: tuple[str, int] | None = None   # --req-logger file:PATH: (absolute path, descriptor)


def logger_files(config: Config, start_dir: str = "") -> tuple[str | None, str | None]:
    """(the general log file, the access log file) that --logger and --req-logger name, relative ones from
    `start_dir`; ConfigError for a logger wsgistack has not (only file:PATH, and stdio, the default, are)."""
    files: dict[str, str | None] = {}
    for option in ("logger", "req-logger"):
        files[option] = None
        for value in getattr(config, option.replace("-", "_")):
            kind, colon, target = value.partition(":")
            where = config.where(option, value)
            if kind == "stdio" and not colon:
                continue
            if kind != "file" or not target:
                raise ConfigError(f"expected file:PATH or stdio, got {value!r} (no other uWSGI logger is built in)",
                                  option=option, **where)
            if files[option] is not None:
                raise ConfigError("one log file only", option=option, **where)
            files[option] = os.path.join(start_dir, target)
    return files["logger"], files["req-logger"]


def redirect_output(path: str) -> None:
    """stdout and stderr (ours, the app's, any print) append to FILE, as uWSGI's --logto."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    note_log_path(path)


def note_log_path(path: str) -> None:
    """stdout and stderr now append to `path` (--daemonize redirects them itself)."""
    global _log_path
    _log_path = os.path.abspath(path)


def open_request_log(path: str) -> None:
    """--req-logger file:PATH: the access log appends to its own file (opened by the master, before forking)."""
    global _request_log
    _request_log = (os.path.abspath(path), os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))


def request_log_fd() -> int:
    """Where access log lines go: the --req-logger file, else stderr."""
    return _request_log[1] if _request_log is not None else 2


def log_is_a_file() -> bool:
    """stdout and stderr append to a file of ours (rotated and reopened by path)."""
    return _log_path is not None


def log_size() -> int:
    return os.fstat(2).st_size if _log_path is not None else 0


def rotate_log(backup_name: str = "") -> None:
    """--log-maxsize, --touch-logrotate: the log file is renamed (to `backup_name`, else FILE.<epoch seconds>, as
    uWSGI names it) and a new one opened here; the workers open it within a second (reopen_log_if_moved)."""
    if _log_path is None:
        return
    backup = backup_name or f"{_log_path}.{int(time.time())}"
    size = log_size()
    try:
        os.rename(_log_path, backup)
        redirect_output(_log_path)
    except OSError as exc:
        logging.getLogger("wsgistack").error("cannot rotate the log %s: %s", _log_path, exc.strerror or exc)
        return
    logging.getLogger("wsgistack").info("log rotated: %d bytes moved to %s", size, backup)


def reopen_log_if_moved(force: bool = False) -> None:
    """Write to the files now at the logs' paths, if they are not the ones written to (rotated by the master,
    moved by logrotate, deleted), or if `force` (--touch-logreopen). Called every second by each process."""
    if _log_path is not None and (force or _moved(_log_path, 2)):
        try:
            redirect_output(_log_path)
        except OSError:
            pass            # the directory is gone: go on writing to the old file rather than nowhere
    if _request_log is not None and (force or _moved(*_request_log)):
        path, fd = _request_log
        try:
            new = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError:
            return
        os.dup2(new, fd)
        os.close(new)


def _moved(path: str, fd: int) -> bool:
    try:
        there, here = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return (there.st_ino, there.st_dev) != (here.st_ino, here.st_dev)
