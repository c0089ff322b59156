"""The documents the dashboard's pages show, which are also their JSON twins under /api/.

Every page renders one of these dictionaries, and `/api/<the same path>` returns it as JSON,
so a script sees exactly what a person sees. Nothing here reads node data: the ledger holds
node states and categories, the results folder holds what nodes released, and the node
directory is what each node signed and published about itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from federation.coordinator.status import NodeState, StudyView
from federation.protocol.messages import TaskStatus
from federation.web.live import Dashboard
from federation.web.states import run_state, task_state

# The columns of the node x stage matrix, in the order a task normally passes them; a task
# that ends otherwise shows its outcome (and when) in the last column.
STAGES = ("delivered", "held", "approved", "running", "in_review", "released")
OUTCOMES = ("rejected", "vetoed", "withheld", "failed", "timed_out", "cancelled")
RESULT_EVENT = "result_received"  # the ledger's event when a verified result is kept
REPORT_FILE = "report.html"
CRATE_FILE = "ro-crate-metadata.json"
MAX_FILES_LISTED = 500  # a study's folder holds a handful of files per node; this is ample


def files_url(study_id: str, relative: str) -> str:
    return f"/files/{study_id}/{relative}"


def stage_times(events: list[dict[str, Any]], node_id: str) -> dict[str, str]:
    """When the coordinator learned that `node_id`'s task reached each state (first time)."""
    times: dict[str, str] = {}
    for event in events:
        if event.get("node_id") != node_id:
            continue
        name = str(event["event"])
        stage = "released" if name == RESULT_EVENT else name.removeprefix("task_")
        if stage in STAGES or stage in OUTCOMES:
            times.setdefault(stage, str(event["time"]))
    return times


def node_row(node: NodeState, events: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of the matrix: the node's state, when it reached each stage, its outcome."""
    times = stage_times(events, node.node_id)
    if node.status.value not in times:
        times[node.status.value] = node.since
    outcome = node.status.value if node.status.value in OUTCOMES else None
    return {
        **node.to_json(),
        "wes_state": task_state(node).value,
        "stages": {stage: times.get(stage) for stage in STAGES},
        "outcome": None if outcome is None else {"status": outcome, "time": times.get(outcome)},
    }


def study_summary(view: StudyView) -> dict[str, Any]:
    return {
        "study_id": view.study_id,
        "title": view.title,
        "status": view.status,
        "wes_state": run_state(view).value,
        "submitted_at": view.submitted_at,
        "deadline": view.deadline,
        "quorum": quorum(view),
        "counts": view.counts(),
    }


def quorum(view: StudyView) -> dict[str, int]:
    return {"needed": view.quorum, "released": len(view.released), "nodes": len(view.nodes)}


def studies_document(dashboard: Dashboard) -> dict[str, Any]:
    return {"studies": [study_summary(view) for view in reversed(dashboard.views())]}


def study_files(folder: Path, study_id: str) -> list[dict[str, Any]]:
    """The files of a study's results folder (released copies, meta-analyses, report, crate)."""
    if not folder.is_dir():
        return []
    files = sorted(
        path for path in folder.rglob("*") if path.is_file() and not path.name.startswith(".")
    )
    return [
        {
            "path": str(path.relative_to(folder)),
            "bytes": path.stat().st_size,
            "url": files_url(study_id, str(path.relative_to(folder))),
        }
        for path in files[:MAX_FILES_LISTED]
    ]


def study_links(dashboard: Dashboard, study_id: str) -> dict[str, str | None]:
    folder = dashboard.results_dir(study_id)
    return {
        "report": files_url(study_id, REPORT_FILE) if (folder / REPORT_FILE).is_file() else None,
        "crate": files_url(study_id, CRATE_FILE) if (folder / CRATE_FILE).is_file() else None,
    }


def meta_changes(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the latest meta-analysis changed against the one before it (None if only one)."""
    if len(history) < 2:
        return None
    before, now = history[-2], history[-1]
    analyses = {}
    for name, current in now["analyses"].items():
        previous = before["analyses"].get(name, {})
        top_now = [hit["variant_id"] for hit in current.get("top", [])]
        top_before = [hit["variant_id"] for hit in previous.get("top", [])]
        analyses[name] = {
            "n": [previous.get("n"), current.get("n")],
            "lambda_gc": [previous.get("lambda_gc"), current.get("lambda_gc")],
            "variants": [previous.get("variants"), current.get("variants")],
            "new_top": [variant for variant in top_now if variant not in top_before],
            "left_top": [variant for variant in top_before if variant not in top_now],
        }
    return {
        "nodes_added": sorted(set(now["nodes"]) - set(before["nodes"])),
        "nodes_before": before["nodes"],
        "analyses": analyses,
    }


def study_document(dashboard: Dashboard, study_id: str) -> dict[str, Any]:
    view = dashboard.view(study_id)
    events = list(view.events)
    history = dashboard.meta_history(study_id)
    latest = history[-1] if history else None
    return {
        **study_summary(view),
        "stages": list(STAGES),
        "nodes": [node_row(node, events) for node in view.nodes],
        "released": list(view.released),
        "missing": list(view.missing),
        "meta": {
            "nodes": latest["nodes"] if latest else [],
            "at": latest["at"] if latest else None,
            "analyses": list(latest["analyses"].values()) if latest else [],
            "changes": meta_changes(history),
        },
        "links": study_links(dashboard, study_id),
        "files": study_files(dashboard.results_dir(study_id), study_id),
        "events": events,
        "cancellable": view.status not in ("cancelled",) and view.open,
    }


def last_reports(dashboard: Dashboard) -> dict[str, str]:
    """node_id -> when the coordinator last learned a state the node reported itself."""
    latest: dict[str, str] = {}
    for view in dashboard.views():
        for node in view.nodes:
            if node.status in (TaskStatus.DELIVERED, TaskStatus.CANCELLED):
                continue  # the coordinator's own doing, not word from the node
            if node.since > latest.get(node.node_id, ""):
                latest[node.node_id] = node.since
    return latest


def nodes_document(dashboard: Dashboard) -> dict[str, Any]:
    reports = last_reports(dashboard)
    cards = [
        card.to_json(reports.get(node_id)) for node_id, card in sorted(dashboard.nodes.items())
    ]
    genomes = [
        card["policy"]["accessible_genomes"]
        for card in cards
        if card["policy"] and card["policy"]["accessible_genomes"] is not None
    ]
    return {
        "nodes": cards,
        "totals": {
            "nodes": len(cards),
            "publishing": sum(1 for card in cards if card["policy"]),
            "accessible_genomes": sum(genomes),
        },
    }
