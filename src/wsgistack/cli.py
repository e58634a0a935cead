"""The `wsgistack` command: read the configuration, bind, and hand over to the master."""

from __future__ import annotations

import os
import sys

from wsgistack import __version__
from wsgistack.addresses import bind, parse_address
from wsgistack.app_loader import choose_app_source, prepare_import_path
from wsgistack.config import ConfigError, load_config, parse_argv
from wsgistack.config.args import format_help
from wsgistack.logs import redirect_output, setup_error_log

# option name -> protocol spoken on the sockets it lists
LISTEN_OPTIONS = (("http", "http"), ("socket", "uwsgi"), ("fastcgi-socket", "fastcgi"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parsed = parse_argv(argv)
        if "help" in parsed.actions or not argv:
            print(format_help())
            return 0 if argv else 2
        if "version" in parsed.actions:
            print(f"wsgistack {__version__}")
            return 0
        config = load_config(parsed)
        return serve(config)
    except ConfigError as exc:
        print(f"wsgistack: error: {exc}", file=sys.stderr)
        return 1


def serve(config) -> int:
    from wsgistack.master import Master

    if config.logto:
        redirect_output(config.logto)
    setup_error_log("master")
    for item in config.env:
        key, _, value = item.partition("=")
        os.environ[key] = value
    if config.chdir:
        try:
            os.chdir(config.chdir)
        except OSError as exc:
            raise ConfigError(f"cannot change to {config.chdir!r}: {exc.strerror}", option="chdir") from None
    prepare_import_path(config)
    _, _, note = choose_app_source(config)
    if note:
        print(f"wsgistack: {note}", file=sys.stderr)
    listeners = []
    for option, protocol in LISTEN_OPTIONS:
        for text in getattr(config, option.replace("-", "_")):
            address = parse_address(text, protocol, option)
            listeners.append((bind(address, config.listen, config.chmod_socket, option), address))
    if any(address.protocol != "http" for _, address in listeners):
        raise ConfigError("the uwsgi and FastCGI protocols are not available yet", option="socket")
    return Master(config, listeners).run()
