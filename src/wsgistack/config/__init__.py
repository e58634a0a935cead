"""Loading configuration: ini files first, then command-line flags over them, into one `Config`."""

from __future__ import annotations

import sys

from wsgistack.config.args import ParsedArgs, parse_argv
from wsgistack.config.errors import ConfigError
from wsgistack.config.model import _TRUE, IGNORED_OPTIONS, OPTIONS, Config, apply_setting

__all__ = ["Config", "ConfigError", "load_config", "parse_argv"]


def load_config(parsed: ParsedArgs, *, warn=lambda msg: print(msg, file=sys.stderr)) -> Config:
    """Build the Config: every ini file's entries in order, then the flags (flags win)."""
    from wsgistack.config.ini import read_ini

    config = Config()
    ini_specs = list(parsed.ini_files) + [f.value for f in parsed.flags if f.spec.name == "ini"]
    files = [read_ini(str(ini_spec)) for ini_spec in ini_specs]
    # `strict` holds for every file whether it comes from a flag or from a file (uWSGI configs set it in
    # the ini); the last setting wins, flags over files, as for any option.
    strict = False
    for value in [e.value for entries in files for e in entries if e.key == "strict"] + \
            [f.value for f in parsed.flags if f.spec.name == "strict"]:
        strict = value if isinstance(value, bool) else value.strip().lower() in _TRUE
    for entries in files:
        _apply_ini(config, entries, strict=strict, warn=warn)
    for ini_file in parsed.ini_files:      # `wsgistack FILE.ini` is `wsgistack --ini FILE.ini`
        apply_setting(config, OPTIONS["ini"], ini_file)
    for flag in parsed.flags:
        apply_setting(config, flag.spec, flag.value, flag=flag.flag)
    _validate(config)
    return config


def _apply_ini(config: Config, entries, *, strict: bool, warn) -> None:
    for entry in entries:
        if entry.key in IGNORED_OPTIONS:
            continue
        spec = OPTIONS.get(entry.key)
        if spec is None:
            error = ConfigError("unknown option", option=entry.key, file=entry.file, line=entry.line)
            if strict:
                raise error
            warn(f"wsgistack: warning: {error} (ignored)")
            continue
        if spec.name == "ini":      # includes were already expanded by the reader
            continue
        apply_setting(config, spec, entry.value, file=entry.file, line=entry.line)


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
    for item in config.env:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"expected KEY=VALUE, got {item!r}", option="env", **config.where("env", item))
