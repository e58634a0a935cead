"""Exchange (wsgi.py) against a stub connection: what goes out in which write, without sockets."""

from __future__ import annotations

from wsgistack.wsgi import COALESCE_LIMIT, Exchange


class StubWorker:
    date_header = b"Date: Sat, 21 Nov 2026 10:00:00 GMT\r\n"
    counters = None
    stopping = False


class StubTransport:
    def is_closing(self) -> bool:
        return False


class StubConnection:
    """Records every write; the exchange runs inline (as with --threads 1)."""

    closed = write_paused = drains_when_idle = False

    def __init__(self):
        self.worker = StubWorker()
        self.transport = StubTransport()
        self.writes: list[bytes] = []
        self.done = False

    def send(self, data: bytes) -> None:
        self.writes.append(data)

    send_now = send

    def exchange_done(self, exchange) -> None:
        self.done = True

    def abort_after_response(self) -> None:
        pass


def run(app) -> StubConnection:
    conn = StubConnection()
    Exchange(conn, {"REQUEST_METHOD": "GET", "REQUEST_URI": "/"}, app, False, True, True).run()
    assert conn.done
    return conn


def iterable_app(*chunks: bytes, length: int | None = None):
    def app(environ, start_response):
        headers = [("Content-Type", "text/plain")]
        if length is not None:
            headers.append(("Content-Length", str(length)))
        start_response("200 OK", headers)
        return iter(chunks)          # not a list: streamed chunk by chunk
    return app


def test_head_and_first_chunk_leave_in_one_write():
    conn = run(iterable_app(b"hello", length=5))
    assert len(conn.writes) == 1
    assert conn.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and conn.writes[0].endswith(b"\r\n\r\nhello")


def test_later_chunks_and_the_chunked_end_are_written_as_produced():
    conn = run(iterable_app(b"one", b"two"))
    assert [write.split(b"\r\n\r\n")[-1] for write in conn.writes[:1]] == [b"3\r\none\r\n"]
    assert conn.writes[1:] == [b"3\r\ntwo\r\n", b"0\r\n\r\n"]


def test_a_large_first_chunk_is_not_copied_behind_the_head():
    big = b"x" * (COALESCE_LIMIT + 1)
    conn = run(iterable_app(big, length=len(big)))
    assert len(conn.writes) == 2 and conn.writes[0].endswith(b"\r\n\r\n") and conn.writes[1] is big
