"""The `wsgistack` command: read the configuration, bind, detach if asked, and hand over to the master."""

from __future__ import annotations

import dataclasses
import grp
import ipaddress
import logging
import os
import pwd
import re
import resource
import sys

from wsgistack import __version__
from wsgistack.addresses import bind, parse_address, remove_socket_file
from wsgistack.app_loader import choose_app_source, prepare_import_path
from wsgistack.cheaper import Cheaper
from wsgistack.compression import Compression
from wsgistack.config import Config, ConfigError, load_config, parse_argv
from wsgistack.config.args import format_help
from wsgistack.config.model import apply_setting
from wsgistack.cron import parse_job
from wsgistack.daemon import report
from wsgistack.daemons import smart_daemons
from wsgistack.hooks import check_hooks, run_hooks
from wsgistack.log_files import (check_log_rotation, log_paths, logger_files, note_log_path, open_request_log,
                                 redirect_output, set_log_file_mode)
from wsgistack.logs import check_log_format, setup_error_log
from wsgistack.mounts import mountpoints
from wsgistack.proctitle import set_title
from wsgistack.socket_activation import InheritedSockets
from wsgistack.static import StaticFiles
from wsgistack.stats import StatsServer
from wsgistack.wsgi import added_headers

# option name -> protocol spoken on the sockets it lists
LISTEN_OPTIONS = (("http", "http"), ("socket", "uwsgi"), ("fastcgi-socket", "fastcgi"))
CONTROL_MARGIN = 15.0     # --stop/--reload wait reload-mercy plus this before giving up
STANDARD_STREAMS = (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w"))


def main(argv: list[str] | None = None) -> int:
    _reopen_closed_standard_streams()
    argv = sys.argv[1:] if argv is None else argv
    try:
        parsed = parse_argv(argv)
        if "help" in parsed.actions or not argv:
            out = sys.stdout if argv else sys.stderr        # no arguments is a usage error: on stderr, status 2
            try:
                print(format_help(), file=out, flush=True)
            except BrokenPipeError:          # `wsgistack --help | head`
                os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            return 0 if argv else 2
        if "version" in parsed.actions:
            print(f"wsgistack {__version__}")
            return 0
        if "stop" in parsed.actions or "reload" in parsed.actions:
            return _control(parsed)
        warnings: list[str] = []
        config = check_protocol_options(load_config(parsed, warn=_startup_warning(warnings)))
        return serve(config, _reloader(argv), warnings)
    except ConfigError as exc:
        print(f"wsgistack: error: {exc}", file=sys.stderr)
        return 1


def _reopen_closed_standard_streams() -> None:
    """Descriptors 0-2 closed by whoever started us (`<&-`, `>&-`, `2>&-`) get /dev/null, as in uWSGI: else the
    first socket bound takes one of them and --daemonize's dup2 onto it closes it (ready, yet nothing listens), and
    Python left sys.stdout (sys.stderr) None, which the first flush() fails on."""
    for name, fd, mode in STANDARD_STREAMS:
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)      # the lowest free descriptor: this one, the lower ones being open
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            os.set_inheritable(fd, True)               # hooks and daemons get it too (os.open's are close-on-exec)
        if getattr(sys, name) is None:
            stream = open(fd, mode, buffering=1 if name == "stderr" else -1, closefd=False,
                          errors="backslashreplace" if name == "stderr" else None)
            setattr(sys, name, stream)
            setattr(sys, f"__{name}__", stream)


def check_protocol_options(config: Config) -> Config:
    """Protocol options (buffer-size, *-allow-from) are checked here, before forking, with file:line."""
    from wsgistack.protocols import connection_class

    for option, protocol in LISTEN_OPTIONS:
        if getattr(config, option.replace("-", "_")):
            try:
                connection_class(protocol).configure(config)
            except ConfigError as exc:
                raise ConfigError(exc.message, option=exc.option, **config.where(exc.option or "")) from None
    return config


def check_feature_options(config: Config) -> None:
    """Static files, compression, --cheaper, --logformat, --add-header, --mount, hooks and loggers are checked
    here, before forking: a bad value names its file:line. After --chdir: relative static paths mean what the
    workers will see."""
    StaticFiles.from_config(config)
    Compression.from_config(config)
    Cheaper.from_config(config)
    check_log_format(config)
    if config.logfile_chmod and not re.fullmatch(r"0?[0-7]{3}", config.logfile_chmod):
        raise ConfigError(f"expected a mode of 3 octal digits (640, say), got {config.logfile_chmod!r}",
                          option="logfile-chmod", **config.where("logfile-chmod"))
    if config.logfile_chown and not (config.uid or config.gid):
        raise ConfigError("gives the log files to --uid/--gid: give one of them", option="logfile-chown",
                          **config.where("logfile-chown"))
    mountpoints(config)
    check_hooks(config)
    logger_files(config)
    for option in ("cron", "unique-cron"):
        for value in getattr(config, option.replace("-", "_")):
            try:
                parse_job(value, False)
            except ValueError as exc:
                raise ConfigError(str(exc), option=option, **config.where(option, value)) from None
    for value in config.smart_attach_daemon:
        try:
            smart_daemons([value])
        except ValueError as exc:
            raise ConfigError(str(exc), option="smart-attach-daemon",
                              **config.where("smart-attach-daemon", value)) from None
    for text in config.add_header:
        try:
            added_headers([text])
        except ValueError as exc:
            raise ConfigError(str(exc), option="add-header", **config.where("add-header", text)) from None


def _control(parsed) -> int:
    from wsgistack import control

    config = Config()
    for flag in parsed.flags:
        if flag.spec.name == "reload-mercy":
            apply_setting(config, flag.spec, flag.value, flag=flag.flag)     # a bad number: a ConfigError
    mercy = config.reload_mercy
    if "stop" in parsed.actions:
        return control.stop(str(parsed.actions["stop"]), mercy + CONTROL_MARGIN)
    return control.reload(str(parsed.actions["reload"]), mercy + CONTROL_MARGIN)


def _reloader(argv: list[str]):
    """SIGHUP's config re-read: relative paths (the ini file, its chdir) mean what they meant at startup,
    and the new chdir, env and pythonpath apply to the next generation of workers."""
    start_dir = os.getcwd()

    def reload_config() -> Config:
        current = os.getcwd()
        try:
            try:
                os.chdir(start_dir)
            except OSError as exc:
                raise ConfigError(f"cannot return to the start directory {start_dir!r}: {exc.strerror}") from None
            config = check_protocol_options(load_config(parse_argv(argv), warn=_log_warning, reloading=True))
            _apply_limits(config)
            _apply_environment(config)
            check_feature_options(config)
        except BaseException:
            os.chdir(current)
            raise
        return config

    return reload_config


def _log_warning(message: str) -> None:
    import logging
    logging.getLogger("wsgistack").warning("%s", message)


def _startup_warning(warnings: list[str]):
    """Warnings before the log is open go to the terminal, and again to the log once open (a daemonized server's
    operator reads the log, not the terminal that started it)."""
    def warn(message: str) -> None:
        print(message, file=sys.stderr)
        warnings.append(message)
    return warn


def serve(config: Config, reload_config, warnings: list[str] | None = None) -> int:
    from wsgistack.master import Master, hold_signals

    hold_signals()
    inherited = InheritedSockets.from_environment()     # first: no hook may see systemd's LISTEN_* variables
    run_hooks(config, "asap")
    _apply_limits(config)
    start_dir = _files_from_start_dir(config)
    _apply_environment(config)
    check_feature_options(config)
    warnings = [] if warnings is None else warnings
    warn = _startup_warning(warnings)
    _, _, note = choose_app_source(config)
    if note:
        warn(f"wsgistack: {note}")
    _check_pidfile(config)
    listeners = []
    for option, protocol in LISTEN_OPTIONS:
        for text in getattr(config, option.replace("-", "_")):
            try:
                address = parse_address(text, protocol, option)
                sock = inherited.take(address)
                if sock is None:
                    sock = bind(address, config.listen, config.chmod_socket, option, inherited.passed)
                else:
                    address = dataclasses.replace(address, inherited=True)
                listeners.append((sock, address))
            except ConfigError as exc:
                raise ConfigError(exc.message, option=option, **config.where(option, text)) from None
    inherited.close_unclaimed(warn)
    _warn_open_gateways(config, listeners, warn)
    stats_server = _bind_stats(config)
    if config.chown_socket:
        _chown_sockets(config, listeners)
    report_fd = None
    if config.daemonize:
        from wsgistack.daemon import daemonize
        try:
            report_fd = daemonize(config.daemonize)
            note_log_path(config.daemonize)
        except OSError as exc:
            raise ConfigError(f"cannot write {config.daemonize!r}: {exc.strerror}", option="daemonize",
                              **config.where("daemonize")) from None
    log_file, request_log_file = logger_files(config, start_dir)
    for option, path, open_log in (("logger", log_file, redirect_output), ("logto", config.logto, redirect_output),
                                   ("req-logger", request_log_file, open_request_log)):
        if not path or (option == "logto" and (log_file or config.daemonize)):
            continue              # --logger file:PATH wins over --logto and --daemonize's file, as in uWSGI
        try:
            open_log(path)
        except OSError as exc:
            raise ConfigError(f"cannot write {path!r}: {exc.strerror}", option=option, **config.where(option)) from None
    _log_file_access(config)
    setup_error_log("master", config.log_prefix)
    if config.daemonize or config.logto or config.logger:
        for message in warnings:
            logging.getLogger("wsgistack").warning("%s", message.removeprefix("wsgistack: "))
    master = Master(config, listeners, reload_config, report_fd, stats_server)    # binds every worker slot's socket
    set_title(config, "master")     # first: `--stop` and a second server know a master by its title
    _write_pidfile(config)          # before dropping privileges, as uWSGI's pidfile
    try:
        run_hooks(config, "as-root")
        _drop_privileges(config)
        check_log_rotation(config)  # as the user that rotates
        run_hooks(config, "as-user")
        run_hooks(config, "pre-app")
    except ConfigError as exc:
        report(report_fd, str(exc).encode())       # --daemonize: the waiting shell says why
        raise
    try:
        return master.run()
    finally:
        if config.vacuum:
            _vacuum(config, listeners, stats_server)


def _files_from_start_dir(config: Config) -> str:
    """Relative pid and log files mean the directory the server was started in, not its --chdir: uWSGI opens
    them before it changes directory, and `wsgistack --stop uwsgi.pid` is run from there."""
    for name in ("pidfile", "daemonize", "logto"):
        if getattr(config, name):
            setattr(config, name, os.path.abspath(getattr(config, name)))
    return os.getcwd()


def _apply_environment(config: Config) -> None:
    for item in config.env:
        key, _, value = item.partition("=")
        os.environ[key] = value
    if config.chdir:
        try:
            os.chdir(config.chdir)
        except OSError as exc:
            raise ConfigError(f"cannot change to {config.chdir!r}: {exc.strerror}", option="chdir",
                              **config.where("chdir")) from None
    prepare_import_path(config)


def _user_id(name: str) -> int:
    return int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid


def _group_id(name: str) -> int:
    return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid


def _chown_sockets(config: Config, listeners) -> None:
    """--chown-socket USER[:GROUP]: the unix sockets' owner, so that the web server's user may connect."""
    user, _, group = config.chown_socket.partition(":")
    try:
        uid = _user_id(user) if user else -1
        gid = _group_id(group) if group else -1
        for _, address in listeners:
            if address.is_unix and not address.inherited:      # systemd's: its SocketUser= says
                os.chown(address.path, uid, gid)
    except KeyError as exc:
        raise ConfigError(f"no such user or group: {exc}", option="chown-socket",
                          **config.where("chown-socket")) from None
    except OSError as exc:
        raise ConfigError(f"cannot change the owner of the sockets: {exc.strerror}", option="chown-socket",
                          **config.where("chown-socket")) from None


def _log_file_access(config: Config) -> None:
    """--logfile-chmod, --logfile-chown (to --uid/--gid): set as root, before the drop, so that the workers may
    reopen the files after logrotate. Regular files only (not a --logto /dev/stdout)."""
    if config.logfile_chmod:
        set_log_file_mode(int(config.logfile_chmod, 8))     # checked by check_feature_options
    for path in log_paths():
        if not os.path.isfile(path):
            continue
        if config.logfile_chmod:
            try:
                os.chmod(path, int(config.logfile_chmod, 8))
            except OSError as exc:
                raise ConfigError(f"cannot set {path}'s mode: {exc.strerror}", option="logfile-chmod",
                                  **config.where("logfile-chmod")) from None
        if config.logfile_chown and (config.uid or config.gid):
            try:
                os.chown(path, _user_id(config.uid) if config.uid else -1, _group_id(config.gid) if config.gid else -1)
            except (KeyError, OSError) as exc:
                raise ConfigError(f"cannot give {path} to --uid/--gid: {getattr(exc, 'strerror', None) or exc}",
                                  option="logfile-chown", **config.where("logfile-chown")) from None


def _drop_privileges(config: Config) -> None:
    """After binding (ports below 1024 need root), before any worker runs app code."""
    try:
        if config.gid:
            gid = _group_id(config.gid)
            os.setgroups([gid])
            os.setgid(gid)
        if config.uid:
            os.setuid(_user_id(config.uid))
    except KeyError as exc:
        option = "uid" if config.uid else "gid"
        raise ConfigError(f"no such user or group: {exc.args[0] if exc.args else exc}", option=option,
                          **config.where(option)) from None
    except PermissionError:
        option = "uid" if config.uid else "gid"
        raise ConfigError("changing user or group needs root", option=option, **config.where(option)) from None


def _warn_open_gateways(config: Config, listeners, warn) -> None:
    """A uwsgi or FastCGI socket on a non-loopback address with the default allow list: the usual reason to bind
    0.0.0.0 is a web server on another host or container, whose connections the default refuses."""
    for _, address in listeners:
        option = {"uwsgi": "uwsgi-allow-from", "fastcgi": "fastcgi-allow-from"}.get(address.protocol)
        if option and not address.is_unix and not getattr(config, option.replace("-", "_")):
            try:
                local = ipaddress.ip_address(address.host or "0.0.0.0").is_loopback
            except ValueError:
                local = address.host == "localhost"
            if not local:
                warn(f"wsgistack: warning: {address.protocol} on {address.text} answers loopback peers only (a web "
                     f"server on this host); for one elsewhere, list its address in --{option}")


def _check_pidfile(config: Config) -> None:
    """Before binding and daemonizing (the error then reaches the terminal): a pidfile naming a running master is
    never taken over, the running server could no longer be stopped through it (and our vacuum would remove it)."""
    from wsgistack.control import running_master

    other = running_master(config.pidfile) if config.pidfile else None
    if other is not None:
        raise ConfigError(f"{config.pidfile!r} names a running wsgistack master (pid {other}): stop it first "
                          f"(wsgistack --stop {config.pidfile}), or give this one another pidfile", option="pidfile",
                          **config.where("pidfile"))


def _write_pidfile(config: Config) -> None:
    if not config.pidfile:
        return
    try:
        with open(config.pidfile, "w") as handle:
            handle.write(f"{os.getpid()}\n")
    except OSError as exc:
        raise ConfigError(f"cannot write {config.pidfile!r}: {exc.strerror}", option="pidfile",
                          **config.where("pidfile")) from None


def _holds_our_pid(path: str) -> bool:
    try:
        with open(path) as handle:
            return handle.read().strip() == str(os.getpid())
    except OSError:
        return False


def _bind_stats(config: Config) -> StatsServer | None:
    if not config.stats:
        return None
    try:
        address = parse_address(config.stats, "stats", "stats")
        sock = bind(address, config.listen, config.chmod_socket, "stats")
    except ConfigError as exc:
        raise ConfigError(exc.message, option="stats", **config.where("stats")) from None
    return StatsServer(sock, address, config.stats_http, config.stats_minified)


def _apply_limits(config: Config) -> None:
    """--umask and --max-fd, for the master and the workers it forks; --limit-as is checked here, set by each
    worker. Before anything is bound or written."""
    if config.umask:
        if not all(c in "01234567" for c in config.umask) or int(config.umask, 8) > 0o777:
            raise ConfigError(f"expected an octal mode like 022, got {config.umask!r}", option="umask",
                              **config.where("umask"))
        os.umask(int(config.umask, 8))
    if config.max_fd:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (config.max_fd, max(hard, config.max_fd)))
        except (ValueError, OSError) as exc:
            raise ConfigError(f"cannot allow {config.max_fd} open files (the hard limit is {hard}): {exc}",
                              option="max-fd", **config.where("max-fd")) from None
    if config.limit_as:
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        if hard != resource.RLIM_INFINITY and config.limit_as << 20 > hard:
            raise ConfigError(f"{config.limit_as} MB is over the hard limit ({hard >> 20} MB)", option="limit-as",
                              **config.where("limit-as"))


def _vacuum(config: Config, listeners, stats_server: StatsServer | None) -> None:
    for _, address in listeners:
        if address.is_unix:
            remove_socket_file(address.path)       # only our own: a newer server may have bound the path since
    paths = [config.pidfile] if config.pidfile and _holds_our_pid(config.pidfile) else []
    if stats_server is not None and stats_server.address.is_unix:
        paths.append(stats_server.address.path)
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass
