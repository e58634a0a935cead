"""Tests for the ini reader: one test per rule, plus the two uwsgi.ini files from the seed article."""

from __future__ import annotations

import os

import pytest

from wsgistack.config.errors import ConfigError
from wsgistack.config.ini import IniEntry, KnownSetting, read_ini, read_ini_files

from seed_configs import SEED_ANNOTATED, SEED_PLAIN

SEED_SETTINGS = [
    ("socket", "0.0.0.0:3031"),
    ("chdir", "/code/mmcsite"),
    ("wsgi-file", "/code/mmcsite/wsgi.py"),
    ("processes", "5"),
    ("threads", "30"),
    ("master", "true"),
    ("daemonize", "/code/mmcsite/uwsgi.log"),
    ("module", "mmcsite.wsgi"),
    ("pidfile", "/code/mmcsite/uwsgi.pid"),
    ("chmod-socket", "666"),
    ("enable-threads", "true"),
]


def write(directory, name: str, text: str) -> str:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def pairs(entries: list[IniEntry]) -> list[tuple[str, str]]:
    return [(e.key, e.value) for e in entries]


def read_text(tmp_path, text: str, *, environ=None, name: str = "app.ini") -> list[IniEntry]:
    return read_ini(write(tmp_path, name, text), environ=environ or {})


def error_from(spec: str, *, environ=None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        read_ini(spec, environ=environ or {})
    return info.value


def assert_names(error: ConfigError, file: str, line: int | None) -> None:
    assert (error.file, error.line) == (file, line)
    assert str(error).startswith(f"{file}:{line}: " if line else f"{file}: ")


# --- the seed files ---------------------------------------------------------------------------

def test_seed_plain_file(tmp_path):
    entries = read_text(tmp_path, SEED_PLAIN)
    assert pairs(entries) == SEED_SETTINGS
    assert [e.line for e in entries] == list(range(2, 13))


def test_seed_annotated_file_gives_the_same_entries_as_the_plain_one(tmp_path):
    plain = read_text(tmp_path, SEED_PLAIN, name="plain.ini")
    annotated = read_text(tmp_path, SEED_ANNOTATED, name="annotated.ini")
    assert pairs(annotated) == pairs(plain) == SEED_SETTINGS


# --- files and sections ----------------------------------------------------------------------

def test_entry_names_absolute_file_and_one_based_line(tmp_path, monkeypatch):
    write(tmp_path, "app.ini", "\n[uwsgi]\n\nmaster = true\n")
    monkeypatch.chdir(tmp_path)
    assert read_ini("app.ini", environ={}) == [IniEntry("master", "true", str(tmp_path / "app.ini"), 4)]


def test_only_the_requested_section_is_returned(tmp_path):
    path = write(tmp_path, "app.ini", "[uwsgi]\nsocket = :1\n[app1]\nsocket = :2\n[uwsgi]\nmaster = true\n")
    assert pairs(read_ini(path, environ={})) == [("socket", ":1"), ("master", "true")]
    assert pairs(read_ini(f"{path}:app1", environ={})) == [("socket", ":2")]
    assert pairs(read_ini(f"{path}:", environ={})) == [("socket", ":1"), ("master", "true")]


def test_lines_before_the_first_header_are_ignored(tmp_path):
    assert pairs(read_text(tmp_path, "stray = 1\n= not even valid\n[uwsgi]\nmaster = true\n")) == [("master", "true")]


def test_other_sections_are_not_checked(tmp_path):
    text = "[uwsgi]\nmaster = true\n[app:main]\n= belongs to another tool\n"
    assert pairs(read_text(tmp_path, text)) == [("master", "true")]


def test_default_section_falls_back_to_wsgistack(tmp_path):
    assert pairs(read_text(tmp_path, "[other]\na = 1\n[wsgistack]\nmaster = true\n")) == [("master", "true")]


def test_uwsgi_section_is_preferred_over_wsgistack(tmp_path):
    assert pairs(read_text(tmp_path, "[wsgistack]\na = 1\n[uwsgi]\nb = 2\n")) == [("b", "2")]


def test_empty_section_gives_no_entries(tmp_path):
    assert read_text(tmp_path, "[uwsgi]\n; nothing yet\n") == []


def test_missing_file_is_an_error_naming_the_file(tmp_path):
    path = str(tmp_path / "nope.ini")
    error = error_from(path)
    assert_names(error, path, None)
    assert "cannot read config file" in str(error)


def test_missing_requested_section_is_an_error_naming_the_file(tmp_path):
    path = write(tmp_path, "app.ini", "[uwsgi]\nmaster = true\n")
    error = error_from(f"{path}:app9")
    assert_names(error, path, None)
    assert "no [app9] section" in str(error)


def test_missing_default_sections_is_an_error_that_points_at_stray_lines(tmp_path):
    path = write(tmp_path, "app.ini", "# forgot the header\nsocket = :3031\n")
    error = error_from(path)
    assert_names(error, path, None)
    assert "no [uwsgi] or [wsgistack] section (line 2 comes before any section header)" in str(error)


# --- comments and syntax ---------------------------------------------------------------------

def test_whole_line_comments(tmp_path):
    text = "; top\n[uwsgi]\n# hash\n   ; indented semicolon\n\t# indented hash\nmaster = true\n"
    assert pairs(read_text(tmp_path, text)) == [("master", "true")]


def test_inline_comment_after_whitespace_ends_the_value(tmp_path):
    text = "[uwsgi]\na = 1 # hash\nb = 2 ; semicolon\nc = 3\t# after a tab\nd=4;x\n"
    assert pairs(read_text(tmp_path, text)) == [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4;x")]


def test_hash_or_semicolon_glued_to_text_is_part_of_the_value(tmp_path):
    text = "[uwsgi]\nenv = A=b#c\nroute = ^/a;b$ last:\n"
    assert pairs(read_text(tmp_path, text)) == [("env", "A=b#c"), ("route", "^/a;b$ last:")]


def test_inline_comment_after_a_section_header(tmp_path):
    assert pairs(read_text(tmp_path, "[uwsgi]   # main\nmaster = true\n")) == [("master", "true")]


def test_spaces_are_trimmed_around_keys_and_values(tmp_path):
    text = "[uwsgi]\n   socket   =   :3031   \nmodule=mmcsite.wsgi\nchmod-socket=666\nenv = A = b\n"
    assert pairs(read_text(tmp_path, text)) == [
        ("socket", ":3031"), ("module", "mmcsite.wsgi"), ("chmod-socket", "666"), ("env", "A = b")]


def test_bare_key_means_true(tmp_path):
    assert pairs(read_text(tmp_path, "[uwsgi]\nmaster\n  vacuum  \n")) == [("master", "true"), ("vacuum", "true")]


def test_empty_value_is_empty_string(tmp_path):
    assert pairs(read_text(tmp_path, "[uwsgi]\nmodule =\nchdir = # nothing\n")) == [("module", ""), ("chdir", "")]


def test_non_ascii_values_and_comments(tmp_path):
    text = "[uwsgi]\n# 中文注释\nprocname = 网站 # 进程名\n"
    assert pairs(read_text(tmp_path, text)) == [("procname", "网站")]


def test_byte_order_mark_is_ignored(tmp_path):
    path = tmp_path / "app.ini"
    path.write_bytes("\ufeff[uwsgi]\nmaster = true\n".encode("utf-8"))
    assert pairs(read_ini(str(path), environ={})) == [("master", "true")]


def test_invalid_utf8_is_an_error_at_its_line(tmp_path):
    path = tmp_path / "app.ini"
    path.write_bytes(b"[uwsgi]\nmaster = true\nprocname = caf\xe9\n")
    error = error_from(str(path))
    assert_names(error, str(path), 3)
    assert "not valid UTF-8" in str(error)


def test_windows_line_endings(tmp_path):
    path = tmp_path / "app.ini"
    path.write_bytes(b"[uwsgi]\r\nsocket = :3031\r\nmaster\r\n")
    assert pairs(read_ini(str(path), environ={})) == [("socket", ":3031"), ("master", "true")]


def test_repeated_keys_are_all_returned_in_order(tmp_path):
    text = "[uwsgi]\nsocket = :1\nprocesses = 2\nsocket = :2\nprocesses = 4\n"
    assert pairs(read_text(tmp_path, text)) == [("socket", ":1"), ("processes", "2"), ("socket", ":2"), ("processes", "4")]


def test_keys_are_kept_as_written(tmp_path):
    # uWSGI compares option names exactly: wsgi_file is not wsgi-file (it would be a placeholder).
    assert pairs(read_text(tmp_path, "[uwsgi]\nwsgi_file = app.py\n")) == [("wsgi_file", "app.py")]


@pytest.mark.parametrize("line", ["= value", "  =", "socket 0.0.0.0:3031"])
def test_line_without_an_option_name_is_an_error(tmp_path, line):
    path = write(tmp_path, "app.ini", f"[uwsgi]\nmaster = true\n{line}\n")
    error = error_from(path)
    assert_names(error, path, 3)
    assert "expected 'option = value'" in str(error)


def test_malformed_section_header_is_an_error(tmp_path):
    path = write(tmp_path, "app.ini", "[uwsgi]\nmaster = true\n[app\n")
    error = error_from(path)
    assert_names(error, path, 3)
    assert "malformed section header" in str(error)


# --- environment variables -------------------------------------------------------------------

def test_environment_variable_is_expanded(tmp_path):
    entries = read_text(tmp_path, "[uwsgi]\nsocket = $(HOST):$(PORT)\n", environ={"HOST": "0.0.0.0", "PORT": "3031"})
    assert pairs(entries) == [("socket", "0.0.0.0:3031")]


def test_environ_defaults_to_the_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WSGISTACK_TEST_PORT", "8001")
    path = write(tmp_path, "app.ini", "[uwsgi]\nhttp = :$(WSGISTACK_TEST_PORT)\n")
    assert pairs(read_ini(path)) == [("http", ":8001")]


def test_missing_environment_variable_is_an_error(tmp_path):
    path = write(tmp_path, "app.ini", "[uwsgi]\n\nchdir = $(APP_HOME)/src\n")
    error = error_from(path)
    assert_names(error, path, 3)
    assert error.option == "chdir"
    assert "environment variable 'APP_HOME' is not set" in str(error)


def test_environment_fallback_colon_dash_covers_unset_and_empty(tmp_path):
    text = "[uwsgi]\na = $(UNSET:-8000)\nb = $(EMPTY:-8000)\nc = $(SET:-8000)\n"
    entries = read_text(tmp_path, text, environ={"EMPTY": "", "SET": "9000"})
    assert pairs(entries) == [("a", "8000"), ("b", "8000"), ("c", "9000")]


def test_environment_fallback_dash_covers_unset_only(tmp_path):
    text = "[uwsgi]\na = $(UNSET-8000)\nb = $(EMPTY-8000)\n"
    assert pairs(read_text(tmp_path, text, environ={"EMPTY": ""})) == [("a", "8000"), ("b", "")]


# --- placeholders ----------------------------------------------------------------------------

def test_placeholder_takes_an_earlier_value(tmp_path):
    text = "[uwsgi]\nbase = /srv/app\nchdir = %(base)/src\npidfile = %(chdir)/app.pid\n"
    assert pairs(read_text(tmp_path, text))[1:] == [("chdir", "/srv/app/src"), ("pidfile", "/srv/app/src/app.pid")]


def test_placeholder_of_a_repeated_key_takes_the_last_value(tmp_path):
    text = "[uwsgi]\nport = 1\nport = 2\nhttp = :%(port)\n"
    assert pairs(read_text(tmp_path, text))[-1] == ("http", ":2")


def test_unknown_placeholder_stays_as_written(tmp_path):
    # uWSGI's own logformat option relies on this: %(method) is not an option.
    text = "[uwsgi]\nlogformat = %(addr) %(method) %(uri)\n"
    assert pairs(read_text(tmp_path, text)) == [("logformat", "%(addr) %(method) %(uri)")]


def test_placeholder_defined_further_down_is_resolved(tmp_path):
    text = "[uwsgi]\nchdir = %(base)/src\nbase = /srv\n"
    assert pairs(read_text(tmp_path, text)) == [("chdir", "/srv/src"), ("base", "/srv")]


def test_placeholder_sees_entries_from_included_files(tmp_path):
    write(tmp_path, "base.ini", "[uwsgi]\nbase = /srv/app\n")
    text = "[uwsgi]\nini = base.ini\nchdir = %(base)\n"
    assert pairs(read_text(tmp_path, text)) == [("base", "/srv/app"), ("chdir", "/srv/app")]


def test_expanded_text_is_not_expanded_again(tmp_path):
    text = "[uwsgi]\nratio = 100%%\nlabel = %(ratio)d\nenv = X=$(RAW)\n"
    entries = read_text(tmp_path, text, environ={"RAW": "%d$(HOME)"})
    assert pairs(entries) == [("ratio", "100%"), ("label", "100%d"), ("env", "X=%d$(HOME)")]
    # nor when a placeholder of the same line is completed later
    text = "[uwsgi]\nbase = /srv\nenv = X=$(RAW) %(later)\nlater = 1\n"
    assert pairs(read_text(tmp_path, text, environ={"RAW": "%(base)"}))[1] == ("env", "X=%(base) 1")


def test_settings_from_outside_the_files_are_seen_in_their_place(tmp_path):
    """Flags and UWSGI_* variables, among the files in uWSGI's reading order: an earlier one is an earlier entry, a
    later one completes a %(name) once all is read; a name nothing sets is kept and warned about, but in a log
    format (the access log's %(method))."""
    first = write(tmp_path, "a.ini", "[uwsgi]\nx = %(p)\n")
    second = write(tmp_path, "b.ini", "[uwsgi]\ny = %(p) %(late) %(none)\nlogformat = %(method) %(none)\n")
    warnings: list[str] = []
    files = read_ini_files([KnownSetting("p", "1"), first, KnownSetting("p", "2"), second, KnownSetting("late", "3")],
                           environ={}, warn=warnings.append)
    assert [pairs(entries) for entries in files] == [[("x", "1")],
                                                     [("y", "2 3 %(none)"), ("logformat", "%(method) %(none)")]]
    assert warnings == [f"wsgistack: warning: {second}:2: option 'y': %(none): no such option or placeholder "
                        "(kept as written)"]


# --- magic variables -------------------------------------------------------------------------

def test_magic_d_is_the_directory_with_trailing_slash(tmp_path):
    entries = read_text(tmp_path, "[uwsgi]\nchdir = %d\nwsgi-file = %dwsgi.py\n", name="site.ini")
    assert pairs(entries) == [("chdir", f"{tmp_path}/"), ("wsgi-file", f"{tmp_path}/wsgi.py")]


def test_magic_n_is_the_file_name_without_extension(tmp_path):
    entries = read_text(tmp_path, "[uwsgi]\nsocket = /tmp/%n.sock\n", name="funnyapp.ini")
    assert pairs(entries) == [("socket", "/tmp/funnyapp.sock")]


def test_magic_percent_percent_is_a_literal_percent(tmp_path):
    assert pairs(read_text(tmp_path, "[uwsgi]\nformat = 100%% of %%d\n")) == [("format", "100% of %d")]


def test_magic_path_name_extension_directory_and_section(tmp_path):
    text = "[app1]\np = %p\ns = %s\ne = %e\nc = %c\nx = %x\n"
    path = write(tmp_path, "site.ini", text)
    entries = read_ini(f"{path}:app1", environ={})
    assert pairs(entries) == [("p", path), ("s", "site.ini"), ("e", "ini"), ("c", tmp_path.name),
                              ("x", "site.ini:app1")]


def test_magic_digits_are_directory_components(tmp_path):
    parts = [part for part in str(tmp_path).split("/") if part]
    entries = read_text(tmp_path, "[uwsgi]\nfirst = %0\nlast = %" + str(len(parts) - 1) + "\n")
    assert pairs(entries) == [("first", parts[0]), ("last", parts[-1])]


def test_magic_of_the_machine_and_the_process(tmp_path):
    """uWSGI's %h %k %u %U %g %G %t %V, fixed at startup; a letter uWSGI does not know is left as written."""
    import grp
    import pwd
    import socket

    entries = read_text(tmp_path, "[uwsgi]\nprocname = %h-%k-%u-%U-%g-%G\nstarted = %t\nv = %V\n"
                                  "unknown = %v %y\ntrailing = 50%\n")
    values = dict(pairs(entries))
    uid, gid = os.getuid(), os.getgid()
    assert values["procname"] == (f"{socket.gethostname()}-{os.cpu_count()}-{uid}-{pwd.getpwuid(uid).pw_name}-"
                                  f"{gid}-{grp.getgrgid(gid).gr_name}")
    assert values["started"].isdigit() and values["v"] == __import__("wsgistack").__version__
    assert (values["unknown"], values["trailing"]) == ("%v %y", "50%")


def test_at_file_reads_a_files_content(tmp_path, monkeypatch):
    """@(path): a secret from a file (Docker's /run/secrets), its trailing newline dropped; relative to the
    current directory, as in uWSGI. A missing file is an error naming the line."""
    write(tmp_path, "secret.txt", "s3cret\n")
    monkeypatch.chdir(tmp_path)
    entries = read_text(tmp_path, "[uwsgi]\nenv = SECRET_KEY=@(secret.txt)\n")
    assert pairs(entries) == [("env", "SECRET_KEY=s3cret")]
    write(tmp_path, "bad.ini", "[uwsgi]\nmodule = app\nenv = KEY=@(/nonexistent/secret)\n")
    error = error_from(os.path.join(tmp_path, "bad.ini"))
    assert_names(error, os.path.join(tmp_path, "bad.ini"), 3)
    assert "cannot read @(/nonexistent/secret)" in str(error)


def test_magic_in_an_included_file_refers_to_that_file(tmp_path):
    (tmp_path / "common").mkdir()
    write(tmp_path / "common", "base.ini", "[uwsgi]\nsocket = %d%n.sock\nlog = %D%N.log\n")
    entries = read_text(tmp_path, "[uwsgi]\nini = common/base.ini\n", name="site.ini")
    assert pairs(entries) == [("socket", f"{tmp_path}/common/base.sock"), ("log", f"{tmp_path}/site.log")]


# --- includes --------------------------------------------------------------------------------

def test_include_inserts_entries_at_that_point(tmp_path):
    # The example from uWSGI's "How uWSGI parses config files".
    write(tmp_path, "file2.ini", "[uwsgi]\nmaster = true\nmemory-report = true\nprocesses = 4\n")
    text = "[uwsgi]\nsocket = :3031\nini = file2.ini\nsocket = :3032\nchdir = /var/www\n"
    entries = read_text(tmp_path, text, name="file1.ini")
    assert pairs(entries) == [("socket", ":3031"), ("master", "true"), ("memory-report", "true"),
                              ("processes", "4"), ("socket", ":3032"), ("chdir", "/var/www")]
    assert (entries[1].file, entries[1].line) == (str(tmp_path / "file2.ini"), 2)
    assert (entries[4].file, entries[4].line) == (str(tmp_path / "file1.ini"), 4)


def test_include_path_is_relative_to_the_including_file(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", "base.ini", "[uwsgi]\nmaster = true\n")
    write(tmp_path / "conf", "site.ini", "[uwsgi]\nini = base.ini\n")
    monkeypatch.chdir(tmp_path)
    assert pairs(read_ini("conf/site.ini", environ={})) == [("master", "true")]


def test_include_with_a_section(tmp_path):
    write(tmp_path, "shared.ini", "[uwsgi]\na = 1\n[app2]\nb = 2\n")
    assert pairs(read_text(tmp_path, "[uwsgi]\nini = shared.ini:app2\n")) == [("b", "2")]


def test_include_of_a_section_of_the_same_file(tmp_path):
    text = "[uwsgi]\nini = :common\nsocket = :3031\n[common]\nmaster = true\n"
    assert pairs(read_text(tmp_path, text)) == [("master", "true"), ("socket", ":3031")]


def test_same_file_may_be_included_twice(tmp_path):
    write(tmp_path, "common.ini", "[uwsgi]\nmaster = true\n")
    text = "[uwsgi]\nini = common.ini\nini = common.ini\n"
    assert pairs(read_text(tmp_path, text)) == [("master", "true"), ("master", "true")]


def test_missing_included_file_is_an_error_at_the_include_line(tmp_path):
    path = write(tmp_path, "app.ini", "[uwsgi]\nmaster = true\nini = other.ini\n")
    error = error_from(path)
    assert_names(error, path, 3)
    assert f"cannot read included file {tmp_path / 'other.ini'}" in str(error)


def test_missing_section_in_an_included_file_is_an_error_at_the_include_line(tmp_path):
    write(tmp_path, "other.ini", "[uwsgi]\nmaster = true\n")
    path = write(tmp_path, "app.ini", "[uwsgi]\nini = other.ini:app9\n")
    error = error_from(path)
    assert_names(error, path, 2)
    assert f"no [app9] section in {tmp_path / 'other.ini'}" in str(error)


def test_error_inside_an_included_file_names_that_file(tmp_path):
    other = write(tmp_path, "other.ini", "[uwsgi]\n\n= oops\n")
    path = write(tmp_path, "app.ini", "[uwsgi]\nini = other.ini\n")
    assert_names(error_from(path), other, 3)


def test_include_cycle_is_an_error(tmp_path):
    write(tmp_path, "a.ini", "[uwsgi]\nini = b.ini\n")
    b = write(tmp_path, "b.ini", "[uwsgi]\nmaster = true\nini = a.ini\n")
    error = error_from(str(tmp_path / "a.ini"))
    assert_names(error, b, 3)
    assert "include cycle" in str(error)


def test_file_including_itself_is_an_error(tmp_path):
    path = write(tmp_path, "app.ini", "[uwsgi]\nini = %p\n")
    error = error_from(path)
    assert_names(error, path, 2)
    real = os.path.realpath(path)
    assert f"include cycle: {real}:uwsgi -> {real}:uwsgi" in str(error)


def test_includes_may_nest_16_deep_but_not_17(tmp_path):
    def chain(levels: int) -> str:
        write(tmp_path, f"level{levels}.ini", "[uwsgi]\nmaster = true\n")
        for level in range(levels):
            write(tmp_path, f"level{level}.ini", f"[uwsgi]\nini = level{level + 1}.ini\n")
        return str(tmp_path / "level0.ini")

    assert pairs(read_ini(chain(16), environ={})) == [("master", "true")]
    error = error_from(chain(17))
    assert_names(error, str(tmp_path / "level16.ini"), 2)
    assert "nested more than 16 deep" in str(error)


def test_include_line_itself_is_not_returned(tmp_path):
    write(tmp_path, "empty.ini", "[uwsgi]\n")
    assert read_text(tmp_path, "[uwsgi]\nini = empty.ini\n") == []


def test_include_path_may_use_environment_and_magic(tmp_path):
    write(tmp_path, "prod.ini", "[uwsgi]\nprocesses = 8\n")
    entries = read_text(tmp_path, "[uwsgi]\nini = %d$(STAGE).ini\n", environ={"STAGE": "prod"})
    assert pairs(entries) == [("processes", "8")]


def test_relative_spec_is_made_absolute(tmp_path, monkeypatch):
    write(tmp_path, "app.ini", "[uwsgi]\nchdir = %d\n")
    monkeypatch.chdir(tmp_path)
    assert read_ini("app.ini:uwsgi", environ={})[0].value == f"{tmp_path}{os.sep}"


# --- uWSGI's configuration logic and placeholder math (logic.py) ---

HEALTHCHECKS_BLOCK = """[uwsgi]
module = hc.wsgi
if-env = SMTPD_PORT
attach-daemon = ./manage.py smtpd --port %(_)
endif =
if-env = EXPOSE_DEBUG_PORT
http-socket = :$(EXPOSE_DEBUG_PORT)
endif =
processes = 2
"""


def test_an_if_env_block_applies_only_when_the_variable_is_set_with_its_value_as_the_context(tmp_path):
    """healthchecks' docker/uwsgi.ini: with the variables unset, nothing of the blocks applies (not even their
    $(VAR), which would be an error); set, the lines apply with %(_) the value."""
    assert pairs(read_text(tmp_path, HEALTHCHECKS_BLOCK)) == [("module", "hc.wsgi"), ("processes", "2")]
    entries = read_text(tmp_path, HEALTHCHECKS_BLOCK, environ={"SMTPD_PORT": "2525", "EXPOSE_DEBUG_PORT": "8001"})
    assert pairs(entries) == [("module", "hc.wsgi"), ("attach-daemon", "./manage.py smtpd --port 2525"),
                              ("http-socket", ":8001"), ("processes", "2")]
    assert [e.line for e in entries] == [2, 4, 7, 9]


def test_if_env_with_a_value_and_the_negated_forms(tmp_path):
    text = """[uwsgi]
if-env = MODE=prod
processes = 8
endif =
if-not-env = MODE=prod
processes = 1
py-autoreload = 1
endif =
if-not-env = MISSING
env = MISSING_WAS=%(_)
end-if =
"""
    assert pairs(read_text(tmp_path, text, environ={"MODE": "prod"})) == [("processes", "8"),
                                                                        ("env", "MISSING_WAS=MISSING")]
    assert pairs(read_text(tmp_path, text, environ={"MODE": "dev"}))[:2] == [("processes", "1"), ("py-autoreload", "1")]


def test_path_conditions_and_if_opt(tmp_path):
    (tmp_path / "static").mkdir()
    (tmp_path / "local.ini").write_text("[uwsgi]\nharakiri = 30\n")
    text = f"""[uwsgi]
chdir = {tmp_path}
if-exists = %(chdir)/local.ini
ini = %(_)
endif =
if-file = {tmp_path}/static
static-map = /file=%(_)
endif =
if-dir = {tmp_path}/static
static-map = /static=%(_)
endif =
if-not-exists = {tmp_path}/maintenance
threads = 4
endif =
if-opt = harakiri
harakiri-was = %(_)
endif =
if-opt = threads=8
processes = 16
endif =
if-not-opt = processes
processes = 2
endif =
"""
    assert pairs(read_text(tmp_path, text)) == [
        ("chdir", str(tmp_path)), ("harakiri", "30"), ("static-map", f"/static={tmp_path}/static"), ("threads", "4"),
        ("harakiri-was", "30"), ("processes", "2")]


def test_for_loops_apply_each_line_once_per_item(tmp_path):
    (tmp_path / "b.py").touch()
    (tmp_path / "a.py").touch()
    (tmp_path / "ports").write_text("3031\n\n3032\n")
    text = f"""[uwsgi]
for = 8001  8002
http-socket = 127.0.0.1:%(_)
stats-was = %(_)
endfor =
for-glob = {tmp_path}/*.py
touch-reload = %(_)
endfor =
for-times = 3
cron = -%(_) -1 -1 -1 -1 true
endfor =
for-readline = {tmp_path}/ports
socket = :%(_)
endfor =
"""
    assert pairs(read_text(tmp_path, text)) == [
        ("http-socket", "127.0.0.1:8001"), ("http-socket", "127.0.0.1:8002"), ("stats-was", "8001"),
        ("stats-was", "8002"), ("touch-reload", f"{tmp_path}/a.py"), ("touch-reload", f"{tmp_path}/b.py"),
        ("cron", "-1 -1 -1 -1 -1 true"), ("cron", "-2 -1 -1 -1 -1 true"), ("cron", "-3 -1 -1 -1 -1 true"),
        ("socket", ":3031"), ("socket", ":3032")]


def test_if_reload_is_true_only_when_the_master_reads_the_files_again(tmp_path):
    path = write(tmp_path, "app.ini", "[uwsgi]\nif-not-reload =\nprint = first start\nendif =\n"
                                      "if-reload =\nprint = reloaded\nendif =\n")
    assert pairs(read_ini_files([path], environ={})[0]) == [("print", "first start")]
    assert pairs(read_ini_files([path], environ={}, reloading=True)[0]) == [("print", "reloaded")]


@pytest.mark.parametrize("text, line, message", [
    ("[uwsgi]\nif-env = A\nif-env = B\nendif =\n", 3, "option 'if-env': blocks do not nest: the if-env block of "
                                                      "line 2 is still open"),
    ("[uwsgi]\nfor-times = many\nendfor =\n", 2, "option 'for-times': expected a number, got 'many'"),
    ("[uwsgi]\nfor-times = 100000000\nendfor =\n", 2, "option 'for-times': 100000000 is more than 65536"),
    ("[uwsgi]\nfor-readline = /nonexistent/list\nendfor =\n", 2, "cannot read /nonexistent/list"),
    ("[uwsgi]\nif-exists = %(later)/x\nendif =\nlater = 1\n", 2, "option 'if-exists': %(later) is not set before "
                                                                 "this line"),
    ("[uwsgi]\nprocesses = %(4 / 0)\n", 2, "option 'processes': %(4 / 0): division by zero"),
    ("[uwsgi]\nname = web\nprocesses = %(name + 1)\n", 3, "%(name + 1): math needs integers, got 'web'"),
])
def test_logic_and_math_mistakes_are_errors_naming_the_line(tmp_path, text, line, message):
    path = write(tmp_path, "app.ini", text)
    with pytest.raises(ConfigError) as caught:
        read_ini_files([path], environ={})
    assert str(caught.value).startswith(f"{path}:{line}: ") and message in str(caught.value), str(caught.value)


def test_an_unclosed_block_ends_with_its_file_and_a_stray_end_is_ignored_with_warnings(tmp_path):
    path = write(tmp_path, "app.ini", "[uwsgi]\nendif =\nif-env = NOPE\nprocesses = 4\n")
    warnings: list[str] = []
    assert pairs(read_ini_files([path], environ={}, warn=warnings.append)[0]) == []
    assert warnings == [f"wsgistack: warning: {path}:2: option 'endif': no if-* or for block is open here (ignored)",
                        f"wsgistack: warning: {path}:3: option 'if-env': not closed by endif/endfor: the block ends "
                        f"with the file"]


def test_placeholder_math_runs_left_to_right_with_magic_variables_and_later_names(tmp_path):
    cpus = str(os.cpu_count() or 1)
    text = """[uwsgi]
workers = %(%k + 1)
threads = %(%k * 2 + 1)
total = %(foo + bar + 3 * 2)
foo = 17
bar = 30
next = %(foo ++)
joined = %(foo bar --)
down = %(0 - 7 / 2)
"""
    assert pairs(read_text(tmp_path, text)) == [
        ("workers", str(int(cpus) + 1)), ("threads", str(int(cpus) * 2 + 1)), ("total", "100"), ("foo", "17"),
        ("bar", "30"), ("next", "18"), ("joined", "1729"), ("down", "-3")]


def test_placeholders_waiting_for_later_ones_are_completed_in_chains(tmp_path):
    """`c = %(a)` where `a = %(b)` and b comes last: c kept `%(b)` as written, and math on it was an error."""
    text = "[uwsgi]\na = %(b)\nc = %(a)\nd = %(a + 1)\nchdir = /srv\nwsgi-file = %(chdir)/app.py\n" \
           "touch-reload = %(wsgi-file)\nb = 5\n"
    warnings: list[str] = []
    entries = read_ini_files([write(tmp_path, "app.ini", text)], environ={}, warn=warnings.append)[0]
    assert pairs(entries) == [("a", "5"), ("c", "5"), ("d", "6"), ("chdir", "/srv"), ("wsgi-file", "/srv/app.py"),
                              ("touch-reload", "/srv/app.py"), ("b", "5")]
    assert warnings == []


def test_math_on_a_blocks_item_and_names_with_spaces(tmp_path):
    text = "[uwsgi]\nbase = 3030\nprocesses = 2\nfor-times = 2\nenv = A%(_)=%(base + %(_))\nenv = B%(_)=%(_ + 1)\n" \
           "endfor =\nx = %( processes)\ny = %(processes )\n"
    assert pairs(read_text(tmp_path, text)) == [
        ("base", "3030"), ("processes", "2"), ("env", "A1=3031"), ("env", "A2=3032"), ("env", "B1=2"),
        ("env", "B2=3"), ("x", "2"), ("y", "2")]


def test_a_block_in_a_file_included_from_a_block_is_an_error_not_a_product(tmp_path):
    """uWSGI refuses it; here it multiplied (65536 x 65536 entries, memory without end)."""
    write(tmp_path, "inner.ini", "[uwsgi]\nfor-times = 65536\nenv = X=1\nendfor =\n")
    path = write(tmp_path, "app.ini", "[uwsgi]\nfor-times = 65536\nini = inner.ini\nendfor =\n")
    with pytest.raises(ConfigError) as caught:
        read_ini_files([path], environ={})
    assert str(caught.value) == (f"{tmp_path}/inner.ini:2: option 'for-times': blocks do not nest: this file is "
                                 "included from a line of a block")


def test_math_out_of_64_bits_and_a_glob_of_directories(tmp_path):
    path = write(tmp_path, "big.ini", "[uwsgi]\nset-placeholder = big=" + "9" * 18 + "\nx = %(big * big)\n")
    with pytest.raises(ConfigError, match=r"big\.ini:3: option 'x': %\(big \* big\): the result is out of the "
                                          r"64-bit range"):
        read_ini_files([path], environ={})
    (tmp_path / "g" / "a").mkdir(parents=True)
    text = f"[uwsgi]\nfor-glob = {tmp_path}/g/*/\nstatic-map = /%(_)\nendfor =\n"
    assert pairs(read_text(tmp_path, text)) == [("static-map", f"/{tmp_path}/g/a/")]


def test_many_entries_waiting_for_a_later_placeholder_complete_in_one_pass(tmp_path):
    """65536 loop lines waiting for `later`: completing them compared each with the others (quadratic: minutes)."""
    text = "[uwsgi]\nfor-times = 65536\nenv = X%(_)=%(later)\nendfor =\nlater = 1\n"
    entries = read_text(tmp_path, text)
    assert len(entries) == 65537 and entries[0].value == "X1=1" and entries[65535].value == "X65536=1"
