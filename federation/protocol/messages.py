"""What coordinator and node say to each other through a node's mailbox, and where it lies.

A node's mailbox (`federation.transport`) holds, per task:

    inbox/<task_id>/bundle.tar         the study's bundle (written first)
    inbox/<task_id>/envelope.json      the signed `TaskEnvelope` (written last: a task exists once it is there)
    inbox/<task_id>/CANCEL.json        the coordinator's signed `Cancellation` of the task, if any
    outbox/<task_id>/STATUS.json       the node's latest signed `StatusReport` (overwritten as the task moves on)
    outbox/<task_id>/result.tar.c4gh   the result bundle, sealed for the coordinator (`protocol.crypt`)
    outbox/<task_id>/COMPLETE          the signed `ResultMarker` (written last: a result exists once it is there)

and, once per node, `policy/POLICY.json`: the node's signed `NodePolicyDocument` (thresholds,
approved workflows with their parameter envelopes, accessible genomes), which the coordinator's
pre-flight reads before it sends a study.

Every message is a signed document (`protocol.signing`) whose payload names its format. Each
message type has `to_payload()` and a checked way in (`verify` or `from_payload`): the signature
first, then the format, the exact field set and the field types; nothing unsigned is parsed
further. Whether a verified task is acceptable (for this node, fresh, an approved workflow) is
the node's own policy (`federation.node.policy`, `federation.release.admission`), not the
protocol's. Task states (`TaskStatus`) are the same words at the node and at the coordinator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation import __version__
from federation.audit import AuditHead
from federation.errors import PolicyViolation
from federation.jsonio import canonical_json, parse_json_strictly
from federation.outcomes import AnalysisOutcome, outcomes_as_dict, outcomes_from_dict
from federation.protocol.bundle import BundleLimits
from federation.protocol.crypt import ENCRYPTION, SEALED_RESULT, SealedFile
from federation.protocol.signing import TrustStore, sign_document, verify_document

TASK_FORMAT = "federation.task/1"
RESULT_FORMAT = "federation.result/1"
STATUS_FORMAT = "federation.status/1"
CANCEL_FORMAT = "federation.cancel/1"
NODE_POLICY_FORMAT = "federation.node-policy/1"
# A released result is a handful of summary-statistics files; these bounds allow genome-wide
# tables of tens of millions of variants and nothing like a genotype dump.
RESULT_LIMITS = BundleLimits(max_members=200, max_total_bytes=4 << 30, max_file_bytes=2 << 30)


class TaskStatus(StrEnum):
    """A task's state, the same words at the node, in its reports and at the coordinator."""

    DELIVERED = "delivered"  # in the node's inbox (or being checked there)
    HELD = "held"  # outside every approved workflow envelope: waits for the node's admin
    APPROVED = "approved"  # by the node's policy or its admin; runs next
    RUNNING = "running"
    IN_REVIEW = "in_review"  # gated results wait for the node's output reviewers
    RELEASED = "released"  # at least one analysis left the node (the others: withheld)
    REJECTED = "rejected"  # refused by the node's policy (signature, replay, loosening, ...)
    VETOED = "vetoed"  # refused by the node's admin (the national veto)
    WITHHELD = "withheld"  # ran, but nothing left: the gate or the output reviewers withheld it
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    # The first protocol's word for APPROVED: an alias, so old ledgers and reports still read.
    ACCEPTED = "approved"

    @classmethod
    def _missing_(cls, value: object) -> TaskStatus | None:
        return cls.APPROVED if value == "accepted" else None


# Once a task reaches one of these, later reports cannot change it.
FINAL_STATUSES = frozenset(
    {
        TaskStatus.RELEASED,
        TaskStatus.REJECTED,
        TaskStatus.VETOED,
        TaskStatus.WITHHELD,
        TaskStatus.FAILED,
        TaskStatus.TIMED_OUT,
        TaskStatus.CANCELLED,
    }
)
# Not final, and nothing happens until a person decides (the admin, or the output reviewers).
WAITING_FOR_PEOPLE = frozenset({TaskStatus.HELD, TaskStatus.IN_REVIEW})
# Final, and not a fault: a policy, a person or the coordinator said no.
REFUSED_STATUSES = frozenset(
    {TaskStatus.REJECTED, TaskStatus.VETOED, TaskStatus.WITHHELD, TaskStatus.CANCELLED}
)


def version_compatible(coordinator_version: str, node_version: str = __version__) -> bool:
    """Same major version; before 1.0 the minor version must match too (semver's 0.x rule)."""
    coordinator_parts = coordinator_version.split(".")
    node_parts = node_version.split(".")
    if coordinator_parts[0] != node_parts[0]:
        return False
    return coordinator_parts[0] != "0" or coordinator_parts[1:2] == node_parts[1:2]


class MailboxKeys:
    """The keys of one task in a node's mailbox (see the module docstring)."""

    INBOX = "inbox/"
    ENVELOPE = "envelope.json"
    BUNDLE = "bundle.tar"
    CANCELLATION = "CANCEL.json"
    POLICY = "policy/POLICY.json"

    @staticmethod
    def envelope(task_id: str) -> str:
        return f"inbox/{task_id}/{MailboxKeys.ENVELOPE}"

    @staticmethod
    def bundle(task_id: str) -> str:
        return f"inbox/{task_id}/{MailboxKeys.BUNDLE}"

    @staticmethod
    def cancellation(task_id: str) -> str:
        return f"inbox/{task_id}/{MailboxKeys.CANCELLATION}"

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


def analysis_outcomes(value: Any, where: str) -> dict[str, AnalysisOutcome]:
    """analysis id -> {"outcome": released|withheld|failed, "category": a refusal category or
    null}, checked (a status report's or a result manifest's); PolicyViolation naming `where`."""
    try:
        return outcomes_from_dict(value, where)
    except ValueError as error:
        raise PolicyViolation(f"{error}; ignored") from None


@dataclass(frozen=True)
class StatusReport:
    """A node's latest word on a task: its status, for a refusal or failure a category (no node
    data), and what the disclosure gate decided per analysis (released, withheld or failed,
    with the researcher-facing category of a refusal: `outcomes.RefusalCategory`)."""

    task_id: str
    study_id: str
    node_id: str
    status: TaskStatus
    reason: str
    time: str
    analyses: Mapping[str, AnalysisOutcome] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": STATUS_FORMAT,
            "task_id": self.task_id,
            "study_id": self.study_id,
            "node_id": self.node_id,
            "status": self.status.value,
            "reason": self.reason,
            "time": self.time,
            "analyses": outcomes_as_dict(self.analyses),
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
            analyses=analysis_outcomes(payload.get("analyses", {}), what),
        )


# ---------------------------------------------------------------- cancellation

CANCEL_FIELDS = frozenset({"format", "study_id", "task_id", "node_id", "issued_at"})


@dataclass(frozen=True)
class Cancellation:
    """The coordinator's signed word that one task is cancelled: dropped if pending or held,
    stopped if running, never published if in review."""

    study_id: str
    task_id: str
    node_id: str
    issued_at: datetime
    coordinator: str  # the signer; not part of the payload

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": CANCEL_FORMAT,
            "study_id": self.study_id,
            "task_id": self.task_id,
            "node_id": self.node_id,
            "issued_at": self.issued_at.isoformat(timespec="seconds"),
        }

    @classmethod
    def verify(cls, raw: bytes, trust: TrustStore, node_id: str, task_id: str) -> Cancellation:
        """Signed by a pinned coordinator, for this node and this task; PolicyViolation otherwise."""
        what = f"task '{task_id}' {MailboxKeys.CANCELLATION}"
        payload, signer = _signed_payload(raw, trust, what, None)
        if payload.get("format") != CANCEL_FORMAT or set(payload) != CANCEL_FIELDS:
            raise PolicyViolation(f"{what}: fields do not match {CANCEL_FORMAT}; ignored")
        if payload["task_id"] != task_id or payload["node_id"] != node_id:
            raise PolicyViolation(
                f"{what}: names task '{payload['task_id']}' of node '{payload['node_id']}'; ignored"
            )
        return cls(
            study_id=str(payload["study_id"]),
            task_id=task_id,
            node_id=node_id,
            issued_at=parse_time(payload["issued_at"], f"{what} 'issued_at'"),
            coordinator=signer,
        )


# ---------------------------------------------------------------- the node's published policy

ANALYSIS_KINDS = ("allele_frequency", "gwas")  # the `type`s of study.schema.json's analyses
MAX_PRINCIPAL_COMPONENTS = 20  # study.schema.json's limit: an envelope that says nothing allows it


class OutputReview(StrEnum):
    """How many distinct people check a gated release before it leaves the node."""

    NONE = "none"
    ONE = "one"
    TWO = "two"

    @property
    def required_approvals(self) -> int:
        return {"none": 0, "one": 1, "two": 2}[self.value]


class UnapprovedWorkflows(StrEnum):
    """What a node does with a task whose workflow digest it has not approved."""

    HOLD = "hold"  # keep it for the admin's decision (`federation node approve|reject`)
    REFUSE = "refuse"  # refuse it at once (the coordinator's pre-flight refuses it at submit)


def _names(value: Any, what: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PolicyViolation(f"{what}: expected a list of names; ignored")
    return frozenset(value)


@dataclass(frozen=True)
class ParameterEnvelope:
    """What a node admin lets one workflow do without asking again.

    A study is inside when every analysis is of an allowed kind, every GWAS trait and covariate
    is listed, it asks for at most `max_principal_components`, and its effective disclosure
    thresholds are at least `disclosure` (minimums; `release.admission` compares them). An empty
    list allows nothing of its kind.
    """

    analyses: frozenset[str]
    traits: frozenset[str] = frozenset()
    covariates: frozenset[str] = frozenset()
    max_principal_components: int = MAX_PRINCIPAL_COMPONENTS
    disclosure: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "analyses": sorted(self.analyses),
            "traits": sorted(self.traits),
            "covariates": sorted(self.covariates),
            "max_principal_components": self.max_principal_components,
            "disclosure": dict(sorted(self.disclosure.items())),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ParameterEnvelope:
        if not isinstance(data, dict) or "analyses" not in data:
            raise PolicyViolation(f"{where}: an envelope needs at least 'analyses'; ignored")
        unknown = set(data) - {
            "analyses",
            "traits",
            "covariates",
            "max_principal_components",
            "disclosure",
        }
        if unknown:
            raise PolicyViolation(f"{where}: unknown envelope field '{sorted(unknown)[0]}'")
        analyses = _names(data["analyses"], f"{where} 'analyses'")
        if not analyses <= set(ANALYSIS_KINDS):
            raise PolicyViolation(
                f"{where} 'analyses': {sorted(analyses - set(ANALYSIS_KINDS))[0]!r} is not one of "
                f"{list(ANALYSIS_KINDS)}"
            )
        components = data.get("max_principal_components", MAX_PRINCIPAL_COMPONENTS)
        disclosure = data.get("disclosure", {})
        if not isinstance(components, int) or isinstance(components, bool) or components < 0:
            raise PolicyViolation(f"{where} 'max_principal_components': {components!r}")
        if not isinstance(disclosure, dict) or not all(
            isinstance(value, int | float) and not isinstance(value, bool)
            for value in disclosure.values()
        ):
            raise PolicyViolation(f"{where} 'disclosure': expected threshold names and numbers")
        return cls(
            analyses=analyses,
            traits=_names(data.get("traits", []), f"{where} 'traits'"),
            covariates=_names(data.get("covariates", []), f"{where} 'covariates'"),
            max_principal_components=components,
            disclosure=dict(disclosure),
        )


@dataclass(frozen=True)
class WorkflowApproval:
    """A workflow digest a node runs without a person, inside `envelope` (None: any study)."""

    digest: str
    envelope: ParameterEnvelope | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "envelope": self.envelope.to_dict() if self.envelope else None,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> WorkflowApproval:
        if not isinstance(data, dict) or set(data) != {"digest", "envelope"}:
            raise PolicyViolation(f"{where}: expected digest and envelope; ignored")
        envelope = data["envelope"]
        return cls(
            digest=str(data["digest"]),
            envelope=None if envelope is None else ParameterEnvelope.from_dict(envelope, where),
        )


NODE_POLICY_FIELDS = frozenset(
    {
        "format",
        "node_id",
        "issued_at",
        "federation_version",
        "engines",
        "reference_genome",
        "disclosure",
        "accessible_genomes",
        "output_review",
        "unapproved_workflows",
        "approved_workflows",
        "accessible_variants",
        "data_types",
    }
)
# Fields a node of an earlier 0.1 release did not publish yet: their absence reads as unknown.
LATER_NODE_POLICY_FIELDS = frozenset({"accessible_variants", "data_types"})


@dataclass(frozen=True)
class NodePolicyDocument:
    """What a node publishes about itself, signed, so a coordinator can predict its decisions.

    `disclosure` holds the node's effective thresholds; `accessible_genomes` the samples with
    genotypes and phenotypes, rounded up to a multiple of 5 (an upper bound: a cohort below a
    threshold here is surely below it on the node); `accessible_variants` the genotype file's
    variants, rounded up to a multiple of 1,000; `data_types` what the node holds (genotype
    calls and their format, phenotypes). Nothing in it is individual-level data.
    """

    node_id: str
    issued_at: datetime
    federation_version: str
    engines: tuple[str, ...]
    reference_genome: str
    disclosure: Mapping[str, float]
    accessible_genomes: int | None
    output_review: OutputReview
    unapproved_workflows: UnapprovedWorkflows
    approved_workflows: tuple[WorkflowApproval, ...]
    accessible_variants: int | None = None
    data_types: tuple[str, ...] = ()

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": NODE_POLICY_FORMAT,
            "node_id": self.node_id,
            "issued_at": self.issued_at.isoformat(timespec="seconds"),
            "federation_version": self.federation_version,
            "engines": list(self.engines),
            "reference_genome": self.reference_genome,
            "disclosure": dict(sorted(self.disclosure.items())),
            "accessible_genomes": self.accessible_genomes,
            "output_review": self.output_review.value,
            "unapproved_workflows": self.unapproved_workflows.value,
            "approved_workflows": [approval.to_dict() for approval in self.approved_workflows],
            "accessible_variants": self.accessible_variants,
            "data_types": list(self.data_types),
        }

    def content(self) -> dict[str, Any]:
        """The payload without its time: two documents saying the same have the same content."""
        return {key: value for key, value in self.to_payload().items() if key != "issued_at"}

    def approvals_of(self, digest: str) -> tuple[WorkflowApproval, ...]:
        return tuple(approval for approval in self.approved_workflows if approval.digest == digest)

    @classmethod
    def verify(cls, raw: bytes, trust: TrustStore, node_id: str) -> NodePolicyDocument:
        """`node_id`'s signed policy; PolicyViolation (one line) if forged, foreign or malformed."""
        what = f"node '{node_id}' {MailboxKeys.POLICY}"
        payload, _ = _signed_payload(raw, trust, what, node_id)
        if payload.get("format") != NODE_POLICY_FORMAT or set(payload) not in (
            NODE_POLICY_FIELDS,
            NODE_POLICY_FIELDS - LATER_NODE_POLICY_FIELDS,
        ):
            raise PolicyViolation(f"{what}: fields do not match {NODE_POLICY_FORMAT}; ignored")
        if payload["node_id"] != node_id:
            raise PolicyViolation(f"{what}: names node '{payload['node_id']}'; ignored")
        accessible = payload["accessible_genomes"]
        disclosure = payload["disclosure"]
        approvals = payload["approved_workflows"]
        variants = payload.get("accessible_variants")
        for name, count in (("accessible_genomes", accessible), ("accessible_variants", variants)):
            if count is not None and (
                not isinstance(count, int) or isinstance(count, bool) or count < 0
            ):
                raise PolicyViolation(f"{what}: {name} {count!r}; ignored")
        if not isinstance(disclosure, dict) or not isinstance(approvals, list):
            raise PolicyViolation(f"{what}: disclosure or approved_workflows malformed; ignored")
        try:
            review = OutputReview(str(payload["output_review"]))
            unapproved = UnapprovedWorkflows(str(payload["unapproved_workflows"]))
        except ValueError as error:
            raise PolicyViolation(f"{what}: {error}; ignored") from None
        return cls(
            node_id=node_id,
            issued_at=parse_time(payload["issued_at"], f"{what} 'issued_at'"),
            federation_version=str(payload["federation_version"]),
            engines=tuple(sorted(_names(payload["engines"], f"{what} 'engines'"))),
            reference_genome=str(payload["reference_genome"]),
            disclosure=dict(disclosure),
            accessible_genomes=accessible,
            output_review=review,
            unapproved_workflows=unapproved,
            approved_workflows=tuple(
                WorkflowApproval.from_dict(entry, f"{what} approved_workflows[{index}]")
                for index, entry in enumerate(approvals)
            ),
            accessible_variants=variants,
            data_types=tuple(sorted(_names(payload.get("data_types", []), f"{what} 'data_types'"))),
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
