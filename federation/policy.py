"""The node-owned task policy: what a node checks before it unpacks or runs anything.

Order matters and every check fails closed: the envelope's signature against pinned
coordinator keys first (nothing unsigned is even parsed further), then that the task is
for this node, fresh, not expired and from a compatible federation version; replay and
sequence checks live in the node ledger (state.py); the bundle's digest, archive safety and
the approved workflow digest come after download (agent.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from federation import __version__
from federation.errors import PolicyViolation, SpecError
from federation.settings import NodeFederation
from federation.signing import TrustStore, load_public_key, parse_json_strictly, verify_document

TASK_FORMAT = "federation.task/1"
RESULT_FORMAT = "federation.result/1"
STATUS_FORMAT = "federation.status/1"
# Clocks of coordinator and node differ a little; more than this in the future is refused.
MAX_CLOCK_SKEW = timedelta(minutes=5)
ENVELOPE_FIELDS = frozenset({
    "format", "study_id", "task_id", "node_id", "sequence", "issued_at", "expires_at",
    "bundle_sha256", "manifest_digest", "workflow_digest", "federation_version", "engine",
})  # fmt: skip


@dataclass(frozen=True)
class TaskEnvelope:
    study_id: str
    task_id: str
    node_id: str
    sequence: int
    issued_at: datetime
    expires_at: datetime
    bundle_sha256: str
    manifest_digest: str
    workflow_digest: str
    federation_version: str
    engine: str
    coordinator: str


def version_compatible(coordinator_version: str, node_version: str = __version__) -> bool:
    """Same major version; before 1.0 the minor version must match too (semver's 0.x rule)."""
    coordinator_parts = coordinator_version.split(".")
    node_parts = node_version.split(".")
    if coordinator_parts[0] != node_parts[0]:
        return False
    return coordinator_parts[0] != "0" or coordinator_parts[1:2] == node_parts[1:2]


def _parse_time(value: Any, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise PolicyViolation(
            f"task envelope '{field}': '{value}' is not an ISO 8601 time; refused"
        ) from None
    if parsed.tzinfo is None:
        raise PolicyViolation(f"task envelope '{field}': '{value}' has no time zone; refused")
    return parsed


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
        """Signature first, then content. Raises PolicyViolation with a one-line reason."""
        try:
            document = parse_json_strictly(raw)
        except ValueError as error:
            raise PolicyViolation(
                f"task '{task_dir_name}': envelope is not valid JSON ({error}); refused"
            ) from None
        payload, signer = verify_document(document, self.trusted_coordinators)
        if payload.get("format") != TASK_FORMAT or set(payload) != ENVELOPE_FIELDS:
            raise PolicyViolation(
                f"task '{task_dir_name}': envelope fields do not match {TASK_FORMAT}; refused"
            )
        if payload["task_id"] != task_dir_name:
            raise PolicyViolation(
                f"task '{task_dir_name}': envelope names task '{payload['task_id']}' (moved or copied); refused"
            )
        if payload["node_id"] != self.node_id:
            raise PolicyViolation(
                f"task '{task_dir_name}': addressed to node '{payload['node_id']}', not '{self.node_id}'; refused"
            )
        issued, expires = (
            _parse_time(payload["issued_at"], "issued_at"),
            _parse_time(payload["expires_at"], "expires_at"),
        )
        if issued > now + MAX_CLOCK_SKEW:
            raise PolicyViolation(
                f"task '{task_dir_name}': issued in the future ({payload['issued_at']}); refused"
            )
        if now >= expires:
            raise PolicyViolation(
                f"task '{task_dir_name}': expired at {payload['expires_at']}; refused"
            )
        if now - issued > self.max_task_age:
            raise PolicyViolation(
                f"task '{task_dir_name}': issued {payload['issued_at']}, older than the node's limit of "
                f"{self.max_task_age}; refused"
            )
        if not version_compatible(str(payload["federation_version"])):
            raise PolicyViolation(
                f"task '{task_dir_name}': built by federation {payload['federation_version']}, node runs "
                f"{__version__}; upgrade one side"
            )
        if not isinstance(payload["sequence"], int) or payload["sequence"] < 1:
            raise PolicyViolation(
                f"task '{task_dir_name}': sequence {payload['sequence']!r} is not a positive integer; refused"
            )
        return TaskEnvelope(
            study_id=str(payload["study_id"]), task_id=task_dir_name, node_id=self.node_id,
            sequence=payload["sequence"], issued_at=issued, expires_at=expires,
            bundle_sha256=str(payload["bundle_sha256"]), manifest_digest=str(payload["manifest_digest"]),
            workflow_digest=str(payload["workflow_digest"]), federation_version=str(payload["federation_version"]),
            engine=str(payload["engine"]), coordinator=signer,
        )  # fmt: skip

    def check_workflow(self, task_id: str, digest: str) -> None:
        if not self.approved_workflows:
            raise PolicyViolation(
                f"task '{task_id}': workflow {digest[:16]}... not approved (the node's allow-list is empty: "
                "it denies every workflow); an admin approves it in federation.approved_workflows"
            )
        if digest not in self.approved_workflows:
            raise PolicyViolation(
                f"task '{task_id}': workflow {digest[:16]}... is not in the node's approved_workflows; "
                "an admin reviews and approves it first"
            )


def trust_store_from_files(keys: dict[str, Path], source: str) -> TrustStore:
    return TrustStore({name: load_public_key(path) for name, path in keys.items()}, source=source)
