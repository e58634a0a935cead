"""--py-autoreload: a development convenience, as uWSGI's: reload the server when the app's code changes on disk.

A thread of worker 1 looks every N seconds at the modification time of the file of every module imported;
a change is logged and sends SIGHUP to the master, which reloads gracefully (fresh imports in new workers,
the old ones finish their requests). An edit that breaks the app keeps the old code serving, as any failed
reload does, and the thread goes on watching: the fix reloads.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger("wsgistack")


def watch_modules(interval: float, master_pid: int) -> None:
    """Note the modules' files now (the code as loaded), then watch them from a thread."""
    noted = dict(_module_files())
    threading.Thread(target=_watch, args=(interval, master_pid, noted), name="py-autoreload", daemon=True).start()


def _module_files():
    """(file, (module name, modification time in ns)) of every module imported from a file."""
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path:
            try:
                yield path, (name, os.stat(path).st_mtime_ns)
            except OSError:
                continue


def _watch(interval: float, master_pid: int, noted: dict[str, tuple[str, int]]) -> None:
    while True:
        time.sleep(interval)
        for path, (name, modified) in _module_files():
            if noted.setdefault(path, (name, modified))[1] != modified:
                noted[path] = (name, modified)
                log.info("%s (module %s) changed: reloading (--py-autoreload)", path, name)
                os.kill(master_pid, signal.SIGHUP)
