"""What every mailbox transport promises, and the pieces they share.

A node's mailbox is a flat namespace of relative POSIX keys such as
``inbox/<task_id>/bundle.tar`` or ``outbox/<task_id>/COMPLETE``. The coordinator writes
tasks into a node's inbox and reads its outbox; the node does the reverse. Writers put a
signed ``COMPLETE`` marker last, and readers trust nothing under a prefix before it is
there, so the transports themselves only have to make each single object atomic: a
reader sees the whole object or nothing, never a prefix of it.

The same contract (tests/integration/test_transport_contract.py) runs against every
implementation: local directories, S3 and SSH/SFTP.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, TypeVar, runtime_checkable

from federation.errors import TransportError

T = TypeVar("T")

# In-flight uploads live next to their final name under a dot-name; keys may not start a
# segment with a dot, so no key can collide with (or be listed as) an unfinished upload.
IN_FLIGHT_PREFIX = ".upload-"
MAX_KEY_LENGTH = 1024  # S3's limit on key length, in UTF-8 bytes; the strictest backend
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class NotFound(TransportError):
    """No object under this key (yet). Never retried: callers poll for it instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@runtime_checkable
class Transport(Protocol):
    """A node mailbox. Keys are validated relative POSIX paths (see `validate_key`).

    Semantics shared by every implementation:
    - `put_file`/`put_bytes` are atomic and overwrite: a reader sees the old object, the
      new one, or (for a new key) nothing; never a partial object.
    - `get_file`/`get_bytes` raise `NotFound` for a missing key.
    - `list(prefix)` returns the sorted keys that start with `prefix` (a string prefix,
      as in S3, not a directory), never an unfinished upload.
    - `delete` is idempotent: deleting a missing key is not an error.
    - A key may not also be a "directory" of another key (``a/b`` and ``a/b/c``).
    - `check` raises TransportError if the mailbox itself does not exist or cannot be reached
      (a mistyped path or bucket is an error, never an empty mailbox).
    """

    @property
    def location(self) -> str:
        """Where the mailbox is, for messages (never includes secrets)."""
        ...

    def put_file(self, key: str, source: Path) -> None: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_file(self, key: str, dest: Path) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def check(self) -> None: ...

    def close(self) -> None: ...


class ClosingTransport:
    """Mixin: `with SomeTransport(...) as mailbox:` closes the transport on exit."""

    def close(self) -> None:  # pragma: no cover - overridden where there is something to close
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _check_segments(value: str, what: str, *, allow_trailing_slash: bool) -> None:
    def refuse(reason: str) -> TransportError:
        return TransportError(
            f"invalid mailbox {what} {value!r}: {reason}; use a relative POSIX path such as 'inbox/<task_id>/bundle.tar'",
            retryable=False,
        )

    if len(value.encode("utf-8")) > MAX_KEY_LENGTH:
        raise refuse(f"longer than {MAX_KEY_LENGTH} bytes")
    if "\\" in value:
        raise refuse("contains a backslash")
    if _CONTROL_CHARACTERS.search(value):
        raise refuse("contains a control character")
    if value.startswith("/"):
        raise refuse("is absolute")
    segments = value.split("/")
    if allow_trailing_slash and segments[-1] == "":
        segments = segments[:-1]
    for segment in segments:
        if segment == "":
            raise refuse("has an empty path segment")
        if segment in (".", ".."):
            raise refuse(f"has a '{segment}' segment")
        if segment.startswith("."):
            raise refuse(f"segment {segment!r} starts with '.', reserved for in-flight uploads")


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative POSIX path, else raise TransportError (not retryable)."""
    if not isinstance(key, str) or key == "":
        raise TransportError(
            f"invalid mailbox key {key!r}: empty; use a relative POSIX path such as 'inbox/<task_id>/bundle.tar'",
            retryable=False,
        )
    _check_segments(key, "key", allow_trailing_slash=False)
    return key


def validate_prefix(prefix: str) -> str:
    """Like `validate_key`, but the empty prefix (everything) and a trailing '/' are allowed."""
    if prefix == "":
        return prefix
    _check_segments(prefix, "prefix", allow_trailing_slash=True)
    return prefix


def in_flight_name(final_name: str, token: str) -> str:
    """The temporary file name an upload uses in the final name's own directory."""
    return f"{IN_FLIGHT_PREFIX}{token}-{final_name}"


def is_in_flight_name(name: str) -> bool:
    return name.startswith(IN_FLIGHT_PREFIX)


# Retrying ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by attempts and by elapsed time.

    The delay before retry n (n = 1, 2, ...) is drawn from [base/2, base] with
    base = min(max_delay, initial_delay * multiplier**(n-1)): half fixed so a server that
    is down gets real breathing room, half random so many clients do not retry in step.
    """

    max_attempts: int = 8  # ~30 s of patience in total with the delays below
    initial_delay: float = 0.25
    max_delay: float = 8.0  # longer waits hide an outage rather than ride it out
    multiplier: float = 2.0
    max_elapsed: float = 120.0  # a transfer still failing after 2 minutes needs a human

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts={self.max_attempts} must be >= 1")
        if self.initial_delay < 0 or self.max_delay < self.initial_delay:
            raise ValueError("need 0 <= initial_delay <= max_delay")

    def delay_before(self, retry_number: int, random_fraction: float) -> float:
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (retry_number - 1))
        return base / 2 + base / 2 * random_fraction


DEFAULT_RETRY_POLICY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)


def call_with_retry(
    operation: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    random_fraction: Callable[[], float] = random.random,
) -> T:
    """Run `operation`, retrying retryable TransportErrors under `policy`.

    Anything else (including `NotFound` and errors marked not retryable) propagates at
    once. When the attempts or the time run out, the last error is re-raised wrapped in a
    TransportError that says how long it tried; it stays retryable, since a later run may
    well succeed once the server is back.
    """
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return operation()
        except TransportError as error:
            if not error.retryable:
                raise
            elapsed = clock() - started
            delay = policy.delay_before(attempt, random_fraction())
            out_of_attempts = attempt >= policy.max_attempts
            out_of_time = elapsed + delay > policy.max_elapsed
            if out_of_attempts or out_of_time:
                raise TransportError(
                    f"{what}: gave up after {attempt} attempt(s) in {elapsed:.1f}s (limits: {policy.max_attempts} attempts, {policy.max_elapsed:g}s); last error: {error}"
                ) from error
            sleep(delay)
