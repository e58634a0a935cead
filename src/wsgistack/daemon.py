"""--daemonize: detach from the terminal, yet tell the shell whether the server came up.

The shell's process waits on a pipe until the daemon reports "ready" (first worker serving)
or an error; only then does `wsgistack --daemonize` return, with that outcome and exit status.
"""

from __future__ import annotations

import os
import signal
import sys

READY = b"ready"


def daemonize(logfile: str) -> int:
    """Double-fork; return, in the daemon, the fd on which to report the outcome (see report())."""
    log_fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)   # fail early, in the shell
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child > 0:
        # the master's signals are held until it handles them (master.hold_signals); the shell's Ctrl-C
        # (or a TERM, HUP) still ends this wait
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT})
        os.close(write_fd)
        os.close(log_fd)
        try:
            os.waitpid(child, 0)                   # the middle process exits at once
            _wait_for_outcome(read_fd, logfile)    # never returns
        except KeyboardInterrupt:                  # in either wait: the daemon may be up already
            print(f"wsgistack: interrupted; the daemon goes on starting on its own (see {logfile})", file=sys.stderr)
            os._exit(130)
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDONLY)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null)
    os.close(log_fd)
    return write_fd


def report(fd: int | None, message: bytes) -> None:
    """Tell the waiting shell how startup went ("ready ..." or an error line), once."""
    if fd is None:
        return
    try:
        os.write(fd, message)
    except OSError:
        pass
    finally:
        os.close(fd)


def _wait_for_outcome(read_fd: int, logfile: str) -> None:
    chunks = []
    while chunk := os.read(read_fd, 4096):
        chunks.append(chunk)
    message = b"".join(chunks).decode("utf-8", "replace").strip()
    if message.startswith(READY.decode()):
        print(f"wsgistack: {message}; logging to {logfile}")
        os._exit(0)
    print(f"wsgistack: error: {message or 'the daemon exited before it was ready'} (see {logfile})",
          file=sys.stderr)
    os._exit(1)
