"""S3Transport against moto's in-process S3, and its mapping of S3 errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from moto import mock_aws

from federation.errors import SpecError, TransportError
from federation.transport import NotFound, RetryPolicy, Transport
from federation.transport.s3 import (
    MIN_PART_BYTES,
    S3Credentials,
    S3Transport,
    mailbox_bucket,
    transport_error,
)

BUCKET = "mailbox-fi"
QUICK_RETRIES = RetryPolicy(max_attempts=3, initial_delay=0.0, max_delay=0.0)


@pytest.fixture()
def mailbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Transport]:
    for variable in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    with mock_aws():
        transport = S3Transport(
            bucket=BUCKET,
            credentials=S3Credentials("testing", "testing"),
            multipart_threshold=MIN_PART_BYTES,
            part_size=MIN_PART_BYTES,
            retry_policy=QUICK_RETRIES,
        )
        # The transport's own client (a fresh boto3 session costs ~0.5 s per test).
        transport._client.create_bucket(Bucket=BUCKET)
        with transport:
            yield transport


def client_error(
    code: str, status: int, operation: str = "GetObject"
) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {
            "Error": {"Code": code, "Message": "message"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


def test_is_a_transport_and_hides_the_secret(mailbox: S3Transport) -> None:
    assert isinstance(mailbox, Transport)
    assert "testing" not in repr(S3Credentials("AKIA", "testing"))
    assert mailbox.location == "s3://mailbox-fi at AWS"


def test_round_trips_small_and_multipart(mailbox: S3Transport, tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    small.write_bytes(b"envelope")
    large.write_bytes(os.urandom(2 * MIN_PART_BYTES + 12345))  # three parts
    mailbox.put_file("inbox/t/envelope.json", small)
    mailbox.put_file("inbox/t/bundle.tar", large)
    mailbox.put_bytes("inbox/t/empty", b"")

    assert mailbox.get_bytes("inbox/t/envelope.json") == b"envelope"
    assert mailbox.get_bytes("inbox/t/empty") == b""
    dest = tmp_path / "down" / "bundle.tar"
    mailbox.get_file("inbox/t/bundle.tar", dest)
    assert dest.read_bytes() == large.read_bytes()


def test_list_exists_delete_and_not_found(mailbox: S3Transport, tmp_path: Path) -> None:
    for key in ["outbox/t1/result.tar", "inbox/t2/a", "inbox/t1/b", "inbox/t10/a"]:
        mailbox.put_bytes(key, b"1")
    assert mailbox.list("inbox/t1") == ["inbox/t1/b", "inbox/t10/a"]
    assert mailbox.list() == ["inbox/t1/b", "inbox/t10/a", "inbox/t2/a", "outbox/t1/result.tar"]
    assert mailbox.exists("inbox/t2/a")
    assert not mailbox.exists("inbox/t2")

    mailbox.delete("inbox/t2/a")
    mailbox.delete("inbox/t2/a")  # idempotent
    assert not mailbox.exists("inbox/t2/a")
    with pytest.raises(NotFound, match="s3://mailbox-fi/inbox/t2/a: no such object"):
        mailbox.get_bytes("inbox/t2/a")
    with pytest.raises(NotFound):
        mailbox.get_file("inbox/t2/a", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_foreign_keys_breaking_the_rules_are_not_listed(mailbox: S3Transport) -> None:
    raw = mailbox._client
    raw.put_object(Bucket=BUCKET, Key="inbox/../evil", Body=b"x")
    raw.put_object(Bucket=BUCKET, Key="inbox/.hidden", Body=b"x")
    mailbox.put_bytes("inbox/ok", b"x")
    assert mailbox.list("inbox/") == ["inbox/ok"]


def test_invalid_keys_are_refused_before_any_request(mailbox: S3Transport) -> None:
    with pytest.raises(TransportError, match="absolute") as raised:
        mailbox.put_bytes("/abs", b"x")
    assert raised.value.retryable is False


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("AccessDenied", 403, False),
        ("403", 403, False),
        ("InvalidAccessKeyId", 403, False),
        ("SignatureDoesNotMatch", 403, False),
        ("NoSuchBucket", 404, False),
        ("InvalidRequest", 400, False),
        ("SlowDown", 503, True),
        ("503", 503, True),
        ("InternalError", 500, True),
        ("BadGateway", 502, True),
        ("RequestTimeout", 400, True),
    ],
)
def test_client_errors_map_to_one_line_transport_errors(
    code: str, status: int, retryable: bool
) -> None:
    error = transport_error(client_error(code, status), "mailbox-ee", "inbox/t/x", "get")
    assert type(error) is TransportError
    assert error.retryable is retryable
    assert "s3://mailbox-ee/inbox/t/x" in str(error)
    assert "\n" not in str(error)


def test_access_denied_names_bucket_key_and_fix() -> None:
    error = transport_error(client_error("AccessDenied", 403), "mailbox-ee", "outbox/t/r", "put")
    message = str(error)
    assert "s3://mailbox-ee/outbox/t/r: put denied (AccessDenied)" in message
    assert "bucket 'mailbox-ee'" in message
    assert "use the credentials issued for this bucket" in message


@pytest.mark.parametrize("code", ["NoSuchKey", "404", "NotFound"])
def test_missing_objects_map_to_not_found(code: str) -> None:
    assert isinstance(transport_error(client_error(code, 404), "b", "k", "get"), NotFound)


def test_connection_errors_are_retryable() -> None:
    error = botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    mapped = transport_error(error, "b", "k", "put")
    assert mapped.retryable is True
    assert "Could not connect" in str(mapped)


def flaky(real: Any, failures: list[Exception]) -> Any:
    def call(**kwargs: Any) -> Any:
        if failures:
            raise failures.pop(0)
        return real(**kwargs)

    return call


def test_throttling_and_connection_drops_are_retried(
    mailbox: S3Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[Exception] = [
        client_error("SlowDown", 503, "PutObject"),
        botocore.exceptions.ConnectionClosedError(endpoint_url="http://x"),
    ]
    monkeypatch.setattr(mailbox._client, "put_object", flaky(mailbox._client.put_object, failures))
    mailbox.put_bytes("inbox/t/x", b"payload")
    assert failures == []
    assert mailbox.get_bytes("inbox/t/x") == b"payload"


def test_denied_requests_are_not_retried(
    mailbox: S3Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[Exception] = [client_error("AccessDenied", 403, "PutObject")] * 2
    monkeypatch.setattr(mailbox._client, "put_object", flaky(mailbox._client.put_object, failures))
    with pytest.raises(TransportError, match="denied") as raised:
        mailbox.put_bytes("inbox/t/x", b"payload")
    assert raised.value.retryable is False
    assert len(failures) == 1  # one attempt only


def test_a_failed_multipart_upload_is_aborted_and_never_visible(
    mailbox: S3Transport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "large"
    source.write_bytes(os.urandom(2 * MIN_PART_BYTES))
    failures: list[Exception] = [client_error("AccessDenied", 403, "UploadPart")]
    monkeypatch.setattr(
        mailbox._client, "upload_part", flaky(mailbox._client.upload_part, failures)
    )
    with pytest.raises(TransportError, match="denied"):
        mailbox.put_file("outbox/t/result.tar", source)
    assert mailbox.list() == []
    uploads = mailbox._client.list_multipart_uploads(Bucket=BUCKET)
    assert uploads.get("Uploads", []) == []


def test_part_sizes_below_the_s3_minimum_are_refused() -> None:
    with pytest.raises(ValueError, match="part_size"):
        S3Transport(bucket=BUCKET, credentials=S3Credentials("a", "b"), part_size=1024)


def test_mailbox_bucket_names() -> None:
    assert mailbox_bucket("fi") == "mailbox-fi"
    with pytest.raises(SpecError, match="node_id 'FI_1'"):
        mailbox_bucket("FI_1")
