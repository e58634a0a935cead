"""uWSGI's configuration logic and placeholder math, for the ini reader (ini.py).

Logic (uWSGI's "ConfigLogic"): a block opened by `if-env = VAR`, `if-exists = PATH`, `for = a b c`, ...
and closed by `endif =` / `endfor =` holds lines that apply only when its condition holds, or once per value of
a `for`, each with %(_) standing for the condition's value (the variable's value, the path found, the
item). Blocks do not nest, as in uWSGI. A line of a block whose condition fails is not even expanded: an
`if-env = SMTPD_PORT` block may use $(SMTPD_PORT).

Math: `%(%k + 1)`, `%(workers * 2)`: placeholders, magic variables and integers, operators `+ - * /` applied
left to right (uWSGI's pipeline, not precedence), `++` and `--` on the result so far; two items with no
operator between them are joined as text.
"""

from __future__ import annotations

import glob
import os
import re
import socket
from collections.abc import Callable

from wsgistack.config.errors import ConfigError

BLOCK_ENDS = frozenset(("endif", "end-if", "endfor", "end-for", "end"))
MAX_FOR_TIMES = 65536     # for-times beyond this is a typo, not a loop anyone means


def _env(argument: str, reader) -> str | None:
    name, equals, wanted = argument.partition("=")
    value = reader.environ.get(name)
    return None if value is None or (equals and value != wanted) else value


def _opt(argument: str, reader) -> str | None:
    name, equals, wanted = argument.partition("=")
    value = reader.placeholder(name)
    return None if value is None or (equals and value != wanted) else value


def _path_test(test: Callable[[str], bool]) -> Callable[[str, object], str | None]:
    return lambda argument, reader: argument if test(argument) else None


def _hostname(argument: str, reader) -> str | None:
    return argument if socket.gethostname() == argument else None


def _hostname_match(argument: str, reader) -> str | None:
    try:
        return argument if re.search(argument, socket.gethostname()) else None
    except re.error as exc:
        raise ValueError(f"not a regular expression ({exc})") from None


def _reload(argument: str, reader) -> str | None:
    return argument if reader.reloading else None


def _plugin(argument: str, reader) -> str | None:
    return argument if argument.startswith("python") else None     # the only plugin, built in


CONDITIONS: dict[str, Callable[[str, object], str | None]] = {
    **dict.fromkeys(("if-env", "ifenv"), _env),
    "if-opt": _opt,
    **dict.fromkeys(("if-exists", "ifexists"), _path_test(os.path.exists)),
    "if-file": _path_test(os.path.isfile),
    **dict.fromkeys(("if-dir", "ifdir", "if-directory"), _path_test(os.path.isdir)),
    "if-hostname": _hostname,
    "if-hostname-match": _hostname_match,
    "if-reload": _reload,
    **dict.fromkeys(("if-plugin", "ifplugin"), _plugin),
}
NEGATED = {"if-not-env": "if-env", "if-not-opt": "if-opt", "if-not-exists": "if-exists", "if-not-file": "if-file",
           "if-not-dir": "if-dir", "if-not-hostname": "if-hostname", "if-not-hostname-match": "if-hostname-match",
           "if-not-reload": "if-reload", "if-not-plugin": "if-plugin"}


def _glob(pattern: str) -> list[str]:
    # as glob(3) with GLOB_MARK | GLOB_NOCHECK: directories end with "/", no match gives the pattern itself
    found = sorted(path + "/" if os.path.isdir(path) and not path.endswith("/") else path
                   for path in glob.glob(pattern))
    return found or [pattern]


def _times(count: str) -> list[str]:
    try:
        number = int(count)
    except ValueError:
        raise ValueError(f"expected a number, got {count!r}") from None
    if number > MAX_FOR_TIMES:
        raise ValueError(f"{number} is more than {MAX_FOR_TIMES}")
    return [str(n) for n in range(1, number + 1)]


def _lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.rstrip("\r\n") for line in handle if line.strip()]
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None


LOOPS: dict[str, Callable[[str], list[str]]] = {
    "for": str.split, "for-glob": _glob, "for-times": _times, "for-readline": _lines,
}
BLOCK_STARTS = frozenset((*CONDITIONS, *NEGATED, *LOOPS))


def block_contexts(key: str, argument: str, reader) -> list[str]:
    """The values of %(_) a block's lines are applied with: one per item of a loop; for a condition, its value
    if it holds, none if not. Raises ValueError for an argument the block cannot use."""
    if key in LOOPS:
        return LOOPS[key](argument)
    if key in NEGATED:
        return [] if CONDITIONS[NEGATED[key]](argument, reader) is not None else [argument]
    value = CONDITIONS[key](argument, reader)
    return [] if value is None else [value]


_OPERATORS = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__, "/": None}


def evaluate(expression: str, resolve: Callable[[str], str | None], *, option: str, file: str,
             line: int) -> str | None:
    """The value of `%(expression)` with math in it (see the module's docstring); None when an item is neither a
    number nor known to `resolve` (yet). A mistake in it is a ConfigError naming the line."""
    try:
        return _evaluate(expression, resolve)
    except ValueError as exc:
        raise ConfigError(f"%({expression}): {exc}", option=option, file=file, line=line) from None


def _evaluate(expression: str, resolve: Callable[[str], str | None]) -> str | None:
    result: str | None = None
    operator: str | None = None
    for item in expression.split():
        if item in _OPERATORS:
            operator = item
            continue
        if item in ("++", "--"):
            result = str(_in_range(_integer(result) + (1 if item == "++" else -1)))
            continue
        value = resolve(item)
        if value is None:
            if not re.fullmatch(r"-?[0-9]+", item):
                return None
            value = item
        if result is None:
            result = value
        elif operator is None:
            result += value                   # no operator: joined as text, as uWSGI's
        else:
            result = str(_in_range(_apply(operator, _integer(result), _integer(value))))
        operator = None
    return result if result is not None else ""


def _in_range(number: int) -> int:
    """uWSGI computes in 64 bits: a result past that is no value anyone means."""
    if not -2 ** 63 <= number < 2 ** 63:
        raise ValueError("the result is out of the 64-bit range")
    return number


def _integer(text: str | None) -> int:
    try:
        return int(text or "")
    except ValueError:
        raise ValueError(f"math needs integers, got {text!r}") from None


def _apply(operator: str, left: int, right: int) -> int:
    if operator != "/":
        return _OPERATORS[operator](left, right)
    if right == 0:
        raise ValueError("division by zero")
    quotient = abs(left) // abs(right)       # C's division, as uWSGI's: truncated toward zero
    return quotient if (left >= 0) == (right > 0) else -quotient
