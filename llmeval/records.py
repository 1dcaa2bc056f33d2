"""Streaming JSONL on orjson: readers, a crash-safe appending writer, resume helpers.

Write policy (docs/records.md, "Files"): every record is serialised to one
complete line and handed to the kernel in a single ``write(2)`` on a file
opened with ``O_APPEND``, so a crash can tear at most the last line and
concurrent appenders never interleave within a line. Files are flushed to the
kernel per record (there is no user-space buffer) and ``fsync``-ed at most
every ``fsync_interval`` seconds and on close. Before appending, a torn last
line (bytes after the final newline) is cut off: it is an incomplete record
from a killed run, and the resumed run writes it again. Healing holds an
exclusive ``flock`` and every append a shared one, so a process that opens a
file other processes are appending to (a shared cache) never cuts off their
lines.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import orjson

Record = dict[str, Any]

# Score statuses (docs/records.md, "eval-score"). Compare against these, never literals.
PASS = "pass"
FAIL = "fail"
TIMEOUT = "timeout"
ERROR = "error"
NO_ANSWER = "no_answer"
STATUSES = (PASS, FAIL, TIMEOUT, ERROR, NO_ANSWER)


class DataError(Exception):
    """Malformed input: reported as ``FILE:LINE: reason`` with exit status 1."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


def display_name(path: str | os.PathLike[str] | None) -> str:
    """The name used in messages: ``stdin`` for ``-``/None, else the path."""
    if path is None or str(path) == "-":
        return "stdin"
    return str(path)


def _open_binary(path: str | os.PathLike[str] | None) -> IO[bytes]:
    if path is None or str(path) == "-":
        stream: IO[bytes] = sys.stdin.buffer
        # A gzip stream on stdin is read transparently too.
        peek = getattr(stream, "peek", None)
        if peek is not None and peek(2)[:2] == b"\x1f\x8b":
            return gzip.GzipFile(fileobj=stream)  # type: ignore[return-value]
        return stream
    p = os.fspath(path)
    if p.endswith(".gz"):
        return gzip.open(p, "rb")  # type: ignore[return-value]
    return open(p, "rb")


def read_numbered(
    path: str | os.PathLike[str] | None = None,
    *,
    tolerate_torn_tail: bool = False,
) -> Iterator[tuple[str, Record]]:
    """Yield ``("FILE:LINE", record)`` for each JSONL line of ``path``.

    ``-``/None is stdin; ``.gz`` is read transparently. Blank lines are
    skipped. A line that is not a JSON object raises :class:`DataError`
    naming the file and line. With ``tolerate_torn_tail`` (resume readers
    only), a last line without its newline that fails to parse is ignored: it
    is the torn write of a killed run, and nothing else is.
    """
    name = display_name(path)
    fh = _open_binary(path)
    try:
        lineno = 0
        for raw in fh:
            lineno += 1
            line = raw.strip()
            if not line:
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                if tolerate_torn_tail and not raw.endswith(b"\n"):
                    return
                raise DataError(f"{name}:{lineno}", f"invalid JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise DataError(
                    f"{name}:{lineno}", f"expected a JSON object, got {type(obj).__name__}"
                )
            yield f"{name}:{lineno}", obj
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DataError(name, "no such file") from None
        raise DataError(name, f"cannot read ({exc})") from None
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def read_records(
    path: str | os.PathLike[str] | None = None, *, tolerate_torn_tail: bool = False
) -> Iterator[Record]:
    """Like :func:`read_numbered`, without the positions."""
    for _, rec in read_numbered(path, tolerate_torn_tail=tolerate_torn_tail):
        yield rec


def read_many_numbered(paths: Iterable[str | None]) -> Iterator[tuple[str, Record]]:
    """Chain :func:`read_numbered` over several inputs; an empty list means stdin."""
    for p in list(paths) or [None]:
        yield from read_numbered(p)


def dumps(record: Record) -> bytes:
    """One record as a JSONL line (with its newline). Non-JSON values are errors."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY)


def heal_torn_tail(path: str | os.PathLike[str]) -> int:
    """Cut bytes after the last newline of ``path``; return how many were cut.

    Holds an exclusive lock: appenders (shared lock) finish their line first.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size == 0:
            return 0
        pos = size
        block = 65536
        while pos > 0:
            start = max(0, pos - block)
            os.lseek(fd, start, os.SEEK_SET)
            chunk = os.read(fd, pos - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        else:
            keep = 0
        if keep < size:
            os.ftruncate(fd, keep)
            os.fsync(fd)
        return size - keep
    finally:
        os.close(fd)


class AppendWriter:
    """Append complete JSONL lines to a file, crash-safely (see module docstring).

    ``AppendWriter("-")`` writes to stdout instead (no healing, no fsync).
    """

    def __init__(self, path: str | os.PathLike[str] | None, *, fsync_interval: float = 2.0):
        self.path = None if path is None or str(path) == "-" else os.fspath(path)
        self.fsync_interval = fsync_interval
        self.count = 0
        self._last_sync = time.monotonic()
        if self.path is None:
            self._fd = sys.stdout.fileno()
            sys.stdout.flush()
            self.healed = 0
        else:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            self.healed = heal_torn_tail(self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: Record) -> None:
        data = dumps(record)
        if self.path is None:
            view = memoryview(data)
            while view:  # a pipe may take the line in parts
                n = os.write(self._fd, view)
                view = view[n:]
        else:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            try:
                n = os.write(self._fd, data)
                if n != len(data):  # disk full: leave a torn line for the next heal
                    raise OSError(f"{self.path}: short write ({n} of {len(data)} bytes)")
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        self.count += 1
        if self.path is not None and self.fsync_interval >= 0:
            now = time.monotonic()
            if now - self._last_sync >= self.fsync_interval:
                os.fsync(self._fd)
                self._last_sync = now

    def close(self) -> None:
        if self.path is not None and self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> AppendWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def existing_values(
    path: str | os.PathLike[str] | None, identity: Callable[[Record], Any] = lambda r: r.get("key")
) -> set[Any]:
    """The identities (default: ``key``) of the records already in an output file, for resuming.

    Tolerates a torn last line (the writer heals it) and nothing else: a
    malformed line in the middle is a :class:`DataError`. None is never an identity.
    """
    if path is None or str(path) == "-" or not os.path.exists(path):
        return set()
    return {
        v for r in read_records(path, tolerate_torn_tail=True) if (v := identity(r)) is not None
    }
