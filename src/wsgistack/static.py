"""Static files in front of the app: uWSGI's --static-map, --static-map2, --check-static, --static-index,
--static-expires* and --static-gzip*.

A request whose path falls under a mapping is answered from the file system when the file is there, and goes
to the app when it is not (as uWSGI does, so an app's own routes under the same prefix still work). The answer
is a small WSGI callable run by the same Exchange as the app's (wsgi.py): sendfile over HTTP and uwsgi, STDOUT
records over FastCGI, HEAD, keep-alive and the access log behave alike. It runs where the request was read (an
open() and an fstat(), as nginx does them): on the event-loop thread, or on the app thread that accepted a uwsgi
connection itself; it never waits for an app thread.

Paths as nginx sees them: dot segments are resolved and repeated slashes merged before matching; a path that
climbs above / is answered 400, a NUL 400. Symlinks inside a mapped directory are followed (nginx's default;
uWSGI refuses those that leave the directory). Conditional and range requests as RFC 9110: If-Match,
If-Unmodified-Since (412, first), If-None-Match, If-Modified-Since (304), one byte range (206, 416), If-Range;
several ranges get the whole file (200).
The --static-expires* rules add Expires (as uWSGI) and Cache-Control: max-age (as nginx's `expires`). They are
tried in uWSGI's order (static-expires on the file's path, -path-info, -uri, -type; each in the order given) and
the first that matches decides, where uWSGI would send one Expires header per kind of rule that matches.
The --static-gzip* rules name the files that may have precompressed twins (FILE.br, FILE.gz, as `compress`
tools and whitenoise write them): the twin the client accepts is answered with Content-Encoding, the original's
Content-Type and its own validators; Vary: Accept-Encoding goes with every answer for such a file.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
import time
from dataclasses import dataclass
from email.utils import formatdate, mktime_tz, parsedate_tz
from urllib.parse import quote

from wsgistack.compression import Compression, accepts, coding_weights
from wsgistack.config import Config, ConfigError
from wsgistack.paths import normalize_path
from wsgistack.wsgi import FileWrapper

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC    # O_NONBLOCK: a FIFO must not block the loop
# One byte range (RFC 9110 14.1.1); ASCII digits only, and few enough for int() (its limit is 4300 digits).
_ONE_RANGE = re.compile(r"bytes=([0-9]{0,20})-([0-9]{0,20})", re.IGNORECASE)
_NOT_FOUND = (FileNotFoundError, NotADirectoryError)


@dataclass(frozen=True)
class Mapping:
    mount: str          # "/static"; "" matches every path (--check-static)
    target: str         # absolute path of a directory, or of one file
    is_file: bool       # the mount is one URL, answered by this file
    whole_path: bool    # the request's whole path goes under target (--static-map2, --check-static)

    def candidate(self, path: str) -> str | None:
        """The file system path for request path `path`, or None when the mapping does not cover it."""
        mount = self.mount
        if self.is_file:
            return self.target if path == mount else None
        if mount and path != mount and not path.startswith(mount + "/"):
            return None
        rest = path if self.whole_path else path[len(mount):]
        if rest.isascii():
            return self.target + rest
        # PATH_INFO is latin-1 text standing for the request's bytes; the file system takes them as they came.
        return self.target + os.fsdecode(rest.encode("latin-1"))


@dataclass(frozen=True)
class Expiry:
    subject: str        # what the pattern is matched against: "file", "uri", "path_info" or "type"
    pattern: re.Pattern | str     # a regex; for "type", the content type itself
    seconds: int

    def applies(self, path: str, environ: dict, kind: str) -> bool:
        if self.subject == "type":
            return kind == self.pattern
        subject = path if self.subject == "file" else environ.get(_EXPIRY_KEYS[self.subject], "")
        return self.pattern.search(subject) is not None


_EXPIRY_KEYS = {"uri": "REQUEST_URI", "path_info": "PATH_INFO"}
_EXPIRY_OPTIONS = (("static-expires", "file"), ("static-expires-path-info", "path_info"),
                   ("static-expires-uri", "uri"), ("static-expires-type", "type"))


@dataclass(frozen=True)
class Precompressed:
    """Which static files may have precompressed twins (--static-gzip-all, -dir, -ext, --static-gzip)."""
    everything: bool
    directories: tuple[str, ...]       # absolute, ending in "/"
    suffixes: tuple[str, ...]
    patterns: tuple[re.Pattern, ...]

    def covers(self, path: str) -> bool:
        return (self.everything or path.startswith(self.directories) or path.endswith(self.suffixes)
                or any(pattern.search(path) for pattern in self.patterns))


# Content codings with a precompressed twin, in the order preferred (brotli is smaller), and the twin's suffix.
TWINS = {"br": ".br", "gzip": ".gz"}


class StaticFiles:
    def __init__(self, mappings: list[Mapping], index_files: list[str], expiries: tuple[Expiry, ...] = (),
                 precompressed: Precompressed | None = None, skipped_extensions: tuple[str, ...] = (),
                 compression: Compression | None = None):
        self.mappings = mappings
        self.index_files = index_files
        self.expiries = expiries
        self.precompressed = precompressed
        self.skipped_extensions = skipped_extensions     # --static-skip-ext: such files go to the app
        self.compression = compression                   # --gzip: small compressible answers are never ranged

    @classmethod
    def from_config(cls, config: Config, compression: Compression | None = None) -> StaticFiles | None:
        """The mappings of the config, checked (ConfigError naming the option, file and line); None when there
        are none. Relative paths are taken from the current directory (after --chdir)."""
        mappings = []
        for option, values, whole_path in (("static-map", config.static_map, False),
                                           ("static-map2", config.static_map2, True)):
            for value in values:
                mount, equals, target = value.partition("=")
                where = config.where(option, value)
                if not equals or not target:
                    raise ConfigError(f"expected MOUNTPOINT=PATH, got {value!r}", option=option, **where)
                if not mount.startswith("/"):
                    raise ConfigError(f"the mountpoint must start with '/', got {mount!r}", option=option, **where)
                mappings.append(_mapping(mount.rstrip("/"), target, whole_path, option, where))
        for directory in config.check_static:
            mapping = _mapping("", directory, True, "check-static", config.where("check-static", directory))
            if mapping.is_file:
                raise ConfigError(f"{directory!r} is not a directory", option="check-static",
                                  **config.where("check-static", directory))
            mappings.append(mapping)
        for name in config.static_index:
            if not name or "/" in name or name in (".", ".."):
                raise ConfigError(f"expected a file name like index.html, got {name!r}", option="static-index",
                                  **config.where("static-index", name))
        expiries = tuple(_expiry(option, subject, value, config.where(option, value))
                         for option, subject in _EXPIRY_OPTIONS
                         for value in getattr(config, option.replace("-", "_")))
        precompressed = _precompressed(config)
        if not mappings:
            return None
        mimetypes.init()             # reads the system's mime.types now, not on the first request
        return cls(mappings, list(config.static_index), expiries, precompressed, tuple(config.static_skip_ext),
                   compression)

    def responder(self, environ: dict):
        """A WSGI callable answering this request from a file, or None: the request goes to the app."""
        path = environ.get("PATH_INFO", "")
        if "/." in path or "//" in path:
            normalized = normalize_path(path)
            if normalized is None:
                if any(mapping.candidate(path) is not None for mapping in self.mappings):
                    return Answer(400, "the path climbs above /")
                return None
            path = normalized
        for mapping in self.mappings:
            candidate = mapping.candidate(path)
            if candidate is None:
                continue
            if "\0" in candidate:
                return Answer(400, "NUL in the path")
            if self.skipped_extensions and candidate.endswith(self.skipped_extensions):
                continue
            answer = self._open(candidate, path, environ)
            if answer is not None:
                return answer
        return None

    def _open(self, candidate: str, path: str, environ: dict):
        try:
            fd = os.open(candidate, _OPEN_FLAGS)
        except _NOT_FOUND:
            return None
        except PermissionError:
            return Answer(403, "permission denied")
        except OSError:              # a name too long, a symlink loop: nothing to serve here
            return None
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            return self._file(fd, info, candidate, environ)
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            return self._index(candidate, path, environ)
        return None                  # a FIFO, a device: not ours to serve

    def _index(self, directory: str, path: str, environ: dict):
        for name in self.index_files:
            try:
                fd = os.open(os.path.join(directory, name), _OPEN_FLAGS)
            except PermissionError:
                return Answer(403, "permission denied")     # as nginx: the index is there, but not readable
            except OSError:
                continue
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                os.close(fd)
                continue
            if not path.endswith("/"):
                # As nginx: relative links in the index page need the slash; the client asks again with it.
                os.close(fd)
                query = environ.get("QUERY_STRING")
                # the whole path: under a mount (nginx's SCRIPT_NAME) PATH_INFO is only the part after it
                full_path = environ.get("SCRIPT_NAME", "").rstrip("/") + path    # "/" + "/dir": no "//dir", a host
                location = quote(full_path.encode("latin-1")) + "/" + (f"?{query}" if query else "")
                return Redirect(location)
            return self._file(fd, info, os.path.join(directory, name), environ)
        return None

    def _file(self, fd: int, info: os.stat_result, path: str, environ: dict) -> StaticFile:
        """The open file, or the precompressed twin of it the client accepts."""
        if self.precompressed is None or not self.precompressed.covers(path):
            return StaticFile(fd, info, path, self.expiries, compression=self.compression)
        for encoding in accepted_twins(environ.get("HTTP_ACCEPT_ENCODING", "")):
            try:
                twin = os.open(path + TWINS[encoding], _OPEN_FLAGS)
            except OSError:
                continue
            twin_info = os.fstat(twin)
            if stat.S_ISREG(twin_info.st_mode):
                os.close(fd)
                return StaticFile(twin, twin_info, path, self.expiries, encoding, vary=True)
            os.close(twin)
        return StaticFile(fd, info, path, self.expiries, vary=True, compression=self.compression)


def _mapping(mount: str, target: str, whole_path: bool, option: str, where: dict) -> Mapping:
    path = os.path.abspath(target)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"cannot use {target!r}: {exc.strerror}", option=option, **where) from None
    is_file = stat.S_ISREG(info.st_mode)
    if not is_file and not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{target!r} is neither a directory nor a regular file", option=option, **where)
    return Mapping(mount, path, is_file, whole_path and not is_file)


def _expiry(option: str, subject: str, value: str, where: dict) -> Expiry:
    """"REGEX SECONDS" (the regex may hold spaces), or "TYPE=SECONDS" for static-expires-type."""
    if subject == "type":
        pattern, _, seconds = value.strip().rpartition("=")
        form = "TYPE=SECONDS"
    else:
        pattern, _, seconds = value.strip().rpartition(" ")
        pattern = pattern.rstrip()
        form = "REGEX SECONDS"
    if not pattern or not (seconds.isascii() and seconds.isdigit()):
        raise ConfigError(f"expected {form}, got {value!r}", option=option, **where)
    return Expiry(subject, pattern if subject == "type" else _compile(pattern, option, where), int(seconds))


def _compile(pattern: str, option: str, where: dict) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"invalid regular expression {pattern!r}: {exc}", option=option, **where) from None


def _precompressed(config: Config) -> Precompressed | None:
    if not (config.static_gzip_all or config.static_gzip_dir or config.static_gzip_ext or config.static_gzip):
        return None
    patterns = [_compile(value, "static-gzip", config.where("static-gzip", value)) for value in config.static_gzip]
    directories = tuple(os.path.abspath(directory).rstrip("/") + "/" for directory in config.static_gzip_dir)
    return Precompressed(config.static_gzip_all, directories, tuple(config.static_gzip_ext), tuple(patterns))


def accepted_twins(accept_encoding: str) -> list[str]:
    """The codings of TWINS the client takes, in TWINS' order."""
    weights = coding_weights(accept_encoding)
    return [coding for coding in TWINS if accepts(weights, coding)]


class Answer:
    """The server's own short answer (400, 403) to a request under a mapping."""

    def __init__(self, status: int, detail: str, headers: tuple = ()):
        self.status = status
        self.detail = detail
        self.headers = headers

    def __call__(self, environ, start_response):
        reason = _REASONS[self.status]
        body = f"{self.status} {reason}: {self.detail}\n".encode()
        start_response(f"{self.status} {reason}", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                                                   *self.headers])
        return [body]


class Redirect(Answer):
    def __init__(self, location: str):
        super().__init__(301, "see " + location, (("Location", location),))


_REASONS = {301: "Moved Permanently", 400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed",
            412: "Precondition Failed", 416: "Range Not Satisfiable"}
_VARY = (("Vary", "Accept-Encoding"),)     # for a file with twins: which ETag a 412 compared depends on it


class StaticFile:
    """One open regular file, answered with validators, conditionals and byte ranges."""

    def __init__(self, fd: int, info: os.stat_result, path: str, expiries: tuple[Expiry, ...],
                 encoding: str | None = None, vary: bool = False, compression: Compression | None = None):
        self.fd = fd
        self.info = info             # of what is sent: the file, or its precompressed twin
        self.path = path             # the file's path (its content type, the expiry rules)
        self.expiries = expiries
        self.encoding = encoding     # the twin's content coding
        self.vary = vary             # the answer depends on Accept-Encoding
        self.compression = compression   # --gzip: compresses small answers of the compressible types

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        if method != "GET" and method != "HEAD":
            os.close(self.fd)
            return Answer(405, "a static file answers GET and HEAD", (("Allow", "GET, HEAD"),))(environ,
                                                                                                 start_response)
        size = self.info.st_size
        etag, last_modified, kind = file_facts(self.path, self.info)
        if self.encoding is not None:      # another representation: never the same strong validator
            etag = f'{etag[:-1]}-{self.encoding}"'
        if precondition_failed(environ, etag, int(self.info.st_mtime)):
            os.close(self.fd)              # before If-None-Match and Range (RFC 9110 13.2.2), as nginx
            return Answer(412, "the file is not the version the request names", _VARY if self.vary else ())(
                environ, start_response)
        headers = [("Last-Modified", last_modified), ("ETag", etag)]
        if self.vary:
            headers.append(("Vary", "Accept-Encoding"))
        for expiry in self.expiries:       # a 304 carries them too: the client's copy is fresh that long again
            if expiry.applies(self.path, environ, kind):
                headers += [("Expires", formatdate(time.time() + expiry.seconds, usegmt=True)),
                            ("Cache-Control", f"max-age={expiry.seconds}")]
                break
        if not_modified(environ, etag, int(self.info.st_mtime)):
            os.close(self.fd)
            start_response("304 Not Modified", headers)
            return []
        headers += [("Content-Type", kind), ("Accept-Ranges", "bytes")]
        if self.encoding is not None:
            headers.append(("Content-Encoding", self.encoding))
        span = byte_range(environ, size, etag, last_modified)
        if span is not None and self._compressed(environ, kind, size):
            span = None                    # as nginx: a compressed answer is never ranged, the client gets it whole
        if span == UNSATISFIABLE:
            os.close(self.fd)
            return Answer(416, f"the file has {size} bytes", (("Content-Range", f"bytes */{size}"),))(
                environ, start_response)
        if span is None:
            start, length, status = 0, size, "200 OK"
        else:
            start, end = span
            length, status = end - start + 1, "206 Partial Content"
            headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        headers.append(("Content-Length", str(length)))
        if length <= SMALL_FILE:
            # Read at once and sent with the head in one write: cheaper than setting up sendfile for a
            # stylesheet (measured: bench/static_files.py).
            try:
                data = b"" if method == "HEAD" else os.pread(self.fd, length, start)
            finally:
                os.close(self.fd)
            start_response(status, headers)
            return [data]
        file = os.fdopen(self.fd, "rb")
        file.seek(start)
        start_response(status, headers)
        return FileWrapper(file, length=length)

    def _compressed(self, environ: dict, kind: str, size: int) -> bool:
        """Will --gzip compress the whole answer? (Only small files are: the larger go by sendfile, as they are.)"""
        compression = self.compression
        return (compression is not None and self.encoding is None and size <= SMALL_FILE
                and compression.wanted_by(environ)
                and compression.compressible("200 OK", [("Content-Type", kind)], size))


# Files up to this size are read and written with their head; larger ones go by sendfile.
SMALL_FILE = 65536
_facts: dict[tuple, tuple[str, str, str]] = {}     # (path, mtime_ns, size) -> (ETag, Last-Modified, type)
_MAX_FACTS = 4096


def file_facts(path: str, info: os.stat_result) -> tuple[str, str, str]:
    """ETag (nginx's form: mtime and size in hex), Last-Modified and content type of this version of a file:
    remembered, as nginx's open_file_cache does, since formatting them costs more than opening the file."""
    key = (path, info.st_mtime_ns, info.st_size)
    facts = _facts.get(key)
    if facts is None:
        mtime = int(info.st_mtime)
        facts = (f'"{mtime:x}-{info.st_size:x}"', formatdate(mtime, usegmt=True), content_type(path))
        if len(_facts) >= _MAX_FACTS:
            _facts.clear()
        _facts[key] = facts
    return facts


def content_type(path: str) -> str:
    kind, encoding = mimetypes.guess_type(path, strict=False)
    if kind is None or encoding is not None:
        # x.tar.gz is gzip bytes to the client: no Content-Encoding, which would have a browser unpack it
        return "application/octet-stream"
    return kind


def precondition_failed(environ: dict, etag: str, mtime: int) -> bool:
    """RFC 9110 13.1.1, 13.1.4: If-Match (strong comparison) decides when present, else If-Unmodified-Since."""
    if_match = environ.get("HTTP_IF_MATCH")
    if if_match is not None:
        if if_match.strip() == "*":
            return False                  # any current representation: the file is there
        # strong: W/"..." never matches (our ETag has no W/, and no comma to split wrongly)
        return not any(tag.strip() == etag for tag in if_match.split(","))
    since = environ.get("HTTP_IF_UNMODIFIED_SINCE")
    if since is None:
        return False
    try:
        return mtime > mktime_tz(parsedate_tz(since))
    except (TypeError, ValueError, OverflowError):
        return False                      # an invalid date is ignored (RFC 9110 13.1.4)


def not_modified(environ: dict, etag: str, mtime: int) -> bool:
    """RFC 9110 13.1.2-3: If-None-Match (weak comparison) decides when present, else If-Modified-Since."""
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))
    since = environ.get("HTTP_IF_MODIFIED_SINCE")
    if since is None:
        return False
    try:
        return mtime <= mktime_tz(parsedate_tz(since))
    except (TypeError, ValueError, OverflowError):
        return False                  # an invalid date is ignored (RFC 9110 13.1.3)


UNSATISFIABLE = (-1, -1)


def byte_range(environ: dict, size: int, etag: str, last_modified: str) -> tuple[int, int] | None:
    """(first, last) byte of a single satisfiable range; UNSATISFIABLE; None: send the whole file (no Range,
    one that is not ours to honour, or If-Range naming another version)."""
    header = environ.get("HTTP_RANGE")
    if header is None or size == 0:
        return None                   # an empty file has no byte to range over: 200, empty, as nginx
    if_range = environ.get("HTTP_IF_RANGE")
    if if_range is not None and if_range.strip() not in (etag, last_modified):
        return None
    match = _ONE_RANGE.fullmatch(header.strip())
    if match is None:
        return None                   # another unit, several ranges or malformed: the whole file (RFC 9110 14.2)
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:                      # the last N bytes
        length = int(last)
        if length == 0:
            return UNSATISFIABLE
        return max(0, size - length), size - 1
    start = int(first)
    if last and int(last) < start:
        return None                   # invalid: ignored
    if start >= size:
        return UNSATISFIABLE
    return start, min(int(last), size - 1) if last else size - 1
