"""Tests for the FastCGI responder codec. Outbound bytes are checked with an independent record decoder below."""

from __future__ import annotations

import random
import struct

import pytest

from wsgistack.protocols.fastcgi_codec import (
    DEFAULT_MAX_PARAMS_SIZE,
    NEED_DATA,
    AbortRequest,
    BeginRequest,
    ConnectionState,
    FastCGIConnection,
    FastCGIProtocolError,
    Params,
    ProtocolStatus,
    RecordType,
    Role,
    StdinData,
    StdinEnd,
    cgi_response_head,
    decode_name_value_pairs,
    encode_abort_request,
    encode_begin_request,
    encode_get_values,
    encode_name_value_pairs,
    encode_params,
    encode_stdin,
    end_request,
    stderr_records,
    stdout_records,
)

NGINX_PARAMS = {  # the stock fastcgi_params of nginx, for a POST; CONTENT_LENGTH set
    "QUERY_STRING": "", "REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/x-www-form-urlencoded",
    "CONTENT_LENGTH": "11", "SCRIPT_NAME": "/index", "REQUEST_URI": "/index", "DOCUMENT_URI": "/index",
    "DOCUMENT_ROOT": "/srv", "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "https", "HTTPS": "on",
    "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_SOFTWARE": "nginx/1.26.0", "REMOTE_ADDR": "10.0.0.1",
    "REMOTE_PORT": "51234", "SERVER_ADDR": "10.0.0.2", "SERVER_PORT": "443", "SERVER_NAME": "example.org",
    "REDIRECT_STATUS": "200", "HTTP_HOST": "example.org", "HTTP_COOKIE": "s=" + "c" * 300,
}


def record(record_type: int, request_id: int, content: bytes = b"", padding: bytes = b"", version: int = 1) -> bytes:
    """Build one record by hand, independently of the codec's serializer."""
    return struct.pack(">BBHHBx", version, record_type, request_id, len(content), len(padding)) + content + padding


def decode_records(data: bytes) -> list[tuple[RecordType, int, bytes]]:
    """Independent decoder for what the codec writes; also checks version, zero padding and 8-byte alignment."""
    records, position = [], 0
    while position < len(data):
        version, record_type, request_id, length, padding = struct.unpack_from(">BBHHBx", data, position)
        assert version == 1
        content_start = position + 8
        assert data[content_start + length:content_start + length + padding] == bytes(padding)
        assert (length + padding) % 8 == 0
        records.append((RecordType(record_type), request_id, data[content_start:content_start + length]))
        position = content_start + length + padding
    assert position == len(data)
    return records


def end_request_body(app_status: int, protocol_status: ProtocolStatus) -> bytes:
    return struct.pack(">IB3x", app_status, protocol_status)


def split_randomly(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    pieces, position = [], 0
    while position < len(data):
        size = rng.randint(1, 23)
        pieces.append(data[position:position + size])
        position += size
    return pieces


SPLITTERS = [lambda data: [data], lambda data: [data[i:i + 1] for i in range(len(data))]] + \
    [lambda data, seed=seed: split_randomly(data, seed) for seed in range(5)]
SPLITTER_IDS = ["whole", "bytewise"] + [f"random{seed}" for seed in range(5)]


def drain(connection: FastCGIConnection, *pieces: bytes) -> list:
    events = []
    for piece in pieces:
        connection.feed(piece)
        while (event := connection.next_event()) is not NEED_DATA:
            events.append(event)
    return events


def merge_stdin(events: list) -> list:
    """Join consecutive StdinData events, so that event lists compare the same however the bytes were split."""
    merged = []
    for event in events:
        if isinstance(event, StdinData) and merged and isinstance(merged[-1], StdinData):
            merged[-1] = StdinData(event.request_id, merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


def full_request(request_id: int = 1, environ=None, body: bytes = b"hello=world", keep_conn: bool = False) -> bytes:
    return (encode_begin_request(request_id, keep_conn=keep_conn)
            + encode_params(request_id, NGINX_PARAMS if environ is None else environ)
            + encode_stdin(request_id, body))


def expected_events(request_id: int = 1, environ=None, body: bytes = b"hello=world", keep_conn: bool = False) -> list:
    stdin = [StdinData(request_id, body)] if body else []
    return [BeginRequest(request_id, Role.RESPONDER, keep_conn),
            Params(request_id, NGINX_PARAMS if environ is None else environ), *stdin, StdinEnd(request_id)]


def protocol_error(*pieces: bytes, **options) -> FastCGIProtocolError:
    connection = FastCGIConnection(**options)
    with pytest.raises(FastCGIProtocolError) as caught:
        drain(connection, *pieces)
    return caught.value


# ---------------------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("split", SPLITTERS, ids=SPLITTER_IDS)
def test_request_round_trips_however_it_is_split(split):
    connection = FastCGIConnection()
    events = drain(connection, *split(full_request()))
    assert merge_stdin(events) == expected_events()
    assert connection.state is ConnectionState.INPUT_COMPLETE and connection.request_id == 1


@pytest.mark.parametrize("split", SPLITTERS, ids=SPLITTER_IDS)
def test_large_body_spans_several_stdin_records(split):
    body = random.Random(7).randbytes(150_000)
    stdin = encode_stdin(1, body)
    assert [len(content) for _, _, content in decode_records(stdin)] == [65528, 65528, 18944, 0]
    events = drain(FastCGIConnection(), *split(full_request(body=body)))
    assert merge_stdin(events) == expected_events(body=body)


def test_empty_body_and_empty_params():
    events = drain(FastCGIConnection(), full_request(environ={}, body=b""))
    assert events == expected_events(environ={}, body=b"")


def test_state_follows_the_streams():
    connection = FastCGIConnection()
    assert connection.state is ConnectionState.IDLE and connection.request_id is None
    drain(connection, encode_begin_request(3, keep_conn=True))
    assert connection.state is ConnectionState.READING_PARAMS and connection.keep_conn
    drain(connection, encode_params(3, {"A": "b"}))
    assert connection.state is ConnectionState.READING_STDIN
    drain(connection, encode_stdin(3, b"x", end_stream=False))
    assert connection.state is ConnectionState.READING_STDIN
    drain(connection, encode_stdin(3, b""))
    assert connection.state is ConnectionState.INPUT_COMPLETE


def test_params_split_over_many_tiny_records_including_inside_lengths_and_names():
    encoded = encode_name_value_pairs(NGINX_PARAMS)
    pieces = [encoded[i:i + 3] for i in range(0, len(encoded), 3)]
    stream = b"".join(record(RecordType.PARAMS, 1, piece) for piece in pieces) + record(RecordType.PARAMS, 1)
    events = drain(FastCGIConnection(), encode_begin_request(1), stream)
    assert events == [BeginRequest(1, Role.RESPONDER, False), Params(1, NGINX_PARAMS)]


def test_params_are_latin1_native_strings():
    raw = bytes([9, 6]) + b"PATH_INFO" + "/café".encode("utf-8")
    events = drain(FastCGIConnection(), encode_begin_request(1), record(RecordType.PARAMS, 1, raw),
                   record(RecordType.PARAMS, 1))
    assert events[-1] == Params(1, {"PATH_INFO": "/cafÃ©"})


def test_padding_is_skipped_whatever_its_contents():
    stream = (record(RecordType.BEGIN_REQUEST, 1, struct.pack(">HB5x", Role.RESPONDER, 0), padding=b"\xff" * 255)
              + record(RecordType.PARAMS, 1, encode_name_value_pairs({"A": "1"}), padding=b"junk!!")
              + record(RecordType.PARAMS, 1, padding=b"\x00" * 8)
              + record(RecordType.STDIN, 1, b"abc", padding=b"\x01" * 5)
              + record(RecordType.STDIN, 1))
    for split in SPLITTERS:
        events = merge_stdin(drain(FastCGIConnection(), *split(stream)))
        assert events == expected_events(environ={"A": "1"}, body=b"abc")


# ---------------------------------------------------------------------------------------------------------------
# Name-value pairs


def test_long_lengths_use_four_bytes_with_the_high_bit():
    encoded = encode_name_value_pairs({"N" * 127: "v" * 128})
    assert encoded[:5] == bytes([127]) + bytes([0x80, 0, 0, 128])
    assert decode_name_value_pairs(encoded, "test") == {"N" * 127: "v" * 128}


def test_long_name_and_long_value_round_trip_through_a_connection():
    environ = {"HTTP_" + "X" * 300: "y" * 40_000, "SHORT": ""}
    events = drain(FastCGIConnection(), full_request(environ=environ, body=b""))
    assert events[1] == Params(1, environ)


def test_four_byte_form_is_accepted_for_short_lengths_too():
    raw = bytes([0x80, 0, 0, 1]) + bytes([0x80, 0, 0, 2]) + b"Aok"
    assert decode_name_value_pairs(raw, "test") == {"A": "ok"}


def test_params_can_leave_out_wsgi_names():
    raw = encode_name_value_pairs({"wsgi.input": "x", "wsgi": ".kept", "w": "kept", "HTTP_HOST": "h"})
    assert decode_name_value_pairs(raw, "test", drop_wsgi_names=True) == {"wsgi": ".kept", "w": "kept",
                                                                         "HTTP_HOST": "h"}
    assert "wsgi.input" in decode_name_value_pairs(raw, "test")


def test_repeated_name_keeps_the_last_value():
    raw = b"".join(encode_name_value_pairs(pair) for pair in ({"A": "1"}, {"B": "2"}, {"A": "3"}))
    assert decode_name_value_pairs(raw, "test") == {"A": "3", "B": "2"}


def test_a_header_sent_twice_is_joined():
    """nginx's fastcgi_pass sends two X-Forwarded-For lines as two pairs of one name: both count (RFC 3875 4.1.18),
    as on the HTTP socket; cookies are joined with "; ". (The last one alone reached the app.)"""
    pairs = ({"HTTP_X_DUP": "a"}, {"HTTP_COOKIE": "a=1"}, {"B": "2"}, {"HTTP_X_DUP": "b" * 200},
             {"HTTP_COOKIE": "b=2"})
    raw = b"".join(encode_name_value_pairs(pair) for pair in pairs)
    assert decode_name_value_pairs(raw, "test") == {"HTTP_X_DUP": "a, " + "b" * 200, "HTTP_COOKIE": "a=1; b=2",
                                                    "B": "2"}


@pytest.mark.parametrize("raw, fragment", [
    (bytes([1]), "length at offset 1 is cut off"),
    (bytes([0x80, 0, 0]), "length at offset 0 is cut off"),
    (bytes([1, 0x80, 0]), "length at offset 1 is cut off"),
    (bytes([1, 5]) + b"Aabc", "declares 6 bytes at offset 2, only 4 remain"),
    (bytes([0x80, 0, 0, 9, 1]) + b"AB", "declares 10 bytes"),
    (bytes([0, 1]) + b"v", "empty name at offset 2"),
])
def test_malformed_params_are_reported_with_the_request(raw, fragment):
    error = protocol_error(encode_begin_request(4), record(RecordType.PARAMS, 4, raw), record(RecordType.PARAMS, 4))
    assert fragment in str(error) and "PARAMS of request 4" in str(error)


def test_params_over_the_limit_are_refused():
    environ = {"HTTP_COOKIE": "c" * DEFAULT_MAX_PARAMS_SIZE}
    error = protocol_error(encode_begin_request(1), encode_params(1, environ))
    assert f"exceed {DEFAULT_MAX_PARAMS_SIZE} bytes" in str(error)


def test_params_limit_is_configurable_and_counts_raw_bytes():
    environ = {"A": "x" * 95}  # 2 length bytes + 1 + 95 = 98 bytes
    assert drain(FastCGIConnection(max_params_size=98), full_request(environ=environ))[1] == Params(1, environ)
    error = protocol_error(full_request(environ=environ), max_params_size=97)
    assert "exceed 97 bytes" in str(error)


# ---------------------------------------------------------------------------------------------------------------
# Refusals: multiplexing, roles


def test_second_request_id_is_refused_with_cant_mpx_conn_and_ignored():
    connection = FastCGIConnection()
    events = drain(connection, encode_begin_request(1), encode_params(1, {"A": "1"}),
                   encode_begin_request(2, keep_conn=True), encode_params(2, {"B": "2"}), encode_stdin(2, b"other"),
                   encode_abort_request(2), encode_stdin(1, b"mine"))
    assert events == [BeginRequest(1, Role.RESPONDER, False), Params(1, {"A": "1"}), StdinData(1, b"mine"),
                      StdinEnd(1)]
    assert decode_records(connection.data_to_send()) == [
        (RecordType.END_REQUEST, 2, end_request_body(0, ProtocolStatus.CANT_MPX_CONN))]
    assert connection.data_to_send() == b""  # the queue was drained
    assert connection.request_id == 1 and not connection.keep_conn


@pytest.mark.parametrize("role", [Role.AUTHORIZER, Role.FILTER, 99])
def test_other_roles_are_refused_with_unknown_role(role):
    connection = FastCGIConnection()
    events = drain(connection, encode_begin_request(5, role=role, keep_conn=True), encode_params(5, {"A": "1"}),
                   encode_stdin(5, b"x"))
    assert events == []
    assert decode_records(connection.data_to_send()) == [
        (RecordType.END_REQUEST, 5, end_request_body(0, ProtocolStatus.UNKNOWN_ROLE))]
    assert connection.state is ConnectionState.IDLE
    assert drain(connection, full_request(6)) == expected_events(6)  # the kept connection still serves


def test_refused_role_without_keep_conn_closes_the_connection():
    connection = FastCGIConnection()
    drain(connection, encode_begin_request(5, role=Role.AUTHORIZER))
    assert connection.state is ConnectionState.CLOSED
    assert decode_records(connection.data_to_send())[0][2] == end_request_body(0, ProtocolStatus.UNKNOWN_ROLE)


# ---------------------------------------------------------------------------------------------------------------
# Management records


def test_get_values_is_answered_with_known_names_only():
    connection = FastCGIConnection(max_conns=16, max_reqs=32)
    events = drain(connection, encode_get_values(["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS", "X_UNKNOWN"]))
    assert events == []
    [(record_type, request_id, content)] = decode_records(connection.data_to_send())
    assert (record_type, request_id) == (RecordType.GET_VALUES_RESULT, 0)
    assert decode_name_value_pairs(content, "test") == {
        "FCGI_MAX_CONNS": "16", "FCGI_MAX_REQS": "32", "FCGI_MPXS_CONNS": "0"}


def test_get_values_mid_request_does_not_disturb_the_request():
    connection = FastCGIConnection()
    data = full_request()
    middle = len(encode_begin_request(1)) + len(encode_params(1, NGINX_PARAMS))
    events = drain(connection, data[:middle], encode_get_values(["FCGI_MPXS_CONNS"]), data[middle:])
    assert merge_stdin(events) == expected_events()
    assert decode_records(connection.data_to_send()) == [
        (RecordType.GET_VALUES_RESULT, 0, encode_name_value_pairs({"FCGI_MPXS_CONNS": "0"}))]


@pytest.mark.parametrize("record_type", [42, RecordType.BEGIN_REQUEST, RecordType.GET_VALUES_RESULT])
def test_unknown_management_types_get_unknown_type(record_type):
    connection = FastCGIConnection()
    assert drain(connection, record(record_type, 0, b"whatever")) == []
    assert decode_records(connection.data_to_send()) == [(RecordType.UNKNOWN_TYPE, 0, bytes([record_type]) + bytes(7))]


def test_malformed_get_values_is_an_error():
    error = protocol_error(record(RecordType.GET_VALUES, 0, bytes([5, 0]) + b"AB"))
    assert "GET_VALUES" in str(error)


# ---------------------------------------------------------------------------------------------------------------
# Abort, finish, keep_conn


def test_abort_during_stdin_then_the_rest_is_ignored():
    connection = FastCGIConnection()
    events = drain(connection, encode_begin_request(1), encode_params(1, {}),
                   encode_stdin(1, b"part", end_stream=False), encode_abort_request(1), encode_stdin(1, b"late"))
    assert events[-2:] == [StdinData(1, b"part"), AbortRequest(1)]
    assert connection.state is ConnectionState.INPUT_COMPLETE
    assert decode_records(connection.finish_request(app_status=1)) == [
        (RecordType.STDOUT, 1, b""), (RecordType.END_REQUEST, 1, end_request_body(1, ProtocolStatus.REQUEST_COMPLETE))]
    assert connection.state is ConnectionState.CLOSED


def test_abort_before_params_end():
    events = drain(FastCGIConnection(), encode_begin_request(1), encode_abort_request(1), encode_params(1, {"A": "1"}))
    assert events == [BeginRequest(1, Role.RESPONDER, False), AbortRequest(1)]


def test_keep_conn_serves_sequential_requests_with_the_same_id():
    connection = FastCGIConnection()
    for body in (b"first", b"second"):
        assert drain(connection, full_request(body=body, keep_conn=True)) == expected_events(body=body, keep_conn=True)
        response = stdout_records(1, cgi_response_head("200 OK", [])) + connection.finish_request()
        assert [kind for kind, _, _ in decode_records(response)] == [
            RecordType.STDOUT, RecordType.STDOUT, RecordType.END_REQUEST]
        assert connection.state is ConnectionState.IDLE and connection.request_id is None
    assert drain(connection, full_request(body=b"last")) == expected_events(body=b"last")
    connection.finish_request()
    assert connection.state is ConnectionState.CLOSED and not connection.keep_conn


def test_request_finished_early_ignores_the_unread_stdin_of_a_kept_connection():
    connection = FastCGIConnection()
    drain(connection, encode_begin_request(1, keep_conn=True), encode_params(1, {}))
    connection.finish_request(protocol_status=ProtocolStatus.OVERLOADED)
    assert drain(connection, encode_stdin(1, b"unread"), full_request(body=b"next", keep_conn=True)) == \
        expected_events(body=b"next", keep_conn=True)


def test_closed_connection_discards_late_records():
    connection = FastCGIConnection()
    drain(connection, encode_begin_request(1), encode_params(1, {}))
    connection.finish_request()
    assert drain(connection, encode_stdin(1, b"late"), encode_get_values(["FCGI_MPXS_CONNS"]), b"garbage") == []
    assert connection.data_to_send() == b""


def test_finish_request_needs_an_active_request():
    with pytest.raises(RuntimeError, match="no active FastCGI request"):
        FastCGIConnection().finish_request()


def test_records_for_inactive_ids_are_ignored():
    connection = FastCGIConnection()
    stray = encode_params(9, {"A": "1"}) + encode_stdin(9, b"x") + encode_abort_request(9)
    assert drain(connection, stray, full_request(1), stray) == expected_events(1)
    assert connection.data_to_send() == b""


# ---------------------------------------------------------------------------------------------------------------
# Protocol errors


def test_bad_version_is_an_error():
    error = protocol_error(record(RecordType.BEGIN_REQUEST, 1, bytes(8), version=2))
    assert "unsupported FastCGI version 2 (expected 1)" in str(error)


def test_http_on_the_fastcgi_port_is_named():
    error = protocol_error(b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n")
    assert "HTTP request" in str(error) and "fastcgi_pass" in str(error)


@pytest.mark.parametrize("stream, fragment", [
    (record(RecordType.BEGIN_REQUEST, 1, bytes(7)), "BEGIN_REQUEST body for request 1 is 7 bytes, expected 8"),
    (encode_begin_request(1) + encode_begin_request(1), "BEGIN_REQUEST for request 1, which is already active"),
    (record(RecordType.STDOUT, 1, b"x"), "unexpected STDOUT record for request 1"),
    (record(RecordType.END_REQUEST, 1, bytes(8)), "unexpected END_REQUEST record"),
    (record(RecordType.GET_VALUES, 1), "unexpected GET_VALUES record for request 1"),
    (record(99, 1), "unknown FastCGI record type 99 for request 1"),
    (encode_begin_request(1) + record(RecordType.DATA, 1, b"x"), "responder role has no DATA stream"),
    (encode_begin_request(1) + encode_stdin(1, b"x"), "STDIN record for request 1 before its PARAMS stream ended"),
    (encode_begin_request(1) + encode_params(1, {}) + record(RecordType.PARAMS, 1, b"\x01\x01ab"),
     "PARAMS record for request 1 after its PARAMS stream ended"),
    (full_request() + encode_stdin(1, b"x"), "STDIN record for request 1 after its STDIN stream ended"),
])
def test_protocol_violations(stream, fragment):
    assert fragment in str(protocol_error(stream))


def test_errors_are_sticky():
    connection = FastCGIConnection()
    connection.feed(record(RecordType.STDOUT, 1))
    with pytest.raises(FastCGIProtocolError) as first:
        connection.next_event()
    connection.feed(full_request())
    with pytest.raises(FastCGIProtocolError) as second:
        connection.next_event()
    assert second.value is first.value


# ---------------------------------------------------------------------------------------------------------------
# Serializers


@pytest.mark.parametrize("serialize, record_type", [(stdout_records, RecordType.STDOUT),
                                                    (stderr_records, RecordType.STDERR)])
def test_stream_serializers_split_and_align(serialize, record_type):
    data = b"a" * 65528 + b"b" * 65535 + b"c"
    records = decode_records(serialize(7, data))
    assert [(kind, request_id) for kind, request_id, _ in records] == [(record_type, 7)] * 3
    assert all(len(content) <= 65535 for _, _, content in records)
    assert b"".join(content for _, _, content in records) == data


@pytest.mark.parametrize("serialize", [stdout_records, stderr_records])
def test_stream_serializers_never_emit_the_closing_empty_record(serialize):
    assert serialize(1, b"") == b""


def test_end_request_closes_stdout_then_ends():
    records = decode_records(end_request(3, app_status=2**32 - 1, protocol_status=ProtocolStatus.OVERLOADED))
    assert records == [(RecordType.STDOUT, 3, b""),
                       (RecordType.END_REQUEST, 3, end_request_body(2**32 - 1, ProtocolStatus.OVERLOADED))]


def test_encoded_client_records_have_the_spec_layout():
    assert encode_begin_request(258, Role.RESPONDER, keep_conn=True) == \
        bytes([1, 1, 1, 2, 0, 8, 0, 0]) + bytes([0, 1, 1, 0, 0, 0, 0, 0])
    assert encode_abort_request(1) == bytes([1, 2, 0, 1, 0, 0, 0, 0])
    assert decode_records(encode_stdin(1, b"xy", end_stream=False)) == [(RecordType.STDIN, 1, b"xy")]
    assert decode_records(encode_params(1, {})) == [(RecordType.PARAMS, 1, b"")]


def test_cgi_response_head():
    head = cgi_response_head("404 Not Found", [("Content-Type", "text/plain"), ("Set-Cookie", "a=\xe9")])
    assert head == b"Status: 404 Not Found\r\nContent-Type: text/plain\r\nSet-Cookie: a=\xe9\r\n\r\n"


@pytest.mark.parametrize("status, headers", [
    ("200 OK\r\nX-Injected: 1", []),
    ("200 OK", [("X", "a\r\nSet-Cookie: evil")]),
    ("200 OK", [("X", "a\nb")]),
    ("200 OK", [("X", "a\0b")]),
    ("200 OK", [("Bad Name", "v")]),
    ("200 OK", [("Bad:Name", "v")]),
    ("200 OK", [("", "v")]),
    ("200 OK", [("X", "\u20ac")]),
])
def test_cgi_response_head_refuses_injection_and_unencodable_text(status, headers):
    with pytest.raises(ValueError):
        cgi_response_head(status, headers)
