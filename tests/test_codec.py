import math

import pytest

from llmeval.codec import RemoteRef, Unencodable, decode, encode


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        1,
        -7,
        2**80,
        1.5,
        -0.0,
        float("inf"),
        "text",
        "",
        b"\x00\xff",
        1 + 2j,
        [1, [2, (3,)]],
        (1, "a"),
        {"k": [1, 2], 3: None, (1, 2): "t"},
        {1, 2},
        frozenset({"x"}),
        [],
    ],
)
def test_round_trip_keeps_types(value):
    back = decode(encode(value))
    assert back == value and type(back) is type(value)


def test_literal_types_stay_apart():
    assert decode(encode(True)) is True and type(decode(encode(1))) is int
    assert type(decode(encode((1, 2)))) is tuple and type(decode(encode([1, 2]))) is list
    assert type(decode(encode(1.0))) is float
    assert math.copysign(1, decode(encode(-0.0))) == -1
    assert math.isnan(decode(encode(float("nan"))))
    assert decode(encode([True, 1, 1.0])) == [True, 1, 1.0]
    assert [type(x) for x in decode(encode([True, 1, 1.0]))] == [bool, int, float]


def test_unknown_types_become_refs_or_fail():
    class Anything:
        def __eq__(self, other):
            return True

    with pytest.raises(Unencodable):
        encode(Anything())
    objs = {}
    data = encode([Anything()], lambda o: objs.setdefault(id(o), o) and id(o))
    (ref,) = decode(data)
    assert isinstance(ref, RemoteRef)
    assert ref != 0 and ref != "anything" and not (ref == [1])
    assert decode(data, lambda h: objs[h])[0] is list(objs.values())[0]


def test_subclasses_of_builtins_are_not_trusted():
    class Int(int):
        def __eq__(self, other):
            return True

    with pytest.raises(Unencodable):
        encode(Int(3))


@pytest.mark.parametrize("bad", [[], ["zz", 1], ["i", [1]], ["l", "notalist"], "s", None, ["b", 1]])
def test_malformed_data_is_rejected(bad):
    with pytest.raises(ValueError):
        decode(bad)


def test_depth_limit():
    deep: list = []
    cur = deep
    for _ in range(200):
        cur.append([])
        cur = cur[0]
    with pytest.raises(Unencodable):
        encode(deep)
