"""uWSGI's hooks (hooks.py): --hook-PHASE and --exec-PHASE run at their points, at start and on reload;
a failing one stops the start or abandons the reload."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from conftest import APPS, WSGISTACK, failed_start, free_port, wait_until


def lines(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_each_phase_runs_in_order_and_pre_and_post_app_again_on_reload(start_server, tmp_path):
    trace = tmp_path / "trace"
    flags = []
    for phase in ("asap", "as-root", "as-user", "pre-app", "post-app"):
        flags += ["--exec-" + phase, f"echo {phase} >> {trace}"]
    server = start_server(*flags, "--hook-master-start", f"exec:echo master-start >> {trace}",
                          "--hook-asap", "putenv:HOOKED=yes", "--hook-pre-app", f"exec:echo $HOOKED >> {trace}",
                          "--hook-as-user", f"mkdir:{tmp_path / 'made' / 'here'}", "--hook-post-app", "print:all set")
    wait_until(lambda: "post-app" in lines(trace), what="the post-app hook")
    assert lines(trace) == ["asap", "as-root", "as-user", "yes", "pre-app", "master-start", "post-app"]
    assert (tmp_path / "made" / "here").is_dir() and "all set" in server.log()
    os.kill(server.pid, signal.SIGHUP)
    server.wait_log("reload complete: generation 2", timeout=20)
    wait_until(lambda: lines(trace).count("post-app") == 2, what="post-app after the reload")
    assert lines(trace)[-3:] == ["yes", "pre-app", "post-app"]
    assert server.stop() == 0


def test_a_failing_command_stops_the_start_naming_its_option_file_and_line(tmp_path):
    ini, errors = failed_start(tmp_path, "exec-pre-app = exit 7")
    assert f"{ini}:4: option 'exec-pre-app': command 'exit 7' failed (exit status 7)" in errors


def test_a_failing_pre_app_hook_abandons_the_reload(start_server, tmp_path):
    ini, flag = tmp_path / "site.ini", tmp_path / "migrations-fail"
    ini.write_text(f"[uwsgi]\nwsgi-file = {APPS / 'basic.py'}\nexec-pre-app = test ! -e {flag}\n")
    server = start_server(str(ini), app=None)
    wait_until(lambda: server.workers(), what="a worker")
    before = server.workers()
    flag.write_text("")
    os.kill(server.pid, signal.SIGHUP)
    server.wait_log("reload failed, still serving the previous generation: a pre-app hook failed", timeout=20)
    assert server.workers() == before and server.get("/")[0] == 200
    assert server.stop() == 0


def test_unix_signal_gives_a_signal_another_meaning(start_server):
    """Containers send SIGTERM; uWSGI's configs for them say `unix_signal:15 gracefully_kill_them_all`, which is
    SIGTERM's meaning here already. Another mapping changes what a signal does: here SIGUSR1 reloads."""
    server = start_server("--hook-master-start", "unix_signal:15 gracefully_kill_them_all",
                          "--hook-master-start", "unix_signal:10 grace_them_all")
    wait_until(lambda: server.workers(), what="a worker")
    os.kill(server.pid, signal.SIGUSR1)
    server.wait_log("reload complete: generation 2", timeout=20)
    os.kill(server.pid, signal.SIGTERM)
    server.wait_log("SIGTERM: graceful stop")
    assert server.proc.wait(timeout=30) == 0


@pytest.mark.parametrize("option, value, message", [
    ("hook-pre-app", "nonsense", "expected ACTION:ARGUMENT, ACTION one of exec, print, putenv, mkdir, unlink, "
                                 "unix_signal; got 'nonsense'"),
    ("hook-pre-app", "unix_signal:15 gracefully_kill_them_all", "unix_signal is a master-start hook"),
    ("hook-master-start", "unix_signal:9 kill_them_all", "SIGKILL cannot be given another meaning"),
    ("hook-master-start", "unix_signal:15 brutally_reload", "unknown function 'brutally_reload'"),
])
def test_hooks_that_cannot_work_are_startup_errors(option, value, message):
    result = subprocess.run(WSGISTACK + ["--http", f"127.0.0.1:{free_port()}", "--wsgi-file", str(APPS / "basic.py"),
                                         f"--{option}", value], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and f"option '{option}': {message}" in result.stderr
