"""--cron and --unique-cron: commands the master runs on a schedule, as uWSGI's (`manage.py clearsessions` at 3:00).

A job is `MINUTE HOUR DAY MONTH WEEKDAY COMMAND`: each field a number, -1 for any, or -N for every N (minute
-5: every five minutes); weekday 0 is Sunday. When both day and weekday are given, either matching will do,
as in cron. The master looks once a minute, on the local clock, and runs a due command in `/bin/sh -c` with
its environment and log; a unique job is skipped while its previous run goes on. Runs are not waited for by
a stop or a reload.
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass, field

from wsgistack.daemons import note_reaped, start_command

log = logging.getLogger("wsgistack")

FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("weekday", 0, 6))


@dataclass
class CronJob:
    schedule: tuple[int, int, int, int, int]
    command: str
    unique: bool
    runs: list[subprocess.Popen] = field(default_factory=list)     # started, not yet reaped

    def due(self, moment: time.struct_time) -> bool:
        minute, hour, day, month, weekday = self.schedule
        now = (moment.tm_min, moment.tm_hour, moment.tm_mday, moment.tm_mon, (moment.tm_wday + 1) % 7)
        matches = [_matches(wanted, value) for wanted, value in zip(self.schedule, now)]
        if day != -1 and weekday != -1:          # cron's rule: either day field will do
            return all(matches[:2]) and matches[3] and (matches[2] or matches[4])
        return all(matches)


def _matches(wanted: int, value: int) -> bool:
    return wanted == -1 or (value % -wanted == 0 if wanted < -1 else value == wanted)


def parse_job(value: str, unique: bool) -> CronJob:
    """ValueError, saying what is wrong, for a value that is not `MINUTE HOUR DAY MONTH WEEKDAY COMMAND`."""
    parts = value.split(None, 5)
    if len(parts) < 6:
        raise ValueError(f"expected MINUTE HOUR DAY MONTH WEEKDAY COMMAND, got {value!r}")
    numbers = []
    for (name, low, high), text in zip(FIELDS, parts[:5]):
        try:
            number = int(text)
        except ValueError:
            raise ValueError(f"the {name} must be a number, -1 (any) or -N (every N), got {text!r}") from None
        if number < -1 and -number > high or number >= 0 and not low <= number <= high:
            raise ValueError(f"the {name} must be {low} to {high}, -1 (any) or -N (every N), got {number}")
        numbers.append(number)
    return CronJob(tuple(numbers), parts[5], unique)


class Cron:
    def __init__(self, jobs: list[str], unique_jobs: list[str], output: int | None = None):
        self.output = output          # the runs' stdout and stderr (a LogRelay's pipe); None: the master's
        self.jobs = [parse_job(value, False) for value in jobs] + [parse_job(value, True) for value in unique_jobs]
        self.minute_seen = int(time.time() // 60)      # jobs are due from the next minute on
        self.earlier_runs: list[subprocess.Popen] = []  # runs of the jobs of a configuration before a reload

    def run_due(self) -> None:
        """Called by the master's loop: start the jobs due in a minute not looked at yet."""
        minute = int(time.time() // 60)
        if minute == self.minute_seen or not self.jobs:
            return
        self.minute_seen = minute
        moment = time.localtime(minute * 60)
        for job in self.jobs:
            if not job.due(moment):
                continue
            if job.unique and job.runs:
                log.info("cron: %r still runs, not started again (unique-cron)", job.command)
                continue
            try:
                job.runs.append(start_command(job.command, self.output))
            except OSError as exc:
                log.error("cron: cannot start %r: %s", job.command, exc.strerror or exc)
                continue
            log.info("cron: started %r (pid %d)", job.command, job.runs[-1].pid)

    def reaped(self, pid: int, status: int) -> bool:
        """The master reaped `pid`: True if it was a run of ours."""
        for run in self.earlier_runs:
            if run.pid == pid:
                self.earlier_runs.remove(run)
                note_reaped(run, status)
                return True
        for job in self.jobs:
            for run in job.runs:
                if run.pid == pid:
                    job.runs.remove(run)
                    note_reaped(run, status)
                    if run.returncode:
                        log.error("cron: %r ended with status %d", job.command, run.returncode)
                    return True
        return False

    def replace(self, jobs: list[str], unique_jobs: list[str]) -> None:
        """A reload: the new configuration's jobs. Runs still going on stay with a job of the same schedule and
        command (so that a unique-cron one is not started beside itself), others are reaped as before."""
        running = {(job.unique, job.schedule, job.command): job.runs for job in self.jobs if job.runs}
        self.jobs = [parse_job(value, False) for value in jobs] + [parse_job(value, True) for value in unique_jobs]
        for job in self.jobs:
            job.runs = running.pop((job.unique, job.schedule, job.command), [])
        self.earlier_runs += [run for runs in running.values() for run in runs]
