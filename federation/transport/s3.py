"""Mailboxes in S3 buckets: one bucket per node, credentials that reach only that bucket.

The only module that imports boto3/botocore (botocore alone suffices). Works with AWS and
with S3-compatible servers (SeaweedFS in the tests and the demo): SigV4 signatures,
path-style addressing and an explicit endpoint URL.

Atomicity: S3 makes a single PUT visible all at once, and a multipart upload only when it
is completed, so small objects go in one PUT and large ones as multipart; a reader sees
the old object, the new one, or nothing. Downloads are one GET of one version, streamed to
a temporary file and renamed into place (ranged parallel GETs could stitch two versions
together if the key is overwritten meanwhile).

Retries happen on two levels: botocore's "standard" mode retries single requests on
throttling (SlowDown, 503), 5xx and dropped connections within a second or two, and
`call_with_retry` retries the whole operation with longer backoff, so an upload survives
a server restart by starting again.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import botocore.exceptions
import botocore.session
from botocore.config import Config

from federation.errors import SpecError, TransportError
from federation.transport.base import (
    DEFAULT_RETRY_POLICY,
    ClosingTransport,
    NotFound,
    RetryPolicy,
    call_with_retry,
    validate_key,
    validate_prefix,
)
from federation.transport.local import atomic_destination

T = TypeVar("T")

MIB = 1 << 20
MIN_PART_BYTES = 5 * MIB  # S3's minimum size for every part but the last
MULTIPART_THRESHOLD_BYTES = 16 * MIB  # below this one PUT is faster and just as atomic
PART_BYTES = 16 * MIB  # x PART_WORKERS is the memory an upload holds at once
PART_WORKERS = 4  # parallel part uploads: saturates a link without flooding the server
DOWNLOAD_CHUNK_BYTES = 1 * MIB
BOTOCORE_ATTEMPTS = 3  # per request; longer outages are the outer retry's job
DEFAULT_REGION = "us-east-1"  # S3-compatible servers accept any; AWS needs the real one

NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
    }
)
# Bucket names: S3's rules (3-63 chars, lowercase letters, digits, hyphens).
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
MAILBOX_BUCKET_PREFIX = "mailbox-"
_SESSION_LOCK = threading.Lock()


@dataclass(frozen=True)
class S3Credentials:
    """An access key pair. The secret never appears in repr or messages."""

    access_key: str
    secret_key: str = field(repr=False)


def mailbox_bucket(node_id: str) -> str:
    """The bucket that holds node `node_id`'s mailbox, e.g. 'mailbox-fi'."""
    bucket = f"{MAILBOX_BUCKET_PREFIX}{node_id}"
    if not _BUCKET_NAME.match(bucket):
        raise SpecError(
            f"node_id {node_id!r} gives bucket name {bucket!r}, which S3 rejects; use lowercase letters, digits and '-' (at most 55 characters)"
        )
    return bucket


def make_client(
    endpoint_url: str | None,
    credentials: S3Credentials,
    *,
    region: str = DEFAULT_REGION,
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
    max_connections: int = PART_WORKERS + 2,
) -> Any:
    """An S3 client with explicit credentials (never the environment's)."""
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},  # S3-compatible servers have no bucket DNS names
        retries={"mode": "standard", "max_attempts": BOTOCORE_ATTEMPTS},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_connections,
    )
    with _SESSION_LOCK:  # creating clients from one session is not thread-safe
        return _shared_session().create_client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=credentials.access_key,
            aws_secret_access_key=credentials.secret_key,
            config=config,
        )


@functools.cache
def _shared_session() -> Any:
    # One botocore session for every client: it caches the parsed service model, which
    # takes ~0.4 s to load; a fresh session per transport would pay that each time.
    return botocore.session.get_session()


def transport_error(error: Exception, bucket: str, key: str, action: str) -> TransportError:
    """One-line TransportError for a boto3/botocore failure; NotFound for a missing key."""
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if isinstance(error, botocore.exceptions.ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code", "Unknown"))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in NOT_FOUND_CODES:
            return NotFound(f"{where}: no such object ({action})")
        if code in DENIED_CODES:
            return TransportError(
                f"{where}: {action} denied ({code}); these credentials do not reach bucket '{bucket}' (each node's keys reach only its own bucket): use the credentials issued for this bucket",
                retryable=False,
            )
        if code == "NoSuchBucket":
            return TransportError(
                f"{where}: bucket '{bucket}' does not exist ({action}); create it or fix the bucket name in the settings",
                retryable=False,
            )
        retryable = code in TRANSIENT_CODES or status >= 500
        server_message = " ".join(str(details.get("Message") or "").split())
        suffix = f": {server_message}" if server_message else ""
        return TransportError(
            f"{where}: {action} failed: {code} (HTTP {status}){suffix}", retryable=retryable
        )
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return TransportError(f"{where}: no S3 credentials configured", retryable=False)
    # Connection refused/reset, timeouts, truncated bodies: the server may come back.
    message = " ".join(str(error).split())
    return TransportError(f"{where}: {action} failed: {message}", retryable=True)


class S3Transport(ClosingTransport):
    """A node mailbox in `bucket`, reached with `credentials` at `endpoint_url`."""

    def __init__(
        self,
        *,
        bucket: str,
        credentials: S3Credentials,
        endpoint_url: str | None = None,
        region: str = DEFAULT_REGION,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        multipart_threshold: int = MULTIPART_THRESHOLD_BYTES,
        part_size: int = PART_BYTES,
        part_workers: int = PART_WORKERS,
    ) -> None:
        if part_size < MIN_PART_BYTES or multipart_threshold < part_size:
            raise ValueError(
                f"need {MIN_PART_BYTES} <= part_size <= multipart_threshold (S3's minimum part size)"
            )
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.retry_policy = retry_policy
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.part_workers = part_workers
        self._client = make_client(
            endpoint_url, credentials, region=region, max_connections=part_workers + 2
        )

    @property
    def location(self) -> str:
        return f"s3://{self.bucket} at {self.endpoint_url or 'AWS'}"

    def __repr__(self) -> str:
        return f"S3Transport(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    def close(self) -> None:
        self._client.close()

    def _call(self, action: str, key: str, operation: Callable[[], T]) -> T:
        def mapped() -> T:
            try:
                return operation()
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
                raise transport_error(error, self.bucket, key, action) from error

        return call_with_retry(
            mapped, what=f"{action} s3://{self.bucket}/{key}", policy=self.retry_policy
        )

    # Writing -------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        validate_key(key)
        self._call(
            "put", key, lambda: self._client.put_object(Bucket=self.bucket, Key=key, Body=data)
        )

    def put_file(self, key: str, source: Path) -> None:
        validate_key(key)
        source = Path(source)
        if not source.is_file():
            raise TransportError(f"put {key!r}: source {source} is not a file", retryable=False)
        size = source.stat().st_size
        if size < self.multipart_threshold:

            def single_put() -> None:
                with open(source, "rb") as body:
                    self._client.put_object(Bucket=self.bucket, Key=key, Body=body)

            self._call("put", key, single_put)
        else:
            self._call("multipart put", key, lambda: self._multipart_upload(key, source, size))

    def _multipart_upload(self, key: str, source: Path, size: int) -> None:
        """One complete attempt: a failure aborts it, and a retry starts a fresh upload."""
        upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        parts = [
            (number, offset, min(self.part_size, size - offset))
            for number, offset in enumerate(range(0, size, self.part_size), start=1)
        ]
        try:
            with ThreadPoolExecutor(max_workers=self.part_workers) as pool:
                etags = list(
                    pool.map(
                        lambda part: self._upload_part(key, upload_id, source, *part),
                        parts,
                    )
                )
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [
                        {"ETag": etag, "PartNumber": number}
                        for (number, _, _), etag in zip(parts, etags, strict=True)
                    ]
                },
            )
        except BaseException:
            # Best effort: with the server gone the abort fails too; the parts of an
            # unfinished upload are never visible as an object either way.
            with contextlib.suppress(Exception):  # the original error is the one to report
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    def _upload_part(
        self, key: str, upload_id: str, source: Path, number: int, offset: int, length: int
    ) -> str:
        with open(source, "rb") as handle:
            handle.seek(offset)
            body = handle.read(length)
        response = self._client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return str(response["ETag"])

    def delete(self, key: str) -> None:
        validate_key(key)
        self._call("delete", key, lambda: self._client.delete_object(Bucket=self.bucket, Key=key))

    # Reading -------------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        validate_key(key)

        def read() -> bytes:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            return bytes(response["Body"].read())

        return self._call("get", key, read)

    def get_file(self, key: str, dest: Path) -> None:
        validate_key(key)
        dest = Path(dest)

        def download() -> None:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            with atomic_destination(dest) as temporary, open(temporary, "wb") as out:
                for chunk in response["Body"].iter_chunks(DOWNLOAD_CHUNK_BYTES):
                    out.write(chunk)

        self._call("get", key, download)

    def check(self) -> None:
        """The bucket exists and these credentials reach it (HEAD bucket)."""
        try:
            self._call("check", "", lambda: self._client.head_bucket(Bucket=self.bucket))
        except NotFound:  # HEAD has no body: a missing bucket is a bare 404
            raise TransportError(
                f"s3://{self.bucket}: bucket does not exist at {self.endpoint_url or 'AWS'}; "
                "create it or fix the bucket name in the settings",
                retryable=False,
            ) from None

    def exists(self, key: str) -> bool:
        validate_key(key)
        try:
            self._call("head", key, lambda: self._client.head_object(Bucket=self.bucket, Key=key))
        except NotFound:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)

        def list_all() -> list[str]:
            paginator = self._client.get_paginator("list_objects_v2")
            keys: list[str] = []
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", []))
            return keys

        # Keys someone else put that break our rules (a '..', a dot-segment) are not ours.
        return sorted(key for key in self._call("list", prefix, list_all) if _is_valid_key(key))


def _is_valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except TransportError:
        return False
    return True


def create_buckets(
    endpoint_url: str | None,
    credentials: S3Credentials,
    buckets: list[str],
    *,
    region: str = DEFAULT_REGION,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> None:
    """Create `buckets` (those that exist already are fine), with an operator's credentials."""
    client = make_client(endpoint_url, credentials, region=region)
    try:
        for bucket in buckets:

            def create(bucket: str = bucket) -> None:
                try:
                    client.create_bucket(Bucket=bucket)
                except botocore.exceptions.ClientError as error:
                    code = error.response.get("Error", {}).get("Code")
                    if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise transport_error(error, bucket, "", "create bucket") from error
                except botocore.exceptions.BotoCoreError as error:
                    raise transport_error(error, bucket, "", "create bucket") from error

            call_with_retry(create, what=f"create bucket {bucket}", policy=retry_policy)
    finally:
        client.close()
