"""Configuration as the command sees it: ini files and flags are one option table (checked option by
option), sections, flags over files, unknown and ignored options, and every configuration error named
by file:line and option, from an ini file and from a flag. (The ini reader's own rules: test_ini.py.)"""

from __future__ import annotations

import dataclasses
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import APPS, WSGISTACK, free_port
from wsgistack.app_loader import load_app, prepare_import_path
from wsgistack.config import Config, ConfigError, load_config, parse_argv
from wsgistack.config.model import IGNORED_OPTIONS, OPTIONS

BASE = "[uwsgi]\nhttp = 127.0.0.1:8000\nmodule = app\n"


def load(*argv, warnings: list | None = None) -> Config:
    sink = warnings if warnings is not None else []
    config = load_config(parse_argv([str(arg) for arg in argv]), warn=sink.append)
    if warnings is None:
        assert sink == [], sink
    return config


def values(config: Config) -> dict:
    return dataclasses.asdict(config)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(*args, cwd=None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(WSGISTACK + [str(arg) for arg in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


# --- ini files on the command line ----------------------------------------------------------------------

def test_ini_flag_and_positional_file_mean_the_same(tmp_path):
    ini = write(tmp_path / "site.ini", BASE + "processes = 3\nthreads = 8\n")
    by_flag, by_position = load("--ini", ini), load(ini)
    assert values(by_flag) == values(by_position)
    assert (by_flag.processes, by_flag.threads, by_flag.http, by_flag.module) == (3, 8, ["127.0.0.1:8000"], "app")


def test_section_suffix_works_both_ways(tmp_path):
    ini = write(tmp_path / "site.ini", BASE + "processes = 3\n[wsgistack]\nhttp = :9000\nmodule = other\n"
                                              "processes = 4\n")
    by_flag, by_position = load("--ini", f"{ini}:wsgistack"), load(f"{ini}:wsgistack")
    assert values(by_flag) == values(by_position)
    assert (by_flag.processes, by_flag.module) == (4, "other")


def test_uwsgi_section_is_the_default(tmp_path):
    ini = write(tmp_path / "site.ini", "[wsgistack]\nprocesses = 4\n" + BASE + "processes = 3\n")
    assert load(ini).processes == 3


def test_wsgistack_section_when_there_is_no_uwsgi_section(tmp_path):
    ini = write(tmp_path / "site.ini", "[other]\nprocesses = 9\n[wsgistack]\nhttp = :9000\nmodule = app\n"
                                       "processes = 4\n")
    assert load(ini).processes == 4


@pytest.mark.parametrize("flags_first", [False, True], ids=["flags-after", "flags-before"])
def test_flags_override_the_file(tmp_path, flags_first):
    ini = write(tmp_path / "site.ini", BASE + "processes = 3\nvacuum = true\nharakiri = 20\n")
    flags = ["--processes", "5", "--vacuum=false", "--harakiri", "0"]
    config = load(*(flags + [ini] if flags_first else [ini] + flags))
    assert (config.processes, config.vacuum, config.harakiri) == (5, False, 0)
    assert config.module == "app"           # what no flag names still comes from the file


def test_list_options_from_file_and_flags_add_up(tmp_path):
    ini = write(tmp_path / "site.ini", BASE + "http = 127.0.0.1:8001\n")
    config = load(ini, "--http", "127.0.0.1:8002")
    assert config.http == ["127.0.0.1:8000", "127.0.0.1:8001", "127.0.0.1:8002"]


def test_ini_include_and_ini_flag_bring_the_same_settings(tmp_path):
    write(tmp_path / "common.ini", "[uwsgi]\nprocesses = 7\nmax-requests = 100\n")
    including = write(tmp_path / "site.ini", BASE + "ini = common.ini\n")
    plain = write(tmp_path / "plain.ini", BASE)
    included, given = values(load(including)), values(load(plain, "--ini", tmp_path / "common.ini"))
    assert included.pop("ini") == [str(including)] and given.pop("ini") == [str(plain), str(tmp_path / "common.ini")]
    assert included == given
    assert load(including).processes == 7


# --- unknown and ignored options ----------------------------------------------------------------------

def test_unknown_option_is_a_warning_naming_file_line_and_option(tmp_path):
    ini = write(tmp_path / "site.ini", BASE + "procesess = 4\n")
    warnings: list[str] = []
    config = load(ini, warnings=warnings)
    assert config.processes == 1
    assert warnings == [f"wsgistack: warning: {ini}:4: option 'procesess': unknown option (ignored)"]


def test_unknown_option_is_an_error_with_strict_flag(tmp_path):
    ini = write(tmp_path / "site.ini", BASE + "procesess = 4\n")
    with pytest.raises(ConfigError) as error:
        load(ini, "--strict")
    assert str(error.value) == f"{ini}:4: option 'procesess': unknown option"


def test_strict_in_the_file_applies_to_the_whole_file(tmp_path):
    ini = write(tmp_path / "site.ini", BASE + "procesess = 4\nstrict = true\n")
    with pytest.raises(ConfigError) as error:
        load(ini)
    assert str(error.value) == f"{ini}:4: option 'procesess': unknown option"


def test_strict_flag_false_overrides_the_file(tmp_path):
    ini = write(tmp_path / "site.ini", BASE + "strict = true\nprocesess = 4\n")
    warnings: list[str] = []
    load(ini, "--strict=false", warnings=warnings)
    assert len(warnings) == 1 and f"{ini}:5:" in warnings[0]


def test_ignored_uwsgi_options_are_accepted_silently_in_ini(tmp_path):
    ini = tmp_path / "site.ini"
    plain = load(write(ini, BASE), "--strict")
    lines = "".join(f"{name} = true\n" for name in IGNORED_OPTIONS)
    assert values(load(write(ini, BASE + lines), "--strict")) == values(plain)


def test_ignored_uwsgi_options_are_accepted_silently_as_flags(tmp_path):
    plain = write(tmp_path / "plain.ini", BASE)
    flags = [f"--{name}" for name in IGNORED_OPTIONS]
    assert values(load(plain, *flags, "--strict")) == values(load(plain, "--strict"))
    assert load(plain, "--chmod-socket").chmod_socket == "666"      # a bare flag means 666, as in the ini


# --- one option table: every option means the same as a flag and as an ini key -----------------------

def _sample(spec) -> str | bool:
    if spec.kind is bool:
        return not spec.default
    if spec.kind is int:
        return str(spec.default + 3)
    if spec.kind is list:
        return {"http": "127.0.0.1:9001", "socket": "127.0.0.1:9002", "fastcgi-socket": "/tmp/fcgi.sock",
                "env": "GREETING=hello world", "uwsgi-allow-from": "10.0.0.0/8",
                "fastcgi-allow-from": "192.0.2.1"}.get(spec.name, "/srv/lib")
    return {"chmod-socket": "660", "protocol": "fastcgi"}.get(spec.name, f"value-of-{spec.name}")


# `ini` names the files read; a placeholder in an ini file is the reader's (test_placeholders_hold_across_files...)
@pytest.mark.parametrize("name", sorted(name for name in OPTIONS
                                        if OPTIONS[name].name not in ("ini", "set-placeholder")))
def test_every_option_means_the_same_as_a_flag_and_as_an_ini_key(tmp_path, name):
    spec = OPTIONS[name]
    value = _sample(spec)
    dash = "-" if len(name) == 1 else "--"
    if value is True:
        flags, line = [f"{dash}{name}"], name                      # bare forms: `--vacuum`, `vacuum`
    elif value is False:
        flags, line = [f"{dash}{name}=false"], f"{name} = false"
    else:
        flags, line = [f"{dash}{name}", value], f"{name} = {value}"
    ini = tmp_path / "site.ini"          # one path: `ini` (the files read) is part of the Config too
    as_flag = load(write(ini, BASE), *flags)
    unchanged = load(ini)
    as_key = load(write(ini, BASE + line + "\n"))
    assert values(as_flag) == values(as_key)
    assert values(as_flag) != values(unchanged), f"{name} changed nothing"


def test_every_canonical_option_is_in_help():
    text = run_cli("--help").stdout
    for spec in {spec.name: spec for spec in OPTIONS.values()}.values():
        assert f"--{spec.name}" in text
    refused, _, logic = text.partition("uWSGI's configuration logic, read in ini files only:")
    assert "if-env" in logic and "endfor" in logic and "spooler" not in logic
    assert "if-env" not in refused.partition("uWSGI options refused")[2]


# --- configuration errors: file:line and option, from the ini; the option, from a flag ----------------

ERRORS = [   # id, ini line (or flags), option named, what the message says
    ("bad-integer", "processes = four", ["--processes", "four"], "processes", "expected a non-negative integer"),
    ("bad-boolean", "vacuum = maybe", ["--vacuum=maybe"], "vacuum", "expected true/false"),
    ("bad-address", "http = localhost", ["--http", "localhost"], "http", "bad address 'localhost'"),
    ("port-in-use", "http = 127.0.0.1:{busy}", ["--http", "127.0.0.1:{busy}"], "http", "address already in use"),
    ("missing-module", "module = no_such_module_for_wsgistack", ["--module", "no_such_module_for_wsgistack"],
     "module", "cannot import 'no_such_module_for_wsgistack'"),
    ("no-callable", "module = notwsgi", ["--module", "notwsgi"], "module", "'notwsgi' has no callable 'application'"),
    ("chmod-not-octal", "chmod-socket = 6x6", ["--chmod-socket", "6x6"], "chmod-socket", "expected an octal mode"),
    ("daemonize-unwritable", "daemonize = /nonexistent-wsgistack-dir/x.log",
     ["--daemonize", "/nonexistent-wsgistack-dir/x.log"], "daemonize", "cannot write"),
    ("chdir-missing", "chdir = /nonexistent-wsgistack-dir", ["--chdir", "/nonexistent-wsgistack-dir"], "chdir",
     "cannot change to '/nonexistent-wsgistack-dir'"),
    ("strict-unknown", "procesess = 4", ["--procesess", "4"], "procesess", "unknown option"),
    ("bad-processes", "processes = 0", ["--processes", "0"], "processes", "must be at least 1"),
    ("bad-env", "env = NOVALUE", ["--env", "NOVALUE"], "env", "expected KEY=VALUE"),
    ("no-such-user", "uid = no-such-user-wsgistack", ["--uid", "no-such-user-wsgistack"], "uid",
     "no such user or group"),
]


@pytest.fixture
def busy_port():
    """A port someone else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def _error_setup(tmp_path: Path, busy: int, setting: str) -> tuple[str, list[str]]:
    """(the ini body, the flags) of a valid config the bad setting is added to."""
    (tmp_path / "notwsgi.py").write_text("value = 1\n")
    key = setting.split("=")[0].strip()
    lines = ["[uwsgi]", "; a comment, so that line numbers are not trivial"]
    flags = ["--pythonpath", str(tmp_path)]
    if key != "http":
        lines.append(f"http = 127.0.0.1:{free_port()}")
        flags += ["--http", lines[-1].split(" = ")[1]]
    if key != "module":
        lines.append(f"wsgi-file = {APPS / 'basic.py'}")
        flags += ["--wsgi-file", str(APPS / "basic.py")]
    lines.append(f"pythonpath = {tmp_path}")
    return "\n".join(lines) + "\n", flags


@pytest.mark.parametrize("case", ERRORS, ids=[case[0] for case in ERRORS])
def test_config_error_from_ini_names_file_line_and_option(tmp_path, busy_port, case):
    name, setting, _, option, message = case
    setting = setting.format(busy=busy_port)
    body, _ = _error_setup(tmp_path, busy_port, setting)
    line = body.count("\n") + 1
    ini = write(tmp_path / "site.ini", body + setting + "\nthreads = 2\n")
    args = [ini, "--strict"] if name == "strict-unknown" else [ini]

    result = run_cli(*args, cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{ini}:{line}: option '{option}': " in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    assert result.stderr.count("wsgistack: error:") == 1, result.stderr


@pytest.mark.parametrize("case", ERRORS, ids=[case[0] for case in ERRORS])
def test_config_error_from_a_flag_names_the_option(tmp_path, busy_port, case):
    _, setting, bad_flags, option, message = case
    _, flags = _error_setup(tmp_path, busy_port, setting.format(busy=busy_port))

    result = run_cli(*flags, *[flag.format(busy=busy_port) for flag in bad_flags], cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(rf"wsgistack: error: option '(--)?{re.escape(option)}': ", result.stderr), result.stderr
    assert message in result.stderr, result.stderr
    assert ".ini:" not in result.stderr


def test_unknown_option_warning_names_file_and_line_and_the_server_still_starts(start_server, tmp_path):
    ini = write(tmp_path / "site.ini", "[uwsgi]\n\nprocesses = 2\nenable-threads = true\nharakiri-verbose\n"
                                       "no-such-option = 1\nthunder-lock = true\n")
    server = start_server(str(ini))
    assert server.get("/")[0] == 200
    log = server.log()
    assert f"wsgistack: warning: {ini}:6: option 'no-such-option': unknown option (ignored)" in log, log
    assert log.count("wsgistack: warning:") == 1, log      # enable-threads, thunder-lock: accepted silently
    assert server.stop() == 0


def test_positional_ini_with_section_and_flags_serves(start_server, tmp_path):
    ini = write(tmp_path / "site.ini", "[uwsgi]\nprocesses = 4\n[wsgistack]\nprocesses = 3\nthreads = 2\n")
    server = start_server(f"{ini}:wsgistack", "--processes", "2")
    assert server.get("/")[0] == 200
    assert "with 2 processes x 2 threads" in server.wait_log("serving")
    assert server.stop() == 0


def test_missing_ini_file_is_an_error_naming_it(tmp_path):
    result = run_cli(tmp_path / "missing.ini")
    assert result.returncode == 1
    assert f"wsgistack: error: {tmp_path / 'missing.ini'}: cannot read config file" in result.stderr


def test_socket_timeout_sets_the_timeouts_not_set_themselves(tmp_path):
    """uWSGI's socket-timeout bounds every wait on the peer: our header, body and send timeouts."""
    ini = write(tmp_path / "site.ini", "[uwsgi]\nhttp = :8000\nmodule = m\nsocket-timeout = 30\nbody-timeout = 120\n")
    config = load(str(ini))
    assert (config.header_timeout, config.body_timeout, config.send_timeout) == (30, 120, 30)
    config = load("--http", ":8000", "--module", "m", "--http-timeout", "15")
    assert (config.header_timeout, config.body_timeout, config.send_timeout) == (15, 15, 15)
    assert load("--http", ":8000", "--module", "m").send_timeout == 60


# --- uWSGI habits found missing by a review (each failed before) ---

def test_ini_files_are_read_in_the_order_given(tmp_path):
    """As uWSGI: `--ini a.ini b.ini` and `--ini a.ini --ini b.ini` read a, then b (b's settings win)."""
    a = write(tmp_path / "a.ini", BASE + "processes = 2\n")
    b = write(tmp_path / "b.ini", "[uwsgi]\nprocesses = 3\n")
    assert load("--ini", a, b).processes == 3
    assert load("--ini", a, "--ini", b).processes == 3
    assert load(b, "--ini", a).processes == 2


def test_placeholders_hold_across_files_and_from_the_command_line(tmp_path):
    base = write(tmp_path / "base.ini", "[uwsgi]\nset-placeholder = app_dir=/srv/app\nhttp = 127.0.0.1:8000\n")
    site = write(tmp_path / "site.ini", "[uwsgi]\nstrict = true\nchdir = %(app_dir)\nmodule = %(name).wsgi\n")
    config = load(base, site, "--set", "name=mysite")
    assert (config.chdir, config.module) == ("/srv/app", "mysite.wsgi")
    assert load(base, site, "-S", "name=other").module == "other.wsgi"


def test_set_sets_the_option_it_names_as_well_as_the_placeholder(tmp_path):
    """uWSGI's --set/-S/`set` is "set a placeholder or an option": `--set processes=2` runs 2 workers (it set only
    the placeholder); set-placeholder stays a placeholder only, and a name that is no option is a placeholder."""
    config = load("--set", "http=127.0.0.1:8000", "-S", "processes=2", "--set", "site=x", "--module", "app")
    assert (config.http, config.processes) == (["127.0.0.1:8000"], 2)
    ini = write(tmp_path / "app.ini", BASE + "set = threads=4\nset = env=FROM_SET=1\nset-placeholder = processes=7\n"
                                             "set = site=mysite\nchdir = /srv/%(site)\n")
    config = load(ini)
    assert (config.threads, config.env, config.processes, config.chdir) == (4, ["FROM_SET=1"], 1, "/srv/mysite")
    bad = write(tmp_path / "bad.ini", BASE + "set = processes=many\n")
    with pytest.raises(ConfigError, match=r"bad.ini:4: option 'processes': expected"):
        load(bad)


def test_uwsgi_environment_variables_are_options(tmp_path):
    """UWSGI_PROCESSES=4 as uWSGI reads it (containers set options this way); ini files and flags win."""
    ini = write(tmp_path / "app.ini", BASE + "threads = 2\n")
    environ = {"UWSGI_PROCESSES": "4", "UWSGI_THREADS": "8", "UWSGI_HARAKIRI": "30", "PATH": "/usr/bin"}
    config = load_config(parse_argv([str(ini)]), warn=print, environ=environ)
    assert (config.processes, config.threads, config.harakiri) == (4, 2, 30)
    config = load_config(parse_argv(["--http", ":8000", "--module", "app"]), warn=print,
                         environ={"UWSGI_INI": str(ini)})
    assert config.threads == 2
    with pytest.raises(ConfigError, match="environment variable UWSGI_PROCESSES: option 'processes': expected"):
        load_config(parse_argv([str(ini)]), environ={"UWSGI_PROCESSES": "many"})


def test_uwsgis_short_flags():
    config = load("--http", ":8000", "-w", "app", "-M", "-p4", "-L", "-t", "30", "-R", "1000", "-T", "-z", "5")
    assert (config.master, config.processes, config.disable_logging, config.harakiri, config.max_requests,
            config.socket_timeout) == (True, 4, True, 30, 1000, 5)
    assert parse_argv(["-h"]).actions == {"help": True}


def test_protocol_chooses_what_socket_speaks(tmp_path):
    config = load(write(tmp_path / "app.ini", "[uwsgi]\nsocket = 127.0.0.1:8000\nprotocol = http\nmodule = app\n"))
    assert (config.socket, config.http) == ([], ["127.0.0.1:8000"])
    with pytest.raises(ConfigError, match="option 'protocol': expected uwsgi, http or fastcgi"):
        load("--socket", ":8000", "--module", "app", "--protocol", "spdy")


@pytest.mark.parametrize("line", ["https = :443,cert.pem,key.pem", "route = ^/old redirect:/new", "spooler = /tmp/s",
                                  "mule = tasks.py"])
def test_uwsgi_options_that_would_change_what_is_served_are_startup_errors(tmp_path, line):
    """Ignored with a warning, the server would run, but not as configured (no TLS port, no redirect)."""
    ini = write(tmp_path / "app.ini", BASE + line + "\n")
    with pytest.raises(ConfigError, match=rf"app.ini:4: option '{line.split()[0]}': not supported: "):
        load(ini)


def test_other_config_formats_say_so():
    with pytest.raises(ConfigError, match="option '--yaml': not supported: wsgistack reads ini files and flags"):
        parse_argv(["--yaml", "uwsgi.yml"])


@pytest.mark.parametrize("flags, complaint", [
    (["--listen", "99999999999999999999"], "option '--listen': 99999999999999999999 is too large"),
    (["--max-fd", "3000000000"], "option '--max-fd': 3000000000 is too large"),
    (["--harakiri", "\u00b2"], "option '--harakiri': expected a non-negative integer"),
    (["--limit-post", str(2**63)], f"option '--limit-post': {2**63} is too large (at most {2**63 - 1})"),
    (["--log-maxsize", "1e12"], "option '--log-maxsize': expected a non-negative integer"),
])
def test_numbers_out_of_range_are_config_errors(flags, complaint):
    with pytest.raises(ConfigError, match=re.escape(complaint)):
        load("--http", ":8000", "--module", "app", *flags)


def test_a_port_in_other_digits_is_a_config_error():
    result = run_cli("--http", "127.0.0.1:\u00b2", "--module", "app")
    assert result.returncode == 1 and "bad port in '127.0.0.1:\u00b2'" in result.stderr
    assert "Traceback" not in result.stderr


def test_control_commands_check_their_numbers(tmp_path):
    result = run_cli("--stop", tmp_path / "x.pid", "--reload-mercy", "abc")
    assert result.returncode == 1 and "option '--reload-mercy': expected a non-negative integer" in result.stderr


@pytest.mark.parametrize("key", ["attach-daemon", "exec-asap", "static-map", "pythonpath"])
def test_a_list_option_without_a_value_is_an_error(tmp_path, key):
    with pytest.raises(ConfigError, match=rf"app.ini:4: option '{key}': needs a value"):
        load(write(tmp_path / "app.ini", BASE + f"{key} =\n"))


# --- a differential review against uWSGI 2.0.31 (each failed before) ---

def test_ini_placeholders_see_the_environment_and_the_flags_before_the_file(tmp_path):
    """uWSGI reads its UWSGI_* variables, then argv in order, an --ini in place: `%(processes)` in a.ini sees
    `--processes 2` before it. A flag after the file still wins for the option itself, and one the files never
    set is seen once all is read."""
    ini = write(tmp_path / "a.ini", BASE + "env = P=%(processes)\nenv = H=%(harakiri)\nenv = W=%(workers)\n"
                                           "env = T=%(threads)\nenv = C=%(chdir)\n")
    argv = ["--processes", "2", "--workers", "5", "--chdir", "/x", "--ini", str(ini), "--processes", "3",
            "--threads", "4"]
    config = load_config(parse_argv(argv), warn=pytest.fail, environ={"UWSGI_HARAKIRI": "30"})
    assert config.env == ["P=2", "H=30", "W=5", "T=4", "C=/x"]
    assert (config.processes, config.chdir) == (3, "/x")
    short = write(tmp_path / "short.ini", BASE + "env = P=%(processes)\n")
    assert load("-p", "6", short).env == ["P=6"]         # a short flag sets its long name, as uWSGI's -p


def test_ini_placeholders_see_the_flags_between_files_after_the_first_file(tmp_path):
    first = write(tmp_path / "a.ini", BASE + "processes = 2\n")
    second = write(tmp_path / "b.ini", "[uwsgi]\nenv = P=%(processes)\n")
    assert load(first, second).env == ["P=2"]
    assert load(first, "--processes", "4", second).env == ["P=4"]


def test_a_placeholder_nothing_sets_is_kept_with_a_warning_naming_file_and_line(tmp_path):
    """uWSGI keeps an unknown %(name) as written, silently: a typo then runs as a literal path. A log format's
    %(method) is the access log's variable, no mistake."""
    ini = write(tmp_path / "a.ini", BASE + "env = X=%(nosuch)\nlogformat = %(method) %(uri)\n"
                                           "set-placeholder = dir=%(threads)/x\nthreads = 2\nchdir = %(dir)\n")
    warnings: list[str] = []
    config = load(ini, warnings=warnings)
    assert (config.env, config.logformat, config.chdir) == (["X=%(nosuch)"], "%(method) %(uri)", "%(threads)/x")
    assert warnings == [
        f"wsgistack: warning: {ini}:4: option 'env': %(nosuch): no such option or placeholder (kept as written)",
        f"wsgistack: warning: {ini}:6: option 'set-placeholder': %(threads): set only after this line "
        "(kept as written)"]


def test_pythonpath_glob_adds_every_match_sorted(tmp_path, monkeypatch):
    """uWSGI's pythonpath is a "directory (or glob)"; a glob matching nothing is kept, as a missing directory is."""
    for name in ("b", "a", "c"):
        (tmp_path / "lib" / name).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["/base"])
    config = load("--http", ":8000", "--module", "app", "--pythonpath", "lib/[ab]", "--pythonpath",
                  f"{tmp_path}/none/*", "--pythonpath", f"{tmp_path}/lib/c")
    prepare_import_path(config)
    lib = tmp_path / "lib"
    assert sys.path == [str(tmp_path), str(lib / "a"), str(lib / "b"), f"{tmp_path}/none/*", str(lib / "c"), "/base"]


def test_byte_sizes_may_pass_2_gib():
    """A 3 GB upload limit is a byte size, not a count: off_t's range, not the kernel's int."""
    config = load("--http", ":8000", "--module", "app", "--limit-post", "3221225472", "--post-buffering",
                  str(2**40), "--log-maxsize", str(2**63 - 1), "--log-big", "00004294967296")
    assert (config.limit_post, config.post_buffering, config.log_maxsize, config.log_big) == (
        3221225472, 2**40, 2**63 - 1, 2**32)
    with pytest.raises(ConfigError, match=re.escape(f"option '--listen': {2**31} is too large (at most {2**31 - 1})")):
        load("--http", ":8000", "--module", "app", "--listen", str(2**31))


def test_buffer_size_raises_the_http_head_limits_not_set_themselves(tmp_path):
    """`buffer-size = 32768` is how uWSGI's users let a 20 kB cookie through (its http-socket takes it)."""
    def limits(config):
        return config.limit_request_line, config.limit_request_field_size, config.limit_request_head

    base = ["--http", ":8000", "--module", "app"]
    assert limits(load(*base)) == (8190, 8190, 32768)
    assert limits(load(*base, "--buffer-size", "1024")) == (8190, 8190, 32768)      # never lowered
    assert limits(load(*base, "-b", "65535")) == (65535, 65535, 65535)
    ini = write(tmp_path / "a.ini", BASE + "buffer-size = 32768\nlimit-request-field-size = 10000\n")
    assert limits(load(ini)) == (32768, 10000, 32768)
    assert limits(load(ini, "--limit-request-head", "0")) == (32768, 10000, 0)       # 0: no limit, as given


@pytest.mark.parametrize("flag", ["--log-master", "--threaded-logger", "--so-keepalive", "--http-auto-chunked",
                                  "--close-on-exec", "--log-reopen", "--memory-report"])
def test_harmless_uwsgi_options_of_production_inis_are_accepted_as_flags(flag):
    load("--http", ":8000", "--module", "app", flag, "--post-buffering-bufsize", "65536", "--strict")


@pytest.mark.parametrize("name, reason, what_to_do", [
    ("master-fifo", "uWSGI's master FIFO is not built in", "(SIGHUP reloads, SIGTERM stops, SIGTTIN/SIGTTOU add or "
                    "remove a worker, SIGUSR1 logs their status), or run `wsgistack --reload PIDFILE`"),
    ("http-websockets", "WebSockets are not supported", "send the WebSocket path to an ASGI server"),
])
def test_uwsgi_options_we_cannot_honour_are_refused_with_what_to_do(tmp_path, name, reason, what_to_do):
    with pytest.raises(ConfigError, match=re.escape(f"app.ini:4: option '{name}': not supported: {reason}")) as error:
        load(write(tmp_path / "app.ini", BASE + f"{name} = /tmp/fifo\n"))
    assert what_to_do in str(error.value)
    with pytest.raises(ConfigError, match=re.escape(f"option '--{name}': not supported: {reason}")):
        parse_argv([f"--{name}"])


def test_uwsgi_variants_of_daemonize_pidfile_and_logto_are_the_same_options(tmp_path):
    """An init script's `daemonize2`/`pidfile2` must not leave the server in the foreground without a pidfile."""
    config = load("--http", ":8000", "--module", "app", "--daemonize2", "/var/log/a.log", "--pidfile2", "/run/a.pid",
                  "--logto2", "/var/log/b.log", "--touch-chain-reload", "/srv/reload")
    assert (config.daemonize, config.pidfile, config.logto, config.touch_reload) == (
        "/var/log/a.log", "/run/a.pid", "/var/log/b.log", ["/srv/reload"])
    for key in ("safe-pidfile", "safe-pidfile2"):
        assert load(write(tmp_path / "a.ini", BASE + f"{key} = /run/{key}.pid\n")).pidfile == f"/run/{key}.pid"


def test_pyargv_sets_the_apps_sys_argv(tmp_path, monkeypatch):
    """As uWSGI's: the program's name, then the value split at spaces and tabs, without quoting."""
    app = write(tmp_path / "argv_app.py", "import sys\n\ndef application(environ, start_response):\n    pass\n\n"
                                          "application.argv = list(sys.argv)\n")
    monkeypatch.setattr(sys, "argv", ["/usr/bin/wsgistack", "--ini", "x.ini"])
    config = load("--http", ":8000", "--wsgi-file", app, "--pyargv", "one  two\tthree 'a b'")
    assert load_app(config).argv == ["/usr/bin/wsgistack", "one", "two", "three", "'a", "b'"]
    monkeypatch.setattr(sys, "argv", ["/usr/bin/wsgistack", "--ini", "x.ini"])      # each worker is a fresh fork
    assert load_app(load("--http", ":8000", "--wsgi-file", app)).argv == ["/usr/bin/wsgistack", "--ini", "x.ini"]


def test_uwsgi_spellings_of_our_options_in_production_inis(tmp_path):
    """Names from uWSGI's option table that real configs use: each sets our option (they were warned about as
    unknown and dropped: the socket stayed uwsgi, the static directory went to the app, the socket kept the umask's
    mode), and `-l` on the command line."""
    ini = write(tmp_path / "a.ini", "[uwsgi]\nsocket = 127.0.0.1:8000\nsocket-protocol = http\nmodule = app\n"
                                    f"static-check = {tmp_path}\nlogger-req = file:{tmp_path}/req.log\nchmod = 660\n")
    config = load(ini, "-l", "128")
    assert (config.http, config.socket, config.check_static, config.req_logger, config.chmod_socket,
            config.listen) == (["127.0.0.1:8000"], [], [str(tmp_path)], [f"file:{tmp_path}/req.log"], "660", 128)


def test_config_logic_as_flags_is_a_clear_error():
    with pytest.raises(ConfigError, match=re.escape("option '--if-env': not supported: uWSGI's configuration logic")):
        load("--http", ":8000", "--module", "app", "--if-env", "X")
