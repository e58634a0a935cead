"""uWSGI's hooks: actions run at points of the server's life (--hook-PHASE ACTION, --exec-PHASE COMMAND).

Phases: `asap` (before anything, even binding), `as-root` (sockets bound, privileges not dropped yet),
`as-user` (privileges dropped), `pre-app` (before workers import the app: at start, and before each reload's
new workers), `post-app` (the first worker serves: at start, and once each reload is complete), `master-start`
(the master's loop begins). Actions: `exec:COMMAND` (`/bin/sh -c`; one that fails is fatal, as in uWSGI: a
startup error, or the reload abandoned), `print:TEXT`, `putenv:KEY=VALUE`, `mkdir:DIR`, `unlink:FILE`, and at
master-start `unix_signal:N FUNCTION`, which gives a signal another of the master's meanings: the containers'
usual `unix_signal:15 gracefully_kill_them_all` is what SIGTERM means here anyway.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess

from wsgistack.config import Config, ConfigError

log = logging.getLogger("wsgistack")

PHASES = ("asap", "as-root", "as-user", "pre-app", "post-app", "master-start")
ACTIONS = ("exec", "print", "putenv", "mkdir", "unlink", "unix_signal")
# uWSGI's master functions a signal can be given (unix_signal), and the master's handler that does the same
SIGNAL_FUNCTIONS = {"gracefully_kill_them_all": "term", "kill_them_all": "int", "grace_them_all": "hup"}
REMAPPABLE_SIGNALS = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGTTIN", "SIGTTOU")


def hooks_of(config: Config, phase: str) -> list[tuple[str, str, str, dict]]:
    """(option, action, argument, where) of the phase, --hook-PHASE first, then --exec-PHASE; checked."""
    found = []
    for value in getattr(config, f"hook_{phase.replace('-', '_')}"):
        action, colon, argument = value.partition(":")
        where = config.where(f"hook-{phase}", value)
        if not colon or action not in ACTIONS:
            raise ConfigError(f"expected ACTION:ARGUMENT, ACTION one of {', '.join(ACTIONS)}; got {value!r}",
                              option=f"hook-{phase}", **where)
        if action == "unix_signal":
            if phase != "master-start":
                raise ConfigError("unix_signal is a master-start hook", option=f"hook-{phase}", **where)
            signal_action(argument, f"hook-{phase}", where)
        found.append((f"hook-{phase}", action, argument, where))
    for command in getattr(config, f"exec_{phase.replace('-', '_')}", []):
        found.append((f"exec-{phase}", "exec", command, config.where(f"exec-{phase}", command)))
    return found


def check_hooks(config: Config) -> None:
    for phase in PHASES:
        hooks_of(config, phase)


def signal_action(argument: str, option: str, where: dict) -> tuple[int, str]:
    """`unix_signal:N FUNCTION` -> (signal number, the master's handler name)."""
    number, _, function = argument.strip().partition(" ")
    try:
        signum = signal.Signals(int(number))
    except ValueError:
        raise ConfigError(f"expected a signal number, got {number!r}", option=option, **where) from None
    if signum.name not in REMAPPABLE_SIGNALS:
        raise ConfigError(f"{signum.name} cannot be given another meaning (one of {', '.join(REMAPPABLE_SIGNALS)})",
                          option=option, **where)
    handler = SIGNAL_FUNCTIONS.get(function.strip())
    if handler is None:
        raise ConfigError(f"unknown function {function.strip()!r} (one of {', '.join(SIGNAL_FUNCTIONS)})",
                          option=option, **where)
    return signum, handler


def run_hooks(config: Config, phase: str) -> dict[int, str]:
    """Run the phase's hooks in order; a failing one raises ConfigError naming its option, file and line.
    Returns the signal meanings unix_signal hooks set (master-start)."""
    remapped: dict[int, str] = {}
    for option, action, argument, where in hooks_of(config, phase):
        if action == "exec":
            result = subprocess.run(argument, shell=True, stdin=subprocess.DEVNULL, check=False)
            if result.returncode != 0:
                raise ConfigError(f"command {argument!r} failed ({_how(result.returncode)})", option=option, **where)
            log.info("%s: ran %r", option, argument)
        elif action == "print":
            log.info("%s", argument)
        elif action == "putenv":
            key, equals, value = argument.partition("=")
            if not equals or not key:
                raise ConfigError(f"expected putenv:KEY=VALUE, got {argument!r}", option=option, **where)
            os.environ[key] = value
        elif action == "mkdir":
            _file_action(os.makedirs, argument, option, where, exist_ok=True)
        elif action == "unlink":
            _file_action(os.unlink, argument, option, where)
        elif action == "unix_signal":
            signum, handler = signal_action(argument, option, where)
            remapped[signum] = handler
    return remapped


def _file_action(function, path: str, option: str, where: dict, **kwargs) -> None:
    try:
        function(path, **kwargs)
    except FileNotFoundError:
        if function is not os.unlink:        # unlinking what is not there is no failure
            raise ConfigError(f"{path!r}: no such directory", option=option, **where) from None
    except OSError as exc:
        raise ConfigError(f"{path!r}: {exc.strerror or exc}", option=option, **where) from None


def _how(returncode: int) -> str:
    return f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exit status {returncode}"
