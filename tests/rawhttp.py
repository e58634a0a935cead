"""A tiny HTTP/1.x client over a raw socket, for tests that must see the exact bytes on the wire,
and the helpers test_http.py and test_wsgi.py share.

Every read has a deadline: nothing here can hang a test.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Both ways of running the app: inline on the event loop (--threads 1) and on a thread pool.
THREAD_MODES = pytest.mark.parametrize("threads", ["1", "4"], ids=["inline", "threaded"])


class PeerClosed(Exception):
    """The server closed the connection before the expected bytes arrived (`partial` holds what did)."""

    def __init__(self, partial: bytes):
        super().__init__(f"connection closed after {len(partial)} bytes")
        self.partial = partial


@dataclass
class Response:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    raw_head: bytes
    body: bytes = b""
    lowered: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.lowered.get(name.lower())

    def has(self, name: str) -> bool:
        return name.lower() in self.lowered


class RawConnection:
    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.buffer = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, path: str, headers: dict | None = None, body: bytes = b"",
                version: str = "HTTP/1.1") -> None:
        lines = [f"{method} {path} {version}", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body and not any(k.lower() in ("content-length", "transfer-encoding") for k in headers or {}):
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    # --- reading ---
    def _fill(self) -> None:
        chunk = self.sock.recv(65536)     # socket timeout bounds every wait
        if not chunk:
            partial, self.buffer = self.buffer, b""
            raise PeerClosed(partial)
        self.buffer += chunk

    def read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def read_until_close(self) -> bytes:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                self._fill()
            except PeerClosed as closed:
                return closed.partial
            except ConnectionResetError:
                break
        partial, self.buffer = self.buffer, b""
        return partial

    def read_head(self) -> Response:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        raw_head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
        version, status, reason = (status_line.split(" ", 2) + [""])[:3]
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in header_lines]
        response = Response(int(status), reason, version, headers, raw_head + b"\r\n\r\n")
        response.lowered = {name.lower(): value for name, value in headers}
        return response

    def read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self.read_line().split(b";")[0], 16)
            if size == 0:
                while self.read_line():     # trailers, up to the empty line
                    pass
                return body
            body += self.read_exact(size)
            assert self.read_line() == b"", "chunk not followed by CRLF"

    def read_response(self, method: str = "GET") -> Response:
        """One whole response; 1xx interim responses are returned too (call again for the final one)."""
        response = self.read_head()
        if method == "HEAD" or response.status < 200 or response.status in (204, 304):
            return response
        if (response.header("transfer-encoding") or "").lower() == "chunked":
            response.body = self.read_chunked()
        elif response.has("content-length"):
            response.body = self.read_exact(int(response.header("content-length")))
        else:
            response.body = self.read_until_close()
        return response

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True if the server closes within `timeout` (bytes it still sends are an error)."""
        self.sock.settimeout(timeout)
        try:
            self._fill()
        except PeerClosed as closed:
            assert not closed.partial, f"unexpected bytes before the close: {closed.partial[:200]!r}"
            return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(self.timeout)
        raise AssertionError(f"unexpected bytes instead of a close: {self.buffer[:200]!r}")


def get(port: int, path: str, method: str = "GET", headers: dict | None = None, body: bytes = b"",
        version: str = "HTTP/1.1") -> Response:
    """One request on a fresh connection."""
    with RawConnection(port) as conn:
        conn.request(method, path, headers, body, version)
        return conn.read_response(method)


def wait_file_contains(path: Path, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    content = path.read_text() if path.exists() else "<missing>"
    raise AssertionError(f"{text!r} not in {path} after {timeout}s: {content!r}")


def close_log_env(tmp_path: Path) -> tuple[dict, Path]:
    """An environment for start_server(env=...) where the test app records each close() in a file."""
    close_log = tmp_path / "close.log"
    return {**os.environ, "WSGISTACK_TEST_CLOSE_LOG": str(close_log)}, close_log
