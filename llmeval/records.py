"""Streaming JSONL on orjson: readers, a crash-safe appending writer, resume helpers.

Write policy (docs/records.md, "Files"): every record is serialised to one
complete line and handed to the kernel in a single ``write(2)`` on a file
opened with ``O_APPEND`` (for ``OUT.gz``: one complete gzip member per line), so a crash can tear at most the last line and
concurrent appenders never interleave within a line. Files are flushed to the
kernel per record (there is no user-space buffer) and ``fsync``-ed at most
every ``fsync_interval`` seconds and on close. Before appending, a torn last
line (bytes after the final newline) is cut off: it is an incomplete record
from a killed run, and the resumed run writes it again. Healing holds an
exclusive ``flock`` and every append a shared one, so a process that opens a
file other processes are appending to (a shared cache) never cuts off their
lines. Outputs that are not regular files (``/dev/null``, a FIFO) are
written without healing or ``fsync``.

Records are validated by field type in one place (:func:`check_fields`), so
every stage reports a wrong type as ``FILE:LINE: field "x" must be ...``.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import stat
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import orjson

from llmeval.errors import DataError
from llmeval.vocab import SCORERS, STATUSES, TEST_STYLES

Record = dict[str, Any]


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
    try:
        fh = _open_binary(path)
    except FileNotFoundError:
        raise DataError(name, "no such file") from None
    except IsADirectoryError:
        raise DataError(name, "is a directory, not a file of records") from None
    except OSError as exc:
        raise DataError(name, f"cannot read ({exc.strerror or exc})") from None
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
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DataError(name, "no such file") from None
        if isinstance(exc, IsADirectoryError):
            raise DataError(name, "is a directory, not a file of records") from None
        if tolerate_torn_tail and isinstance(exc, (EOFError, gzip.BadGzipFile)):
            return  # the torn last member of a killed run's OUT.gz
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


def _complete_gzip_prefix(fd: int, name: str) -> int:
    """Bytes of ``fd`` that form complete gzip members (a torn last member excluded)."""
    os.lseek(fd, 0, os.SEEK_SET)
    d = zlib.decompressobj(31)
    fed = complete = 0
    while chunk := os.read(fd, 1 << 20):
        data = chunk
        while data:
            try:
                d.decompress(data, 1 << 16)
                while d.unconsumed_tail:  # output is discarded; bounded memory per step
                    d.decompress(d.unconsumed_tail, 1 << 16)
            except zlib.error as exc:
                raise DataError(name, f"corrupt gzip data after byte {complete} ({exc})") from None
            if d.eof:
                fed += len(data) - len(d.unused_data)
                complete = fed
                data = d.unused_data
                d = zlib.decompressobj(31)
            else:
                fed += len(data)
                data = b""
    return complete


def heal_torn_tail(path: str | os.PathLike[str]) -> int:
    """Cut a torn last line (``.gz``: a torn last member) from ``path``; return bytes cut.

    Holds an exclusive lock: appenders (shared lock) finish their line first.
    Files that are not regular files (``/dev/null``) are left alone.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return 0
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size == 0:
            return 0
        if os.fspath(path).endswith(".gz"):
            keep = _complete_gzip_prefix(fd, os.fspath(path))
            if keep < size:
                os.ftruncate(fd, keep)
                os.fsync(fd)
            return size - keep
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

    ``AppendWriter("-")`` writes to stdout instead (no healing, no fsync);
    ``OUT.gz`` gets one gzip member per line (``gzip -dc`` and every reader
    of concatenated members read it whole); ``/dev/null`` simply swallows.
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
            self._syncable = False
        else:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            self.healed = heal_torn_tail(self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            # fsync on /dev/null or a FIFO fails with EINVAL: only regular files are synced.
            self._syncable = stat.S_ISREG(os.fstat(self._fd).st_mode)
        self._gzip = self.path is not None and self.path.endswith(".gz")

    def write(self, record: Record) -> None:
        data = dumps(record)
        if self._gzip:
            data = gzip.compress(data, compresslevel=6, mtime=0)
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
        if self.path is not None and self._syncable and self.fsync_interval >= 0:
            now = time.monotonic()
            if now - self._last_sync >= self.fsync_interval:
                os.fsync(self._fd)
                self._last_sync = now

    def close(self) -> None:
        if self.path is not None and self._fd >= 0:
            try:
                if self._syncable:
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


# ---------------------------------------------------------------------------- validation


class FieldType:
    """A field's accepted values, and how an error message says so."""

    def __init__(self, what: str, accepts: Callable[[Any], bool]):
        self.what = what
        self.accepts = accepts


def _one_of(values: tuple[str, ...]) -> FieldType:
    return FieldType(f"one of {', '.join(values)}", lambda v: isinstance(v, str) and v in values)


def _nullable(t: FieldType) -> FieldType:
    return FieldType(f"{t.what} or null", lambda v: v is None or t.accepts(v))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


STRING = FieldType("a string", lambda v: isinstance(v, str))
BOOLEAN = FieldType("true or false", lambda v: isinstance(v, bool))
OBJECT = FieldType("an object", lambda v: isinstance(v, dict))
INDEX = FieldType("an integer >= 0", lambda v: _is_int(v) and v >= 0)
STRINGS = FieldType(
    "a list of strings", lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v)
)
MESSAGES = FieldType(
    'a list of {"role": string, "content": string} objects',
    lambda v: isinstance(v, list)
    and bool(v)
    and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in v
    ),
)
ANSWER = FieldType(
    "a string or a number",
    lambda v: isinstance(v, str) or (isinstance(v, (int, float)) and not isinstance(v, bool)),
)
NUMBERS = FieldType(
    "a list of numbers",
    lambda v: isinstance(v, list)
    and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v),
)
COUNTS = FieldType(
    "a list of integers >= 0", lambda v: isinstance(v, list) and all(_is_int(x) and x >= 0 for x in v)
)
BOOLEANS = FieldType(
    "a list of true/false", lambda v: isinstance(v, list) and all(isinstance(x, bool) for x in v)
)
LIST = FieldType("a list", lambda v: isinstance(v, list))
STRING_MAP = FieldType(
    "an object of strings",
    lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
)

# Field types by (dotted) name, as docs/records.md gives them. A stage names the
# fields it needs; check_fields() enforces these types with one message shape.
FIELD_TYPES: dict[str, FieldType] = {
    "id": STRING,
    "dataset": STRING,
    "task_id": STRING,
    "category": STRING,
    "prompt": _nullable(STRING),
    "messages": _nullable(MESSAGES),
    "stop": STRINGS,
    "scorer": _one_of(SCORERS),
    "reference": OBJECT,
    "reference.style": _one_of(TEST_STYLES),
    "reference.prompt_is_code": BOOLEAN,
    "reference.entry_point": STRING,
    "reference.test": STRING,
    "reference.setup": _nullable(STRING),
    "reference.answer": ANSWER,
    "reference.choices": _nullable(STRINGS),
    "reference.label": STRING,
    "reference.continuations": STRINGS,
    "reference.loglikelihood": BOOLEAN,
    "reference.extractions": STRING_MAP,
    "num_fewshot": INDEX,
    "fewshot_ids": STRINGS,
    "model": STRING,
    "sample": INDEX,
    "completion": _nullable(STRING),
    "error": _nullable(STRING),
    "key": STRING,
    "usage": _nullable(OBJECT),
    "usage.completion_tokens": _nullable(INDEX),
    "choice_logprobs": _nullable(NUMBERS),
    "choice_tokens": _nullable(COUNTS),
    "choice_bytes": _nullable(COUNTS),
    "choice_greedy": _nullable(BOOLEANS),
    "score": OBJECT,
    "score.status": _one_of(STATUSES),
    "score.extractions": _nullable(OBJECT),
}


def _lookup(rec: Record, name: str) -> tuple[bool, Any]:
    value: Any = rec
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def check_fields(
    where: str, rec: Record, required: Iterable[str] = (), optional: Iterable[str] = ()
) -> None:
    """Check ``rec``'s fields against :data:`FIELD_TYPES`; raise :class:`DataError` on the first wrong one.

    ``required`` fields must be present (``no field "x"``); ``optional`` ones
    are checked when present. Messages read ``FILE:LINE: field "x" must be a
    string, got int``.
    """
    for name, needed in [*((n, True) for n in required), *((n, False) for n in optional)]:
        present, value = _lookup(rec, name)
        if not present:
            if needed:
                raise DataError(where, f'no field "{name}"')
            continue
        ftype = FIELD_TYPES[name]
        if not ftype.accepts(value):
            got = "null" if value is None else type(value).__name__
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
                got = f"{got} {shown}"
            raise DataError(where, f'field "{name}" must be {ftype.what}, got {got}')
