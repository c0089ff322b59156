"""The coordinator: fan a study out as signed tasks, collect verified results, meta-analyse.

Submission first runs the pre-flight (`coordinator.preflight`): each node's published, signed
policy says what it will do with the study, and a study any node would refuse is refused here,
one line per node, before anything is sent (`--dry-run` only prints the prediction). It then
builds one content-addressed bundle per study and one signed envelope per node (the envelope
is written to the node's inbox last, so a node never sees half a task). Deliveries are planned
in the ledger before they are made, so a coordinator killed in the middle of `submit` re-runs
it and sends each node the same envelope once, never a second task. A signed cancellation
(`cancel`) drops a study's pending tasks and stops running ones on the nodes.

Collection verifies every node's signature and every digest before it keeps a result,
keeps only results released before the deadline, and meta-analyses once k of n nodes
have released (again only when another node's result arrives; a study whose quorum can no
longer be met fails). Each node's state is the one it reported (held, approved, running, in
review, released, vetoed, withheld, ...), with what it released per analysis. A node that
cannot be reached while delivering gets a failed task with the reason instead of stopping the
study. All state is in the SQLite ledger, so a coordinator killed at any point continues
where it was and never counts a result twice.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation import __version__
from federation.audit import ANCHORS_DIR, append_event
from federation.coordinator.ledger import (
    CoordinatorLedger,
    PlannedTask,
    StudyRecord,
    StudyStatus,
)
from federation.coordinator.preflight import NodePrediction, Preflight, preflight_node
from federation.errors import (
    BundleError,
    FederationError,
    PolicyViolation,
    ProvenanceError,
    SpecError,
    TransportError,
)
from federation.files import REPO_ROOT, sha256_file
from federation.jsonio import canonical_json
from federation.meta.frequencies import pool_frequency_files
from federation.meta.runner import MetaOptions, run_meta
from federation.protocol.bundle import pack_bundle, pipeline_files, unpack_bundle
from federation.protocol.crypt import SEALED_RESULT, load_secret_key, open_sealed
from federation.protocol.manifest import workflow_digest
from federation.protocol.messages import (
    FINAL_STATUSES,
    RESULT_LIMITS,
    Cancellation,
    MailboxKeys,
    ResultMarker,
    StatusReport,
    TaskEnvelope,
    TaskStatus,
    analysis_outcomes,
    signed_bytes,
)
from federation.protocol.signing import TrustStore, load_private_key, load_public_key
from federation.provenance.crate import (
    META_KIND,
    POOLED_KIND,
    MetaRun,
    StudyCrateInputs,
    keep_bundle,
    keep_keys,
    keep_signed_result,
    now_iso,
    options_record,
    record_meta_runs,
    write_study_crate,
)
from federation.report.inputs import Provenance
from federation.settings import CoordinatorSettings
from federation.spec import StudySpec, load_study
from federation.transport import NotFound, Transport, open_transport

Progress = Callable[[str], None]
# Meta-analysis outputs under results/<study_id>/meta/: one file per GWAS analysis, and one
# table of pooled allele frequencies for all allele-frequency analyses.
POOLED_FREQUENCIES = "allele_frequencies.tsv.gz"
NOT_SENT = "not delivered"  # the reason of a task whose delivery failed


def _now() -> datetime:
    return datetime.now(UTC)


class PreflightRefused(PolicyViolation):
    """A node would refuse the study: nothing was sent (one line per refusing node)."""


class MailboxesUnreachable(TransportError):
    """A node's mailbox is missing or cannot be reached: nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@dataclass(frozen=True)
class Submission:
    study_id: str
    tasks: dict[str, str]  # node_id -> task_id
    workflow_digest: str
    preflight: Preflight | None = None
    resumed: bool = False  # a re-run of an interrupted submit (only missing deliveries made)
    sent: bool = True  # False for --dry-run


@dataclass(frozen=True)
class Collection:
    study_id: str
    statuses: dict[str, TaskStatus]
    released: list[str]
    missing: list[str]
    meta_files: list[Path]


def meta_output_name(spec: StudySpec, analysis_id: str) -> str:
    """The meta-analysis file of one of the study's analyses."""
    if any(analysis.id == analysis_id for analysis in spec.allele_frequencies):
        return POOLED_FREQUENCIES
    return f"{analysis_id}.tsv.gz"


class Coordinator:
    def __init__(self, settings: CoordinatorSettings, progress: Progress | None = None) -> None:
        self.settings = settings
        self.ledger = CoordinatorLedger(settings.ledger_path)
        self.progress = progress or (lambda line: None)
        self.node_keys = TrustStore(
            {
                node_id: load_public_key(endpoint.public_key)
                for node_id, endpoint in settings.nodes.items()
            },
            source="coordinator's pinned node keys",
        )

    def _audit(self, event: str, **fields: object) -> None:
        append_event(
            self.settings.audit_log, event, coordinator_id=self.settings.coordinator_id, **fields
        )

    def _crypt4gh_key(self) -> bytes:
        if self.settings.crypt4gh_key is None:
            raise SpecError(
                "coordinator config 'crypt4gh_key': not set; nodes encrypt results for the "
                "coordinator's Crypt4GH key, so collecting needs its .c4gh.sec"
            )
        return load_secret_key(self.settings.crypt4gh_key)

    def mailbox(self, node_id: str) -> Transport:
        endpoint = self.settings.nodes[node_id]
        return open_transport(
            endpoint.mailbox, self.settings.config_dir, f"node '{node_id}' mailbox"
        )

    # ------------------------------------------------------------------ submit

    def _check_nodes(self, study: StudySpec) -> tuple[list[str], int]:
        if not study.nodes:
            raise SpecError(
                f"study '{study.study_id}' 'nodes': empty; list the nodes that should take part"
            )
        unknown = [node for node in study.nodes if node not in self.settings.nodes]
        if unknown:
            known = ", ".join(sorted(self.settings.nodes))
            raise SpecError(
                f"study '{study.study_id}' 'nodes': '{unknown[0]}' is not configured at this "
                f"coordinator (known: {known}); fix the study or the coordinator config"
            )
        quorum = study.quorum or len(study.nodes)
        if quorum > len(study.nodes):
            raise SpecError(
                f"study '{study.study_id}' 'quorum': {quorum} > {len(study.nodes)} nodes; lower it"
            )
        return list(study.nodes), quorum

    def _expiry(self, study: StudySpec, issued: datetime) -> datetime:
        expiry = issued + timedelta(hours=self.settings.task_lifetime_hours)
        if study.deadline:
            deadline = datetime.fromisoformat(study.deadline)
            if deadline.tzinfo is None:
                raise SpecError(
                    f"study '{study.study_id}' 'deadline': '{study.deadline}' has no time zone; "
                    "add Z or +01:00"
                )
            if deadline <= issued:
                raise SpecError(
                    f"study '{study.study_id}' 'deadline': {study.deadline} has passed; "
                    "set a later one"
                )
            expiry = min(expiry, deadline)
        return expiry

    def preflight(self, study: StudySpec, workflow_digest: str) -> Preflight:
        """What each of the study's nodes will do with it, from its published policy."""
        predictions: list[NodePrediction] = []
        for node_id in study.nodes:
            try:
                mailbox = self.mailbox(node_id)
            except TransportError as error:
                predictions.append(NodePrediction(node_id, None, unreachable=str(error)))
                continue
            predictions.append(
                preflight_node(mailbox, node_id, self.node_keys, study, workflow_digest)
            )
        return Preflight(study.study_id, workflow_digest, tuple(predictions))

    def submit(self, study_config: Path, *, dry_run: bool = False) -> Submission:
        """Pre-flight, then deliver one signed task per node (or, with `dry_run`, only predict).

        Re-running it for a study whose submit was interrupted delivers only what is missing,
        with the envelopes planned the first time.
        """
        study = load_study(study_config)
        nodes, quorum = self._check_nodes(study)
        issued = _now()
        expires = self._expiry(study, issued)
        staging = self.settings.state_dir / "outgoing" / study.study_id
        staging.mkdir(parents=True, exist_ok=True)
        bundle_path = staging / "bundle.tar"
        manifest = pack_bundle(
            pipeline_files(REPO_ROOT, study_config), bundle_path, {"study_id": study.study_id}
        )
        digest = workflow_digest(manifest)
        bundle_sha256 = sha256_file(bundle_path)
        resuming = self._known_study(study.study_id)
        preflight = self.preflight(study, digest)
        if dry_run:
            return Submission(study.study_id, {}, digest, preflight, sent=False)
        if not resuming:
            problems = preflight.unreachable
            if problems:
                raise MailboxesUnreachable(self._refusal(study, problems, "nothing sent"))
            if preflight.refused:
                raise PreflightRefused(self._refusal(study, preflight.refused, "nothing sent"))
        resumed = self.ledger.add_study(
            study, quorum, study.deadline or expires.isoformat(timespec="seconds")
        )
        key = load_private_key(self.settings.signing_key)
        delivered = {task.node_id: task.task_id for task in self.ledger.tasks(study.study_id)}
        for node_id in nodes:
            if node_id in delivered:
                continue  # delivered (or recorded as undeliverable) before
            planned = self.ledger.planned(study.study_id).get(node_id) or self._plan(
                study, node_id, issued, expires, manifest.digest, digest, bundle_sha256
            )
            if planned.envelope["bundle_sha256"] != bundle_sha256:
                raise SpecError(
                    f"study '{study.study_id}': its bundle changed since the interrupted submit "
                    f"(the pipeline or study.yaml is not what was planned); nothing more sent; "
                    "submit the study under a new study_id"
                )
            if self._deliver(planned, bundle_path, key):
                delivered[node_id] = planned.task_id
        tasks = {
            task.node_id: task.task_id
            for task in self.ledger.tasks(study.study_id)
            if not (task.status is TaskStatus.FAILED and (task.reason or "").startswith(NOT_SENT))
        }
        return Submission(study.study_id, tasks, digest, preflight, resumed=resumed)

    def _known_study(self, study_id: str) -> bool:
        try:
            self.ledger.study(study_id)
        except SpecError:
            return False
        return True

    @staticmethod
    def _refusal(study: StudySpec, predictions: list[NodePrediction], outcome: str) -> str:
        lines = [f"study '{study.study_id}' refused at pre-flight; {outcome}:"]
        return "\n".join(lines + [f"  {prediction.summary()}" for prediction in predictions])

    def _plan(
        self,
        study: StudySpec,
        node_id: str,
        issued: datetime,
        expires: datetime,
        manifest_digest: str,
        digest: str,
        bundle_sha256: str,
    ) -> PlannedTask:
        envelope = TaskEnvelope(
            study_id=study.study_id,
            task_id=uuid.uuid4().hex,
            node_id=node_id,
            sequence=self.ledger.next_sequence(node_id),
            issued_at=issued,
            expires_at=expires,
            bundle_sha256=bundle_sha256,
            manifest_digest=manifest_digest,
            workflow_digest=digest,
            federation_version=__version__,
            engine=study.engine,
            coordinator=self.settings.coordinator_id,
        )
        return self.ledger.plan_task(
            study.study_id, node_id, envelope.task_id, envelope.sequence, envelope.to_payload()
        )

    def _deliver(self, planned: PlannedTask, bundle_path: Path, key: Ed25519PrivateKey) -> bool:
        """Bundle first, signed envelope last; record the task as delivered or as failed.

        Idempotent: a node that has already reported on the task, or whose inbox already holds
        this very envelope, was delivered to before (by a submit that was interrupted).
        """
        task_id, node_id, study_id = planned.task_id, planned.node_id, planned.study_id
        payload = planned.envelope
        envelope = signed_bytes(payload, key, self.settings.coordinator_id)
        try:
            with closing(self.mailbox(node_id)) as mailbox:
                delivered_before = mailbox.exists(MailboxKeys.status(task_id))
                if not delivered_before and mailbox.exists(MailboxKeys.envelope(task_id)):
                    delivered_before = mailbox.get_bytes(MailboxKeys.envelope(task_id)) == envelope
                if not delivered_before:
                    if not mailbox.exists(MailboxKeys.bundle(task_id)):
                        mailbox.put_file(MailboxKeys.bundle(task_id), bundle_path)
                    mailbox.put_bytes(MailboxKeys.envelope(task_id), envelope)
        except TransportError as error:
            # One unreachable (or impersonated) node does not stop the study: its task is
            # recorded as failed with the reason, and the quorum decides.
            reason = f"{NOT_SENT}: {error}"
            self.ledger.add_task(
                task_id,
                study_id,
                node_id,
                planned.sequence,
                payload,
                status=TaskStatus.FAILED,
                reason=reason,
            )
            self.progress(f"[coordinator] task {task_id} for node '{node_id}' {reason}")
            return False
        self.ledger.add_task(task_id, study_id, node_id, planned.sequence, payload)
        self.progress(f"[coordinator] delivered task {task_id} to node '{node_id}'")
        self._audit("task_delivered", study_id=study_id, node_id=node_id, task_id=task_id)
        self._trigger(node_id)
        return True

    # ------------------------------------------------------------------ cancel

    def cancel(
        self, study_id: str, *, by: str | None = None, reason: str | None = None
    ) -> list[str]:
        """Send a signed cancellation of every task not yet final; the study is cancelled.

        Nodes drop a pending or held task, stop a running pipeline and publish nothing of a
        task in review. `by` (who asked: a dashboard token's name, a user) and `reason` go to
        the audit log and the ledger. Returns the ids of the tasks cancelled.
        """
        asked = {key: value for key, value in (("by", by), ("reason", reason)) if value}
        study = self.ledger.study(study_id)
        if study.status is StudyStatus.CANCELLED:
            return []
        key = load_private_key(self.settings.signing_key)
        open_tasks = [
            task for task in self.ledger.tasks(study_id) if task.status not in FINAL_STATUSES
        ]
        for task in open_tasks:
            cancellation = Cancellation(
                study_id=study_id,
                task_id=task.task_id,
                node_id=task.node_id,
                issued_at=_now(),
                coordinator=self.settings.coordinator_id,
            )
            signed = signed_bytes(cancellation.to_payload(), key, self.settings.coordinator_id)
            try:
                with closing(self.mailbox(task.node_id)) as mailbox:
                    mailbox.put_bytes(MailboxKeys.cancellation(task.task_id), signed)
            except TransportError as error:
                # The study is cancelled here all the same; that node's result is never used.
                self.progress(f"[coordinator] node '{task.node_id}' not told now: {error}")
                self._audit(
                    "cancellation_not_delivered",
                    study_id=study_id,
                    node_id=task.node_id,
                    task_id=task.task_id,
                    reason=str(error),
                )
                continue
            self._audit(
                "task_cancelled",
                study_id=study_id,
                node_id=task.node_id,
                task_id=task.task_id,
                **asked,
            )
        cancelled = self.ledger.cancel_study(study_id, by, reason)
        self._audit("study_cancelled", study_id=study_id, tasks=len(cancelled), **asked)
        self.progress(f"[coordinator] study '{study_id}' cancelled ({len(cancelled)} open tasks)")
        return cancelled

    def _trigger(self, node_id: str) -> None:
        """SSH nodes may be asked to run their agent now (best effort: polling also works)."""
        command = self.settings.nodes[node_id].remote_run_once
        if not command:
            return
        from federation.transport.ssh import SSHTransport

        try:
            with closing(self.mailbox(node_id)) as mailbox:
                if isinstance(mailbox, SSHTransport):
                    result = mailbox.run_remote(list(command))
                    self.progress(f"[coordinator] triggered node '{node_id}': exit {result[0]}")
        except TransportError as error:
            self.progress(f"[coordinator] could not trigger node '{node_id}' (it polls): {error}")

    # ------------------------------------------------------------------ collect

    def _read_status(self, mailbox: Transport, node_id: str, task_id: str) -> None:
        """Take the node's latest signed status; RELEASED only counts with a verified result."""
        try:
            raw = mailbox.get_bytes(MailboxKeys.status(task_id))
        except NotFound:
            return
        report = StatusReport.verify(raw, self.node_keys, node_id, task_id)
        if report is None or report.status in (TaskStatus.RELEASED, TaskStatus.DELIVERED):
            return
        if self.ledger.set_task_status(task_id, report.status, report.reason or None):
            self.ledger.set_task_outcomes(task_id, report.analyses)

    def refresh(self, study_id: str) -> None:
        """Read each open task's latest signed status from its node (no results are fetched),
        so `study status` says what the nodes say now. A node out of reach keeps its last state."""
        for task in self.ledger.tasks(study_id):
            if task.status in FINAL_STATUSES:
                continue
            try:
                with closing(self.mailbox(task.node_id)) as mailbox:
                    self._read_status(mailbox, task.node_id, task.task_id)
            except TransportError as error:
                self.progress(f"[coordinator] node '{task.node_id}' not reachable now: {error}")
            except PolicyViolation as error:  # a forged report changes nothing
                self.progress(f"[coordinator] node '{task.node_id}' status ignored: {error}")

    def _collect_task(
        self, study_id: str, node_id: str, task_id: str, deadline: datetime | None
    ) -> None:
        with closing(self.mailbox(node_id)) as mailbox:
            self._read_status(mailbox, node_id, task_id)
            try:
                raw = mailbox.get_bytes(MailboxKeys.completion(task_id))
            except NotFound:
                return
            marker = ResultMarker.verify(raw, self.node_keys, study_id, node_id, task_id)
            if deadline and marker.released_at > deadline:
                released_at = marker.released_at.isoformat(timespec="seconds")
                self.ledger.set_task_status(
                    task_id, TaskStatus.TIMED_OUT, f"released {released_at} after the deadline"
                )
                return
            sealed_path = self.settings.state_dir / "incoming" / f"{task_id}.tar.c4gh"
            sealed_path.parent.mkdir(parents=True, exist_ok=True)
            mailbox.get_file(MailboxKeys.sealed_result(task_id), sealed_path)
        self._keep_result(marker, sealed_path, raw)

    def _keep_anchor(self, marker: ResultMarker, raw_marker: bytes) -> None:
        """Keep the node's signed audit head, with the signed marker it came in, as an outside
        anchor of the node's log (`federation audit verify LOG --anchor THIS_FILE`)."""
        path = self.settings.state_dir / ANCHORS_DIR / f"{marker.node_id}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        line = {
            "node_id": marker.node_id,
            "study_id": marker.study_id,
            "task_id": marker.task_id,
            "audit_head": marker.audit_head.as_dict(),
            "signed_marker": raw_marker.decode(),
        }
        with path.open("ab") as handle:
            handle.write(canonical_json(line) + b"\n")

    def _keep_result(self, marker: ResultMarker, sealed_path: Path, raw_marker: bytes) -> None:
        """Open a sealed result (only if it matches the signed digests and length), unpack it
        against the signed manifest digest and record it once."""
        study_id, node_id, task_id = marker.study_id, marker.node_id, marker.task_id
        plain = sealed_path.with_suffix("")  # <task_id>.tar
        label = f"node '{node_id}' task '{task_id}': {SEALED_RESULT}"
        open_sealed(sealed_path, plain, self._crypt4gh_key(), marker.sealed, label)
        destination = self.settings.results_dir / study_id / "nodes" / node_id
        verified = destination.with_name(f".verified-{node_id}")
        if verified.exists():
            shutil.rmtree(verified)
        manifest = unpack_bundle(plain, verified, marker.manifest_digest, RESULT_LIMITS)
        # What the gate decided per analysis, with each refusal's category: checked before the
        # result is kept (a malformed record refuses the result, like any bad manifest).
        analyses = manifest.metadata.get("analyses")
        outcomes = None if analyses is None else analysis_outcomes(analyses, f"{label} manifest")
        keep_signed_result(verified, raw_marker, manifest, marker.audit_head.as_dict())
        if destination.exists():
            shutil.rmtree(destination)
        verified.replace(destination)
        review = manifest.metadata.get("output_review")
        self.ledger.set_task_outcomes(
            task_id, outcomes, dict(review) if isinstance(review, Mapping) else None
        )
        if self.ledger.record_result(task_id, marker.manifest_digest, destination):
            self._keep_anchor(marker, raw_marker)
            self._audit(
                "result_verified",
                study_id=study_id,
                node_id=node_id,
                task_id=task_id,
                manifest_digest=marker.manifest_digest,
                plaintext_sha256=marker.sealed.plaintext_sha256,
                audit_head=marker.audit_head.as_dict(),
            )
            self.progress(
                f"[coordinator] verified result of node '{node_id}' "
                f"({marker.manifest_digest[:12]}...)"
            )

    def collect(self, study_id: str, meta_options: MetaOptions | None = None) -> Collection:
        study = self.ledger.study(study_id)
        if study.status is StudyStatus.CANCELLED:
            tasks = self.ledger.tasks(study_id)
            statuses = {task.node_id: task.status for task in tasks}
            results = self.ledger.results(study_id)
            missing = sorted(node for node in statuses if node not in results)
            return Collection(study_id, statuses, sorted(results), missing, [])
        for task in self.ledger.tasks(study_id):
            if task.status in FINAL_STATUSES:
                continue
            try:
                self._collect_task(study_id, task.node_id, task.task_id, study.deadline)
            except TransportError as error:
                self.progress(f"[coordinator] node '{task.node_id}' not reachable now: {error}")
            except (PolicyViolation, BundleError) as error:
                self.ledger.set_task_status(task.task_id, TaskStatus.FAILED, str(error))
                self._audit(
                    "result_refused",
                    study_id=study_id,
                    node_id=task.node_id,
                    task_id=task.task_id,
                    reason=str(error),
                )
                self.progress(f"[coordinator] refused result of node '{task.node_id}': {error}")
        if study.deadline and _now() >= study.deadline:
            for task in self.ledger.tasks(study_id):
                if task.status not in FINAL_STATUSES:
                    self.ledger.set_task_status(
                        task.task_id, TaskStatus.TIMED_OUT, "no result before the deadline"
                    )
        return self._conclude(study, meta_options or MetaOptions())

    def _conclude(self, study: StudyRecord, options: MetaOptions) -> Collection:
        """Meta-analyse once the quorum has released (again only when a result is new); fail
        a study whose quorum can no longer be reached."""
        study_id = study.study_id
        tasks = self.ledger.tasks(study_id)
        results = self.ledger.results(study_id)
        statuses = {task.node_id: task.status for task in tasks}
        missing = sorted(node for node in statuses if node not in results)
        meta_files: list[Path] = []
        if len(results) >= study.quorum:
            if study.status == StudyStatus.META_ANALYSED and list(study.meta_nodes) == sorted(
                results
            ):
                # Nothing new since the last collect: no second meta-analysis, no new events.
                meta_files = self._meta_outputs(study.spec)
            else:
                meta_files, failed, runs = self._meta_analyse(study.spec, results, options)
                # Never `meta_analysed` over nothing: an analysis refused or empty at the
                # meta-analysis, or no output at all, fails the study (collect exits 1).
                concluded = (
                    StudyStatus.FAILED if failed or not meta_files else StudyStatus.META_ANALYSED
                )
                if concluded is StudyStatus.FAILED:
                    self.progress(
                        f"[coordinator] study '{study_id}': not meta-analysed: "
                        + (
                            f"meta-analysis of {', '.join(failed)} failed"
                            if failed
                            else "no node released a file to meta-analyse"
                        )
                    )
                if meta_files:
                    self.write_report(study_id)
                # After the report, so that the crate holds it and its plots; before the status,
                # so that a crate that could not be written is written by the next collect.
                self._write_crate(study.spec, sorted(results), runs)
                self.ledger.set_study_status(study_id, concluded, missing, sorted(results))
        elif study.status != StudyStatus.FAILED:
            still_open = [task for task in tasks if task.status not in FINAL_STATUSES]
            if len(results) + len(still_open) < study.quorum:
                self.ledger.set_study_status(study_id, StudyStatus.FAILED, missing, sorted(results))
                self.progress(
                    f"[coordinator] study '{study_id}': {len(results)} results and "
                    f"{len(still_open)} open tasks cannot reach the quorum of {study.quorum}"
                )
        return Collection(study_id, statuses, sorted(results), missing, meta_files)

    def report_provenance(self, study_id: str) -> Provenance:
        """What the ledger knows of a study that its files do not say (for the report)."""
        study = self.ledger.study(study_id)
        tasks = self.ledger.tasks(study_id)
        digests = {str(task.envelope.get("workflow_digest")) for task in tasks} - {"None"}
        return Provenance(
            nodes=tuple(study.spec.nodes),
            quorum=study.quorum,
            workflow_digest=digests.pop() if len(digests) == 1 else None,
            submitted_at=study.submitted_at,
            node_states={task.node_id: task.status.value for task in tasks},
            crate_follows=True,
        )

    def write_report(self, study_id: str) -> Path | None:
        """(Re)write results/<study_id>/report.html; a report that cannot be written is said
        in the progress and the audit log, and never undoes the meta-analysis."""
        from federation.report.build import write_report  # matplotlib: only when reporting

        directory = self.settings.results_dir / study_id
        try:
            report = write_report(directory, self.report_provenance(study_id))
        except FederationError as error:
            self.progress(f"[coordinator] report of '{study_id}' not written: {error}")
            self._audit("report_failed", study_id=study_id, reason=str(error))
            return None
        self.progress(f"[coordinator] study report -> {report.html}")
        return report.html

    def _meta_dir(self, study_id: str) -> Path:
        return self.settings.results_dir / study_id / "meta"

    def _meta_outputs(self, spec: StudySpec) -> list[Path]:
        """The meta-analysis files an earlier collect wrote for this study, in study order."""
        meta_dir = self._meta_dir(spec.study_id)
        names = [meta_output_name(spec, analysis_id) for analysis_id in spec.analysis_ids]
        return [meta_dir / name for name in names if (meta_dir / name).exists()]

    def _meta_analyse(
        self, spec: StudySpec, results: dict[str, Path], options: MetaOptions
    ) -> tuple[list[Path], list[str], list[MetaRun]]:
        """Meta-analyse each analysis some node released: the files written, the analyses
        whose meta-analysis failed (inputs refused, or no usable row), and the runs for the
        study's crate."""
        meta_dir = self._meta_dir(spec.study_id)
        meta_dir.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        failed: list[str] = []
        runs: list[MetaRun] = []
        study_dir = meta_dir.parent
        for analysis_id in spec.analysis_ids:
            inputs = [folder / f"{analysis_id}.tsv.gz" for folder in results.values()]
            inputs = [path for path in inputs if path.exists()]
            if not inputs:
                continue
            out = meta_dir / meta_output_name(spec, analysis_id)
            started = now_iso()
            try:
                if out.name == POOLED_FREQUENCIES:
                    pool_frequency_files(inputs, out)
                else:
                    run_meta(inputs, out, options)
            except FederationError as error:
                self.progress(f"[coordinator] meta-analysis of '{analysis_id}' failed: {error}")
                failed.append(analysis_id)
                continue
            written.append(out)
            runs.append(
                MetaRun(
                    analysis_id,
                    POOLED_KIND if out.name == POOLED_FREQUENCIES else META_KIND,
                    tuple(str(path.relative_to(study_dir)) for path in inputs),
                    str(out.relative_to(study_dir)),
                    {} if out.name == POOLED_FREQUENCIES else options_record(options),
                    started,
                    now_iso(),
                )
            )
            self.progress(
                f"[coordinator] meta-analysed '{analysis_id}' over {len(inputs)} nodes -> {out}"
            )
        return written, failed, runs

    def _write_crate(self, spec: StudySpec, nodes: list[str], runs: list[MetaRun]) -> Path:
        """The study's RO-Crate (`provenance.crate`): the bundle the nodes ran, what each node
        released and signed, the meta-analysis runs; signed by the coordinator."""
        study_dir = self.settings.results_dir / spec.study_id
        key = load_private_key(self.settings.signing_key)
        record_meta_runs(study_dir, runs)
        keep_bundle(study_dir, self.settings.state_dir / "outgoing" / spec.study_id / "bundle.tar")
        keep_keys(
            study_dir,
            {
                self.settings.coordinator_id: key.public_key(),
                **{node: self.node_keys.require(node) for node in nodes},
            },
        )
        try:
            crate = write_study_crate(
                study_dir,
                StudyCrateInputs(
                    spec.study_id,
                    str(spec.raw.get("title") or spec.study_id),
                    spec.engine,
                    self.settings.coordinator_id,
                    tuple(nodes),
                ),
                key,
            )
        except (OSError, ValueError, KeyError) as error:  # the meta files stay; the crate is owed
            raise ProvenanceError(
                f"study '{spec.study_id}': its RO-Crate could not be written in {study_dir} "
                f"({type(error).__name__}: {error}); the meta-analysis files are written, the "
                "crate is not; collect again once the cause is fixed"
            ) from None
        self.progress(f"[coordinator] study crate -> {crate}")
        return crate
