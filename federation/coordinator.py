"""The coordinator: fan a study out as signed tasks, collect verified results, meta-analyse.

Submission builds one content-addressed bundle per study and one signed envelope per node
(the envelope is written to the node's inbox last, so a node never sees half a task).
Collection verifies every node's signature and every digest before it keeps a result,
keeps only results released before the deadline, and meta-analyses once k of n nodes
have released (again only when another node's result arrives; a study whose quorum can no
longer be met fails). A node that cannot be reached at submission gets a failed task with
the reason instead of stopping the study. All state is in the SQLite ledger, so a
coordinator killed at any point continues where it was and never counts a result twice.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from federation import __version__
from federation.agent import RESULT_LIMITS
from federation.audit import append_event
from federation.bundle import pack_bundle, pipeline_files, unpack_bundle
from federation.crypt import ENCRYPTION, SEALED_RESULT, SealedFile, load_secret_key, open_sealed
from federation.digests import sha256_file
from federation.errors import (
    BundleError,
    FederationError,
    PolicyViolation,
    SpecError,
    TransportError,
)
from federation.manifest import workflow_digest
from federation.meta_frequencies import pool_frequency_files
from federation.meta_runner import MetaOptions, run_meta
from federation.policy import RESULT_FORMAT, STATUS_FORMAT, TASK_FORMAT
from federation.settings import CoordinatorSettings
from federation.signing import (
    TrustStore,
    canonical_json,
    load_private_key,
    load_public_key,
    parse_json_strictly,
    sign_document,
    verify_document,
)
from federation.spec import StudySpec, load_study
from federation.state import FINAL_STATUSES, CoordinatorLedger, StudyStatus, TaskStatus
from federation.transport import NotFound, Transport, open_transport

REPO_ROOT = Path(__file__).resolve().parents[1]
Progress = Callable[[str], None]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Submission:
    study_id: str
    tasks: dict[str, str]  # node_id -> task_id
    workflow_digest: str


@dataclass(frozen=True)
class Collection:
    study_id: str
    statuses: dict[str, TaskStatus]
    released: list[str]
    missing: list[str]
    meta_files: list[Path]


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
            raise SpecError(f"study '{study.study_id}' 'nodes': '{unknown[0]}' is not configured at this coordinator "
                            f"(known: {', '.join(sorted(self.settings.nodes))}); fix the study or the coordinator config")  # fmt: skip
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
                    f"study '{study.study_id}' 'deadline': '{study.deadline}' has no time zone; add Z or +01:00"
                )
            if deadline <= issued:
                raise SpecError(
                    f"study '{study.study_id}' 'deadline': {study.deadline} has passed; set a later one"
                )
            expiry = min(expiry, deadline)
        return expiry

    def submit(self, study_config: Path) -> Submission:
        study = load_study(study_config)
        nodes, quorum = self._check_nodes(study)
        issued = _now()
        expires = self._expiry(study, issued)
        self.ledger.add_study(
            study.study_id,
            study.raw,
            quorum,
            study.deadline or expires.isoformat(timespec="seconds"),
        )
        staging = self.settings.state_dir / "outgoing" / study.study_id
        staging.mkdir(parents=True, exist_ok=True)
        bundle_path = staging / "bundle.tar"
        manifest = pack_bundle(
            pipeline_files(REPO_ROOT, study_config), bundle_path, {"study_id": study.study_id}
        )
        bundle_sha256 = sha256_file(bundle_path)
        key = load_private_key(self.settings.signing_key)
        tasks: dict[str, str] = {}
        for node_id in nodes:
            task_id = uuid.uuid4().hex
            sequence = self.ledger.next_sequence(node_id)
            payload = {
                "format": TASK_FORMAT, "study_id": study.study_id, "task_id": task_id, "node_id": node_id,
                "sequence": sequence, "issued_at": issued.isoformat(timespec="seconds"),
                "expires_at": expires.isoformat(timespec="seconds"), "bundle_sha256": bundle_sha256,
                "manifest_digest": manifest.digest, "workflow_digest": workflow_digest(manifest),
                "federation_version": __version__, "engine": study.engine,
            }  # fmt: skip
            envelope = sign_document(payload, key, self.settings.coordinator_id)
            try:
                with closing(self.mailbox(node_id)) as mailbox:
                    mailbox.put_file(f"inbox/{task_id}/bundle.tar", bundle_path)
                    mailbox.put_bytes(f"inbox/{task_id}/envelope.json", canonical_json(envelope))
            except TransportError as error:
                # One unreachable (or impersonated) node does not stop the study: its task is
                # recorded as failed with the reason, and the quorum decides.
                reason = f"not delivered: {error}"
                self.ledger.add_task(task_id, study.study_id, node_id, sequence, payload,
                                     status=TaskStatus.FAILED, reason=reason)  # fmt: skip
                self.progress(f"[coordinator] task {task_id} for node '{node_id}' {reason}")
                continue
            self.ledger.add_task(task_id, study.study_id, node_id, sequence, payload)
            tasks[node_id] = task_id
            self.progress(f"[coordinator] delivered task {task_id} to node '{node_id}'")
            self._audit("task_delivered", study_id=study.study_id, node_id=node_id, task_id=task_id)
            self._trigger(node_id)
        return Submission(study.study_id, tasks, workflow_digest(manifest))

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

    def _read_signed(self, mailbox: Transport, key: str, node_id: str) -> dict | None:
        try:
            raw = mailbox.get_bytes(key)
        except NotFound:
            return None
        try:
            payload, _ = verify_document(
                parse_json_strictly(raw), self.node_keys, expected_signer=node_id
            )
        except ValueError as error:
            raise PolicyViolation(
                f"node '{node_id}' {key}: not valid JSON ({error}); ignored"
            ) from None
        return payload

    def _collect_task(
        self, study_id: str, node_id: str, task_id: str, deadline: datetime | None
    ) -> None:
        with closing(self.mailbox(node_id)) as mailbox:
            status = self._read_signed(mailbox, f"outbox/{task_id}/STATUS.json", node_id)
            if (
                status
                and status.get("format") == STATUS_FORMAT
                and status.get("task_id") == task_id
            ):
                try:
                    reported = TaskStatus(str(status.get("status")))
                except ValueError:
                    raise PolicyViolation(
                        f"node '{node_id}' task '{task_id}': unknown status {status.get('status')!r}; ignored"
                    ) from None
                # RELEASED only counts with a verified result
                if reported not in (TaskStatus.RELEASED, TaskStatus.DELIVERED):
                    self.ledger.set_task_status(task_id, reported, status.get("reason") or None)
            complete = self._read_signed(mailbox, f"outbox/{task_id}/COMPLETE", node_id)
            if complete is None:
                return
            expected = {
                "format": RESULT_FORMAT,
                "task_id": task_id,
                "study_id": study_id,
                "node_id": node_id,
            }
            if any(complete.get(field) != value for field, value in expected.items()):
                raise PolicyViolation(
                    f"node '{node_id}' task '{task_id}': completion marker names another task; ignored"
                )
            try:
                released_at = datetime.fromisoformat(str(complete["released_at"]))
            except (KeyError, ValueError):
                raise PolicyViolation(
                    f"node '{node_id}' task '{task_id}': completion marker has no valid released_at; ignored"
                ) from None
            if released_at.tzinfo is None:
                raise PolicyViolation(
                    f"node '{node_id}' task '{task_id}': released_at has no time zone; ignored"
                )
            if deadline and released_at > deadline:
                self.ledger.set_task_status(
                    task_id,
                    TaskStatus.TIMED_OUT,
                    f"released {complete['released_at']} after the deadline",
                )
                return
            if complete.get("result_encryption") != ENCRYPTION:
                raise PolicyViolation(
                    f"node '{node_id}' task '{task_id}': result not encrypted with {ENCRYPTION}; ignored"
                )
            where = f"node '{node_id}' task '{task_id}'"
            sealed = SealedFile.from_dict(complete.get("result"), f"{where} COMPLETE")
            incoming = self.settings.state_dir / "incoming" / f"{task_id}.tar"
            incoming.parent.mkdir(parents=True, exist_ok=True)
            mailbox.get_file(f"outbox/{task_id}/{SEALED_RESULT}", incoming.with_suffix(".tar.c4gh"))
        # Opened only if ciphertext, plaintext length and plaintext SHA-256 match the signed ones.
        open_sealed(incoming.with_suffix(".tar.c4gh"), incoming, self._crypt4gh_key(), sealed,
                    f"{where}: {SEALED_RESULT}")  # fmt: skip
        destination = self.settings.results_dir / study_id / "nodes" / node_id
        verified = destination.with_name(f".verified-{node_id}")
        if verified.exists():
            shutil.rmtree(verified)
        unpack_bundle(incoming, verified, complete["manifest_digest"], RESULT_LIMITS)
        if destination.exists():
            shutil.rmtree(destination)
        verified.replace(destination)
        if self.ledger.record_result(task_id, complete["manifest_digest"], destination):
            self._audit("result_verified", study_id=study_id, node_id=node_id, task_id=task_id,
                        manifest_digest=complete["manifest_digest"], plaintext_sha256=sealed.plaintext_sha256)  # fmt: skip
            self.progress(
                f"[coordinator] verified result of node '{node_id}' ({complete['manifest_digest'][:12]}...)"
            )

    def collect(self, study_id: str, meta_options: MetaOptions | None = None) -> Collection:
        study = self.ledger.study(study_id)
        deadline = datetime.fromisoformat(study["deadline"]) if study["deadline"] else None
        for task in self.ledger.tasks(study_id):
            if task.status in FINAL_STATUSES:
                continue
            try:
                self._collect_task(study_id, task.node_id, task.task_id, deadline)
            except TransportError as error:
                self.progress(f"[coordinator] node '{task.node_id}' not reachable now: {error}")
            except (PolicyViolation, BundleError) as error:
                self.ledger.set_task_status(task.task_id, TaskStatus.FAILED, str(error))
                self._audit("result_refused", study_id=study_id, node_id=task.node_id,
                            task_id=task.task_id, reason=str(error))  # fmt: skip
                self.progress(f"[coordinator] refused result of node '{task.node_id}': {error}")
        if deadline and _now() >= deadline:
            for task in self.ledger.tasks(study_id):
                if task.status not in FINAL_STATUSES:
                    self.ledger.set_task_status(
                        task.task_id, TaskStatus.TIMED_OUT, "no result before the deadline"
                    )
        tasks = self.ledger.tasks(study_id)
        results = self.ledger.results(study_id)
        statuses = {task.node_id: task.status for task in tasks}
        missing = sorted(node for node in statuses if node not in results)
        meta_files: list[Path] = []
        if len(results) >= study["quorum"]:
            analysed = json.loads(study["meta_nodes"] or "[]")
            if study["status"] == StudyStatus.META_ANALYSED and analysed == sorted(results):
                # Nothing new since the last collect: no second meta-analysis, no new events.
                meta_files = self._meta_outputs(study_id, study["spec"])
            else:
                meta_files = self._meta_analyse(
                    study_id, study["spec"], results, meta_options or MetaOptions()
                )
                self.ledger.set_study_status(
                    study_id, StudyStatus.META_ANALYSED, missing, sorted(results)
                )
        elif study["status"] != StudyStatus.FAILED:
            still_open = [task for task in tasks if task.status not in FINAL_STATUSES]
            if len(results) + len(still_open) < study["quorum"]:
                self.ledger.set_study_status(study_id, StudyStatus.FAILED, missing, sorted(results))
                self.progress(f"[coordinator] study '{study_id}': {len(results)} results and "
                              f"{len(still_open)} open tasks cannot reach the quorum of {study['quorum']}")  # fmt: skip
        return Collection(study_id, statuses, sorted(results), missing, meta_files)

    def _meta_outputs(self, study_id: str, spec: dict) -> list[Path]:
        """The meta-analysis files an earlier collect wrote for this study."""
        meta_dir = self.settings.results_dir / study_id / "meta"
        names = [
            "allele_frequencies.tsv.gz"
            if analysis["type"] == "allele_frequency"
            else f"{analysis['id']}.tsv.gz"
            for analysis in spec["analyses"]
        ]
        return [meta_dir / name for name in names if (meta_dir / name).exists()]

    def _meta_analyse(
        self, study_id: str, spec: dict, results: dict[str, Path], options: MetaOptions
    ) -> list[Path]:
        meta_dir = self.settings.results_dir / study_id / "meta"
        meta_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for analysis in spec["analyses"]:
            inputs = [folder / f"{analysis['id']}.tsv.gz" for folder in results.values()]
            inputs = [path for path in inputs if path.exists()]
            if not inputs:
                continue
            out = meta_dir / f"{analysis['id']}.tsv.gz"
            try:
                if analysis["type"] == "allele_frequency":
                    pool_frequency_files(inputs, meta_dir / "allele_frequencies.tsv.gz")
                    out = meta_dir / "allele_frequencies.tsv.gz"
                else:
                    run_meta(inputs, out, options)
            except FederationError as error:
                self.progress(f"[coordinator] meta-analysis of '{analysis['id']}' failed: {error}")
                continue
            written.append(out)
            self.progress(
                f"[coordinator] meta-analysed '{analysis['id']}' over {len(inputs)} nodes -> {out}"
            )
        return written


def format_status(coordinator: Coordinator, study_id: str) -> str:
    """A table per node: status, reason, last update; then quorum and missing nodes."""
    study = coordinator.ledger.study(study_id)
    tasks = coordinator.ledger.tasks(study_id)
    lines = [f"study {study_id}: {study['status']} (quorum {study['quorum']} of {len(tasks)})",
             f"{'node':<8} {'status':<10} {'updated':<26} reason"]  # fmt: skip
    for task in tasks:
        lines.append(
            f"{task.node_id:<8} {task.status.value:<10} {task.updated_at:<26} {task.reason or ''}"
        )
    results = coordinator.ledger.results(study_id)
    missing = [task.node_id for task in tasks if task.node_id not in results]
    lines.append(f"released: {len(results)}; missing: {', '.join(missing) or 'none'}")
    return "\n".join(lines)
