"""The node agent: inbox -> verify -> admission -> pipeline -> gate -> review -> signed result.

The agent only ever connects out (it polls its own mailbox), so it works in SPEs that forbid
inbound connections. Nothing from a task is unpacked before the envelope's signature, node ID,
freshness and replay checks have passed, and nothing runs before the bundle matches its signed
digests, passes the archive checks and is admitted. Every decision goes to the node audit log.
What the coordinator is told about a refusal or failure is a category, never node data (an
error may name samples; the audit log on the node keeps the detail), and never an admin's or a
reviewer's words.

The queue. Each run lists the inbox, verifies every new envelope and handles the verified
tasks in their signed sequence order (per coordinator). A task id the node ledger has seen is
a replay, refused; every other correctly signed task is handled, however late it arrives and
whatever its sequence number, unless it has expired (`expires_at`, or older than
`max_task_age_hours`): replays are caught by task id and signature, rollback by expiry. A task
whose mailbox cannot be reached now is simply tried again on the next run.

Admission (`release.admission`, on the document the node publishes): a study that loosens a
threshold, or needs an engine or genome build the node does not have, is refused; one whose
workflow is not approved, or that lies outside every parameter envelope the workflow was
approved with, is held for `federation node approve|reject` (or refused, if the node says so);
the rest run without a person.

One run at a time: `run_once` and `watch` hold the node's lock (`node.lock`). A run's
processes are one process group (`pipeline.guard`): a signed cancellation stops them, and they
die with the agent, SIGKILL included. A task that was approved, running or in review when the
agent stopped is taken up again on the next run, exactly once: a result already in the outbox
is never recomputed or republished.

The gate decides per analysis: a task releases every analysis that passes and reports the
others as withheld. With `output_review`, gated results wait in the review area
(`node.review`) until enough distinct reviewers approve them.
"""

from __future__ import annotations

import getpass
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.audit import append_event, read_head
from federation.errors import (
    BundleError,
    DisclosureError,
    FederationError,
    PipelineCancelled,
    PolicyViolation,
    SpecError,
    TransportError,
)
from federation.files import sha256_file
from federation.node.ledger import DecisionKind, NodeLedger, NodeTask
from federation.node.lock import AgentLock
from federation.node.policy import NodePolicy, accessible_genomes, accessible_variants
from federation.node.review import (
    DECISION_KINDS,
    ReviewState,
    Verdict,
    audit_position,
    decision_document,
    files_dir,
    gate_records,
    read_summary,
    release_digest,
    review_area,
    review_state,
    summarise,
    write_summary,
)
from federation.node.tasks import WORKFLOWS_DIR
from federation.outcomes import (
    AnalysisOutcome,
    RefusalCategory,
    outcomes_as_dict,
    read_outcomes,
    withheld_at_review,
)
from federation.pipeline.guard import run_processes, stop_members
from federation.pipeline.run import ENGINES, run_pipeline
from federation.pipeline.runs import RunControl, publish, release_destination
from federation.protocol.bundle import inspect_bundle, pack_bundle, unpack_bundle
from federation.protocol.crypt import load_public_key as load_encryption_key
from federation.protocol.crypt import seal
from federation.protocol.manifest import STUDY_CONFIG_NAME, workflow_digest
from federation.protocol.messages import (
    FINAL_STATUSES,
    RESULT_LIMITS,
    Cancellation,
    MailboxKeys,
    NodePolicyDocument,
    OutputReview,
    ParameterEnvelope,
    ResultMarker,
    StatusReport,
    TaskEnvelope,
    TaskStatus,
    WorkflowApproval,
    parse_time,
    signed_bytes,
)
from federation.protocol.signing import TrustStore, load_private_key
from federation.release.admission import (
    THRESHOLD_NAMES,
    Admission,
    admit,
    effective_policy,
    envelope_of,
)
from federation.settings import NodeSettings, load_node
from federation.spec import StudySpec, load_study
from federation.transport import NotFound, Transport, open_transport

# What a task refusal may be about: the envelope, the bundle or the node's own policy. Refusals
# found after the task was accepted name the task's bundle by its mailbox key, never by a
# path on the node (the reason goes to the coordinator).
TASK_REFUSALS = (PolicyViolation, BundleError, SpecError)
# What the coordinator is told: categories, never node data or a person's words.
WITHHELD = "withheld by the node's disclosure policy"
WITHHELD_AT_REVIEW = "withheld at the node's output review"
PIPELINE_FAILED = "the node pipeline failed; the node's audit log has the details"
GATE_FAILED = "the node's disclosure gate could not complete; nothing was released"
HELD = "held for the node admin's approval"
VETOED = "vetoed by the node's admin"
IN_REVIEW = "waiting for the node's output review"
CANCELLED = "cancelled by the coordinator"
EXPIRED = "expired before it could run"
# Tasks whose expiry means they will not run (running and reviewed ones finish; the
# coordinator judges their release time against its deadline).
NOT_STARTED = frozenset({TaskStatus.DELIVERED, TaskStatus.HELD, TaskStatus.APPROVED})
Progress = Callable[[str], None]


def withheld_reason(error: DisclosureError) -> str:
    """What the coordinator is told of a refusal: each category and its remedy, no count."""
    remedies = []
    for category in error.categories:
        try:
            remedies.append(f"{category} ({RefusalCategory(category).remedy})")
        except ValueError:
            continue
    return f"{WITHHELD}: {'; '.join(remedies)}" if remedies else WITHHELD


def _now() -> datetime:
    return datetime.now(UTC)


def os_account() -> str:
    """The operating-system account running this command (recorded with every decision)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass(frozen=True)
class TaskOutcome:
    task_id: str
    status: TaskStatus
    reason: str | None = None
    analyses: Mapping[str, AnalysisOutcome] = field(default_factory=dict, compare=False)


class CancelWatch:
    """Asked while a pipeline runs: is there a signed cancellation of this task? (Its own
    mailbox connection: the agent's may be busy in another thread.)"""

    def __init__(self, agent: NodeAgent, task_id: str, coordinator: str) -> None:
        self.agent, self.task_id, self.coordinator = agent, task_id, coordinator
        self._mailbox: Transport | None = None

    def __call__(self) -> bool:
        try:
            if self._mailbox is None:
                self._mailbox = self.agent.open_mailbox()
            return (
                self.agent.cancellation(self.task_id, self.coordinator, self._mailbox) is not None
            )
        except TransportError:
            return False  # cannot tell now: ask again at the next poll

    def close(self) -> None:
        if self._mailbox is not None:
            self._mailbox.close()


class NodeAgent:
    def __init__(self, node_config: Path, progress: Progress | None = None) -> None:
        self.node_config = node_config.resolve()
        self.node: NodeSettings = load_node(self.node_config)
        if self.node.federation is None:
            raise SpecError(
                f"node config '{node_config}': no 'federation' section; add mailbox, "
                "signing_key and trusted_coordinators"
            )
        self.federation = self.node.federation
        self.policy = NodePolicy.from_settings(self.node.node_id, self.federation)
        self.ledger = NodeLedger(self.federation.ledger)
        self.signing_key = load_private_key(self.federation.signing_key)
        self.encryption_keys = self._encryption_keys()
        self.progress = progress or (lambda line: None)
        self.mailbox: Transport = self.open_mailbox()
        self._genomes: tuple[tuple[Any, ...], tuple[int | None, int | None]] | None = None

    def open_mailbox(self) -> Transport:
        base_dir = self.node.config_dir or self.node_config.parent
        return open_transport(
            self.federation.mailbox, base_dir, f"node '{self.node.node_id}' mailbox"
        )

    def _encryption_keys(self) -> dict[str, bytes]:
        """Each trusted coordinator's Crypt4GH key: without one a result would leave in clear."""
        keys = self.federation.coordinator_encryption_keys
        missing = sorted(set(self.federation.trusted_coordinators) - set(keys))
        if missing:
            raise SpecError(
                f"node config 'federation.coordinator_encryption_keys': no Crypt4GH key for trusted "
                f"coordinator '{missing[0]}'; add its .c4gh.pub (results never leave the node in clear)"
            )
        return {name: load_encryption_key(path) for name, path in keys.items()}

    # ------------------------------------------------------------------ helpers

    def audit(self, event: str, **fields: object) -> None:
        append_event(self.federation.audit_log, event, node_id=self.node.node_id, **fields)

    def _task_dir(self, task_id: str) -> Path:
        return self.node.work_dir / "tasks" / task_id

    def _bundle_dir(self, task_id: str) -> Path:
        return self._task_dir(task_id) / "bundle"

    def lock(self) -> AgentLock:
        return AgentLock(self.node.work_dir, self.node.node_id)

    def set_status(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        public: str = "",
        detail: str | None = None,
        analyses: dict[str, AnalysisOutcome] | None = None,
        allowed_from: frozenset[TaskStatus] | None = None,
    ) -> bool:
        """Record a status (and what the coordinator may be told), then tell it. The record
        stands even if the report cannot be sent now: it stays due and goes on a later run."""
        moved = self.ledger.transition(
            task_id,
            status,
            allowed_from=allowed_from,
            reason=detail,
            public_reason=public,
            analyses=analyses,
        )
        if moved:
            self._send_report(task_id)
        return moved

    def _send_report(self, task_id: str) -> None:
        task = self.ledger.task(task_id)
        if task is None:
            return
        report = StatusReport(
            task_id=task_id,
            study_id=task.study_id,
            node_id=self.node.node_id,
            status=task.status,
            reason=task.public_reason or "",
            time=_now().isoformat(timespec="seconds"),
            analyses=task.analyses,
        )
        try:
            self.mailbox.put_bytes(
                MailboxKeys.status(task_id),
                signed_bytes(report.to_payload(), self.signing_key, self.node.node_id),
            )
        except FederationError as error:
            self.audit("report_failed", task_id=task_id, status=task.status, reason=str(error))
            return
        self.ledger.report_sent(task_id, task.status)

    def _send_due_reports(self) -> None:
        for task in self.ledger.reports_due():
            self._send_report(task.task_id)

    def _public(self, message: str, task_id: str) -> str:
        """`message` without the node's own paths: the bundle by its mailbox key, the rest relative."""
        tar_path = str(self._task_dir(task_id) / MailboxKeys.BUNDLE)
        message = message.replace(tar_path, MailboxKeys.bundle(task_id))
        return message.replace(str(self.node.work_dir), "<work_dir>")

    def _clear_inbox(self, task_id: str, *, cancellation: bool = False) -> None:
        """Remove a decided task from the inbox, so a copy that reappears is seen as a replay."""
        keys = MailboxKeys.inbox_files(task_id)
        if cancellation:
            keys += (MailboxKeys.cancellation(task_id),)
        for key in keys:
            try:
                self.mailbox.delete(key)
            except TransportError as error:  # the ledger still prevents a second run
                self.audit("inbox_cleanup_failed", task_id=task_id, reason=str(error))

    def _refuse(
        self,
        task_id: str,
        reason: str,
        *,
        envelope: TaskEnvelope | None = None,
        claimed: bool = False,
        report: bool = True,
    ) -> TaskOutcome:
        """Refuse a task: audit, ledger, a signed REJECTED status, and an emptied inbox slot."""
        self.audit("task_refused", task_id=task_id, reason=reason)
        if claimed:
            self.set_status(task_id, TaskStatus.REJECTED, public=reason, detail=reason)
            shutil.rmtree(self._bundle_dir(task_id), ignore_errors=True)
        elif report:  # a replay keeps the ledger entry of the task it copies
            coordinator = envelope.coordinator if envelope else "unverified"
            sequence = envelope.sequence if envelope else 0
            study_id = envelope.study_id if envelope else "unknown"
            self.ledger.record_refusal(task_id, coordinator, sequence, study_id, reason)
            self._send_report(task_id)
        self._clear_inbox(task_id)
        self.progress(f"[{self.node.node_id}] refused task {task_id}: {reason}")
        return TaskOutcome(task_id, TaskStatus.REJECTED, reason)

    # ------------------------------------------------------------------ the published policy

    def _accessible_data(self) -> tuple[int | None, int | None]:
        """The accessible-genome and variant counts, recounted only when the data files change."""
        paths = (self.node.genotype_path, self.node.phenotypes)
        stamp = tuple(
            (p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else None for p in paths
        )
        if self._genomes is None or self._genomes[0] != stamp:
            counts = (accessible_genomes(self.node), accessible_variants(self.node))
            self._genomes = (stamp, counts)
        return self._genomes[1]

    def policy_document(self) -> NodePolicyDocument:
        """What this node decides by and publishes: node.yaml's approvals and the admin's."""
        stored = []
        for index, approval in enumerate(self.ledger.workflow_approvals()):
            where = f"node ledger workflow approval {index}"
            envelope = (
                ParameterEnvelope.from_dict(approval.envelope, where) if approval.envelope else None
            )
            stored.append(WorkflowApproval(approval.digest, envelope))
        genomes, variants = self._accessible_data()
        return self.policy.document(self.node, stored, genomes, _now(), variants)

    def publish_policy(self, *, force: bool = False) -> NodePolicyDocument:
        """Put the signed policy document in the mailbox when it changed or has grown old."""
        document = self.policy_document()
        own = TrustStore({self.node.node_id: self.signing_key.public_key()}, source="own key")
        try:
            published = NodePolicyDocument.verify(
                self.mailbox.get_bytes(MailboxKeys.POLICY), own, self.node.node_id
            )
        except (NotFound, PolicyViolation):
            published = None
        interval = self.federation.policy_interval_minutes * 60
        if (
            not force
            and published is not None
            and published.content() == document.content()
            and (document.issued_at - published.issued_at).total_seconds() < interval
        ):
            return published
        self.mailbox.put_bytes(
            MailboxKeys.POLICY,
            signed_bytes(document.to_payload(), self.signing_key, self.node.node_id),
        )
        self.audit(
            "policy_published",
            approved_workflows=len(document.approved_workflows),
            accessible_genomes=document.accessible_genomes,
            accessible_variants=document.accessible_variants,
            output_review=document.output_review,
        )
        return document

    # ------------------------------------------------------------------ the loop

    def run_once(self) -> list[TaskOutcome]:
        """One pass over the node's work, holding the node's lock (AgentBusy if another has it)."""
        with self.lock():
            return self._cycle()

    def watch(self, interval_seconds: float = 30.0, max_cycles: int | None = None) -> None:
        """Poll for work until stopped (or `max_cycles` passes), holding the node's lock."""
        with self.lock():
            cycle = 0
            while max_cycles is None or cycle < max_cycles:
                try:
                    self._cycle()
                except TransportError as error:
                    if not error.retryable:
                        raise
                    self.progress(f"[{self.node.node_id}] mailbox not reachable now: {error}")
                cycle += 1
                if max_cycles is None or cycle < max_cycles:
                    time.sleep(interval_seconds)

    def _cycle(self) -> list[TaskOutcome]:
        """Open tasks first (in sequence order), then new ones (verified, in sequence order)."""
        self.mailbox.check()  # a missing or unreachable mailbox is an error, not an empty one
        try:
            self.publish_policy()
        except TransportError as error:  # the node still works; it publishes on a later run
            self.audit("policy_not_published", reason=str(error))
        self._send_due_reports()
        outcomes = [
            self._deferrable(task.task_id, partial(self._continue, task.task_id))
            for task in self.ledger.open_tasks()
        ]
        pending, refused = self._pending()
        outcomes += refused
        for envelope, raw in pending:
            outcomes.append(
                self._deferrable(envelope.task_id, partial(self._handle, envelope, raw))
            )
        return [outcome for outcome in outcomes if outcome is not None]

    def _deferrable(self, task_id: str, step: Callable[[], TaskOutcome]) -> TaskOutcome | None:
        """Run one task's step; a mailbox out of reach leaves the task for the next run."""
        try:
            return step()
        except TransportError as error:
            self.audit("task_deferred", task_id=task_id, reason=str(error))
            self.progress(f"[{self.node.node_id}] task {task_id} deferred: {error}")
            return None

    def pending_task_ids(self) -> list[str]:
        """Task ids whose envelope is in the inbox and whom the ledger has not seen."""
        task_ids = []
        for key in self.mailbox.list(MailboxKeys.INBOX):
            task_id = MailboxKeys.task_of_envelope(key)
            if task_id is not None and self.ledger.status(task_id) is None:
                task_ids.append(task_id)
        return task_ids

    def _pending(self) -> tuple[list[tuple[TaskEnvelope, bytes]], list[TaskOutcome]]:
        """The inbox's new tasks, verified and in signed sequence order; and the refusals."""
        verified, refused = [], []
        for key in self.mailbox.list(MailboxKeys.INBOX):
            task_id = MailboxKeys.task_of_envelope(key)
            if task_id is None:
                continue
            try:
                checked = self._check_pending(task_id)
            except TransportError as error:
                self.audit("task_deferred", task_id=task_id, reason=str(error))
                continue
            if isinstance(checked, TaskOutcome):
                refused.append(checked)
            elif checked is not None:
                verified.append(checked)
        verified.sort(key=lambda item: (item[0].coordinator, item[0].sequence, item[0].task_id))
        return verified, refused

    def _check_pending(self, task_id: str) -> tuple[TaskEnvelope, bytes] | TaskOutcome | None:
        try:
            raw = self.mailbox.get_bytes(MailboxKeys.envelope(task_id))
        except NotFound:  # removed meanwhile
            return None
        seen = self.ledger.status(task_id)
        if seen is not None:
            stored = self._task_dir(task_id) / MailboxKeys.ENVELOPE
            if seen not in FINAL_STATUSES and stored.is_file() and stored.read_bytes() == raw:
                # Our own task, left in the slot when the node stopped: a delivered one still
                # needs its bundle from there; a decided one's slot is emptied.
                if seen is not TaskStatus.DELIVERED:
                    self._clear_inbox(task_id)
                return None
            self.audit("task_seen", task_id=task_id)
            reason = f"task '{task_id}': already seen (replay; it was {seen.value}); refused"
            return self._refuse(task_id, reason, report=False)
        self.audit("task_seen", task_id=task_id)
        try:
            return self.policy.verify_envelope(raw, task_id, _now()), raw
        except TASK_REFUSALS as error:
            return self._refuse(task_id, str(error))

    # ------------------------------------------------------------------ one new task

    def _handle(self, envelope: TaskEnvelope, raw: bytes) -> TaskOutcome:
        task_id = envelope.task_id
        if envelope.engine not in ENGINES:
            reason = f"task '{task_id}': engine '{envelope.engine}' is not supported by this node; refused"
            return self._refuse(task_id, reason, envelope=envelope)
        # Kept beside the task, so a node stopped before deciding can take it up again.
        task_dir = self._task_dir(task_id)
        task_dir.mkdir(parents=True, exist_ok=True)
        (task_dir / MailboxKeys.ENVELOPE).write_bytes(raw)
        try:
            self.ledger.receive(
                task_id,
                envelope.coordinator,
                envelope.sequence,
                envelope.study_id,
                expires_at=envelope.expires_at.isoformat(timespec="seconds"),
                workflow_digest=envelope.workflow_digest,
            )
        except PolicyViolation as error:
            return self._refuse(task_id, str(error), envelope=envelope)
        cancellation = self.cancellation(task_id, envelope.coordinator)
        if cancellation is not None:
            return self._cancel(task_id, "it was still in the inbox")
        return self._admit(envelope)

    def _admit(self, envelope: TaskEnvelope) -> TaskOutcome:
        """Fetch and check the bundle of a received task, then refuse, hold or run it."""
        task_id = envelope.task_id
        try:
            study = self._fetch_and_verify(envelope)
        except TASK_REFUSALS as error:
            reason = self._public(str(error), task_id)
            return self._refuse(task_id, reason, envelope=envelope, claimed=True)
        decision = admit(self.policy_document(), study, envelope.workflow_digest)
        if decision.verdict is Admission.REFUSE:
            reason = f"task '{task_id}': " + "; ".join(decision.reasons)
            return self._refuse(task_id, reason, envelope=envelope, claimed=True)
        if decision.verdict is Admission.HOLD:
            detail = "; ".join(decision.reasons)
            self.audit(
                "task_held", task_id=task_id, study_id=study.study_id, reasons=decision.reasons
            )
            self.set_status(task_id, TaskStatus.HELD, public=HELD, detail=detail)
            self._clear_inbox(task_id)
            self.progress(f"[{self.node.node_id}] task {task_id} held for the admin: {detail}")
            return TaskOutcome(task_id, TaskStatus.HELD, detail)
        self.audit(
            "task_approved",
            task_id=task_id,
            study_id=study.study_id,
            by="policy",
            workflow=envelope.workflow_digest,
            envelope=decision.approval.envelope.to_dict()
            if decision.approval and decision.approval.envelope
            else None,
        )
        self.set_status(task_id, TaskStatus.APPROVED)
        self._clear_inbox(task_id)
        return self._run(task_id, study, resumed=False)

    def _fetch_and_verify(self, envelope: TaskEnvelope) -> StudySpec:
        """Download, check and unpack the bundle; return the study it carries."""
        task_id = envelope.task_id
        task_dir = self._task_dir(task_id)
        task_dir.mkdir(parents=True, exist_ok=True)
        tar_path = task_dir / MailboxKeys.BUNDLE
        try:
            self.mailbox.get_file(MailboxKeys.bundle(task_id), tar_path)
        except NotFound:
            if not tar_path.is_file():  # fetched before the slot was emptied: checked below
                raise PolicyViolation(
                    f"task '{task_id}': envelope without a bundle; refused"
                ) from None
        actual = sha256_file(tar_path)
        if actual != envelope.bundle_sha256:
            raise BundleError(
                f"task '{task_id}': bundle sha256 {actual[:16]}... does not match the signed "
                f"{envelope.bundle_sha256[:16]}...; refused"
            )
        manifest = inspect_bundle(tar_path)  # archive safety, before anything is written
        if workflow_digest(manifest) != envelope.workflow_digest:
            raise BundleError(
                f"task '{task_id}': workflow digest differs from the signed one; refused"
            )
        bundle_dir = self._bundle_dir(task_id)
        if bundle_dir.exists():
            shutil.rmtree(bundle_dir)
        unpack_bundle(tar_path, bundle_dir, envelope.manifest_digest)
        try:
            study = load_study(bundle_dir / STUDY_CONFIG_NAME)
            if study.study_id != envelope.study_id:
                raise PolicyViolation(
                    f"task '{task_id}': bundle study '{study.study_id}' differs from the "
                    f"signed '{envelope.study_id}'; refused"
                )
        except TASK_REFUSALS:
            # Nothing of a refused task stays runnable.
            shutil.rmtree(bundle_dir, ignore_errors=True)
            raise
        return study

    # ------------------------------------------------------------------ tasks taken up again

    def _stored_envelope(self, task_id: str) -> TaskEnvelope:
        """The envelope kept beside a task, verified again (signature, node; not its age)."""
        try:
            raw = (self._task_dir(task_id) / MailboxKeys.ENVELOPE).read_bytes()
        except OSError:
            raise PolicyViolation(
                f"task '{task_id}': its envelope is gone from the node's task directory; refused"
            ) from None
        envelope = TaskEnvelope.verify(raw, self.policy.trusted_coordinators, task_id)
        if envelope.task_id != task_id or envelope.node_id != self.node.node_id:
            raise PolicyViolation(f"task '{task_id}': its kept envelope names another task")
        return envelope

    def _bundle_sha256(self, task_id: str) -> str | None:
        """The signed bundle digest of a task, for the run's code identity (None if unknown)."""
        try:
            return self._stored_envelope(task_id).bundle_sha256
        except PolicyViolation:
            return None

    def _expired(self, task: NodeTask) -> bool:
        if task.expires_at is None:
            return False
        return _now() >= parse_time(task.expires_at, f"task '{task.task_id}' expires_at")

    def _continue(self, task_id: str) -> TaskOutcome:
        """Take up a task the ledger holds open: held, approved, running (interrupted), in review."""
        task = self.ledger.task(task_id)
        assert task is not None
        if self.cancellation(task_id, task.coordinator) is not None:
            return self._cancel(task_id, f"it was {task.status.value}")
        if task.status in NOT_STARTED and self._expired(task):
            self.audit("task_expired", task_id=task_id, status=task.status)
            self.set_status(task_id, TaskStatus.TIMED_OUT, public=EXPIRED, detail=EXPIRED)
            shutil.rmtree(self._bundle_dir(task_id), ignore_errors=True)
            return TaskOutcome(task_id, TaskStatus.TIMED_OUT, EXPIRED)
        if task.status is TaskStatus.HELD:
            return TaskOutcome(task_id, TaskStatus.HELD, task.reason)
        if task.status is TaskStatus.IN_REVIEW:
            return self._check_review(task)
        self.audit("task_resumed", task_id=task_id, status=task.status)
        self.progress(f"[{self.node.node_id}] taking up task {task_id} ({task.status.value})")
        if task.status is TaskStatus.RUNNING:  # what a killed run left running, if anything
            stale = run_processes(self._run_label(task_id))
            stop_members(stale)
            if stale:
                self.audit("stale_pipeline_stopped", task_id=task_id, processes=len(stale))
        study_config = self._bundle_dir(task_id) / STUDY_CONFIG_NAME
        try:
            if task.status is TaskStatus.DELIVERED:  # stopped before deciding: decide now
                return self._admit(self._stored_envelope(task_id))
            if study_config.is_file():
                study = load_study(study_config)
            else:  # stopped before its bundle was unpacked: check it all again
                study = self._fetch_and_verify(self._stored_envelope(task_id))
        except TASK_REFUSALS as error:
            return self._refuse(task_id, self._public(str(error), task_id), claimed=True)
        self._clear_inbox(task_id)  # stopped before the inbox was emptied: empty it now
        return self._run(task_id, study, resumed=task.status is TaskStatus.RUNNING)

    # ------------------------------------------------------------------ cancellation

    def cancellation(
        self, task_id: str, coordinator: str, mailbox: Transport | None = None
    ) -> Cancellation | None:
        """The task's cancellation if one is in the inbox and verifies as its coordinator's."""
        mailbox = mailbox or self.mailbox
        try:
            raw = mailbox.get_bytes(MailboxKeys.cancellation(task_id))
        except NotFound:
            return None
        trust = TrustStore(
            {coordinator: self.policy.trusted_coordinators.require(coordinator)},
            source=f"coordinator of task '{task_id}'",
        )
        try:
            return Cancellation.verify(raw, trust, self.node.node_id, task_id)
        except PolicyViolation as error:
            self.audit("cancellation_refused", task_id=task_id, reason=str(error))
            return None

    def _cancel(self, task_id: str, when: str) -> TaskOutcome:
        self.audit("task_cancelled", task_id=task_id, when=when)
        self.set_status(task_id, TaskStatus.CANCELLED, public=CANCELLED, detail=CANCELLED)
        shutil.rmtree(self._bundle_dir(task_id), ignore_errors=True)
        shutil.rmtree(review_area(self.node.work_dir, task_id), ignore_errors=True)
        self._clear_inbox(task_id, cancellation=True)
        self.progress(f"[{self.node.node_id}] task {task_id} cancelled ({when})")
        return TaskOutcome(task_id, TaskStatus.CANCELLED, CANCELLED)

    # ------------------------------------------------------------------ running

    def _run_label(self, task_id: str) -> str:
        return f"{self.node.node_id}/{task_id}"

    def _keep_workflow(self, task_id: str, digest: str) -> None:
        """Keep a copy of an approved workflow, to show an admin what a later one changes."""
        target = self.node.work_dir / WORKFLOWS_DIR / digest
        if not target.is_dir():
            partial = target.with_name(f".{digest}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(
                self._bundle_dir(task_id), partial, ignore=shutil.ignore_patterns(STUDY_CONFIG_NAME)
            )
            partial.replace(target)
        self.ledger.workflow_copied(digest)

    def _run(self, task_id: str, study: StudySpec, resumed: bool) -> TaskOutcome:
        study_id = study.study_id
        task = self.ledger.task(task_id)
        assert task is not None
        if self._published(task_id, study_id):
            # Published before a crash, ledger not yet updated: one result, no duplicate.
            recorded = task.analyses or read_outcomes(self.node.work_dir, study_id)
            analyses = {a: recorded[a] for a in study.analysis_ids if a in recorded}
            self.set_status(task_id, TaskStatus.RELEASED, analyses=analyses)
            return TaskOutcome(task_id, TaskStatus.RELEASED, analyses=analyses)
        if task.workflow_digest:
            self._keep_workflow(task_id, task.workflow_digest)
        self.set_status(task_id, TaskStatus.RUNNING)
        self.progress(f"[{self.node.node_id}] running study '{study_id}' (task {task_id})")
        bundle_dir = self._bundle_dir(task_id)
        review = self.policy.output_review is not OutputReview.NONE
        watch = CancelWatch(self, task_id, task.coordinator)
        control = RunControl(
            destination=files_dir(self.node.work_dir, task_id) if review else None,
            should_stop=watch,
            poll_seconds=self.federation.cancel_poll_seconds,
            on_start=lambda group: self.ledger.set_process_group(task_id, group),
            label=self._run_label(task_id),
            bundle_sha256=self._bundle_sha256(task_id),
        )
        audit_mark = audit_position(self.federation.audit_log)
        try:
            run = run_pipeline(
                self.node_config,
                bundle_dir / STUDY_CONFIG_NAME,
                study=study,
                pipeline_root=bundle_dir,
                cores=self.node.resources.cores,
                resume=resumed,
                progress=self.progress,
                control=control,
            )
        except PipelineCancelled:
            return self._cancel(task_id, "its pipeline was running")
        except Exception as error:  # any failure ends this task, never the node's agent
            detail = str(error) if isinstance(error, FederationError) else repr(error)
            public = GATE_FAILED if isinstance(error, DisclosureError) else PIPELINE_FAILED
            self.audit("task_failed", task_id=task_id, reason=detail)
            self.set_status(task_id, TaskStatus.FAILED, public=public, detail=detail)
            self.progress(f"[{self.node.node_id}] task {task_id} failed: {detail}")
            return TaskOutcome(task_id, TaskStatus.FAILED, public)
        finally:
            watch.close()
            self.ledger.set_process_group(task_id, None)
        analyses = dict(run.outcomes)
        if not run.released_files:
            self.audit(
                "task_withheld",
                task_id=task_id,
                study_id=study_id,
                analyses=outcomes_as_dict(analyses),
            )
            self.set_status(task_id, TaskStatus.WITHHELD, public=WITHHELD, analyses=analyses)
            self.progress(f"[{self.node.node_id}] task {task_id}: every analysis withheld")
            return TaskOutcome(task_id, TaskStatus.WITHHELD, WITHHELD, analyses)
        if review:
            return self._to_review(task_id, study_id, analyses, audit_mark)
        self._publish(task_id, study_id, run.released_dir, list(run.released_files), analyses)
        self.set_status(task_id, TaskStatus.RELEASED, analyses=analyses)
        self.progress(
            f"[{self.node.node_id}] released {len(run.released_files)} files for task {task_id}"
        )
        return TaskOutcome(task_id, TaskStatus.RELEASED, analyses=analyses)

    # ------------------------------------------------------------------ output review

    def _to_review(
        self, task_id: str, study_id: str, analyses: dict[str, AnalysisOutcome], audit_mark: int
    ) -> TaskOutcome:
        directory = files_dir(self.node.work_dir, task_id)
        summary = summarise(
            directory,
            task_id=task_id,
            study_id=study_id,
            node_id=self.node.node_id,
            outcomes=analyses,
            gate=gate_records(self.federation.audit_log, audit_mark),
        )
        write_summary(self.node.work_dir, task_id, summary)
        self.audit(
            "release_in_review",
            task_id=task_id,
            study_id=study_id,
            release_digest=summary["release_digest"],
            required=self.policy.output_review.required_approvals,
        )
        self.set_status(task_id, TaskStatus.IN_REVIEW, public=IN_REVIEW, analyses=analyses)
        self.progress(f"[{self.node.node_id}] task {task_id}: release waits for output review")
        return TaskOutcome(task_id, TaskStatus.IN_REVIEW, IN_REVIEW, analyses)

    def review_state(self, task_id: str) -> ReviewState:
        """The verified decisions on the files now in the task's review area."""
        digest = release_digest(files_dir(self.node.work_dir, task_id))
        return review_state(
            self.policy.output_review, self.ledger.decisions(task_id), self.policy.reviewers, digest
        )

    def _check_review(self, task: NodeTask) -> TaskOutcome:
        task_id = task.task_id
        state = self.review_state(task_id)
        for line in state.ignored:
            self.audit("review_decision_ignored", task_id=task_id, reason=line)
        if state.rejections:
            self.audit("task_withheld_at_review", task_id=task_id, reviewers=list(state.rejections))
            analyses = withheld_at_review(task.analyses)
            self.set_status(
                task_id, TaskStatus.WITHHELD, public=WITHHELD_AT_REVIEW, analyses=analyses
            )
            shutil.rmtree(files_dir(self.node.work_dir, task_id), ignore_errors=True)
            return TaskOutcome(task_id, TaskStatus.WITHHELD, WITHHELD_AT_REVIEW, analyses)
        if not state.approved:
            progress = f"{len(state.approvals)} of {state.mode.required_approvals} approvals"
            return TaskOutcome(task_id, TaskStatus.IN_REVIEW, progress, task.analyses)
        if self._published(task_id, task.study_id):  # published before a crash: not again
            self.set_status(task_id, TaskStatus.RELEASED)
            return TaskOutcome(task_id, TaskStatus.RELEASED, analyses=task.analyses)
        directory = files_dir(self.node.work_dir, task_id)
        files = sorted(path for path in directory.rglob("*") if path.is_file())
        self._publish(
            task_id, task.study_id, directory, files, task.analyses, state.manifest_summary()
        )
        publish(directory, release_destination(self.node, task.study_id))  # the node's own copy
        self.set_status(task_id, TaskStatus.RELEASED, analyses=task.analyses)
        self.progress(f"[{self.node.node_id}] released task {task_id} after output review")
        return TaskOutcome(task_id, TaskStatus.RELEASED, analyses=task.analyses)

    # ------------------------------------------------------------------ publishing

    def _published(self, task_id: str, study_id: str) -> bool:
        """Whether this node's own signed COMPLETE for this task is in the outbox."""
        try:
            raw = self.mailbox.get_bytes(MailboxKeys.completion(task_id))
        except NotFound:
            return False
        own = TrustStore(
            {self.node.node_id: self.signing_key.public_key()}, source="node's own key"
        )
        try:
            ResultMarker.verify(raw, own, study_id, self.node.node_id, task_id)
        except (ValueError, PolicyViolation, BundleError) as error:
            self.audit("foreign_completion_marker", task_id=task_id, reason=str(error))
            return False
        return True

    def _publish(
        self,
        task_id: str,
        study_id: str,
        released_dir: Path,
        files: list[Path],
        analyses: Mapping[str, AnalysisOutcome],
        review: dict[str, Any] | None = None,
    ) -> None:
        """Result bundle first, the signed COMPLETE marker last: readers never see half a result.

        The bundle's signed manifest says what the gate decided per analysis and, after an
        output review, how the release was reviewed (no names, no reasons).
        """
        result_path = self._task_dir(task_id) / "result.tar"
        members = {str(path.relative_to(released_dir)): path for path in files}
        metadata: dict[str, Any] = {
            "task_id": task_id,
            "study_id": study_id,
            "node_id": self.node.node_id,
            "analyses": outcomes_as_dict(analyses),
            "output_review": review or {"mode": OutputReview.NONE.value},
        }
        manifest = pack_bundle(members, result_path, metadata, limits=RESULT_LIMITS)
        # Encrypted for the coordinator that signed the task; its plaintext digest and length
        # are signed below, since Crypt4GH alone misses a cut at a segment boundary.
        coordinator = self.ledger.coordinator(task_id) or ""
        if coordinator not in self.encryption_keys:
            raise SpecError(
                f"task '{task_id}': no Crypt4GH key for coordinator '{coordinator}'; "
                "result not published"
            )
        sealed_key = MailboxKeys.sealed_result(task_id)
        sealed_path = result_path.with_name(sealed_key.rsplit("/", 1)[-1])
        sealed = seal(result_path, sealed_path, self.encryption_keys[coordinator])
        self.mailbox.put_file(sealed_key, sealed_path)
        head = read_head(self.federation.audit_log)
        if head is None:  # the agent audits every task it sees, so this is a lost log
            raise SpecError(
                f"task '{task_id}': the node audit log '{self.federation.audit_log}' has no "
                "head; result not published (restore the log)"
            )
        marker = ResultMarker(
            task_id=task_id,
            study_id=study_id,
            node_id=self.node.node_id,
            sealed=sealed,
            manifest_digest=manifest.digest,
            released_at=_now(),
            audit_head=head,  # signed with the marker: the coordinator keeps it as an anchor
        )
        self.mailbox.put_bytes(
            MailboxKeys.completion(task_id),
            signed_bytes(marker.to_payload(), self.signing_key, self.node.node_id),
        )
        self.audit(
            "result_published",
            task_id=task_id,
            manifest_digest=manifest.digest,
            files=sorted(members),
            analyses=metadata["analyses"],
            output_review=metadata["output_review"],
        )

    # ------------------------------------------------------------------ the admin's decisions

    def approve(
        self,
        task_id: str,
        *,
        by: str | None = None,
        remember: bool = False,
        envelope: dict[str, Any] | None = None,
    ) -> TaskOutcome:
        """Let a held task run (on the agent's next run). With `remember`, approve its workflow
        for later studies inside `envelope` (default: this study's own envelope)."""
        task = self._held(task_id)
        account = os_account()
        actor = by or account
        if remember:
            study = load_study(self._bundle_dir(task_id) / STUDY_CONFIG_NAME)
            if envelope is None:
                effective = effective_policy(self.policy_document().disclosure, study)
                envelope = envelope_of(study, effective).to_dict()
            else:  # checked before anything is recorded
                check_envelope(envelope)
        if not self.set_status(
            task_id, TaskStatus.APPROVED, allowed_from=frozenset({TaskStatus.HELD})
        ):
            raise PolicyViolation(f"task '{task_id}': no longer held; nothing approved")
        self.ledger.add_decision(task_id, DecisionKind.APPROVED, actor, account)
        self.audit(
            "task_approved", task_id=task_id, study_id=task.study_id, by=actor, account=account
        )
        if remember:
            self.ledger.approve_workflow(
                task.workflow_digest or "", envelope, actor, account, task_id
            )
            self.audit(
                "workflow_approved",
                task_id=task_id,
                workflow=task.workflow_digest,
                envelope=envelope,
                by=actor,
                account=account,
            )
            self.publish_policy()
        return TaskOutcome(task_id, TaskStatus.APPROVED)

    def veto(self, task_id: str, reason: str, *, by: str | None = None) -> TaskOutcome:
        """Refuse a held task for good. The reason stays in the node's audit log; the
        coordinator is told `vetoed` and nothing more."""
        task = self._held(task_id)
        account = os_account()
        actor = by or account
        if not self.set_status(
            task_id,
            TaskStatus.VETOED,
            public=VETOED,
            detail=reason,
            allowed_from=frozenset({TaskStatus.HELD}),
        ):
            raise PolicyViolation(f"task '{task_id}': no longer held; nothing vetoed")
        self.ledger.add_decision(task_id, DecisionKind.VETOED, actor, account, reason=reason)
        self.audit(
            "task_vetoed",
            task_id=task_id,
            study_id=task.study_id,
            by=actor,
            account=account,
            reason=reason,
        )
        shutil.rmtree(self._bundle_dir(task_id), ignore_errors=True)
        return TaskOutcome(task_id, TaskStatus.VETOED, VETOED)

    def review(
        self,
        task_id: str,
        key: Ed25519PrivateKey,
        verdict: Verdict,
        reason: str | None = None,
    ) -> ReviewState:
        """Record one reviewer's signed decision on the release now in the task's review area.

        The reviewer is whoever `key` is pinned for in `federation.reviewers`; a second
        decision by the same reviewer on the same release is refused. The agent acts on the
        decisions on its next run.
        """
        task = self.ledger.task(task_id)
        if task is None:
            raise SpecError(
                f"task '{task_id}': unknown to this node; see `federation node review list`"
            )
        if task.status is not TaskStatus.IN_REVIEW:
            raise PolicyViolation(f"task '{task_id}': {task.status.value}, not in review")
        if verdict is Verdict.REJECT and not reason:
            raise SpecError(f"task '{task_id}': a rejection needs --reason (kept on the node)")
        summary = read_summary(self.node.work_dir, task_id)
        digest = release_digest(files_dir(self.node.work_dir, task_id))
        if digest != summary["release_digest"]:
            raise PolicyViolation(
                f"task '{task_id}': the files under review changed since their summary was made "
                f"(digest {digest} != {summary['release_digest']}); nothing recorded; tell the node's admin"
            )
        reviewer, document = decision_document(task_id, digest, verdict, key, self.policy.reviewers)
        account = os_account()
        self.ledger.add_decision(
            task_id,
            DECISION_KINDS[verdict],
            reviewer,
            account,
            reason=reason,
            release_digest=digest,
            document=document,
        )
        self.audit(
            "output_review_decision",
            task_id=task_id,
            study_id=task.study_id,
            reviewer=reviewer,
            account=account,
            decision=verdict.value,
            release_digest=digest,
            reason=reason,
        )
        return self.review_state(task_id)

    def _held(self, task_id: str) -> NodeTask:
        task = self.ledger.task(task_id)
        if task is None:
            raise SpecError(f"task '{task_id}': unknown to this node; see `federation node tasks`")
        if task.status is not TaskStatus.HELD:
            raise PolicyViolation(
                f"task '{task_id}': {task.status.value}, not held; only a held task is decided"
            )
        return task

    def close(self) -> None:
        self.mailbox.close()


def check_envelope(envelope: Any) -> ParameterEnvelope:
    """An envelope an admin wrote (`--envelope FILE`), checked; SpecError naming the problem."""
    try:
        checked = ParameterEnvelope.from_dict(envelope, "--envelope")
    except PolicyViolation as error:
        raise SpecError(str(error)) from None
    unknown = sorted(set(checked.disclosure) - THRESHOLD_NAMES)
    if unknown:
        raise SpecError(
            f"--envelope 'disclosure': unknown threshold '{unknown[0]}'; use one of "
            f"{sorted(THRESHOLD_NAMES)}"
        )
    return checked
