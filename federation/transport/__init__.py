"""Moving tasks and results between the coordinator and the national nodes' mailboxes.

`base` defines the `Transport` protocol every backend honours; `local` (directories),
`s3` (the only boto3 importer) and `ssh` (the only paramiko importer) implement it, and
`servers` starts real loopback SeaweedFS and OpenSSH servers for the demo and the tests.
The S3 and SSH modules are imported on demand so that local use needs neither library.
"""

from federation.transport.base import (
    DEFAULT_RETRY_POLICY,
    NotFound,
    RetryPolicy,
    Transport,
    call_with_retry,
    validate_key,
    validate_prefix,
)
from federation.transport.local import LocalTransport

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "LocalTransport",
    "NotFound",
    "RetryPolicy",
    "Transport",
    "call_with_retry",
    "validate_key",
    "validate_prefix",
]
