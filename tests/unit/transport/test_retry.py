"""The retry helper: exponential backoff with jitter, bounded by attempts and by time."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from federation.errors import SpecError, TransportError
from federation.transport.base import NotFound, RetryPolicy, call_with_retry


class FakeClock:
    """time.monotonic and time.sleep that only move when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failing(times: int, error: Exception, result: str = "done") -> Callable[[], str]:
    calls = {"n": 0}

    def operation() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise error
        return result

    operation.calls = calls  # type: ignore[attr-defined]
    return operation


def run(
    operation: Callable[[], str], policy: RetryPolicy, fake: FakeClock, fraction: float = 0.5
) -> str:
    return call_with_retry(
        operation,
        what="put s3://b/k",
        policy=policy,
        sleep=fake.sleep,
        clock=fake.clock,
        random_fraction=lambda: fraction,
    )


def test_success_first_time_does_not_sleep() -> None:
    fake = FakeClock()
    assert run(failing(0, TransportError("x")), RetryPolicy(), fake) == "done"
    assert fake.sleeps == []


def test_retryable_errors_are_retried_with_growing_jittered_delays() -> None:
    fake = FakeClock()
    policy = RetryPolicy(max_attempts=6, initial_delay=0.5, max_delay=3.0, multiplier=2.0)
    operation = failing(5, TransportError("503 SlowDown"))
    assert run(operation, policy, fake, fraction=1.0) == "done"
    # base delays 0.5, 1, 2, 3 (capped), 3; with fraction 1.0 the full base is used
    assert fake.sleeps == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("fraction", [0.0, 0.37, 0.999])
def test_jitter_keeps_each_delay_between_half_and_all_of_the_base(fraction: float) -> None:
    fake = FakeClock()
    policy = RetryPolicy(max_attempts=5, initial_delay=1.0, max_delay=8.0)
    run(failing(4, TransportError("x")), policy, fake, fraction=fraction)
    for retry_number, delay in enumerate(fake.sleeps, start=1):
        base = min(8.0, 1.0 * 2 ** (retry_number - 1))
        assert base / 2 <= delay <= base


def test_attempts_are_bounded_and_the_last_error_is_named() -> None:
    fake = FakeClock()
    operation = failing(100, TransportError("connection refused"))
    with pytest.raises(TransportError) as raised:
        run(operation, RetryPolicy(max_attempts=3, initial_delay=0.1), fake)
    assert operation.calls["n"] == 3  # type: ignore[attr-defined]
    assert len(fake.sleeps) == 2
    message = str(raised.value)
    assert message.startswith("put s3://b/k: gave up after 3 attempt(s)")
    assert "connection refused" in message
    assert raised.value.retryable is True  # a later run may succeed
    assert isinstance(raised.value.__cause__, TransportError)


def test_elapsed_time_is_bounded_without_sleeping_past_the_limit() -> None:
    fake = FakeClock()
    policy = RetryPolicy(max_attempts=1000, initial_delay=1.0, max_delay=4.0, max_elapsed=10.0)
    with pytest.raises(TransportError, match="gave up after"):
        run(failing(1000, TransportError("x")), policy, fake, fraction=1.0)
    assert sum(fake.sleeps) <= 10.0
    assert fake.sleeps == [1.0, 2.0, 4.0]  # the next 4 s would pass the 10 s limit


@pytest.mark.parametrize(
    "error",
    [
        TransportError("AccessDenied", retryable=False),
        NotFound("no such object"),
        SpecError("bad input"),
        ValueError("a bug"),
    ],
)
def test_final_errors_propagate_at_once(error: Exception) -> None:
    fake = FakeClock()
    operation = failing(1, error)
    with pytest.raises(type(error)) as raised:
        run(operation, RetryPolicy(), fake)
    assert raised.value is error
    assert fake.sleeps == []


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(initial_delay=5.0, max_delay=1.0)
