"""The uwsgi wire protocol (uWSGI's binary request format) as a sans-I/O codec: request parser, request encoder.

Lives here: the 4-byte header, the vars block, body framing (CONTENT_LENGTH or chunked), the modifier1 30 helper.
Not here: sockets, the response (plain HTTP/1.x the server writes), or policy such as which modifier1 to serve.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

# uWSGI's default --buffer-size: "the max size of a request (request-body excluded) ... By default it is 4k".
DEFAULT_BUFFER_SIZE = 4096
# datasize is a little-endian uint16, so no vars block can be larger; uWSGI documents the same ceiling ("up to 65535").
MAX_BUFFER_SIZE = 65535
# nginx rejects a Content-Length that does not fit off_t (ngx_atoof's overflow check); we keep the same ceiling.
MAX_CONTENT_LENGTH = 2**63 - 1
# Longest chunk-size line or trailer line buffered. Both are header-like lines, so the bound is nginx's
# large_client_header_buffers line size (8k): a router forwards nothing longer.
MAX_CHUNKED_LINE = 8192

# modifier1 values the server may choose to serve (uWSGI: 0 = WSGI, 30 = UWSGI_MODIFIER_MANAGE_PATH_INFO).
MODIFIER1_WSGI = 0
MODIFIER1_MANAGE_PATH_INFO = 30

# Magic vars that make uWSGI load code, switch interpreter/virtualenv, touch the process (chdir, setenv,
# reload) or serve server-side files and cache entries (see uWSGI core/protocol.c and the "uwsgi protocol
# magic variables" docs). wsgistack never lets the network choose code or files: the parser drops them.
DYNAMIC_APP_VARS = frozenset({
    "UWSGI_SCRIPT",        # load a script as a new app
    "UWSGI_MODULE",        # load module:callable as a new app ...
    "UWSGI_CALLABLE",      # ... together with UWSGI_MODULE
    "UWSGI_FILE",          # load a file as a new app
    "UWSGI_APPID",         # pick (and load, if unknown) an app by id
    "UWSGI_PYHOME",        # virtualenv for the dynamic app
    "UWSGI_HOME",          # same, newer spelling
    "UWSGI_CHDIR",         # chdir() before the request
    "UWSGI_SETENV",        # setenv() in the worker process
    "UWSGI_POSTFILE",      # use a server-side file as the request body
    "UWSGI_TOUCH_RELOAD",  # reload the server when a file changes
    "UWSGI_CACHE_GET",     # answer from the uWSGI cache
})

# Request-line starts: the first four bytes of "<METHOD> ", plus the HTTP/2 preface "PRI * HTTP/2.0".
_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PRI")
_HTTP_REQUEST_PREFIXES = frozenset((method + " ").encode("ascii")[:4] for method in _HTTP_METHODS)

_HEADER = struct.Struct("<BHB")  # modifier1, datasize (le16), modifier2
_STRING_SIZE = struct.Struct("<H")
# RFC 9112 7.1.1: extensions are tokens with token or quoted-string values, whitespace only around ";" and "="
# (BWS); trailer fields are fields (RFC 9110 5.1, 5.5), the section bounded.
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = rb'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*"'
_CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]+)(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|"
                              + _QUOTED + rb"))?)*")
_TRAILER_FIELD = re.compile(_TOKEN + rb":[ \t]*[^\x00-\x08\x0a-\x1f\x7f]*")
MAX_TRAILER_SECTION = 32768     # as --limit-request-head's default
_MAX_CHUNK_SIZE_DIGITS = 16  # 16 hex digits already exceed MAX_CONTENT_LENGTH; more is garbage


def looks_like_http(first_bytes: bytes) -> bool:
    """True when a connection's first four bytes are the start of an HTTP request line (or the HTTP/2 preface)."""
    return bytes(first_bytes[:4]) in _HTTP_REQUEST_PREFIXES


# ---------------------------------------------------------------------------------------------------------------
# Errors


class UwsgiProtocolError(Exception):
    """The peer sent something that is not a valid uwsgi request; log the message and close the connection."""


class BlockTooLargeError(UwsgiProtocolError):
    """The vars block is larger than --buffer-size (uWSGI logs this as "invalid request block size")."""

    def __init__(self, block_size: int, buffer_size: int):
        self.block_size = block_size
        self.buffer_size = buffer_size
        super().__init__(f"request block of {block_size} bytes exceeds --buffer-size {buffer_size} "
                         f"(raise buffer-size, max {MAX_BUFFER_SIZE})")


class HTTPOnUwsgiPortError(UwsgiProtocolError):
    """The peer speaks HTTP, not uwsgi: a browser, curl or `proxy_pass` pointed at the uwsgi socket."""

    def __init__(self, first_bytes: bytes):
        self.first_bytes = first_bytes
        super().__init__(f"received an HTTP request ({first_bytes!r}...) on a uwsgi socket: nginx must use "
                         f"uwsgi_pass (not proxy_pass) here, and HTTP clients belong on the http socket")


# ---------------------------------------------------------------------------------------------------------------
# Events


class Sentinel:
    """The type of NEED_DATA (compare with `is`)."""

    def __init__(self, name: str):
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: Returned by next_event() when more bytes must be fed before another event can be produced.
NEED_DATA = Sentinel("NEED_DATA")


@dataclass(frozen=True, slots=True)
class UwsgiRequest:
    """The header and vars block. environ holds PEP 3333 native strings (latin-1 decoded), dynamic-app vars removed."""
    modifier1: int
    modifier2: int
    environ: dict[str, str]
    dropped_vars: tuple[str, ...] = ()  # names from DYNAMIC_APP_VARS that were present, for the server to log


@dataclass(frozen=True, slots=True)
class BodyData:
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfBody:
    pass


# ---------------------------------------------------------------------------------------------------------------
# Parser


class UwsgiRequestParser:
    """One uwsgi request per connection: feed() bytes, then call next_event() until it returns NEED_DATA.

    Events come in this order: one UwsgiRequest, zero or more BodyData, one EndOfBody. uWSGI closes the
    connection after the response, so bytes after the body are a protocol error, not a second request.
    Once an error has been raised, every later next_event() raises it again.
    """

    def __init__(self, buffer_size: int = DEFAULT_BUFFER_SIZE):
        if not 0 < buffer_size <= MAX_BUFFER_SIZE:
            raise ValueError(f"buffer-size must be between 1 and {MAX_BUFFER_SIZE}, got {buffer_size}")
        self.buffer_size = buffer_size
        self._buffer = bytearray()
        # Steps are stored as plain functions: a bound method kept on self would be a reference cycle,
        # left to the garbage collector once per connection.
        self._step = UwsgiRequestParser._read_header
        self._header: tuple[int, int, int] | None = None
        self._body: _FixedLengthBody | _ChunkedBody | None = None
        self._error: UwsgiProtocolError | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_event(self) -> UwsgiRequest | BodyData | EndOfBody | Sentinel:
        if self._error is not None:
            raise self._error
        try:
            return self._step(self)
        except UwsgiProtocolError as error:
            self._error = error
            raise

    def _read_header(self):
        if len(self._buffer) < _HEADER.size:
            return NEED_DATA
        if self._buffer[0] >= 0x41 and looks_like_http(self._buffer):   # modifier1 0/30 < "A" <= methods
            raise HTTPOnUwsgiPortError(bytes(self._buffer[:16]))
        self._header = _HEADER.unpack_from(self._buffer)
        _, datasize, _ = self._header
        if datasize > self.buffer_size:
            raise BlockTooLargeError(datasize, self.buffer_size)
        self._step = UwsgiRequestParser._read_vars
        return self._read_vars()

    def _read_vars(self):
        modifier1, datasize, modifier2 = self._header
        end = _HEADER.size + datasize
        if len(self._buffer) < end:
            return NEED_DATA
        block = bytes(self._buffer[_HEADER.size:end])
        del self._buffer[:end]
        environ, dropped_vars = _decode_vars(block)
        self._body = body_decoder(environ)
        self._step = UwsgiRequestParser._read_body
        return UwsgiRequest(modifier1, modifier2, environ, dropped_vars)

    def _read_body(self):
        event = self._body.next_event(self._buffer)
        if isinstance(event, EndOfBody):
            self._step = UwsgiRequestParser._after_body
        return event

    def _after_body(self):
        if self._buffer:
            raise UwsgiProtocolError(f"{len(self._buffer)} unexpected bytes after the request body: "
                                     f"uwsgi carries exactly one request per connection")
        return NEED_DATA


def _decode_vars(block: bytes) -> tuple[dict[str, str], tuple[str, ...]]:
    """Decode [le16 keysize, key, le16 value size, value]*. A header nginx sends twice (two X-Forwarded-For lines)
    comes as two vars of one name: joined, as RFC 3875 4.1.18 and our HTTP socket do (uWSGI kept the last one).
    Dropped: the dynamic-app vars (returned, to be logged) and wsgi.* names (the server's own keys).

    Hot path (one call per request behind nginx): one flat loop over the block decoded once (latin-1 maps
    byte i to character i, so offsets agree); sizes are read as two byte values; no bounds test per var: a
    size past the end shows as an IndexError, a short last value or an empty name after the loop, and
    `_check_vars` then walks the block again to say exactly what is wrong. Names to drop are looked for
    once, in the whole text, not per var."""
    environ: dict[str, str] = {}
    text = block.decode("latin-1")
    end = len(block)
    position = count = 0
    try:
        while position < end:
            key_end = position + 2 + (block[position] | block[position + 1] << 8)
            value_end = key_end + 2 + (block[key_end] | block[key_end + 1] << 8)
            environ[text[position + 2:key_end]] = text[key_end + 2:value_end]
            position = value_end
            count += 1
    except IndexError:
        _check_vars(block)
    if position != end or "" in environ:
        _check_vars(block)
    if count != len(environ):
        join_repeated_headers(environ, _pairs(block))
    if "UWSGI_" in text or "wsgi." in text:     # rare (or such text in a value): look at the names
        return _drop_reserved_vars(environ)
    return environ, ()


def _pairs(block: bytes):
    """The (name, value) vars of a well-formed block, in order (the slow path: repeated names)."""
    position = 0
    while position < len(block):
        key_end = position + 2 + int.from_bytes(block[position:position + 2], "little")
        value_end = key_end + 2 + int.from_bytes(block[key_end:key_end + 2], "little")
        yield block[position + 2:key_end].decode("latin-1"), block[key_end + 2:value_end].decode("latin-1")
        position = value_end


def join_repeated_headers(environ: dict[str, str], pairs) -> None:
    """A request header sent more than once, as HTTP_* vars of one name: one value, joined with ", " ("; " for
    cookies), as our HTTP socket joins repeated fields. Other repeated names keep their last value."""
    seen: dict[str, list[str]] = {}
    for name, value in pairs:
        seen.setdefault(name, []).append(value)
    for name, values in seen.items():
        if len(values) > 1 and name.startswith("HTTP_"):
            environ[name] = ("; " if name == "HTTP_COOKIE" else ", ").join(values)


def _drop_reserved_vars(environ: dict[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    dropped = tuple(name for name in environ if name in DYNAMIC_APP_VARS)
    for name in [*dropped, *(name for name in environ if name.startswith("wsgi."))]:
        del environ[name]
    return environ, dropped


def _check_vars(block: bytes) -> None:
    """Raise the precise UwsgiProtocolError for a vars block the fast loop found malformed."""
    end = len(block)
    position = 0
    while position < end:
        if position + 2 > end:
            _raise_cut(block, position, "var name")
        key_start = position + 2
        key_end = key_start + (block[position] | block[position + 1] << 8)
        if key_end > end:
            _raise_overrun(block, position, "var name")
        if key_end == key_start:
            raise UwsgiProtocolError(f"malformed uwsgi vars: empty var name at offset {position}")
        name = block[key_start:key_end].decode("latin-1")
        if key_end + 2 > end:
            _raise_cut(block, key_end, f"value of {name!r}")
        position = key_end + 2 + (block[key_end] | block[key_end + 1] << 8)
        if position > end:
            _raise_overrun(block, key_end, f"value of {name!r}")
    raise UwsgiProtocolError("malformed uwsgi vars")     # not reached: the fast loop only calls on an error


def _raise_cut(block: bytes, position: int, what: str):
    raise UwsgiProtocolError(f"malformed uwsgi vars: {what} size at offset {position} is cut off by the end "
                             f"of the {len(block)}-byte block")


def _raise_overrun(block: bytes, position: int, what: str):
    (size,) = _STRING_SIZE.unpack_from(block, position)
    start = position + _STRING_SIZE.size
    raise UwsgiProtocolError(f"malformed uwsgi vars: {what} at offset {position} declares {size} bytes but only "
                             f"{len(block) - start} remain in the {len(block)}-byte block")


# ---------------------------------------------------------------------------------------------------------------
# Body framing


def body_decoder(environ: dict[str, str]) -> _FixedLengthBody | _ChunkedBody:
    """The body's decoder (next_event(buffer) -> BodyData, EndOfBody or NEED_DATA). CONTENT_LENGTH wins: nginx
    de-chunks a buffered body and sets it, yet still forwards HTTP_TRANSFER_ENCODING. nginx's uwsgi_params sends
    `CONTENT_LENGTH $content_length` even when empty, so empty means absent."""
    content_length = environ.get("CONTENT_LENGTH", "")
    if content_length:
        return _FixedLengthBody(parse_content_length(content_length))
    transfer_encoding = environ.get("HTTP_TRANSFER_ENCODING", "")
    if not transfer_encoding:
        return _FixedLengthBody(0)
    if transfer_encoding.strip().lower() == "chunked":
        return _ChunkedBody()
    raise UwsgiProtocolError(f"unsupported HTTP_TRANSFER_ENCODING {transfer_encoding!r} without CONTENT_LENGTH: "
                             f"only a plain 'chunked' body can be decoded")


def parse_content_length(value: str) -> int:
    """Strict CONTENT_LENGTH: ASCII digits only (no sign, space or underscore), at most MAX_CONTENT_LENGTH."""
    if not (value.isascii() and value.isdigit()) or len(value) > len(str(MAX_CONTENT_LENGTH)):
        raise UwsgiProtocolError(f"invalid CONTENT_LENGTH {value[:40]!r}: expected a decimal byte count")
    length = int(value)
    if length > MAX_CONTENT_LENGTH:
        raise UwsgiProtocolError(f"invalid CONTENT_LENGTH {value!r}: larger than {MAX_CONTENT_LENGTH}")
    return length


def _take(buffer: bytearray, limit: int) -> bytes:
    data = bytes(buffer[:limit])
    del buffer[:limit]
    return data


class _FixedLengthBody:
    def __init__(self, length: int):
        self._remaining = length

    def next_event(self, buffer: bytearray):
        if self._remaining == 0:
            return EndOfBody()
        if not buffer:
            return NEED_DATA
        data = _take(buffer, self._remaining)
        self._remaining -= len(data)
        return BodyData(data)


class _ChunkedBody:
    """RFC 9112 chunked decoding, strict: hex size, optional extensions, CRLF everywhere; trailers are dropped."""

    def __init__(self):
        self._step = self._read_size_line
        self._remaining = 0
        self._trailer_bytes = 0

    def next_event(self, buffer: bytearray):
        return self._step(buffer)

    def _read_size_line(self, buffer: bytearray):
        line = _take_line(buffer, "chunk-size line")
        if line is None:
            return NEED_DATA
        match = _CHUNK_SIZE_LINE.fullmatch(line)
        if match is None or len(match[1]) > _MAX_CHUNK_SIZE_DIGITS:
            raise UwsgiProtocolError(f"chunked body: invalid chunk-size line {line[:40]!r}")
        size = int(match[1], 16)
        if size > MAX_CONTENT_LENGTH:
            raise UwsgiProtocolError(f"chunked body: chunk size {size} is larger than {MAX_CONTENT_LENGTH}")
        if size == 0:
            self._step = self._read_trailers
        else:
            self._remaining = size
            self._step = self._read_data
        return self._step(buffer)

    def _read_data(self, buffer: bytearray):
        if not buffer:
            return NEED_DATA
        data = _take(buffer, self._remaining)
        self._remaining -= len(data)
        if self._remaining == 0:
            self._step = self._read_data_end
        return BodyData(data)

    def _read_data_end(self, buffer: bytearray):
        if len(buffer) < 2:
            return NEED_DATA
        if buffer[:2] != b"\r\n":
            raise UwsgiProtocolError(f"chunked body: chunk data is followed by {bytes(buffer[:2])!r} instead of "
                                     f"CRLF (chunk longer than its declared size?)")
        del buffer[:2]
        self._step = self._read_size_line
        return self._read_size_line(buffer)

    def _read_trailers(self, buffer: bytearray):
        while (line := _take_line(buffer, "trailer line")) is not None:
            if not line:
                return EndOfBody()
            # A trailer field: accepted and dropped, WSGI has nowhere to put it.
            self._trailer_bytes += len(line) + 2
            if self._trailer_bytes > MAX_TRAILER_SECTION:
                raise UwsgiProtocolError(f"chunked body: trailer section larger than {MAX_TRAILER_SECTION} bytes")
            if not _TRAILER_FIELD.fullmatch(line):
                raise UwsgiProtocolError(f"chunked body: invalid trailer field {line[:40]!r}")
        return NEED_DATA


def _take_line(buffer: bytearray, what: str) -> bytes | None:
    """Remove and return one CRLF-terminated line (without the CRLF), or None if it is not complete yet."""
    newline = buffer.find(b"\n", 0, MAX_CHUNKED_LINE + 2)
    if newline == -1:
        if len(buffer) > MAX_CHUNKED_LINE + 1:
            raise UwsgiProtocolError(f"chunked body: {what} longer than {MAX_CHUNKED_LINE} bytes")
        return None
    if newline == 0 or buffer[newline - 1] != ord("\r"):
        raise UwsgiProtocolError(f"chunked body: {what} ends with a bare LF instead of CRLF")
    line = bytes(buffer[:newline - 1])
    del buffer[:newline + 1]
    return line


# ---------------------------------------------------------------------------------------------------------------
# Serializer and helpers


def encode_uwsgi_request(environ: dict[str, str], body: bytes = b"", modifier1: int = MODIFIER1_WSGI,
                         modifier2: int = 0) -> bytes:
    """Serialize a request as nginx's uwsgi_pass does. body is appended verbatim: framing vars are the caller's."""
    for name, modifier in (("modifier1", modifier1), ("modifier2", modifier2)):
        if not 0 <= modifier <= 255:
            raise ValueError(f"{name} must be 0..255, got {modifier}")
    if "" in environ:
        raise ValueError("uwsgi var names must not be empty")
    block = b"".join(_encode_string(name) + _encode_string(value) for name, value in environ.items())
    if len(block) > MAX_BUFFER_SIZE:
        raise ValueError(f"vars block of {len(block)} bytes does not fit the 16-bit datasize (max {MAX_BUFFER_SIZE})")
    return _HEADER.pack(modifier1, len(block), modifier2) + block + body


def _encode_string(text: str) -> bytes:
    raw = text.encode("latin-1")
    if len(raw) > MAX_BUFFER_SIZE:
        raise ValueError(f"{text[:20]!r}... is {len(raw)} bytes: it cannot fit a vars block (max {MAX_BUFFER_SIZE})")
    return _STRING_SIZE.pack(len(raw)) + raw


def strip_script_name(environ: dict[str, str]) -> dict[str, str]:
    """modifier1 30 (uWSGI's MANAGE_PATH_INFO): return a copy with the SCRIPT_NAME prefix removed from PATH_INFO.

    Unlike uWSGI, which slices PATH_INFO blindly, the prefix is only removed on a path-segment boundary
    ("/app" strips "/app" and "/app/x", never "/application"); otherwise environ is returned unchanged.
    A trailing slash on SCRIPT_NAME is dropped so that PATH_INFO keeps its leading one.
    """
    script_name = environ.get("SCRIPT_NAME", "").rstrip("/")
    path_info = environ.get("PATH_INFO", "")
    stripped = dict(environ)
    if script_name and (path_info == script_name or path_info.startswith(script_name + "/")):
        stripped["SCRIPT_NAME"] = script_name
        stripped["PATH_INFO"] = path_info[len(script_name):]
    return stripped
