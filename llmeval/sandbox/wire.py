"""Framed messages between the sandbox's processes: a 4-byte big-endian length, then JSON.

The reader takes a size cap: a message from the other side of a trust boundary
that announces more than the cap is refused before a byte of it is buffered.

The trusted side encodes with orjson; the zygote and the candidates with the
standard library's ``json`` (the same format): orjson's import brings modules that
would make every fork of the zygote copy more memory (docs/sandbox.md, "Speed").
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Callable
from typing import Any

MAX_REPLY = 8 << 20  # a candidate's reply to one call (the trusted side's bound)
MAX_JOB = 256 << 20  # a job from eval-score (programs of a few MB fit many times)

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def json_dumps(obj: Any) -> bytes:
    """JSON as bytes, the standard library's way (strings that are not valid Unicode,
    lone surrogates, raise rather than go out garbled)."""
    return _encoder.encode(obj).encode("utf-8")


def _orjson_dumps(obj: Any) -> bytes:
    import orjson

    return orjson.dumps(obj)


def _orjson_loads(data: Any) -> Any:
    import orjson

    return orjson.loads(data)


class Oversized(ValueError):
    """A message announced more bytes than the reader accepts."""


def frame(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


def send(fd: int, obj: Any, dumps: Callable[[Any], bytes] = _orjson_dumps) -> None:
    """Write one framed message (a pipe may take a large one in parts)."""
    send_all(fd, [obj], dumps)


def send_all(fd: int, objs: list[Any], dumps: Callable[[Any], bytes] = _orjson_dumps) -> None:
    """Write framed messages in one go (the reader wakes once for all of them)."""
    view = memoryview(b"".join(frame(dumps(obj)) for obj in objs))
    while view:
        view = view[os.write(fd, view) :]


class Reader:
    """Framed messages from one fd, read in large chunks (one read usually holds several)."""

    def __init__(self, fd: int, limit: int = MAX_JOB, loads: Callable[[Any], Any] = _orjson_loads):
        self.fd = fd
        self.limit = limit
        self.loads = loads
        self.buf = bytearray()
        self.pos = 0

    def _fill(self, need: int, deadline: float | None) -> bool:
        while len(self.buf) - self.pos < need:
            if deadline is not None:
                import select  # here: the zygote, which never waits with a deadline, lacks it

                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                    raise TimeoutError
            if self.pos:
                del self.buf[: self.pos]
                self.pos = 0
            chunk = os.read(self.fd, max(65536, need - len(self.buf)))
            if not chunk:
                return False
            self.buf += chunk
        return True

    def pending(self) -> bool:
        """Whether a whole message is already buffered (no read needed)."""
        if len(self.buf) - self.pos < 4:
            return False
        (size,) = struct.unpack_from("!I", self.buf, self.pos)
        return len(self.buf) - self.pos >= 4 + size

    def recv(self, deadline: float | None = None) -> Any:
        """One message, None on EOF; raises TimeoutError, :class:`Oversized`, ValueError."""
        if not self._fill(4, deadline):
            return None
        (size,) = struct.unpack_from("!I", self.buf, self.pos)
        if size > self.limit:
            raise Oversized(f"a message of {size} bytes (the limit is {self.limit})")
        if not self._fill(4 + size, deadline):
            return None
        start = self.pos + 4
        self.pos = start + size
        return self.loads(bytes(self.buf[start : self.pos]))
