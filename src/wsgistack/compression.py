"""Compression of answers (nginx's `gzip on`): --gzip, --gzip-comp-level, --gzip-min-length, --gzip-types.

A front handler: for a request whose client accepts gzip, the app (or the static file responder) is wrapped,
and its answer compressed when nginx would compress it: HTTP/1.1, status 200, 403 or 404, a content type
listed (text/html always), no Content-Encoding yet, at least --gzip-min-length bytes when the length is known.
The compressed answer has Content-Encoding: gzip, Vary: Accept-Encoding and a weak ETag (another
representation of the same resource, as nginx makes it).

A body given whole (a list, as most apps return) is compressed at once and keeps a Content-Length. Any other
iterable is compressed chunk by chunk, each chunk flushed (Z_SYNC_FLUSH) so a streamed answer still streams;
its length is unknown, so the Exchange frames it chunked. An iterable that calls start_response only when first
iterated (PEP 3333 allows it) has its first chunk taken before the decision, as the Exchange takes it before
the head. A wsgi.file_wrapper answer (a file sent with sendfile) is left alone: static files can be
precompressed instead (--static-gzip-all).
"""

from __future__ import annotations

import itertools
import re
import zlib

from wsgistack.config import Config, ConfigError
from wsgistack.wsgi import FileWrapper, ResponseError

COMPRESSED_STATUSES = frozenset((200, 403, 404))      # nginx's gzip filter compresses these only
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")     # RFC 9110 12.4.2
_qvalues: dict[str, float] = {}        # the valid ones seen (at most 1,117 exist): a lookup, not a regex, per item


def _qvalue(text: str) -> float:
    """A qvalue's weight; 0 for an invalid one (float() would take 2, 1e-3, inf, nan)."""
    if _QVALUE.fullmatch(text) is None:
        return 0.0
    weight = _qvalues[text] = float(text)
    return weight


def coding_weights(accept_encoding: str) -> dict[str, float]:
    """Accept-Encoding as {coding: q-value} (RFC 9110 12.5.3). An invalid q weighs 0: the coding is not
    acceptable, as nginx takes it (dropping the item would let a `*` in the same header bring it back)."""
    weights: dict[str, float] = {}
    for item in accept_encoding.lower().split(","):
        coding, semicolon, parameters = item.partition(";")
        weight = 1.0
        if semicolon:                     # the q among any parameters (`gzip;level=1;q=0` refuses gzip)
            for parameter in parameters.split(";"):
                name, _, value = parameter.partition("=")
                if name.strip() == "q":
                    value = value.strip()
                    weight = _qvalues.get(value)
                    if weight is None:
                        weight = _qvalue(value)
                    break
        weights[coding.strip()] = weight
    return weights


def accepts(weights: dict[str, float], coding: str) -> bool:
    """The coding is listed, or `*` is, with a q-value above 0."""
    return weights.get(coding, weights.get("*", 0.0)) > 0


class Compression:
    def __init__(self, level: int, min_length: int, types: frozenset[str]):
        self.level = level
        self.min_length = min_length
        self.types = types
        self.any_type = "*" in types

    @classmethod
    def from_config(cls, config: Config) -> Compression | None:
        if not config.gzip:
            return None
        if not 1 <= config.gzip_comp_level <= 9:
            raise ConfigError(f"expected 1 to 9, got {config.gzip_comp_level}", option="gzip-comp-level",
                              **config.where("gzip-comp-level"))
        types = frozenset(kind.strip().lower() for value in config.gzip_types for kind in value.split())
        return cls(config.gzip_comp_level, config.gzip_min_length, types | {"text/html"})

    def wrap(self, app, environ: dict):
        """`app`, compressing its answer if the client takes gzip (else `app` itself)."""
        return GzipAnswer(self, app) if self.wanted_by(environ) else app

    @staticmethod
    def wanted_by(environ: dict) -> bool:
        accept_encoding = environ.get("HTTP_ACCEPT_ENCODING")
        return (accept_encoding is not None and environ.get("SERVER_PROTOCOL") == "HTTP/1.1"
                and accepts(coding_weights(accept_encoding), "gzip"))

    def compressible(self, status: str, headers: list, length: int | None) -> bool:
        """Would nginx compress this answer of `length` bytes (None: unknown)? (The headers are the app's, not yet
        checked: anything odd is left to the Exchange, uncompressed.)"""
        try:
            if int(status[:3]) not in COMPRESSED_STATUSES:
                return False
            kind = None
            for name, value in headers:
                if type(name) is not str or type(value) is not str:
                    return False
                lowered = name.lower()
                if lowered == "content-encoding":
                    return False
                if lowered == "content-type" and kind is None:
                    kind = value.partition(";")[0].strip().lower()
                elif lowered == "content-length" and not (value.isascii() and value.isdigit()):
                    return False          # invalid: the Exchange answers it, it must not vanish with the header
        except (TypeError, ValueError):
            return False
        if length is not None and length < self.min_length:
            return False
        return kind is not None and (self.any_type or kind in self.types)

    def compressor(self, size: int | None = None):
        """A gzip compressor; for a body of known `size`, with a window and hash table just large enough, as
        nginx sizes them: at full size zlib allocates ~260 kB of state per compressor, for a 2 kB page 16 kB."""
        window = 15 if size is None else max(9, min(15, (size - 1).bit_length()))
        return zlib.compressobj(self.level, zlib.DEFLATED, 16 + window, max(1, window - 7))


def gzip_headers(headers: list, length: int | None) -> list:
    """The app's headers for the compressed representation."""
    result = []
    varies = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == "content-length" or lowered == "accept-ranges":
            continue                      # as nginx: a compressed answer is never ranged
        if lowered == "etag" and not value.startswith("W/"):
            value = "W/" + value
        elif lowered == "vary" and "accept-encoding" in value.lower():
            varies = True
        result.append((name, value))
    result.append(("Content-Encoding", "gzip"))
    if not varies:
        result.append(("Vary", "Accept-Encoding"))
    if length is not None:
        result.append(("Content-Length", str(length)))
    return result


class GzipAnswer:
    """The app behind a compressing start_response: the real one is called once the answer's form is known (the
    app returned, or it called write()); until then status and headers are only noted, as the Exchange does."""

    def __init__(self, compression: Compression, app):
        self.compression = compression
        self.app = app
        self.status = self.headers = None
        self.start_response = None        # the Exchange's
        self.started = False              # the Exchange's start_response was called
        self.compressor = None            # compressing a stream (or write() calls)
        self.real_write = None            # the Exchange's write()
        self.is_head = False

    def __call__(self, environ, start_response):
        self.start_response = start_response
        self.is_head = environ["REQUEST_METHOD"] == "HEAD"
        result = self.app(environ, self.noted_start_response)
        if self.status is None:
            # PEP 3333 lets start_response wait for the first chunk: take it, as the Exchange would, to decide
            result = self._first_chunk_taken(result)
        if self.started:
            if self.compressor is None:
                return result             # write() decided: not compressed
            return CompressedStream(result, self.compressor)
        if self.status is None:           # still none: the Exchange says what is wrong
            self.started = True
            return result
        return self.answer(result)

    @staticmethod
    def _first_chunk_taken(result):
        try:
            iterator = iter(result)
            first = (next(iterator),)
        except StopIteration:
            first = ()
        except BaseException:
            _close(result)      # the Exchange answers 500 but never saw this iterable (PEP 3333: always closed)
            raise
        return Rejoined(first, iterator, result)

    def noted_start_response(self, status, headers, exc_info=None):
        if self.started:                  # after the Exchange's: its rules (exc_info, a second call)
            write = self.start_response(status, headers, exc_info)
            if exc_info is not None and self.compressor is not None:
                # The head was not sent yet (else that raised): the answer replacing it (an error page) goes as
                # the app gives it, under its own head, not compressed under one that says nothing of it.
                self.compressor.stop()
            return write
        if exc_info is None and self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        self.status, self.headers = status, headers
        return self.write

    def answer(self, result):
        status, headers, is_head = self.status, self.headers, self.is_head
        declared = _content_length(headers)
        if type(result) is FileWrapper:
            self._start(headers)          # a file for sendfile: as it is
            return result
        if type(result) is list or type(result) is tuple:
            body = b"".join(result) if all(type(chunk) is bytes for chunk in result) else None
            # HEAD: the body may be left out (a static file's is), the declared length tells the GET's
            length = declared if is_head and declared is not None else None if body is None else len(body)
            if (body is None or (not is_head and declared is not None and declared != len(body))
                    or not self.compression.compressible(status, headers, length)):
                self._start(headers)      # the Exchange says what is wrong, if anything
                return result
            if not is_head:
                compressor = self.compression.compressor(len(body))
                compressed = compressor.compress(body) + compressor.flush()
                self._start(gzip_headers(headers, len(compressed)))
                return [compressed]
            # HEAD: as a stream (nothing of it is sent), so that no length is claimed for the compressed body
        elif not self.compression.compressible(status, headers, declared):
            self._start(headers)
            return result
        compressor = Deflater(self.compression.compressor(declared), None if is_head else declared)
        self._start(gzip_headers(headers, None), compressor)
        return CompressedStream(result, compressor)

    def write(self, data: bytes) -> None:
        """PEP 3333's write(): called before the app returned, the answer streams, so it is decided now."""
        if not self.started:
            declared = _content_length(self.headers)
            if self.compression.compressible(self.status, self.headers, declared):
                deflater = Deflater(self.compression.compressor(), None if self.is_head else declared)
                self._start(gzip_headers(self.headers, None), deflater)
            else:
                self._start(self.headers)
        if self.compressor is not None and type(data) is bytes:
            data = self.compressor.compress(data)
        self.real_write(data)

    def _start(self, headers: list, compressor=None) -> None:
        """Call the Exchange's start_response, once: the answer's form is decided."""
        self.started = True
        self.compressor = compressor
        self.real_write = self.start_response(self.status, headers)


class Deflater:
    """A streamed answer's compressor, holding the app to the Content-Length it declared: the compressed answer
    has none, so a body longer or shorter than declared would otherwise look complete. Either is a ResponseError
    raised into the Exchange, which logs it and closes the connection without ending the chunked body, as it
    does for an uncompressed answer (and as nginx does for an upstream that sent less than it declared)."""

    def __init__(self, compressor, declared: int | None):
        self.compressor = compressor
        self.owed = declared              # bytes the app still owes (None: no length declared)

    def stop(self) -> None:
        """From now on chunks pass as they are (start_response replaced the head with exc_info)."""
        self.compressor = self.owed = None

    def compress(self, chunk: bytes) -> bytes:
        """The chunk compressed and flushed (Z_SYNC_FLUSH), so that a stream still streams."""
        if self.compressor is None:
            return chunk
        if self.owed is not None:
            if len(chunk) > self.owed:
                raise ResponseError("app sent more than its Content-Length")
            self.owed -= len(chunk)
        return self.compressor.compress(chunk) + self.compressor.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        if self.compressor is None:
            return b""
        if self.owed:
            raise ResponseError(f"app sent {self.owed} bytes less than its Content-Length")
        return self.compressor.flush()


class CompressedStream:
    """An app's iterable, compressed chunk by chunk; close() reaches the app's iterable (PEP 3333)."""

    def __init__(self, iterable, compressor: Deflater):
        self.iterable = iterable
        self.compressor = compressor

    def __iter__(self):
        compressor = self.compressor
        for chunk in self.iterable:
            if type(chunk) is not bytes:
                yield chunk               # the Exchange answers that with its error
                return
            if chunk:
                yield compressor.compress(chunk)
        yield compressor.finish()

    def close(self) -> None:
        _close(self.iterable)


class Rejoined:
    """An app's iterable whose first chunk was taken: that chunk, then the rest; close() reaches the app's
    iterable (once: the Exchange, or the CompressedStream around this, calls it once)."""

    def __init__(self, first: tuple, iterator, iterable):
        self.first = first
        self.iterator = iterator
        self.iterable = iterable

    def __iter__(self):
        return itertools.chain(self.first, self.iterator)

    def close(self) -> None:
        _close(self.iterable)


def _close(iterable) -> None:
    close = getattr(iterable, "close", None)
    if close is not None:
        close()


def _content_length(headers) -> int | None:
    """The app's Content-Length, if it gave a valid one (the Exchange judges the others)."""
    try:
        for name, value in headers:
            if name.lower() == "content-length":
                return int(value)
    except (TypeError, ValueError, AttributeError):
        return None
    return None
