"""What the uwsgi and FastCGI connections share: both serve a web server in front (nginx) that sends the
request as CGI-style vars. Lives here: which peers may connect (--uwsgi/--fastcgi-allow-from), turning the
vars into a WSGI environ, and the connection plumbing both need (body buffering, timeouts, draining).
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import quote

from wsgistack.body import EMPTY_INPUT, BodyBuffer
from wsgistack.config import ConfigError
from wsgistack.protocols.connection import Connection, add_server_address
from wsgistack.wsgi import Exchange

log = logging.getLogger("wsgistack")

# Without --*-allow-from only the local machine may talk to a protocol socket: these protocols carry
# REMOTE_ADDR, HTTPS and every header as plain vars, so whoever can connect can claim to be anyone.
LOOPBACK = ("127.0.0.0/8", "::1/128")
_MAX_CACHED_PEERS = 1024

# What a connection is waiting for, which picks the timeout that applies (see GatewayConnection.tick).
WAITING_IDLE = "idle"      # nothing of a request yet: a fresh connection, or a kept FastCGI one between requests
WAITING_HEAD = "head"      # the rest of the packet header and vars (uwsgi), or of PARAMS (FastCGI)
WAITING_BODY = "body"      # the request body (uwsgi) or STDIN (FastCGI)
WAITING_NOTHING = "none"   # the request reached the app: no input timeout


class PeerAllowList:
    """The IP networks allowed to connect to a TCP protocol socket; unix sockets rely on file permissions."""

    def __init__(self, networks: list):
        self.networks = networks
        self.verdicts: dict[str, bool] = {}     # peer IP text -> allowed (uwsgi opens a connection per request)

    @classmethod
    def from_option(cls, values: list[str], option: str) -> PeerAllowList:
        networks = []
        for text in values or LOOPBACK:
            for item in text.replace(",", " ").split():
                try:
                    networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    raise ConfigError(f"{item!r} is not an IP address or CIDR network", option=option) from None
        return cls(networks)

    def allows(self, host: str) -> bool:
        """`host`: the peer's IP address as text; "" for a unix socket (no address to check)."""
        if not host:
            return True
        verdict = self.verdicts.get(host)
        if verdict is None:
            try:
                address = ipaddress.ip_address(host.partition("%")[0])    # fe80::1%eth0: the scope is no address
            except ValueError:
                return False
            if address.version == 6 and address.ipv4_mapped is not None:   # ::ffff:127.0.0.1 on a dual-stack socket
                address = address.ipv4_mapped
            verdict = any(address in network for network in self.networks)
            if len(self.verdicts) < _MAX_CACHED_PEERS:
                self.verdicts[host] = verdict
        return verdict


def gateway_environ(conn_environ: dict, variables: dict[str, str]) -> dict:
    """The WSGI environ for a request whose CGI vars came from the web server.

    The vars win over what the socket says (REMOTE_ADDR is the client's, not nginx's); wsgi.* keys stay
    the server's, as both codecs leave out vars with such names. Keys PEP 3333 requires but a hand-written
    config may leave out get defaults, and empty CONTENT_TYPE/CONTENT_LENGTH (nginx sends them for every
    GET) are dropped, so apps see the same environ as on the http socket.
    """
    environ = conn_environ.copy()
    environ.update(variables)
    # nginx passes every request header too, Content-Type and -Length among them: CGI names them once
    environ.pop("HTTP_CONTENT_LENGTH", None)
    environ.pop("HTTP_CONTENT_TYPE", None)
    if not environ.get("CONTENT_LENGTH"):
        environ.pop("CONTENT_LENGTH", None)
    if not environ.get("CONTENT_TYPE"):
        environ.pop("CONTENT_TYPE", None)
    environ.setdefault("REQUEST_METHOD", "GET")
    environ.setdefault("PATH_INFO", "")
    environ.setdefault("QUERY_STRING", "")
    environ.setdefault("SERVER_PROTOCOL", "HTTP/1.0")
    if "REQUEST_URI" not in environ:          # the access log and error messages name the request by it
        path = quote((environ["SCRIPT_NAME"] + environ["PATH_INFO"]).encode("latin-1"))
        query = environ["QUERY_STRING"]
        environ["REQUEST_URI"] = f"{path}?{query}" if query else path
    scheme = environ.get("UWSGI_SCHEME")     # uWSGI's own var (`uwsgi_param UWSGI_SCHEME $scheme;`) decides first
    if scheme is not None:
        if scheme.lower() in ("http", "https"):
            environ["wsgi.url_scheme"] = scheme.lower()
    elif environ.get("HTTPS", "").lower() in ("on", "1") or environ.get("REQUEST_SCHEME", "").lower() == "https":
        environ["wsgi.url_scheme"] = "https"
    elif "HTTP_X_FORWARDED_PROTO" in environ or "HTTP_X_FORWARDED_SSL" in environ:
        # a TLS-terminating balancer before the web server says it, as uWSGI takes it (the web server is trusted)
        forwarded_scheme(environ)
    return environ


def forwarded_scheme(environ: dict) -> None:
    """wsgi.url_scheme from a trusted proxy's X-Forwarded-Proto (http or https) or X-Forwarded-Ssl (on), as uWSGI
    and gunicorn take them."""
    proto = environ.get("HTTP_X_FORWARDED_PROTO", "").partition(",")[0].strip().lower()
    if proto in ("http", "https"):
        environ["wsgi.url_scheme"] = proto
    elif environ.get("HTTP_X_FORWARDED_SSL", "").strip().lower() == "on":
        environ["wsgi.url_scheme"] = "https"


class GatewayExchange(Exchange):
    """The answer goes through the web server, which names itself (or not: nginx's server_tokens): no
    `Server: wsgistack`, as uWSGI adds none."""

    names_server = False


class GatewayConnection(Connection):
    """Base of UwsgiConnection and FastCGIConnection. Subclasses set `protocol_name` and `allow_option`,
    keep `waiting` up to date, feed the body to `_add_body`, and hand the request over with `_close_body`
    and `_dispatch`."""

    exchange_class = GatewayExchange
    protocol_name = ""
    allow_option = ""
    server_address_from_socket = False   # the web server's SERVER_NAME/PORT vars; the socket's only if missing
    allowed: PeerAllowList
    limit_post = post_buffering = 0

    @classmethod
    def configure(cls, config) -> None:
        cls.allowed = PeerAllowList.from_option(getattr(config, cls.allow_option.replace("-", "_")), cls.allow_option)
        cls.limit_post = config.limit_post
        cls.post_buffering = config.post_buffering

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.waiting = WAITING_IDLE
        self.served = 0                         # requests answered on this connection (FastCGI keeps it)
        self.head_ticks = 0                     # seconds the current head has been arriving
        self.body: BodyBuffer | None = None
        peer = self.conn_environ["REMOTE_ADDR"]
        if not self.allowed.allows(peer):
            log.warning("refused a %s connection from %s: not allowed by --%s (default: loopback only)",
                        self.protocol_name, peer, self.allow_option)
            self.closed = True          # nothing is read or answered: no lingering close either
            transport.close()

    # --- the request body: buffered (spooled past --post-buffering) before the app is called ---
    def _environ(self, variables: dict[str, str]) -> dict:
        environ = gateway_environ(self.conn_environ, variables)
        if "SERVER_NAME" not in environ or "SERVER_PORT" not in environ:    # a hand-written config left them out
            server = {}
            add_server_address(server, self.transport)
            for key, value in server.items():
                environ.setdefault(key, value)
        return environ

    def _body_too_large(self, declared: str | None) -> bool:
        """True when CONTENT_LENGTH already exceeds --limit-post."""
        return bool(self.limit_post and declared and declared.isdigit() and int(declared) > self.limit_post)

    def _add_body(self, data: bytes) -> bool:
        """Buffer a piece of the body; False once it exceeds --limit-post."""
        if self.body is None:
            self.body = BodyBuffer(self.post_buffering)
        if self.limit_post and self.body.size + len(data) > self.limit_post:
            return False
        self.body.append(data)
        return True

    def _close_body(self, environ: dict):
        """The whole body is here: it becomes wsgi.input (returned, None for no body: closed with the exchange)."""
        body, self.body = self.body, None
        if body is None or not body.size:
            environ["wsgi.input"] = EMPTY_INPUT
            return None
        body_input = environ["wsgi.input"] = body.as_input()
        if "CONTENT_LENGTH" not in environ:
            # A body that came chunked: its length is known now, and apps such as Django read
            # exactly CONTENT_LENGTH bytes (nginx sets it the same way when it de-chunks a body).
            environ["CONTENT_LENGTH"] = str(body.size)
        return body_input

    def _dispatch(self, request: tuple) -> None:
        self.waiting = WAITING_NOTHING
        if self.active is None and not self.pending:
            self._start(request)
        else:
            self.pending.append(request)

    def exchange_done(self, exchange) -> None:
        self.served += 1
        self.waiting = WAITING_IDLE
        super().exchange_done(exchange)

    def connection_lost(self, exc) -> None:
        if self.body is not None:        # a body cut short: its temp file goes now
            self.body.close()
            self.body = None
        super().connection_lost(exc)

    def _protocol_error(self, message: str) -> None:
        log.warning("closed a %s connection from %s: %s", self.protocol_name, self._peer(), message)
        self._close()

    def _peer(self) -> str:
        return self.conn_environ.get("REMOTE_ADDR") or "a unix socket"

    def tick(self) -> None:
        """Once a second, from the worker: close connections whose peer stalls or idles too long
        (--header-timeout, --body-timeout, --keepalive-timeout), and idle ones at once when the worker drains."""
        self.ticks += 1
        # A head trickled in a byte a second never leaves `ticks` (seconds since the last read) at the limit:
        # --header-timeout counts from its first byte, as nginx's client_header_timeout.
        self.head_ticks = self.head_ticks + 1 if self.waiting == WAITING_HEAD else 0
        if self.closed:
            if not self.send_stall_tick():
                self.linger_tick()
            return
        if self.send_stall_tick() or self.active is not None or self.pending or self.waiting == WAITING_NOTHING:
            return
        # `>`: ticks are whole wall-clock seconds (the first may come at once), so a limit T means (T, T + 1] s.
        config = self.worker.config
        if self.waiting == WAITING_IDLE:
            limit = config.keepalive_timeout if self.served else config.header_timeout
            if self.ticks > limit or (self.worker.stopping and self.ticks >= 2):
                # A lingering close, not HTTP's outright one: with it nginx's cached FastCGI connections met no
                # "upstream prematurely closed" (a 502 for a POST) in many reload runs; outright, 2 in 6.
                self._close()
        elif self.waiting == WAITING_BODY:
            if self.ticks > config.body_timeout:
                self._protocol_error("request body stalled (--body-timeout)")
        elif max(self.ticks, self.head_ticks) > config.header_timeout:
            self._protocol_error("no complete request head in time (--header-timeout)")
