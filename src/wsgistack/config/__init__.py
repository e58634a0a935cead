"""Loading configuration: UWSGI_* environment variables, then ini files, then command-line flags over them
(as uWSGI reads them), into one `Config`."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from wsgistack.config.args import Flag, ParsedArgs, parse_argv
from wsgistack.config.errors import ConfigError
from wsgistack.config.model import _TRUE, IGNORED_OPTIONS, OPTIONS, UNSUPPORTED_OPTIONS, Config, apply_setting

if TYPE_CHECKING:
    from wsgistack.config.ini import KnownSetting

__all__ = ["Config", "ConfigError", "load_config", "parse_argv"]


def load_config(parsed: ParsedArgs, *, warn=lambda msg: print(msg, file=sys.stderr),
                environ: Mapping[str, str] | None = None, reloading: bool = False) -> Config:
    """Build the Config: UWSGI_* environment variables, every ini file's entries in order, then the flags (the
    last setting of an option wins; list options append). `reloading`: read again for a reload (`if-reload`)."""
    from wsgistack.config.ini import read_ini_files

    environ = os.environ if environ is None else environ
    config = Config()
    ini_specs = [value for name, value in _environment_options(environ) if name == "ini"] + parsed.ini_files
    placeholders = [str(f.value) for f in parsed.flags if f.spec.name == "set-placeholder"]
    files = read_ini_files(_reading_order(parsed, environ), placeholders, environ=environ, warn=warn,
                           reloading=reloading)
    # `strict` holds for every file whether it comes from a flag or from a file (uWSGI configs set it in
    # the ini); the last setting wins, flags over files, as for any option.
    strict = False
    for value in [e.value for entries in files for e in entries if e.key == "strict"] + \
            [f.value for f in parsed.flags if f.spec.name == "strict"]:
        strict = value if isinstance(value, bool) else value.strip().lower() in _TRUE
    _apply_environment(config, environ, strict=strict, warn=warn)
    for entries in files:
        _apply_ini(config, entries, strict=strict, warn=warn)
    for ini_file in ini_specs:
        apply_setting(config, OPTIONS["ini"], ini_file)
    for flag in parsed.flags:
        if flag.flag in ("--set", "-S"):
            _apply_set(config, str(flag.value), strict, warn, file=flag.flag)
        else:
            apply_setting(config, flag.spec, flag.value, flag=flag.flag)
    _validate(config)
    return config


def _reading_order(parsed: ParsedArgs, environ: Mapping[str, str]) -> list[str | KnownSetting]:
    """The ini files among the other settings, in uWSGI's reading order: the UWSGI_* variables (UWSGI_INI's files
    after the others), then argv as given, each ini file in its place. Only the files' %(option) placeholders
    follow this order (`--processes 2 --ini a.ini` gives `%(processes)` 2 in a.ini); the values themselves are
    still applied environment, files, then flags."""
    from wsgistack.config.ini import KnownSetting

    environment = _environment_options(environ)
    order: list[str | KnownSetting] = [KnownSetting(name, value) for name, value in environment if name != "ini"]
    order += [value for name, value in environment if name == "ini"]
    files_after: dict[int, list[str]] = {}      # how many flags precede them -> ini files
    positions = parsed.flags_before_ini
    if len(positions) != len(parsed.ini_files):      # a ParsedArgs built by hand: its files first, none lost
        positions = [0] * len(parsed.ini_files)
    for spec, position in zip(parsed.ini_files, positions):
        files_after.setdefault(position, []).append(str(spec))
    for index, flag in enumerate(parsed.flags):
        order += files_after.get(index, [])
        if flag.spec.name != "set-placeholder":     # -S NAME=VALUE is a placeholder already
            order.append(KnownSetting(_placeholder_name(flag), "true" if flag.value is True else str(flag.value)))
    return order + files_after.get(len(parsed.flags), [])


def _placeholder_name(flag: Flag) -> str:
    """The name a flag sets for %(name), as uWSGI's: a long flag's as typed (`--workers`: workers), a short one's
    long name (`-p`: processes)."""
    typed = flag.flag.lstrip("-")
    return typed if len(typed) > 1 and typed in OPTIONS else flag.spec.name


def _environment_options(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """uWSGI's UWSGI_<OPTION> environment variables (UWSGI_PROCESSES=4, UWSGI_INI=...): (option name, value)."""
    return sorted((key[6:].lower().replace("_", "-"), value) for key, value in environ.items()
                  if key.startswith("UWSGI_") and len(key) > 6)


def _apply_environment(config: Config, environ: Mapping[str, str], *, strict: bool, warn) -> None:
    for name, value in _environment_options(environ):
        if name != "ini":           # read with the ini files
            _apply_named(config, name, value, strict, warn,
                         file=f"environment variable UWSGI_{name.upper().replace('-', '_')}")


def _apply_ini(config: Config, entries, *, strict: bool, warn) -> None:
    for entry in entries:
        if entry.key == "set":
            _apply_set(config, entry.value, strict, warn, file=entry.file, line=entry.line)
        elif entry.key != "ini":    # includes were already expanded by the reader
            _apply_named(config, entry.key, entry.value, strict, warn, file=entry.file, line=entry.line)


def _apply_set(config: Config, assignment: str, strict: bool, warn, *, file: str, line: int | None = None) -> None:
    """`set NAME=VALUE` (--set, -S): a placeholder (the ini reader took it as one), and the option NAME when there is
    one, as uWSGI's "set a placeholder or an option" (`--set processes=4`). Other names are placeholders only."""
    name, _, value = assignment.partition("=")
    name = name.strip()
    if name in OPTIONS or name in IGNORED_OPTIONS or name in UNSUPPORTED_OPTIONS:
        _apply_named(config, name, value, strict, warn, file=file, line=line)


def _apply_named(config: Config, name: str, value: str, strict: bool, warn, *, file: str,
                 line: int | None = None) -> None:
    """One setting from a file or the environment, by uWSGI's name: ignored, refused, unknown, or applied."""
    if name in IGNORED_OPTIONS:
        return
    if name in UNSUPPORTED_OPTIONS:
        raise ConfigError(f"not supported: {UNSUPPORTED_OPTIONS[name]}", option=name, file=file, line=line)
    spec = OPTIONS.get(name)
    if spec is None:
        error = ConfigError("unknown option", option=name, file=file, line=line)
        if strict:
            raise error
        warn(f"wsgistack: warning: {error} (ignored)")
        return
    if spec.name != "ini":
        apply_setting(config, spec, value, file=file, line=line)


def _apply_socket_timeouts(config: Config) -> None:
    """uWSGI's socket-timeout (and http-timeout, its HTTP router's) bound every wait on the peer: here, the
    header, body and send timeouts that are not set themselves."""
    for umbrella in ("socket-timeout", "http-timeout"):
        seconds = getattr(config, umbrella.replace("-", "_"))
        if not seconds:
            continue
        for name in ("header-timeout", "body-timeout", "send-timeout"):
            if name not in config.origins:
                setattr(config, name.replace("-", "_"), seconds)


def _apply_buffer_size(config: Config) -> None:
    """uWSGI's buffer-size bounds a request's whole head on an http-socket too: its users raise it (32768) to let
    big cookies, JWT headers and long URLs through. So it raises our HTTP limits not set themselves to at least it."""
    if "buffer-size" not in config.origins:
        return
    for name in ("limit-request-line", "limit-request-field-size", "limit-request-head"):
        attr = name.replace("-", "_")
        if name not in config.origins:
            setattr(config, attr, max(getattr(config, attr), config.buffer_size))


def _validate(config: Config) -> None:
    if not (config.http or config.socket or config.fastcgi_socket):
        raise ConfigError("nothing to listen on: give --http ADDR, --socket ADDR or --fastcgi-socket ADDR")
    if not (config.module or config.wsgi_file or config.mount):
        raise ConfigError("no application: give --module pkg.mod[:callable], --wsgi-file PATH or --mount")
    for name in ("processes", "threads"):
        if getattr(config, name) < 1:
            raise ConfigError("must be at least 1", option=name, **config.where(name))
    if config.chmod_socket in ("true", "True"):
        config.chmod_socket = "666"
    if config.chmod_socket and not all(c in "01234567" for c in config.chmod_socket):
        raise ConfigError(f"expected an octal mode like 666, got {config.chmod_socket!r}", option="chmod-socket",
                          **config.where("chmod-socket"))
    _apply_socket_timeouts(config)
    _apply_buffer_size(config)
    for item in config.env:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"expected KEY=VALUE, got {item!r}", option="env", **config.where("env", item))
    _check_empty_values(config)
    _apply_protocol(config)


def _check_empty_values(config: Config) -> None:
    """A list option given with no value (`attach-daemon =`, `static-map =`) is a mistake, not a no-op: a command,
    path or address of nothing would run, map or bind nothing, or be retried for ever."""
    for spec in {spec.name: spec for spec in OPTIONS.values()}.values():
        if spec.is_list and spec.name not in ("ini", "set-placeholder"):
            for value in getattr(config, spec.attr):
                if not value.strip():
                    raise ConfigError("needs a value", option=spec.name, **config.where(spec.name, value))


def _apply_protocol(config: Config) -> None:
    """uWSGI's --protocol: what the --socket sockets speak."""
    target = {"uwsgi": None, "http": "http", "fastcgi": "fastcgi-socket"}
    if config.protocol not in target:
        raise ConfigError(f"expected uwsgi, http or fastcgi, got {config.protocol!r}", option="protocol",
                          **config.where("protocol"))
    name = target[config.protocol]
    if name is None or not config.socket:
        return
    getattr(config, name.replace("-", "_")).extend(config.socket)
    config.origins.setdefault(name, []).extend(config.origins.get("socket", []))     # errors name their lines
    config.socket = []
