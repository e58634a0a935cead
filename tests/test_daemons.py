"""--attach-daemon (daemons.py): commands the master runs beside the workers, kept running, restarted on reload,
stopped with the server."""

from __future__ import annotations

import os
import re
import signal
import time

from conftest import failed_start, wait_until


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def log_text(path) -> str:
    """A log's text, or "" while there is none: a rotation renames the file, then the master opens the new one."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def started_pids(path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_a_daemon_is_kept_running_restarted_on_reload_and_stopped_with_the_server(start_server, tmp_path):
    pids = tmp_path / "pids"
    server = start_server("--attach-daemon", f"echo $$ >> {pids}; exec sleep 600")
    first, = wait_until(lambda: started_pids(pids), what="the daemon started")
    assert alive(first) and os.getppid() != first
    sockets = [os.readlink(f"/proc/{first}/fd/{fd}") for fd in os.listdir(f"/proc/{first}/fd")]
    assert not [target for target in sockets if target.startswith("socket:")], sockets    # none of the server's
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: len(started_pids(pids)) == 2, what="started again")
    # (the run time is rounded: a slow machine's "0.6 s" says 1)
    assert re.search(rf"\(pid {first}\) was killed by SIGKILL after \d+ s; starting it again in 1 s", server.log())
    second = started_pids(pids)[1]
    os.kill(server.pid, signal.SIGHUP)
    wait_until(lambda: len(started_pids(pids)) == 3, timeout=20, what="restarted by the reload")
    wait_until(lambda: not alive(second), what="the old one gone")
    third = started_pids(pids)[2]
    assert server.stop() == 0
    assert not alive(third)


def test_a_daemon_that_keeps_failing_is_started_again_ever_more_slowly(start_server, tmp_path):
    runs = tmp_path / "runs"
    server = start_server("--attach-daemon", f"echo run >> {runs}; exit 3")
    wait_until(lambda: re.search(r"exited with status 3 after \d+ s; starting it again in 4 s", server.log()),
               timeout=15, what="the third start delayed 4 s")
    log = server.log()
    assert "starting it again in 1 s" in log and "starting it again in 2 s" in log
    assert len(runs.read_text().split()) == 3                    # not spinning: 3 runs in ~3 s
    assert server.stop() == 0


def live_pid(pidfile) -> int | None:
    pids = started_pids(pidfile)
    return pids[0] if pids and alive(pids[0]) else None


def test_a_smart_daemon_is_started_when_its_pidfile_names_no_live_process_and_outlives_the_server(
        start_server, tmp_path):
    """uWSGI's smart-attach-daemon: a service that daemonizes and writes a pidfile (memcached -d -P, say). As a
    real daemon it leaves the server's session (setsid), so the kill of the server's process group that ends every
    test does not reach it either."""
    pidfile = tmp_path / "service.pid"
    pids = []
    try:
        server = start_server("--smart-attach-daemon", f"{pidfile} setsid sleep 600 & echo $! > {pidfile}")
        pids.append(wait_until(lambda: live_pid(pidfile), what="the service running"))
        os.kill(pids[0], signal.SIGKILL)
        pids.append(wait_until(lambda: live_pid(pidfile) not in (None, pids[0]) and live_pid(pidfile), timeout=15,
                               what="started again"))
        os.kill(server.pid, signal.SIGHUP)
        server.wait_log("reload complete: generation 2", timeout=20)
        assert live_pid(pidfile) == pids[1]            # a reload leaves it running
        assert server.stop() == 0
        time.sleep(0.2)                                # a SIGKILL it got would have taken effect by now
        assert alive(pids[1])                          # and so does a stop
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_smart_daemon_without_its_command_is_a_startup_error(tmp_path):
    ini, errors = failed_start(tmp_path, "smart-attach-daemon = /tmp/only-a-pidfile.pid")
    assert f"{ini}:4: option 'smart-attach-daemon': expected PIDFILE COMMAND" in errors


def test_a_compound_daemon_command_is_stopped_whole(start_server, tmp_path):
    """`cd x && cmd` runs cmd under a /bin/sh of its own: the whole process group is stopped (only the shell was,
    and the command ran on after reloads and after the server)."""
    pids = tmp_path / "pids"
    server = start_server("--attach-daemon", f"cd {tmp_path} && sh -c 'echo $$ >> {pids}; exec sleep 600'")
    first, = wait_until(lambda: started_pids(pids), what="the daemon started")
    os.kill(server.pid, signal.SIGHUP)
    wait_until(lambda: len(started_pids(pids)) == 2, timeout=20, what="restarted by the reload")
    wait_until(lambda: not alive(first), what="the first one stopped by the reload")
    second = started_pids(pids)[1]
    assert server.stop() == 0
    wait_until(lambda: not alive(second), what="the second one stopped with the server")


def test_daemons_die_with_the_servers_process_group(start_server, tmp_path):
    """A hard kill of the server's group (supervisord's killasgroup) reaches its daemons: they share it."""
    pids = tmp_path / "pids"
    server = start_server("--attach-daemon", f"echo $$ >> {pids}; exec sleep 600")
    daemon, = wait_until(lambda: started_pids(pids), what="the daemon started")
    os.killpg(server.pid, signal.SIGKILL)
    wait_until(lambda: not alive(daemon), what="the daemon gone with the group")


def test_a_daemons_output_follows_the_log_when_it_is_rotated(start_server, tmp_path):
    """Celery beside the workers, the log rotated: its lines go to the new file too (a daemon holding the file
    itself went on writing to the renamed one for ever), whole lines, and its last ones are not lost on stop."""
    logfile, backup, trigger = tmp_path / "app.log", tmp_path / "app.log.old", tmp_path / "rotate"
    server = start_server("--logto", str(logfile), "--touch-logrotate", str(trigger), "--log-backupname", str(backup),
                          "--attach-daemon", "trap 'echo daemon stopped; exit 0' TERM; i=0; "
                          "while :; do i=$((i+1)); echo tick $i; sleep 0.1; done")
    wait_until(lambda: "tick 3\n" in log_text(logfile), what="the daemon's lines in the log")
    trigger.touch()
    wait_until(lambda: "log rotated" in log_text(logfile), what="the rotation")
    size = backup.stat().st_size
    wait_until(lambda: log_text(logfile).count("tick") >= 5, what="the daemon's lines in the new file")
    assert backup.stat().st_size == size
    assert server.stop() == 0
    assert "daemon stopped\n" in logfile.read_text()
    ticks = [line for line in (backup.read_text() + logfile.read_text()).splitlines() if line.startswith("tick")]
    assert ticks == [f"tick {n}" for n in range(1, len(ticks) + 1)]      # each line whole, none lost


def test_a_daemons_unfinished_line_is_written_and_its_output_never_blocks_it(start_server, tmp_path):
    """Through the log relay: a last line without a newline ("fatal: ..." then a hang) shows within seconds, not
    never; and a daemon writing a lot while the master runs a slow pre-app hook (a migration, on a reload) is not
    left blocked on a full pipe."""
    logfile, trigger, done = tmp_path / "app.log", tmp_path / "go", tmp_path / "done"
    chatty = (f"while [ ! -e {trigger} ]; do sleep 0.05; done; "
              f"head -c 400000 /dev/zero | tr '\\0' x; echo; touch {done}; sleep 60")
    server = start_server("--logto", str(logfile), "--exec-pre-app", "sleep 3",
                          "--attach-daemon", "printf 'fatal: cannot connect to the broker'; sleep 60",
                          "--attach-daemon", chatty)
    wait_until(lambda: "fatal: cannot connect to the broker\n" in log_text(logfile), timeout=10,
               what="the unfinished line")
    os.kill(server.pid, signal.SIGHUP)
    wait_until(lambda: "SIGHUP: reloading" in log_text(logfile), what="the reload and its hook")
    trigger.touch()
    wait_until(done.exists, timeout=2, what="the daemon done writing while the hook runs")
    assert server.stop() == 0
