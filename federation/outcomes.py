"""What a release step decided, as data: one small JSON file per analysis in the node's work dir.

The release steps run inside Snakemake or cwltool, in their own processes; the runner and the
node agent learn what each decided from these files, never by searching a message's text:

    work_dir/<study_id>/outcomes/<analysis_id>.json   {"analysis": ..., "outcome": released|withheld|failed}

They stay on the node (the work dir is node-private) and carry no reason: the reason is in the
node's audit log.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

from federation.files import atomic_write_json

OUTCOMES_DIR = "outcomes"


class ReleaseOutcome(StrEnum):
    RELEASED = "released"
    WITHHELD = "withheld"  # a disclosure rule refused it
    FAILED = "failed"  # a check could not complete (fail closed: nothing released)


def outcomes_dir(work_dir: Path, study_id: str) -> Path:
    return work_dir / study_id / OUTCOMES_DIR


def record_outcome(
    work_dir: Path, study_id: str, analysis_id: str, outcome: ReleaseOutcome
) -> Path:
    path = outcomes_dir(work_dir, study_id) / f"{analysis_id}.json"
    return atomic_write_json(path, {"analysis": analysis_id, "outcome": outcome.value})


def read_outcomes(work_dir: Path, study_id: str) -> dict[str, ReleaseOutcome]:
    """analysis id -> what its release step decided in the latest run (unreadable files skipped)."""
    outcomes: dict[str, ReleaseOutcome] = {}
    directory = outcomes_dir(work_dir, study_id)
    if not directory.is_dir():
        return outcomes
    for path in sorted(directory.glob("*.json")):
        try:
            document = json.loads(path.read_text())
            outcomes[str(document["analysis"])] = ReleaseOutcome(document["outcome"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return outcomes
