"""Compression of answers (--gzip and friends, nginx's gzip directives), against the real server.

The app is tests/apps/compressible.py: whole bodies, a slow stream, write(), a file, answers nginx would not
compress. Bodies are checked by decompressing them; streaming by reading the first part before the app ends.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import time
import zlib

import pytest

from conftest import WSGISTACK, raw_request, wait_until

from apps.compressible import JSON, PAGE
from wsgistack.compression import accepts, coding_weights

GZIP = {"Accept-Encoding": "gzip, deflate, br"}


@pytest.fixture
def gzip_server(start_server, tmp_path):
    page = tmp_path / "page.html"
    page.write_bytes(PAGE)
    env = dict(os.environ, COMPRESSIBLE_FILE=str(page), COMPRESSIBLE_CLOSE_LOG=str(tmp_path / "close.log"))

    def start(*flags: str):
        return start_server("--gzip", *flags, app="compressible.py", env=env)
    return start


def fetch(server, path: str, headers: dict | None = None, method: str = "GET"):
    """status, the response (for repeated headers), body."""
    conn = server.connection()
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("threads", ["1", "4"])
def test_a_whole_body_is_compressed_with_its_length(gzip_server, threads):
    server = gzip_server("--threads", threads, "--gzip-comp-level", "6")
    status, response, body = fetch(server, "/page", GZIP)
    assert status == 200
    assert response.getheader("Content-Encoding") == "gzip"
    assert response.getheader("Content-Length") == str(len(body)) and len(body) < len(PAGE) // 4
    assert gzip.decompress(body) == PAGE
    assert response.getheader("ETag") == 'W/"v1"'                       # another representation: weak
    assert response.headers.get_all("Vary") == ["Cookie", "Accept-Encoding"]
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"


def test_only_for_clients_that_take_gzip_on_http11(gzip_server):
    server = gzip_server()
    for headers in ({}, {"Accept-Encoding": "br"}, {"Accept-Encoding": "gzip;q=0"}, {"Accept-Encoding": "identity"}):
        status, response, body = fetch(server, "/page", headers)
        assert (status, body) == (200, PAGE), headers
        assert response.getheader("Content-Encoding") is None and response.getheader("ETag") == '"v1"'
    assert fetch(server, "/page", {"Accept-Encoding": "*"})[1].getheader("Content-Encoding") == "gzip"
    answer = raw_request(server.port, b"GET /page HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n")   # nginx: 1.1 only
    assert b"Content-Encoding" not in answer and answer.endswith(PAGE)


def test_off_unless_asked(start_server):
    server = start_server(app="compressible.py")
    status, response, body = fetch(server, "/page", GZIP)
    assert body == PAGE and response.getheader("Content-Encoding") is None


def test_what_nginx_leaves_alone(gzip_server):
    server = gzip_server()
    for path in ("/tiny", "/json", "/encoded", "/partial", "/file"):   # short, other type, encoded, 206, a file
        status, response, body = fetch(server, path, GZIP)
        assert response.getheader("Content-Encoding") == ("br" if path == "/encoded" else None), path
        assert body in (b"<p>tiny</p", JSON, PAGE, PAGE[:100]), path
    status, response, body = fetch(server, "/missing", GZIP)       # a 404 page is compressed, as by nginx
    assert status == 404 and gzip.decompress(body) == PAGE


def test_types_and_minimum_length(gzip_server):
    server = gzip_server("--gzip-types", "application/json text/css", "--gzip-min-length", "5000")
    status, response, body = fetch(server, "/json", GZIP)
    assert response.getheader("Content-Encoding") is None and body == JSON    # 1,500 bytes: under the minimum
    assert fetch(server, "/page", GZIP)[2] == PAGE                           # 1,886 bytes: too
    status, response, body = fetch(server, "/stream", GZIP)                # length unknown: compressed
    assert response.getheader("Content-Encoding") == "gzip" and gzip.decompress(body).startswith(b"<p>chunk 0")
    server = gzip_server("--gzip-types", "*")
    status, response, body = fetch(server, "/json", GZIP)
    assert response.getheader("Content-Encoding") == "gzip" and gzip.decompress(body) == JSON


def test_a_stream_is_compressed_as_it_comes(gzip_server):
    server = gzip_server()
    conn = server.connection()
    try:
        started = time.monotonic()
        conn.request("GET", "/stream", headers=GZIP)
        response = conn.getresponse()
        assert response.getheader("Content-Encoding") == "gzip"
        assert response.getheader("Transfer-Encoding") == "chunked"
        decompressor = zlib.decompressobj(31)
        first = decompressor.decompress(response.read1(65536))
        assert first.startswith(b"<p>chunk 0</p>") and time.monotonic() - started < 0.8   # before the app ends
        rest = decompressor.decompress(response.read()) + decompressor.flush()
        assert first + rest == b"".join(b"<p>chunk %d</p>" % index * 20 for index in range(3))
        assert decompressor.eof                                    # the gzip trailer came
    finally:
        conn.close()


@pytest.mark.parametrize("threads", ["1", "4"])
def test_start_response_at_the_first_iteration(gzip_server, tmp_path, threads):
    """PEP 3333 lets an app call start_response when its iterable is first iterated: compressed as any stream
    (it went out uncompressed, its status unknown when the app returned). close() runs once; an exception
    before start_response is still a 500."""
    server = gzip_server("--threads", threads)
    for path in ("/late-start", "/late-start-gen"):
        status, response, body = fetch(server, path, GZIP)
        assert (status, response.getheader("Content-Encoding")) == (200, "gzip"), path
        assert response.getheader("Vary") == "Accept-Encoding" and gzip.decompress(body) == PAGE
    status, response, body = fetch(server, "/late-start-png", GZIP)            # not a compressed type: as it is
    assert (status, body) == (200, PAGE) and response.getheader("Content-Encoding") is None
    status, response, body = fetch(server, "/late-start", GZIP, method="HEAD")
    assert (status, body) == (200, b"") and response.getheader("Content-Encoding") == "gzip"
    assert fetch(server, "/late-start-fails", GZIP)[0] == 500
    assert "failed before start_response" in server.wait_log("failed before start_response")
    close_log = tmp_path / "close.log"
    expected = ["closed /late-start", "closed /late-start", "closed /late-start-fails", "closed /late-start-png"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(close_log.read_text().splitlines()) < len(expected):
        time.sleep(0.05)
    time.sleep(0.2)                                       # a second close() would come by now
    assert sorted(close_log.read_text().splitlines()) == expected


@pytest.mark.parametrize("accept_encoding, compressed", [
    ("gzip;level=1;q=0", False),          # q after another parameter
    ("gzip;level=1;q=0.5", True),
    ("gzip; Q=0", False),                 # the name ignores case
    ("gzip;q=2", False),                  # not a qvalue (RFC 9110 12.4.2): not acceptable, as in nginx
    ("gzip;q=0.0001", False),
    ("gzip;q=1e-3", False),
    ("gzip;q=inf", False),
    ("gzip;q=1.001", False),
    ("gzip;q=, *", False),                # an empty q: not a qvalue either; `*` does not bring gzip back
    ("gzip;q=1.000", True),
    ("gzip;q=0.001", True),
    ("gzip;q=0.", False),                 # "0." is a qvalue, of weight 0
])
def test_accept_encoding_parameters(gzip_server, accept_encoding, compressed):
    server = gzip_server()
    status, response, body = fetch(server, "/page", {"Accept-Encoding": accept_encoding})
    assert status == 200 and (response.getheader("Content-Encoding") == "gzip") == compressed
    assert (gzip.decompress(body) if compressed else body) == PAGE


def test_coding_weights():
    assert coding_weights("gzip, deflate, br") == {"gzip": 1.0, "deflate": 1.0, "br": 1.0}
    assert coding_weights("gzip;q=0.5, br; q=1.0 , *;q=0") == {"gzip": 0.5, "br": 1.0, "*": 0.0}
    assert coding_weights("gzip;level=9;q=0.25;q=1") == {"gzip": 0.25}          # the first q counts
    assert coding_weights("GZIP;Q=0.8, br;q=9, zstd;q=-1, deflate;q=nan") == {"gzip": 0.8, "br": 0.0, "zstd": 0.0,
                                                                              "deflate": 0.0}
    assert not accepts(coding_weights("gzip;q=2, *;q=0"), "gzip")


def test_write_calls_are_compressed(gzip_server):
    status, response, body = fetch(gzip_server(), "/write", GZIP)
    assert response.getheader("Content-Encoding") == "gzip" and gzip.decompress(body) == PAGE


def test_head_gets_the_headers_of_get(gzip_server):
    status, response, body = fetch(gzip_server(), "/page", GZIP, method="HEAD")
    assert (status, body) == (200, b"")
    assert response.getheader("Content-Encoding") == "gzip" and response.getheader("Content-Length") is None


def test_a_wrong_length_is_not_hidden_by_compression(gzip_server):
    """The app declares 10 bytes and sends more: answered as without --gzip (truncated, then closed)."""
    server = gzip_server()
    answer = raw_request(server.port, b"GET /wrong-length HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    assert b"Content-Encoding" not in answer and answer.endswith(PAGE[:10])
    assert "sent more than its Content-Length" in server.wait_log("more than its Content-Length")


@pytest.mark.parametrize("path, complaint", [("/stream-short", "bytes less than its Content-Length"),
                                             ("/stream-long", "more than its Content-Length"),
                                             ("/write-short", "bytes less than its Content-Length")])
def test_a_stream_that_breaks_its_length_does_not_look_complete(gzip_server, path, complaint):
    """A streamed answer compressed loses the app's Content-Length: one that sends less (or more) than it declared
    is logged and cut off, the chunked body left unterminated, so the client sees a truncated answer."""
    server = gzip_server()
    started = time.monotonic()
    answer = raw_request(server.port, b"GET %b HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n" % path.encode(),
                         timeout=10)
    assert time.monotonic() - started < 5                     # the server closed the connection
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head and b"Transfer-Encoding: chunked" in head
    assert not body.endswith(b"0\r\n\r\n")
    assert complaint in server.wait_log(complaint)
    status, response, body = fetch(server, "/stream-exact", GZIP)             # kept: compressed and complete
    assert response.getheader("Content-Encoding") == "gzip" and gzip.decompress(body) == PAGE


def test_keep_alive_goes_on_after_compressed_answers(gzip_server):
    server = gzip_server()
    conn = server.connection()
    try:
        for path in ("/page", "/stream", "/tiny", "/page"):
            conn.request("GET", path, headers=GZIP)
            response = conn.getresponse()
            body = response.read()
            if response.getheader("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            assert body.startswith(b"<"), path
    finally:
        conn.close()


def test_curl_decompresses_what_it_gets(gzip_server):
    server = gzip_server()
    result = subprocess.run(["curl", "-s", "--compressed", "-D", "-", f"http://127.0.0.1:{server.port}/page"],
                            capture_output=True, timeout=30)
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head and body == PAGE


def test_static_files_are_compressed_when_read_whole(start_server, tmp_path):
    docroot = tmp_path / "static"
    docroot.mkdir()
    css = b"body { color: #0a5; }\n" * 100
    (docroot / "site.css").write_bytes(css)
    (docroot / "big.css").write_bytes(css * 100)                 # over 64 KiB: sent by sendfile, as it is
    server = start_server("--gzip", "--gzip-types", "text/css", "--static-map", f"/static={docroot}",
                          app="compressible.py")
    status, response, body = fetch(server, "/static/site.css", GZIP)
    assert response.getheader("Content-Encoding") == "gzip" and gzip.decompress(body) == css
    status, response, body = fetch(server, "/static/site.css", GZIP, method="HEAD")
    assert response.getheader("Content-Encoding") == "gzip" and response.getheader("Content-Length") is None
    status, response, body = fetch(server, "/static/big.css", GZIP)
    assert response.getheader("Content-Encoding") is None and body == css * 100
    assert response.getheader("Accept-Ranges") == "bytes"


def test_a_compressed_answer_is_never_ranged(start_server, tmp_path):
    """As nginx: a compressed answer says no Accept-Ranges, and a Range request that would be answered
    compressed gets the whole compressed body. (A 206 of the plain file would splice two representations
    into a resumed download: `curl -C - --compressed` or `wget -c` got a corrupt file.)"""
    docroot = tmp_path / "static"
    docroot.mkdir()
    css = b"body { color: #0a5; }\n" * 100
    (docroot / "site.css").write_bytes(css)
    server = start_server("--gzip", "--gzip-types", "text/css", "--static-map", f"/static={docroot}",
                          app="compressible.py")
    status, response, body = fetch(server, "/static/site.css", GZIP)
    assert response.getheader("Accept-Ranges") is None
    status, response, body = fetch(server, "/static/site.css", {**GZIP, "Range": "bytes=50-"})
    assert (status, response.getheader("Content-Encoding")) == (200, "gzip") and gzip.decompress(body) == css
    assert response.getheader("Vary") == "Accept-Encoding"
    status, response, body = fetch(server, "/static/site.css", {"Range": "bytes=50-"})     # no gzip: ranged
    assert (status, body) == (206, css[50:])


def test_a_bad_level_is_a_startup_error(tmp_path):
    result = subprocess.run(WSGISTACK + ["--http", "127.0.0.1:1", "--wsgi-file", "x.py", "--gzip",
                                         "--gzip-comp-level", "10"], capture_output=True, text=True, timeout=30,
                            cwd=tmp_path)
    assert result.returncode != 0 and "option 'gzip-comp-level': expected 1 to 9, got 10" in result.stderr



def test_the_apps_errors_and_close_as_without_compression(start_server, tmp_path):
    """exc_info replacing the status, an exception, a rejected header: as without --gzip; close() still runs."""
    close_log = tmp_path / "close.log"
    server = start_server("--gzip", "--gzip-types", "*", app="basic.py",
                          env=dict(os.environ, WSGISTACK_TEST_CLOSE_LOG=str(close_log)))
    status, response, body = fetch(server, "/exc-info", GZIP)
    assert (status, body) == (503, b"oops") and response.getheader("Content-Encoding") is None
    assert fetch(server, "/error", GZIP)[0] == 500
    status, response, body = fetch(server, "/bad-header", GZIP)
    assert status == 500 and b"evil" not in body and response.getheader("Set-Cookie") is None
    status, response, body = fetch(server, "/stream?n=3&delay=0&tag=zipped", GZIP)
    assert response.getheader("Content-Encoding") == "gzip"
    assert gzip.decompress(body) == b"chunk 0\nchunk 1\nchunk 2\n"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "closed zipped" not in (close_log.read_text() if close_log.exists() else ""):
        time.sleep(0.05)
    assert "closed zipped" in close_log.read_text()


@pytest.mark.parametrize("threads", ["1", "4"])
def test_an_error_page_replacing_the_head_goes_uncompressed_and_a_failing_iter_is_closed(gzip_server, tmp_path,
                                                                                         threads):
    """An error middleware replaces the unsent 200 head by a 500 with exc_info: its page came gzip-compressed
    under a head without Content-Encoding (garbage to the client). An iterable whose __iter__ raises was never
    closed with --gzip."""
    server = gzip_server("--threads", threads)
    status, response, body = fetch(server, "/error-page", GZIP)
    assert (status, body) == (500, b"the page failed to render\n")
    assert response.getheader("Content-Encoding") is None and response.getheader("Content-Type") == "text/plain"
    assert fetch(server, "/iter-fails", GZIP)[0] == 500
    close_log = tmp_path / "close.log"
    wait_until(lambda: close_log.exists() and "closed /iter-fails" in close_log.read_text(), timeout=5,
               what="close() of the iterable whose __iter__ raised")
