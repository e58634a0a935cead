"""Static files before the app (--static-map, --static-map2, --check-static, --static-index), over HTTP.

The app behind is tests/apps/dump.py: an answer in JSON means the request went to the app. Paths that
try to leave a mapped directory are sent on raw sockets, as an attacker would send them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
import subprocess
import tempfile
import time
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import pytest

from conftest import DEMO, WSGISTACK, raw_request, responses_in
from wsgistack.static import UNSATISFIABLE, byte_range, normalize_path

HELLO = b"hello, static world\n"
SECRET = b"secret outside the mapped directory\n"
APP_JS = b"console.log('precompressed twins');\n" * 40


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """root/{docroot, second, outside}: what the mappings serve, and what must never be served."""
    root = tmp_path_factory.mktemp("static")
    docroot, second, outside = root / "docroot", root / "second", root / "outside"
    for directory in (docroot, second, outside, docroot / "sub", docroot / "bare"):
        directory.mkdir()
    (docroot / "hello.txt").write_bytes(HELLO)
    (docroot / "site.css").write_text("h1 { color: #0a5; }\n")
    (docroot / "archive.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    (docroot / "sub" / "index.html").write_text("<p>the index</p>\n")
    (docroot / "with space").mkdir()
    (docroot / "with space" / "index.html").write_text("<p>spaced</p>\n")
    (docroot / "bare" / "note.txt").write_text("a directory without an index\n")
    (docroot / "caf\u00e9.txt").write_text("utf-8 name\n")
    (docroot / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (docroot / "both.txt").write_text("from docroot\n")
    (second / "both.txt").write_text("from second\n")
    (second / "only-second.txt").write_text("only in second\n")
    (outside / "secret.txt").write_bytes(SECRET)
    (outside / "linked.txt").write_text("reached through a symlink\n")
    (docroot / "link.txt").symlink_to(outside / "linked.txt")
    os.mkfifo(docroot / "pipe")
    (root / "robots.txt").write_text("User-agent: *\nDisallow:\n")
    (docroot / "app.js").write_bytes(APP_JS)
    (docroot / "app.js.gz").write_bytes(gzip.compress(APP_JS))
    (docroot / "app.js.br").write_bytes(b"brotli stand-in bytes")
    (docroot / "sub" / "only.js").write_bytes(APP_JS)
    (docroot / "sub" / "only.js.gz").write_bytes(gzip.compress(APP_JS))
    return root


@pytest.fixture
def static_server(start_server, tree):
    def start(*flags: str):
        return start_server("--static-map", f"/static={tree / 'docroot'}", *flags, app="dump.py")
    return start


def went_to_app(status: int, body: bytes, path: str) -> bool:
    return status == 200 and json.loads(body)["PATH_INFO"] == path


# --- the seed's command line ---

def test_the_seeds_uwsgi_http_command_line_serves_the_demo(start_server, demo_env):
    """`uwsgi --http 192.168.56.11:80 --file mmcsite/wsgi.py --static-map=/static=static`, from the project
    directory: the page from Django, its stylesheet from the static map."""
    server = start_server("--file", "mmcsite/wsgi.py", "--static-map=/static=static", app=None, cwd=DEMO,
                          env=demo_env)
    status, headers, body = server.get("/static/css/site.css")
    assert status == 200, server.log()
    assert body == (DEMO / "static" / "css" / "site.css").read_bytes()
    assert headers["Content-Type"] == "text/css"
    status, _, page = server.get("/")
    assert status == 200 and b"<h1>mmcsite on wsgistack</h1>" in page
    assert "GET /static/css/site.css => generated" in server.log()      # logged as any request


# --- serving ---

@pytest.mark.parametrize("threads", ["1", "4"])
def test_a_file_with_its_validators(static_server, tree, threads):
    server = static_server("--threads", threads)
    status, headers, body = server.get("/static/hello.txt")
    assert (status, body) == (200, HELLO)
    info = (tree / "docroot" / "hello.txt").stat()
    assert headers["Content-Type"] == "text/plain"
    assert headers["Content-Length"] == str(len(HELLO))
    assert headers["Last-Modified"] == formatdate(int(info.st_mtime), usegmt=True)
    assert headers["ETag"] == f'"{int(info.st_mtime):x}-{len(HELLO):x}"'
    assert headers["Accept-Ranges"] == "bytes"
    status, head_headers, body = server.get("/static/hello.txt", method="HEAD")
    assert (status, body) == (200, b"")
    assert head_headers["Content-Length"] == str(len(HELLO)) and head_headers["ETag"] == headers["ETag"]


def test_content_types(static_server):
    server = static_server()
    assert server.get("/static/site.css")[1]["Content-Type"] == "text/css"
    assert server.get("/static/sub/index.html")[1]["Content-Type"] == "text/html"
    # gzip bytes with no Content-Encoding: a browser must not unpack a download
    _, headers, _ = server.get("/static/archive.tar.gz")
    assert headers["Content-Type"] == "application/octet-stream" and "Content-Encoding" not in headers


def test_a_big_file_twice_on_one_connection(static_server, tree):
    server = static_server()
    expected = hashlib.sha256((tree / "docroot" / "big.bin").read_bytes()).hexdigest()
    conn = server.connection()
    try:
        for _ in range(2):
            conn.request("GET", "/static/big.bin")
            response = conn.getresponse()
            assert response.status == 200
            assert hashlib.sha256(response.read()).hexdigest() == expected
        conn.request("GET", "/static/hello.txt")         # the connection is still in step
        assert conn.getresponse().read() == HELLO
    finally:
        conn.close()


def test_a_slow_download_holds_up_nobody(static_server, tree):
    """One worker, one thread: a client reading a big file slowly waits in the event loop, not in the way."""
    server = static_server()
    expected = (tree / "docroot" / "big.bin").read_bytes()
    with socket.socket() as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)      # the file cannot sit in buffers
        slow.settimeout(10)
        slow.connect(("127.0.0.1", server.port))
        slow.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(0.3)
        started = time.monotonic()
        for _ in range(5):
            assert server.get("/static/hello.txt")[2] == HELLO
            assert went_to_app(*server.get("/app")[0::2], "/app")
        assert time.monotonic() - started < 3
        received = bytearray()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (chunk := slow.recv(1 << 16)):
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == expected


def test_head_of_a_big_file(static_server, tree):
    status, headers, body = static_server().get("/static/big.bin", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == str((tree / "docroot" / "big.bin").stat().st_size)


def test_a_name_in_utf8(static_server):
    status, _, body = static_server().get("/static/caf%C3%A9.txt")
    assert (status, body) == (200, b"utf-8 name\n")


def test_what_is_not_a_file_goes_to_the_app(static_server):
    server = static_server()
    for path in ("/static/missing.txt", "/static/bare", "/static/bare/", "/static/hello.txt/more", "/static",
                 "/static/pipe"):       # a FIFO is not opened for reading (it would block the worker)
        status, _, body = server.get(path)
        assert went_to_app(status, body, path), (path, status, body)


def test_skipped_extensions_go_to_the_app(static_server):
    server = static_server("--static-skip-ext", ".css", "--static-skip-ext", ".tar.gz")
    for path in ("/static/site.css", "/static/archive.tar.gz"):
        status, _, body = server.get(path)
        assert went_to_app(status, body, path), (path, status, body)
    assert server.get("/static/hello.txt")[2] == HELLO


def test_the_mountpoint_ends_at_a_slash(static_server):
    """/statichello.txt is not /static/hello.txt (uWSGI's plain prefix match would serve docroot + "hello.txt")."""
    status, _, body = static_server().get("/statichello.txt")
    assert went_to_app(status, body, "/statichello.txt")


def test_other_methods_on_a_file_get_405_and_elsewhere_reach_the_app(static_server):
    server = static_server()
    status, headers, _ = server.get("/static/hello.txt", method="POST", body=b"x=1")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, _, body = server.get("/static/missing.txt", method="POST", body=b"x=1")
    assert went_to_app(status, body, "/static/missing.txt")


def test_a_symlink_inside_the_directory_is_followed(static_server):
    """nginx's default (disable_symlinks off): the operator put the link there."""
    status, _, body = static_server().get("/static/link.txt")
    assert (status, body) == (200, b"reached through a symlink\n")


# --- paths from a hostile client ---

@pytest.mark.parametrize("target, expected", [
    ("/static/../../outside/secret.txt", 400),                # climbs above /
    ("/static/%2e%2e/%2e%2e/outside/secret.txt", 400),        # the same, percent-encoded
    ("/static/..%2f..%2foutside%2fsecret.txt", 400),          # encoded slashes decode to the same path
    ("/static/sub/../../../outside/secret.txt", 400),
    ("/static/%00hello.txt", 400),                            # NUL
    ("/static//hello.txt", 200),                              # merged slashes: the file
    ("/static/./hello.txt", 200),
    ("/static/sub/../hello.txt", 200),                        # stays inside: the file
])
def test_paths_that_try_to_leave_the_directory(static_server, target, expected):
    server = static_server()
    answer = raw_request(server.port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert responses_in(answer) == [expected], answer
    assert SECRET not in answer
    if expected == 200:
        assert answer.endswith(HELLO)


def test_a_path_resolved_out_of_the_mount_is_the_apps(static_server):
    """/static/../outside/secret.txt is /outside/secret.txt: not under /static, so the app's, never the file."""
    server = static_server()
    answer = raw_request(server.port, b"GET /static/../outside/secret.txt HTTP/1.1\r\nHost: x\r\n"
                                      b"Connection: close\r\n\r\n")
    assert responses_in(answer) == [200] and SECRET not in answer
    assert b'"PATH_INFO": "/static/../outside/secret.txt"' in answer       # the app sees the path as sent


# --- conditional and range requests ---

def test_conditional_requests(static_server):
    server = static_server()
    _, headers, _ = server.get("/static/hello.txt")
    etag, last_modified = headers["ETag"], headers["Last-Modified"]
    cases = [
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": f"W/{etag}"}, 304),                  # weak comparison
        ({"If-None-Match": f'"other", {etag}'}, 304),
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"other"'}, 200),
        ({"If-None-Match": '"other"', "If-Modified-Since": last_modified}, 200),   # If-None-Match decides
        ({"If-Modified-Since": last_modified}, 304),
        ({"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}, 200),
        ({"If-Modified-Since": "not a date"}, 200),
    ]
    for request_headers, expected in cases:
        status, response_headers, body = server.get("/static/hello.txt", headers=request_headers)
        assert status == expected, request_headers
        if expected == 304:
            assert body == b"" and response_headers["ETag"] == etag


def test_preconditions(static_server, tree):
    """RFC 9110 13.1.1, 13.1.4, 13.2.2: If-Match (strong), else If-Unmodified-Since, before the others; 412 when
    false (as nginx), for a Range request too."""
    server = static_server("--static-gzip-ext", ".js")
    _, headers, _ = server.get("/static/hello.txt")
    etag, last_modified = headers["ETag"], headers["Last-Modified"]
    before = "Thu, 02 Jan 2020 03:04:04 GMT"
    cases = [
        ({"If-Match": etag}, 200),
        ({"If-Match": f'"other", {etag}'}, 200),
        ({"If-Match": "*"}, 200),                                # the file is there
        ({"If-Match": '"other"'}, 412),
        ({"If-Match": f"W/{etag}"}, 412),                       # strong comparison: a weak tag never matches
        ({"If-Match": "garbage"}, 412),
        ({"If-Unmodified-Since": last_modified}, 200),
        ({"If-Unmodified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}, 200),
        ({"If-Unmodified-Since": before}, 412),
        ({"If-Unmodified-Since": "not a date"}, 200),            # ignored
        ({"If-Match": etag, "If-Unmodified-Since": before}, 200),   # If-Match decides
        ({"If-Match": '"other"', "If-None-Match": etag}, 412),   # before If-None-Match
        ({"If-Unmodified-Since": before, "If-Modified-Since": last_modified}, 412),
        ({"If-Match": etag, "If-None-Match": etag}, 304),
        ({"If-Match": '"other"', "Range": "bytes=0-4"}, 412),    # before Range
        ({"If-Unmodified-Since": before, "Range": "bytes=0-4"}, 412),
        ({"If-Match": etag, "Range": "bytes=0-4"}, 206),
    ]
    for request_headers, expected in cases:
        status, response_headers, body = server.get("/static/hello.txt", headers=request_headers)
        assert status == expected, request_headers
        if expected == 412:
            assert "ETag" not in response_headers and "Content-Range" not in response_headers
            assert body.startswith(b"412 Precondition Failed")
    status, _, body = server.get("/static/hello.txt", method="HEAD", headers={"If-Match": '"other"'})
    assert (status, body) == (412, b"")
    assert server.get("/static/big.bin", headers={"If-Match": '"other"', "Range": "bytes=0-9"})[0] == 412  # sendfile
    # a precompressed twin is compared by its own ETag; the 412 varies with Accept-Encoding as the 200 does
    _, zipped, _ = server.get("/static/app.js", headers={"Accept-Encoding": "gzip"})
    assert server.get("/static/app.js", headers={"Accept-Encoding": "gzip", "If-Match": zipped["ETag"]})[0] == 200
    status, failed, _ = server.get("/static/app.js", headers={"If-Match": zipped["ETag"]})
    assert status == 412 and failed["Vary"] == "Accept-Encoding"
    assert server.get("/static/app.js", method="POST", headers={"If-Match": '"other"'})[0] == 405  # as nginx


def test_range_requests(static_server, tree):
    server = static_server()
    size = len(HELLO)
    _, headers, _ = server.get("/static/hello.txt")
    cases = [
        ("bytes=0-4", 206, HELLO[:5], f"bytes 0-4/{size}"),
        ("bytes=-6", 206, HELLO[-6:], f"bytes {size - 6}-{size - 1}/{size}"),
        ("bytes=7-", 206, HELLO[7:], f"bytes 7-{size - 1}/{size}"),
        ("bytes=7-1000", 206, HELLO[7:], f"bytes 7-{size - 1}/{size}"),
        (f"bytes={size}-", 416, None, f"bytes */{size}"),
        ("bytes=0-1,4-5", 200, HELLO, None),       # several ranges: the whole file
        ("bytes=5-2", 200, HELLO, None),           # invalid: ignored
        ("lines=0-1", 200, HELLO, None),
    ]
    for range_header, status, body, content_range in cases:
        got_status, got_headers, got_body = server.get("/static/hello.txt", headers={"Range": range_header})
        assert got_status == status, range_header
        if body is not None:
            assert got_body == body, range_header
        assert got_headers.get("Content-Range") == content_range, range_header
    # If-Range: the range only for the version the client has
    assert server.get("/static/hello.txt", headers={"Range": "bytes=0-4", "If-Range": headers["ETag"]})[0] == 206
    assert server.get("/static/hello.txt", headers={"Range": "bytes=0-4", "If-Range": '"old"'})[0] == 200
    # a range in the middle of a big file, by sendfile
    data = (tree / "docroot" / "big.bin").read_bytes()
    status, _, body = server.get("/static/big.bin", headers={"Range": "bytes=1000000-2999999"})
    assert status == 206 and body == data[1000000:3000000]


# --- the other mappings ---

def test_index_files_and_the_slash_redirect(static_server):
    server = static_server("--static-index", "index.html")
    status, _, body = server.get("/static/sub/")
    assert (status, body) == (200, b"<p>the index</p>\n")
    status, headers, _ = server.get("/static/sub?page=2")
    assert status == 301 and headers["Location"] == "/static/sub/?page=2"
    status, _, body = server.get("/static/bare/")           # no index there: the app
    assert went_to_app(status, body, "/static/bare/")
    status, headers, _ = server.get("/static/with%20space")
    assert status == 301 and headers["Location"] == "/static/with%20space/"


def test_a_file_mapped_to_one_url(start_server, tree):
    server = start_server("--static-map", f"/robots.txt={tree / 'robots.txt'}", app="dump.py")
    assert server.get("/robots.txt")[2] == b"User-agent: *\nDisallow:\n"
    status, _, body = server.get("/robots.txt/more")
    assert went_to_app(status, body, "/robots.txt/more")


def test_several_directories_on_one_mountpoint_in_order(start_server, tree):
    server = start_server("--static-map", f"/static={tree / 'docroot'}", "--static-map",
                          f"/static={tree / 'second'}", app="dump.py")
    assert server.get("/static/both.txt")[2] == b"from docroot\n"
    assert server.get("/static/only-second.txt")[2] == b"only in second\n"


def test_static_map2_and_check_static(start_server, tree):
    server = start_server("--static-map2", f"/docroot={tree}", "--check-static", str(tree / "second"),
                          app="dump.py")
    assert server.get("/docroot/hello.txt")[2] == HELLO                     # tree + /docroot/hello.txt
    assert server.get("/only-second.txt")[2] == b"only in second\n"         # any path, under second/
    status, _, body = server.get("/api/thing")
    assert went_to_app(status, body, "/api/thing")


def test_expiry_rules_in_uwsgis_order(static_server):
    """static-expires (the file's path), then -path-info, -uri, -type; within each, the first that matches."""
    server = static_server("--static-expires-type", "text/css=1", "--static-expires", r"\.css$ 3600",
                           "--static-expires-uri", "^/static/sub/ 5", "--static-expires-type", "text/plain=60")
    for path, seconds in (("/static/site.css", 3600), ("/static/sub/index.html", 5), ("/static/hello.txt", 60)):
        status, headers, _ = server.get(path)
        assert status == 200 and headers["Cache-Control"] == f"max-age={seconds}", path
        expires = parsedate_to_datetime(headers["Expires"]).timestamp()
        assert abs(expires - (time.time() + seconds)) < 60, (path, headers["Expires"])
    assert "Expires" not in server.get("/static/archive.tar.gz")[1]            # no rule for it
    _, headers, _ = server.get("/static/site.css")
    status, headers, _ = server.get("/static/site.css", headers={"If-None-Match": headers["ETag"]})
    assert status == 304 and headers["Cache-Control"] == "max-age=3600"     # fresh again for that long


def test_a_catch_all_expiry_as_uwsgi_configs_write_it(static_server):
    server = static_server("--static-expires", "/* 7776000")           # the regex "/*" matches any path
    for path in ("/static/hello.txt", "/static/archive.tar.gz"):
        assert server.get(path)[1]["Cache-Control"] == "max-age=7776000"


def test_no_expiry_rule_no_expires_header(static_server):
    _, headers, _ = static_server().get("/static/hello.txt")
    assert "Expires" not in headers and "Cache-Control" not in headers


@pytest.mark.parametrize("accept_encoding, twin", [
    ("gzip, deflate, br", "br"),            # brotli preferred
    ("gzip", "gzip"),
    ("br;q=0, gzip;q=0.5", "gzip"),
    ("*", "br"),
    ("*, br;q=0", "gzip"),
    ("br;x=1;q=0, gzip", "gzip"),          # q after another parameter
    ("br;q=2, gzip", "gzip"),              # not a qvalue: br is not acceptable
    ("gzip;q=0", None),
    ("identity", None),
    (None, None),
])
def test_precompressed_twins(static_server, accept_encoding, twin):
    server = static_server("--static-gzip-all")
    headers = {} if accept_encoding is None else {"Accept-Encoding": accept_encoding}
    status, got, body = server.get("/static/app.js", headers=headers)
    assert status == 200 and got["Vary"] == "Accept-Encoding"
    assert got["Content-Type"].endswith("javascript")            # the original's type
    assert got.get("Content-Encoding") == twin
    expected = {None: APP_JS, "gzip": gzip.compress(APP_JS), "br": b"brotli stand-in bytes"}[twin]
    if twin == "gzip":
        assert gzip.decompress(body) == APP_JS
    else:
        assert body == expected


def test_precompressed_twins_have_their_own_validators_and_ranges(static_server, tree):
    server = static_server("--static-gzip-ext", ".js")
    _, plain, _ = server.get("/static/app.js")
    _, zipped, body = server.get("/static/app.js", headers={"Accept-Encoding": "gzip"})
    assert zipped["Content-Encoding"] == "gzip" and zipped["ETag"] != plain["ETag"]
    status, headers, _ = server.get("/static/app.js", headers={"Accept-Encoding": "gzip",
                                                               "If-None-Match": zipped["ETag"]})
    assert status == 304 and headers["Vary"] == "Accept-Encoding"
    status, _, part = server.get("/static/app.js", headers={"Accept-Encoding": "gzip", "Range": "bytes=0-9"})
    assert status == 206 and part == body[:10]               # a range of the bytes sent
    assert "Vary" not in server.get("/static/hello.txt")[1]  # not covered by the rule


def test_precompressed_twins_by_directory_and_regex(static_server, tree):
    server = static_server("--static-gzip-dir", str(tree / "docroot" / "sub"))
    assert server.get("/static/sub/only.js", headers={"Accept-Encoding": "gzip"})[1]["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in server.get("/static/app.js", headers={"Accept-Encoding": "gzip"})[1]
    server = static_server("--static-gzip", r"app\.js$")
    assert server.get("/static/app.js", headers={"Accept-Encoding": "gzip"})[1]["Content-Encoding"] == "gzip"


# --- configuration errors ---

@pytest.mark.parametrize("line, message", [
    ("static-map = static", "option 'static-map': expected MOUNTPOINT=PATH, got 'static'"),
    ("static-map = static=/tmp", "option 'static-map': the mountpoint must start with '/', got 'static'"),
    ("static-map = /static=does-not-exist",
     "option 'static-map': cannot use 'does-not-exist': No such file or directory"),
    ("check-static = hello.txt", "option 'check-static': 'hello.txt' is not a directory"),
    ("static-index = sub/index.html",
     "option 'static-index': expected a file name like index.html, got 'sub/index.html'"),
    ("static-expires = \\.css$", "option 'static-expires': expected REGEX SECONDS, got '\\\\.css$'"),
    ("static-expires = [a 10", "option 'static-expires': invalid regular expression '[a'"),
    ("static-expires-type = text/css 10", "option 'static-expires-type': expected TYPE=SECONDS"),
    ("static-gzip = (", "option 'static-gzip': invalid regular expression '('"),
])
def test_a_bad_mapping_is_a_startup_error_naming_file_and_line(tree, tmp_path, line, message):
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp = 127.0.0.1:1\nwsgi-file = {Path(__file__).parent / 'apps' / 'basic.py'}\n"
                   f"{line}\n")
    result = subprocess.run(WSGISTACK + ["--ini", str(ini)], cwd=tree / "docroot", capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0
    assert f"{ini}:4" in result.stderr and message in result.stderr, result.stderr


# --- units ---

def test_normalize_path():
    assert normalize_path("/a/./b/../c") == "/a/c"
    assert normalize_path("//a///b/") == "/a/b/"
    assert normalize_path("/a/b/..") == "/a/"
    assert normalize_path("/..") is None
    assert normalize_path("/a/../..") is None
    assert normalize_path("/") == "/"


def test_byte_range():
    environ = {"HTTP_RANGE": "bytes=2-5"}
    assert byte_range(environ, 10, '"e"', "date") == (2, 5)
    assert byte_range({"HTTP_RANGE": "bytes=-0"}, 10, '"e"', "date") == UNSATISFIABLE
    assert byte_range({"HTTP_RANGE": "bytes=0-0"}, 0, '"e"', "date") is None      # an empty file: whole
    assert byte_range({"HTTP_RANGE": "bytes=+1-2"}, 10, '"e"', "date") is None
    assert byte_range({"HTTP_RANGE": "bytes=-"}, 10, '"e"', "date") is None
    assert byte_range({"HTTP_RANGE": "bytes=1-2", "HTTP_IF_RANGE": "date"}, 10, '"e"', "date") == (1, 2)
    assert byte_range({}, 10, '"e"', "date") is None
    assert byte_range({"HTTP_RANGE": "BYTES=0-1"}, 10, '"e"', "date") == (0, 1)     # the unit ignores case
    assert byte_range({"HTTP_RANGE": "bytes=\u00b2-3"}, 10, '"e"', "date") is None  # a latin-1 digit is no digit
    assert byte_range({"HTTP_RANGE": "bytes=" + "9" * 5000 + "-"}, 10, '"e"', "date") is None



# --- found by a hostile review (each failed before its fix) ---

def test_a_range_of_an_empty_file_gets_it_whole(start_server, tmp_path):
    """An empty file has no byte to range over: 200 and no body, as nginx (not 416)."""
    (tmp_path / "empty.txt").write_bytes(b"")
    server = start_server("--static-map", f"/s={tmp_path}", app="dump.py")
    for ranges in ("bytes=0-", "bytes=-5", "bytes=0-0"):
        status, headers, body = server.get("/s/empty.txt", headers={"Range": ranges})
        assert (status, headers["Content-Length"], body) == (200, "0", b""), ranges


def test_unreadable_files_and_indexes_are_403(start_server):
    """As nginx: a file or an index file that is there but not readable is a 403 (an index once fell through
    to the app, a 404). Served as nobody when root (root reads any file)."""
    root = Path(tempfile.mkdtemp(prefix="wsgistack-403-"))      # pytest's tmp dirs are closed to other users
    try:
        root.chmod(0o755)
        (root / "public.txt").write_text("public\n")
        (root / "private.txt").write_text("private\n")
        (root / "dir").mkdir()
        (root / "dir" / "index.html").write_text("<p>private index</p>\n")
        for private in (root / "private.txt", root / "dir" / "index.html"):
            private.chmod(0o600 if os.geteuid() == 0 else 0)
        as_nobody = ["--uid", "nobody", "--gid", "nogroup"] if os.geteuid() == 0 else []
        server = start_server("--static-map", f"/s={root}", "--static-index", "index.html", *as_nobody,
                              app="dump.py")
        assert server.get("/s/public.txt")[0] == 200
        assert server.get("/s/private.txt")[0] == 403
        assert server.get("/s/dir/")[0] == 403
    finally:
        for path in sorted(root.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        root.rmdir()


@pytest.mark.parametrize("threads", ["1", "4"])
def test_the_access_log_counts_what_a_client_that_left_took(start_server, tmp_path, threads):
    """A download cut short is logged with the bytes sent, not the file's size (as nginx's $body_bytes_sent
    and uWSGI's log; --log-big and --stats' tx depend on it)."""
    size = 512 * 1024 * 1024
    with open(tmp_path / "huge.bin", "wb") as handle:
        handle.truncate(size)                        # sparse: no disk used
    server = start_server("--threads", threads, "--static-map", f"/s={tmp_path}", app="dump.py")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /s/huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        received = 0
        while received < 1 << 20:
            received += len(sock.recv(65536))
    line = server.wait_log("GET /s/huge.bin => generated", timeout=15)
    sent = int(line.split("GET /s/huge.bin => generated ")[1].split()[0])
    assert 1 << 20 <= sent < size // 2, line
