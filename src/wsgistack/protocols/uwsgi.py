"""uwsgi connections (--socket, what nginx's uwsgi_pass talks): one request per connection, read whole
(header, vars, body) before the app runs; the answer is plain HTTP/1.1 (status line, headers, body) ended
by closing the connection, as uWSGI does. Parsing lives in uwsgi_codec.py, what FastCGI shares in gateway.py.
"""

from __future__ import annotations

import logging

from wsgistack.config import ConfigError
from wsgistack.protocols.gateway import (WAITING_BODY, WAITING_HEAD, WAITING_IDLE, WAITING_NOTHING,
                                         GatewayConnection)
from wsgistack.protocols.http import http_error_response
from wsgistack.protocols.uwsgi_codec import (DEFAULT_BUFFER_SIZE, MAX_BUFFER_SIZE, MODIFIER1_MANAGE_PATH_INFO,
                                             MODIFIER1_WSGI, NEED_DATA, BodyData, HTTPOnUwsgiPortError,
                                             UwsgiProtocolError, UwsgiRequest, UwsgiRequestParser,
                                             strip_script_name)

log = logging.getLogger("wsgistack")


class UwsgiConnection(GatewayConnection):
    protocol_name = "uwsgi"
    allow_option = "uwsgi-allow-from"
    buffer_size = DEFAULT_BUFFER_SIZE
    # nginx opens a connection per request and sends it whole: answered off accept (direct.py), from one
    # socket shared by the workers, so that the next worker free takes it (as uWSGI's workers do; the
    # kernel's SO_REUSEPORT hash would queue it behind a busy worker while another idles).
    direct_accept = True

    @classmethod
    def configure(cls, config) -> None:
        super().configure(config)
        # 65536 is common in configs (uWSGI takes it: a 16-bit option, capped at 65535); more is a mistake.
        if not 0 < config.buffer_size <= MAX_BUFFER_SIZE + 1:
            raise ConfigError(f"must be between 1 and {MAX_BUFFER_SIZE + 1} (the uwsgi header's 16-bit size)",
                              option="buffer-size")
        cls.buffer_size = min(config.buffer_size, MAX_BUFFER_SIZE)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.parser = UwsgiRequestParser(self.buffer_size)
        self.environ: dict | None = None
        self.received = 0

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return                      # lingering after close (see Connection._close): bytes are dropped
        self.ticks = 0
        self.received += len(data)
        if self.waiting == WAITING_IDLE:
            self.waiting = WAITING_HEAD
        parser = self.parser
        parser.feed(data)
        self.batching = True            # a response the app produced inline leaves in one write
        complete = False
        try:
            # Parse to NEED_DATA even after the end of the body: stray bytes there are refused before the app runs.
            while not self.closed:
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                if type(event) is BodyData:
                    self._body_data(event.data)
                elif type(event) is UwsgiRequest:
                    self._request_head(event)
                else:
                    complete = True
        except HTTPOnUwsgiPortError as exc:
            self.send(http_error_response(400, "this is a uwsgi socket; HTTP clients belong on the http socket",
                                          self.worker.date_header))
            self._protocol_error(str(exc))
        except UwsgiProtocolError as exc:
            self._protocol_error(str(exc))
        if complete and not self.closed:
            self._request_complete()
        self.batching = False
        if self.out:
            self._flush()

    def eof_received(self) -> bool:
        if self.closed:
            return False                # the end of a lingering close
        if self.waiting == WAITING_NOTHING:
            return True                 # the request is whole: answer it, then close
        if self.received:
            self._protocol_error(f"the peer closed the connection after {self.received} bytes, before the whole "
                                 f"request arrived (truncated packet)")
        return False

    # --- the parser's events ---
    def _request_head(self, request: UwsgiRequest) -> None:
        if not request.environ and not request.dropped_vars:
            self._protocol_error("empty vars block: not a request (uWSGI skips it as an \"Empty python request\")")
            return
        if request.modifier1 == MODIFIER1_MANAGE_PATH_INFO:
            variables = strip_script_name(request.environ)
        elif request.modifier1 == MODIFIER1_WSGI:
            variables = request.environ
        else:
            self._protocol_error(f"modifier1 {request.modifier1} is not served (only 0, WSGI, and 30, WSGI with "
                                 f"SCRIPT_NAME removed from PATH_INFO)")
            return
        if request.dropped_vars:
            log.warning("ignored %s from %s: wsgistack never loads code or files a request names",
                        ", ".join(request.dropped_vars), self._peer())
        environ = self._environ(variables)
        declared = environ.get("CONTENT_LENGTH")
        if self._body_too_large(declared):
            self._reject(413, f"request body of {declared} bytes is larger than --limit-post {self.limit_post}")
            return
        self.environ = environ
        self.waiting = WAITING_BODY

    def _body_data(self, data: bytes) -> None:
        if not self._add_body(data):
            self._reject(413, f"request body larger than --limit-post {self.limit_post}")

    def _request_complete(self) -> None:
        # One request per connection, read whole (stray bytes after it are refused): the close after
        # the response can be immediate, saving nginx's uwsgi module a FIN round trip per request.
        self.read_all = True
        environ, self.environ = self.environ, None
        body = self._close_body(environ)
        # http11=False, keep_alive=False: the Exchange then never chunks, says `Connection: close`, and a
        # body without Content-Length ends with the connection, which is how nginx's uwsgi module reads it.
        self._dispatch((environ, environ["REQUEST_METHOD"] == "HEAD", False, False, body))

    # --- answering ---
    def error_response(self, status: int, detail: str) -> bytes:
        return http_error_response(status, detail, self.worker.date_header, names_server=False)

    def _reject(self, status: int, detail: str) -> None:
        log.info("rejected a uwsgi request from %s: %d %s", self._peer(), status, detail)
        self.send(self.error_response(status, detail))
        self._close()
