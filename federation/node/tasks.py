"""`federation node tasks`: what a node admin sees of the queue before deciding.

A line per task: pending in the inbox, held, approved, running, in review (and, with `--all`,
the finished ones), with its state and since when. For a held task (or any task asked for by
id) the detail an admin decides on: the submitter (the coordinator and the key id that signed
the task), the study's analyses, traits, covariates and principal components, the disclosure
thresholds it asks for, the workflow digest in full, why it is held, and how its pipeline
differs from the last approved workflow the node keeps a copy of (files added, removed and
changed, with a unified diff of each changed text file).

It only reads: the node ledger, the kept envelopes and bundles, and the inbox.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from federation.errors import FederationError, SpecError
from federation.files import sha256_file
from federation.jsonio import parse_json_strictly
from federation.node.ledger import NodeLedger
from federation.outcomes import AnalysisOutcome
from federation.protocol.manifest import STUDY_CONFIG_NAME
from federation.protocol.messages import FINAL_STATUSES, MailboxKeys, TaskStatus
from federation.settings import NodeSettings
from federation.spec import StudySpec, load_study
from federation.transport import Transport


class NodeQueue(Protocol):
    """What this module reads of a node agent (`node.agent.NodeAgent` is one)."""

    ledger: NodeLedger
    node: NodeSettings
    mailbox: Transport

    def pending_task_ids(self) -> list[str]: ...


WORKFLOWS_DIR = (
    "workflows"  # work_dir/workflows/<digest>/: the agent's copies of approved workflows
)
DIFF_CONTEXT_LINES = 3


@dataclass(frozen=True)
class TaskView:
    task_id: str
    status: TaskStatus | None  # None: in the inbox, not yet looked at by the agent
    study_id: str
    sequence: int
    coordinator: str
    key_id: str
    received_at: str
    updated_at: str
    workflow_digest: str
    detail: str  # node-private: why it is held, refused or failed
    analyses: dict[str, AnalysisOutcome] = field(default_factory=dict)
    study: StudySpec | None = None

    @property
    def state(self) -> str:
        return self.status.value if self.status else "pending"


@dataclass(frozen=True)
class WorkflowDiff:
    base: str | None  # the approved workflow compared with; None when the node keeps none
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: dict[str, list[str]] = field(default_factory=dict)  # name -> unified diff lines

    @property
    def same(self) -> bool:
        return self.base is not None and not (self.added or self.removed or self.changed)


def _signed_envelope(raw: bytes) -> dict[str, Any]:
    try:
        document = parse_json_strictly(raw)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _view_of_envelope(task_id: str, raw: bytes, status: TaskStatus | None) -> dict[str, Any]:
    document = _signed_envelope(raw)
    found = document.get("payload")
    payload: dict[str, Any] = found if isinstance(found, dict) else {}
    return {
        "task_id": task_id,
        "status": status,
        "study_id": str(payload.get("study_id", "?")),
        "sequence": int(payload.get("sequence", 0) or 0),
        "coordinator": str(document.get("signer", "?")),
        "key_id": str(document.get("key_id", "?")),
        "workflow_digest": str(payload.get("workflow_digest", "?")),
    }


def task_views(agent: NodeQueue, *, include_finished: bool = False) -> list[TaskView]:
    """The node's tasks, oldest first by sequence; pending inbox tasks last."""
    views = []
    for task in agent.ledger.tasks():
        if task.status in FINAL_STATUSES and not include_finished:
            continue
        task_dir = agent.node.work_dir / "tasks" / task.task_id
        envelope_path = task_dir / MailboxKeys.ENVELOPE
        raw = envelope_path.read_bytes() if envelope_path.is_file() else b""
        known = _view_of_envelope(task.task_id, raw, task.status)
        study_config = task_dir / "bundle" / STUDY_CONFIG_NAME
        views.append(
            TaskView(
                **{
                    **known,
                    "study_id": task.study_id,
                    "sequence": task.sequence,
                    "coordinator": task.coordinator,
                    "workflow_digest": task.workflow_digest or known["workflow_digest"],
                },
                received_at=task.received_at,
                updated_at=task.updated_at,
                detail=task.reason or "",
                analyses=task.analyses,
                study=_study(study_config),
            )
        )
    for task_id in agent.pending_task_ids():
        try:
            raw = agent.mailbox.get_bytes(MailboxKeys.envelope(task_id))
        except FederationError:
            continue
        views.append(
            TaskView(
                **_view_of_envelope(task_id, raw, None),
                received_at="",
                updated_at="",
                detail="in the inbox; the agent checks it on its next run",
            )
        )
    return views


def _study(path: Path) -> StudySpec | None:
    try:
        return load_study(path) if path.is_file() else None
    except SpecError:
        return None


def _files(root: Path) -> dict[str, Path]:
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != STUDY_CONFIG_NAME
    }


def _text(path: Path) -> list[str] | None:
    try:
        return path.read_text().splitlines(keepends=True)
    except (UnicodeDecodeError, OSError):
        return None


def workflow_diff(agent: NodeQueue, task_id: str) -> WorkflowDiff:
    """How the task's pipeline differs from the newest approved workflow the node keeps."""
    task = agent.ledger.task(task_id)
    bundle = agent.node.work_dir / "tasks" / task_id / "bundle"
    kept = agent.node.work_dir / WORKFLOWS_DIR
    copies = [digest for digest in agent.ledger.workflow_copies() if (kept / digest).is_dir()]
    if task is not None and task.workflow_digest in copies:
        return WorkflowDiff(base=task.workflow_digest)
    if not copies or not bundle.is_dir():
        return WorkflowDiff(base=None)
    base = copies[-1]
    old, new = _files(kept / base), _files(bundle)
    changed = {}
    for name in sorted(set(old) & set(new)):
        if sha256_file(old[name]) == sha256_file(new[name]):
            continue
        before, after = _text(old[name]), _text(new[name])
        if before is None or after is None:
            changed[name] = ["(binary file changed)\n"]
            continue
        changed[name] = list(
            difflib.unified_diff(
                before, after, f"approved/{name}", f"task/{name}", n=DIFF_CONTEXT_LINES
            )
        )
    return WorkflowDiff(
        base=base,
        added=tuple(sorted(set(new) - set(old))),
        removed=tuple(sorted(set(old) - set(new))),
        changed=changed,
    )


def format_table(views: list[TaskView]) -> str:
    if not views:
        return "no tasks"
    lines = [f"{'task':<32}  {'state':<10} {'since':<25} {'seq':>5}  study"]
    for view in views:
        since = view.updated_at or "-"
        lines.append(
            f"{view.task_id:<32}  {view.state:<10} {since:<25} {view.sequence:>5}  {view.study_id}"
        )
    return "\n".join(lines)


def _analyses(study: StudySpec) -> list[str]:
    lines = [f"    {analysis.id}: allele frequencies" for analysis in study.allele_frequencies]
    for analysis in study.gwas:
        covariates = ", ".join(analysis.covariates) or "none"
        lines.append(
            f"    {analysis.id}: GWAS of {analysis.trait} ({analysis.trait_type.value}, "
            f"{analysis.model.value}); covariates {covariates}; "
            f"{analysis.principal_components} principal components"
        )
    return lines


def describe(view: TaskView, diff: WorkflowDiff | None = None, full_diff: bool = True) -> str:
    """Everything an admin needs to decide on one task."""
    lines = [
        f"task {view.task_id}: {view.state}"
        + (f" since {view.updated_at}" if view.updated_at else ""),
        f"  study:        {view.study_id}" + (f" ({view.study.title})" if view.study else ""),
        f"  submitter:    coordinator '{view.coordinator}', key id {view.key_id}",
        f"  sequence:     {view.sequence}",
        f"  workflow:     {view.workflow_digest}",
    ]
    if view.detail:
        lines.append(f"  detail:       {view.detail}")
    if view.analyses:
        outcomes = ", ".join(f"{key} {value.describe()}" for key, value in view.analyses.items())
        lines.append(f"  outcomes:     {outcomes}")
    if view.study is not None:
        lines.append(f"  engine:       {view.study.engine}; genome {view.study.reference_genome}")
        lines.append("  analyses:")
        lines += _analyses(view.study)
        asked = (
            json.dumps(view.study.disclosure, sort_keys=True)
            if view.study.disclosure
            else "node defaults"
        )
        lines.append(f"  thresholds:   {asked}")
    if diff is not None:
        lines += _diff_lines(diff, full_diff)
    return "\n".join(lines)


def _diff_lines(diff: WorkflowDiff, full: bool) -> list[str]:
    if diff.base is None:
        return ["  pipeline:     no earlier approved workflow is kept on this node to compare with"]
    if diff.same:
        return [f"  pipeline:     the same as approved workflow {diff.base}"]
    lines = [
        f"  pipeline vs approved workflow {diff.base}:",
        f"    added:   {', '.join(diff.added) or 'none'}",
        f"    removed: {', '.join(diff.removed) or 'none'}",
        f"    changed: {', '.join(diff.changed) or 'none'}",
    ]
    if full:
        for patch in diff.changed.values():
            lines += ["    " + line.rstrip("\n") for line in patch]
    return lines
