"""A plain-data codec for values crossing the sandbox boundary.

Values are tagged so Python's literal types stay apart: ``True`` is not ``1``,
``(1, 2)`` is not ``[1, 2]``, ``1.0`` is not ``1``; floats travel as
``float.hex`` so ``-0.0``, ``nan`` and ``inf`` survive exactly. Only these
types cross: None, bool, int, float, complex, str, bytes, list, tuple, dict,
set, frozenset. Anything else raises :class:`Unencodable`, and the sandbox
sends a handle (:class:`RemoteRef`) instead: an opaque reference the tests can
pass back to the candidate, and that compares equal only to itself. A
candidate's object with a forged ``__eq__`` never reaches the tests.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 100
# Items of one container (set, dict keys, list, tuple) that may share a hash with another,
# unequal item: past this, a value is refused before it is built (a set or dict of them costs
# time quadratic in the collisions, in one C call no deadline can interrupt: 40,000 ints that
# all hash to 0 take 16 s).
MAX_HASH_COLLISIONS = 1000
_CONTAINER_TAGS: dict[type, str] = {list: "l", tuple: "t", set: "S", frozenset: "F"}


class Unencodable(TypeError):
    pass


class RemoteRef:
    """A value that lives in the candidate's process, known here only by its handle."""

    __slots__ = ("handle", "type_name")

    def __init__(self, handle: int, type_name: str):
        self.handle = handle
        self.type_name = type_name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteRef) and other.handle == self.handle

    def __hash__(self) -> int:
        return hash(("RemoteRef", self.handle))

    def __repr__(self) -> str:
        return f"<{self.type_name} object in the sandbox #{self.handle}>"


def encode(value: Any, handles: Any = None, depth: int = 0) -> Any:
    """``value`` as tagged JSON-able data. ``handles(obj) -> int`` makes refs for other types."""
    if depth > MAX_DEPTH:
        raise Unencodable("value nested too deeply")
    t = type(value)
    if value is None:
        return ["n"]
    if t is bool:
        return ["b", value]
    if t is int:
        return ["i", str(value)] if abs(value) >= 1 << 53 else ["i", value]
    if t is float:
        return ["f", value.hex()]
    if t is str:
        return ["s", value]
    if t is complex:
        return ["c", value.real.hex(), value.imag.hex()]
    if t is bytes:
        return ["y", value.hex()]  # not base64: its module (and zlib) in every zygote
    if t is list or t is tuple or t is set or t is frozenset:
        tag = _CONTAINER_TAGS[t]
        return [tag, [encode(v, handles, depth + 1) for v in value]]
    if t is dict:
        return [
            "d",
            [
                [encode(k, handles, depth + 1), encode(v, handles, depth + 1)]
                for k, v in value.items()
            ],
        ]
    if t is RemoteRef:
        return ["r", value.handle, value.type_name]
    if handles is not None:
        return ["r", handles(value), t.__name__]
    raise Unencodable(f"cannot send a {t.__name__} across the sandbox boundary")


def decode(data: Any, resolve: Any = None, depth: int = 0) -> Any:
    """The value ``data`` encodes. ``resolve(handle)`` turns refs back into objects (candidate side)."""
    if depth > MAX_DEPTH or not isinstance(data, list) or not data:
        raise ValueError("malformed value")
    tag = data[0]
    if tag == "n":
        return None
    if tag == "b" and type(data[1]) is bool:
        return data[1]
    if tag == "i":
        v = data[1]
        if type(v) is int:
            return v
        if type(v) is str and len(v) < 5000:
            return int(v)
    if tag == "f" and type(data[1]) is str:
        return float.fromhex(data[1])
    if tag == "s" and type(data[1]) is str:
        return data[1]
    if tag == "c":
        return complex(float.fromhex(data[1]), float.fromhex(data[2]))
    if tag == "y" and type(data[1]) is str:
        return bytes.fromhex(data[1])
    if tag in ("l", "t", "S", "F") and type(data[1]) is list:
        items = [decode(v, resolve, depth + 1) for v in data[1]]
        _few_collisions(items)
        return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
    if tag == "d" and type(data[1]) is list:
        pairs = [(decode(k, resolve, depth + 1), decode(v, resolve, depth + 1)) for k, v in data[1]]
        _few_collisions([k for k, _ in pairs])
        return dict(pairs)
    if tag == "r" and type(data[1]) is int:
        if resolve is not None:
            return resolve(data[1])
        return RemoteRef(data[1], str(data[2]))
    raise ValueError(f"malformed value (tag {tag!r})")


def _few_collisions(items: list[Any]) -> None:
    """Refuse values crafted to share hashes (hashes are predictable: the hash seed is fixed):
    more than MAX_HASH_COLLISIONS items unequal to the first item with their hash. Linear:
    each item is compared with one other at most. Lists and tuples too: a test may well
    build a set from a returned list."""
    if len(items) <= MAX_HASH_COLLISIONS:
        return
    first: dict[int, Any] = {}
    unequal = 0
    for item in items:
        try:
            seen = first.setdefault(hash(item), item)
        except TypeError:  # unhashable: no set or dict can be built from it anyway
            continue
        if seen is not item and seen != item:
            unequal += 1
            if unequal > MAX_HASH_COLLISIONS:
                raise ValueError("malformed value (too many unequal values with equal hashes)")
