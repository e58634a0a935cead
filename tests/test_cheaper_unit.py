"""The --cheaper algorithms (cheaper.py) as state machines: loads in, decisions out, no processes.

Each call stands for one second of the master's loop; `busy` figures are the seconds of app time each
worker reported so far, as workers report them (app_clock.py)."""

from __future__ import annotations

import pytest

from wsgistack.cheaper import Cheaper, WorkerLoad, busy_time
from wsgistack.config import Config, ConfigError


def cheaper(**options) -> Cheaper:
    config = Config(processes=4, cheaper=1)
    for name, value in options.items():
        setattr(config, name, value)
    result = Cheaper.from_config(config)
    assert result is not None
    return result


def loads(*busy_now: bool, busy=None) -> list[WorkerLoad]:
    """Workers with pids 100, 101, ...: busy now or not, with these busy seconds so far."""
    busy = busy or [0.0] * len(busy_now)
    return [WorkerLoad(100 + index, busy[index], flag) for index, flag in enumerate(busy_now)]


# --- spare (the default) ---

def test_spare_adds_workers_when_every_worker_stays_busy():
    policy = cheaper(cheaper_overload=2, cheaper_step=2)
    decisions = [policy.decide(second, loads(True), 0)[0] for second in range(3)]
    assert decisions == [0, 0, 2]                    # busy for more than 2 s in a row
    change, reason = policy.decide(3, loads(True, True, True), 0)
    assert change == 0 and reason == ""              # counting starts again


def test_spare_never_goes_past_processes():
    policy = cheaper(cheaper_overload=1, cheaper_step=5)
    policy.decide(0, loads(True, True, True), 0)
    assert policy.decide(1, loads(True, True, True), 0)[0] == 1        # 4 at most
    policy.decide(2, loads(True, True, True, True), 0)
    assert policy.decide(3, loads(True, True, True, True), 0)[0] == 0


def test_spare_keeps_one_idle_worker_and_stops_the_others_one_by_one():
    policy = cheaper(cheaper_overload=2)
    assert [policy.decide(second, loads(True, False), 0)[0] for second in range(5)] == [0] * 5   # one spare
    decisions = [policy.decide(second, loads(False, False, False), 0) for second in range(5, 9)]
    assert [change for change, _ in decisions] == [0, -1, 0, -1]
    assert decisions[1][1] == "3 workers idle"


def test_spare_one_idle_second_does_not_undo_an_overload():
    policy = cheaper(cheaper_overload=3)
    pattern = [True, True, False, True, True, True]
    changes = [policy.decide(second, loads(busy_now, True), 0)[0] for second, busy_now in enumerate(pattern)]
    assert changes == [0, 0, 0, 0, 0, 1]


def test_never_below_cheaper():
    policy = cheaper(cheaper=2, cheaper_overload=1)
    assert all(policy.decide(second, loads(False, False), 0)[0] == 0 for second in range(5))


# --- busyness ---

def test_busyness_adds_workers_above_max_and_measures_new_ones_from_their_next_cycle():
    policy = cheaper(cheaper_algo="busyness", cheaper_overload=2, cheaper_busyness_max=50)
    assert policy.decide(0, loads(True, busy=[0.0]), 0) == (0, "")          # the first cycle starts
    assert policy.decide(1, loads(True, busy=[1.0]), 0) == (0, "")          # within the cycle
    change, reason = policy.decide(2, loads(True, busy=[1.5]), 0)            # 1.5 s of 2: 75 %
    assert change == 1 and reason == "2 s average busyness of 1 worker 75%"
    # the new worker (pid 101) has no figure for this cycle yet; worker 100 was 30 % busy
    change, reason = policy.decide(4, loads(False, True, busy=[2.1, 0.4]), 0)
    assert change == 0 and reason == ""
    change, reason = policy.decide(6, loads(True, True, busy=[3.8, 2.4]), 0)  # 85 % and 100 %
    assert change == 1 and "of 2 workers 92%" in reason


def test_busy_time_is_app_time_per_thread_or_cpu_time_if_more():
    assert busy_time(app_seconds=0.8, cpu_seconds=0.1, threads=1) == 0.8        # a database wait: no CPU
    assert busy_time(app_seconds=0.05, cpu_seconds=0.95, threads=1) == 0.95     # hello world: the server's CPU
    assert busy_time(app_seconds=2.0, cpu_seconds=0.3, threads=4) == 0.5        # 4 threads, each half busy
    assert busy_time(app_seconds=0.4, cpu_seconds=0.9, threads=4) == 0.9        # one CPU is all a process gets


def test_busyness_stops_a_worker_after_idle_cycles_and_waits_longer_after_coming_back_soon():
    policy = cheaper(cheaper_algo="busyness", cheaper_overload=1, cheaper_busyness_multiplier=3,
                     cheaper_busyness_penalty=2)
    busy = 0.0
    policy.decide(0, loads(False, False, busy=[busy, busy]), 0)
    changes = [policy.decide(second, loads(False, False, busy=[busy, busy]), 0)[0] for second in range(1, 5)]
    assert changes == [0, 0, -1, 0]                  # idle (0 %) for 3 cycles, then one stops
    # load comes back a second later: a worker is started, and the next stop waits 3 + 2 cycles
    assert policy.decide(5, loads(True, busy=[1.0]), 0)[0] == 1
    changes = [policy.decide(second, loads(False, False, busy=[1.0, 0.0]), 0)[0] for second in range(6, 12)]
    assert changes == [0, 0, 0, 0, -1, 0]


def test_busyness_between_the_thresholds_keeps_the_workers():
    policy = cheaper(cheaper_algo="busyness", cheaper_overload=1, cheaper_busyness_multiplier=1)
    policy.decide(0, loads(True, True, busy=[0.0, 0.0]), 0)
    for second in range(1, 10):                      # 40 % each: between 25 and 50
        assert policy.decide(second, loads(True, True, busy=[0.4 * second] * 2), 0)[0] == 0


def test_busyness_starts_emergency_workers_for_a_full_accept_queue():
    policy = cheaper(cheaper_algo="busyness", cheaper_overload=10, cheaper_busyness_backlog_alert=5,
                     cheaper_busyness_backlog_step=2, cheaper_busyness_backlog_nonzero=3)
    policy.decide(0, loads(True), 0)
    change, reason = policy.decide(1, loads(True), 6)
    assert change == 2 and reason == "6 connections waiting to be accepted (emergency)"
    assert [policy.decide(second, loads(True, True, True), 1)[0] for second in range(2, 6)] == [0, 0, 0, 1]
    assert policy.decide(6, loads(True, True, True, True), 50)[0] == 0       # at the most workers


# --- backlog and manual ---

def test_backlog_follows_the_accept_queue():
    policy = cheaper(cheaper_algo="backlog", cheaper_overload=3)
    assert policy.decide(0, loads(True), 4) == (1, "4 connections waiting to be accepted")
    assert policy.decide(1, loads(True, True), 3)[0] == 0
    assert policy.decide(2, loads(True, True), 0)[0] == -1
    assert policy.decide(3, loads(True), 0)[0] == 0                           # at --cheaper


def test_manual_never_decides():
    policy = cheaper(cheaper_algo="manual")
    assert policy.decide(0, loads(True), 1000) == (0, "")


# --- configuration ---

def test_off_without_cheaper():
    assert Cheaper.from_config(Config(processes=4)) is None


def test_initial_workers():
    assert cheaper().initial == 1
    assert cheaper(cheaper_initial=3).initial == 3


@pytest.mark.parametrize("options, option, message", [
    ({"cheaper": 4}, "cheaper", "must be lower than processes (4)"),
    ({"cheaper_initial": 5}, "cheaper-initial", "must be between cheaper (1) and processes (4)"),
    ({"cheaper_algo": "spare2"}, "cheaper-algo", "unknown algorithm 'spare2' (one of spare, busyness, backlog, manual)"),
    ({"cheaper_step": 0}, "cheaper-step", "must be at least 1"),
    ({"cheaper_overload": 0}, "cheaper-overload", "must be at least 1"),
    ({"cheaper_busyness_min": 60}, "cheaper-busyness-max", "must be above cheaper-busyness-min (60) and at most 100"),
])
def test_values_that_cannot_work(options, option, message):
    config = Config(processes=4, cheaper=1)
    for name, value in options.items():
        setattr(config, name, value)
    with pytest.raises(ConfigError) as caught:
        Cheaper.from_config(config)
    assert caught.value.option == option and message in str(caught.value)
