"""`wsgistack --stop PIDFILE` and `--reload PIDFILE`: signal a running master, wait for the outcome.

A reload is complete when the master's process title shows a higher reload count; a stop when
the process is gone. A pidfile naming a dead process, or a process that is not a wsgistack
master (pid reuse), is refused with a clear message.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time

from wsgistack.config import ConfigError

_RELOADS = re.compile(r"\(reloads: (\d+)(, last failed)?(, reloading)?\)")


def read_pidfile(path: str) -> int:
    try:
        text = open(path).read().strip()
    except FileNotFoundError:
        raise ConfigError(f"no pidfile at {path!r}: is the server running?", option="pidfile") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path!r}: {exc.strerror}", option="pidfile") from None
    if not text.isdigit():
        raise ConfigError(f"{path!r} does not hold a pid (it holds {text[:40]!r})", option="pidfile")
    pid = int(text)
    title = master_title(pid)
    if title is None:
        raise ConfigError(f"stale pidfile {path!r}: process {pid} is not running", option="pidfile")
    if "wsgistack master" not in title:
        raise ConfigError(f"stale pidfile {path!r}: process {pid} is not a wsgistack master ({title[:60]!r})",
                          option="pidfile")
    return pid


def running_master(path: str) -> int | None:
    """The pid in a pidfile if it is a running wsgistack master's; None for no pidfile, or a stale one."""
    try:
        return read_pidfile(path)
    except ConfigError:
        return None


def master_title(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None          # exited, not yet reaped
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def stop(pidfile: str, timeout: float) -> int:
    pid = read_pidfile(pidfile)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if master_title(pid) is None:
            print(f"wsgistack: stopped (master {pid})")
            return 0
        time.sleep(0.1)
    print(f"wsgistack: error: master {pid} still running after {timeout:.0f} s", file=sys.stderr)
    return 1


def reload(pidfile: str, timeout: float) -> int:
    pid = read_pidfile(pidfile)
    title = master_title(pid) or ""
    before = _reload_count(title)
    match = _RELOADS.search(title)
    if match and match[3]:
        before += 1                 # a reload under way is not ours: the master runs ours after it
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        title = master_title(pid)
        if title is None:
            print(f"wsgistack: error: master {pid} exited during the reload", file=sys.stderr)
            return 1
        match = _RELOADS.search(title)
        if match and int(match[1]) > before:
            if match[2]:
                print(f"wsgistack: error: reload failed; master {pid} still serves the previous code (see its log)",
                      file=sys.stderr)
                return 1
            print(f"wsgistack: reloaded (master {pid}, reload {match[1]})")
            return 0
        time.sleep(0.1)
    print(f"wsgistack: error: reload of master {pid} not complete after {timeout:.0f} s", file=sys.stderr)
    return 1


def _reload_count(title: str) -> int:
    match = _RELOADS.search(title)
    return int(match[1]) if match else 0
