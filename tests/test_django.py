"""The Django demo site served directly over HTTP, in both app-thread modes.

Django refuses database calls from a thread where an asyncio loop runs; with `--threads 1` the
app runs on the worker's loop thread, so this is where that would show.
"""

import re

import pytest

from conftest import DEMO


@pytest.mark.parametrize("threads", ["1", "4"])
def test_django_page_with_a_database_query(start_server, demo_env, threads):
    server = start_server("--chdir", str(DEMO), "--module", "mmcsite.wsgi", "--threads", threads, app=None,
                          env=demo_env)
    counts = []
    for _ in range(2):
        status, _, body = server.get("/?record=1")      # an INSERT and two SELECTs
        assert status == 200, body[:300]
        counts.append(int(re.search(r'<strong id="count">(\d+)</strong>', body.decode())[1]))
    assert counts[1] == counts[0] + 1


def test_django_post_and_json(start_server, demo_env):
    server = start_server("--chdir", str(DEMO), "--module", "mmcsite.wsgi", app=None, env=demo_env)
    status, _, body = server.get("/api/echo?q=%C3%A9", method="POST", body=b"a=1&b=2",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200
    assert b'"form": {"a": ["1"], "b": ["2"]}' in body
    assert b'"query": {"q": ["\\u00e9"]}' in body
    boundary = "b0undary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--{boundary}--\r\n").encode()
    status, _, body = server.get("/api/echo", method="POST", body=form,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, body[:300]
    assert b'"form": {"a": ["1"]}' in body and f'"body_length": {len(form)}'.encode() in body
    # a view that fails: a 500 for the client, the traceback in the server's log (DEBUG is off)
    status, _, _ = server.get("/api/echo", method="POST", body=b"{not json",
                              headers={"Content-Type": "application/json"})
    assert status == 500
    server.wait_log("JSONDecodeError")
    assert "Internal Server Error: /api/echo" in server.log()
