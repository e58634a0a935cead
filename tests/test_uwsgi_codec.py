"""Tests for the uwsgi request codec: round trips under every way of splitting the bytes, then each malformed case."""

from __future__ import annotations

import random
import struct

import pytest

from wsgistack.protocols.uwsgi_codec import (
    DEFAULT_BUFFER_SIZE,
    DYNAMIC_APP_VARS,
    MAX_BUFFER_SIZE,
    MAX_CHUNKED_LINE,
    MAX_CONTENT_LENGTH,
    NEED_DATA,
    BlockTooLargeError,
    BodyData,
    EndOfBody,
    HTTPOnUwsgiPortError,
    UwsgiProtocolError,
    UwsgiRequest,
    UwsgiRequestParser,
    encode_uwsgi_request,
    looks_like_http,
    strip_script_name,
)

NGINX_GET = {  # what nginx's stock uwsgi_params produce for a GET: note the empty CONTENT_LENGTH
    "QUERY_STRING": "a=1", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "", "CONTENT_LENGTH": "",
    "REQUEST_URI": "/app/x?a=1", "PATH_INFO": "/app/x", "DOCUMENT_ROOT": "/srv", "SERVER_PROTOCOL": "HTTP/1.1",
    "REQUEST_SCHEME": "http", "REMOTE_ADDR": "10.0.0.1", "REMOTE_PORT": "51234", "SERVER_PORT": "80",
    "SERVER_NAME": "example.org", "HTTP_HOST": "example.org",
}


def split_whole(data: bytes) -> list[bytes]:
    return [data]


def split_bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


def split_randomly(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    pieces, position = [], 0
    while position < len(data):
        size = rng.randint(1, 17)
        pieces.append(data[position:position + size])
        position += size
    return pieces


SPLITTERS = [split_whole, split_bytewise] + [lambda data, seed=seed: split_randomly(data, seed) for seed in range(5)]
SPLITTER_IDS = ["whole", "bytewise"] + [f"random{seed}" for seed in range(5)]


def parse(pieces: list[bytes], buffer_size: int = DEFAULT_BUFFER_SIZE) -> tuple[UwsgiRequest, bytes, int]:
    """Feed pieces one at a time, draining events after each. Returns the request, the body, and how many EndOfBody."""
    parser = UwsgiRequestParser(buffer_size)
    events = []
    for piece in pieces:
        parser.feed(piece)
        while (event := parser.next_event()) is not NEED_DATA:
            events.append(event)
    requests = [event for event in events if isinstance(event, UwsgiRequest)]
    assert len(requests) == 1 and events[0] is requests[0]
    body = b"".join(event.data for event in events if isinstance(event, BodyData))
    assert isinstance(events[-1], EndOfBody)
    return requests[0], body, sum(isinstance(event, EndOfBody) for event in events)


def vars_block(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v for k, v in pairs)


def packet(block: bytes, modifier1: int = 0, modifier2: int = 0) -> bytes:
    return struct.pack("<BHB", modifier1, len(block), modifier2) + block


def parse_error(data: bytes, buffer_size: int = DEFAULT_BUFFER_SIZE) -> UwsgiProtocolError:
    parser = UwsgiRequestParser(buffer_size)
    parser.feed(data)
    with pytest.raises(UwsgiProtocolError) as caught:
        while parser.next_event() is not NEED_DATA:
            pass
    return caught.value


def chunked_request(chunked_body: bytes) -> bytes:
    return encode_uwsgi_request({"REQUEST_METHOD": "POST", "HTTP_TRANSFER_ENCODING": "chunked"}, chunked_body)


# ---------------------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("split", SPLITTERS, ids=SPLITTER_IDS)
def test_nginx_get_round_trips_with_empty_body(split):
    request, body, ends = parse(split(encode_uwsgi_request(NGINX_GET)))
    assert request == UwsgiRequest(0, 0, NGINX_GET)
    assert body == b"" and ends == 1


@pytest.mark.parametrize("split", SPLITTERS, ids=SPLITTER_IDS)
def test_post_with_content_length_round_trips(split):
    payload = bytes(range(256)) * 9
    environ = dict(NGINX_GET, REQUEST_METHOD="POST", CONTENT_LENGTH=str(len(payload)))
    request, body, _ = parse(split(encode_uwsgi_request(environ, payload, modifier1=30, modifier2=7)))
    assert (request.modifier1, request.modifier2, request.environ) == (30, 7, environ)
    assert body == payload


@pytest.mark.parametrize("split", SPLITTERS, ids=SPLITTER_IDS)
def test_chunked_body_is_decoded(split):
    chunked = b"5;name=value\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
    request, body, _ = parse(split(chunked_request(chunked)))
    assert request.environ["HTTP_TRANSFER_ENCODING"] == "chunked"
    assert body == b"hello" + b"z" * 26


def test_body_is_streamed_before_it_is_complete():
    parser = UwsgiRequestParser()
    parser.feed(encode_uwsgi_request({"CONTENT_LENGTH": "10"}, b"abcd"))
    assert isinstance(parser.next_event(), UwsgiRequest)
    assert parser.next_event() == BodyData(b"abcd")
    assert parser.next_event() is NEED_DATA
    parser.feed(b"efghij")
    assert parser.next_event() == BodyData(b"efghij")
    assert parser.next_event() == EndOfBody()


def test_vars_are_latin1_native_strings():
    block = vars_block([(b"PATH_INFO", "/café".encode("utf-8")), (b"HTTP_X_RAW", b"\xff\x00\x80")])
    request, _, _ = parse([packet(block)])
    assert request.environ == {"PATH_INFO": "/cafÃ©", "HTTP_X_RAW": "\xff\x00\x80"}


def test_empty_vars_block_is_an_empty_request():
    request, body, _ = parse([packet(b"", modifier1=100)])
    assert request == UwsgiRequest(100, 0, {})
    assert body == b""


def test_empty_values_are_kept():
    request, _, _ = parse([packet(vars_block([(b"QUERY_STRING", b""), (b"HTTPS", b"")]))])
    assert request.environ == {"QUERY_STRING": "", "HTTPS": ""}


def test_a_duplicate_var_that_is_no_header_keeps_the_last_value():
    request, _, _ = parse([packet(vars_block([(b"X", b"first"), (b"A", b"1"), (b"X", b"second")]))])
    assert request.environ == {"X": "second", "A": "1"}


def test_content_length_wins_over_transfer_encoding():
    # nginx de-chunks a buffered body, sets CONTENT_LENGTH and still forwards the Transfer-Encoding header.
    data = encode_uwsgi_request({"CONTENT_LENGTH": "4", "HTTP_TRANSFER_ENCODING": "chunked"}, b"5\r\nh")
    _, body, _ = parse([data])
    assert body == b"5\r\nh"


def test_content_length_with_leading_zeros():
    _, body, _ = parse([encode_uwsgi_request({"CONTENT_LENGTH": "007"}, b"1234567")])
    assert body == b"1234567"


def test_largest_content_length_is_accepted():
    parser = UwsgiRequestParser()
    parser.feed(encode_uwsgi_request({"CONTENT_LENGTH": str(MAX_CONTENT_LENGTH)}))
    assert parser.next_event().environ["CONTENT_LENGTH"] == str(MAX_CONTENT_LENGTH)
    assert parser.next_event() is NEED_DATA


def test_incomplete_header_and_block_wait_for_data():
    data = encode_uwsgi_request({"REQUEST_METHOD": "GET"})
    parser = UwsgiRequestParser()
    parser.feed(data[:3])
    assert parser.next_event() is NEED_DATA
    parser.feed(data[3:-1])
    assert parser.next_event() is NEED_DATA
    parser.feed(data[-1:])
    assert parser.next_event().environ == {"REQUEST_METHOD": "GET"}


def test_block_of_exactly_buffer_size_and_of_the_maximum_parse():
    for buffer_size in (100, MAX_BUFFER_SIZE):
        name_and_sizes = len(b"HTTP_COOKIE") + 4
        environ = {"HTTP_COOKIE": "c" * (buffer_size - name_and_sizes)}
        data = encode_uwsgi_request(environ)
        assert len(data) == 4 + buffer_size
        request, _, _ = parse([data], buffer_size=buffer_size)
        assert request.environ == environ


# ---------------------------------------------------------------------------------------------------------------
# Dynamic apps and modifier1 30


def test_dynamic_app_vars_are_dropped_and_reported():
    dangerous = {name: "/tmp/evil.py" for name in sorted(DYNAMIC_APP_VARS)}
    environ = {"REQUEST_METHOD": "GET", **dangerous, "UWSGI_SCHEME": "https"}
    request, _, _ = parse([encode_uwsgi_request(environ)])
    assert request.environ == {"REQUEST_METHOD": "GET", "UWSGI_SCHEME": "https"}
    assert request.dropped_vars == tuple(sorted(DYNAMIC_APP_VARS))


def test_wsgi_names_are_dropped_silently():
    environ = {"wsgi.input": "x", "wsgi.url_scheme": "https", "wsgi": ".kept", "w": "kept", "REQUEST_METHOD": "GET"}
    request, _, _ = parse([encode_uwsgi_request(environ)])
    assert request.environ == {"wsgi": ".kept", "w": "kept", "REQUEST_METHOD": "GET"}
    assert request.dropped_vars == ()


def test_dynamic_app_vars_cover_the_code_loading_and_interpreter_vars():
    assert {"UWSGI_SCRIPT", "UWSGI_MODULE", "UWSGI_CALLABLE", "UWSGI_FILE", "UWSGI_PYHOME", "UWSGI_CHDIR",
            "UWSGI_SETENV", "UWSGI_APPID", "UWSGI_HOME", "UWSGI_POSTFILE"} <= DYNAMIC_APP_VARS
    assert "UWSGI_SCHEME" not in DYNAMIC_APP_VARS


def test_a_header_sent_twice_is_joined():
    """nginx's uwsgi_pass sends two X-Forwarded-For lines as two vars of one name: both count (RFC 3875 4.1.18), as
    on the HTTP socket; cookies are joined with "; ". (uWSGI keeps the last one; so did we.)"""
    block = vars_block([(b"HTTP_X_DUP", b"a"), (b"HTTP_COOKIE", b"a=1"), (b"PATH_INFO", b"/"),
                        (b"HTTP_X_DUP", b"b"), (b"HTTP_COOKIE", b"b=2"), (b"PATH_INFO", b"/x")])
    request, _, _ = parse([packet(block)])
    assert request.environ == {"HTTP_X_DUP": "a, b", "HTTP_COOKIE": "a=1; b=2", "PATH_INFO": "/x"}


def test_repeated_dynamic_var_is_reported_once():
    request, _, _ = parse([packet(vars_block([(b"UWSGI_FILE", b"a"), (b"UWSGI_FILE", b"b")]))])
    assert request.environ == {} and request.dropped_vars == ("UWSGI_FILE",)


@pytest.mark.parametrize("script_name, path_info, expected", [
    ("/app", "/app/x/y", ("/app", "/x/y")),
    ("/app", "/app", ("/app", "")),
    ("/app/", "/app/x", ("/app", "/x")),
    ("/app", "/application/x", ("/app", "/application/x")),  # not on a segment boundary: untouched
    ("/app", "/other", ("/app", "/other")),
    ("", "/x", ("", "/x")),
    ("/", "/x", ("/", "/x")),
])
def test_strip_script_name(script_name, path_info, expected):
    environ = {"SCRIPT_NAME": script_name, "PATH_INFO": path_info, "QUERY_STRING": "q"}
    stripped = strip_script_name(environ)
    assert (stripped["SCRIPT_NAME"], stripped["PATH_INFO"]) == expected
    assert stripped["QUERY_STRING"] == "q"
    assert environ["PATH_INFO"] == path_info  # the input is not mutated


def test_strip_script_name_without_script_name_is_a_copy():
    environ = {"PATH_INFO": "/x"}
    assert strip_script_name(environ) == environ and strip_script_name(environ) is not environ


# ---------------------------------------------------------------------------------------------------------------
# Malformed header and vars block


def test_block_over_buffer_size_names_the_option_as_soon_as_the_header_arrives():
    header = struct.pack("<BHB", 0, 5123, 0)
    error = parse_error(header)
    assert isinstance(error, BlockTooLargeError)
    assert str(error) == "request block of 5123 bytes exceeds --buffer-size 4096 (raise buffer-size, max 65535)"
    assert (error.block_size, error.buffer_size) == (5123, 4096)


def test_block_one_byte_over_a_custom_buffer_size():
    error = parse_error(encode_uwsgi_request({"A": "x" * 100}), buffer_size=100)
    assert isinstance(error, BlockTooLargeError) and "--buffer-size 100" in str(error)


@pytest.mark.parametrize("buffer_size", [0, -1, MAX_BUFFER_SIZE + 1])
def test_buffer_size_outside_the_16_bit_range_is_refused(buffer_size):
    with pytest.raises(ValueError, match="buffer-size"):
        UwsgiRequestParser(buffer_size)


@pytest.mark.parametrize("request_line", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"POST /form HTTP/1.1\r\n", b"HEAD / HTTP/1.0\r\n", b"PUT /x HTTP/1.1\r\n",
    b"DELETE /x HTTP/1.1\r\n", b"OPTIONS * HTTP/1.1\r\n", b"PATCH /x HTTP/1.1\r\n", b"CONNECT a:443 HTTP/1.1\r\n",
    b"TRACE / HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
])
def test_http_request_on_the_uwsgi_port_is_named(request_line):
    error = parse_error(request_line, buffer_size=MAX_BUFFER_SIZE)  # "GET " would otherwise pass as a 21573-byte block
    assert isinstance(error, HTTPOnUwsgiPortError)
    assert "HTTP request" in str(error) and "uwsgi_pass" in str(error)
    assert error.first_bytes == request_line[:16]


def test_looks_like_http_is_false_for_uwsgi_headers():
    assert not looks_like_http(encode_uwsgi_request(NGINX_GET))
    assert not looks_like_http(b"GETX")
    assert looks_like_http(b"GET /")


@pytest.mark.parametrize("block, fragment", [
    (vars_block([(b"A", b"1")])[:-1], "value of 'A' at offset 3 declares 1 bytes but only 0 remain"),
    (vars_block([(b"A", b"1")]) + b"\x05", "var name size at offset 6 is cut off"),
    (vars_block([(b"A", b"1")]) + b"\x05\x00AB", "var name at offset 6 declares 5 bytes but only 2 remain"),
    (struct.pack("<H", 3) + b"KEY", "value of 'KEY' size at offset 5 is cut off"),
    (struct.pack("<H", 3) + b"KEY\x09", "value of 'KEY' size at offset 5 is cut off"),
    (struct.pack("<H", 0) + struct.pack("<H", 1) + b"v", "empty var name at offset 0"),
])
def test_malformed_vars_block(block, fragment):
    error = parse_error(packet(block))
    assert fragment in str(error) and "malformed uwsgi vars" in str(error)


@pytest.mark.parametrize("content_length", [
    "-1", "+1", " 1", "1 ", "1_000", "0x10", "1.0", "1e3", "abc", "9" * 20, str(MAX_CONTENT_LENGTH + 1),
    "\u00b2",  # superscript two: str.isdigit() says yes
])
def test_bad_content_length(content_length):
    error = parse_error(encode_uwsgi_request({"CONTENT_LENGTH": content_length}))
    assert "invalid CONTENT_LENGTH" in str(error)


def test_huge_content_length_digit_string_is_refused_before_int_conversion():
    error = parse_error(encode_uwsgi_request({"CONTENT_LENGTH": "1" * 5000}), buffer_size=MAX_BUFFER_SIZE)
    assert "invalid CONTENT_LENGTH" in str(error)


@pytest.mark.parametrize("transfer_encoding", ["gzip", "gzip, chunked", "identity"])
def test_transfer_encoding_other_than_chunked_is_refused(transfer_encoding):
    error = parse_error(encode_uwsgi_request({"HTTP_TRANSFER_ENCODING": transfer_encoding}))
    assert "unsupported HTTP_TRANSFER_ENCODING" in str(error)


def test_transfer_encoding_is_case_insensitive():
    _, body, _ = parse([encode_uwsgi_request({"HTTP_TRANSFER_ENCODING": " Chunked "}, b"1\r\nx\r\n0\r\n\r\n")])
    assert body == b"x"


# ---------------------------------------------------------------------------------------------------------------
# Malformed chunked bodies


@pytest.mark.parametrize("chunked_body, fragment", [
    (b"zz\r\n", "invalid chunk-size line b'zz'"),
    (b"\r\n", "invalid chunk-size line b''"),
    (b"+5\r\nhello\r\n", "invalid chunk-size line"),
    (b"-1\r\n", "invalid chunk-size line"),
    (b"5 5\r\n", "invalid chunk-size line"),
    (b"1" * 17 + b"\r\n", "invalid chunk-size line"),
    (b"5\r\nhelloX\r\n", "followed by b'X\\r' instead of CRLF"),
    (b"5\nhello\r\n", "chunk-size line ends with a bare LF"),
    (b"5\r\nhello\n\n", "followed by b'\\n\\n' instead of CRLF"),
    (b"0\r\nX-Trailer: 1\n\r\n", "trailer line ends with a bare LF"),
    (b"5;" + b"e" * MAX_CHUNKED_LINE + b"\r\n", f"chunk-size line longer than {MAX_CHUNKED_LINE} bytes"),
    (b"0\r\nX: " + b"t" * MAX_CHUNKED_LINE, f"trailer line longer than {MAX_CHUNKED_LINE} bytes"),
])
def test_bad_chunked_body(chunked_body, fragment):
    error = parse_error(chunked_request(chunked_body))
    assert fragment in str(error) and "chunked body" in str(error)


def test_chunk_size_line_at_the_length_limit_is_accepted():
    size_line = b"1;" + b"e" * (MAX_CHUNKED_LINE - 2)
    assert len(size_line) == MAX_CHUNKED_LINE
    _, body, _ = parse(split_randomly(chunked_request(size_line + b"\r\nx\r\n0\r\n\r\n"), seed=1))
    assert body == b"x"


def test_chunk_extension_after_whitespace_is_accepted():
    """RFC 9112 7.1.1: whitespace (BWS) around the extension's ";" and "="; none after a bare size."""
    for line in (b"3 ;a=b", b"3; a = b", b'3;a="x y";c'):
        _, body, _ = parse([chunked_request(line + b"\r\nabc\r\n0\r\n\r\n")])
        assert body == b"abc"
    for line in (b"3 ", b"3;", b"3;a=b c", b"3;a=\x00", b"3;a b"):
        with pytest.raises(UwsgiProtocolError, match="invalid chunk-size line"):
            parse([chunked_request(line + b"\r\nabc\r\n0\r\n\r\n")])


def test_trailer_fields_are_checked_and_bounded():
    _, body, _ = parse([chunked_request(b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nY:\r\n\r\n")])
    assert body == b"abc"
    for trailer in (b"no colon", b"X: a\x00b", b" X: folded", b"X : a"):
        with pytest.raises(UwsgiProtocolError, match="invalid trailer field"):
            parse([chunked_request(b"3\r\nabc\r\n0\r\n" + trailer + b"\r\n\r\n")])
    many = b"".join(b"X-%d: %s\r\n" % (n, b"v" * 100) for n in range(400))
    with pytest.raises(UwsgiProtocolError, match="trailer section larger than"):
        parse([chunked_request(b"3\r\nabc\r\n0\r\n" + many + b"\r\n")])


def test_incomplete_chunked_body_waits_for_data():
    parser = UwsgiRequestParser()
    parser.feed(chunked_request(b"3\r\nab"))
    assert isinstance(parser.next_event(), UwsgiRequest)
    assert parser.next_event() == BodyData(b"ab")
    assert parser.next_event() is NEED_DATA
    parser.feed(b"c\r\n0\r\n")
    assert parser.next_event() == BodyData(b"c")
    assert parser.next_event() is NEED_DATA  # the final CRLF after the (empty) trailers is still missing
    parser.feed(b"\r\n")
    assert parser.next_event() == EndOfBody()


# ---------------------------------------------------------------------------------------------------------------
# One request per connection, sticky errors


@pytest.mark.parametrize("data", [
    encode_uwsgi_request({"CONTENT_LENGTH": "3"}, b"abcde"),
    encode_uwsgi_request({"REQUEST_METHOD": "GET"}) + encode_uwsgi_request({"REQUEST_METHOD": "GET"}),
    chunked_request(b"0\r\n\r\nextra"),
])
def test_bytes_after_the_request_are_an_error(data):
    parser = UwsgiRequestParser()
    parser.feed(data)
    events = []
    with pytest.raises(UwsgiProtocolError, match="one request per connection"):
        while (event := parser.next_event()) is not NEED_DATA:
            events.append(event)
    assert isinstance(events[-1], EndOfBody)


def test_after_end_of_body_the_parser_waits_quietly():
    parser = UwsgiRequestParser()
    parser.feed(encode_uwsgi_request({"CONTENT_LENGTH": "1"}, b"x"))
    assert [parser.next_event() for _ in range(3)][1:] == [BodyData(b"x"), EndOfBody()]
    assert parser.next_event() is NEED_DATA


def test_errors_are_sticky():
    parser = UwsgiRequestParser()
    parser.feed(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(HTTPOnUwsgiPortError) as first:
        parser.next_event()
    parser.feed(b"more")
    with pytest.raises(HTTPOnUwsgiPortError) as second:
        parser.next_event()
    assert second.value is first.value


# ---------------------------------------------------------------------------------------------------------------
# Encoder


def test_encoder_layout_matches_the_protocol_docs():
    data = encode_uwsgi_request({"AB": "xyz"}, b"BODY", modifier1=30, modifier2=2)
    assert data == b"\x1e\x09\x00\x02" + b"\x02\x00AB" + b"\x03\x00xyz" + b"BODY"


@pytest.mark.parametrize("arguments, fragment", [
    (dict(environ={}, modifier1=256), "modifier1"),
    (dict(environ={}, modifier2=-1), "modifier2"),
    (dict(environ={"": "x"}), "must not be empty"),
    (dict(environ={"A": "x" * (MAX_BUFFER_SIZE + 1)}), "cannot fit a vars block"),
    (dict(environ={"A": "x" * 40000, "B": "y" * 40000}), "does not fit the 16-bit datasize"),
])
def test_encoder_refuses_what_cannot_be_sent(arguments, fragment):
    with pytest.raises(ValueError, match=fragment):
        encode_uwsgi_request(**arguments)


def test_encoder_refuses_non_latin1_text():
    with pytest.raises(UnicodeEncodeError):
        encode_uwsgi_request({"PATH_INFO": "/\u20ac"})
