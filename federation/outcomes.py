"""What a release step decided, as data: one small JSON file per analysis in the node's work dir.

The release steps run inside Snakemake or cwltool, in their own processes; the runner and the
node agent learn what each decided from these files, never by searching a message's text:

    work_dir/<study_id>/outcomes/<analysis_id>.json   {"analysis": ..., "outcome": released|withheld|failed,
                                                       "category": the researcher-facing refusal category or null}

They stay on the node (the work dir is node-private) and carry no reason: the reason is in the
node's audit log. The category (`release.rules.RefusalCategory`) is what the coordinator may be
told: which remedy applies, never a count.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from federation.files import atomic_write_json
from federation.jsonio import parse_json_strictly

OUTCOMES_DIR = "outcomes"


class ReleaseOutcome(StrEnum):
    RELEASED = "released"
    WITHHELD = "withheld"  # a disclosure rule refused it
    FAILED = "failed"  # a check could not complete (fail closed: nothing released)


def outcomes_dir(work_dir: Path, study_id: str) -> Path:
    return work_dir / study_id / OUTCOMES_DIR


def record_outcome(
    work_dir: Path,
    study_id: str,
    analysis_id: str,
    outcome: ReleaseOutcome,
    category: str | None = None,
) -> Path:
    path = outcomes_dir(work_dir, study_id) / f"{analysis_id}.json"
    document = {"analysis": analysis_id, "outcome": outcome.value, "category": category}
    return atomic_write_json(path, document)


def _documents(work_dir: Path, study_id: str) -> list[dict[str, object]]:
    directory = outcomes_dir(work_dir, study_id)
    if not directory.is_dir():
        return []
    documents = []
    for path in sorted(directory.glob("*.json")):
        try:
            document = parse_json_strictly(path.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(document, dict):
            documents.append(document)
    return documents


def refusal_categories(work_dir: Path, study_id: str) -> list[str]:
    """The distinct refusal categories the latest run's release steps recorded, sorted."""
    return sorted(
        {
            str(document["category"])
            for document in _documents(work_dir, study_id)
            if document.get("outcome") != ReleaseOutcome.RELEASED.value and document.get("category")
        }
    )


def read_outcomes(work_dir: Path, study_id: str) -> dict[str, ReleaseOutcome]:
    """analysis id -> what its release step decided in the latest run (unreadable files skipped)."""
    outcomes: dict[str, ReleaseOutcome] = {}
    for document in _documents(work_dir, study_id):
        try:
            outcomes[str(document["analysis"])] = ReleaseOutcome(str(document["outcome"]))
        except (ValueError, KeyError, TypeError):
            continue
    return outcomes
