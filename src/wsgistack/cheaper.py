"""An adaptive number of workers (uWSGI's "cheaper" subsystem): at least --cheaper, at most --processes.

The master asks `Cheaper.decide()` about once a second, with what it knows of each running worker (how long
it was busy so far, and whether it was busy at its last report: in app code, timed by app_clock.py, or on the
CPU; see busy_time(); each worker reports every second) and how many connections wait in the listening
sockets' accept queues. The answer is a number of workers to start, or -1 to stop one; master.py applies it within the
bounds. No I/O here: the algorithms are plain state machines, tested without processes.

The algorithms judge load as uWSGI's do (core/master_utils.c, plugins/cheaper_busyness):
- spare (the default): a worker is added when every worker was busy for more than --cheaper-overload
  seconds in a row; with more than one idle worker, one is stopped every --cheaper-overload seconds.
- busyness: every --cheaper-overload seconds, the average share of that time the workers were busy;
  above --cheaper-busyness-max workers are added, below --cheaper-busyness-min for --cheaper-busyness-multiplier
  cycles one is stopped (the wait grows by --cheaper-busyness-penalty cycles when a stopped worker had to come
  back soon). More than --cheaper-busyness-backlog-alert connections waiting to be accepted (or any, for
  --cheaper-busyness-backlog-nonzero seconds) adds emergency workers at once, stopped again sooner.
- backlog: a worker is added while more than --cheaper-overload connections wait, one stopped while fewer do.
- manual: never by itself; SIGTTIN and SIGTTOU.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsgistack.config import Config, ConfigError

ALGORITHMS = ("spare", "busyness", "backlog", "manual")


@dataclass(frozen=True)
class WorkerLoad:
    pid: int
    busy_seconds: float | None      # busy time reported so far, see busy_time() (None: no report yet)
    busy: bool                      # busy when it reported: a thread in app code, or the CPU taken


# A worker that used this share of a CPU over a report's second counts as busy then, app code or not.
SATURATED = 0.9


def busy_time(app_seconds: float, cpu_seconds: float, threads: int) -> float:
    """How long a worker was busy over an interval in which its threads spent `app_seconds` in app code and
    the process `cpu_seconds` of CPU: the app time of its average thread, or its CPU time if more. App time
    counts waits (a database) that take no CPU; CPU time counts the server's own work around a fast app,
    which app time misses (hello world spends most of its time outside the app). One process cannot use
    more than a CPU however many threads it has (the GIL): so CPU time is not divided by them."""
    return max(app_seconds / threads, cpu_seconds)


class Cheaper:
    def __init__(self, config: Config):
        self.minimum = config.cheaper
        self.maximum = config.processes
        self.initial = config.cheaper_initial or config.cheaper
        self.name = config.cheaper_algo
        self.algorithm = {"spare": Spare, "busyness": Busyness, "backlog": Backlog, "manual": Manual}[self.name](config)

    @classmethod
    def from_config(cls, config: Config) -> Cheaper | None:
        """None without --cheaper; a ConfigError (option, file, line) for values that cannot work."""
        if config.cheaper_algo not in ALGORITHMS:
            _fail(config, "cheaper-algo", f"unknown algorithm {config.cheaper_algo!r} (one of {', '.join(ALGORITHMS)})")
        if not config.cheaper:
            return None
        if config.cheaper >= config.processes:
            _fail(config, "cheaper", f"must be lower than processes ({config.processes}), the most workers it "
                                     f"may start")
        if config.cheaper_initial and not config.cheaper <= config.cheaper_initial <= config.processes:
            _fail(config, "cheaper-initial", f"must be between cheaper ({config.cheaper}) and processes "
                                             f"({config.processes})")
        for name in ("cheaper-step", "cheaper-overload", "cheaper-busyness-multiplier",
                     "cheaper-busyness-backlog-step", "cheaper-busyness-backlog-multiplier"):
            if getattr(config, name.replace("-", "_")) < 1:
                _fail(config, name, "must be at least 1")
        if not config.cheaper_busyness_min < config.cheaper_busyness_max <= 100:
            _fail(config, "cheaper-busyness-max", f"must be above cheaper-busyness-min "
                                                  f"({config.cheaper_busyness_min}) and at most 100")
        return cls(config)

    def decide(self, now: float, loads: list[WorkerLoad], backlog: int) -> tuple[int, str]:
        """(workers to start, or -1 to stop one, or 0; why). `now`: monotonic seconds; `backlog`: connections
        waiting to be accepted."""
        change, reason = self.algorithm.decide(now, loads, backlog, len(loads) < self.maximum)
        if change > 0:
            change = min(change, self.maximum - len(loads))
        elif change < 0 and len(loads) <= self.minimum:
            change = 0
        return change, reason


def _fail(config: Config, option: str, message: str) -> None:
    raise ConfigError(message, option=option, **config.where(option))


class Spare:
    """Every worker busy for more than `overload` seconds in a row: add `step`. More than one idle worker:
    stop one every `overload` seconds. One idle worker is the stable state."""

    def __init__(self, config: Config):
        self.overload = config.cheaper_overload
        self.step = config.cheaper_step
        self.overloaded = 0         # seconds (calls) with every worker busy, less those with one idle
        self.idle = 0

    def decide(self, now: float, loads: list[WorkerLoad], backlog: int, can_spawn: bool) -> tuple[int, str]:
        busy = sum(load.busy for load in loads)
        if busy == len(loads):
            self.overloaded += 1
            self.idle = 0
        elif self.overloaded:
            self.overloaded -= 1
        if can_spawn and self.overloaded > self.overload:
            self.overloaded = 0
            return self.step, f"every worker busy for over {self.overload} s"
        if self.overloaded == 0 and len(loads) - busy > 1:
            self.idle += 1
            if self.idle % self.overload == 0:
                return -1, f"{len(loads) - busy} workers idle"
        return 0, ""


class Busyness:
    """The share of each `overload`-second cycle the workers spent in app code, averaged over the workers."""

    def __init__(self, config: Config):
        self.overload = config.cheaper_overload
        self.step = config.cheaper_step
        self.high = config.cheaper_busyness_max
        self.low = config.cheaper_busyness_min
        self.multiplier = self.base_multiplier = config.cheaper_busyness_multiplier
        self.penalty = config.cheaper_busyness_penalty
        self.backlog_alert = config.cheaper_busyness_backlog_alert
        self.backlog_step = config.cheaper_busyness_backlog_step
        self.backlog_multiplier = config.cheaper_busyness_backlog_multiplier
        self.backlog_nonzero = config.cheaper_busyness_backlog_nonzero
        self.verbose = config.cheaper_busyness_verbose
        self.cycle_start: float | None = None
        self.seen: dict[int, float] = {}        # pid -> busy seconds at the start of the cycle
        self.next_stop = 0.0                    # no worker is stopped before this time
        self.last_stop = float("-inf")
        self.last_action = ""                   # "start" or "stop"
        self.between = 0                        # cycles in a row between low and high
        self.emergency = 0                      # emergency workers still counted as running
        self.backlog_since: float | None = None

    def decide(self, now: float, loads: list[WorkerLoad], backlog: int, can_spawn: bool) -> tuple[int, str]:
        if self.cycle_start is None:
            self.cycle_start = now
            self.seen = {load.pid: load.busy_seconds for load in loads if load.busy_seconds is not None}
            self._delay_stop(now)
            return 0, ""
        if now - self.cycle_start >= self.overload:
            return self._cycle(now, loads, backlog, can_spawn)
        if can_spawn and backlog > self.backlog_alert:
            return self._emergency(now, f"{backlog} connections waiting to be accepted")
        if backlog == 0:
            self.backlog_since = None
        elif self.backlog_since is None:
            self.backlog_since = now
        elif can_spawn and now - self.backlog_since >= self.backlog_nonzero:
            self.backlog_since = now
            return self._emergency(now, f"connections waiting to be accepted for {self.backlog_nonzero} s")
        return 0, ""

    def _cycle(self, now: float, loads: list[WorkerLoad], backlog: int, can_spawn: bool) -> tuple[int, str]:
        length, self.cycle_start = now - self.cycle_start, now
        shares, seen = [], {}
        for load in loads:
            if load.busy_seconds is None:
                continue
            seen[load.pid] = load.busy_seconds
            before = self.seen.get(load.pid)
            if before is not None:          # a worker new in this cycle is measured from the next one
                shares.append(min(100.0, (load.busy_seconds - before) * 100 / length))
        self.seen = seen
        if not shares:
            return 0, ""
        average = sum(shares) / len(shares)
        workers = f"{len(shares)} worker" + ("s" if len(shares) != 1 else "")
        figures = f"{self.overload} s average busyness of {workers} {average:.0f}%"
        if average > self.high:
            self.between = 0
            if not can_spawn:
                return 0, f"{figures}, at the most workers" if self.verbose else ""
            if (now - self.last_stop) / self.overload <= self.multiplier:
                self.multiplier += self.penalty      # a stopped worker had to come back soon: stop later
            else:
                self._ease_multiplier()
            self.last_action = "start"
            self._delay_stop(now)
            return self.step, figures
        if can_spawn and backlog > self.backlog_alert:
            return self._emergency(now, f"{backlog} connections waiting to be accepted")
        if len(loads) == 1:
            return 0, figures if self.verbose else ""
        if average < self.low:
            self.between = 0
            if now < self.next_stop:
                return 0, f"{figures}, a worker may stop in {self.next_stop - now:.0f} s" if self.verbose else ""
            if self.last_action == "stop":
                self._ease_multiplier()
            self._delay_stop(now)
            self.last_stop = now
            self.last_action = "stop"
            self.emergency = max(0, self.emergency - 1)
            return -1, figures
        # between low and high: not an idle cycle
        self.emergency = max(0, self.emergency - 1)
        self.between += 1
        if self.between >= 3:
            self._delay_stop(now)            # a steady load: idle cycles count from zero again
        else:
            self.next_stop += self.overload  # maybe a short spike: this cycle only does not count as idle
        return 0, figures if self.verbose else ""

    def _emergency(self, now: float, reason: str) -> tuple[int, str]:
        self.multiplier = self.base_multiplier
        self.last_action = "start"
        self.emergency += self.backlog_step
        self._delay_stop(now)
        return self.backlog_step, f"{reason} (emergency)"

    def _delay_stop(self, now: float) -> None:
        cycles = self.backlog_multiplier if self.emergency else self.multiplier
        self.next_stop = now + self.overload * cycles

    def _ease_multiplier(self) -> None:
        self.multiplier = max(self.base_multiplier, self.multiplier - 1)


class Backlog:
    """More than `overload` connections waiting to be accepted: add `step`; fewer: stop one."""

    def __init__(self, config: Config):
        self.overload = config.cheaper_overload
        self.step = config.cheaper_step

    def decide(self, now: float, loads: list[WorkerLoad], backlog: int, can_spawn: bool) -> tuple[int, str]:
        if backlog > self.overload:
            return (self.step, f"{backlog} connections waiting to be accepted") if can_spawn else (0, "")
        if backlog < self.overload:
            return -1, f"{backlog} connections waiting to be accepted"
        return 0, ""


class Manual:
    """Never by itself: the number of workers changes with SIGTTIN and SIGTTOU only."""

    def __init__(self, config: Config):
        pass

    def decide(self, now: float, loads: list[WorkerLoad], backlog: int, can_spawn: bool) -> tuple[int, str]:
        return 0, ""
