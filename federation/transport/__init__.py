"""Transports between coordinator and nodes: local directories, S3 (boto3), SSH/SFTP (paramiko).

`open_transport` builds one from a validated config (config/schema/transport.schema.json).
The S3 and SSH modules are imported only when used, so a node that never uses them does
not need their libraries loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from federation.errors import SpecError
from federation.schema import validate
from federation.transport.base import (
    NotFound,
    RetryPolicy,
    Transport,
    call_with_retry,
    validate_key,
    validate_prefix,
)
from federation.transport.local import LocalTransport
from federation.yamlio import load_yaml

__all__ = [
    "LocalTransport",
    "NotFound",
    "RetryPolicy",
    "Transport",
    "call_with_retry",
    "open_transport",
    "validate_key",
    "validate_prefix",
]


def _resolve(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def read_s3_credentials(path: Path) -> tuple[str, str]:
    """Access key pair from a YAML file; secrets live in files, never in configs or logs."""
    if not path.is_file():
        raise SpecError(
            f"mailbox 'credentials_file': '{path}' not found; point it at the node's S3 key file"
        )
    document = load_yaml(path.read_bytes()) or {}
    if not isinstance(document, dict) or not {"access_key", "secret_key"} <= document.keys():
        raise SpecError(
            f"mailbox 'credentials_file': '{path}' needs access_key and secret_key entries"
        )
    return str(document["access_key"]), str(document["secret_key"])


def open_transport(config: Mapping[str, Any], base_dir: Path, label: str = "mailbox") -> Transport:
    data = validate(dict(config), "transport", label)
    if data["kind"] == "local":
        return LocalTransport(_resolve(data["path"], base_dir))
    if data["kind"] == "s3":
        from federation.transport.s3 import S3Credentials, S3Transport

        access_key, secret_key = read_s3_credentials(_resolve(data["credentials_file"], base_dir))
        return S3Transport(
            bucket=data["bucket"],
            credentials=S3Credentials(access_key=access_key, secret_key=secret_key),
            endpoint_url=data.get("endpoint_url"),
            region=data["region"],
        )
    from federation.transport.ssh import SSHTarget, SSHTransport

    return SSHTransport(
        SSHTarget(
            host=data["host"],
            port=data["port"],
            username=data["username"],
            client_key_path=_resolve(data["client_key"], base_dir),
            known_hosts_path=_resolve(data["known_hosts"], base_dir),
            remote_root=data["remote_root"],
        )
    )
