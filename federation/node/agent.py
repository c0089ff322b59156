"""The node agent: inbox -> verify -> policy -> pipeline -> disclosure -> signed result -> outbox.

The agent only ever connects out (it polls its own mailbox), so it works in SPEs that
forbid inbound connections. Nothing from a task is unpacked or run before the envelope's
signature, the node ID, freshness, replay and sequence checks have passed, and nothing is
run before the bundle matches its signed digests, passes the archive checks and carries a
workflow the node admin approved. Every decision goes to the node audit log. What the
coordinator is told about a failure is a category, never node data (an error message may
name samples; the audit log on the node keeps the detail).

A task the node has decided on (refused, or accepted and unpacked) is removed from the inbox;
if its envelope shows up there again it is refused as a replay. A task that was accepted or
running when the node stopped is resumed from the node ledger on the next run, and a task
whose mailbox cannot be reached now is simply tried again then.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from federation.audit import append_event, read_head
from federation.errors import (
    BundleError,
    DisclosureError,
    FederationError,
    PolicyViolation,
    SpecError,
    TransportError,
)
from federation.files import sha256_file
from federation.node.ledger import NodeLedger
from federation.node.policy import NodePolicy
from federation.pipeline.run import ENGINES, run_pipeline
from federation.protocol.bundle import inspect_bundle, pack_bundle, unpack_bundle
from federation.protocol.crypt import load_public_key as load_encryption_key
from federation.protocol.crypt import seal
from federation.protocol.manifest import STUDY_CONFIG_NAME, workflow_digest
from federation.protocol.messages import (
    FINAL_STATUSES,
    RESULT_LIMITS,
    MailboxKeys,
    ResultMarker,
    StatusReport,
    TaskEnvelope,
    TaskStatus,
    signed_bytes,
)
from federation.protocol.signing import TrustStore, load_private_key
from federation.release.rules import RefusalCategory
from federation.settings import NodeSettings, load_node
from federation.spec import StudySpec, load_study
from federation.transport import NotFound, Transport, open_transport

# What a task refusal may be about: the envelope, the bundle or the node's own policy. Refusals
# found after the task was accepted name the task's bundle by its mailbox key, never by a
# path on the node (the reason goes to the coordinator).
TASK_REFUSALS = (PolicyViolation, BundleError, SpecError)
# What the coordinator is told about a failed run: a category, never the detail.
WITHHELD = "withheld by the node's disclosure policy"
PIPELINE_FAILED = "the node pipeline failed; the node's audit log has the details"
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


@dataclass(frozen=True)
class TaskOutcome:
    task_id: str
    status: TaskStatus
    reason: str | None = None


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
        base_dir = self.node.config_dir or self.node_config.parent
        self.mailbox: Transport = open_transport(
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

    def _audit(self, event: str, **fields: object) -> None:
        append_event(self.federation.audit_log, event, node_id=self.node.node_id, **fields)

    def _task_dir(self, task_id: str) -> Path:
        return self.node.work_dir / "tasks" / task_id

    def _report(
        self, task_id: str, study_id: str, status: TaskStatus, reason: str | None = None
    ) -> None:
        """A signed status for the coordinator (overwritten as the task moves on)."""
        report = StatusReport(
            task_id=task_id,
            study_id=study_id,
            node_id=self.node.node_id,
            status=status,
            reason=reason or "",
            time=_now().isoformat(timespec="seconds"),
        )
        self.mailbox.put_bytes(
            MailboxKeys.status(task_id),
            signed_bytes(report.to_payload(), self.signing_key, self.node.node_id),
        )

    def _try_report(self, task_id: str, study_id: str, status: TaskStatus, reason: str) -> None:
        """Report a final decision; the decision stands even if the report cannot be sent."""
        try:
            self._report(task_id, study_id, status, reason)
        except FederationError as error:
            self._audit("report_failed", task_id=task_id, reason=str(error))

    def _public(self, message: str, task_id: str) -> str:
        """`message` without the node's own paths: the bundle by its mailbox key, the rest relative."""
        tar_path = str(self._task_dir(task_id) / MailboxKeys.BUNDLE)
        message = message.replace(tar_path, MailboxKeys.bundle(task_id))
        return message.replace(str(self.node.work_dir), "<work_dir>")

    def _clear_inbox(self, task_id: str) -> None:
        """Remove a decided task from the inbox, so a copy that reappears is seen as a replay."""
        for key in MailboxKeys.inbox_files(task_id):
            try:
                self.mailbox.delete(key)
            except TransportError as error:  # the ledger still prevents a second run
                self._audit("inbox_cleanup_failed", task_id=task_id, reason=str(error))

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
        self._audit("task_refused", task_id=task_id, reason=reason)
        study_id = envelope.study_id if envelope else "unknown"
        if claimed:
            self.ledger.set_status(task_id, TaskStatus.REJECTED, reason)
        elif report:  # a replay keeps the ledger entry of the task it copies
            coordinator = envelope.coordinator if envelope else "unverified"
            sequence = envelope.sequence if envelope else 0
            self.ledger.record_refusal(task_id, coordinator, sequence, study_id, reason)
        if report:
            self._try_report(task_id, study_id, TaskStatus.REJECTED, reason)
        self._clear_inbox(task_id)
        self.progress(f"[{self.node.node_id}] refused task {task_id}: {reason}")
        return TaskOutcome(task_id, TaskStatus.REJECTED, reason)

    # ------------------------------------------------------------------ the loop

    def pending_task_ids(self) -> list[str]:
        """Tasks whose envelope is in the inbox (the envelope is written last).

        Tasks accepted and not finished are left to `_resume`; a task already decided whose
        envelope is (again) in the inbox is a replay, refused by `_handle`.
        """
        task_ids = []
        for key in self.mailbox.list(MailboxKeys.INBOX):
            task_id = MailboxKeys.task_of_envelope(key)
            if task_id is not None:
                status = self.ledger.status(task_id)
                if status is None or status in FINAL_STATUSES:
                    task_ids.append(task_id)
        return task_ids

    def run_once(self) -> list[TaskOutcome]:
        """Resume unfinished tasks, then handle new ones. A task whose mailbox cannot be
        reached now is left as it is and tried again on the next run."""
        outcomes = [self._deferrable(self._resume, task_id) for task_id in self.ledger.unfinished()]
        outcomes += [self._deferrable(self._handle, task_id) for task_id in self.pending_task_ids()]
        return [outcome for outcome in outcomes if outcome is not None]

    def _deferrable(self, step: Callable[[str], TaskOutcome], task_id: str) -> TaskOutcome | None:
        try:
            return step(task_id)
        except TransportError as error:
            self._audit("task_deferred", task_id=task_id, reason=str(error))
            self.progress(f"[{self.node.node_id}] task {task_id} deferred: {error}")
            return None

    def watch(self, interval_seconds: float = 30.0, max_cycles: int | None = None) -> None:
        cycle = 0
        while max_cycles is None or cycle < max_cycles:
            try:
                self.run_once()
            except TransportError as error:
                if not error.retryable:
                    raise
                self.progress(f"[{self.node.node_id}] mailbox not reachable now: {error}")
            cycle += 1
            if max_cycles is None or cycle < max_cycles:
                time.sleep(interval_seconds)

    # ------------------------------------------------------------------ one task

    def _handle(self, task_id: str) -> TaskOutcome:
        self._audit("task_seen", task_id=task_id)
        seen = self.ledger.status(task_id)
        if seen is not None:
            reason = f"task '{task_id}': already seen (replay; it was {seen.value}); refused"
            return self._refuse(task_id, reason, report=False)
        raw = self.mailbox.get_bytes(MailboxKeys.envelope(task_id))
        try:
            envelope = self.policy.verify_envelope(raw, task_id, _now())
        except TASK_REFUSALS as error:
            return self._refuse(task_id, str(error))
        if envelope.engine not in ENGINES:
            reason = f"task '{task_id}': engine '{envelope.engine}' is not supported by this node; refused"
            return self._refuse(task_id, reason, envelope=envelope)
        # Kept beside the task, so a node killed before the bundle is unpacked can resume.
        task_dir = self._task_dir(task_id)
        task_dir.mkdir(parents=True, exist_ok=True)
        (task_dir / MailboxKeys.ENVELOPE).write_bytes(raw)
        try:
            self.ledger.claim(task_id, envelope.coordinator, envelope.sequence, envelope.study_id)
        except PolicyViolation as error:
            return self._refuse(task_id, str(error), envelope=envelope)
        return self._accept(envelope)

    def _accept(self, envelope: TaskEnvelope) -> TaskOutcome:
        """Fetch, verify and unpack a claimed task's bundle, then run it."""
        task_id = envelope.task_id
        try:
            study = self._fetch_and_verify(envelope)
        except TASK_REFUSALS as error:
            reason = self._public(str(error), task_id)
            return self._refuse(task_id, reason, envelope=envelope, claimed=True)
        self._clear_inbox(task_id)
        self._audit(
            "task_accepted",
            task_id=task_id,
            study_id=envelope.study_id,
            workflow=envelope.workflow_digest,
        )
        self._report(task_id, envelope.study_id, TaskStatus.ACCEPTED)
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
            raise PolicyViolation(f"task '{task_id}': envelope without a bundle; refused") from None
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
        self.policy.check_workflow(task_id, envelope.workflow_digest)
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

    def _bundle_dir(self, task_id: str) -> Path:
        return self._task_dir(task_id) / "bundle"

    def _resume(self, task_id: str) -> TaskOutcome:
        """A task accepted or running when the node stopped: publish or re-run, never twice."""
        task_dir = self._task_dir(task_id)
        self._audit("task_resumed", task_id=task_id)
        self.progress(f"[{self.node.node_id}] resuming task {task_id}")
        study_config = self._bundle_dir(task_id) / STUDY_CONFIG_NAME
        if not study_config.is_file():
            # Stopped between accepting the task and unpacking its bundle: check it all again.
            try:
                raw = (task_dir / MailboxKeys.ENVELOPE).read_bytes()
            except OSError:
                reason = f"task '{task_id}': its envelope is gone from the node's task directory; refused"
                return self._refuse(task_id, reason, claimed=True)
            try:
                envelope = self.policy.verify_envelope(raw, task_id, _now())
            except TASK_REFUSALS as error:
                return self._refuse(task_id, str(error), claimed=True)
            return self._accept(envelope)
        self._clear_inbox(task_id)  # stopped before the inbox was emptied: empty it now
        return self._run(task_id, load_study(study_config), resumed=True)

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
            self._audit("foreign_completion_marker", task_id=task_id, reason=str(error))
            return False
        return True

    def _run(self, task_id: str, study: StudySpec, resumed: bool) -> TaskOutcome:
        study_id = study.study_id
        if self._published(task_id, study_id):
            # Published before a crash, ledger not yet updated: one result, no duplicate.
            self.ledger.set_status(task_id, TaskStatus.RELEASED)
            self._report(task_id, study_id, TaskStatus.RELEASED)
            return TaskOutcome(task_id, TaskStatus.RELEASED)
        self.ledger.set_status(task_id, TaskStatus.RUNNING)
        self._report(task_id, study_id, TaskStatus.RUNNING)
        self.progress(f"[{self.node.node_id}] running study '{study_id}' (task {task_id})")
        bundle_dir = self._bundle_dir(task_id)
        try:
            run = run_pipeline(
                self.node_config,
                bundle_dir / STUDY_CONFIG_NAME,
                study=study,
                pipeline_root=bundle_dir,
                resume=resumed,
                progress=self.progress,
            )
        except Exception as error:  # any failure ends this task, never the node's agent
            detail = str(error) if isinstance(error, FederationError) else repr(error)
            public = (
                withheld_reason(error) if isinstance(error, DisclosureError) else PIPELINE_FAILED
            )
            self.ledger.set_status(task_id, TaskStatus.FAILED, detail)
            self._audit("task_failed", task_id=task_id, reason=detail)
            self._try_report(task_id, study_id, TaskStatus.FAILED, public)
            self.progress(f"[{self.node.node_id}] task {task_id} failed: {detail}")
            return TaskOutcome(task_id, TaskStatus.FAILED, public)
        self._publish(task_id, study_id, run.released_dir, list(run.released_files))
        self.ledger.set_status(task_id, TaskStatus.RELEASED)
        self.progress(
            f"[{self.node.node_id}] released {len(run.released_files)} files for task {task_id}"
        )
        return TaskOutcome(task_id, TaskStatus.RELEASED)

    def _publish(self, task_id: str, study_id: str, released_dir: Path, files: list[Path]) -> None:
        """Result bundle first, the signed COMPLETE marker last: readers never see half a result."""
        result_path = self._task_dir(task_id) / "result.tar"
        members = {str(path.relative_to(released_dir)): path for path in files}
        metadata = {"task_id": task_id, "study_id": study_id, "node_id": self.node.node_id}
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
        self._report(task_id, study_id, TaskStatus.RELEASED)
        self._audit(
            "result_published",
            task_id=task_id,
            manifest_digest=manifest.digest,
            files=sorted(members),
        )
