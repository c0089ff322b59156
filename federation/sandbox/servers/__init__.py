"""Real mailbox servers on loopback, for `federation demo --transport s3|ssh` and the tests.

Both bind 127.0.0.1 only, keep everything in a private work directory, and are stopped by
their own process id (SIGTERM, then SIGKILL if they linger) when the `with` block ends,
also when it ends with an error:

    with seaweedfs_mailboxes(work_dir / "s3", ["fi", "ee"]) as s3:
        coordinator_side = s3.transport("coordinator", mailbox_bucket("fi"))
        node_side = s3.transport("node-fi", mailbox_bucket("fi"))

    with OpenSSHServer(work_dir / "sshd") as sshd:
        mailbox = SSHTransport(sshd.target(remote_root=str(work_dir / "mailboxes" / "fi")))
        exit_code, stdout, stderr = mailbox.run_remote(["federation", "node", "run-once", ...])

The implementations live in `seaweedfs.py` and `sshd.py`; this module is the one to import.
"""

from __future__ import annotations

from federation.sandbox.servers.processes import LOOPBACK, free_port
from federation.sandbox.servers.seaweedfs import (
    COORDINATOR,
    S3Identity,
    SeaweedFSServer,
    mailbox_identities,
    node_identity_name,
    seaweed_identities_config,
    seaweedfs_mailboxes,
)
from federation.sandbox.servers.sshd import OpenSSHServer
from federation.transport.s3 import S3Credentials, mailbox_bucket

__all__ = [
    "COORDINATOR",
    "LOOPBACK",
    "OpenSSHServer",
    "S3Credentials",
    "S3Identity",
    "SeaweedFSServer",
    "free_port",
    "mailbox_bucket",
    "mailbox_identities",
    "node_identity_name",
    "seaweed_identities_config",
    "seaweedfs_mailboxes",
]
