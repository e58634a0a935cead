"""Debian's nginx in front of wsgistack, with the seed's server block, serving the real Django demo over
uwsgi (TCP and unix socket), FastCGI (kept connections) and proxy_pass to --http (keep-alive upstream).

Every test runs once per protocol. A second app (tests/apps/basic.py) is mounted at /basic/ on each site
for what Django can't show: the raw environ, a 10 MB body, a stream whose close() is logged.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import APPS, ServerProcess, free_port, wait_for_port, wait_until
from nginx import Nginx, require_nginx

DEMO = Path(__file__).resolve().parent.parent / "examples" / "mmcsite"
PROTOCOLS = ("uwsgi", "uwsgi-unix", "fastcgi", "http")
KEEPALIVE_PROTOCOLS = ("fastcgi", "http")
TIMEOUT = 30.0
CLIENT_ADDRESS = "127.0.0.2"
STATIC_BIG_SIZE = 3 * 1024 * 1024 + 5     # a static file larger than any socket buffer      # not nginx's own address, so the app can tell who it sees

# The seed's server block (its conf.d/django.conf), verbatim apart from the listen address, server_name and
# what passes requests on: {django} holds the seed's `include uwsgi_params; uwsgi_pass 127.0.0.1:3031;
# uwsgi_ignore_client_abort on;` or its equivalent for the protocol. {basic} adds the test app's location.
SEED_SERVER = """
server {{
    listen       127.0.0.1:{port};
    server_name  127.0.0.1;
    client_max_body_size 5M;
    gzip on;
    gzip_buffers 32 4K;#压缩在内存中缓冲32块 每块4K
    gzip_comp_level 6 ;#压缩级别 推荐6
    gzip_min_length 4000;#开始压缩的最小长度4bit
        gzip_types text/plain application/json application/javascript application/x-javascript application/css application/xml application/xml+rss text/javascript application/x-httpd-php image/jpeg image/gif image/png image/x-ms-bmp;
        location / {{
{django}
        }}
{basic}
        error_page 404 /404.html;
            location = /40x.html {{
        }}

        error_page 500 502 503 504 /50x.html;
            location = /50x.html {{
        }}

}}
"""

# How each protocol passes a request on; {ignore} is *_ignore_client_abort.
PASS_DIRECTIVES = {
    "uwsgi": """              include uwsgi_params;
              uwsgi_pass {target};
              uwsgi_ignore_client_abort {ignore};""",
    "fastcgi": """              include fastcgi_params;
              fastcgi_pass {target};
              fastcgi_keep_conn on;
              fastcgi_ignore_client_abort {ignore};""",
    "http": """              proxy_pass http://{target};
              proxy_http_version 1.1;
              proxy_set_header Connection "";
              proxy_set_header Host $host;
              proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
              proxy_set_header X-Forwarded-Proto $scheme;
              proxy_ignore_client_abort {ignore};""",
}

# The test app's location: the /basic prefix is cut off; unbuffered, and client aborts passed on (nginx's
# default; the seed's location ignores them), so a client abort reaches wsgistack as a closed connection at
# once (buffered, nginx's uwsgi module would only notice when its buffer fills or the response ends).
BASIC_LOCATION = """        location /basic/ {{
              rewrite ^/basic(/.*)$ $1 break;
              {module}_buffering off;
{directives}
        }}"""
NGINX_MODULES = {"uwsgi": "uwsgi", "fastcgi": "fastcgi", "http": "proxy"}


@dataclass
class Backend:
    """One wsgistack process listening on every protocol at once."""
    server: ServerProcess
    addresses: dict[str, str]     # protocol -> what nginx's *_pass directive names

    def target(self, protocol: str, name: str) -> str:
        """The *_pass target: a direct address (as the seed), or the keep-alive upstream block's name."""
        return f"{name}_{protocol}" if protocol in KEEPALIVE_PROTOCOLS else self.addresses[protocol]


def start_backend(name: str, root: Path, app_flags: list[str], env: dict, cwd: Path | None = None) -> Backend:
    uwsgi_port, fastcgi_port, http_port = free_port(), free_port(), free_port()
    unix_path = root / f"{name}.sock"
    server = ServerProcess([
        "--socket", f"0.0.0.0:{uwsgi_port}",          # the seed's `socket = 0.0.0.0:3031`
        "--socket", str(unix_path), "--chmod-socket", "666",
        "--fastcgi-socket", f"127.0.0.1:{fastcgi_port}",
        "--http", f"127.0.0.1:{http_port}",
        "--processes", "2", "--threads", "4",
        "--buffer-size", "32768",                     # room for many cookies, as uWSGI deployments set it
        *app_flags], http_port, root / f"{name}.log", cwd=cwd, env=env)
    try:
        for port in (uwsgi_port, fastcgi_port, http_port):
            wait_for_port(port, proc=server.proc)
    except (RuntimeError, TimeoutError):
        server.stop()
        raise AssertionError(f"wsgistack ({name}) did not start:\n{server.log()}") from None
    return Backend(server, {"uwsgi": f"127.0.0.1:{uwsgi_port}", "uwsgi-unix": f"unix:{unix_path}",
                            "fastcgi": f"127.0.0.1:{fastcgi_port}", "http": f"127.0.0.1:{http_port}"})


def nginx_http_block(backends: dict[str, Backend], ports: dict[str, int]) -> str:
    parts = []
    for name, backend in backends.items():
        for protocol in KEEPALIVE_PROTOCOLS:
            parts.append(f"upstream {name}_{protocol} {{ server {backend.addresses[protocol]}; keepalive 16; }}")
    for protocol, port in ports.items():
        kind = protocol.partition("-")[0]          # uwsgi-unix is uwsgi
        directives = PASS_DIRECTIVES[kind]
        django = directives.format(target=backends["django"].target(protocol, "django"), ignore="on")
        basic = BASIC_LOCATION.format(module=NGINX_MODULES[kind], directives=directives.format(
            target=backends["basic"].target(protocol, "basic"), ignore="off"))
        parts.append(SEED_SERVER.format(port=port, django=django, basic=basic))
    return "\n".join(parts)


@dataclass
class Stack:
    nginx: Nginx
    backends: dict[str, Backend]
    ports: dict[str, int]
    close_log: Path
    root: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    binary = require_nginx()
    root = tmp_path_factory.mktemp("nginx-stack")
    close_log = root / "close.log"
    env = {**os.environ, "DEMO_DB": str(root / "demo.sqlite3"), "WSGISTACK_TEST_CLOSE_LOG": str(close_log)}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=DEMO, env=env, check=True,
                   timeout=120)
    backends: dict[str, Backend] = {}
    nginx = None
    try:
        backends["django"] = start_backend("django", root, ["--module", "mmcsite.wsgi", "--chdir", str(DEMO),
                                                            "--static-map", "/static=static"], env, cwd=DEMO)
        files = root / "files"
        files.mkdir()
        (files / "big.bin").write_bytes(os.urandom(STATIC_BIG_SIZE))
        backends["basic"] = start_backend("basic", root, ["--wsgi-file", str(APPS / "basic.py"),
                                                          "--static-map", f"/files={files}"], env)
        ports = {protocol: free_port() for protocol in PROTOCOLS}
        nginx = Nginx(binary, root / "nginx", nginx_http_block(backends, ports), list(ports.values()))
        nginx.start()
        yield Stack(nginx, backends, ports, close_log, root)
    finally:
        if nginx is not None:
            nginx.stop()
        for backend in backends.values():
            backend.server.stop()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class Site:
    """The seed's site in front of one protocol."""

    def __init__(self, stack: Stack, protocol: str):
        self.stack = stack
        self.protocol = protocol
        self.port = stack.ports[protocol]

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT,
                                          source_address=(CLIENT_ADDRESS, 0))

    def request(self, method: str, path: str, body=None, headers: dict | None = None) -> Response:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def diagnostics(self) -> str:
        """What to print when a test fails: the logs of both sides."""
        logs = [f"--- nginx ---\n{self.stack.nginx.error_log()[-3000:]}"]
        logs += [f"--- {name} ---\n{backend.server.log()[-3000:]}" for name, backend in self.stack.backends.items()]
        return "\n".join(logs)


@pytest.fixture(params=PROTOCOLS)
def site(request, stack) -> Site:
    return Site(stack, request.param)


@pytest.fixture(params=KEEPALIVE_PROTOCOLS)
def keepalive_site(request, stack) -> Site:
    return Site(stack, request.param)


# --- the Django demo ---

def test_template_page_with_sqlite(site):
    before = site.request("GET", "/?record=1")
    assert before.status == 200, site.diagnostics()
    assert b"<h1>mmcsite on wsgistack</h1>" in before.body and b"/?record=1" not in before.body
    count = int(before.body.split(b'<strong id="count">')[1].split(b"<")[0])
    after = site.request("GET", "/?record=1")
    assert int(after.body.split(b'<strong id="count">')[1].split(b"<")[0]) == count + 1


def test_head(site):
    response = site.request("HEAD", "/")
    assert response.status == 200 and response.body == b""
    assert response.headers["content-type"].startswith("text/html")


def test_post_form(site):
    response = site.request("POST", "/api/echo", body="a=1&a=2&name=%E4%BD%A0%E5%A5%BD&x=a%26b",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 200, site.diagnostics()
    echo = response.json()
    assert echo["method"] == "POST" and echo["form"] == {"a": ["1", "2"], "name": ["你好"], "x": ["a&b"]}


def test_post_json(site):
    document = {"text": "héllo wörld ✓", "numbers": list(range(100)), "nested": {"ok": True}}
    response = site.request("POST", "/api/echo", body=json.dumps(document).encode(),
                            headers={"Content-Type": "application/json"})
    assert response.status == 200, site.diagnostics()
    assert response.json()["json"] == document


def test_upload_4mb_arrives_intact(site):
    body = os.urandom(4 * 1024 * 1024)
    response = site.request("POST", "/api/upload", body=body, headers={"Content-Type": "application/octet-stream"})
    assert response.status == 200, site.diagnostics()
    assert response.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_upload_6mb_is_refused_by_nginx(site):
    # client_max_body_size 5M: nginx answers from the head alone, before any of the body is sent.
    with socket.create_connection(("127.0.0.1", site.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: %d\r\n\r\n" % (6 * 1024 * 1024))
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_chunked_upload(site):
    pieces = [os.urandom(size) for size in (1, 1000, 65536, 300_000, 7)]
    response = site.request("POST", "/api/upload", body=iter(pieces),       # no length: http.client chunks it
                            headers={"Content-Type": "application/octet-stream"})
    assert response.status == 200, site.diagnostics()
    body = b"".join(pieces)
    assert response.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_query_and_path_escapes(site):
    response = site.request("GET", "/api/%65cho?name=%E4%BD%A0%E5%A5%BD&amp=a%26b&plus=a+b&pct=100%25&empty=")
    assert response.status == 200, site.diagnostics()
    echo = response.json()
    assert echo["path"] == "/api/echo"
    assert echo["query"] == {"name": ["你好"], "amp": ["a&b"], "plus": ["a b"], "pct": ["100%"], "empty": [""]}


def test_many_cookies_and_headers(site):
    cookies = {f"cookie{index}": f"value-{index}-" + "v" * 40 for index in range(60)}
    headers = {f"X-Custom-{index}": f"header value {index} " + "h" * 40 for index in range(40)}
    headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
    echo = site.request("GET", "/api/echo", headers=headers)
    assert echo.status == 200, site.diagnostics()
    assert echo.json()["cookies"] == cookies
    environ = site.request("GET", "/basic/environ", headers=headers).json()
    for index in range(40):
        assert environ[f"HTTP_X_CUSTOM_{index}"] == headers[f"X-Custom-{index}"]


def test_remote_addr_and_scheme(site):
    echo = site.request("GET", "/api/echo").json()
    environ = site.request("GET", "/basic/environ").json()
    if site.protocol == "http":
        # proxy_pass: the socket peer is nginx; the client is only named in the headers nginx sets.
        assert echo["remote_addr"] == environ["REMOTE_ADDR"] == "127.0.0.1"
        assert environ["HTTP_X_FORWARDED_FOR"] == CLIENT_ADDRESS
        assert environ["HTTP_X_FORWARDED_PROTO"] == "http"
    else:
        # uwsgi and FastCGI: the vars nginx sends ($remote_addr, $scheme) are the environ.
        assert echo["remote_addr"] == environ["REMOTE_ADDR"] == CLIENT_ADDRESS
        assert environ["REQUEST_SCHEME"] == "http" and environ["SERVER_PORT"] == str(site.port)
    assert echo["scheme"] == environ["wsgi.url_scheme"] == "http"
    assert echo["host"] == "127.0.0.1"
    assert environ["PATH_INFO"] == "/environ" and environ["SCRIPT_NAME"] == ""


def test_app_error_is_passed_on(site):
    response = site.request("GET", "/basic/error")
    assert response.status == 500 and response.body == b"Internal Server Error"


# --- static files (--static-map), answered before the app ---

def test_static_file_with_range_and_revalidation(site):
    css = (DEMO / "static" / "css" / "site.css").read_bytes()
    whole = site.request("GET", "/static/css/site.css")
    assert (whole.status, whole.body) == (200, css), site.diagnostics()
    assert whole.headers["content-type"] == "text/css"
    part = site.request("GET", "/static/css/site.css", headers={"Range": "bytes=5-14"})
    assert (part.status, part.body) == (206, css[5:15])
    assert part.headers["content-range"] == f"bytes 5-14/{len(css)}"
    again = site.request("GET", "/static/css/site.css", headers={"If-None-Match": whole.headers["etag"]})
    assert (again.status, again.body) == (304, b"")
    assert site.request("GET", "/static/css/missing.css").status == 404      # Django's answer: not a file


def test_big_static_file_arrives_intact(site):
    expected = hashlib.sha256((site.stack.root / "files" / "big.bin").read_bytes()).hexdigest()
    response = site.request("GET", "/basic/files/big.bin")
    assert response.status == 200, site.diagnostics()
    assert len(response.body) == STATIC_BIG_SIZE
    assert hashlib.sha256(response.body).hexdigest() == expected
    # a range of it: sendfile from an offset, or (FastCGI) the file read in records up to the range's end
    part = site.request("GET", "/basic/files/big.bin", headers={"Range": "bytes=1000000-2999999"})
    assert part.status == 206 and part.body == response.body[1000000:3000000]


# --- large, streamed and aborted responses ---

def test_10mb_response(site):
    size = 10 * 1024 * 1024
    conn = site.connection()
    try:
        conn.request("GET", f"/basic/big?size={size}")
        response = conn.getresponse()
        assert response.status == 200
        received = 0
        while block := response.read(1 << 20):
            assert block.count(b"x") == len(block)
            received += len(block)
    finally:
        conn.close()
    assert received == size


def test_streamed_response_arrives_progressively(site):
    conn = site.connection()
    try:
        started = time.monotonic()
        conn.request("GET", "/api/stream?n=4&delay=0.4")
        response = conn.getresponse()
        first = response.read1(100)
        first_after = time.monotonic() - started
        rest = response.read()
        total = time.monotonic() - started
    finally:
        conn.close()
    assert first == b"chunk 0\n", site.diagnostics()
    assert first + rest == b"".join(b"chunk %d\n" % index for index in range(4))
    assert first_after < 1.2 < total, f"first chunk after {first_after:.2f}s, all after {total:.2f}s"


def test_client_abort_still_closes_the_iterable(site):
    tag = f"abort-{site.protocol}"
    conn = site.connection()
    started = time.monotonic()
    try:
        # 400 chunks, 20 ms apart: 8 s if nobody stops the app.
        conn.request("GET", f"/basic/stream?n=400&delay=0.02&tag={tag}")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    close_log = site.stack.close_log
    deadline = started + TIMEOUT
    while time.monotonic() < deadline and not (close_log.exists() and f"closed {tag}\n" in close_log.read_text()):
        time.sleep(0.05)
    assert f"closed {tag}\n" in close_log.read_text(), site.diagnostics()
    assert time.monotonic() - started < 6, "the abort must reach the app, not wait for its end"


# --- load and connection reuse ---

def test_200_concurrent_requests(site):
    count = 200
    start_together = threading.Barrier(count, timeout=TIMEOUT)

    def one(index: int) -> tuple[int, int]:
        conn = site.connection()
        try:
            conn.connect()
            start_together.wait()
            if index % 2:
                conn.request("POST", f"/api/echo?i={index}", body=f"n={index}",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
            else:
                conn.request("GET", f"/api/echo?i={index}")
            response = conn.getresponse()
            echo = json.loads(response.read())
            return response.status, int(echo["query"]["i"][0])
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(one, range(count), timeout=2 * TIMEOUT))
    assert results == [(200, index) for index in range(count)], site.diagnostics()


def tcp_states(port: int) -> list[str]:
    """States of the TCP sockets with `port` at either end (Linux /proc/net/tcp; loopback shows both ends)."""
    names = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}
    states = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if port in (int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)):
            states.append(names.get(fields[3], fields[3]))
    return states


def test_upstream_connections_are_kept(keepalive_site):
    site = keepalive_site
    port = int(site.stack.backends["django"].addresses[site.protocol].rpartition(":")[2])
    site.request("GET", "/api/echo")
    before = tcp_states(port)
    for index in range(20):
        assert site.request("GET", f"/api/echo?i={index}").status == 200
    after = tcp_states(port)
    # Kept connections serve the 20 requests: none is opened and closed per request (that leaves TIME_WAITs).
    assert after.count("TIME_WAIT") - before.count("TIME_WAIT") <= 2, (before, after)
    assert after.count("ESTABLISHED") >= 2, after       # an idle kept connection, seen from both ends


# --- FastCGI as nginx configs commonly pass it: without fastcgi_keep_conn (nginx's default), with a
# SCRIPT_NAME of its own, and kept connections through a reload (a backend and an nginx of their own: the cut
# answers make nginx log errors, and the reload restarts the workers) ---

FASTCGI_SERVER = """
upstream fastcgi_kept {{ server {address}; keepalive 16; }}
server {{
    listen 127.0.0.1:{port};
    location /kept/ {{
        rewrite ^/kept(/.*)$ $1 break;
        include fastcgi_params;
        fastcgi_keep_conn on;
        fastcgi_pass fastcgi_kept;
    }}
    location /unbuffered/ {{
        rewrite ^/unbuffered(/.*)$ $1 break;
        include fastcgi_params;
        fastcgi_buffering off;
        fastcgi_pass {address};
    }}
    location /mounted/ {{
        include fastcgi_params;
        fastcgi_param SCRIPT_NAME /mounted;
        fastcgi_pass {address};
    }}
    location / {{
        include fastcgi_params;
        fastcgi_pass {address};
    }}
}}
"""


@dataclass
class FastCGIStack:
    nginx: Nginx
    server: ServerProcess
    port: int

    def diagnostics(self) -> str:
        return f"--- nginx ---\n{self.nginx.error_log()[-3000:]}\n--- wsgistack ---\n{self.server.log()[-3000:]}"


@pytest.fixture(scope="module")
def fastcgi_stack(tmp_path_factory):
    binary = require_nginx()
    root = tmp_path_factory.mktemp("nginx-fastcgi")
    fastcgi_port, port = free_port(), free_port()
    server = ServerProcess(["--fastcgi-socket", f"127.0.0.1:{fastcgi_port}", "--processes", "2", "--threads", "4",
                            "--wsgi-file", str(APPS / "basic.py")], None, root / "wsgistack.log")
    nginx = None
    try:
        try:
            wait_for_port(fastcgi_port, proc=server.proc)
        except (RuntimeError, TimeoutError):
            raise AssertionError(f"wsgistack did not start:\n{server.log()}") from None
        nginx = Nginx(binary, root / "nginx", FASTCGI_SERVER.format(address=f"127.0.0.1:{fastcgi_port}", port=port),
                      [port])
        nginx.start()
        yield FastCGIStack(nginx, server, port)
    finally:
        if nginx is not None:
            nginx.stop()
        server.stop()


def raw_get(port: int, path: str, wait: float) -> tuple[bytes, bytes, str]:
    """GET over HTTP/1.1 kept alive: (head, body, how it ended). "whole" once the body is complete by its framing
    (a chunked body's last chunk, or Content-Length bytes), else "closed" (FIN or reset) or "waiting" (neither
    after `wait` seconds: a client left hanging)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode())
        data, deadline = b"", time.monotonic() + wait
        while True:
            head, separator, body = data.partition(b"\r\n\r\n")
            if separator:
                lines = head.lower().split(b"\r\n")
                if b"transfer-encoding: chunked" in lines and body.endswith(b"\r\n0\r\n\r\n"):
                    return head, body, "whole"
                length = [line.split(b":")[1] for line in lines if line.startswith(b"content-length:")]
                if length and len(body) >= int(length[0]):
                    return head, body, "whole"
            left = deadline - time.monotonic()
            if left <= 0:
                return head, body, "waiting"
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return head, body, "closed"
            data += chunk


@pytest.mark.parametrize("location", ["", "/unbuffered"])
@pytest.mark.parametrize("path", ["/error-after-start", "/short"])
def test_fastcgi_cut_answer_reaches_the_client_cut(fastcgi_stack, location, path):
    """Without fastcgi_keep_conn nginx takes the upstream's FIN for the end of the answer: the app raising midway
    gave the client a chunked answer ended by its last chunk (whole to the client, and to fastcgi_cache), and the
    one sending 20 bytes of its Content-Length 100 left the client waiting for the rest. The reset that ends such
    an answer makes nginx cut the client's connection at once."""
    head, body, end = raw_get(fastcgi_stack.port, location + path, wait=5.0)
    assert head.startswith(b"HTTP/1.1 200 "), fastcgi_stack.diagnostics()
    # Closed, not ended: buffering, nginx drops what it holds of the answer; unbuffered, the client has that part.
    assert end == "closed", (head, body, end)
    if location == "/unbuffered":
        assert b"partial" in body if path == "/error-after-start" else body == b"only twenty bytes!!!"


def test_fastcgi_script_name_from_nginx_mounts_the_app(fastcgi_stack):
    """`fastcgi_param SCRIPT_NAME /mounted;` (after the stock fastcgi_params): the app is mounted there, PATH_INFO
    is the rest of the path (decoded by nginx, as on the http socket). Every URL under /mounted/ reached the
    app as PATH_INFO "/mounted"."""
    conn = http.client.HTTPConnection("127.0.0.1", fastcgi_stack.port, timeout=TIMEOUT)
    try:
        for path in ("/mounted/environ?x=1", "/mounted/%65nviron?x=1"):
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200, fastcgi_stack.diagnostics()
            environ = json.loads(body)
            assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/mounted", "/environ")
            assert (environ["REQUEST_URI"], environ["QUERY_STRING"]) == (path, "x=1")
    finally:
        conn.close()


def test_fastcgi_reload_moves_kept_connections_to_the_new_workers(fastcgi_stack):
    """fastcgi_keep_conn with an upstream keepalive pool: steady traffic (one client, a request every few ms)
    never leaves its kept connection idle for the 0.1 s after which a draining worker closes it, so an old worker
    answered on it with the old code until a second before --reload-mercy (30 s) ran out. It now closes it with
    an answer a second into its drain; nginx opens a new connection, to the new workers, and no request fails
    (POSTs included: nginx would not retry one sent into a closing connection)."""
    stack = fastcgi_stack
    server = stack.server
    old = set(wait_until(lambda: len(server.workers()) == 2 and server.workers(), what="2 workers"))
    errors_before = len(stack.nginx.error_log())
    answers: list[tuple[float, int]] = []      # (when, pid) of each GET
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        # One connection, one request at a time: nginx reuses the same kept connection for each (more clients
        # at once make nginx open new connections, which go to the new workers and hide the old ones').
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=TIMEOUT)
        try:
            count = 0
            while not stop.is_set():
                count += 1
                post = b"post %d" % count
                if count % 3:
                    conn.request("GET", "/kept/pid")
                else:
                    conn.request("POST", "/kept/echo", body=post)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200 or (not count % 3 and body != post):
                    failures.append(f"{response.status} {body[:200]!r}")
                elif count % 3:
                    answers.append((time.monotonic(), int(body)))
                time.sleep(0.005)
        except Exception as exc:        # reported below, with the logs
            failures.append(repr(exc))
        finally:
            conn.close()

    thread = threading.Thread(target=client)
    thread.start()
    try:
        time.sleep(1.0)
        os.kill(server.pid, signal.SIGHUP)
        server.wait_log("reload complete", timeout=TIMEOUT)     # the old workers begin to drain now
        drain_began = time.monotonic()
        time.sleep(5.0)
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert not failures, f"{failures[:5]}\n{stack.diagnostics()}"
    new_errors = stack.nginx.error_log()[errors_before:]
    assert "[error]" not in new_errors and "[warn]" not in new_errors, new_errors
    last_old = max(at for at, pid in answers if pid in old) - drain_began
    assert last_old < 2.5, f"the old workers answered until {last_old:.2f} s into their drain"
    assert sum(at > drain_began + 2.5 and pid not in old for at, pid in answers) > 100


def test_fastcgi_reloads_under_concurrent_posts_fail_no_request(fastcgi_stack):
    """Four clients, GETs and POSTs, two reloads: a kept connection closed a second into a drain sent its
    END_REQUEST alone (uncorked) and its FIN a loop pass later; nginx cached the connection in between and sent
    the next request into it: "upstream prematurely closed", a 502 for each POST."""
    stack = fastcgi_stack
    server = stack.server
    wait_until(lambda: len(server.workers()) == 2, what="2 workers")
    errors_before = len(stack.nginx.error_log())
    failures: list[str] = []
    counts = [0]
    stop = threading.Event()

    def client(number: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=TIMEOUT)
        try:
            count = 0
            while not stop.is_set():
                count += 1
                # the app's 10 ms keeps each kept connection busy as a real page does (the race needs it)
                if count % 2:
                    conn.request("GET", "/kept/sleep?t=0.01")
                else:
                    conn.request("POST", "/kept/sleep?t=0.01", body=b"x" * 100)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200 or body != b"slept":
                    failures.append(f"{response.status} {body[:200]!r}")
                counts[0] += 1
        except Exception as exc:        # reported below, with the logs
            failures.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(2):
            time.sleep(1.0)
            reloads = server.log().count("reload complete")
            os.kill(server.pid, signal.SIGHUP)
            wait_until(lambda: server.log().count("reload complete") > reloads, timeout=TIMEOUT, what="the reload")
            time.sleep(2.5)             # past the old workers' drain grace, traffic on
    finally:
        stop.set()
        for thread in threads:
            thread.join(TIMEOUT)
    assert not failures, f"{failures[:5]}\n{stack.diagnostics()}"
    new_errors = stack.nginx.error_log()[errors_before:]
    assert "[error]" not in new_errors and "[warn]" not in new_errors, new_errors
    assert counts[0] > 100


# --- last, after everything above went through it ---

def test_nginx_logged_no_upstream_trouble(stack):
    """nginx logs what it dislikes in an upstream's answers (invalid headers, premature closes, resets)."""
    expected = ("client intended to send too large body",            # the 6 MB upload
                "a client request body is buffered to a temporary file")
    trouble = [line for line in stack.nginx.error_log().splitlines()
               if any(level in line for level in ("[warn]", "[error]", "[crit]", "[alert]", "[emerg]"))
               and not any(text in line for text in expected)]
    assert not trouble, "\n".join(trouble)
