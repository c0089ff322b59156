"""What coordinator and node say to each other through a node's mailbox, and where it lies.

A node's mailbox (`federation.transport`) holds, per task:

    inbox/<task_id>/bundle.tar         the study's bundle (written first)
    inbox/<task_id>/envelope.json      the signed `TaskEnvelope` (written last: a task exists once it is there)
    outbox/<task_id>/STATUS.json       the node's latest signed `StatusReport` (overwritten as the task moves on)
    outbox/<task_id>/result.tar.c4gh   the result bundle, sealed for the coordinator (`protocol.crypt`)
    outbox/<task_id>/COMPLETE          the signed `ResultMarker` (written last: a result exists once it is there)

Every message is a signed document (`protocol.signing`) whose payload names its format. Each
message type has `to_payload()` and a checked way in (`verify` or `from_payload`): the signature
first, then the format, the exact field set and the field types; nothing unsigned is parsed
further. Whether a verified task is acceptable (for this node, fresh, an approved workflow) is
the node's own policy (`federation.node.policy`), not the protocol's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.audit import AuditHead
from federation.errors import PolicyViolation
from federation.jsonio import canonical_json, parse_json_strictly
from federation.protocol.bundle import BundleLimits
from federation.protocol.crypt import ENCRYPTION, SEALED_RESULT, SealedFile
from federation.protocol.signing import TrustStore, sign_document, verify_document

TASK_FORMAT = "federation.task/1"
RESULT_FORMAT = "federation.result/1"
STATUS_FORMAT = "federation.status/1"
# A released result is a handful of summary-statistics files; these bounds allow genome-wide
# tables of tens of millions of variants and nothing like a genotype dump.
RESULT_LIMITS = BundleLimits(max_members=200, max_total_bytes=4 << 30, max_file_bytes=2 << 30)


class TaskStatus(StrEnum):
    DELIVERED = "delivered"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    RUNNING = "running"
    RELEASED = "released"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


# Once a task reaches one of these, later reports cannot change it.
FINAL_STATUSES = frozenset(
    {TaskStatus.REJECTED, TaskStatus.RELEASED, TaskStatus.FAILED, TaskStatus.TIMED_OUT}
)


class MailboxKeys:
    """The keys of one task in a node's mailbox (see the module docstring)."""

    INBOX = "inbox/"
    ENVELOPE = "envelope.json"
    BUNDLE = "bundle.tar"

    @staticmethod
    def envelope(task_id: str) -> str:
        return f"inbox/{task_id}/{MailboxKeys.ENVELOPE}"

    @staticmethod
    def bundle(task_id: str) -> str:
        return f"inbox/{task_id}/{MailboxKeys.BUNDLE}"

    @staticmethod
    def inbox_files(task_id: str) -> tuple[str, ...]:
        return MailboxKeys.envelope(task_id), MailboxKeys.bundle(task_id)

    @staticmethod
    def status(task_id: str) -> str:
        return f"outbox/{task_id}/STATUS.json"

    @staticmethod
    def sealed_result(task_id: str) -> str:
        return f"outbox/{task_id}/{SEALED_RESULT}"

    @staticmethod
    def completion(task_id: str) -> str:
        return f"outbox/{task_id}/COMPLETE"

    @staticmethod
    def task_of_envelope(key: str) -> str | None:
        """The task id of an `inbox/<task_id>/envelope.json` key, else None."""
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "inbox" and parts[2] == MailboxKeys.ENVELOPE:
            return parts[1]
        return None


def signed_bytes(payload: dict[str, Any], key: Ed25519PrivateKey, signer: str) -> bytes:
    """A payload as the canonical bytes of its signed document, ready for the mailbox."""
    return canonical_json(sign_document(payload, key, signer))


def _signed_payload(
    raw: bytes, trust: TrustStore, what: str, signer: str | None
) -> tuple[dict[str, Any], str]:
    try:
        document = parse_json_strictly(raw)
    except ValueError as error:
        raise PolicyViolation(f"{what}: not valid JSON ({error}); ignored") from None
    return verify_document(document, trust, expected_signer=signer)


def parse_time(value: Any, what: str) -> datetime:
    """An ISO 8601 time with a time zone; PolicyViolation naming `what` otherwise."""
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise PolicyViolation(f"{what}: '{value}' is not an ISO 8601 time; refused") from None
    if parsed.tzinfo is None:
        raise PolicyViolation(f"{what}: '{value}' has no time zone; refused")
    return parsed


# ---------------------------------------------------------------- task envelope

ENVELOPE_FIELDS = frozenset(
    {
        "format",
        "study_id",
        "task_id",
        "node_id",
        "sequence",
        "issued_at",
        "expires_at",
        "bundle_sha256",
        "manifest_digest",
        "workflow_digest",
        "federation_version",
        "engine",
    }
)


@dataclass(frozen=True)
class TaskEnvelope:
    """One study's task for one node, signed by the coordinator that sends it."""

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
    coordinator: str  # the signer; not part of the payload

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": TASK_FORMAT,
            "study_id": self.study_id,
            "task_id": self.task_id,
            "node_id": self.node_id,
            "sequence": self.sequence,
            "issued_at": self.issued_at.isoformat(timespec="seconds"),
            "expires_at": self.expires_at.isoformat(timespec="seconds"),
            "bundle_sha256": self.bundle_sha256,
            "manifest_digest": self.manifest_digest,
            "workflow_digest": self.workflow_digest,
            "federation_version": self.federation_version,
            "engine": self.engine,
        }

    @classmethod
    def verify(cls, raw: bytes, trust: TrustStore, task_id: str) -> TaskEnvelope:
        """The envelope in `raw` (found under `task_id` in an inbox), signed by a pinned key.

        Refused (PolicyViolation, one line naming the task): not JSON, a signature that does
        not verify, another format or field set, times without a zone, a sequence number that
        is not a positive integer.
        """
        what = f"task '{task_id}'"
        try:
            document = parse_json_strictly(raw)
        except ValueError as error:
            raise PolicyViolation(
                f"{what}: envelope is not valid JSON ({error}); refused"
            ) from None
        payload, signer = verify_document(document, trust)
        if payload.get("format") != TASK_FORMAT or set(payload) != ENVELOPE_FIELDS:
            raise PolicyViolation(f"{what}: envelope fields do not match {TASK_FORMAT}; refused")
        sequence = payload["sequence"]
        if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
            raise PolicyViolation(
                f"{what}: sequence {sequence!r} is not a positive integer; refused"
            )
        return cls(
            study_id=str(payload["study_id"]),
            task_id=str(payload["task_id"]),
            node_id=str(payload["node_id"]),
            sequence=sequence,
            issued_at=parse_time(payload["issued_at"], "task envelope 'issued_at'"),
            expires_at=parse_time(payload["expires_at"], "task envelope 'expires_at'"),
            bundle_sha256=str(payload["bundle_sha256"]),
            manifest_digest=str(payload["manifest_digest"]),
            workflow_digest=str(payload["workflow_digest"]),
            federation_version=str(payload["federation_version"]),
            engine=str(payload["engine"]),
            coordinator=signer,
        )


# ---------------------------------------------------------------- status report


@dataclass(frozen=True)
class StatusReport:
    """A node's latest word on a task: its status and, for a failure, a category (no node data)."""

    task_id: str
    study_id: str
    node_id: str
    status: TaskStatus
    reason: str
    time: str

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": STATUS_FORMAT,
            "task_id": self.task_id,
            "study_id": self.study_id,
            "node_id": self.node_id,
            "status": self.status.value,
            "reason": self.reason,
            "time": self.time,
        }

    @classmethod
    def verify(
        cls, raw: bytes, trust: TrustStore, node_id: str, task_id: str
    ) -> StatusReport | None:
        """The report in `raw` if it is `node_id`'s signed status of `task_id`; None if it is a
        signed document about something else; PolicyViolation if it is forged or malformed."""
        what = f"node '{node_id}' {MailboxKeys.status(task_id)}"
        payload, _ = _signed_payload(raw, trust, what, node_id)
        if payload.get("format") != STATUS_FORMAT or payload.get("task_id") != task_id:
            return None
        try:
            status = TaskStatus(str(payload.get("status")))
        except ValueError:
            raise PolicyViolation(
                f"node '{node_id}' task '{task_id}': unknown status {payload.get('status')!r}; ignored"
            ) from None
        return cls(
            task_id=task_id,
            study_id=str(payload.get("study_id")),
            node_id=node_id,
            status=status,
            reason=str(payload.get("reason") or ""),
            time=str(payload.get("time") or ""),
        )


# ---------------------------------------------------------------- result marker


@dataclass(frozen=True)
class ResultMarker:
    """The node's signed word that a task's sealed result is complete, and what it holds.

    It also carries the head of the node's audit log when the result was published, signed
    with the marker: the coordinator keeps it as an outside anchor of that log."""

    task_id: str
    study_id: str
    node_id: str
    sealed: SealedFile
    manifest_digest: str
    released_at: datetime
    audit_head: AuditHead

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "task_id": self.task_id,
            "study_id": self.study_id,
            "node_id": self.node_id,
            "status": TaskStatus.RELEASED.value,
            "result_encryption": ENCRYPTION,
            "result": self.sealed.as_dict(),
            "manifest_digest": self.manifest_digest,
            "released_at": self.released_at.isoformat(timespec="seconds"),
            "audit_head": self.audit_head.as_dict(),
        }

    @classmethod
    def from_payload(
        cls, payload: dict[str, Any], study_id: str, node_id: str, task_id: str
    ) -> ResultMarker:
        """A verified COMPLETE payload, checked to be this task's; PolicyViolation otherwise."""
        where = f"node '{node_id}' task '{task_id}'"
        expected = {
            "format": RESULT_FORMAT,
            "task_id": task_id,
            "study_id": study_id,
            "node_id": node_id,
        }
        if any(payload.get(field) != value for field, value in expected.items()):
            raise PolicyViolation(f"{where}: completion marker names another task; ignored")
        try:
            released_at = datetime.fromisoformat(str(payload["released_at"]))
        except (KeyError, ValueError):
            raise PolicyViolation(
                f"{where}: completion marker has no valid released_at; ignored"
            ) from None
        if released_at.tzinfo is None:
            raise PolicyViolation(f"{where}: released_at has no time zone; ignored")
        if payload.get("result_encryption") != ENCRYPTION:
            raise PolicyViolation(f"{where}: result not encrypted with {ENCRYPTION}; ignored")
        try:
            audit_head = AuditHead.from_dict(payload.get("audit_head"), f"{where} audit_head")
        except ValueError as error:
            raise PolicyViolation(f"{error}; ignored") from None
        return cls(
            task_id=task_id,
            study_id=study_id,
            node_id=node_id,
            sealed=SealedFile.from_dict(payload.get("result"), f"{where} COMPLETE"),
            manifest_digest=str(payload.get("manifest_digest")),
            released_at=released_at,
            audit_head=audit_head,
        )

    @classmethod
    def verify(
        cls, raw: bytes, trust: TrustStore, study_id: str, node_id: str, task_id: str
    ) -> ResultMarker:
        payload, _ = _signed_payload(
            raw, trust, f"node '{node_id}' {MailboxKeys.completion(task_id)}", node_id
        )
        return cls.from_payload(payload, study_id, node_id, task_id)
