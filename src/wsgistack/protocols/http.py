"""HTTP/1.1 (RFC 9112) connections: llhttp (via httptools) parses, this file enforces the rest.

llhttp already rejects CL+TE, bad/duplicate Content-Length, bad chunks, bare CR/LF, obs-fold,
bad tokens and control characters (tests/test_http_strict.py proves each). Here: size limits,
Host rules, transfer codings llhttp lets through, Expect, and turning a head into a WSGI environ.
Responses leave in request order; the Exchange (wsgi.py) decides their framing.
"""

from __future__ import annotations

import logging
import re
import sys
from urllib.parse import unquote_to_bytes

import httptools

from wsgistack.body import EMPTY_INPUT, BodyBuffer, BodyError, StreamingInput
from wsgistack.paths import normalize_path
from wsgistack.protocols.connection import MAX_PENDING, Connection, Reject
from wsgistack.protocols.gateway import PeerAllowList, forwarded_scheme
from wsgistack.protocols.uwsgi_codec import NEED_DATA, BodyData, UwsgiProtocolError, body_decoder

log = logging.getLogger("wsgistack")

_REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
            417: "Expectation Failed", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented", 503: "Service Unavailable", 504: "Gateway Timeout",
            505: "HTTP Version Not Supported"}
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
_env_keys: dict[bytes, str] = {}       # raw header name -> environ key ("" = dropped); bounded
_MAX_CACHED_KEYS = 4096
# A bigger read is parsed a slice at a time, stopping once MAX_PENDING requests wait: a read of tiny pipelined
# requests would otherwise all become environs at once (about 1 KB for 18 bytes on the wire). A body known by its
# Content-Length is parsed in one piece.
PARSE_SLICE = 4096


def _environ_key(name: bytes) -> str:
    key = _env_keys.get(name)
    if key is not None:
        return key
    text = name.decode("latin-1").upper()
    if "_" in text:
        key = ""          # would collide with its '-' twin (nginx drops these too)
    elif text == "CONTENT-TYPE":
        key = "CONTENT_TYPE"
    elif text == "CONTENT-LENGTH":
        key = "CONTENT_LENGTH"
    else:
        key = "HTTP_" + text.replace("-", "_")
    if len(_env_keys) < _MAX_CACHED_KEYS:
        _env_keys[name] = key
    return key


# RFC 9110 7.2 (RFC 3986 3.2.2): a reg-name or an IP literal, then an optional port. Checked once per value.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(:[0-9]*)?")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_valid_hosts: set[str] = set()
_MAX_VALID_HOSTS = 1024


def _check_host(host: str) -> None:
    """400 for a Host no URL could have (RFC 9112 3.2): apps build links and redirects from it."""
    if not _HOST.fullmatch(host) or ".." in host:
        raise Reject(400, "invalid Host header")
    if len(_valid_hosts) >= _MAX_VALID_HOSTS:
        _valid_hosts.clear()
    _valid_hosts.add(host)


def _fields_size(headers: list) -> int:
    return sum(len(name) + len(value) + 4 for name, value in headers)


def _merge_repeated_fields(environ: dict, headers: list) -> None:
    """The slow path of on_headers_complete: fields again, repeated ones joined (a second Host is an error),
    dropped names (key "") removed."""
    environ.pop("", None)
    values: dict[str, list[str]] = {}
    for name, value in headers:
        key = _environ_key(name)
        if not key:
            continue
        text = value.decode("latin-1").rstrip(" \t")
        if key not in values:
            values[key] = [text]
        elif key == "HTTP_HOST":
            raise Reject(400, "more than one Host header")
        else:
            values[key].append(text)
    for key, texts in values.items():
        environ[key] = texts[0] if len(texts) == 1 else ("; " if key == "HTTP_COOKIE" else ", ").join(texts)


def _read_version(parser, environ: dict) -> bool:
    """Set SERVER_PROTOCOL; True for HTTP/1.1. llhttp accepts 0.9, 1.0, 1.1 and 2.0 (and errs on others)."""
    version = parser.get_http_version()
    if version == "1.1":
        environ["SERVER_PROTOCOL"] = "HTTP/1.1"
        return True
    if version == "1.0":
        environ["SERVER_PROTOCOL"] = "HTTP/1.0"
        return False
    if version[:1] in ("0", ""):
        raise Reject(400, "HTTP/0.9 is not supported")
    raise Reject(505, f"HTTP/{version} is not supported")


def http_error_response(status: int, detail: str, date_header: bytes, names_server: bool = True) -> bytes:
    """A whole answer of ours (not the app's), ending the connection; `date_header` is the worker's Date line,
    `names_server` as for the app's answers (wsgi.Exchange)."""
    reason = _REASONS.get(status, "Error")
    body = f"{status} {reason}: {detail}\n".encode("latin-1", "replace")
    server = "Server: wsgistack\r\n" if names_server else ""
    return (f"HTTP/1.1 {status} {reason}\r\n{server}Content-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n").encode() + date_header + b"\r\n" + body


class HttpConnection(Connection):
    """HTTP/1.1 to clients (or to nginx's proxy_pass): keep-alive, pipelining, chunked bodies."""

    # Limits, set once per worker process from the config (class attributes: one lookup on the hot path).
    limit_line = limit_fields = limit_field_size = limit_head = limit_post = post_buffering = small_head = 0
    forwarded_from: PeerAllowList | None = None     # --forwarded-allow-ips (None: any peer)

    @classmethod
    def configure(cls, config) -> None:
        # 0: no limit of its own (gunicorn's meaning for its limit_request_* options)
        cls.limit_line = config.limit_request_line or sys.maxsize
        cls.limit_fields = config.limit_request_fields or sys.maxsize
        cls.limit_field_size = config.limit_request_field_size or sys.maxsize
        cls.limit_head = config.limit_request_head or sys.maxsize
        cls.limit_post = config.limit_post
        cls.post_buffering = config.post_buffering
        cls.small_head = min(cls.limit_field_size, cls.limit_head)
        allowed = config.forwarded_allow_ips.replace(",", " ").split()
        if "*" in allowed:
            cls.forwarded_from = None
        else:       # networks as --uwsgi-allow-from's; an empty list trusts no TCP peer
            cls.forwarded_from = PeerAllowList.from_option(allowed, "forwarded-allow-ips") if allowed else \
                PeerAllowList([])

    # --- asyncio.Protocol ---
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.parser = httptools.HttpRequestParser(self)
        self.head_age = 0
        self.head_bytes = 0              # bytes read while the current head is incomplete; -1: a request just ended
        self.head_bound = 0              # at least the bytes of the current head read before this read
        self.big_read = False            # this read could hold a head past a size limit: check it exactly
        self.in_head = False
        self.in_body = False
        self.body_idle = 0               # bytes read in a body since its last data or chunk header (-1: some now)
        self.body_stalled = 0            # seconds an app thread waited on a streamed body (Expect) for bytes
        self.url = b""
        self.headers: list = []
        self.body: BodyBuffer | None = None
        self.streaming: StreamingInput | None = None
        # The body of a request llhttp takes for a protocol switch (Upgrade, which we never do): llhttp leaves it
        # unparsed, so it is framed here (its decoder, and the bytes not decoded yet).
        self.raw_body = None
        self.raw_bytes = bytearray()
        self.stream_paused = False       # reading stopped until the app reads what the stream holds
        self.unparsed = b""              # the rest of a read, parsed once the queue has room (PARSE_SLICE)
        # environ size when no header field repeats: the connection's keys, 4 from the request line,
        # one per field (see on_headers_complete)
        self.env_size = len(self.conn_environ) + 4
        peer = self.conn_environ["REMOTE_ADDR"]
        # may a proxy's X-Forwarded-Proto set the scheme (a unix-socket peer is local: a web server in front)
        self.trusts_forwarded = self.forwarded_from is None or self.forwarded_from.allows(peer)

    def data_received(self, data: bytes, whole: bool = False) -> None:
        if self.closing:
            return                      # also: lingering after close, bytes are dropped
        if len(data) > PARSE_SLICE and not whole:
            self._receive_in_slices(data)
            return
        self.ticks = 0
        if self.raw_body is not None:
            self._raw_body_data(data)
            return
        if not self.in_body:
            self.in_head = True         # any byte outside a body starts a head (even empty lines): it is timed
        # A head is at most this read plus what came before it: when that is within the smallest size
        # limit, no field and no head can be too large, and on_headers_complete skips measuring them.
        self.big_read = len(data) + self.head_bound > self.small_head
        self.batching = True            # responses to this read leave in one write
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.raw_body is not None:      # the body follows the head: read by its framing
                self._raw_body_data(data[upgrade.args[0]:])
            else:
                self.closing = True      # no protocol switch: answer the request, then close
        except httptools.HttpParserCallbackError as exc:
            reject = exc.__context__
            if isinstance(reject, Reject):
                self._reject(reject.status, reject.detail)
            elif isinstance(reject, OSError):       # storing the body: no file descriptor left, disk full
                log.error("cannot store a request body: %s", reject)
                self._reject(500, f"cannot store the request body ({reject.strerror or reject})")
            else:
                log.error("internal error while handling a request", exc_info=reject)
                self._reject(400, "malformed request")
        except httptools.HttpParserInvalidMethodError:
            self._reject(*self._method_error(data))
        except httptools.HttpParserError as exc:
            if not self.closed:          # bytes after a `Connection: close` request are just dropped
                detail = str(exc).strip() or "malformed request"
                # llhttp knows HTTP/0.9 to 2.0; any other version is well-formed, but not ours (RFC 9110 15.6.6)
                self._reject(505 if detail == "Invalid HTTP version" else 400, detail)
        else:
            if self.in_head and data[-1:] == b"\n" and self.url and not self.headers and (
                    self.parser.get_http_version() == "0.0" or data.endswith(b" %s\r\n" % self.url)
                    or data.endswith(b" %s\n" % self.url)):
                # The request line ended with no version: HTTP/0.9, whose client sends nothing more (llhttp
                # would wait for header fields until the header timeout). After a first request llhttp keeps
                # its version: then the line is looked at.
                self._reject(400, "HTTP/0.9 is not supported")
            elif self.in_head:
                self.head_bound += len(data)     # all of it: bytes buffered inside llhttp/httptools too
                # Unparsed bytes count too (a field still arriving). A request that ended in this read
                # leaves only what was parsed of its successor: the read also held earlier requests.
                head_bytes = self.head_bytes
                head_bytes = head_bytes + len(data) if head_bytes >= 0 else len(self.url) + _fields_size(self.headers)
                self.head_bytes = head_bytes
                if head_bytes > self.limit_head:
                    self._reject(431, "request head too large")
            elif self.in_body:
                # Bytes that bring no body data: a chunk line or trailer fields, which llhttp and httptools
                # buffer until their end; bounded like a head.
                if self.body_idle < 0:
                    self.body_idle = 0
                else:
                    self.body_idle += len(data)
                    if self.body_idle > self.limit_head:
                        self._reject(431, "chunk line or trailer section too large")
            elif self.head_bytes < 0:
                self.head_bytes = 0
        self.batching = False
        if self.pending:
            self._after_batch()
        if self.out:
            self._flush()

    def _receive_in_slices(self, data: bytes) -> None:
        start = 0
        while start < len(data) and not self.closing:
            if len(self.pending) > MAX_PENDING:
                self.unparsed = data[start:]
                if not self.reading_paused:
                    self.reading_paused = True
                    self.transport.pause_reading()
                return
            end = start + PARSE_SLICE
            if self.in_body and self.body is not None and self.request is not None:
                length = self.request[0].get("CONTENT_LENGTH")
                if length is not None:
                    end = max(end, start + int(length) - self.body.size)
            self.data_received(data[start:end], True)
            start = end

    def _read_on(self) -> None:
        if self.unparsed:
            self.loop.call_soon(self._parse_unparsed)     # not from inside _run_pending: reading stays paused
        else:
            super()._read_on()

    def _parse_unparsed(self) -> None:
        data, self.unparsed = self.unparsed, b""
        if not data or self.closed:
            return
        self._receive_in_slices(data)
        if not self.unparsed and self.reading_paused and len(self.pending) <= MAX_PENDING // 2 and not self.closed:
            super()._read_on()

    def _after_batch(self) -> None:
        """Requests still queued after a read: start what can start, stop reading past MAX_PENDING."""
        if self.active is None:
            self.batching = True
            self._run_pending()
            self.batching = False
        if len(self.pending) > MAX_PENDING and not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        # A client that half-closes after its requests still gets their answers (all of them: a half-close
        # means no more requests, not fewer answers), then we close.
        if self.closed:
            return False                # the end of a lingering close
        self.closing = self.peer_closed = True
        if self.in_head or self.in_body:
            if self.streaming is not None:
                self.streaming.end(failed=True)
            self.in_head = self.in_body = False
        if self.active is None and not self.pending:
            return False
        return True

    # --- llhttp callbacks (hot path: keep them flat; no on_message_begin, state resets at the end) ---
    def on_url(self, url: bytes) -> None:
        self.in_head = True
        self.url += url
        if len(self.url) > self.limit_line:
            raise Reject(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Called once per field (and per trailer field): the limits are checked once per head, in
        # on_headers_complete; memory is bounded meanwhile by the size checks of each read in data_received.
        self.headers.append((name, value))

    def _check_head_limits(self) -> None:
        headers = self.headers
        if len(headers) > self.limit_fields:
            raise Reject(431, "too many header fields")
        fields_size = _fields_size(headers)
        if fields_size + len(self.url) > self.limit_head:
            raise Reject(431, "request head too large")     # a whole head can arrive in one read
        if fields_size > self.limit_field_size:       # only then can one field be too large
            if any(len(name) + len(value) > self.limit_field_size for name, value in headers):
                raise Reject(431, "header field too large")

    def on_headers_complete(self) -> None:
        self.in_head = False
        url = self.url
        headers = self.headers
        if self.big_read or len(headers) > self.limit_fields:
            self._check_head_limits()           # a limit may be passed: find which, answer 431
        self.headers = []                       # trailer fields, if any, go to a fresh list
        parser = self.parser
        environ = self.conn_environ.copy()
        method = parser.get_method()
        method = environ["REQUEST_METHOD"] = _METHODS.get(method) or method.decode("ascii")
        if url[0] == 47 and 37 not in url and 35 not in url and b"/." not in url:   # no "%", "#", dot segment
            uri = environ["REQUEST_URI"] = url.decode("latin-1")
            environ["PATH_INFO"], _, environ["QUERY_STRING"] = uri.partition("?")
            target_host = None
        else:
            target_host = self._set_target(environ, url)
        env_key = _env_keys.get
        for name, value in headers:
            environ[env_key(name) or _environ_key(name)] = value.decode("latin-1").rstrip(" \t")  # llhttp keeps trailing OWS
        if len(environ) != self.env_size + len(headers) or "" in environ:
            _merge_repeated_fields(environ, headers)     # a name came twice, or one is dropped (key "")
        if self.trusts_forwarded and ("HTTP_X_FORWARDED_PROTO" in environ or "HTTP_X_FORWARDED_SSL" in environ):
            forwarded_scheme(environ)
        keep_alive = parser.should_keep_alive()
        if keep_alive and "HTTP_CONNECTION" not in environ:
            http11 = True       # llhttp keeps a connection open by default for HTTP/1.1 only (it takes 0.9-2.0)
            environ["SERVER_PROTOCOL"] = "HTTP/1.1"
        else:
            http11 = _read_version(parser, environ)   # get_http_version() costs as much as the rest of this block
        host = environ.get("HTTP_HOST")
        if host is None:
            if http11:
                raise Reject(400, "missing Host header")
        elif host not in _valid_hosts:
            _check_host(host)
        if target_host is not None:
            if target_host not in _valid_hosts:
                _check_host(target_host)        # it replaces Host: the same rules
            environ["HTTP_HOST"] = target_host
        if method == "CONNECT":
            raise Reject(501, "CONNECT is not supported: this is no proxy")
        if self.closing:
            keep_alive = False
        if ("CONTENT_LENGTH" in environ or "HTTP_TRANSFER_ENCODING" in environ or "HTTP_EXPECT" in environ
                or "HTTP_UPGRADE" in environ):
            self._framing(environ, http11, keep_alive)
        else:
            environ["wsgi.input"] = EMPTY_INPUT
            self.request = (environ, method == "HEAD", http11, keep_alive, None)

    def _framing(self, environ: dict, http11: bool, keep_alive: bool) -> None:
        """The rest of on_headers_complete for a request with a body, an Expect or an Upgrade."""
        content_length = environ.get("CONTENT_LENGTH")
        transfer_encoding = environ.get("HTTP_TRANSFER_ENCODING")
        if transfer_encoding is not None:
            if not http11:
                raise Reject(400, "Transfer-Encoding in an HTTP/1.0 request")
            if transfer_encoding.lower() != "chunked":
                raise Reject(501, "only the chunked transfer coding is supported")
            has_body = True
        else:
            has_body = content_length is not None and content_length != "0"
        if has_body and self.limit_post and content_length is not None and int(content_length) > self.limit_post:
            raise Reject(413, f"request body larger than {self.limit_post} bytes")
        upgrade = "HTTP_UPGRADE" in environ and self.parser.should_upgrade()
        if upgrade:
            keep_alive = False           # no protocol switch, and llhttp parses nothing after it: the last one
        self.body = None
        expect = environ.get("HTTP_EXPECT")
        if expect is not None:
            if expect.lower() != "100-continue":
                raise Reject(417, "only 'Expect: 100-continue' is supported")
            if has_body and http11:
                if not upgrade and self.worker.may_stream():
                    self._start_streaming(environ, keep_alive)
                    return
                if self.active is None and not self.pending:      # else it would overtake their answers
                    self.send(b"HTTP/1.1 100 Continue\r\n\r\n")    # and the body is buffered, as nginx does
        if has_body and upgrade:
            self.raw_body = body_decoder(environ)     # llhttp would skip the body: framed by _raw_body_data
        if has_body:
            self.in_body = True
            self.body = BodyBuffer(self.post_buffering)
        else:
            environ["wsgi.input"] = EMPTY_INPUT
        self.request = (environ, environ["REQUEST_METHOD"] == "HEAD", http11, keep_alive, None)

    def on_chunk_header(self) -> None:
        self.body_idle = -1

    def on_body(self, data: bytes) -> None:
        self.body_idle = -1
        self.body_stalled = 0
        sink = self.body if self.body is not None else self.streaming
        limit = self.limit_post
        if limit and sink.size + len(data) > limit:
            raise Reject(413, f"request body larger than {limit} bytes")
        if self.streaming is not None:
            if self.streaming.feed(data):            # READ_AHEAD bytes wait for the app: wait for it too
                self.stream_paused = True
                self.transport.pause_reading()
        else:
            sink.append(data)

    def on_message_complete(self) -> None:
        if self.raw_body is not None:
            return                        # llhttp skips the body of an Upgrade request: _raw_body_data reads it
        self.in_body = False
        self.url = b""
        self.head_age = self.head_bound = 0
        self.head_bytes = -1
        if self.headers:                  # trailer fields: ignored, but bounded
            if _fields_size(self.headers) > self.limit_head:
                raise Reject(431, "trailer section too large")
            self.headers = []
        if self.streaming is not None:
            self.streaming.end()
            self.streaming = None
            return
        request = self.request
        self.request = None               # the body is the exchange's from now on, freed with it
        if self.body is not None:
            body_input = request[0]["wsgi.input"] = self.body.as_input()
            request = (*request[:4], body_input)
            self.body = None
        if self.active is None and not self.pending and not self.write_paused:
            self._start(request)          # the usual case: straight to the app, no queue
        else:
            self.pending.append(request)

    # --- helpers of the callbacks ---
    @staticmethod
    def _set_target(environ: dict, url: bytes) -> str | None:
        """Fill PATH_INFO, QUERY_STRING, REQUEST_URI; return the authority of an absolute-form target."""
        host = None
        if url[:1] == b"/":
            path, _, query = url.partition(b"?")
        elif url == b"*":
            if environ["REQUEST_METHOD"] != "OPTIONS":
                raise Reject(400, "the asterisk target is for OPTIONS only")
            path, query = b"*", b""
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                raise Reject(400, "invalid request target") from None
            if parsed.host is None:
                raise Reject(400, "invalid request target")
            if parsed.userinfo:
                raise Reject(400, "user information in the request target")    # RFC 9110 4.2.4
            path, query = parsed.path or b"/", parsed.query or b""
            # absolute-form: the target's authority replaces Host (RFC 9112, section 3.2.2); an IPv6 literal
            # keeps its brackets, as in a Host header
            literal = b"[%s]" % parsed.host if b":" in parsed.host else parsed.host
            host = (literal + (b":%d" % parsed.port if parsed.port else b"")).decode("latin-1")
        if b"#" in path:
            path = path.partition(b"#")[0]
        if b"#" in query:
            query = query.partition(b"#")[0]
        if b"%" in path and _BAD_ESCAPE.search(path):
            raise Reject(400, "a % in the path not followed by two hex digits")     # as nginx: ambiguous otherwise
        path_info = environ["PATH_INFO"] = (unquote_to_bytes(path) if b"%" in path else path).decode("latin-1")
        if "\0" in path_info:
            raise Reject(400, "NUL in the path")
        if "/." in path_info and normalize_path(path_info) is None:
            raise Reject(400, "the path climbs above /")           # as nginx
        environ["QUERY_STRING"] = query.decode("latin-1")
        environ["REQUEST_URI"] = url.decode("latin-1")
        return host

    def _method_error(self, data: bytes) -> tuple[int, str]:
        # The bad method opens the request after the last one this read completed: try the read's
        # start, then each position after a blank line, with a fresh parser (error path only; bounded).
        start = 0
        for _ in range(1000):
            try:
                httptools.HttpRequestParser(None).feed_data(data[start:start + 32].partition(b" ")[0] + b" ")
            except httptools.HttpParserInvalidMethodError:
                break
            except httptools.HttpParserError:
                pass
            start = data.find(b"\r\n\r\n", start) + 4
            if start < 4:
                start = 0
                break
        method = data[start:].lstrip(b"\r\n").split(b" ", 1)[0]
        token = method and all(33 <= c < 127 and c not in b'"(),/:;<=>?@[\\]{}' for c in method)
        return (501, "method not implemented") if token else (400, "invalid method")

    def _start_streaming(self, environ: dict, keep_alive: bool) -> None:
        """Expect: 100-continue: the app runs now, on a thread, and `100 Continue` goes out on its first read."""
        self.in_body = True
        worker, loop = self.worker, self.loop
        worker.stream_started()
        # --threads 1: while the app's thread waits on the client, the loop may run other requests (lend/reclaim)
        stream = StreamingInput(lambda: loop.call_soon_threadsafe(self._send_continue), worker.stream_ended,
                                *((None, None) if worker.threaded else (worker.lend_app, worker.take_app_back)),
                                on_drained=lambda: loop.call_soon_threadsafe(self._resume_stream))
        environ["wsgi.input"] = stream
        self.streaming = stream
        request = (environ, environ["REQUEST_METHOD"] == "HEAD", True, keep_alive, stream)
        if self.active is None and not self.pending:
            self._start(request)
        else:
            self.pending.append(request)

    def _raw_body_data(self, data: bytes) -> None:
        """Bytes of an Upgrade request's body (self.raw_body decodes its framing); once whole, the request goes to
        the app. Nothing after it is read: the connection closes after the answer."""
        self.raw_bytes += data
        try:
            while (event := self.raw_body.next_event(self.raw_bytes)) is not NEED_DATA:
                if type(event) is BodyData:
                    self.on_body(event.data)
                    continue
                self.raw_body = None
                self.raw_bytes.clear()
                self.on_message_complete()
                return
        except Reject as reject:
            self.raw_body = None
            self._reject(reject.status, reject.detail)
            self._run_pending()
        except UwsgiProtocolError as exc:
            self.raw_body = None
            self._reject(400, str(exc))
            self._run_pending()

    def _close(self) -> None:
        if self.stream_paused:          # the app answered without reading the whole upload: the linger drops it
            self.stream_paused = False
            if not self.reading_paused:
                self.transport.resume_reading()
        super()._close()

    def _resume_stream(self) -> None:
        if self.stream_paused and not self.closed:
            self.stream_paused = False
            if not self.reading_paused:
                self.transport.resume_reading()

    def _send_continue(self) -> None:
        if not self.closed and self.active is not None and not self.active.head_sent:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # --- answering ---
    def error_response(self, status: int, detail: str) -> bytes:
        return http_error_response(status, detail, self.worker.date_header)

    def _reject(self, status: int, detail: str) -> None:
        log.info("rejected a request from %s: %d %s", self.conn_environ.get("REMOTE_ADDR"), status, detail)
        self.closing = True
        self.in_head = self.in_body = False
        if self.streaming is not None:    # the app reading it gets this status (wsgi.py answers it)
            self.streaming.end(failed=True, error=BodyError(detail, status))
            self.streaming = None
        self.pending.append(Reject(status, detail))

    def tick(self) -> None:
        self.ticks += 1
        if self.closed:
            if not self.send_stall_tick():
                self.linger_tick()
            return
        config = self.worker.config
        if self.streaming is not None and self.streaming.waiting:
            # Expect: 100-continue: an app thread reads the body as it comes; a client that stops sending
            # must not hold it for ever (--body-timeout, as for any body).
            self.body_stalled += 1
            if self.body_stalled > config.body_timeout:
                self._reject(408, "request body stalled")
            return
        self.body_stalled = 0
        if self.send_stall_tick() or self.active is not None or self.pending:
            return
        if self.in_head:
            self.head_age += 1
            if self.head_age > config.header_timeout:      # `>`: see the keep-alive check below
                self._reject(408, "request head not received in time")
                self._run_pending()
        elif self.in_body and self.streaming is None:
            if self.ticks > config.body_timeout:
                self._reject(408, "request body stalled")
                self._run_pending()
        elif self.ticks > config.keepalive_timeout or (self.worker.stopping and self.ticks >= 2):
            # `>`: ticks are whole wall-clock seconds, so this is an idle time in (T, T + 1] seconds.
            self._close_idle()      # when the worker is draining, idle for over a second

    def connection_lost(self, exc) -> None:
        if self.streaming is not None:
            self.streaming.end(failed=True)
        if self.body is not None:        # a body cut short: its temp file goes now
            self.body.close()
            self.body = None
        super().connection_lost(exc)
        self.parser = None               # it holds this connection: a cycle the GC would have to find

