"""FastCGI responder connections (--fastcgi-socket, what nginx's fastcgi_pass talks): one request at a time
per connection, kept open between requests when the web server sets FCGI_KEEP_CONN.

The response is the CGI form (`Status: 200 OK`, headers, body) carried in STDOUT records and ended by
END_REQUEST. `CgiExchange` turns the Exchange's HTTP head into a CGI head; the connection wraps every byte
the shared Connection writes in STDOUT records. The record state machine lives in fastcgi_codec.py.
"""

from __future__ import annotations

import logging
import socket
import time

from wsgistack.protocols import fastcgi_codec as codec
from wsgistack.protocols.connection import Connection, tcp_socket
from wsgistack.protocols.gateway import (WAITING_BODY, WAITING_HEAD, WAITING_IDLE, GatewayConnection,
                                         GatewayExchange)
from wsgistack.protocols.http import http_error_response
from wsgistack.protocols.uwsgi_codec import UwsgiProtocolError, parse_content_length
from wsgistack.wsgi import Exchange

log = logging.getLogger("wsgistack")


_cgi_heads: dict[bytes, bytes] = {}     # HTTP head -> CGI head: an app's heads repeat (the Date changes each second)
_MAX_CGI_HEADS = 256


def cgi_head(http_head: bytes) -> bytes:
    """An HTTP/1.1 response head as the Exchange writes it -> the CGI head nginx expects on STDOUT:
    `Status:` instead of the status line, and no Connection header (records frame the response)."""
    cached = _cgi_heads.get(http_head)
    if cached is not None:
        return cached
    status_end = http_head.index(b"\r\n")
    lines = http_head[status_end + 2:].split(b"\r\n")
    kept = b"\r\n".join(line for line in lines if not line.startswith(b"Connection: "))
    converted = b"Status: " + http_head[9:status_end] + b"\r\n" + kept      # 9 == len(b"HTTP/1.1 ")
    if len(_cgi_heads) >= _MAX_CGI_HEADS:
        _cgi_heads.clear()
    _cgi_heads[http_head] = converted
    return converted


def cgi_response(http_response: bytes) -> bytes:
    """A whole HTTP/1.1 response (head and body, as the server's own error answers are built) in CGI form."""
    head, _, body = http_response.partition(b"\r\n\r\n")
    return cgi_head(head + b"\r\n\r\n") + body


def split_script_name(params: dict[str, str]) -> None:
    """SCRIPT_NAME and PATH_INFO for a web server that sends no PATH_INFO, as nginx's stock fastcgi_params.

    Those send the whole path as SCRIPT_NAME ($fastcgi_script_name, the CGI script: DOCUMENT_URI itself): for a
    WSGI app that path is PATH_INFO. A `fastcgi_param SCRIPT_NAME /prefix;` after them says where the app is
    mounted: a whole-segment prefix of DOCUMENT_URI stays SCRIPT_NAME (without a trailing slash, as uwsgi's
    modifier1 30 strips it) and the rest is PATH_INFO; a SCRIPT_NAME that is no such prefix (fastcgi_index
    appended, say) mounts nothing. DOCUMENT_URI is nginx's $document_uri, decoded and normalized already.
    """
    script_name = params.pop("SCRIPT_NAME", "")
    uri = params.get("DOCUMENT_URI")
    if uri is None:                     # a hand-written config: the path is the script's
        params["PATH_INFO"] = script_name
        return
    prefix = script_name.rstrip("/")
    if script_name != uri and prefix and (uri == prefix or uri.startswith(prefix + "/")):
        params["SCRIPT_NAME"] = prefix
        params["PATH_INFO"] = uri[len(prefix):]
    else:
        params["PATH_INFO"] = uri


# A draining worker closes a kept FastCGI connection once nginx left it unused for DRAIN_PAUSE seconds (the close
# reaches nginx while the connection sits in its cache: no race). One nginx keeps busy never pauses so long: it is
# closed with its next answer once the worker has drained for DRAIN_GRACE seconds (or DRAIN_GRACE before the end
# of --reload-mercy, if that comes first), so old code stops answering about a second into a reload.
DRAIN_PAUSE = 0.1
DRAIN_GRACE = 1.0


class CgiExchange(GatewayExchange):
    """An Exchange whose response head is in CGI form. Status and header checks, Content-Length clipping,
    HEAD and close() stay the Exchange's."""

    def _head(self, known_length: int | None) -> bytes:
        keep_alive = self.keep_alive
        head = super()._head(known_length)
        # The Exchange drops keep-alive when the body has no length (HTTP would end it by closing) or the app
        # said `Connection: close`; with FastCGI, END_REQUEST ends the body and FCGI_KEEP_CONN decides.
        self.keep_alive = keep_alive
        return cgi_head(head)

    def _whole(self, data: bytes) -> None:
        # Exchange._whole carries the server's own 500 answer, written in HTTP form.
        super()._whole(cgi_response(data) if data.startswith(b"HTTP/1.1 ") else data)

    def _sendfile(self, span: tuple[int, int, int]) -> None:
        # sendfile() would put raw file bytes on the socket; here every byte must sit inside a STDOUT record.
        self.iterator = iter(self.iterable)
        self.pump()

    def _fail(self, exc: BaseException) -> None:
        if self.conn.aborted and isinstance(exc, ConnectionError):
            log.info("%s %s: the web server aborted the request", self.environ["REQUEST_METHOD"],
                     self.environ["REQUEST_URI"])
            return                      # nobody waits for this response; _finish still calls close()
        super()._fail(exc)


class FastCGIConnection(GatewayConnection):
    protocol_name = "FastCGI"
    allow_option = "fastcgi-allow-from"
    exchange_class = CgiExchange
    capacity = 1
    # With FCGI_KEEP_CONN nginx caches the connection on END_REQUEST, and may reuse it at once: closed right
    # after the answer, a draining worker would drop the request already on its way (a 502 for a POST, which
    # nginx does not retry). Closed once nginx left it unused for DRAIN_PAUSE, the close reaches nginx while the
    # connection sits in its cache, and nginx drops it from there.
    drains_when_idle = True
    # Not served off accept (direct.py), unlike uwsgi: with fastcgi_keep_conn, nginx still opens and closes
    # connections past its `keepalive` count, and each would then be handed to uvloop. Measured (nginx →
    # FastCGI, hello, 2 processes, 2 runs each): first 30.0k against 33.5k req/s kept-alive; later, direct on
    # each worker's own socket, kept-alive unchanged (36.7k / 34.7k vs 36.1k / 35.1k) and without
    # fastcgi_keep_conn +6% (14.1k / 13.9k vs 13.1k / 13.2k): the Python codec dominates, not the accept.

    @classmethod
    def configure(cls, config) -> None:
        super().configure(config)
        # FCGI_GET_VALUES answers: requests this server runs at once, and as many connections for them.
        cls.capacity = config.processes * config.threads

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.codec = codec.FastCGIConnection(max_conns=self.capacity, max_reqs=self.capacity)
        self.request_id = 0             # the request whose response is being written
        self.keep_conn = False
        self.environ: dict | None = None
        self.aborted = False            # the web server sent ABORT_REQUEST for the current request
        self.truncated = False          # the response was cut short: close without END_REQUEST

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return                      # lingering after close (see Connection._close): bytes are dropped
        self.ticks = 0
        fcgi = self.codec
        fcgi.feed(data)
        self.batching = True
        try:
            while not self.closed:
                event = fcgi.next_event()
                replies = fcgi.data_to_send()       # management answers, refused (multiplexed) requests
                if replies:
                    self.send_raw(replies)
                if event is codec.NEED_DATA:
                    break
                self._handle(event)
            if self.write_paused and not self.reading_paused and not self.closed:
                # A peer that sends (management records, refused requests) and takes none of the answers:
                # nothing more is read until it does, so the answers cannot fill our memory.
                self.reading_paused = True
                self.transport.pause_reading()
        except codec.FastCGIProtocolError as exc:
            if not self.served and codec.looks_like_http(data):
                self.send_raw(http_error_response(400, "this is a FastCGI socket; HTTP clients belong on the "
                                                       "http socket", self.worker.date_header))
            self._protocol_error(str(exc))
        if fcgi.state is codec.ConnectionState.CLOSED and self.active is None and not self.pending:
            self._close()               # a refused role without FCGI_KEEP_CONN
        self.batching = False
        if self.out:
            self._flush()

    def eof_received(self) -> bool:
        if self.closed:
            return False                # the end of a lingering close
        if self.active is not None or self.pending:
            self.closing = self.peer_closed = True      # answer what was asked, then close
            return True
        if self.codec.state is not codec.ConnectionState.IDLE:
            self._protocol_error("the peer closed the connection in the middle of a request")
        return False

    # --- the codec's events ---
    def _handle(self, event) -> None:
        kind = type(event)
        if kind is codec.StdinData:
            if not self._add_body(event.data):
                self._reject(413, f"request body larger than --limit-post {self.limit_post}")
        elif kind is codec.StdinEnd:
            # Without FCGI_KEEP_CONN this was the connection's last request: nothing more is read, and the
            # close after END_REQUEST can be immediate (nginx closes its side on END_REQUEST anyway).
            self.read_all = not self.keep_conn
            environ, self.environ = self.environ, None
            declared = environ.get("CONTENT_LENGTH")
            received = self.body.size if self.body is not None else 0
            if declared is not None and int(declared) != received:
                self._protocol_error(f"STDIN carried {received} bytes of a body whose CONTENT_LENGTH is {declared}")
                return
            body = self._close_body(environ)
            # http11=False: the Exchange never chunks; the body ends with END_REQUEST (CgiExchange._head).
            self._dispatch((environ, environ["REQUEST_METHOD"] == "HEAD", False, self.keep_conn, body))
        elif kind is codec.Params:
            self._params(event.environ)
        elif kind is codec.BeginRequest:
            self.request_id = event.request_id
            self.keep_conn = event.keep_conn
            self.aborted = self.truncated = False
            self.waiting = WAITING_HEAD
        elif kind is codec.AbortRequest:
            self._abort()

    def _params(self, params: dict[str, str]) -> None:
        if "PATH_INFO" not in params:
            split_script_name(params)
        environ = self._environ(params)
        declared = environ.get("CONTENT_LENGTH")
        if declared is not None:
            try:
                parse_content_length(declared)
            except UwsgiProtocolError as exc:
                self._protocol_error(str(exc))
                return
        if self._body_too_large(declared):
            self._reject(413, f"request body of {declared} bytes is larger than --limit-post {self.limit_post}")
            return
        self.environ = environ
        self.waiting = WAITING_BODY

    def _abort(self) -> None:
        """ABORT_REQUEST: stop the app if it runs (its close() still runs), then END_REQUEST."""
        self.aborted = True
        active = self.active
        if active is None:              # not handed to the app yet: still reading, or waiting for the app
            self.pending.clear()
            self.environ = self.body = None
            self.send_raw(self.codec.finish_request())
            self.waiting = WAITING_IDLE
            if self.codec.state is codec.ConnectionState.CLOSED:
                self._close()
        elif not active.threaded and not active.finished:
            active.abandon()            # an inline stream paused on a slow reader: close it now
            self.exchange_done(active)
        elif self.flow is not None:
            with self.flow:             # an app thread waiting for the socket re-checks, and stops writing
                self.flow.notify_all()

    # --- answering: every byte the shared Connection writes is response body, so it goes in STDOUT records ---
    def send(self, data: bytes) -> None:
        if not self.aborted:
            super().send(codec.stdout_records(self.request_id, data))

    def send_now(self, data: bytes) -> None:
        if not self.aborted:
            super().send_now(codec.stdout_records(self.request_id, data))

    def send_waiting(self, data: bytes) -> None:
        if not self.aborted:
            super().send_waiting(codec.stdout_records(self.request_id, data))

    def from_thread_flow(self, data: bytes) -> None:
        if self.aborted:
            raise ConnectionAbortedError("the web server aborted the request")
        super().from_thread_flow(codec.stdout_records(self.request_id, data))   # wrapped on the app thread

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.reading_paused and not self.closed and not self.pending:
            self.reading_paused = False
            self.transport.resume_reading()

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are: END_REQUEST, management answers, the HTTP answer to an HTTP client."""
        Connection.send(self, data)

    def exchange_done(self, exchange: Exchange) -> None:
        worker = self.worker
        draining = worker.stopping and not self.closed
        # Kept busy by nginx through DRAIN_GRACE: closed with this answer, its FIN in the same segment as
        # END_REQUEST (corked until both are queued), so that nginx sees the end as it reads the answer and does
        # not cache the connection for its next request (which would then fail: a 502 for a POST).
        last = draining and (time.monotonic() >= min(worker.stop_deadline - worker.config.reload_mercy + DRAIN_GRACE,
                                                     worker.stop_deadline - DRAIN_GRACE))
        if self.truncated and not self.keep_conn and not exchange.overflowed:
            # Without FCGI_KEEP_CONN nginx takes the close for the end of the answer, END_REQUEST or not: after a
            # FIN a cut answer looks whole (nginx ends the client's chunked answer, fastcgi_cache stores it, or
            # the client waits for the rest of a Content-Length). A reset makes nginx cut the client too. (Past
            # its Content-Length, the answer sent is whole: clipped, it ends with a FIN.)
            self.reset = True
        sock = tcp_socket(self.transport) if last else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        if not self.truncated and not self.closed:
            self.send_raw(self.codec.finish_request())
        super().exchange_done(exchange)
        if last:
            # Left corked: uvloop sends the FIN a loop pass later (its shutdown is queued), and uncorking now sent
            # END_REQUEST alone, nginx cached the connection meanwhile and sent a request into it (a 502 for a
            # POST). The FIN, when it comes, pushes out what the cork holds, in its segment (tcp_send_fin).
            self._close()
        elif draining and not self.closed:
            # Closed at the first pause in nginx's use of it (see drains_when_idle), not after a whole idle
            # second, which a connection nginx keeps busy never has; or by nginx itself (keepalive_requests).
            self.loop.call_later(DRAIN_PAUSE, self._close_if_unused_since, self.served)

    def _close_if_unused_since(self, served: int) -> None:
        if (not self.closed and self.served == served and self.active is None and not self.pending
                and self.waiting == WAITING_IDLE):
            self._close()

    def abort_after_response(self) -> None:
        if not self.aborted:
            # Closed without END_REQUEST, which nginx reports on a kept connection; on another, only a reset
            # says it (exchange_done).
            self.truncated = True
            super().abort_after_response()

    def reset_after_response(self) -> None:
        self.abort_after_response()     # exchange_done decides between FIN and reset

    def error_response(self, status: int, detail: str) -> bytes:
        """A whole answer in FastCGI framing, STDOUT records then END_REQUEST (harakiri writes it as is)."""
        answer = cgi_response(http_error_response(status, detail, self.worker.date_header, names_server=False))
        return codec.stdout_records(self.request_id, answer) + codec.end_request(self.request_id)

    def send_error(self, status: int, detail: str) -> None:
        self.codec.finish_request()     # its END_REQUEST is the one error_response ends with
        self.send_raw(self.error_response(status, detail))

    def _reject(self, status: int, detail: str) -> None:
        """Answer a request the app never sees, end it, and close (the rest of its STDIN may still come)."""
        log.info("rejected a FastCGI request from %s: %d %s", self._peer(), status, detail)
        self.send_error(status, detail)
        self._close()
