"""FastCGI 1.0, responder side, as a sans-I/O codec: a per-connection record state machine and record serializers.

Lives here: records, name-value pairs, one-request-at-a-time connection state, management replies, CGI response head.
Not here: sockets, WSGI, parsing the app's output; no multiplexing (FCGI_MPXS_CONNS=0), no AUTHORIZER/FILTER roles.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from .uwsgi_codec import NEED_DATA, Sentinel, join_repeated_headers, looks_like_http

FCGI_VERSION_1 = 1
FCGI_KEEP_CONN = 1          # BEGIN_REQUEST flags bit: nginx sets it with `fastcgi_keep_conn on`
MANAGEMENT_REQUEST_ID = 0   # FCGI_NULL_REQUEST_ID: records about the connection, not a request
# contentLength is be16. Outbound streams are cut at the largest multiple of 8 below it, so full records
# need no padding (the spec recommends 8-byte alignment; nginx accepts records with or without padding).
MAX_RECORD_CONTENT = 0xFFFF
_STREAM_RECORD_CONTENT = MAX_RECORD_CONTENT & ~7
# Cap on one request's PARAMS stream. Precedent: uWSGI's FastCGI mode re-encodes PARAMS into its uwsgi vars
# block, bounded by --buffer-size (at most 64 KiB); nginx's default large_client_header_buffers (4 x 8k) keep
# a real request's CGI environment far below this.
DEFAULT_MAX_PARAMS_SIZE = 64 * 1024
# Answers to FCGI_GET_VALUES unless the server passes its real capacity.
DEFAULT_MAX_CONNS = 1
DEFAULT_MAX_REQS = 1

_HEADER = struct.Struct(">BBHHBx")           # version, type, requestId, contentLength, paddingLength, reserved
_BEGIN_REQUEST_BODY = struct.Struct(">HB5x")  # role, flags, reserved
_END_REQUEST_BODY = struct.Struct(">IB3x")    # appStatus, protocolStatus, reserved
_UNKNOWN_TYPE_BODY = struct.Struct(">B7x")    # type, reserved
_LONG_LENGTH = struct.Struct(">I")         # a name or value length >= 128: 4 bytes, high bit set
_LONG_LENGTH_FLAG = 0x80000000
_MAX_PAIR_LENGTH = 0x7FFFFFFF


class RecordType(IntEnum):
    BEGIN_REQUEST = 1
    ABORT_REQUEST = 2
    END_REQUEST = 3
    PARAMS = 4
    STDIN = 5
    STDOUT = 6
    STDERR = 7
    DATA = 8
    GET_VALUES = 9
    GET_VALUES_RESULT = 10
    UNKNOWN_TYPE = 11


class Role(IntEnum):
    RESPONDER = 1
    AUTHORIZER = 2
    FILTER = 3


class ProtocolStatus(IntEnum):
    REQUEST_COMPLETE = 0
    CANT_MPX_CONN = 1
    OVERLOADED = 2
    UNKNOWN_ROLE = 3


# Request records a web server may send; the rest are application-to-server only (GET_VALUES is management-only).
_WEB_SERVER_REQUEST_RECORDS = frozenset({RecordType.BEGIN_REQUEST, RecordType.ABORT_REQUEST, RecordType.PARAMS,
                                         RecordType.STDIN, RecordType.DATA})
_RECORD_TYPES = {int(member): member for member in RecordType}
_STDOUT = int(RecordType.STDOUT)      # plain ints pack faster than IntEnum members
_PADDING = [bytes(n) for n in range(8)]
_completed: dict[int, bytes] = {}     # request id -> closing STDOUT + END_REQUEST(complete); ids are 16-bit


class FastCGIProtocolError(Exception):
    """The web server sent something that is not valid FastCGI; log the message and close the connection."""


class ConnectionState(Enum):
    IDLE = "idle"                      # waiting for FCGI_BEGIN_REQUEST (a fresh or kept-alive connection)
    READING_PARAMS = "reading params"  # request accepted, PARAMS stream still open
    READING_STDIN = "reading stdin"    # environ delivered, STDIN stream still open
    INPUT_COMPLETE = "input complete"  # STDIN closed or request aborted; waiting for finish_request()
    CLOSED = "closed"                  # request finished without FCGI_KEEP_CONN: write data_to_send(), then close


# ---------------------------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class BeginRequest:
    request_id: int
    role: Role
    keep_conn: bool


@dataclass(frozen=True, slots=True)
class Params:
    """The whole CGI environment, emitted once the empty PARAMS record closes the stream (latin-1 decoded)."""
    request_id: int
    environ: dict[str, str]


@dataclass(frozen=True, slots=True)
class StdinData:
    request_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StdinEnd:
    request_id: int


@dataclass(frozen=True, slots=True)
class AbortRequest:
    """The web server gave up on the request: stop the app and call finish_request() (the spec wants END_REQUEST)."""
    request_id: int


# ---------------------------------------------------------------------------------------------------------------
# Connection


@dataclass(slots=True)
class _ActiveRequest:
    request_id: int
    state: ConnectionState = ConnectionState.READING_PARAMS
    params: bytearray = field(default_factory=bytearray)
    aborted: bool = False


class FastCGIConnection:
    """One per transport connection. feed() bytes, call next_event() until NEED_DATA, then write data_to_send().

    Serves one request at a time: a BEGIN_REQUEST for another id while one is active is refused with
    CANT_MPX_CONN, non-responder roles with UNKNOWN_ROLE, and management records (request id 0) are answered
    by the connection itself; those replies accumulate for data_to_send(). Records for ids that are not active
    are ignored, as the spec requires. The server writes the response with stdout_records() and ends it with
    finish_request(), which returns to IDLE under FCGI_KEEP_CONN and otherwise moves to CLOSED.
    """

    def __init__(self, *, max_conns: int = DEFAULT_MAX_CONNS, max_reqs: int = DEFAULT_MAX_REQS,
                 max_params_size: int = DEFAULT_MAX_PARAMS_SIZE):
        self.max_params_size = max_params_size
        self._management_values = {"FCGI_MAX_CONNS": str(max_conns), "FCGI_MAX_REQS": str(max_reqs),
                                   "FCGI_MPXS_CONNS": "0"}
        self._buffer = bytearray()
        self._outbound = bytearray()
        self._request: _ActiveRequest | None = None
        self._keep_conn = False
        self._closed = False
        self._error: FastCGIProtocolError | None = None

    @property
    def state(self) -> ConnectionState:
        if self._closed:
            return ConnectionState.CLOSED
        return ConnectionState.IDLE if self._request is None else self._request.state

    @property
    def request_id(self) -> int | None:
        """The active request's id, or None when no request is active."""
        return None if self._request is None else self._request.request_id

    @property
    def keep_conn(self) -> bool:
        """FCGI_KEEP_CONN of the active request (or of the last one): False means close after finish_request()."""
        return self._keep_conn

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def data_to_send(self) -> bytes:
        """Bytes the connection itself wants written (management replies, refused requests); clears the queue."""
        if not self._outbound:
            return b""
        data = bytes(self._outbound)
        self._outbound.clear()
        return data

    def next_event(self) -> BeginRequest | Params | StdinData | StdinEnd | AbortRequest | Sentinel:
        if self._error is not None:
            raise self._error
        try:
            while (record := self._take_record()) is not None:
                event = self._handle_record(*record)
                if event is not None:
                    return event
            return NEED_DATA
        except FastCGIProtocolError as error:
            self._error = error
            raise

    def finish_request(self, app_status: int = 0,
                       protocol_status: ProtocolStatus = ProtocolStatus.REQUEST_COMPLETE) -> bytes:
        """End the active request: returns the closing STDOUT and END_REQUEST records to write."""
        if self._request is None:
            raise RuntimeError(f"finish_request() with no active FastCGI request (state: {self.state.value})")
        request_id = self._request.request_id
        self._request = None
        self._closed = not self._keep_conn
        return end_request(request_id, app_status, protocol_status)

    def _take_record(self) -> tuple[int, int, bytes] | None:
        if self._closed:
            self._buffer.clear()  # late records (say, STDIN the app never read) before the server closes
            return None
        if len(self._buffer) < _HEADER.size:
            return None
        version, record_type, request_id, content_length, padding_length = _HEADER.unpack_from(self._buffer)
        if version != FCGI_VERSION_1:
            raise FastCGIProtocolError(_bad_version_message(bytes(self._buffer[:16]), version))
        end = _HEADER.size + content_length + padding_length
        if len(self._buffer) < end:
            return None
        content = bytes(self._buffer[_HEADER.size:_HEADER.size + content_length])
        del self._buffer[:end]
        return record_type, request_id, content

    def _handle_record(self, record_type: int, request_id: int, content: bytes):
        if request_id == MANAGEMENT_REQUEST_ID:
            self._answer_management_record(record_type, content)
            return None
        known = _RECORD_TYPES.get(record_type)      # RecordType(n) costs a microsecond; this, a dict lookup
        if known is None:
            raise FastCGIProtocolError(f"unknown FastCGI record type {record_type} for request {request_id}")
        record_type = known
        if record_type not in _WEB_SERVER_REQUEST_RECORDS:
            raise FastCGIProtocolError(f"unexpected {record_type.name} record for request {request_id} "
                                       f"from the web server")
        if record_type is RecordType.BEGIN_REQUEST:
            return self._begin_request(request_id, content)
        request = self._request
        if request is None or request.request_id != request_id or request.aborted:
            return None  # spec 3.3: records for inactive request ids are ignored
        if record_type is RecordType.ABORT_REQUEST:
            request.state, request.aborted = ConnectionState.INPUT_COMPLETE, True
            return AbortRequest(request_id)
        if record_type is RecordType.PARAMS:
            return self._params(request, content)
        if record_type is RecordType.STDIN:
            return self._stdin(request, content)
        raise FastCGIProtocolError(f"DATA record for request {request_id}: the responder role has no DATA stream")

    def _begin_request(self, request_id: int, content: bytes):
        if len(content) != _BEGIN_REQUEST_BODY.size:
            raise FastCGIProtocolError(f"BEGIN_REQUEST body for request {request_id} is {len(content)} bytes, "
                                       f"expected {_BEGIN_REQUEST_BODY.size}")
        role, flags = _BEGIN_REQUEST_BODY.unpack(content)
        keep_conn = bool(flags & FCGI_KEEP_CONN)
        if self._request is not None:
            if request_id == self._request.request_id:
                raise FastCGIProtocolError(f"BEGIN_REQUEST for request {request_id}, which is already active")
            self._outbound += _end_request_record(request_id, 0, ProtocolStatus.CANT_MPX_CONN)
            return None
        self._keep_conn = keep_conn
        if role != Role.RESPONDER:
            self._outbound += _end_request_record(request_id, 0, ProtocolStatus.UNKNOWN_ROLE)
            self._closed = not keep_conn
            return None
        self._request = _ActiveRequest(request_id)
        return BeginRequest(request_id, Role.RESPONDER, keep_conn)

    def _params(self, request: _ActiveRequest, content: bytes):
        if request.state is not ConnectionState.READING_PARAMS:
            raise FastCGIProtocolError(f"PARAMS record for request {request.request_id} after its PARAMS stream ended")
        if content:
            request.params += content
            if len(request.params) > self.max_params_size:
                raise FastCGIProtocolError(f"PARAMS for request {request.request_id} exceed {self.max_params_size} "
                                           f"bytes (the limit on one request's CGI environment)")
            return None
        environ = decode_name_value_pairs(bytes(request.params), f"PARAMS of request {request.request_id}",
                                          drop_wsgi_names=True)
        request.params.clear()
        request.state = ConnectionState.READING_STDIN
        return Params(request.request_id, environ)

    def _stdin(self, request: _ActiveRequest, content: bytes):
        if request.state is ConnectionState.READING_PARAMS:
            raise FastCGIProtocolError(f"STDIN record for request {request.request_id} before its PARAMS stream ended")
        if request.state is not ConnectionState.READING_STDIN:
            raise FastCGIProtocolError(f"STDIN record for request {request.request_id} after its STDIN stream ended")
        if content:
            return StdinData(request.request_id, content)
        request.state = ConnectionState.INPUT_COMPLETE
        return StdinEnd(request.request_id)

    def _answer_management_record(self, record_type: int, content: bytes) -> None:
        if record_type != RecordType.GET_VALUES:
            self._outbound += _record(RecordType.UNKNOWN_TYPE, MANAGEMENT_REQUEST_ID,
                                      _UNKNOWN_TYPE_BODY.pack(record_type))
            return
        asked = decode_name_value_pairs(content, "GET_VALUES")
        known = {name: self._management_values[name] for name in asked if name in self._management_values}
        self._outbound += _record(RecordType.GET_VALUES_RESULT, MANAGEMENT_REQUEST_ID, encode_name_value_pairs(known))


def _bad_version_message(first_bytes: bytes, version: int) -> str:
    if looks_like_http(first_bytes):
        return (f"received an HTTP request ({first_bytes!r}...) on a FastCGI socket: nginx must use fastcgi_pass "
                f"(not proxy_pass) here, and HTTP clients belong on the http socket")
    return f"unsupported FastCGI version {version} (expected {FCGI_VERSION_1}); is the peer really speaking FastCGI?"


# ---------------------------------------------------------------------------------------------------------------
# Name-value pairs


def decode_name_value_pairs(data: bytes, what: str, *, drop_wsgi_names: bool = False) -> dict[str, str]:
    """Decode FastCGI name-value pairs (latin-1). Names must be non-empty; a header nginx sends twice (two HTTP_*
    pairs of one name) is joined, as by uwsgi_codec; another repeated name keeps its last value.
    `drop_wsgi_names`: leave out wsgi.* names (in a request's PARAMS: those keys are the WSGI server's).

    Hot path (every request's PARAMS), as uwsgi_codec._decode_vars: one flat loop over the data decoded once
    (latin-1 maps byte i to character i, so offsets agree); one-byte lengths inline; no bounds test per pair:
    a length past the end shows as an IndexError, a short last value or an empty name after the loop, and
    `_check_pairs` then walks the data again to say exactly what is wrong. wsgi.* names are looked for once,
    in the whole text, not per pair."""
    pairs: dict[str, str] = {}
    text = data.decode("latin-1")
    size = len(data)
    position = count = 0
    try:
        while position < size:
            count += 1
            name_length = data[position]
            if name_length < 0x80:
                position += 1
            else:
                name_length, position = _read_long_length(data, position, what)
            value_length = data[position]
            if value_length < 0x80:
                position += 1
            else:
                value_length, position = _read_long_length(data, position, what)
            name_end = position + name_length
            end = name_end + value_length
            pairs[text[position:name_end]] = text[name_end:end]
            position = end
    except IndexError:
        _check_pairs(data, what)
    if position != size or "" in pairs:
        _check_pairs(data, what)
    if count != len(pairs):
        join_repeated_headers(pairs, _each_pair(data, text, what))
    if drop_wsgi_names and "wsgi." in text:     # rare (or such text in a value): look at the names
        for name in [name for name in pairs if name.startswith("wsgi.")]:
            del pairs[name]
    return pairs


def _check_pairs(data: bytes, what: str) -> None:
    """Raise the precise FastCGIProtocolError for name-value pairs the fast loop found malformed."""
    size = len(data)
    position = 0
    while position < size:
        name_length, position = _read_length(data, position, what)
        value_length, position = _read_length(data, position, what)
        end = position + name_length + value_length
        if end > size:
            raise FastCGIProtocolError(f"malformed name-value pair in {what}: declares {name_length + value_length} "
                                       f"bytes at offset {position}, only {size - position} remain")
        if name_length == 0:
            raise FastCGIProtocolError(f"malformed name-value pair in {what}: empty name at offset {position}")
        position = end
    raise FastCGIProtocolError(f"malformed name-value pairs in {what}")   # not reached: called on an error only


def _read_length(data: bytes, position: int, what: str) -> tuple[int, int]:
    """A name or value length (1 or 4 bytes) at `position`: (length, position after it)."""
    if position < len(data) and data[position] < 0x80:
        return data[position], position + 1
    return _read_long_length(data, position, what)


def _each_pair(data: bytes, text: str, what: str):
    """The (name, value) pairs of well-formed data, in order (the slow path: repeated names)."""
    position = 0
    while position < len(data):
        lengths = []
        for _ in range(2):
            if data[position] < 0x80:
                lengths.append(data[position])
                position += 1
            else:
                length, position = _read_long_length(data, position, what)
                lengths.append(length)
        name_end = position + lengths[0]
        yield text[position:name_end], text[name_end:name_end + lengths[1]]
        position = name_end + lengths[1]


def _read_long_length(data: bytes, position: int, what: str) -> tuple[int, int]:
    if position + _LONG_LENGTH.size > len(data):
        raise FastCGIProtocolError(f"malformed name-value pair in {what}: length at offset {position} is cut off")
    (length,) = _LONG_LENGTH.unpack_from(data, position)
    return length & _MAX_PAIR_LENGTH, position + _LONG_LENGTH.size


def encode_name_value_pairs(pairs: dict[str, str]) -> bytes:
    encoded = bytearray()
    for name, value in pairs.items():
        raw_name, raw_value = name.encode("latin-1"), value.encode("latin-1")
        encoded += _encode_length(len(raw_name)) + _encode_length(len(raw_value)) + raw_name + raw_value
    return bytes(encoded)


def _encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    if length > _MAX_PAIR_LENGTH:
        raise ValueError(f"a FastCGI name or value of {length} bytes does not fit a 31-bit length")
    return _LONG_LENGTH.pack(length | _LONG_LENGTH_FLAG)


# ---------------------------------------------------------------------------------------------------------------
# Serializers


def _record(record_type: int, request_id: int, content: bytes = b"") -> bytes:
    padding_length = -len(content) % 8
    return (_HEADER.pack(FCGI_VERSION_1, record_type, request_id, len(content), padding_length)
            + content + _PADDING[padding_length])


def _stream_records(record_type: int, request_id: int, data: bytes) -> bytes:
    """Non-empty data as records of one stream. Empty data gives b"": an empty record would close the stream."""
    if len(data) <= _STREAM_RECORD_CONTENT:         # the usual case: one record
        return _record(record_type, request_id, data) if data else b""
    return b"".join(_record(record_type, request_id, data[start:start + _STREAM_RECORD_CONTENT])
                    for start in range(0, len(data), _STREAM_RECORD_CONTENT))


def _end_request_record(request_id: int, app_status: int, protocol_status: ProtocolStatus) -> bytes:
    return _record(RecordType.END_REQUEST, request_id, _END_REQUEST_BODY.pack(app_status, protocol_status))


def stdout_records(request_id: int, data: bytes) -> bytes:
    return _stream_records(_STDOUT, request_id, data)


def stderr_records(request_id: int, data: bytes) -> bytes:
    return _stream_records(RecordType.STDERR, request_id, data)


def end_request(request_id: int, app_status: int = 0,
                protocol_status: ProtocolStatus = ProtocolStatus.REQUEST_COMPLETE) -> bytes:
    """The empty STDOUT record that closes the response stream, then END_REQUEST."""
    if app_status == 0 and protocol_status is ProtocolStatus.REQUEST_COMPLETE:
        records = _completed.get(request_id)        # nginx numbers every request 1: built once
        if records is None:
            records = _completed[request_id] = (_record(_STDOUT, request_id)
                                                + _end_request_record(request_id, 0, protocol_status))
        return records
    return _record(_STDOUT, request_id) + _end_request_record(request_id, app_status, protocol_status)


def encode_begin_request(request_id: int, role: Role = Role.RESPONDER, keep_conn: bool = False) -> bytes:
    flags = FCGI_KEEP_CONN if keep_conn else 0
    return _record(RecordType.BEGIN_REQUEST, request_id, _BEGIN_REQUEST_BODY.pack(role, flags))


def encode_params(request_id: int, environ: dict[str, str]) -> bytes:
    """The whole PARAMS stream, closing empty record included."""
    return _stream_records(RecordType.PARAMS, request_id, encode_name_value_pairs(environ)) + \
        _record(RecordType.PARAMS, request_id)


def encode_stdin(request_id: int, data: bytes, *, end_stream: bool = True) -> bytes:
    """STDIN records for data, followed (unless end_stream is False) by the empty record closing the stream."""
    closing = _record(RecordType.STDIN, request_id) if end_stream else b""
    return _stream_records(RecordType.STDIN, request_id, data) + closing


def encode_abort_request(request_id: int) -> bytes:
    return _record(RecordType.ABORT_REQUEST, request_id)


def encode_get_values(names: list[str]) -> bytes:
    return _record(RecordType.GET_VALUES, MANAGEMENT_REQUEST_ID, encode_name_value_pairs(dict.fromkeys(names, "")))


def cgi_response_head(status: str, headers: list[tuple[str, str]]) -> bytes:
    """The CGI response head nginx expects on STDOUT: `Status: 200 OK`, the headers, a blank line (latin-1)."""
    _check_header_text("status", status)
    lines = [f"Status: {status}\r\n"]
    for name, value in headers:
        if not name or any(character in name for character in ": \t"):
            raise ValueError(f"invalid response header name {name!r}")
        _check_header_text(f"header {name!r}", value)
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def _check_header_text(what: str, text: str) -> None:
    if any(character in text for character in "\r\n\0"):
        raise ValueError(f"{what} contains CR, LF or NUL: {text!r}")
