"""`federation study status`: a study's state at the coordinator, as a table per node."""

from __future__ import annotations

from federation.coordinator.ledger import CoordinatorLedger


def format_status(ledger: CoordinatorLedger, study_id: str) -> str:
    """A line per node: status, last update, reason; then quorum and missing nodes."""
    study = ledger.study(study_id)
    tasks = ledger.tasks(study_id)
    lines = [
        f"study {study_id}: {study.status.value} (quorum {study.quorum} of {len(tasks)})",
        f"{'node':<8} {'status':<10} {'updated':<26} reason",
    ]
    for task in tasks:
        lines.append(
            f"{task.node_id:<8} {task.status.value:<10} {task.updated_at:<26} {task.reason or ''}"
        )
    results = ledger.results(study_id)
    missing = [task.node_id for task in tasks if task.node_id not in results]
    lines.append(f"released: {len(results)}; missing: {', '.join(missing) or 'none'}")
    return "\n".join(lines)
