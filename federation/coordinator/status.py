"""A study's state at the coordinator: per-node states with times, as records, text and JSON.

`study_view` is the API (`federation study status [--json]`, `study list`, the dashboard):
each node's state is one of `TaskStatus` (delivered, held, approved, running, in_review,
released, rejected, vetoed, withheld, failed, timed_out, cancelled), since when, the category
the node gave, what it released per analysis, and how its output review went; the study's
events are its history with times. Nothing here is node data: nodes report categories only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from federation.coordinator.ledger import CoordinatorLedger, StudyRecord
from federation.outcomes import AnalysisOutcome
from federation.protocol.messages import FINAL_STATUSES, TaskStatus


@dataclass(frozen=True)
class NodeState:
    node_id: str
    task_id: str
    status: TaskStatus
    since: str  # when the coordinator learned of this state (UTC, ISO 8601)
    category: str | None  # the node's word for a refusal or failure (never node data)
    # analysis id -> released, or withheld|failed with the category (which remedy applies)
    analyses: dict[str, AnalysisOutcome] = field(default_factory=dict)
    review: dict[str, Any] | None = None  # {"mode", "approvals", "decisions_sha256"}

    @property
    def withheld_analyses(self) -> list[str]:
        return [name for name, outcome in self.analyses.items() if not outcome.released]

    def to_json(self) -> dict[str, Any]:
        """`analyses` as {"outcome", "category"} per analysis, in the study's order."""
        return {
            **asdict(self),
            "status": self.status.value,
            "analyses": {name: outcome.as_dict() for name, outcome in self.analyses.items()},
        }


@dataclass(frozen=True)
class StudyView:
    study_id: str
    title: str
    status: str
    submitted_at: str
    deadline: str | None
    quorum: int
    nodes: tuple[NodeState, ...]
    released: tuple[str, ...]
    missing: tuple[str, ...]
    meta_nodes: tuple[str, ...]
    events: tuple[dict[str, Any], ...] = ()

    @property
    def open(self) -> bool:
        """Whether some node has not reached a final state yet."""
        return any(node.status not in FINAL_STATUSES for node in self.nodes)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.status.value] = counts.get(node.status.value, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["nodes"] = [node.to_json() for node in self.nodes]
        document["counts"] = self.counts()
        return document


def _view(ledger: CoordinatorLedger, study: StudyRecord, events: bool) -> StudyView:
    study_id = study.study_id
    tasks = ledger.tasks(study_id)
    results = ledger.results(study_id)
    return StudyView(
        study_id=study_id,
        title=study.spec.title,
        status=study.status.value,
        submitted_at=study.submitted_at,
        deadline=study.deadline.isoformat(timespec="seconds") if study.deadline else None,
        quorum=study.quorum,
        nodes=tuple(
            NodeState(
                node_id=task.node_id,
                task_id=task.task_id,
                status=task.status,
                since=task.updated_at,
                category=task.reason,
                analyses={  # in the order the study lists its analyses
                    name: task.analyses[name]
                    for name in study.spec.analysis_ids
                    if name in task.analyses
                },
                review=task.review,
            )
            for task in tasks
        ),
        released=tuple(sorted(results)),
        missing=tuple(task.node_id for task in tasks if task.node_id not in results),
        meta_nodes=study.meta_nodes,
        events=tuple(ledger.events(study_id)) if events else (),
    )


def study_view(ledger: CoordinatorLedger, study_id: str, *, events: bool = True) -> StudyView:
    return _view(ledger, ledger.study(study_id), events)


def study_views(ledger: CoordinatorLedger) -> list[StudyView]:
    """Every study the coordinator knows, oldest first (without their event histories)."""
    return [_view(ledger, ledger.study(study_id), False) for study_id in ledger.study_ids()]


def _detail(node: NodeState) -> str:
    parts = []
    if node.analyses:
        parts.append(
            ", ".join(f"{name} {outcome.describe()}" for name, outcome in node.analyses.items())
        )
    if node.review and node.review.get("mode") not in (None, "none"):
        parts.append(f"reviewed ({node.review.get('approvals')} approvals)")
    if node.category and node.status is not TaskStatus.RELEASED:
        parts.append(node.category)
    return "; ".join(parts)


def format_status(ledger: CoordinatorLedger, study_id: str) -> str:
    """A line per node: state, since when, and what it released or why not; then the quorum."""
    view = study_view(ledger, study_id, events=False)
    lines = [
        f"study {study_id}: {view.status} (quorum {view.quorum} of {len(view.nodes)})",
        f"{'node':<8} {'status':<10} {'since':<26} detail",
    ]
    for node in view.nodes:
        lines.append(f"{node.node_id:<8} {node.status.value:<10} {node.since:<26} {_detail(node)}")
    lines.append(f"released: {len(view.released)}; missing: {', '.join(view.missing) or 'none'}")
    return "\n".join(lines)


def format_list(views: list[StudyView]) -> str:
    if not views:
        return "no studies"
    lines = [f"{'study':<32} {'status':<14} {'submitted':<26} nodes"]
    for view in views:
        counts = ", ".join(f"{count} {status}" for status, count in sorted(view.counts().items()))
        lines.append(f"{view.study_id:<32} {view.status:<14} {view.submitted_at:<26} {counts}")
    return "\n".join(lines)
