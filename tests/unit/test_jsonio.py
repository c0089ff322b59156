"""federation.jsonio: the one canonical encoder, the strict parser and record normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from federation.jsonio import canonical_json, jsonable, parse_json_strictly


def test_canonical_json_is_sorted_compact_utf8():
    assert (
        canonical_json({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()
    )


@pytest.mark.parametrize(
    "value", [{"x": float("nan")}, {"x": float("inf")}, {1: "a"}, {"x": (1, 2)}, {"x": b"b"}]
)
def test_canonical_json_refuses_what_json_cannot_say_exactly(value):
    with pytest.raises(ValueError):
        canonical_json(value)


def test_canonical_json_refuses_deep_nesting():
    value: object = "leaf"
    for _ in range(40):
        value = [value]
    with pytest.raises(ValueError, match="nested deeper"):
        canonical_json(value)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b'{"a": Infinity}', "Infinity is not JSON"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_strict_parser_refuses_what_two_parsers_could_read_differently(data, problem):
    with pytest.raises(ValueError, match=problem):
        parse_json_strictly(data)


def test_jsonable_turns_records_into_plain_json_that_canonical_json_accepts():
    record = {
        "path": Path("/node/work/audit.jsonl"),
        "rules": ({"observed": float("nan"), "limit": np.int64(20)},),
        "share": np.float64(0.25),
        "names": frozenset({"b", "a"}),
        "flag": True,
    }
    plain = jsonable(record)
    assert plain == {
        "path": "/node/work/audit.jsonl",
        "rules": [{"observed": "nan", "limit": 20}],
        "share": 0.25,
        "names": ["a", "b"],
        "flag": True,
    }
    assert canonical_json(plain)  # encodable as it stands
    assert type(plain["rules"][0]["limit"]) is int and type(plain["flag"]) is bool
