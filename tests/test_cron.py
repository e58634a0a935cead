"""--cron and --unique-cron (cron.py): the schedule's arithmetic, and a job the real master runs."""

from __future__ import annotations

import time

import pytest

from conftest import failed_start, wait_until
from wsgistack.cron import Cron, parse_job


def moment(minute: int, hour: int, day: int, month: int, weekday: int) -> time.struct_time:
    """A local time; `weekday` as cron counts (0 Sunday), struct_time's tm_wday from Monday."""
    return time.struct_time((2026, month, day, hour, minute, 0, (weekday - 1) % 7, 1, -1))


@pytest.mark.parametrize("schedule, now, due", [
    ("30 3 -1 -1 -1", (30, 3, 5, 11, 4), True),
    ("30 3 -1 -1 -1", (31, 3, 5, 11, 4), False),
    ("-5 -1 -1 -1 -1", (25, 7, 5, 11, 4), True),        # every five minutes
    ("-5 -1 -1 -1 -1", (26, 7, 5, 11, 4), False),
    ("0 0 1 -1 0", (0, 0, 1, 11, 3), True),             # the 1st of the month ...
    ("0 0 1 -1 0", (0, 0, 8, 11, 0), True),             # ... or a Sunday: either day field, as in cron
    ("0 0 1 -1 0", (0, 0, 8, 11, 3), False),
    ("-1 -1 -1 -1 -1", (59, 23, 31, 12, 6), True),
])
def test_when_a_job_is_due(schedule, now, due):
    assert parse_job(f"{schedule} true", False).due(moment(*now)) is due


@pytest.mark.parametrize("value, message", [
    ("-1 -1 -1 -1 echo no command", "the weekday must be a number"),
    ("-1 -1 -1 -1", "expected MINUTE HOUR DAY MONTH WEEKDAY COMMAND"),
    ("60 -1 -1 -1 -1 true", "the minute must be 0 to 59"),
    ("-1 -1 0 -1 -1 true", "the day must be 1 to 31"),
    ("-90 -1 -1 -1 -1 true", "the minute must be 0 to 59"),
])
def test_a_schedule_that_cannot_be_is_refused(value, message):
    with pytest.raises(ValueError, match=message):
        parse_job(value, False)


def test_a_unique_job_is_not_started_again_while_it_runs(tmp_path):
    runs = tmp_path / "runs"
    cron = Cron([], [f"-1 -1 -1 -1 -1 echo run >> {runs}; exec sleep 30"])
    try:
        cron.minute_seen -= 1                      # as if a minute passed: the job is due
        cron.run_due()
        first, = cron.jobs[0].runs
        cron.minute_seen -= 1
        cron.run_due()                             # still running: not started again
        assert cron.jobs[0].runs == [first]
        wait_until(lambda: runs.exists() and runs.read_text() == "run\n", what="one run")
    finally:
        for run in cron.jobs[0].runs:
            run.kill()
            run.wait(timeout=10)


def test_the_master_runs_a_job_at_the_next_minute(start_server, tmp_path):
    ran = tmp_path / "ran"
    server = start_server("--cron", f"-1 -1 -1 -1 -1 echo $$ >> {ran}")
    pid = int(wait_until(lambda: ran.exists() and ran.read_text().split()[0], timeout=75, what="a cron run"))
    assert f"cron: started 'echo $$ >> {ran}' (pid {pid})" in server.wait_log(f"(pid {pid})")
    assert server.stop() == 0


def test_a_bad_cron_line_is_a_startup_error_naming_file_and_line(tmp_path):
    ini, errors = failed_start(tmp_path, "cron = 99 -1 -1 -1 -1 true")
    assert f"{ini}:4: option 'cron': the minute must be 0 to 59, -1 (any) or -N (every N), got 99" in errors


def test_a_reload_keeps_a_running_unique_job_from_starting_beside_itself(tmp_path):
    """The runs of a job go on with the same job of the reloaded configuration (a second copy once started)."""
    line = f"-1 -1 -1 -1 -1 echo run >> {tmp_path / 'runs'}; exec sleep 30"
    cron = Cron([], [line])
    try:
        cron.minute_seen -= 1
        cron.run_due()
        first, = cron.jobs[0].runs
        cron.replace([], [line])                   # SIGHUP: the same job in the new configuration
        cron.minute_seen -= 1
        cron.run_due()
        assert cron.jobs[0].runs == [first]
    finally:
        for run in cron.jobs[0].runs + cron.earlier_runs:
            run.kill()
            run.wait(timeout=10)
