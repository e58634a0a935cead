"""Reads uWSGI-style ini files into an ordered list of entries (key, value, file, line).

Lives here: sections, comments, `ini =` includes, and $(ENV) / %(placeholder) / %-magic expansion.
Not here: what an option means, its type, or whether a repeat appends or overrides (see model.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from wsgistack.config.errors import ConfigError

DEFAULT_SECTION = "uwsgi"
FALLBACK_SECTION = "wsgistack"
MAX_INCLUDE_DEPTH = 16

# A `#` or `;` after whitespace starts a comment (`socket = :3031   # public`); glued to text it is
# data (`env = A=b#c`). uWSGI has no inline comments, but configs copied from blogs rely on them.
_INLINE_COMMENT = re.compile(r"\s[#;]")
# All three expansions are found in one left-to-right scan, so text that came out of an expansion
# (an environment variable, an earlier value) is never expanded a second time.
_PLACEHOLDER = re.compile(r"%\(([^)]*)\)")
_EXPANSION = re.compile(r"\$\((?P<env>[^)]*)\)|%\((?P<placeholder>[^)]*)\)|%(?P<magic>.)")
_ROOT_FILE_MAGIC = "pdsnecx"   # their upper-case forms name the top-level file, not the current one


@dataclass(frozen=True)
class IniEntry:
    key: str      # option name as written, whitespace-trimmed (e.g. "wsgi-file")
    value: str    # after comment stripping, trimming and expansion; a bare key gives "true"
    file: str     # absolute path of the file the entry came from (an included file names itself)
    line: int     # 1-based line number


class _Site(NamedTuple):
    """Where to point an error about a whole file: the `ini =` line that asked for it, if any."""
    file: str
    line: int | None = None
    option: str | None = None


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
      %(name)           the value of entry `name` (the last one if repeated; included files count).
                        A later entry works too (uWSGI resolves placeholders once the whole config is
                        read); an unknown name stays as written, as in uWSGI (`logformat = %(method)`).
      %p %s %d %n %e %c  the current file's absolute path, name, directory with trailing slash,
                        name without extension, extension, and its directory's name.
      %x                section identifier, `file.ini:section`; %0..%9 the directory's components.
      %P %S %D %N %E %C %X  the same for the top-level file (for templates that are included).
      %%                a literal %. Any other %-letter (%h, %v, %k, ...) is left as written.

    Includes: `ini = other.ini[:section]` (relative to the including file; `:section` alone means
    this file) inserts that file's entries at that point; the `ini` line itself is not returned.
    Cycles, and nesting deeper than 16, are errors.

    Every error is a ConfigError naming file and line (a top-level file that is missing, or lacks
    the section, has no line to name).
    """
    path, section = _split_spec(spec)
    if not path:
        raise ConfigError(f"no file name in {spec!r}")
    path = os.path.abspath(path)
    reader = _Reader(os.environ if environ is None else environ)
    reader.read_file(path, section, chain=(), site=_Site(path))
    return reader.resolve_forward_placeholders()


class _Reader:
    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.entries: list[IniEntry] = []
        self.root_magic: dict[str, str] | None = None
        self.unresolved: set[int] = set()     # indexes of entries with a %(name) not known when read

    def read_file(self, path: str, section: str | None, chain: tuple[tuple[str, str], ...], site: _Site) -> None:
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

        for number, text in sections[section]:
            key, value = _parse_entry(text, path, number)
            value = self._expand(value, key, path, number, magic)
            if key == "ini":
                self._include(value, path, number, (*chain, link))
            else:
                self.entries.append(IniEntry(key, value, path, number))

    def _include(self, spec: str, path: str, number: int, chain: tuple[tuple[str, str], ...]) -> None:
        target, section = _split_spec(spec)
        target = os.path.abspath(os.path.join(os.path.dirname(path), target)) if target else path
        self.read_file(target, section, chain, _Site(path, number, "ini"))

    def _expand(self, value: str, key: str, path: str, number: int, magic: dict[str, str]) -> str:
        def replace(match: re.Match[str]) -> str:
            if match["env"] is not None:
                return self._environment_variable(match["env"], key, path, number)
            if match["placeholder"] is not None:
                return self._placeholder(match["placeholder"], key, path, number)
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

    def _placeholder(self, name: str, key: str, path: str, number: int) -> str:
        for entry in reversed(self.entries):
            if entry.key == name:
                return entry.value
        self.unresolved.add(len(self.entries))     # the entry being read; resolved once all is read
        return f"%({name})"

    def resolve_forward_placeholders(self) -> list[IniEntry]:
        last = {entry.key: entry.value for entry in self.entries}

        def replace(match: re.Match[str]) -> str:
            return last.get(match[1], match[0])

        for index in self.unresolved:
            entry = self.entries[index]
            self.entries[index] = IniEntry(entry.key, _PLACEHOLDER.sub(replace, entry.value), entry.file,
                                           entry.line)
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
    return magic
