"""Reads uWSGI-style ini files into an ordered list of entries (key, value, file, line).

Lives here: sections, comments, `ini =` includes, and $(ENV) / %(placeholder) / %-magic expansion;
uWSGI's if-*/for blocks and placeholder math are logic.py's, applied here.
Not here: what an option means, its type, or whether a repeat appends or overrides (see model.py).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from wsgistack.config.errors import ConfigError
from wsgistack.config.logic import BLOCK_ENDS, BLOCK_STARTS, block_contexts, evaluate

DEFAULT_SECTION = "uwsgi"
FALLBACK_SECTION = "wsgistack"
MAX_INCLUDE_DEPTH = 16

# A `#` or `;` after whitespace starts a comment (`socket = :3031   # public`); glued to text it is
# data (`env = A=b#c`). uWSGI has no inline comments, but configs copied from blogs rely on them.
_INLINE_COMMENT = re.compile(r"\s[#;]")
# All three expansions are found in one left-to-right scan, so text that came out of an expansion
# (an environment variable, an earlier value) is never expanded a second time.
# A placeholder may hold a block's %(_) (`%(base + %(_))`: math on a loop's item, as uWSGI allows).
_PLACEHOLDER = re.compile(r"%\(((?:%\(_\)|[^)])*)\)")
_EXPANSION = re.compile(r"\$\((?P<env>[^)]*)\)|%\((?P<placeholder>(?:%\(_\)|[^)])*)\)|@\((?P<file>[^)]*)\)"
                        r"|%(?P<magic>.)")
# Keys that set a placeholder for the lines and files after them, not an option.
_PLACEHOLDER_KEYS = ("set-placeholder", "set-ph", "set")
# Keys whose %(name) are mostly the access log's own variables (%(method), %(uri)): one left as written is no mistake.
_LOG_FORMAT_KEYS = ("logformat", "log-format")
_ROOT_FILE_MAGIC = "pdsnecx"   # their upper-case forms name the top-level file, not the current one


@dataclass(frozen=True)
class IniEntry:
    key: str      # option name as written, whitespace-trimmed (e.g. "wsgi-file")
    value: str    # after comment stripping, trimming and expansion; a bare key gives "true"
    file: str     # absolute path of the file the entry came from (an included file names itself)
    line: int     # 1-based line number


class KnownSetting(NamedTuple):
    """An option set outside the ini files (a flag, a UWSGI_* variable): a %(name) after it sees it, as uWSGI's."""
    name: str
    value: str


class _Unresolved(NamedTuple):
    """A line with a %(name) not known when it was read: the entry to complete once all is read (None: a line that
    is no entry, used at once), the names, and where."""
    index: int | None
    names: tuple[str, ...]
    key: str
    file: str
    line: int


class _Site(NamedTuple):
    """Where to point an error about a whole file: the `ini =` line that asked for it, if any."""
    file: str
    line: int | None = None
    option: str | None = None


def read_ini_files(sources: list[str | KnownSetting], placeholders: list[str] = (), *,
                   environ: Mapping[str, str] | None = None, warn: Callable[[str], None] | None = None,
                   reloading: bool = False) -> list[list[IniEntry]]:
    """Each file's entries (see read_ini), read in order by one reader: a placeholder set in a file holds in
    the files after it, as in uWSGI; `placeholders` (NAME=VALUE, from -S/--set) hold in all of them.

    `sources` are the ini files (FILE[:section]) in reading order, among the options set outside them (flags,
    UWSGI_* variables) in their places: a %(name) sees those before it as earlier entries, those after it once
    all is read. A %(name) that nothing sets is left as written and, but in a log format, given to `warn`.
    `reloading`: what `if-reload` blocks test (the master reads the files again for a reload)."""
    reader = _Reader(os.environ if environ is None else environ, reloading)
    for text in placeholders:
        reader.set_placeholder(text, "set-placeholder", None, None)
    per_file = []
    for source in sources:
        if isinstance(source, KnownSetting):
            reader.values[source.name] = source.value
            continue
        start = len(reader.entries)
        reader.read_root(source)
        per_file.append(range(start, len(reader.entries)))
    entries = reader.resolve_forward_placeholders(warn)
    return [entries[span.start:span.stop] for span in per_file]


def read_ini(spec: str, *, environ: Mapping[str, str] | None = None) -> list[IniEntry]:
    """Read `path` or `path:section` and return the section's entries in file order.

    Sections: the default is [uwsgi], or [wsgistack] when the file has no [uwsgi]. Lines before
    the first header belong to no section and are ignored, as in uWSGI. Only the chosen section's
    lines are checked, so an ini shared with other tools (e.g. paste.deploy) may hold anything
    elsewhere; a section may appear in several blocks, which are read in order.

    Lines: `;` or `#` starts a comment line, and also an inline comment when whitespace precedes
    it. Keys and values are trimmed; `key=value` needs no spaces; a bare `key` means "true";
    `key =` means "". There is no quoting. Keys are kept as written: uWSGI matches option names
    exactly, so `wsgi_file` is not `wsgi-file`. Files are UTF-8; a leading BOM is ignored.

    Repeats: every entry is returned, in order; whether a repeated option appends (socket) or
    the last one wins (processes) is the option table's decision.

    Expansion, in values only, in one scan (expanded text is never re-expanded):
      $(VAR)            environment variable; unset is an error. $(VAR:-default) also replaces an
                        empty one, $(VAR-default) only an unset one (uWSGI's fallback syntax).
      %(name)           the value of entry `name` (the last one if repeated; included files and the
                        files read before count), or of a `set-placeholder = name=value` (also
                        `set-ph`, and -S/--set on the command line). A later entry works too (uWSGI
                        resolves placeholders once the whole config is read); an unknown name stays as
                        written, as in uWSGI (`logformat = %(method)`), with a warning (see
                        read_ini_files) but in a log format.
      @(path)           the content of a file (a trailing newline removed; relative to the current
                        directory, as in uWSGI): a secret from /run/secrets, say. Missing: an error.
      %p %s %d %n %e %c  the current file's absolute path, name, directory with trailing slash,
                        name without extension, extension, and its directory's name.
      %x                section identifier, `file.ini:section`; %0..%9 the directory's components.
      %P %S %D %N %E %C %X  the same for the top-level file (for templates that are included).
      %h %k %t %T       the host name, the number of CPUs, the time (s, and µs) at startup;
      %u %U %g %G       the user's id and name, the group's id and name; %V wsgistack's version.
      %%                a literal %. Any other %-letter is left as written, as in uWSGI.

    Logic and math, as uWSGI's (see logic.py): `if-env = VAR` ... `endif =` (also if-not-env, if-opt,
    if-exists, if-file, if-dir, if-hostname, if-reload and their if-not forms), `for = a b c` ... `endfor =`
    (also for-glob, for-times, for-readline), with %(_) the condition's value or the item; `%(%k * 2 + 1)`.

    Includes: `ini = other.ini[:section]` (relative to the including file; `:section` alone means
    this file) inserts that file's entries at that point; the `ini` line itself is not returned.
    Cycles, and nesting deeper than 16, are errors.

    Every error is a ConfigError naming file and line (a top-level file that is missing, or lacks
    the section, has no line to name).
    """
    return read_ini_files([spec], environ=environ)[0]


class _Reader:
    def __init__(self, environ: Mapping[str, str], reloading: bool = False):
        self.environ = environ
        self.reloading = reloading
        self.warnings: list[str] = []
        self.entries: list[IniEntry] = []
        self.values: dict[str, str] = {}          # the last value of each option read so far, files' or not
        self.placeholders: dict[str, str] = {}    # set-placeholder's
        self.root_magic: dict[str, str] | None = None
        self.unresolved: list[_Unresolved] = []
        self.pending: set[str] = set()            # options whose last value waits for a later %(name)

    def read_root(self, spec: str) -> None:
        path, section = _split_spec(spec)
        if not path:
            raise ConfigError(f"no file name in {spec!r}")
        path = os.path.abspath(path)
        self.root_magic = None                # %P, %D, ...: this top-level file's
        self.read_file(path, section, chain=(), site=_Site(path))

    def set_placeholder(self, text: str, key: str, path: str | None, number: int | None) -> None:
        name, equals, value = text.partition("=")
        if not equals or not name.strip():
            raise ConfigError(f"expected NAME=VALUE, got {text!r}", option=key, file=path, line=number)
        self.placeholders[name.strip()] = value.strip()

    def read_file(self, path: str, section: str | None, chain: tuple[tuple[str, str], ...], site: _Site,
                  in_block: bool = False) -> None:
        """`in_block`: the file is included from a line of a block (which its own blocks cannot nest in)."""
        sections = _split_sections(_load(path, site), path)
        section = _choose_section(sections, section, path, site)
        link = (os.path.realpath(path), section)
        if link in chain:
            cycle = " -> ".join(f"{file}:{name}" for file, name in (*chain, link))
            raise ConfigError(f"include cycle: {cycle}", option=site.option, file=site.file, line=site.line)
        if len(chain) > MAX_INCLUDE_DEPTH:
            raise ConfigError(f"includes nested more than {MAX_INCLUDE_DEPTH} deep", option=site.option,
                              file=site.file, line=site.line)

        magic = _magic_variables(path, section)
        if self.root_magic is None:
            self.root_magic = magic
        magic.update({letter.upper(): self.root_magic[letter] for letter in _ROOT_FILE_MAGIC})

        block: tuple[str, int, list[str]] | None = None     # the open if-*/for block: key, line, its %(_) values
        for number, text in sections[section]:
            key, value = _parse_entry(text, path, number)
            if key in BLOCK_ENDS:
                if block is None:
                    self.warnings.append(str(ConfigError("no if-* or for block is open here (ignored)", option=key,
                                                         file=path, line=number)))
                block = None
                continue
            if key in BLOCK_STARTS:
                if block is not None:
                    raise ConfigError(f"blocks do not nest: the {block[0]} block of line {block[1]} is still open "
                                      f"(close it with endif/endfor first)", option=key, file=path, line=number)
                if in_block:
                    raise ConfigError("blocks do not nest: this file is included from a line of a block",
                                      option=key, file=path, line=number)
                block = (key, number, self._block_contexts(key, value, path, number, magic))
                continue
            for context in (None,) if block is None else block[2]:
                self._read_entry(key, value, path, number, magic, context, (*chain, link),
                                 in_block or block is not None)
        if block is not None:
            self.warnings.append(str(ConfigError("not closed by endif/endfor: the block ends with the file",
                                                 option=block[0], file=path, line=block[1])))

    def _read_entry(self, key: str, value: str, path: str, number: int, magic: dict[str, str], context: str | None,
                    chain: tuple[tuple[str, str], ...], in_block: bool) -> None:
        missing: list[str] = []
        value = self._expand(value, key, path, number, magic, missing, context)
        # uWSGI's `set` is an option too when NAME is one (set-placeholder is not)
        is_entry = key != "ini" and (key not in _PLACEHOLDER_KEYS or key == "set")
        if missing:
            index = len(self.entries) if is_entry else None
            self.unresolved.append(_Unresolved(index, tuple(dict.fromkeys(missing)), key, path, number))
        if key == "ini":
            self._include(value, path, number, chain, in_block)
        elif key in _PLACEHOLDER_KEYS:
            self.set_placeholder(value, key, path, number)
        if is_entry:
            self.entries.append(IniEntry(key, value, path, number))
            self.values[key] = value
            if missing:
                self.pending.add(key)          # a %(key) read before it is complete waits for it too
            else:
                self.pending.discard(key)

    def _block_contexts(self, key: str, value: str, path: str, number: int, magic: dict[str, str]) -> list[str]:
        missing: list[str] = []
        argument = self._expand(value, key, path, number, magic, missing, None)
        if missing:          # a block is decided where it stands: a later setting cannot change that
            raise ConfigError(f"%({missing[0]}) is not set before this line", option=key, file=path, line=number)
        try:
            return block_contexts(key, argument, self)
        except ValueError as exc:
            raise ConfigError(str(exc), option=key, file=path, line=number) from None

    def _include(self, spec: str, path: str, number: int, chain: tuple[tuple[str, str], ...], in_block: bool) -> None:
        target, section = _split_spec(spec)
        target = os.path.abspath(os.path.join(os.path.dirname(path), target)) if target else path
        self.read_file(target, section, chain, _Site(path, number, "ini"), in_block)

    def _expand(self, value: str, key: str, path: str, number: int, magic: dict[str, str],
                missing: list[str], context: str | None = None) -> str:
        """`value` expanded (`context`: what %(_) stands for in a logic block); the names of the %(name) not known
        yet are added to `missing`."""
        def replace(match: re.Match[str]) -> str:
            if match["env"] is not None:
                return self._environment_variable(match["env"], key, path, number)
            if match["placeholder"] is not None:
                name = match["placeholder"]
                if name == "_" and context is not None:
                    return context
                if _is_math(name):
                    # math: magic variables and %(_) now (they are this file's, this line's), names possibly
                    # once all is read
                    name = " ".join(context if item in ("%(_)", "_") and context is not None else
                                    magic.get(item[1:], item) if item[:1] == "%" and len(item) == 2 else item
                                    for item in name.split())
                    known = evaluate(name, self.placeholder, option=key, file=path, line=number)
                else:
                    known = self.placeholder(name)
                if known is None:
                    missing.append(name)
                    return f"%({name})"
                return known
            if match["file"] is not None:
                return _file_content(match["file"], key, path, number)
            return magic.get(match["magic"], match[0])

        return _EXPANSION.sub(replace, value)

    def _environment_variable(self, reference: str, key: str, path: str, number: int) -> str:
        fallback = ":-" if ":-" in reference else "-" if "-" in reference else ""
        name, _, default = reference.partition(fallback) if fallback else (reference, "", "")
        value = self.environ.get(name)
        if (fallback == ":-" and not value) or (fallback == "-" and value is None):
            value = default
        if value is None:
            raise ConfigError(f"environment variable {name!r} is not set", option=key, file=path, line=number)
        return value

    def placeholder(self, name: str) -> str | None:
        if name in self.placeholders:
            return self.placeholders[name]
        if name in self.pending:
            return None
        return self.values.get(name)

    def resolve_forward_placeholders(self, warn: Callable[[str], None] | None = None) -> list[IniEntry]:
        """Complete the entries whose %(name) came later (in a later line or file, or a flag after the files), and
        warn about the names nothing sets."""
        final = {name: value for name, value in self.values.items() if name not in self.pending} | self.placeholders

        def late(name: str, item: _Unresolved) -> str | None:
            if _is_math(name):
                return evaluate(name, final.get, option=item.key, file=item.file, line=item.line)
            return final.get(name)

        def complete(item: _Unresolved) -> None:
            entry = self.entries[item.index]
            value = _PLACEHOLDER.sub(lambda match: (late(match[1], item) if match[1] in item.names else None)
                                     or match[0], entry.value)
            self.entries[item.index] = IniEntry(entry.key, value, entry.file, entry.line)
            if last.get(entry.key) == item.index and entry.key not in self.placeholders:
                final[entry.key] = value       # its last value: a %(key) waiting for it sees it (chains)

        # In passes: an entry waiting for another that waits too (`c = %(a)`, `a = %(b)`, `b = 5`) is completed
        # once that one is, whatever their order; what never can be is completed as far as known, below.
        last = {entry.key: index for index, entry in enumerate(self.entries)}
        waiting = [item for item in self.unresolved if item.index is not None]
        while waiting:
            still = []
            for item in waiting:
                if all(late(name, item) is not None for name in item.names):
                    complete(item)
                else:
                    still.append(item)
            if len(still) == len(waiting):
                break
            waiting = still
        for item in waiting:
            complete(item)
        for item in self.unresolved:
            if warn is None or item.key in _LOG_FORMAT_KEYS:
                continue
            for name in item.names:
                if late(name, item) is not None and item.index is not None:
                    continue            # completed above
                # a line that is no entry (ini =, set-placeholder =) was used as it was read
                problem = "set only after this line" if late(name, item) is not None else \
                    "no such option or placeholder"
                error = ConfigError(f"%({name}): {problem} (kept as written)", option=item.key, file=item.file,
                                    line=item.line)
                warn(f"wsgistack: warning: {error}")
        if warn is not None:
            for warning in self.warnings:
                warn(f"wsgistack: warning: {warning}")
        return self.entries


def _split_spec(spec: str) -> tuple[str, str | None]:
    """`path:section` -> (path, section); no section, or an empty one, means the default (None)."""
    path, colon, section = spec.rpartition(":")
    if not colon:
        return spec, None
    return path, section or None


def _load(path: str, site: _Site) -> str:
    what = "config file" if site.file == path else f"included file {path}"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}", option=site.option,
                          file=site.file, line=site.line) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError("not valid UTF-8", file=path, line=data.count(b"\n", 0, exc.start) + 1) from None


def _split_sections(text: str, path: str) -> dict[str | None, list[tuple[int, str]]]:
    """Section name -> its (line number, text) lines with comments removed; None holds the lines
    before the first header."""
    sections: dict[str | None, list[tuple[int, str]]] = {None: []}
    current: str | None = None
    # split("\n"), not splitlines(): form feeds and U+2028 must not shift line numbers.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        comment = _INLINE_COMMENT.search(line)
        if comment:
            line = line[:comment.start()].rstrip()
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError(f"malformed section header {line!r}", file=path, line=number)
            current = line[1:-1].strip()
            sections.setdefault(current, [])
        else:
            sections[current].append((number, line))
    return sections


def _choose_section(sections: dict[str | None, list[tuple[int, str]]], wanted: str | None,
                    path: str, site: _Site) -> str:
    in_file = "" if site.file == path else f" in {path}"
    if wanted is not None:
        if wanted in sections:
            return wanted
        raise ConfigError(f"no [{wanted}] section{in_file}", option=site.option, file=site.file, line=site.line)
    for name in (DEFAULT_SECTION, FALLBACK_SECTION):
        if name in sections:
            return name
    hint = f" (line {sections[None][0][0]} comes before any section header)" if sections[None] else ""
    raise ConfigError(f"no [{DEFAULT_SECTION}] or [{FALLBACK_SECTION}] section{in_file}{hint}",
                      option=site.option, file=site.file, line=site.line)


def _parse_entry(line: str, path: str, number: int) -> tuple[str, str]:
    key, has_value, value = line.partition("=")
    key = key.strip()
    if not key or any(char.isspace() for char in key):
        # `socket 0.0.0.0:3031` (nginx habit) would otherwise become an option named after the address.
        raise ConfigError(f"expected 'option = value', got {line!r}", file=path, line=number)
    return key, value.strip() if has_value else "true"


def _magic_variables(path: str, section: str) -> dict[str, str]:
    """uWSGI's file-related magic variables for `path` (see 'Magic variables' in its docs)."""
    directory, filename = os.path.split(path)
    stem, dot, extension = filename.rpartition(".")
    if not dot:
        stem, extension = filename, ""
    components = [part for part in directory.split("/") if part]
    magic = {"%": "%", "p": path, "s": filename, "d": directory.rstrip("/") + "/", "n": stem,
             "e": extension, "c": os.path.basename(directory), "x": f"{filename}:{section}"}
    magic.update(zip("0123456789", components + [""] * 10))
    magic.update(_PROCESS_MAGIC)
    return magic


def _process_magic() -> dict[str, str]:
    """The magic variables of the machine and the process, fixed at startup as in uWSGI."""
    from wsgistack import __version__

    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    now = time.time()
    return {"h": socket.gethostname(), "k": str(os.cpu_count() or 1), "t": str(int(now)),
            "T": str(int(now * 1_000_000)), "u": str(uid), "U": user, "g": str(gid), "G": group,
            "V": __version__}


_PROCESS_MAGIC = _process_magic()


def _file_content(name: str, key: str, path: str, number: int) -> str:
    try:
        with open(name, encoding="utf-8") as handle:
            content = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read @({name}): {exc.strerror}", option=key, file=path, line=number) from None
    except UnicodeDecodeError:
        raise ConfigError(f"@({name}) is not UTF-8 text", option=key, file=path, line=number) from None
    return content[:-1] if content.endswith("\n") else content


def _is_math(name: str) -> bool:
    """uWSGI takes a placeholder name with a space in it (`%(a + 1)`, `%( a)`) as math."""
    return " " in name or "\t" in name
