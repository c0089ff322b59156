"""The node-owned task policy: what a node checks before it unpacks or runs anything.

Order matters and every check fails closed: the envelope's signature against pinned
coordinator keys and its form first (`TaskEnvelope.verify`: nothing unsigned is parsed
further), then that the task is for this node, fresh, not expired and from a compatible
federation version; replay and sequence checks live in the node ledger (`node.ledger`); the
bundle's digest, archive safety and the approved workflow digest come after download
(`node.agent`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from federation import __version__
from federation.errors import PolicyViolation, SpecError
from federation.protocol.messages import TaskEnvelope
from federation.protocol.signing import TrustStore, load_public_key
from federation.settings import NodeFederation

# Clocks of coordinator and node differ a little; more than this in the future is refused.
MAX_CLOCK_SKEW = timedelta(minutes=5)


def version_compatible(coordinator_version: str, node_version: str = __version__) -> bool:
    """Same major version; before 1.0 the minor version must match too (semver's 0.x rule)."""
    coordinator_parts = coordinator_version.split(".")
    node_parts = node_version.split(".")
    if coordinator_parts[0] != node_parts[0]:
        return False
    return coordinator_parts[0] != "0" or coordinator_parts[1:2] == node_parts[1:2]


@dataclass(frozen=True)
class NodePolicy:
    node_id: str
    trusted_coordinators: TrustStore
    approved_workflows: frozenset[str]
    max_task_age: timedelta

    @classmethod
    def from_settings(cls, node_id: str, federation: NodeFederation) -> NodePolicy:
        keys = {}
        for name, path in federation.trusted_coordinators.items():
            if not path.is_file():
                raise SpecError(
                    f"node config 'federation.trusted_coordinators.{name}': '{path}' not found"
                )
            keys[name] = load_public_key(path)
        return cls(
            node_id=node_id,
            trusted_coordinators=TrustStore(keys, source=f"node '{node_id}' trusted coordinators"),
            approved_workflows=federation.approved_workflows,
            max_task_age=timedelta(hours=federation.max_task_age_hours),
        )

    def verify_envelope(self, raw: bytes, task_dir_name: str, now: datetime) -> TaskEnvelope:
        """Signature and form first, then content. Raises PolicyViolation with a one-line reason."""
        envelope = TaskEnvelope.verify(raw, self.trusted_coordinators, task_dir_name)
        what = f"task '{task_dir_name}'"
        if envelope.task_id != task_dir_name:
            raise PolicyViolation(
                f"{what}: envelope names task '{envelope.task_id}' (moved or copied); refused"
            )
        if envelope.node_id != self.node_id:
            raise PolicyViolation(
                f"{what}: addressed to node '{envelope.node_id}', not '{self.node_id}'; refused"
            )
        issued_at = envelope.issued_at.isoformat(timespec="seconds")
        if envelope.issued_at > now + MAX_CLOCK_SKEW:
            raise PolicyViolation(f"{what}: issued in the future ({issued_at}); refused")
        if now >= envelope.expires_at:
            expires_at = envelope.expires_at.isoformat(timespec="seconds")
            raise PolicyViolation(f"{what}: expired at {expires_at}; refused")
        if now - envelope.issued_at > self.max_task_age:
            raise PolicyViolation(
                f"{what}: issued {issued_at}, older than the node's limit of "
                f"{self.max_task_age}; refused"
            )
        if not version_compatible(envelope.federation_version):
            raise PolicyViolation(
                f"{what}: built by federation {envelope.federation_version}, node runs "
                f"{__version__}; upgrade one side"
            )
        return envelope

    def check_workflow(self, task_id: str, digest: str) -> None:
        if not self.approved_workflows:
            raise PolicyViolation(
                f"task '{task_id}': workflow {digest[:16]}... not approved (the node's allow-list "
                "is empty: it denies every workflow); an admin approves it in "
                "federation.approved_workflows"
            )
        if digest not in self.approved_workflows:
            raise PolicyViolation(
                f"task '{task_id}': workflow {digest[:16]}... is not in the node's "
                "approved_workflows; an admin reviews and approves it first"
            )
