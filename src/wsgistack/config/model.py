"""The typed configuration model: one table of options, the single source of truth.

Every option is declared once here, as a field of `Config`, with its type, default,
aliases and help. The command line, ini files and `--help` are all derived from it.
Reading argv and ini text lives elsewhere (`args.py`, `ini.py`); this file only types values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from wsgistack.config.errors import ConfigError
from wsgistack.config.logic import BLOCK_ENDS, BLOCK_STARTS


def option(default: Any, help: str, *, aliases: tuple[str, ...] = (), metavar: str = "VALUE",
           bare: str | None = None) -> Any:
    """Declare an option; `bare` is the value of the flag given without one (uWSGI: `--chmod-socket`).
    List defaults are copied per Config so instances never share them."""
    meta = {"help": help, "aliases": aliases, "metavar": metavar, "bare": bare}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    # --- where to listen (list options: every occurrence adds one) ---
    http: list[str] = option([], "listen for HTTP/1.1 on ADDR (host:port, :port, [::1]:port, /path.sock, unix:/path.sock)",
                             aliases=("http-socket", "http11-socket"), metavar="ADDR")
    socket: list[str] = option([], "listen for the uwsgi binary protocol on ADDR (what nginx's uwsgi_pass talks)",
                               aliases=("uwsgi-socket", "s"), metavar="ADDR")
    fastcgi_socket: list[str] = option([], "listen for FastCGI on ADDR (what nginx's fastcgi_pass talks)", metavar="ADDR")
    listen: int = option(1024, "listen backlog of every socket (uWSGI: 100, gunicorn: 2048; the kernel caps it at somaxconn)",
                         aliases=("l",), metavar="N")
    buffer_size: int = option(4096, "max bytes of a uwsgi request's vars block (uWSGI's default 4096, max 65535); "
                                    "also raises the HTTP limits on the request line, a header field and the head "
                                    "to at least BYTES, those not set themselves", aliases=("b",), metavar="BYTES")
    forwarded_allow_ips: str = option("127.0.0.1,::1", "HTTP peers whose X-Forwarded-Proto / X-Forwarded-Ssl set "
                                                       "wsgi.url_scheme (gunicorn's option: IPs or networks, comma-separated, "
                                                       "* for any; unix-socket peers always; uwsgi and FastCGI "
                                                       "peers are the allowed web servers)", metavar="IPS")
    uwsgi_allow_from: list[str] = option([], "peers allowed on TCP uwsgi sockets: IPs or CIDR networks "
                                             "(default: loopback only; unix sockets use file permissions)",
                                         metavar="NETWORK")
    fastcgi_allow_from: list[str] = option([], "peers allowed on TCP FastCGI sockets (default: loopback only)",
                                           metavar="NETWORK")
    chmod_socket: str = option("", "permissions of unix sockets, octal (a bare flag means 666, as uWSGI)", metavar="MODE",
                               bare="666", aliases=("chmod", "C"))
    chown_socket: str = option("", "owner of unix sockets: USER[:GROUP], names or numbers (set before privileges "
                                   "are dropped)", metavar="USER[:GROUP]")

    # --- the application ---
    module: str = option("", "import the WSGI app from pkg.mod[:callable]", aliases=("w", "wsgi"), metavar="MODULE")
    wsgi_file: str = option("", "load the WSGI app from a Python file", aliases=("file",), metavar="PATH")
    callable: str = option("application", "name of the WSGI callable in the module or file", metavar="NAME")
    mount: list[str] = option([], "serve another app under a URL prefix: MOUNTPOINT=APP, APP a .py file or "
                                  "pkg.mod[:callable] (repeatable; the longest mountpoint wins)",
                              metavar="MOUNTPOINT=APP")
    manage_script_name: bool = option(False, "with --mount, the mountpoint moves from PATH_INFO to SCRIPT_NAME (else "
                                             "SCRIPT_NAME, as the web server sends it, chooses the app)")
    chdir: str = option("", "change to DIR before loading the app", metavar="DIR")
    umask: str = option("", "file mode creation mask of every process, octal (022)", metavar="MODE")
    pythonpath: list[str] = option([], "add DIR to sys.path, or every match of a glob (/srv/lib/*), sorted "
                                       "(repeatable)", aliases=("pp", "python-path"), metavar="DIR")
    home: str = option("", "the app's virtualenv: its site-packages (same Python version) come first on sys.path",
                       aliases=("virtualenv", "venv", "pyhome", "H"), metavar="DIR")
    env: list[str] = option([], "set an environment variable KEY=VALUE (repeatable)", metavar="KEY=VALUE")
    pyargv: str = option("", "the app's sys.argv: the program's name, then ARGS split at spaces (no quoting, as "
                             "uWSGI)", metavar="ARGS")

    # --- static files, answered before the app (static.py) ---
    static_map: list[str] = option([], "serve URL prefix MOUNT from PATH, a directory or one file (repeatable); "
                                       "a file not found there goes to the app", metavar="MOUNT=PATH")
    static_map2: list[str] = option([], "like static-map, but the request's whole path goes under PATH",
                                    metavar="MOUNT=PATH")
    check_static: list[str] = option([], "answer any request whose path is a file under DIR from it, the others "
                                         "go to the app (repeatable)", aliases=("static-check",), metavar="DIR")
    static_index: list[str] = option([], "file answered for a directory, e.g. index.html (repeatable)", metavar="NAME")
    static_expires: list[str] = option([], "Expires and Cache-Control max-age SECONDS ahead for static files whose "
                                           "path matches REGEX (repeatable, first match wins)",
                                       metavar="REGEX SECONDS")
    static_expires_uri: list[str] = option([], "the same, matched against the request URI", metavar="REGEX SECONDS")
    static_expires_path_info: list[str] = option([], "the same, matched against PATH_INFO", metavar="REGEX SECONDS")
    static_expires_type: list[str] = option([], "the same, for one content type", metavar="TYPE=SECONDS")
    static_gzip_all: bool = option(False, "answer FILE.br or FILE.gz, when there and the client takes it, for "
                                          "every static FILE (nginx's gzip_static)")
    static_gzip_dir: list[str] = option([], "the same for static files under DIR (repeatable)",
                                        aliases=("static-gzip-prefix",), metavar="DIR")
    static_gzip_ext: list[str] = option([], "the same for static files whose name ends with EXT, e.g. .css "
                                            "(repeatable)", aliases=("static-gzip-suffix",), metavar="EXT")
    static_gzip: list[str] = option([], "the same for static files whose path matches REGEX (repeatable)",
                                    metavar="REGEX")
    static_skip_ext: list[str] = option([], "never serve static files whose name ends with EXT, e.g. .py (they go to "
                                            "the app; repeatable)", metavar="EXT")

    add_header: list[str] = option([], "add the header 'Name: value' to every answer (repeatable)",
                                   metavar="HEADER")
    disable_write_exception: bool = option(False, "write() to a client gone away returns quietly instead of raising "
                                                  "ConnectionResetError (the answer is dropped either way)")
    wsgi_disable_file_wrapper: bool = option(False, "leave wsgi.file_wrapper out of the environ")

    # --- compression of answers (compression.py; nginx's gzip directives) ---
    gzip: bool = option(False, "compress answers for clients that accept gzip, as nginx's `gzip on` does")
    gzip_comp_level: int = option(1, "gzip level, 1 (fastest, nginx's default) to 9", metavar="N")
    gzip_min_length: int = option(20, "compress only answers of at least BYTES, when their length is known",
                                  metavar="BYTES")
    gzip_types: list[str] = option([], "content types compressed besides text/html, e.g. text/css (repeatable, "
                                       "or several in one value; * for all)", metavar="TYPE")

    # --- processes and threads ---
    processes: int = option(1, "number of worker processes", aliases=("workers", "p"), metavar="N")
    threads: int = option(1, "app threads per worker; 1 runs the app on the event-loop thread (fastest)", metavar="N")
    max_fd: int = option(0, "open files each process may have (RLIMIT_NOFILE; 0: as inherited)", metavar="N")
    limit_as: int = option(0, "address space of each worker in MB (RLIMIT_AS): an app allocating past it gets "
                              "MemoryError (0: no limit)", metavar="MB")
    master: bool = option(True, "accepted for uWSGI compatibility: wsgistack always runs a master",
                          aliases=("M",))

    # --- adaptive number of workers (cheaper.py; uWSGI's cheaper subsystem): processes is then the most ---
    cheaper: int = option(0, "run at least N workers and start more, up to --processes, as load asks (0: always "
                             "--processes)", metavar="N")
    cheaper_initial: int = option(0, "workers started at first (default: --cheaper)", metavar="N")
    cheaper_step: int = option(1, "workers started at once when more are needed", metavar="N")
    cheaper_overload: int = option(3, "seconds of a measuring cycle (spare: cycles of overload before a worker is "
                                      "added; backlog: the queue length that adds one)", metavar="N")
    cheaper_algo: str = option("spare", "how load is judged: spare (every worker in a request), busyness (share of "
                                        "time in requests), backlog (connections waiting), manual (SIGTTIN/SIGTTOU)",
                               metavar="NAME")
    cheaper_busyness_max: int = option(50, "busyness: average busyness (percent) above which workers are added",
                                       metavar="PERCENT")
    cheaper_busyness_min: int = option(25, "busyness: average busyness (percent) below which a worker is stopped",
                                       metavar="PERCENT")
    cheaper_busyness_multiplier: int = option(10, "busyness: idle cycles before a worker is stopped", metavar="N")
    cheaper_busyness_penalty: int = option(2, "busyness: cycles added to the multiplier when a stopped worker had to "
                                              "be started again soon", metavar="N")
    cheaper_busyness_backlog_alert: int = option(33, "busyness: start emergency workers when more connections than "
                                                     "this wait to be accepted", metavar="N")
    cheaper_busyness_backlog_step: int = option(1, "busyness: emergency workers started at once", metavar="N")
    cheaper_busyness_backlog_multiplier: int = option(3, "busyness: idle cycles before an emergency worker is "
                                                         "stopped", metavar="N")
    cheaper_busyness_backlog_nonzero: int = option(60, "busyness: start an emergency worker when connections waited "
                                                       "this many seconds in a row", metavar="SECONDS")
    cheaper_busyness_verbose: bool = option(False, "busyness: log every cycle's figures")

    # --- lifecycle ---
    pidfile: str = option("", "the master writes its pid to FILE", metavar="FILE",
                          aliases=("pidfile2", "safe-pidfile", "safe-pidfile2"))
    daemonize: str = option("", "run in the background, logging to LOGFILE; returns once serving or failed",
                            metavar="LOGFILE", aliases=("d", "daemonize2"))
    vacuum: bool = option(False, "remove the pidfile and unix sockets on exit")
    uid: str = option("", "drop privileges to this user (name or number) after binding", metavar="USER")
    gid: str = option("", "drop privileges to this group (name or number) after binding", metavar="GROUP")
    procname_prefix: str = option("", "prefix of the process titles (`PREFIXwsgistack worker 1`)", metavar="PREFIX")
    procname_prefix_spaced: str = option("", "the same, followed by a space (`PREFIX wsgistack worker 1`)",
                                         metavar="PREFIX")
    py_autoreload: int = option(0, "development: every SECONDS, reload (as SIGHUP) if a Python module the app "
                                   "imported changed on disk (0: off)", aliases=("python-autoreload",),
                                metavar="SECONDS")
    attach_daemon: list[str] = option([], "run COMMAND beside the workers (a Celery worker...): started again when "
                                          "it ends, restarted on reload, stopped with the server (repeatable)",
                                      metavar="COMMAND")
    hook_asap: list[str] = option([], "run ACTION:ARGUMENT first of all (exec:COMMAND, print:, putenv:, mkdir:, "
                                      "unlink:; hooks.py)", metavar="ACTION")
    hook_as_root: list[str] = option([], "the same once the sockets are bound, before privileges are dropped",
                                     metavar="ACTION")
    hook_as_user: list[str] = option([], "the same once privileges are dropped", metavar="ACTION")
    hook_pre_app: list[str] = option([], "the same before workers import the app (at start and each reload)",
                                     metavar="ACTION")
    hook_post_app: list[str] = option([], "the same once the first worker serves (at start and each reload)",
                                      metavar="ACTION")
    hook_master_start: list[str] = option([], "the same as the master starts; also unix_signal:N FUNCTION "
                                              "(gracefully_kill_them_all, kill_them_all, grace_them_all)",
                                          metavar="ACTION")
    exec_asap: list[str] = option([], "run COMMAND first of all (a failure stops the start)", metavar="COMMAND")
    exec_as_root: list[str] = option([], "run COMMAND once the sockets are bound, before privileges are dropped",
                                     metavar="COMMAND")
    exec_as_user: list[str] = option([], "run COMMAND once privileges are dropped", metavar="COMMAND")
    exec_pre_app: list[str] = option([], "run COMMAND before workers import the app (at start and each reload; a "
                                         "failure abandons the reload)", metavar="COMMAND")
    exec_post_app: list[str] = option([], "run COMMAND once the first worker serves (at start and each reload)",
                                      metavar="COMMAND")
    smart_attach_daemon: list[str] = option([], "keep a service running that writes PIDFILE (memcached -d -P PIDFILE): "
                                                "started when no live pid is in it, left running by stops and "
                                                "reloads (repeatable)", metavar="PIDFILE COMMAND")
    cron: list[str] = option([], "run COMMAND on a schedule, MINUTE HOUR DAY MONTH WEEKDAY COMMAND (-1: any, -N: "
                                 "every N), as uWSGI's cron (repeatable)", metavar="SCHEDULE COMMAND")
    unique_cron: list[str] = option([], "the same, not started again while its previous run goes on",
                                    metavar="SCHEDULE COMMAND")
    touch_reload: list[str] = option([], "reload gracefully when FILE is modified, touched or created (checked "
                                         "every second; repeatable)",
                                     aliases=("touch-chain-reload", "touch-workers-reload"),
                                     metavar="FILE")
    reload_mercy: int = option(30, "seconds in-flight requests get to finish on reload, recycle or SIGTERM",
                               aliases=("worker-reload-mercy",), metavar="SECONDS")
    harakiri: int = option(0, "end a request running longer than SECONDS: log its stack, answer 504, "
                              "replace the worker (0: off)", metavar="SECONDS",
                           aliases=("t",))
    harakiri_verbose: bool = option(False, "accepted for uWSGI compatibility: harakiri always logs the stack")
    max_requests: int = option(0, "recycle a worker after N requests (0: never)", metavar="N",
                              aliases=("R",))
    max_requests_delta: int = option(0, "add 0..N to each worker's max-requests so they do not recycle together",
                                     aliases=("max-requests-jitter",), metavar="N")
    reload_on_rss: int = option(0, "recycle a worker whose resident memory exceeds MB (0: never)", metavar="MB")
    reload_on_as: int = option(0, "recycle a worker whose address space exceeds MB (0: never)", metavar="MB")
    evil_reload_on_rss: int = option(0, "the master kills a worker whose resident memory exceeds MB, even in the "
                                        "middle of a request, and starts a new one (0: never)", metavar="MB")
    evil_reload_on_as: int = option(0, "the same for a worker's address space", metavar="MB")
    max_worker_lifetime: int = option(0, "recycle a worker after SECONDS (0: never)", metavar="SECONDS")
    reload_on_exception: bool = option(False, "recycle a worker whose app raised an exception (the successor "
                                              "starts first)")
    max_worker_lifetime_delta: int = option(0, "add (worker number - 1) x SECONDS to each worker's "
                                               "max-worker-lifetime so they do not recycle together", metavar="SECONDS")
    min_worker_lifetime: int = option(10, "a worker has lived SECONDS before --max-requests, --reload-on-rss or "
                                          "--reload-on-as recycle it (uWSGI's default: no fork storm)",
                                      metavar="SECONDS")

    # --- HTTP limits (nginx-like answers: 414, 431, 413, 408) ---
    limit_request_line: int = option(8190, "max bytes of the request line, else 414 (0: no limit; gunicorn: 4094, "
                                           "nginx: 8k buffer)", metavar="BYTES")
    limit_request_field_size: int = option(8190, "max bytes of one header field, else 431 (0: no limit; nginx: 8k "
                                                 "buffer)", metavar="BYTES")
    limit_request_fields: int = option(100, "max number of header fields, else 431 (0: no limit; gunicorn, Apache: "
                                            "100)", metavar="N")
    limit_request_head: int = option(32768, "max bytes of the whole request head, else 431 (0: no limit; nginx: 4 x "
                                            "8k buffers)", metavar="BYTES")
    limit_post: int = option(0, "max bytes of a request body, else 413 before it is read (0: no limit)", metavar="BYTES")
    post_buffering: int = option(1048576, "request bodies up to BYTES stay in memory, larger ones are spooled to a "
                                          "temporary file", metavar="BYTES")
    keepalive_timeout: int = option(75, "close a keep-alive connection idle this long (nginx: 75 s)", metavar="SECONDS")
    header_timeout: int = option(60, "answer 408 if a request head takes longer (nginx client_header_timeout: 60 s)",
                                 metavar="SECONDS")
    socket_timeout: int = option(0, "uWSGI's: sets header-timeout, body-timeout and send-timeout, those not set "
                                    "themselves (0: their own defaults)", metavar="SECONDS",
                                 aliases=("z",))
    http_timeout: int = option(0, "the same (uWSGI's HTTP router timeout)", metavar="SECONDS")
    send_timeout: int = option(60, "close a connection whose client takes nothing of an answer for SECONDS, which "
                                   "frees the app thread streaming to it (nginx send_timeout: 60 s)", metavar="SECONDS")
    body_timeout: int = option(60, "answer 408 if a request body stalls this long between reads "
                                   "(nginx client_body_timeout: 60 s)", metavar="SECONDS")

    # --- logging ---
    disable_logging: bool = option(False, "no access log (errors are still logged), except the requests the "
                                          "log-4xx/5xx/slow/big/zero options ask for",
                                  aliases=("L",))
    log_4xx: bool = option(False, "with disable-logging: still log requests answered 4xx")
    log_5xx: bool = option(False, "with disable-logging: still log requests answered 5xx")
    log_slow: int = option(0, "with disable-logging: still log requests that took MSECS or longer (0: off)",
                           metavar="MSECS")
    log_big: int = option(0, "with disable-logging: still log answers of BYTES or more (0: off)", metavar="BYTES")
    log_zero: bool = option(False, "with disable-logging: still log answers without a body")
    logto: str = option("", "write logs to FILE instead of stderr", metavar="FILE", aliases=("logto2",))
    memory_report: bool = option(False, "start each access log line with the worker's address space and resident "
                                        "memory, as uWSGI does", aliases=("m",))
    logger: list[str] = option([], "where logs go: file:PATH (as --logto) or stdio (stderr, the default); uWSGI's "
                                   "other loggers are not built in", metavar="LOGGER")
    req_logger: list[str] = option([], "where the access log goes: file:PATH (a file of its own) or stdio (with "
                                       "the other logs, the default)", aliases=("logger-req",),
                                   metavar="LOGGER")
    log_x_forwarded_for: bool = option(False, "the access log shows the client address of X-Forwarded-For (behind a "
                                              "proxy) instead of the peer's")
    log_maxsize: int = option(0, "rotate the log file (--logto, --daemonize) once it grows past BYTES: it is renamed "
                                 "to FILE.<epoch seconds> (or --log-backupname) and a new one started (0: never)",
                              metavar="BYTES")
    log_backupname: str = option("", "the name a rotated log file gets (each rotation replaces it)", metavar="FILE")
    touch_logrotate: list[str] = option([], "rotate the log file when FILE is modified, touched or created",
                                        metavar="FILE")
    touch_logreopen: list[str] = option([], "reopen the log file when FILE is modified, touched or created (a log "
                                            "moved away, by logrotate say, is reopened within a second anyway)",
                                        metavar="FILE")
    logformat: str = option("", "the access log line, from uWSGI's %(name) variables: %(addr) %(method) %(uri) "
                                "%(status) %(msecs) %(size) %(uagent) %(var.HTTP_X_FORWARDED_FOR) ...",
                            aliases=("log-format",), metavar="FORMAT")
    logformat_strftime: bool = option(False, "the text of --logformat goes through strftime (%Y ...), and %(ftime) "
                                             "is the time an answer ended in --log-date's format")
    log_date: str = option("", "the strftime format of %(ftime) with --logformat-strftime (default: "
                               "%d/%b/%Y:%H:%M:%S %z); every log line carries its date already",
                           aliases=("logdate",), metavar="FORMAT", bare="")
    log_req_encoder: list[str] = option([], "pass each access log line through an encoder, in order: format "
                                            "TEMPLATE, json TEMPLATE (${msg} ${strftime:FMT} ${unix} ...), prefix "
                                            "TEXT, suffix TEXT, nl (repeatable)", metavar="ENCODER")
    log_micros: bool = option(False, "the access log line gives response times in microseconds (`in N micros`)")
    log_prefix: str = option("", "start every line of the server's own log (not the access lines) with TEXT, "
                                 "through strftime", metavar="TEXT")
    logfile_chown: bool = option(False, "give the log files to --uid/--gid, so that workers may reopen them after "
                                        "logrotate")
    logfile_chmod: str = option("", "the log files' mode (octal, e.g. 640)", metavar="MODE")

    # --- monitoring (stats.py) ---
    stats: str = option("", "serve a JSON snapshot of the master and its workers on ADDR (host:port or a unix socket), "
                            "as uWSGI's stats server: uwsgitop and uWSGI's monitoring tools read it",
                        aliases=("stats-server",), metavar="ADDR")
    stats_http: bool = option(False, "answer on the stats address with an HTTP response")
    stats_minified: bool = option(False, "the stats document on one line", aliases=("stats-min",))

    # --- sources of configuration ---
    ini: list[str] = option([], "read options from an ini file FILE[:section] (section [uwsgi] or [wsgistack])",
                            metavar="FILE")
    strict: bool = option(False, "unknown options are errors instead of warnings")
    set_placeholder: list[str] = option([], "a placeholder for the ini files' %(NAME), set before they are read "
                                            "(uWSGI's; in an ini file, for the lines after it and the files after it); "
                                            "--set, -S and `set` also set the option NAME, if there is one",
                                        aliases=("set-ph", "set", "S"), metavar="NAME=VALUE")
    protocol: str = option("uwsgi", "what the --socket sockets speak: uwsgi, http or fastcgi (uWSGI's)",
                           aliases=("socket-protocol",), metavar="PROTOCOL")

    def __post_init__(self) -> None:
        # option name -> [(value, file, line)], in the order set: later errors can say where a value came from
        self.origins: dict[str, list[tuple[str, str | None, int | None]]] = {}

    def where(self, name: str, value: object = None) -> dict:
        """file= and line= of the setting of `name` (with `value`, for list options), for a ConfigError."""
        for set_value, file, line in reversed(self.origins.get(name, [])):
            if value is None or set_value == str(value):
                return {"file": file, "line": line}
        return {}


# uWSGI options that change what is served, or where, which wsgistack does not do: a startup error, strict or not
# (ignored, the server would run, but not as configured), with what to do instead.
UNSUPPORTED_OPTIONS: dict[str, str] = {
    **dict.fromkeys(("https", "https-socket", "ssl-socket", "https2", "http-to-https", "shared-socket", "http-to"),
                    "TLS and routing belong to the web server in front (nginx: listen 443 ssl; proxy or uwsgi_pass "
                    "to wsgistack)"),
    **dict.fromkeys(("route", "route-if", "route-if-not", "route-run", "route-uri", "route-qs", "route-host",
                     "route-remote-addr", "route-user-agent", "route-label", "final-route", "error-route",
                     "response-route"),
                    "uWSGI's internal routing is not built in: rewrite, redirect and deny in nginx"),
    **dict.fromkeys(("spooler", "spooler-processes", "mule", "mules", "farm", "emperor", "vassals-inherit"),
                    "this uWSGI subsystem is not built in (run a task queue such as Celery with --attach-daemon)"),
    **dict.fromkeys(("cache", "cache2", "sharedarea"),
                    "uWSGI's shared-memory cache is not built in: use your framework's cache with Redis or memcached "
                    "(which --smart-attach-daemon can run), or its local-memory cache per worker"),
    **dict.fromkeys(("json", "js", "yaml", "yml", "xml", "sqlite3", "ldap"),
                    "wsgistack reads ini files and flags only: write the options as an ini file"),
    # read by the ini reader (logic.py); as flags they would have no lines to hold
    **dict.fromkeys(sorted(BLOCK_STARTS | BLOCK_ENDS), "uWSGI's configuration logic (if-env, for, ... endif, endfor) "
                    "is read in ini files: put the block in one"),
    "log-encoder": "encoders of the server's own log lines are not built in (plain text lines): --log-req-encoder "
                   "encodes the access log (format, json, prefix, suffix, nl)",
    "master-fifo": "uWSGI's master FIFO is not built in: send the master signals instead (SIGHUP reloads, SIGTERM "
                   "stops, SIGTTIN/SIGTTOU add or remove a worker, SIGUSR1 logs their status), or run "
                   "`wsgistack --reload PIDFILE` / `wsgistack --stop PIDFILE`",
    # Upgrade requests are answered as plain HTTP: ignoring it would leave the WebSocket endpoints dead.
    "http-websockets": "WebSockets are not supported: have nginx send the WebSocket path to an ASGI server "
                       "(daphne, uvicorn), or remove the option if the app uses no WebSockets",
}


# uWSGI options we accept and deliberately ignore, with the reason (listed in the docs).
IGNORED_OPTIONS: dict[str, str] = {
    "enable-threads": "app threads are always enabled",
    "single-interpreter": "there is always one interpreter per worker",
    "lazy-apps": "workers always import the app after fork, so reloads load fresh code",
    "lazy": "workers always import the app after fork, so reloads load fresh code",
    "no-orphans": "workers stop by themselves when their master is gone",
    "ignore-sigpipe": "a client gone away is logged once, at info level, never as an error",
    "ignore-write-errors": "a client gone away is logged once, at info level, never as an error",
    "static-safe": "symlinks inside a mapped directory are followed wherever they point (nginx's default)",
    "thunder-lock": "not needed: accepting is done by each worker's event loop",
    "http-keepalive": "keep-alive is always on (HTTP/1.1)",
    "need-app": "a missing app is always a startup error",
    "plugins": "Python is built in",
    "plugin": "Python is built in",
    "die-on-term": "SIGTERM always means a graceful stop",
    "offload-threads": "static files are sent by the event loop, never by an app thread",
    "auto-procname": "process titles are always set (`wsgistack master`, `wsgistack worker N`)",
    "py-call-osafterfork": "workers are forked by Python, so signal handling is always set up again in them",
    "log-ioerror": "a client gone away is logged once, at info level; other I/O errors always",
    "log-sendfile": "static files and wsgi.file_wrapper answers are logged as any answer",
    "harakiri-graceful-timeout": "harakiri answers 504 at once and lets the worker's other threads finish under "
                                 "--reload-mercy (a stuck loop thread: the worker ends at once)",
    "offload-thread": "static files are sent by the event loop, never by an app thread",
    "log-reopen": "every process reopens a log file moved away within a second, after a reload too",
    "log-master": "every process appends its log lines to the log itself (O_APPEND), whole lines: no log pipe "
                  "through the master",
    "log-master-bufsize": "every process appends its log lines to the log itself: no log pipe through the master",
    "threaded-logger": "the access log is written in batches, once per event-loop iteration: no logging thread",
    "so-keepalive": "idle keep-alive connections close after --keepalive-timeout and stalled ones after the "
                    "header, body and send timeouts, so a peer gone away is dropped without TCP keepalives",
    "post-buffering-bufsize": "bodies are read as they arrive by the event loop; --post-buffering alone decides "
                              "memory or temporary file",
    "http-auto-chunked": "an HTTP/1.1 answer without a length is always sent chunked and kept alive",
    "close-on-exec": "every socket is close-on-exec already (Python's default): commands the app starts inherit none",
    "close-on-exec2": "every socket is close-on-exec already (Python's default): commands the app starts inherit none",
    "T": "uWSGI's -T, enable-threads: app threads are always enabled",
    "i": "uWSGI's -i, single-interpreter: one interpreter per worker, always",
}


@dataclass(frozen=True)
class OptionSpec:
    name: str          # ini key and long flag, e.g. "wsgi-file"
    attr: str          # Config attribute, e.g. "wsgi_file"
    kind: type         # int, bool, str or list
    default: Any
    help: str
    aliases: tuple[str, ...]
    metavar: str
    bare: str | None = None

    @property
    def takes_value(self) -> bool:
        return self.kind is not bool

    @property
    def is_list(self) -> bool:
        return self.kind is list

    @property
    def maximum(self) -> int:
        """The largest value of an int option: a number of bytes (an upload limit, a log size) may pass 2 GiB."""
        return MAX_BYTES if self.metavar == "BYTES" else MAX_INT


def _build_table() -> dict[str, OptionSpec]:
    kinds = {"int": int, "bool": bool, "str": str, "list[str]": list}
    table: dict[str, OptionSpec] = {}
    for f in dataclasses.fields(Config):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        spec = OptionSpec(f.name.replace("_", "-"), f.name, kinds[f.type], default,
                          f.metadata["help"], f.metadata["aliases"], f.metadata["metavar"], f.metadata["bare"])
        for name in (spec.name, *spec.aliases):
            table[name] = spec
    return table


#: every accepted name (canonical and alias) -> its spec
OPTIONS: dict[str, OptionSpec] = _build_table()

_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected true/false/yes/no/on/off/1/0, got {text!r}")


MAX_INT = 2**31 - 1     # what the kernel takes for a backlog, a limit or a timeout
MAX_BYTES = 2**63 - 1   # a file or body size (off_t)


def parse_int(text: str, maximum: int = MAX_INT) -> int:
    stripped = text.strip()
    if not (stripped.isascii() and stripped.isdigit()):   # no sign, no spaces, no hex, no "²": a count or size
        raise ValueError(f"expected a non-negative integer, got {text!r}")
    # the length test first: int() of a huge string of digits is slow (leading zeros add nothing)
    if len(stripped.lstrip("0")) > len(str(maximum)) or int(stripped) > maximum:
        raise ValueError(f"{stripped} is too large (at most {maximum})")
    return int(stripped)


def apply_setting(config: Config, spec: OptionSpec, value: str | bool, *,
                  file: str | None = None, line: int | None = None, flag: str | None = None) -> None:
    """Type one value and store it: list options append, the others are replaced (last wins)."""
    try:
        if spec.kind is bool:
            typed: Any = value if isinstance(value, bool) else parse_bool(value)
        elif spec.kind is int:
            typed = parse_int(str(value), spec.maximum)
        else:
            typed = str(value)
    except ValueError as exc:
        raise ConfigError(str(exc), option=flag or spec.name, file=file, line=line) from None
    if spec.is_list:
        getattr(config, spec.attr).append(typed)
    else:
        setattr(config, spec.attr, typed)
    config.origins.setdefault(spec.name, []).append((str(typed), file, line))
