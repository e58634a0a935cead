"""The log files: stdout and stderr appending to the file of --logto, --daemonize or --logger file:PATH, and
the access log's own file (--req-logger file:PATH). The master rotates the first (--log-maxsize,
--touch-logrotate); every process reopens either once it was moved away (the rotation, logrotate) or deleted.

Rotation renames the file in its directory: the user the server runs as (--uid) must be able to write there, which
is checked at startup (a server that cannot rotate would let the log grow past --log-maxsize, saying so every
second). A rotation failing later all the same (the directory's mode changed) is said once, and again only after
one succeeded.

Process-wide state, as the descriptors are: workers inherit it with them.
"""

from __future__ import annotations

import logging
import os
import pwd
import sys
import time

from wsgistack.config import Config, ConfigError

_log_path: str | None = None                  # where stdout and stderr append, absolute; None: not a file of ours
_request_log: tuple[str, int] | None = None   # --req-logger file:PATH: (absolute path, descriptor)
_rotation_failing = False                     # the last rotation failed (and said so): the next failures are not said


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
    fd = _open_log(path)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    note_log_path(path)


_file_mode: int | None = None       # --logfile-chmod: for the files made again after a rotation too


def set_log_file_mode(mode: int) -> None:
    global _file_mode
    _file_mode = mode


def _open_log(path: str) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    if _file_mode is not None and os.path.isfile(path):
        try:
            os.fchmod(fd, _file_mode)
        except OSError:
            pass                          # not ours to change (another user's file): it is written all the same
    return fd


def note_log_path(path: str) -> None:
    """stdout and stderr now append to `path` (--daemonize redirects them itself)."""
    global _log_path
    _log_path = os.path.abspath(path)


def open_request_log(path: str) -> None:
    """--req-logger file:PATH: the access log appends to its own file (opened by the master, before forking)."""
    global _request_log
    _request_log = (os.path.abspath(path), _open_log(path))


def request_log_fd() -> int:
    """Where access log lines go: the --req-logger file, else stderr."""
    return _request_log[1] if _request_log is not None else 2


def log_is_a_file() -> bool:
    """stdout and stderr append to a file of ours (rotated and reopened by path)."""
    return _log_path is not None


def log_size() -> int:
    return os.fstat(2).st_size if _log_path is not None else 0


def check_log_rotation(config: Config) -> None:
    """--log-maxsize, --touch-logrotate: a log whose directory the server's user cannot write could never be rotated
    (renamed, and a new one created): a startup error naming the option, rather than a log that grows anyway."""
    option = "log-maxsize" if config.log_maxsize else "touch-logrotate" if config.touch_logrotate else ""
    if _log_path is None or not option:
        return
    directory = os.path.dirname(_log_path)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"the log {_log_path} could not be rotated: user {_user_name()} cannot write its directory "
                          f"{directory} (give the log a directory that user may write)", option=option,
                          **config.where(option))


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def rotate_log(backup_name: str = "") -> None:
    """--log-maxsize, --touch-logrotate: the log file is renamed (see _backup_path) and a new one opened here; the
    workers open it within a second (reopen_log_if_moved). A file at the path that is not the one written to
    (deleted, or moved away, and created again) holds none of these lines: it is written to, not rotated."""
    if _log_path is None:
        return
    if _moved(_log_path, 2):
        _reopen_instead_of_rotating()
        return
    backup = _backup_path(backup_name)
    size = log_size()
    try:
        os.rename(_log_path, backup)
        redirect_output(_log_path)
    except OSError as exc:
        _rotation_failed(exc)
        return
    _rotation_succeeded()
    logging.getLogger("wsgistack").info("log rotated: %d bytes moved to %s", size, backup)


def _backup_path(backup_name: str) -> str:
    """--log-backupname as given: each rotation replaces the previous backup, as in uWSGI (one backup is what it
    asks for). Else FILE.<epoch seconds> as uWSGI names it, then FILE.<epoch seconds>.1, .2, ... for the rotations
    within the same second (--log-maxsize is checked on every pass of the master's loop), where uWSGI's rename
    would replace the earlier backup and lose its lines."""
    if backup_name:
        return backup_name
    first = path = f"{_log_path}.{int(time.time())}"
    number = 0
    while os.path.lexists(path):
        number += 1
        path = f"{first}.{number}"
    return path


def _reopen_instead_of_rotating() -> None:
    try:
        redirect_output(_log_path)
    except OSError:
        return              # its directory is gone: go on writing to the old file rather than nowhere
    logging.getLogger("wsgistack").info("the log %s is a new file (the one written to was deleted or moved away): "
                                        "writing to it, nothing to rotate", _log_path)


def _rotation_failed(exc: OSError) -> None:
    """Said once: the master tries again on every pass while the log is past --log-maxsize."""
    global _rotation_failing
    if not _rotation_failing:
        logging.getLogger("wsgistack").error("cannot rotate the log %s: %s (said once, until a rotation succeeds)",
                                             _log_path, exc.strerror or exc)
    _rotation_failing = True


def _rotation_succeeded() -> None:
    global _rotation_failing
    if _rotation_failing:
        logging.getLogger("wsgistack").info("the log %s can be rotated again", _log_path)
    _rotation_failing = False


def reopen_log_if_moved(force: bool = False) -> None:
    """Write to the files now at the logs' paths, if they are not the ones written to (rotated by the master,
    moved by logrotate, deleted), or if `force` (--touch-logreopen). Called every second by each process."""
    if _log_path is not None and (force or _moved(_log_path, 2)):
        try:
            redirect_output(_log_path)
            _reopened(_log_path)
        except OSError as exc:
            _reopen_failed(_log_path, exc)   # go on writing to the old file rather than nowhere
    if _request_log is not None and (force or _moved(*_request_log)):
        path, fd = _request_log
        try:
            new = _open_log(path)
        except OSError as exc:
            _reopen_failed(path, exc)
            return
        _reopened(path)
        os.dup2(new, fd)
        os.close(new)


_reopen_failing: set[str] = set()


def _reopen_failed(path: str, exc: OSError) -> None:
    """Said once per path (this is tried every second): lines go on to the old file, which logrotate may delete."""
    if path not in _reopen_failing:
        _reopen_failing.add(path)
        logging.getLogger("wsgistack").error(
            "cannot reopen the log %s as user %s: %s; writing on to the file it replaced (said once; have "
            "logrotate create it for that user, `create 0640 USER GROUP`, or use copytruncate)", path, _user_name(),
            exc.strerror or exc)


def _reopened(path: str) -> None:
    if path in _reopen_failing:
        _reopen_failing.discard(path)
        logging.getLogger("wsgistack").info("the log %s is written again", path)


def log_paths() -> list[str]:
    """The log files this process writes (the general log, the access log's own file)."""
    return [path for path in (_log_path, _request_log[0] if _request_log else None) if path]


def _moved(path: str, fd: int) -> bool:
    try:
        there, here = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return (there.st_ino, there.st_dev) != (here.st_ino, here.st_dev)
