"""Command-line flags, uWSGI style: `--name VALUE`, `--name=VALUE`, `-p 4`, bare boolean flags.

Only the grammar of argv lives here; names, types and help come from the option table.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from wsgistack.config.errors import ConfigError
from wsgistack.config.logic import BLOCK_ENDS, BLOCK_STARTS
from wsgistack.config.model import IGNORED_OPTIONS, OPTIONS, UNSUPPORTED_OPTIONS, OptionSpec

# Actions that are not settings: they make the command do something else than serve.
ACTIONS = {"help": False, "h": False, "version": False, "stop": True, "reload": True}


@dataclass
class Flag:
    spec: OptionSpec
    value: str | bool
    flag: str          # as typed, for error messages


@dataclass
class ParsedArgs:
    flags: list[Flag] = field(default_factory=list)
    ini_files: list[str] = field(default_factory=list)   # bare FILE.ini and --ini FILE, in the order given
    flags_before_ini: list[int] = field(default_factory=list)   # for each ini file, how many flags precede it
    actions: dict[str, str | bool] = field(default_factory=dict)

    def add_ini(self, spec: str) -> None:
        self.ini_files.append(spec)
        self.flags_before_ini.append(len(self.flags))


def parse_argv(argv: list[str]) -> ParsedArgs:
    parsed = ParsedArgs()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            if _is_ini(arg):
                parsed.add_ini(arg)
                continue
            raise ConfigError(f"unexpected argument {arg!r} (options start with --; ini files end in .ini)")
        name, has_inline, inline_value = arg.lstrip("-").partition("=")
        if _attached_short_value(arg, name, has_inline):      # -p4, as uWSGI's getopt takes it
            name, has_inline, inline_value = name[0], "=", name[1:]
        if name in ACTIONS:
            if ACTIONS[name]:
                value, i = _take_value(arg, name, has_inline, inline_value, argv, i)
                parsed.actions[name] = value
            else:
                parsed.actions["help" if name == "h" else name] = True
            continue
        if name in UNSUPPORTED_OPTIONS:
            raise ConfigError(f"not supported: {UNSUPPORTED_OPTIONS[name]}", option=arg.partition("=")[0])
        if name in IGNORED_OPTIONS:       # accepted for uWSGI compatibility, with or without a value
            if not has_inline and _has_value_next(argv, i):
                i += 1
            continue
        spec = OPTIONS.get(name) or OPTIONS.get(name.replace("_", "-"))
        if spec is None:
            raise ConfigError("unknown option (see wsgistack --help)", option=arg.partition("=")[0])
        if spec.bare is not None and not has_inline and not _has_value_next(argv, i):
            value = spec.bare
        elif spec.takes_value:
            value, i = _take_value(arg, name, has_inline, inline_value, argv, i)
        else:
            value = inline_value if has_inline else True
        if spec.name == "ini":
            parsed.add_ini(value)
            continue
        parsed.flags.append(Flag(spec, value, "--" + name if len(name) > 1 else "-" + name))
    return parsed


def _attached_short_value(arg: str, name: str, has_inline: str) -> bool:
    """`-p4`: a one-letter option that takes a value, with the value glued to it."""
    if arg.startswith("--") or has_inline or len(name) < 2 or name in OPTIONS or name in ACTIONS:
        return False
    spec = OPTIONS.get(name[0])
    return spec is not None and spec.takes_value


def _has_value_next(argv: list[str], i: int) -> bool:
    return i < len(argv) and not argv[i].startswith("-") and not _is_ini(argv[i])


def _is_ini(arg: str) -> bool:
    return arg.endswith(".ini") or ".ini:" in arg


def _take_value(arg: str, name: str, has_inline: str, inline_value: str,
                argv: list[str], i: int) -> tuple[str, int]:
    if has_inline:
        return inline_value, i
    if i >= len(argv):
        raise ConfigError("needs a value", option=arg)
    return argv[i], i + 1


BLOCK_KEYS = BLOCK_STARTS | BLOCK_ENDS


def format_help() -> str:
    lines = ["usage: wsgistack [FILE.ini] [--option VALUE ...]",
             "       wsgistack --stop PIDFILE | --reload PIDFILE", "",
             "Every option is also an ini key (in [uwsgi] or [wsgistack]) of the same name.", ""]
    seen = set()
    for spec in OPTIONS.values():
        if spec.name in seen:
            continue
        seen.add(spec.name)
        names = ", ".join(("--" if len(n) > 1 else "-") + n for n in (spec.name, *spec.aliases))
        value = f" {spec.metavar}" if spec.takes_value else ""
        default = "" if spec.default in ("", [], False) else f" (default: {spec.default})"
        lines.append(f"  {names}{value}")
        lines.append(f"      {spec.help}{default}")
    lines += ["", "uWSGI options accepted and ignored (README says why):",
              *textwrap.wrap(", ".join(sorted(IGNORED_OPTIONS)), 100, initial_indent="  ", subsequent_indent="  ",
                            break_on_hyphens=False),
              "uWSGI options refused, as they would change what is served (README says what to do instead):",
              *textwrap.wrap(", ".join(sorted(set(UNSUPPORTED_OPTIONS) - BLOCK_KEYS)), 100, initial_indent="  ",
                             subsequent_indent="  ", break_on_hyphens=False),
              "uWSGI's configuration logic, read in ini files only:",
              *textwrap.wrap(", ".join(sorted(BLOCK_KEYS)), 100, initial_indent="  ", subsequent_indent="  ",
                             break_on_hyphens=False)]
    lines += ["", "  --stop PIDFILE     gracefully stop the server whose master wrote PIDFILE, and wait",
              "  --reload PIDFILE   gracefully reload it (fresh app code, no request lost), and wait",
              "  --version          print the version", "  --help             this text"]
    return "\n".join(lines)
