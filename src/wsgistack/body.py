"""Request bodies as `wsgi.input`: buffered in memory, spooled to a temp file past a threshold
(uWSGI's --post-buffering), or streamed to an app thread for `Expect: 100-continue`.

The event loop only ever appends; the app only ever reads. Reading a buffered body never
blocks the loop because the whole body is there before the app is called.
"""

from __future__ import annotations

import io
import sys
import tempfile
import threading
from collections import deque
from typing import Callable

# Bytes of an Expect: 100-continue body the loop reads ahead of the app (then it waits for the app to read).
READ_AHEAD = 1 << 20


class EmptyInput:
    """wsgi.input for requests without a body: shared, stateless, allocation-free."""

    __slots__ = ()

    def read(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self):
        return iter(())


EMPTY_INPUT = EmptyInput()


class BodyBuffer:
    """Collects a body as it arrives; past `spool_threshold` bytes it moves to an unnamed temp file."""

    __slots__ = ("data", "size", "spool_threshold", "file")

    def __init__(self, spool_threshold: int):
        # One buffer, not a list of the pieces: a body sent in 2-byte chunks would cost ~30 times its size.
        self.data = bytearray()
        self.size = 0
        self.spool_threshold = spool_threshold
        self.file = None

    def append(self, data: bytes) -> None:
        self.size += len(data)
        if self.file is not None:
            self.file.write(data)
        elif self.size > self.spool_threshold:
            # Unnamed (unlinked) temp file: nothing to clean up, even if the worker is killed.
            self.file = tempfile.TemporaryFile(prefix="wsgistack-body-")
            self.file.write(self.data)
            self.file.write(data)
            self.data = bytearray()
        else:
            self.data += data

    def as_input(self):
        if self.file is not None:
            self.file.seek(0)
            return self.file
        return io.BytesIO(self.data)

    def close(self) -> None:
        """The request will not reach the app (its client went away): the temp file goes now, not when the
        garbage collector gets to the connection."""
        if self.file is not None:
            self.file.close()


class BodyError(OSError):
    """wsgi.input failed because of the client: it went away, or sent a malformed or too large body.

    An app that lets it propagate before responding gets the client `status` instead of a 500.
    """

    def __init__(self, detail: str = "client disconnected before sending the whole body", status: int = 400):
        super().__init__(detail)
        self.status = status


class StreamingInput(io.RawIOBase):
    """wsgi.input fed by the loop while the app reads it on its own thread (Expect: 100-continue).

    The first read asks the loop to send `100 Continue`: the client uploads only if the app wants it.
    """

    def __init__(self, on_first_read: Callable[[], None], on_end: Callable[[], None] | None = None,
                 lend: Callable[[], None] | None = None, reclaim: Callable[[], None] | None = None,
                 on_drained: Callable[[], None] | None = None):
        super().__init__()
        self.buffered = 0               # bytes fed and not read yet: the loop stops reading past READ_AHEAD
        self.reader_paused = False
        self._on_drained = on_drained   # called (from the app's thread) once they fall to READ_AHEAD / 4
        self._on_end = on_end           # the body is complete or failed: nothing more to wait for
        # --threads 1: while the app waits for the client's bytes, it lends the app to the loop, which runs other
        # requests meanwhile (one at a time: the app code of both never runs at once), and reclaims it after.
        self._lend = lend
        self._reclaim = reclaim
        self._cond = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self.size = 0
        self._ended = False
        self._failed = False
        self._error: BodyError | None = None
        self._on_first_read: Callable[[], None] | None = on_first_read
        self.waiting = False            # the app is blocked in a read: the client owes the next bytes

    # --- loop side ---
    def feed(self, data: bytes) -> bool:
        """Add bytes the loop read; True when READ_AHEAD bytes wait for the app: the loop stops reading the client
        until on_drained (an upload faster than the app reads must not fill the worker's memory)."""
        self.size += len(data)
        with self._cond:
            self._chunks.append(data)
            self.buffered += len(data)
            self._cond.notify_all()
            if self.buffered > READ_AHEAD and not self.reader_paused:
                self.reader_paused = True
                return True
        return False

    def end(self, failed: bool = False, error: BodyError | None = None) -> None:
        if self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end()
        with self._cond:
            self._ended = True
            self._failed = failed
            self._error = (error or BodyError()) if failed else None
            self._cond.notify_all()

    @property
    def complete(self) -> bool:
        return self._ended and not self._failed

    # --- app side ---
    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._take(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        """`size` bytes, fewer only at the body's end: a file's read, not a socket's (Django's LimitedStream,
        among others, reads once and trusts the length it asked for)."""
        wanted = sys.maxsize if size is None or size < 0 else size
        parts = []
        while wanted > 0 and (chunk := self._take(min(wanted, 1 << 20))):
            parts.append(chunk)
            wanted -= len(chunk)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        wanted = sys.maxsize if size is None or size < 0 else size
        parts = []
        while wanted > 0 and (chunk := self._take(wanted, until_newline=True)):
            parts.append(chunk)
            wanted -= len(chunk)
            if chunk[-1] == 10:         # b"\n"
                break
        return b"".join(parts)

    def _take(self, size: int, until_newline: bool = False) -> bytes:
        if self._on_first_read is not None:
            callback, self._on_first_read = self._on_first_read, None
            callback()
        if self._lend is not None:
            with self._cond:
                must_wait = not self._chunks and not self._ended
            if must_wait:
                self._lend()
                try:
                    with self._cond:
                        while not self._chunks and not self._ended:
                            self.waiting = True
                            self._cond.wait()
                        self.waiting = False
                finally:
                    self._reclaim()
        with self._cond:
            while not self._chunks and not self._ended:
                self.waiting = True
                self._cond.wait()
            self.waiting = False
            if self._failed:
                raise self._error
            if not self._chunks:
                return b""
            chunk = self._chunks[0]
            if until_newline and (newline := chunk.find(b"\n", 0, size)) >= 0:
                size = newline + 1
            if len(chunk) <= size:
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[size:]
                chunk = chunk[:size]
            self.buffered -= len(chunk)
            drained = self.reader_paused and self.buffered <= READ_AHEAD // 4
            if drained:
                self.reader_paused = False
        if drained and self._on_drained is not None:
            self._on_drained()
        return chunk
