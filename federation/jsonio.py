"""JSON in and out: one canonical encoder and one strict parser for everything the project
signs, hashes or chains (signed documents, manifests, release requests, audit records).

Canonical JSON: keys sorted, no whitespace (separators ``,`` and ``:``), UTF-8 without ASCII
escaping, NaN and infinities refused, only objects with string keys, arrays, strings, integers,
floats (Python's shortest round-trip form), booleans and null. Prefer integers and strings in
payloads: float text is not identical across languages.

The strict parser refuses duplicate keys (two parsers may keep different copies, so what was
verified would not be what is used) and NaN/Infinity.
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath
from typing import Any

MAX_JSON_DEPTH = 32  # envelopes, manifests and audit records are shallow; deep nesting is an attack


def canonical_json(value: Any) -> bytes:
    """The canonical JSON bytes of `value`; ValueError if it is not plain JSON."""
    _check_json_value(value, "$", 0)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def _check_json_value(value: Any, where: str, depth: int) -> None:
    # json.dumps alone would turn int keys into strings and tuples into arrays, so the signed
    # bytes would not describe the object the caller holds; refuse instead.
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a string")
            _check_json_value(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]", depth + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} has no JSON form")
    elif not (value is None or isinstance(value, str | int | bool)):
        raise ValueError(f"{where}: {type(value).__name__} is not a JSON type")


def jsonable(value: Any) -> Any:
    """`value` as plain JSON for a record: paths and unknown objects as text, tuples and sets
    as lists, non-finite floats as their text ("nan", "inf"), numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, set | frozenset):
        return sorted(jsonable(item) for item in value)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return jsonable(value.item())
    if isinstance(value, PurePath):
        return str(value)
    return str(value)


def parse_json_strictly(data: bytes) -> Any:
    """Parse UTF-8 JSON, refusing duplicate keys and NaN/Infinity; ValueError otherwise."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ValueError(f"duplicate key {key!r}")
            result[key] = value
        return result

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(
            data.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constant
        )
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 ({error.reason} at byte {error.start})") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
