"""--mount and --manage-script-name (mounts.py): several apps in one server, each under its URL prefix."""

from __future__ import annotations

import socket

import pytest

from conftest import failed_start, free_port, wait_for_port
from wsgistack.protocols.uwsgi_codec import encode_uwsgi_request

NAMED_APP = '''\
def application(environ, start_response):
    body = f"{NAME} {environ['SCRIPT_NAME']!r} {environ['PATH_INFO']!r}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.fixture
def apps(tmp_path):
    """tmp_path/{one.py, two_pkg/app.py, deep.py, main.py}: apps that answer with their name, SCRIPT_NAME and PATH_INFO."""
    for name, path in (("one", "one.py"), ("two", "two_pkg/app.py"), ("deep", "deep.py"), ("main", "main.py")):
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text(f"NAME = {name!r}\n" + NAMED_APP)
    return tmp_path


def answer(server, path: str) -> tuple[int, str]:
    status, _, body = server.get(path)
    return status, body.decode()


def test_managed_script_names_choose_by_path(start_server, apps):
    server = start_server("--wsgi-file", apps / "main.py", "--mount", f"/one={apps / 'one.py'}",
                          "--mount", "/two=two_pkg.app:application", "--mount", f"/two/deep/={apps / 'deep.py'}",
                          "--manage-script-name", "--pythonpath", apps, app=None)
    assert answer(server, "/one/x?q=1") == (200, "one '/one' '/x'")
    assert answer(server, "/one") == (200, "one '/one' ''")
    assert answer(server, "/oneself") == (200, "main '' '/oneself'")          # a whole segment, not a prefix
    assert answer(server, "/two/a/b") == (200, "two '/two' '/a/b'")
    assert answer(server, "/two/deep/c") == (200, "deep '/two/deep' '/c'")      # the longest mountpoint wins
    assert answer(server, "/") == (200, "main '' '/'")
    assert server.stop() == 0


def test_without_a_main_app_the_rest_is_404(start_server, apps):
    server = start_server("--mount", f"/one={apps / 'one.py'}", "--manage-script-name", app=None)
    assert answer(server, "/one/") == (200, "one '/one' '/'")
    status, body = answer(server, "/other")
    assert status == 404 and "no application is mounted here" in body
    assert server.stop() == 0


def uwsgi_answer(port: int, script_name: str, path: str) -> str:
    packet = encode_uwsgi_request({"REQUEST_METHOD": "GET", "SCRIPT_NAME": script_name, "PATH_INFO": path,
                                   "QUERY_STRING": "", "REQUEST_URI": script_name + path, "SERVER_PROTOCOL": "HTTP/1.1",
                                   "SERVER_NAME": "localhost", "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1",
                                   "HTTP_HOST": "localhost"})
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(packet)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2].decode()


def test_without_manage_script_name_the_web_servers_script_name_chooses(start_server, apps):
    """nginx: `location /one { include uwsgi_params; uwsgi_param SCRIPT_NAME /one; uwsgi_modifier1 30; ... }`."""
    port = free_port()
    server = start_server("--socket", f"127.0.0.1:{port}", "--wsgi-file", apps / "main.py",
                          "--mount", f"/one={apps / 'one.py'}", app=None, listen=False, wait=False)
    wait_for_port(port, proc=server.proc)
    assert uwsgi_answer(port, "/one", "/x") == "one '/one' '/x'"
    assert uwsgi_answer(port, "", "/one/x") == "main '' '/one/x'"
    assert server.stop() == 0


@pytest.mark.parametrize("value, message", [
    ("one.py", "option 'mount': expected MOUNTPOINT=APP, got 'one.py'"),
    ("one=one.py", "option 'mount': the mountpoint must start with '/', got 'one'"),
])
def test_a_bad_mount_is_a_startup_error_naming_file_and_line(tmp_path, value, message):
    ini, errors = failed_start(tmp_path, f"mount = {value}")
    assert f"{ini}:4: {message}" in errors


def test_a_mounted_app_that_does_not_import_stops_the_start(tmp_path):
    ini, errors = failed_start(tmp_path, "mount = /x=no_such_module_here")
    assert f"{ini}:4: option 'mount': cannot import 'no_such_module_here'" in errors
