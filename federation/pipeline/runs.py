"""What both pipeline engines share: the run's record, the staged publish, failure reading.

A run stages what passed the disclosure gate in `work_dir/<study_id>/release/` and publishes
it to `results_dir/<study_id>/nodes/<node_id>/` only when every step succeeded, in one rename.
A failed run says in one line which step failed and why (the step's own `error: ...` line),
and says it is a disclosure refusal when a release step recorded a withheld outcome
(`federation.outcomes`): the category travels as data, not as text.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from federation.errors import DisclosureError, FederationError, PipelineError
from federation.outcomes import ReleaseOutcome, outcomes_dir, read_outcomes, refusal_categories
from federation.settings import NodeSettings


@dataclass(frozen=True)
class PipelineRun:
    node_id: str
    study_id: str
    released_dir: Path
    released_files: tuple[Path, ...]
    log_path: Path


def study_work_dir(node: NodeSettings, study_id: str) -> Path:
    """Node-private scratch of one study (individual-level intermediates stay here)."""
    return node.work_dir / study_id


def release_destination(node: NodeSettings, study_id: str) -> Path:
    return node.results_dir / study_id / "nodes" / node.node_id


def start_run(node: NodeSettings, study_id: str) -> Path:
    """The study's work dir, with the previous run's release outcomes cleared."""
    work = study_work_dir(node, study_id)
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(outcomes_dir(node.work_dir, study_id), ignore_errors=True)
    return work


def first_error_line(log: Path) -> str | None:
    """The one-line `error: ...` a failed step printed (see `federation.cli.main`), if any."""
    if not log.is_file():
        return None
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return None


def failed(node: NodeSettings, study_id: str, message: str) -> FederationError:
    """The error a failed run raises: a DisclosureError when a release step withheld its
    release (the outcome files say so), else a PipelineError; `message` names the step."""
    outcomes = read_outcomes(node.work_dir, study_id)
    if ReleaseOutcome.WITHHELD in outcomes.values():
        return DisclosureError(message, tuple(refusal_categories(node.work_dir, study_id)))
    return PipelineError(message)


def publish(staging: Path, destination: Path) -> tuple[Path, ...]:
    """Replace `destination` with a copy of `staging` in one rename; return the files."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    incoming = destination.with_name(".incoming-" + destination.name)
    if incoming.exists():
        shutil.rmtree(incoming)
    shutil.copytree(staging, incoming)
    if destination.exists():
        retired = destination.with_name(".retired-" + destination.name)
        destination.replace(retired)
        incoming.replace(destination)
        shutil.rmtree(retired)
    else:
        incoming.replace(destination)
    return tuple(sorted(path for path in destination.rglob("*") if path.is_file()))
