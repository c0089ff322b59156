"""Mailbox key validation: what every transport accepts as a key or a listing prefix."""

from __future__ import annotations

import pytest

from federation.errors import TransportError
from federation.transport.base import (
    MAX_KEY_LENGTH,
    NotFound,
    in_flight_name,
    is_in_flight_name,
    validate_key,
    validate_prefix,
)

GOOD_KEYS = [
    "COMPLETE",
    "inbox/task-01/bundle.tar",
    "inbox/task-01/envelope.json",
    "outbox/2024-05-01T12:00:00Z/result.tar",
    "a/b/c/d/e.tar.gz",
    "ünïcode/ключ",
]
BAD_KEYS = {
    "": "empty",
    "/inbox/x": "absolute",
    "/": "absolute",
    "..": "'..' segment",
    "inbox/../outbox/x": "'..' segment",
    "inbox/..": "'..' segment",
    "./inbox": "'.' segment",
    "inbox\\task\\bundle.tar": "backslash",
    "inbox//bundle.tar": "empty path segment",
    "inbox/": "empty path segment",
    "inbox/.upload-1234-bundle.tar": "reserved for in-flight uploads",
    ".hidden": "reserved for in-flight uploads",
    "inbox/a\x00b": "control character",
    "inbox/a\nb": "control character",
    "k" * (MAX_KEY_LENGTH + 1): f"longer than {MAX_KEY_LENGTH} bytes",
}


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_good_keys_pass_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(("key", "reason"), BAD_KEYS.items(), ids=repr)
def test_bad_keys_raise_a_one_line_final_error(key: str, reason: str) -> None:
    with pytest.raises(TransportError) as raised:
        validate_key(key)
    message = str(raised.value)
    assert raised.value.retryable is False
    assert reason in message
    assert "\n" not in message
    assert "relative POSIX path" in message  # the fix


@pytest.mark.parametrize("key", [None, 3, b"inbox/x"])
def test_non_string_keys_are_refused(key: object) -> None:
    with pytest.raises(TransportError):
        validate_key(key)  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", ["", "inbox", "inbox/", "inbox/task-0", "outbox/t/"])
def test_prefixes_may_be_empty_or_end_in_a_slash(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "/inbox", "../x", "inbox/../", "a\\b", "a//", ".x/"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(TransportError) as raised:
        validate_prefix(prefix)
    assert raised.value.retryable is False


def test_in_flight_names_cannot_be_keys() -> None:
    name = in_flight_name("bundle.tar", "abc123")
    assert is_in_flight_name(name)
    assert not is_in_flight_name("bundle.tar")
    with pytest.raises(TransportError):
        validate_key(f"inbox/t/{name}")


def test_not_found_is_a_final_transport_error() -> None:
    error = NotFound("s3://b/k: no such object (get)")
    assert isinstance(error, TransportError)
    assert error.retryable is False
