"""PEP 3333 behaviour of the real server: the environ, start_response, the response iterable,
app errors, header validation, wsgi.file_wrapper, request bodies, and logging.

Apps: tests/apps/basic.py, tests/apps/extra.py (basic + /environ/<path> and failing iterables),
tests/apps/validated.py (basic under wsgiref.validate).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import time

import pytest

from conftest import APPS, WSGISTACK, failed_start, free_port, wait_until
from wsgistack.protocols.uwsgi_codec import encode_uwsgi_request
from rawhttp import THREAD_MODES, RawConnection, close_log_env, get, wait_file_contains

FILE_BYTES = (APPS / "basic.py").read_bytes()


# --- environ ---

def test_environ(start_server):
    server = start_server(app="extra.py")
    with RawConnection(server.port) as conn:
        conn.send(b"POST /environ/caf%C3%A9?a=1&b=%20c HTTP/1.1\r\n"
                  b"Host: example.test:8080\r\n"
                  b"Content-Type: text/plain; charset=utf-8\r\n"
                  b"Content-Length: 5\r\n"
                  b"X-Multi: one\r\n"
                  b"X-Multi: two\r\n"
                  b"\r\nhello")
        response = conn.read_response()
        client_port = conn.sock.getsockname()[1]
    assert response.status == 200
    environ = json.loads(response.body)
    expected = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/environ/caf\u00c3\u00a9",      # UTF-8 bytes of "café", decoded as latin-1
        "QUERY_STRING": "a=1&b=%20c",
        "REQUEST_URI": "/environ/caf%C3%A9?a=1&b=%20c",
        "CONTENT_TYPE": "text/plain; charset=utf-8",
        "CONTENT_LENGTH": "5",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": str(server.port),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": str(client_port),
        "HTTP_HOST": "example.test:8080",
        "HTTP_X_MULTI": "one, two",
        "wsgi.version": [1, 0],
        "wsgi.url_scheme": "http",
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    assert {key: environ.get(key) for key in expected} == expected
    assert "HTTP_CONTENT_TYPE" not in environ and "HTTP_CONTENT_LENGTH" not in environ
    assert {"wsgi.input", "wsgi.errors", "wsgi.file_wrapper"} <= set(environ["keys"])
    assert environ["errors_ok"]
    assert environ["non_str_cgi"] == []


def test_environ_of_http10_get(start_server):
    server = start_server(app="extra.py")
    environ = json.loads(get(server.port, "/environ/%7Euser", version="HTTP/1.0").body)
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["PATH_INFO"] == "/environ/~user" and environ["REQUEST_URI"] == "/environ/%7Euser"
    assert environ["QUERY_STRING"] == ""
    assert "CONTENT_LENGTH" not in environ or environ["CONTENT_LENGTH"] in ("", "0")


@pytest.mark.parametrize("processes, threads, multithread, multiprocess", [
    ("1", "1", False, False), ("1", "4", True, False), ("2", "1", False, True), ("2", "4", True, True)])
def test_multithread_and_multiprocess_flags(start_server, processes, threads, multithread, multiprocess):
    server = start_server("--processes", processes, "--threads", threads)
    environ = json.loads(server.get("/environ")[2])
    assert environ["wsgi.multithread"] is multithread
    assert environ["wsgi.multiprocess"] is multiprocess


# --- start_response, write(), iterables, close() ---

@THREAD_MODES
def test_start_response_with_exc_info_replaces_the_response(start_server, threads):
    server = start_server("--threads", threads)
    response = get(server.port, "/exc-info")
    assert response.status == 503 and response.body == b"oops"
    assert response.header("Content-Length") == "4"


@THREAD_MODES
def test_start_response_with_exc_info_after_the_head_reraises(start_server, threads):
    server = start_server("--threads", threads, app="extra.py")
    with RawConnection(server.port) as conn:
        conn.request("GET", "/exc-info-after-head")
        assert conn.read_head().status == 200
        rest = conn.read_until_close()
    assert rest == b"4\r\nsent\r\n", "the response must end by closing, not look complete"
    server.wait_log("too late to replace")


@THREAD_MODES
def test_write_callable(start_server, threads):
    server = start_server("--threads", threads)
    with RawConnection(server.port) as conn:
        conn.request("GET", "/write")
        response = conn.read_response()
        assert response.status == 200 and response.body == b"from write, then iterable"
        conn.request("HEAD", "/write")
        assert conn.read_response("HEAD").status == 200
        conn.request("GET", "/")     # any byte written for the HEAD would corrupt this response
        assert conn.read_response().body == b"Hello, World!"


@THREAD_MODES
def test_write_never_exceeds_content_length(start_server, threads):
    server = start_server("--threads", threads, app="extra.py")
    with RawConnection(server.port) as conn:
        conn.request("GET", "/write-long")
        assert conn.read_head().header("Content-Length") == "5"
        assert conn.read_until_close() == b"12345"
    server.wait_log("more than its Content-Length")


@THREAD_MODES
@pytest.mark.parametrize("path, body", [
    ("/stream?n=3&delay=0", b"chunk 0\nchunk 1\nchunk 2\n"),
    ("/big?size=100000", b"x" * 100000),
])
def test_iterable_is_sent_and_closed(start_server, tmp_path, threads, path, body):
    env, close_log = close_log_env(tmp_path)
    server = start_server("--threads", threads, env=env)
    response = get(server.port, f"{path}&tag=done")
    assert response.status == 200 and response.body == body
    wait_file_contains(close_log, "closed done\n")


@THREAD_MODES
@pytest.mark.parametrize("path", ["/raise-first", "/str-chunk", "/bad-header-tracked"])
def test_iterable_is_closed_when_the_response_fails_before_sending(start_server, tmp_path, threads, path):
    env, close_log = close_log_env(tmp_path)
    server = start_server("--threads", threads, app="extra.py", env=env)
    response = get(server.port, f"{path}?tag=failed")
    assert response.status == 500
    assert response.body == b"Internal Server Error"
    wait_file_contains(close_log, "closed failed\n")


@THREAD_MODES
def test_iterable_is_closed_when_it_raises_midway(start_server, tmp_path, threads):
    env, close_log = close_log_env(tmp_path)
    server = start_server("--threads", threads, app="extra.py", env=env)
    with RawConnection(server.port) as conn:
        conn.request("GET", "/raise-midway?tag=midway")
        assert conn.read_head().status == 200
        rest = conn.read_until_close()
    assert b"first part" in rest and not rest.endswith(b"0\r\n\r\n")
    wait_file_contains(close_log, "closed midway\n")
    server.wait_log("boom while iterating")


# --- app errors ---

@THREAD_MODES
def test_app_exception_is_a_500_without_traceback(start_server, threads):
    server = start_server("--threads", threads)
    with RawConnection(server.port) as conn:
        conn.request("GET", "/error")
        response = conn.read_response()
        raw = response.raw_head + response.body + conn.read_until_close()
    assert response.status == 500
    assert b"boom" not in raw and b"Traceback" not in raw
    log = server.wait_log("boom: this traceback belongs in the error log only")
    assert "Traceback" in log
    assert get(server.port, "/").body == b"Hello, World!"


@THREAD_MODES
def test_app_exception_after_start_closes_the_connection(start_server, threads):
    server = start_server("--threads", threads)
    with RawConnection(server.port) as conn:
        conn.request("GET", "/error-after-start")
        head = conn.read_head()
        rest = conn.read_until_close()
    assert head.status == 200 and head.header("Transfer-Encoding") == "chunked"
    assert rest.startswith(b"7\r\npartial\r\n"), rest
    assert not rest.endswith(b"0\r\n\r\n"), "a truncated response must not look complete"
    log = server.wait_log("boom mid-stream")
    assert "Traceback" in log


@THREAD_MODES
@pytest.mark.parametrize("path, leaked", [
    ("/bad-header", b"Set-Cookie: evil"), ("/bad-header-nul", b"X-Nul"), ("/bad-header-name", b"X Bad")])
def test_invalid_response_headers_never_reach_the_wire(start_server, threads, path, leaked):
    server = start_server("--threads", threads)
    with RawConnection(server.port) as conn:
        conn.request("GET", path)
        response = conn.read_response()
        raw = response.raw_head + response.body + conn.read_until_close()
    assert response.status == 500
    assert leaked not in raw and b"evil" not in raw and b"never sent" not in raw
    server.wait_log(f"GET {path}: invalid response")


# --- framing decided by the app ---

@THREAD_MODES
def test_iterable_past_content_length_is_cut_once(start_server, tmp_path, threads):
    env, close_log = close_log_env(tmp_path)
    server = start_server("--threads", threads, app="extra.py", env=env)
    with RawConnection(server.port) as conn:
        conn.request("GET", "/long-stream?tag=long")
        assert conn.read_head().header("Content-Length") == "5"
        assert conn.read_until_close() == b"12345"
    wait_file_contains(close_log, "closed long\n")
    log = server.wait_log("GET /long-stream?tag=long => generated 5 bytes")
    assert log.count("more than its Content-Length") == 1, log


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses(server, code):
    with RawConnection(server.port) as conn:
        conn.request("GET", f"/status?code={code}")
        response = conn.read_head()
        assert response.status == code
        assert not response.has("Transfer-Encoding")
        if code == 204:
            assert not response.has("Content-Length")
        # Any body byte would corrupt the next response on this connection.
        conn.request("GET", "/")
        after = conn.read_response()
        assert after.status == 200 and after.body == b"Hello, World!"


def test_a_204_drops_the_apps_content_length(server):
    """RFC 9110, section 8.6: no Content-Length with a 204 (nginx drops it too); Django's CommonMiddleware sets
    `Content-Length: 0` on every answer."""
    with RawConnection(server.port) as conn:
        conn.request("GET", "/status?code=204&length=0")
        response = conn.read_head()
        assert response.status == 204 and not response.has("Content-Length"), response.headers
        conn.request("GET", "/")
        assert conn.read_response().body == b"Hello, World!"


@pytest.mark.parametrize("path, length", [("/", 13), ("/big?size=200000", 200000)])
def test_app_content_length_is_used(server, path, length):
    response = get(server.port, path)
    assert response.header("Content-Length") == str(length)
    assert not response.has("Transfer-Encoding")
    assert len(response.body) == length


# --- wsgi.file_wrapper ---

@THREAD_MODES
def test_file_wrapper_sends_the_file(start_server, threads):
    server = start_server("--threads", threads)
    with RawConnection(server.port) as conn:
        for _ in range(2):
            conn.request("GET", "/file")
            response = conn.read_response()
            assert response.status == 200 and response.body == FILE_BYTES
            assert response.header("Content-Length") == str(len(FILE_BYTES))
        conn.request("HEAD", "/file")
        head = conn.read_response("HEAD")
        assert head.status == 200 and head.header("Content-Length") == str(len(FILE_BYTES))
        conn.request("GET", "/")
        assert conn.read_response().body == b"Hello, World!", "HEAD /file sent a body"


# --- wsgiref.validate ---

@THREAD_MODES
def test_validator_finds_no_violation(start_server, threads):
    server = start_server("--threads", threads, app="validated.py")
    port = server.port
    assert get(port, "/").body == b"Hello, World!"
    assert json.loads(get(port, "/environ").body)["REQUEST_METHOD"] == "GET"
    assert json.loads(get(port, "/environ", "POST", body=b"abc").body)["CONTENT_LENGTH"] == "3"
    assert get(port, "/echo", "POST", body=b"echoed").body == b"echoed"
    assert get(port, "/echo", "POST", {"Transfer-Encoding": "chunked"}, b"3\r\nabc\r\n0\r\n\r\n").body == b"abc"
    assert get(port, "/stream?n=3&delay=0").body == b"chunk 0\nchunk 1\nchunk 2\n"
    assert get(port, "/write").body == b"from write, then iterable"
    assert get(port, "/file").body == FILE_BYTES
    head = get(port, "/", "HEAD")
    assert head.status == 200 and head.header("Content-Length") == "13"
    assert get(port, "/file", "HEAD").body == b""
    server.wait_log("HEAD /file =>")
    log = server.log()
    assert "AssertionError" not in log and "Warning" not in log and "Traceback" not in log, log


# --- request bodies ---

def test_post_buffering_spools_big_bodies(start_server):
    server = start_server("--post-buffering", "65536")
    body = os.urandom(3 * 1024 * 1024)
    status, _, answer = server.get("/echo-len", method="POST", body=body)
    assert status == 200
    assert answer == f"{len(body)} {body[:16].hex()} {body[-16:].hex()}".encode()
    spooled = json.loads(server.get("/environ", method="POST", body=b"x" * 200_000)[2])
    assert spooled["wsgi.input.class"] not in ("BytesIO", "EmptyInput")
    in_memory = json.loads(server.get("/environ", method="POST", body=b"x" * 1000)[2])
    assert in_memory["wsgi.input.class"] == "BytesIO"


# --- logging ---

def test_access_log_line(server):
    """uWSGI's line, field for field: log pipelines parse it with patterns written for uWSGI."""
    get(server.port, "/")
    get(server.port, "/")
    line = next(line for line in server.wait_log("req: 2/2").splitlines() if "req: 2/2" in line)
    pattern = (r"\[pid: (\d+)\|app: 0\|req: 2/2\] 127\.0\.0\.1 \(\) \{\d+ vars in \d+ bytes\} "
               r"\[\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\] GET / => generated 13 bytes in \d+ msecs "
               r"\(HTTP/1\.1 200\) 2 headers in 65 bytes \(1 switches on core 0\)")
    match = re.fullmatch(pattern, line)
    assert match, line
    assert int(match[1]) in server.workers()


def test_disable_logging_keeps_the_error_log(start_server):
    server = start_server("--disable-logging")
    assert get(server.port, "/").status == 200
    assert get(server.port, "/error").status == 500
    log = server.wait_log("boom: this traceback")
    assert "Traceback" in log
    assert "=> generated" not in log


def logged_paths(server, last: str) -> list[str]:
    """The paths of the access-log lines, once the line for `last` is there."""
    log = server.wait_log(f"GET {last} =>")
    return [line.split(" => ")[0].rsplit(" ", 1)[1] for line in log.splitlines() if " => generated " in line]


@pytest.mark.parametrize("threads", ["1", "4"])
def test_disable_logging_with_log_4xx_and_5xx_logs_only_errors(start_server, threads):
    """The production combination of uWSGI's docs and blogs: no access log, except for the failed requests."""
    server = start_server("--disable-logging", "--log-4xx", "--log-5xx", "--threads", threads)
    for path in ("/", "/status?code=404", "/environ", "/error", "/no-read", "/status?code=503"):
        get(server.port, path)
    assert logged_paths(server, "/status?code=503") == ["/status?code=404", "/error", "/no-read", "/status?code=503"]
    assert "(HTTP/1.1 500)" in server.log()


def test_log_slow_big_and_zero(start_server):
    server = start_server("--disable-logging", "--log-slow", "300", "--log-big", "100000", "--log-zero")
    for path in ("/", "/sleep?t=0.05", "/sleep?t=0.4", "/big?size=99999", "/big?size=100000", "/status?code=204",
                 "/big?size=0"):
        get(server.port, path)
    assert logged_paths(server, "/big?size=0") == ["/sleep?t=0.4", "/big?size=100000", "/status?code=204",
                                                   "/big?size=0"]


def test_log_filters_change_nothing_when_logging_is_on(start_server):
    server = start_server("--log-5xx")
    get(server.port, "/")
    get(server.port, "/error")
    assert logged_paths(server, "/error") == ["/", "/error"]


def test_logformat_builds_the_line_from_uwsgis_variables(start_server):
    server = start_server("--logformat", '%(addr) - %(user) [%(ltime)] "%(method) %(uri) %(proto)" %(status) '
                                         '%(rsize) "%(referer)" "%(uagent)" %(var.HTTP_X_REQUEST_ID) w%(wid)')
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/environ?x=1", headers={"User-Agent": "curl/8.0", "Referer": "http://a/b",
                                                  "X-Request-Id": "r-17"})
    body = conn.getresponse().read()
    conn.close()
    line = next(line for line in server.wait_log('"GET /environ?x=1').splitlines() if "GET /environ" in line)
    pattern = (r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /environ\?x=1 HTTP/1\.1" 200 '
               + str(len(body)) + r' "http://a/b" "curl/8\.0" r-17 w1')
    assert re.fullmatch(pattern, line), line
    # What the request does not have is "-", as uWSGI writes it: combined-log parsers need a field there.
    with RawConnection(server.port) as raw:
        raw.send(b"GET /pid HTTP/1.0\r\n\r\n")
        raw.read_response()
    line = next(line for line in server.wait_log('"GET /pid').splitlines() if "GET /pid" in line)
    assert re.fullmatch(r'127\.0\.0\.1 - - \[.*\] "GET /pid HTTP/1\.0" 200 \d+ "-" "-" - w1', line), line


def test_logformat_as_json_for_log_shippers(start_server):
    """A line as uWSGI's users write them for Logstash or Fluentd: every variable of it is known."""
    fields = ('"method": "%(method)", "uri": "%(uri)", "status": %(status), "remote_addr": "%(addr)", '
              '"pid": %(pid), "worker_id": %(wid), "core": %(core), "async_switches": %(switches), '
              '"io_errors": %(ioerr), "rq_size": %(cl), "rs_time_ms": %(msecs), "rs_size": %(size), '
              '"rs_header_size": %(hsize), "rs_header_count": %(headers), "rss": %(rss), "epoch": %(epoch)')
    server = start_server("--logformat", "{" + fields + "}", "--threads", "4")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/echo", body=b"12345")
    conn.getresponse().read()
    conn.close()
    line = next(line for line in server.wait_log('"uri": "/echo"').splitlines() if line.startswith("{"))
    record = json.loads(line)
    assert (record["method"], record["status"], record["rq_size"], record["worker_id"]) == ("POST", 200, 5, 1)
    assert record["pid"] in server.workers() and record["rs_header_count"] >= 1
    assert record["rs_size"] > record["rs_header_size"] > 10 and record["rss"] > 1_000_000


def test_logformat_values_cannot_break_or_forge_a_json_line(start_server):
    """A client's quotes and backslashes are escaped (a User-Agent once added its own "admin" key and a second
    "status" to a valid line), and its UTF-8 is written as UTF-8."""
    server = start_server("--logformat", '{"uri": "%(uri)", "status": %(status), "ua": "%(uagent)"}')
    user_agent = 'x", "status": 500, "admin": "yes \\ caf\u00e9'
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("GET", '/q?a="b"', skip_accept_encoding=True)
    conn.putheader("User-Agent", user_agent.encode("utf-8"))
    conn.endheaders()
    conn.getresponse().read()
    conn.close()
    line = next(line for line in server.wait_log('"uri": "/q').splitlines() if line.startswith("{"))
    assert json.loads(line) == {"uri": '/q?a="b"', "status": 200, "ua": user_agent}


def test_log_x_forwarded_for_shows_the_client_behind_a_proxy(start_server):
    server = start_server("--log-x-forwarded-for")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/via-proxy", headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.2"})
    conn.getresponse().read()
    conn.request("GET", "/direct")
    conn.getresponse().read()
    conn.close()
    log = server.wait_log("GET /direct =>")
    assert "] 203.0.113.7 () {" in log.split("GET /via-proxy")[0].splitlines()[-1]
    assert "] 127.0.0.1 () {" in log.split("GET /direct")[0].splitlines()[-1]


def test_log_x_forwarded_for_shows_the_client_in_a_logformat_too(start_server):
    server = start_server("--log-x-forwarded-for", "--logformat", "ACC addr=%(addr) %(uri)")
    get(server.port, "/via-proxy", headers={"X-Forwarded-For": "203.0.113.7"})
    assert "ACC addr=203.0.113.7 /via-proxy" in server.wait_log("ACC addr=")


def test_the_access_line_counts_variables_and_names_the_user_as_uwsgi(start_server):
    """uWSGI counts a key and a value per variable; the parentheses hold REMOTE_USER (an app or nginx's
    auth_basic sets it). %(vars), %(pktsize) and %(switches) say the same as the default line."""
    from wsgistack.protocols.uwsgi_codec import encode_uwsgi_request
    port = free_port()
    server = start_server("--socket", f"127.0.0.1:{port}")
    variables = {"REQUEST_METHOD": "GET", "REQUEST_URI": "/u", "PATH_INFO": "/u", "QUERY_STRING": "",
                 "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "x", "SERVER_PORT": "80", "REMOTE_ADDR": "10.1.2.3",
                 "REMOTE_USER": "bob", "HTTP_HOST": "x"}
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(encode_uwsgi_request(variables))
        while sock.recv(65536):
            pass
    line = next(line for line in server.wait_log("GET /u =>").splitlines() if "GET /u =>" in line)
    match = re.search(r"\] 10\.1\.2\.3 \(bob\) \{(\d+) vars in (\d+) bytes\}", line)
    assert match, line
    assert int(match[1]) % 2 == 0 and int(match[1]) >= 2 * len(variables)


def test_log_req_encoder_wraps_the_line_as_the_uwsgi_json_recipe_does(start_server, tmp_path):
    ini = tmp_path / "log.ini"
    ini.write_text("[uwsgi]\n"
                   'log-format = "method": "%(method)", "uri": "%(uri)", "status": %(status), "addr": "%(addr)"\n'
                   'log-req-encoder = format {"timestamp": "${strftime:%%Y-%%m-%%dT%%H:%%M:%%S}", '
                   '"event": "uwsgi_request", ${msg}}\n'
                   "log-req-encoder = nl\n")
    server = start_server(str(ini))
    get(server.port, "/x?y=1")
    line = next(line for line in server.wait_log('"event": "uwsgi_request"').splitlines() if '"uwsgi_request"' in line)
    record = json.loads(line)
    assert (record["method"], record["uri"], record["status"]) == ("GET", "/x?y=1", 200)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", record["timestamp"])


def test_log_req_encoders_prefix_suffix_and_nl_make_one_line(start_server):
    server = start_server("--logformat", "%(method) %(uri)", "--log-req-encoder", "prefix [app] ",
                          "--log-req-encoder", "suffix END", "--log-req-encoder", "nl")
    get(server.port, "/one")
    get(server.port, "/two")
    log = server.wait_log("/two")
    assert "[app] GET /oneEND\n[app] GET /twoEND\n" in log


def test_logformat_strftime_and_ftime(start_server):
    server = start_server("--logformat", "year=%Y t=%(ftime) %(uri)", "--logformat-strftime", "--log-date",
                          "%Y-%m-%dT%H:%M:%S")
    get(server.port, "/a%20b")
    line = next(line for line in server.wait_log("/a%20b").splitlines() if "/a%20b" in line)
    assert re.fullmatch(r"year=\d{4} t=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d /a%20b", line), line


def test_log_micros_and_log_prefix(start_server):
    """As uWSGI: --log-prefix (through strftime) starts the server's own lines; access lines stay as they are (a
    JSON one must stay JSON)."""
    server = start_server("--log-micros", "--log-prefix", "[site-a %Y] ")
    get(server.port, "/")
    log = server.wait_log("GET / =>")
    line = next(line for line in log.splitlines() if "GET / =>" in line)
    assert line.startswith("[pid: ") and re.search(r"generated 13 bytes in \d+ micros", line), line
    own = [line for line in log.splitlines() if "[INFO]" in line]
    assert own and all(re.match(r"\[site-a \d{4}\] ", line) for line in own), own


def test_the_json_encoder_escapes_the_networks_values_once(start_server):
    server = start_server("--logformat", "%(method) %(uri) %(uagent)", "--log-req-encoder", 'json {"m": "${msg}"}')
    user_agent = 'say "hi" \\ caf\u00e9 \u2028 end'
    with RawConnection(server.port) as conn:
        conn.send(b'GET /a"b\\c HTTP/1.1\r\nHost: x\r\nUser-Agent: ' + user_agent.encode() + b"\r\n\r\n")
        conn.read_response()
    line = next(line for line in server.wait_log('{"m": ').split("\n") if line.startswith('{"m": '))
    assert json.loads(line) == {"m": f'GET /a"b\\c {user_agent}'}


def test_log_date_true_means_the_default_date_format(start_server, tmp_path):
    ini = tmp_path / "log.ini"
    ini.write_text("[uwsgi]\nlogdate = true\nlogformat-strftime = true\nlogformat = [%(ftime)] %(uri)\n")
    server = start_server(str(ini))
    get(server.port, "/x")
    line = next(line for line in server.wait_log("] /x").splitlines() if line.endswith("] /x"))
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] /x", line), line


def test_memory_report_starts_each_line_with_the_workers_memory(start_server):
    server = start_server("--memory-report")
    get(server.port, "/")
    line = next(line for line in server.wait_log("GET / =>").splitlines() if "GET / =>" in line)
    match = re.match(r"\{address space usage: (\d+) bytes/(\d+)MB\} \{rss usage: (\d+) bytes/(\d+)MB\} \[pid: ", line)
    assert match, line
    size, size_mb, rss, rss_mb = map(int, match.groups())
    assert size > rss > 1_000_000 and (size_mb, rss_mb) == (size >> 20, rss >> 20)


def test_logformat_with_an_unknown_variable_is_a_startup_error(tmp_path):
    ini, errors = failed_start(tmp_path, "logformat = %(method) %(nonsense)")
    assert f"{ini}:4: option 'logformat': unknown variable %(nonsense)" in errors


@pytest.mark.parametrize("line, error", [
    ("log-req-encoder = msgpack\nlog-req-encoder = nl", "option 'log-req-encoder': unknown encoder 'msgpack'"),
    ("logfile-chmod = 7777", "option 'logfile-chmod': expected a mode of 3 octal digits (640, say), got '7777'"),
    ("logfile-chmod = -1", "option 'logfile-chmod': expected a mode of 3 octal digits"),
    ("logfile-chown = true", "option 'logfile-chown': gives the log files to --uid/--gid: give one of them"),
    ("log-req-encoder = format ${nope}", "option 'log-req-encoder': unknown variable ${nope}"),
    ("log-encoder = json {}", "option 'log-encoder': not supported: encoders of the server's own log lines are not "
                               "built in"),
])
def test_log_encoders_wsgistack_has_not_are_startup_errors(tmp_path, line, error):
    ini, errors = failed_start(tmp_path, line)
    assert f"{ini}:4: {error}" in errors


@pytest.mark.parametrize("threads", ["1", "4"])
def test_add_header_puts_headers_in_every_answer(start_server, threads):
    server = start_server("--add-header", "X-Frame-Options: DENY", "--add-header", "Strict-Transport-Security: "
                          "max-age=63072000", "--threads", threads)
    for path in ("/", "/stream?n=2&delay=0", "/error"):
        status, headers, _ = server.get(path)
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["Strict-Transport-Security"] == "max-age=63072000", path


@pytest.mark.parametrize("header", ["X Bad: v", "X-Split: a\r\nInjected: 1", "no colon"])
def test_an_add_header_that_is_no_header_is_a_startup_error(header):
    result = subprocess.run(WSGISTACK + ["--http", f"127.0.0.1:{free_port()}", "--wsgi-file", str(APPS / "basic.py"),
                                         "--add-header", header], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "option 'add-header': expected 'Name: value'" in result.stderr


@pytest.mark.parametrize("flags, outcome", [((), "raised ConnectionResetError"),
                                            (("--disable-write-exception",), "finished")])
def test_write_to_a_client_gone_away(start_server, tmp_path, flags, outcome):
    """write() on an app thread to a client that hung up raises (an OSError, as uWSGI's IOError), unless
    --disable-write-exception: then it returns quietly and the answer is dropped."""
    env, close_log = close_log_env(tmp_path)
    server = start_server("--threads", "2", *flags, env=env)
    with RawConnection(server.port) as conn:
        conn.request("GET", "/write-on?n=300")
        conn.read_head()
    assert f"write-on {outcome}" in wait_file_contains(close_log, "write-on", timeout=30)
    assert server.get("/")[0] == 200
    assert server.stop() == 0


def test_inline_write_waits_for_a_client_that_does_not_read(start_server, tmp_path):
    """--threads 1: write() runs on the loop's thread, which cannot send meanwhile: what the socket did not take
    piled up in memory (26 MB here, for one client that reads nothing). Now write() waits for the socket, as
    under uWSGI and gunicorn, and --send-timeout ends the wait."""
    env, close_log = close_log_env(tmp_path)
    server = start_server("--threads", "1", "--send-timeout", "2", env=env)
    worker, = wait_until(server.workers, what="the worker")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /write-on?n=400 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert "write-on raised ConnectionResetError" in wait_file_contains(close_log, "write-on", timeout=30)
    assert "took nothing of an answer for 2 s (--send-timeout)" in server.log()
    rss_kb = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{worker}/status").read()).group(1))
    assert rss_kb < 60_000, rss_kb
    assert server.get("/")[0] == 200


def test_inline_write_waits_also_behind_a_pipelined_answer(start_server):
    """The answers batched before a write() app's (pipelined requests) leave the same way: they went to the
    transport first, and write() then found it holding bytes and buffered the rest of its answer too."""
    server = start_server("--threads", "1", "--send-timeout", "2", app="extra.py")
    worker, = wait_until(server.workers, what="the worker")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big-list?size=8000000 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /write-on?n=400 HTTP/1.1\r\nHost: x\r\n\r\n")
        server.wait_log("took nothing of an answer for 2 s (--send-timeout)", timeout=20)
    rss_kb = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{worker}/status").read()).group(1))
    assert rss_kb < 60_000, rss_kb
    assert server.get("/")[0] == 200


@pytest.mark.parametrize("protocol", ["http", "uwsgi"])
def test_inline_write_to_a_slow_reader_arrives_whole(start_server, protocol):
    """The waiting write() sends every byte, in order, on either protocol's socket."""
    if protocol == "http":
        server = start_server("--threads", "1")
        port = server.port
    else:
        port = free_port()
        server = start_server("--threads", "1", "--socket", f"127.0.0.1:{port}", listen=False, wait=False)
        wait_until(lambda: _connects(port), timeout=15, what="the uwsgi socket")
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        if protocol == "http":
            sock.sendall(b"GET /write-on?n=60 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        else:
            sock.sendall(encode_uwsgi_request({"REQUEST_METHOD": "GET", "PATH_INFO": "/write-on", "QUERY_STRING": "n=60",
                                               "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "x"}))
        time.sleep(1)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    if b"chunked" in head.lower():
        body = b"".join(decode_chunks(body))
    assert body == b"x" * 65536 * 60
    assert server.stop() == 0


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def decode_chunks(data: bytes):
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if not size:
            return
        yield data[:size]
        data = data[size + 2:]


def test_wsgi_disable_file_wrapper(start_server):
    """/file answers with environ["wsgi.file_wrapper"]: without the key the app fails (KeyError)."""
    assert start_server().get("/file")[0] == 200
    server = start_server("--wsgi-disable-file-wrapper")
    assert server.get("/file")[0] == 500 and "KeyError: 'wsgi.file_wrapper'" in server.wait_log("KeyError")


def test_logto_writes_to_the_file(start_server, tmp_path):
    logfile = tmp_path / "wsgistack.log"
    server = start_server("--logto", str(logfile))
    get(server.port, "/")
    get(server.port, "/error")
    content = wait_file_contains(logfile, "GET / => generated")
    content = wait_file_contains(logfile, "boom: this traceback")
    assert "(HTTP/1.1 200)" in content
    assert "=> generated" not in server.log()


# --- found by a hostile review (each failed before its fix) ---

@THREAD_MODES
def test_expect_100_continue_with_a_streamed_answer(start_server, threads):
    """--threads 1 runs a request whose body streams (Expect: 100-continue) on a thread of its own: its
    streamed answer must reach the client (it once got nothing at all)."""
    server = start_server("--threads", threads, app="extra.py")
    with RawConnection(server.port) as conn:
        conn.request("POST", "/read-once", {"Expect": "100-continue", "Content-Length": "5"})
        assert conn.read_response().status == 100
        conn.send(b"hello")
        response = conn.read_response()
    assert (response.status, response.body) == (200, b"5")


@THREAD_MODES
def test_a_streamed_body_read_once_arrives_whole(start_server, threads):
    """read(n) on an Expect: 100-continue body returns n bytes, however the client splits them (Django reads
    CONTENT_LENGTH bytes with one read() and trusts it); readline() keeps its lines whole too."""
    server = start_server("--threads", threads, app="extra.py")
    body = b"".join(b"%05d\n" % i for i in range(20000))
    with RawConnection(server.port) as conn:
        conn.request("POST", "/read-once", {"Expect": "100-continue", "Content-Length": str(len(body))})
        assert conn.read_response().status == 100
        for start in range(0, len(body), 10000):
            conn.send(body[start:start + 10000])
            time.sleep(0.01)
        assert conn.read_response().body == str(len(body)).encode()
    with RawConnection(server.port) as conn:
        conn.request("POST", "/lines", {"Expect": "100-continue", "Content-Length": str(len(body))})
        assert conn.read_response().status == 100
        for start in range(0, len(body), 7777):
            conn.send(body[start:start + 7777])
        assert conn.read_response().body == b" ".join([b"6"] * 20000)


@THREAD_MODES
def test_write_after_the_response_raises_and_leaves_the_connection_alone(start_server, tmp_path, threads):
    env, close_log = close_log_env(tmp_path)
    server = start_server("--threads", threads, app="extra.py", env=env)
    with RawConnection(server.port) as conn:
        conn.request("GET", "/late-write")
        assert conn.read_response().body == b"done"
        assert "late write raised ResponseError" in wait_file_contains(close_log, "late write")
        conn.request("GET", "/")
        response = conn.read_response()
        assert (response.status, response.body) == (200, b"Hello, World!")
        assert not conn.buffer, "nothing of the late write may reach the connection"


def test_an_inline_stream_stops_when_its_client_goes_away(start_server, tmp_path):
    """--threads 1: the app's generator runs on the loop thread; a client that left must end it (and close()
    it) at the next chunk, not after the whole stream (which would hold the worker that long)."""
    env, close_log = close_log_env(tmp_path)
    server = start_server("--threads", "1", env=env)
    with RawConnection(server.port) as conn:
        conn.request("GET", "/stream?n=100&delay=0.1&tag=gone")
        conn.read_head()
    started = time.monotonic()
    wait_file_contains(close_log, "closed gone", timeout=5)
    assert time.monotonic() - started < 5, "the stream ran on after the client left"
    server.wait_log("client went away")
    assert server.get("/")[0] == 200


@THREAD_MODES
def test_a_cut_body_that_ends_with_the_close_ends_with_a_reset(start_server, threads):
    """An HTTP/1.0 answer without Content-Length ends with the connection: a FIN would make a cut one look
    whole (to nginx and its cache too), so an app failing midway ends it with a TCP reset."""
    server = start_server("--threads", threads)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /error-after-start HTTP/1.0\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            while sock.recv(65536):
                pass
    server.wait_log("boom mid-stream")


@pytest.mark.parametrize("code", ["100", "101", "103"])
def test_an_interim_status_from_the_app_is_a_500(server, code):
    """1xx answers are interim (RFC 9110 15.2): an app's final status never is one."""
    with RawConnection(server.port) as conn:
        conn.request("GET", f"/status?code={code}")
        assert conn.read_response().status == 500
    server.wait_log("invalid status")


APP_THREAD_OF_CLOSE = '''
import threading

def application(environ, start_response):
    ran_on = threading.current_thread().name

    class Recorded:                      # a file whose close() notes the thread it runs on (Django's FileResponse
        def __init__(self):              # closes its database connections there: request_finished)
            self.file = open(__file__, "rb")
        def read(self, size=-1):
            return self.file.read(size)
        def fileno(self):
            return self.file.fileno()
        def tell(self):
            return self.file.tell()
        def close(self):
            self.file.close()
            with open(environ["QUERY_STRING"], "a") as log:
                log.write(f"{ran_on} {threading.current_thread().name}\\n")

    start_response("200 OK", [("Content-Type", "text/plain")])
    return environ["wsgi.file_wrapper"](Recorded())
'''


def test_a_file_wrappers_close_runs_on_the_requests_thread(start_server, tmp_path):
    """The loop sends the file, but close() runs on the thread that ran the request, as under uWSGI and gunicorn:
    on the loop's thread, Django's request_finished found no database connection to close, and each app thread
    kept one open (up to --threads per worker)."""
    app, notes = tmp_path / "app.py", tmp_path / "closes"
    app.write_text(APP_THREAD_OF_CLOSE)
    server = start_server("--threads", "4", app=str(app))
    for _ in range(4):
        status, _, body = server.get(f"/?{notes}")
        assert status == 200 and body == APP_THREAD_OF_CLOSE.encode()
    pairs = [line.split() for line in wait_until(lambda: notes.exists() and notes.read_text().count("\n") == 4 and
                                                  notes.read_text(), what="four closes").splitlines()]
    assert all(ran_on == closed_on and ran_on.startswith("app-") for ran_on, closed_on in pairs), pairs


# --- streams paused for a slow client (inline: resumed by later loop callbacks) ---

@THREAD_MODES
def test_a_stream_paused_for_a_slow_client_runs_in_one_context(start_server, threads):
    """A generator that resets at its end a ContextVar set in the app (Flask's stream_with_context) failed with
    "created in a different Context" once a slow reader had paused it: the body was cut short."""
    server = start_server("--threads", threads)
    with RawConnection(server.port) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.request("GET", "/ctxvar-stream?blocks=160")
        time.sleep(1.5)                 # the server's socket fills: the stream pauses, resumed as we read
        head = conn.read_head()
        body = conn.read_chunked()
    assert head.status == 200 and len(body) == 160 * 65536
    assert "different Context" not in server.log()
    assert server.stop() == 0


@THREAD_MODES
def test_a_stream_the_client_leaves_is_logged(start_server, tmp_path, threads):
    """An answer cut short by the client is an access-log line (with what was sent), as under uWSGI: inline, a
    paused stream's close() ran, but the request went unlogged and uncounted."""
    env, close_log = close_log_env(tmp_path)
    server = start_server("--threads", threads, env=env)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big?size=40000000&tag=left HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        time.sleep(0.5)
    wait_file_contains(close_log, "closed left\n")
    log = server.wait_log("GET /big?size=40000000&tag=left =>")
    assert re.search(r"GET /big\?size=40000000&tag=left => generated \d+ bytes", log), log
    assert server.stop() == 0
