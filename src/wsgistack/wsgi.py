"""The WSGI adapter (PEP 3333): calling the app, start_response, and framing its response.

One `Exchange` is one request/response. It runs either inline on the event-loop thread
(`--threads 1`) or on an app thread; the connection it writes to owns all socket I/O.
What lives here: status/header validation, Content-Length / chunked / close-delimited
framing, HEAD and no-body statuses, write(), file_wrapper, close(). Parsing lives in protocols/.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys

from wsgistack.body import BodyError

log = logging.getLogger("wsgistack")

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# 1xx answers are interim (RFC 9110, 15.2): never the app's final status
_STATUS = re.compile(r"[2-5][0-9][0-9] [\t -~\x80-\xff]*")
_valid_header_names: set[str] = set()     # names already checked, so the hot path skips the regex
_status_codes: dict[str, int] = {}        # status lines already checked -> their code (int() costs 80 ns)
_MAX_CACHED_NAMES = 2048
_head_cache: dict[tuple, "_Head"] = {}   # (status, *headers) -> serialized
_MAX_CACHED_HEADS = 512
# Set once per worker (configure): --add-header lines, in every answer to the app's requests; whether write() to
# a client gone away raises (ConnectionResetError, an OSError as uWSGI's IOError): not with --disable-write-exception.
_added_head = ""
_write_errors_raise = True
_HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                         "upgrade"))

# A first chunk up to this size leaves in the same write as the response head (larger ones: not worth a copy).
COALESCE_LIMIT = 65536
INTERNAL_ERROR = (b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
                  b"Connection: close\r\n")
INTERNAL_ERROR_BODY = b"Internal Server Error"


class ResponseError(Exception):
    """The app broke the WSGI contract (bad status, bad header, str body...): answered with 500."""


class FileWrapper:
    """wsgi.file_wrapper: iterating reads blocks; the server sends real files with sendfile().
    `length`: at most this many bytes from the file's position (a byte range of a static file)."""

    def __init__(self, filelike, blksize: int = 65536, length: int | None = None):
        self.filelike = filelike
        self.blksize = blksize
        self.length = length
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read = self.filelike.read
        left = self.length
        if left is None:
            while block := read(self.blksize):
                yield block
            return
        while left > 0 and (block := read(min(self.blksize, left))):
            left -= len(block)
            yield block

    def sendfile_span(self) -> tuple[int, int, int] | None:
        """(fd, offset, count) when this is a regular file the kernel can send, else None."""
        try:
            fd = self.filelike.fileno()
            info = os.fstat(fd)
            offset = self.filelike.tell()
        except (AttributeError, OSError, ValueError):
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        count = max(0, info.st_size - offset)
        return fd, offset, count if self.length is None else min(count, self.length)


class Exchange:
    """One request and its response. Created by the connection once the request may reach the app."""

    # Class-level defaults: a new Exchange sets only what differs per request (hot path).
    status: str | None = None
    code = 0
    headers: list | None = None
    head_sent = False
    chunked = False
    remaining: int | None = None     # Content-Length bytes still owed, once the head is sent
    body_bytes = 0
    iterable = None
    iterator = None
    finished = False
    no_body = False                  # HEAD, 1xx, 204 or 304: set with the head, no body bytes are sent
    threaded = False                 # runs on an app thread (else inline, on the loop thread)
    started = 0.0                    # monotonic time the request reached the app, for the access log
    body_stream = None               # a StreamingInput (Expect: 100-continue) still being received
    body = None                      # the request's whole body (memory, temp file): closed once answered
    sent_fd = None                   # a file_wrapper's descriptor duplicated for the loop's sendfile (threads)
    app_released = False             # --threads 1: a helper-thread exchange gave the app back before its end
    overflowed = False               # the app went past its Content-Length
    context = None                   # inline: the contextvars.Context the app's call and iteration run in
    # `Server: wsgistack` unless the app names one: on the HTTP socket. Behind nginx (uwsgi, FastCGI) the answer
    # is nginx's, which names itself (or not: server_tokens), as uWSGI's are.
    names_server = True

    def __init__(self, conn, environ: dict, app, is_head: bool, http11: bool, keep_alive: bool):
        self.conn = conn
        self.environ = environ
        self.app = app
        self.is_head = is_head
        self.http11 = http11
        self.keep_alive = keep_alive

    # --- WSGI callables given to the app ---
    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        code = _status_codes.get(status) if type(status) is str else None
        if code is None:
            code = _check_status(status)
        if type(headers) is not list:
            raise ResponseError(f"response headers must be a list, got {type(headers).__name__}")
        self.status = status
        self.code = code
        self.headers = headers
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's legacy write(): sends the head if needed, then the data, before returning."""
        if type(data) is not bytes:
            raise ResponseError(f"write() takes bytes, got {type(data).__name__}")
        if self.finished:
            # kept by the app past its return (another thread, a later request): the connection is not its own
            raise ResponseError("write() called after the response was complete")
        try:
            if not self.head_sent:
                self._stream(self._head(None), wait=True)
            if data and not self.no_body:      # HEAD, 1xx, 204, 304: no body; never past Content-Length
                self._stream(self._frame(self._clip(data)), wait=True)
        except ConnectionResetError:
            if _write_errors_raise:
                raise

    # --- running ---
    def run(self) -> None:
        """Call the app and send everything it can send now. Inline: returns early if the client is slow."""
        try:
            result = self.app(self.environ, self.start_response)
        except BaseException as exc:
            self._fail(exc)
            self._finish()
            return
        self.iterable = result
        try:
            if (type(result) is list or type(result) is tuple) and not self.head_sent and self.status is not None:
                # The common case: the whole body is known, so one write carries head and body.
                body = b"".join(result) if len(result) != 1 else result[0]
                if type(body) is not bytes:
                    raise ResponseError(f"response body must be bytes, got {type(body).__name__}")
                head = self._head(len(body))
                if self.no_body:
                    data = head
                elif self.remaining == len(body):
                    self.remaining = 0
                    self.body_bytes = len(body)
                    data = head + body
                else:
                    data = head + self._clip(body)
                conn = self.conn
                if self.threaded:
                    conn.from_thread(conn.send, data)
                    self._finish()
                    return
                conn.send(data)
                if type(result) is list and not self.remaining:
                    self.finished = True     # _finish(), short: a list has no close(), no bytes are owed
                    conn.exchange_done(self)
                else:
                    self._finish()
                return
            if type(result) is FileWrapper and self.status is not None and not self.head_sent:
                span = result.sendfile_span()
                if span is not None:
                    self._sendfile(span)
                    return
            self.iterator = iter(result)
        except BaseException as exc:
            self._fail(exc)
            self._finish()
            return
        self.pump()

    def pump(self) -> None:
        """Send the app's chunks as produced; inline, stop while the client's socket is full."""
        conn = self.conn
        try:
            for chunk in self.iterator:
                if type(chunk) is not bytes:
                    raise ResponseError(f"response iterable yielded {type(chunk).__name__}, not bytes")
                data = b""
                if not self.head_sent:
                    # One write for head and first chunk: an iterable of one chunk (Django's HttpResponse)
                    # then costs the peer (nginx) one read, and us one send, not two.
                    data = self._head(None)
                    if len(chunk) > COALESCE_LIMIT:
                        self._stream(data)
                        data = b""
                if chunk and not self.no_body:
                    data += self._frame(self._clip(chunk))
                if data:
                    self._stream(data)
                if conn.closed or self.overflowed:
                    break
                if conn.write_paused and not self.threaded:
                    return              # resume_writing calls pump() again; app threads wait in the connection
            else:
                if not self.head_sent:
                    if self.status is None:
                        raise ResponseError("the app returned without calling start_response")
                    self._stream(self._head(0))
                if self.chunked:
                    self._stream(b"0\r\n\r\n")
        except BaseException as exc:
            self._fail(exc)
        self._finish()

    # --- framing ---
    def _head(self, known_length: int | None) -> bytes:
        """Serialize status and headers; `known_length` is the body size when the body is already known."""
        if self.status is None:
            raise ResponseError("the app returned without calling start_response")
        try:
            key = (self.names_server, self.status, *self.headers)
            cached = _head_cache.get(key)
        except TypeError:            # unhashable header items: validated (and rejected) below
            key = cached = None
        if cached is None:
            cached = _Head(self.status, self.headers, self.names_server)
            if key is not None:
                if len(_head_cache) >= _MAX_CACHED_HEADS:
                    _head_cache.clear()
                _head_cache[key] = cached
        self.head_sent = True
        no_body = self.no_body = self.is_head or cached.bodyless
        content_length = cached.content_length
        if content_length is not None:
            self.remaining = content_length
            if (self.keep_alive and self.http11 and not cached.wants_close and self.body_stream is None
                    and not self.conn.worker.stopping):
                # The usual answer: the app's length, kept alive (its head is memoized for this second;
                # one tuple, replaced whole, as app threads may read it while another one renews it).
                date = self.conn.worker.date_header
                memo = cached.keep_alive_head
                if memo[0] is not date:
                    memo = cached.keep_alive_head = (date, cached.prefix + (b"\r\n" if cached.has_date
                                                                             else date + b"\r\n"))
                return memo[1]
        elif known_length is not None and not cached.bodyless and (known_length or not self.is_head):
            # HEAD too: the length a GET would get, when the app gave that body. An empty one is a framework's
            # stripped HEAD body (Werkzeug, Bottle, WebOb): its 0 would be false (RFC 9110, section 8.6).
            self.remaining = known_length
            content_length = known_length
        elif no_body:
            pass
        elif self.http11:
            self.chunked = True
        else:
            self.keep_alive = False   # HTTP/1.0 without a length: the end of the body is the close
        head = cached.prefix if cached.has_date else cached.prefix + self.conn.worker.date_header
        if content_length is not None and cached.content_length is None:
            head += b"Content-Length: %d\r\n" % content_length
        elif self.chunked:
            head += b"Transfer-Encoding: chunked\r\n"
        if cached.wants_close:
            self.keep_alive = False
        elif self.conn.worker.stopping and not self.conn.drains_when_idle:
            self.keep_alive = False     # began before the worker started stopping (an upload, an app thread)
        elif self.body_stream is not None and not self.body_stream.complete:
            # Answered before the whole body arrived (a 401 that never read it): what follows on the
            # connection can't be told from the rest of the body, so this response is the last one.
            self.keep_alive = False
        if not self.keep_alive:
            return head + b"Connection: close\r\n\r\n"
        if not self.http11:
            return head + b"Connection: keep-alive\r\n\r\n"
        return head + b"\r\n"

    def _clip(self, data: bytes) -> bytes:
        """Never send more than the declared Content-Length."""
        if self.remaining is None:
            self.body_bytes += len(data)
            return data
        if len(data) > self.remaining:
            if not self.overflowed:
                log.error("%s %s: app sent more than its Content-Length; response truncated, connection closed",
                          self.environ["REQUEST_METHOD"], self.environ["REQUEST_URI"])
                self.overflowed = True       # pump() stops iterating: nothing more can be sent
            data = data[:self.remaining]
            self.keep_alive = False
            self.conn.abort_after_response()
        self.body_bytes += len(data)     # what was sent, for the access log
        self.remaining -= len(data)
        return data

    def _frame(self, data: bytes) -> bytes:
        if self.chunked and data:
            return b"%x\r\n%b\r\n" % (len(data), data)
        return data

    # --- output, by where we run ---
    def _whole(self, data: bytes) -> None:
        if self.threaded:
            self.conn.from_thread(self.conn.send, data)
        else:
            self.conn.send(data)

    def _stream(self, data: bytes, wait: bool = False) -> None:
        """Send a part of the answer; `wait` (write()): inline, wait for a socket that does not take it at once."""
        if self.threaded:
            self.conn.from_thread_flow(data)
        else:
            conn = self.conn
            if wait:
                conn.send_waiting(data)
            else:
                conn.send_now(data)
            if conn.transport.is_closing():
                # The client is gone (the write failed): the loop would learn it only once the app lets go.
                conn.closed = True
                raise ConnectionResetError("client went away")

    def _sendfile(self, span: tuple[int, int, int]) -> None:
        fd, offset, size = span
        head = self._head(size)            # sets `remaining` to the declared length, or to the file size
        count = 0 if self.no_body else min(size, self.remaining)
        self.body_bytes = count
        self.remaining -= count
        if self.threaded:
            # The loop sends it, and finishes the exchange: the thread is free for other requests at once (it
            # waited for the whole transfer, at a slow client's pace, for hours). The response's close() runs here
            # first, on the request's thread, as under uWSGI and gunicorn: Django's request_finished closes this
            # thread's database connections (on the loop's thread it found none, and they stayed open). The loop
            # sends from a duplicate of the descriptor, which that close() leaves open.
            try:
                fd = self.sent_fd = os.dup(fd)
            except OSError:
                pass                        # no descriptor left: close() then runs on the loop, after the send
            else:
                self._close_iterable()
                if not self.conn.worker.threaded:
                    # --threads 1, an Expect upload's helper thread: the app is done, other requests may run it
                    # during the send (they waited for the whole transfer)
                    self.app_released = True
                    self.conn.from_thread(self.conn.worker.helper_done)
            self.conn.leave_thread()
            self.conn.from_thread(self.conn.send_file, head, fd, offset, count, self._file_sent)
        else:
            self.conn.send_file(head, fd, offset, count, self._file_sent)

    def _file_sent(self, unsent: int) -> None:
        """The sendfile ended, `unsent` bytes short of the count if the client went away or the file shrank."""
        self.body_bytes -= unsent           # the access log and --stats count what was sent
        if self.sent_fd is not None:
            os.close(self.sent_fd)
            self.sent_fd = None
            self._hand_back()               # its close() ran already, on the request's thread
        else:
            self._finish()

    def _fail(self, exc: BaseException) -> None:
        environ = self.environ
        if isinstance(exc, ResponseError):
            log.error("%s %s: invalid response: %s", environ["REQUEST_METHOD"], environ["REQUEST_URI"], exc)
        elif isinstance(exc, BodyError) and not self.conn.closed and not self.head_sent:
            # the client's fault (a body over --limit-post, malformed, cut short): its status, not a 500
            log.info("%s %s: request body failed: %s", environ["REQUEST_METHOD"], environ["REQUEST_URI"], exc)
            self.keep_alive = False
            self.head_sent = True
            self.code = exc.status
            self.remaining = None
            self._whole(self.conn.error_response(exc.status, str(exc)))
            return
        elif isinstance(exc, (ConnectionError, OSError)) and self.conn.closed:
            log.info("%s %s: client went away", environ["REQUEST_METHOD"], environ["REQUEST_URI"])
        else:
            log.error("%s %s: exception in the app", environ["REQUEST_METHOD"], environ["REQUEST_URI"],
                      exc_info=(type(exc), exc, exc.__traceback__))
            worker = self.conn.worker
            if worker.counters is not None:
                worker.counters.exception()
            if worker.config.reload_on_exception:       # from any thread: the loop decides
                worker.loop.call_soon_threadsafe(worker.app_raised)
        self.keep_alive = False
        if not self.head_sent and not self.conn.closed:
            self.head_sent = True
            self.code = 500
            self.remaining = None
            self.body_bytes = len(INTERNAL_ERROR_BODY)
            head = INTERNAL_ERROR + _added_head.encode("latin-1") + self.conn.worker.date_header + b"\r\n"
            self._whole(head + (b"" if self.is_head else INTERNAL_ERROR_BODY))
        elif self.remaining is None and not self.chunked and not self.no_body:
            self.conn.reset_after_response()   # its end is the close: only a reset says it is cut
        else:
            self.conn.abort_after_response()   # a half-sent response can only be ended by closing

    def _finish(self) -> None:
        """Close the iterable (always, PEP 3333), check the length promise, hand back to the connection."""
        if self.finished:
            return
        if type(self.iterable) is list:      # the common case has nothing to close
            self.finished = True
        else:
            self._close_iterable()
        self._hand_back()

    def _hand_back(self) -> None:
        """Check the length promise, and give the connection back for its next request."""
        if self.remaining and not self.conn.closed and not self.no_body:
            log.error("%s %s: app sent %d bytes less than its Content-Length; connection closed",
                      self.environ["REQUEST_METHOD"], self.environ["REQUEST_URI"], self.remaining)
            self.keep_alive = False
            self.conn.abort_after_response()
        if self.threaded:
            self.conn.from_thread(self.conn.exchange_done, self)
        else:
            self.conn.exchange_done(self)

    def abandon(self) -> None:
        """The client went away while an inline stream was paused: close the app's iterable (in the answer's
        context, as its iteration ran)."""
        if not self.finished:
            if self.context is not None:
                self.context.run(self._close_iterable)
            else:
                self._close_iterable()

    def _close_iterable(self) -> None:
        """PEP 3333: close() on the app's iterable, always, exactly once."""
        self.finished = True
        close = getattr(self.iterable, "close", None)
        if close is not None:
            try:
                close()
            except BaseException:
                log.exception("%s %s: exception in the response's close()", self.environ["REQUEST_METHOD"],
                              self.environ["REQUEST_URI"])
                self.keep_alive = False


class _Head:
    """A validated, serialized status + headers from an app, cached by their value.

    Framing is ours: hop-by-hop headers are dropped (PEP 3333 forbids them to apps), except that
    `Connection: close` is honoured.
    """

    __slots__ = ("prefix", "content_length", "wants_close", "has_date", "bodyless", "keep_alive_head")

    def __init__(self, status: str, headers: list, names_server: bool):
        self.prefix, self.content_length, self.wants_close, self.has_date = _serialize_head(status, headers,
                                                                                           names_server)
        code = int(status[:3])
        self.bodyless = code < 200 or code == 204 or code == 304     # never a body, whatever the method
        self.keep_alive_head: tuple[bytes | None, bytes] = (None, b"")   # (Date header, head) for that second


def _serialize_head(status: str, headers: list, names_server: bool) -> tuple[bytes, int | None, bool, bool]:
    """Validate and serialize: (status line + headers, Content-Length, close?, has Date?)."""
    no_content = status[:3] == "204"        # a 204 carries no Content-Length (RFC 9110, section 8.6), as nginx
    parts = ["HTTP/1.1 ", status, "\r\n"]
    has_server = has_date = wants_close = False
    content_length = None
    for header in headers:
        try:
            name, value = header
        except (TypeError, ValueError):
            raise ResponseError(f"response header {header!r} is not a (name, value) pair") from None
        if type(name) is not str or type(value) is not str:
            raise ResponseError(f"response header {header!r}: name and value must be str")
        if name not in _valid_header_names:
            _check_header_name(name)
        lowered = name.lower()
        if lowered == "content-length":
            if content_length is not None or not value.isdigit() or not value.isascii():
                raise ResponseError(f"invalid or repeated Content-Length {value!r}")
            content_length = int(value)
            if no_content:
                content_length = None
                continue
        elif lowered in _HOP_BY_HOP:
            wants_close = wants_close or (lowered == "connection" and "close" in value.lower())
            continue
        has_server = has_server or lowered == "server"
        has_date = has_date or lowered == "date"
        parts += (name, ": ", value, "\r\n")
    text = "".join(parts)
    lines = len(parts) // 4 + 1
    if text.count("\n") != lines or text.count("\r") != lines or "\0" in text:
        raise ResponseError("a response header contains CR, LF or NUL")
    text += _added_head
    if names_server and not has_server:
        text += "Server: wsgistack\r\n"
    try:
        return text.encode("latin-1"), content_length, wants_close, has_date
    except UnicodeEncodeError:
        raise ResponseError("response status or headers are not latin-1 (PEP 3333)") from None


def added_headers(texts: list[str]) -> str:
    """--add-header values ('Name: value') as head lines; ValueError for one that is not a valid header."""
    lines = []
    for text in texts:
        name, colon, value = text.partition(":")
        value = value.strip()
        if not colon or not _TOKEN.fullmatch(name) or any(c in value for c in "\r\n\0"):
            raise ValueError(f"expected 'Name: value', got {text!r}")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"the value of {text!r} is not latin-1") from None
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines)


def configure(config) -> None:
    """The worker's --add-header and --disable-write-exception (checked by cli.py before)."""
    global _added_head, _write_errors_raise
    _added_head = added_headers(config.add_header)
    _write_errors_raise = not config.disable_write_exception
    _head_cache.clear()


def _check_status(status) -> int:
    if type(status) is not str or not _STATUS.fullmatch(status):
        if type(status) is str and status[:1] == "1":
            raise ResponseError(f"invalid status {status!r}: a 1xx answer is interim, never the final one")
        raise ResponseError(f"invalid status {status!r}: must be a str like '200 OK'")
    code = int(status[:3])
    if len(_status_codes) < _MAX_CACHED_NAMES:
        _status_codes[status] = code
    return code


def _check_header_name(name: str) -> None:
    if not _TOKEN.fullmatch(name):
        raise ResponseError(f"invalid response header name {name!r}")
    if len(_valid_header_names) < _MAX_CACHED_NAMES:
        _valid_header_names.add(name)


def base_environ(*, multithread: bool, multiprocess: bool, errors=None) -> dict:
    """The keys every request shares; per-connection and per-request keys are added to a copy."""
    return {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": errors if errors is not None else sys.stderr,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
        "SCRIPT_NAME": "",
    }
